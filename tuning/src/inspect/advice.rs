//! Recommendations: each says what to change, why, and the command that does it.

use std::path::Path;

use corekv_server::io_properties::IO_PROPERTIES_FILE;
use serde::Serialize;

use super::Report;

/// How much a recommendation matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// corekv will not work well, or at all, until this is fixed.
    Error,
    /// Costs throughput or latency.
    Warn,
    /// Worth knowing; nothing is wrong.
    Info,
}

/// One thing to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// How much it matters.
    pub severity: Severity,
    /// What to do, in one line.
    pub what: String,
    /// Why.
    pub why: String,
    /// The command that does it (shell).
    pub command: String,
}

/// glommio's default registered I/O memory per executor; a shard registers this much.
pub const IO_MEMORY_BYTES_PER_SHARD: u64 = 10 << 20;
/// Open files a shard can reasonably need: connections, WAL segments, SSTables.
pub const OPEN_FILES_MIN: u64 = 65_536;

fn rec(severity: Severity, what: String, why: &str, command: String) -> Recommendation {
    Recommendation {
        severity,
        what,
        why: why.to_string(),
        command,
    }
}

/// Derives the recommendations for a report, most severe first.
pub fn recommend(r: &Report) -> Vec<Recommendation> {
    use Severity::*;
    let mut out = Vec::new();
    let s = &r.system;

    if matches!(s.io_uring_disabled, Some(v) if v > 0) {
        out.push(rec(
            Error,
            "allow io_uring".to_string(),
            "corekv does all disk I/O through io_uring; kernel.io_uring_disabled forbids it",
            "sysctl -w kernel.io_uring_disabled=0".to_string(),
        ));
    }
    for (governor, cpus) in &s.governors {
        if governor != "performance" {
            out.push(rec(
                Warn,
                format!("set the cpufreq governor of CPUs {cpus} to `performance` (now `{governor}`)"),
                "frequency ramp-up adds latency to every request after an idle moment",
                "cpupower frequency-set -g performance  # or: echo performance | tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor".to_string(),
            ));
        }
    }
    if s.thp_enabled.as_deref() == Some("always") {
        out.push(rec(
            Warn,
            "set transparent huge pages to `madvise` (now `always`)".to_string(),
            "with `always`, page faults and khugepaged compact memory at unpredictable moments: latency spikes",
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".to_string(),
        ));
    }
    if s.thp_defrag.as_deref() == Some("always") {
        out.push(rec(
            Warn,
            "set huge-page defrag to `defer+madvise` (now `always`)".to_string(),
            "`always` makes allocating threads stall on direct compaction",
            "echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag".to_string(),
        ));
    }
    let shards = r.cpus.physical_cores.max(1) as u64;
    let memlock_needed = shards * IO_MEMORY_BYTES_PER_SHARD;
    if let Some(l) = s.memlock_bytes
        && l.soft.is_some_and(|b| b < memlock_needed)
    {
        out.push(rec(
            Warn,
            format!(
                "raise the locked-memory limit to at least {} MiB ({shards} shards × {} MiB), or unlimited",
                memlock_needed >> 20,
                IO_MEMORY_BYTES_PER_SHARD >> 20
            ),
            "each shard registers its I/O buffers with io_uring, which counts against RLIMIT_MEMLOCK \
             (root with CAP_IPC_LOCK is exempt); below the limit corekv falls back to slower \
             unregistered buffers",
            "ulimit -l unlimited  # systemd unit: LimitMEMLOCK=infinity".to_string(),
        ));
    }
    if let Some(l) = s.open_files
        && l.soft.is_some_and(|n| n < OPEN_FILES_MIN)
    {
        let hard_too = l.hard.is_some_and(|n| n < OPEN_FILES_MIN);
        out.push(rec(
            Warn,
            format!("raise the open-file limit to at least {OPEN_FILES_MIN}"),
            "every connection, WAL segment and SSTable is an open file",
            if hard_too {
                "echo '* - nofile 1048576' >> /etc/security/limits.conf  # then log in again; systemd unit: LimitNOFILE=1048576".to_string()
            } else {
                "ulimit -n 1048576  # systemd unit: LimitNOFILE=1048576".to_string()
            },
        ));
    }
    if let Some(d) = &r.data {
        disk_advice(d, &mut out);
    }
    if r.cpus.smt_active {
        out.push(rec(
            Info,
            "run one shard per physical core, not per SMT thread".to_string(),
            "two shards on sibling threads compete for one core's execution units and caches",
            "corekv-tune plan".to_string(),
        ));
    }
    let irq_cpus = r.nic_interrupts.cpu_set();
    if !irq_cpus.is_empty() && r.cpus.physical_cores >= 4 {
        out.push(rec(
            Info,
            format!("keep shards off the CPUs serving NIC interrupts ({irq_cpus})"),
            "interrupt handling steals time from the shard on that core",
            "corekv-tune plan".to_string(),
        ));
    }
    out.sort_by_key(|r| r.severity);
    out
}

fn disk_advice(d: &super::DataDevice, out: &mut Vec<Recommendation>) {
    use Severity::*;
    let dir = &d.dir;
    if d.device.is_none() {
        out.push(rec(
            Error,
            format!(
                "put the data directory on a local disk (it is on {} `{}`)",
                d.mount.fs_type, d.mount.source
            ),
            "corekv's durability rests on O_DIRECT writes and fdatasync reaching a disk; tmpfs is \
             memory (lost on reboot, and older kernels refuse O_DIRECT there) and overlay or \
             network filesystems do not give those guarantees",
            "corekv-server --data-dir /path/on/ext4-or-xfs".to_string(),
        ));
        return;
    }
    if !matches!(d.mount.fs_type.as_str(), "ext4" | "xfs") {
        out.push(rec(
            Info,
            format!(
                "prefer ext4 or xfs for the data directory (it is {})",
                d.mount.fs_type
            ),
            "corekv is tested on ext4 and xfs; O_DIRECT and fdatasync behave differently elsewhere",
            format!("corekv-tune disk --dir {dir}  # measure what this filesystem gives"),
        ));
    }
    if d.mount.options.split(',').any(|o| o == "discard") {
        out.push(rec(
            Warn,
            format!("mount {} without `discard` and trim periodically", d.mount.mount_point),
            "online discard issues a TRIM with every delete, which stalls writes behind it on many disks",
            format!(
                "mount -o remount,nodiscard {} && systemctl enable --now fstrim.timer",
                d.mount.mount_point
            ),
        ));
    }
    let mut measure_why = "the server reads the io-properties file the probe writes".to_string();
    for disk in &d.disks {
        if disk.rotational == Some(true) && disk.paravirtual {
            measure_why = format!(
                "{measure_why}; {} is paravirtual and claims to be rotational (virtio-blk's \
                 default), so only a measurement says whether flash is behind it",
                disk.name
            );
        } else if disk.rotational == Some(true) {
            out.push(rec(
                Warn,
                format!(
                    "{} is a rotational disk: use an SSD or NVMe device",
                    disk.name
                ),
                "corekv's random-read and fsync-per-write paths assume flash latencies",
                format!("corekv-tune disk --dir {dir}  # to see what it gives"),
            ));
            continue;
        }
        if disk.scheduler.as_deref().is_some_and(|s| s != "none")
            && disk.schedulers.iter().any(|s| s == "none")
        {
            out.push(rec(
                Info,
                format!(
                    "use the `none` I/O scheduler on {} (now `{}`)",
                    disk.name,
                    disk.scheduler.as_deref().unwrap_or_default()
                ),
                "a flash device reorders on its own; corekv already bounds its queue depth per shard",
                format!(
                    "echo none > /sys/block/{0}/queue/scheduler  # persist: udev rule ACTION==\"add|change\", KERNEL==\"{0}\", ATTR{{queue/scheduler}}=\"none\"",
                    disk.name
                ),
            ));
        }
    }
    if !Path::new(dir).join(IO_PROPERTIES_FILE).exists() {
        out.push(Recommendation {
            severity: Info,
            what: "measure the disk so corekv sizes its I/O concurrency to it".to_string(),
            why: measure_why,
            command: format!("corekv-tune disk --dir {dir}"),
        });
    }
}
