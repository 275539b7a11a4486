//! The human-readable table `corekv-tune inspect` prints.

use std::fmt::Write;

use super::Report;
use super::system::Limit;

fn bytes(b: u64) -> String {
    if b >= 1 << 30 && b % (1 << 30) == 0 {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

fn limit(l: Option<Limit>, fmt: fn(u64) -> String) -> String {
    let one = |v: Option<u64>| v.map(fmt).unwrap_or_else(|| "unlimited".to_string());
    match l {
        Some(l) => format!("{} soft, {} hard", one(l.soft), one(l.hard)),
        None => "unknown (no /proc/self/limits)".to_string(),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".to_string())
}

/// Renders the report as aligned `key  value` rows under section headings, then the
/// recommendations with their commands.
pub fn render(r: &Report) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    fn section(name: &str, rows: &mut Vec<(String, String)>) {
        rows.push((String::new(), format!("\u{0}{name}")));
    }
    section("CPUs", &mut rows);
    let c = &r.cpus;
    rows.push((
        "online CPUs".into(),
        format!("{} ({})", c.online, c.logical),
    ));
    rows.push((
        "physical cores".into(),
        format!(
            "{}, SMT {}",
            c.physical_cores,
            if c.smt_active { "on" } else { "off" }
        ),
    ));
    if c.numa_nodes.is_empty() {
        rows.push(("NUMA nodes".into(), "none reported".into()));
    }
    for (node, cpus) in &c.numa_nodes {
        rows.push((format!("NUMA node {node}"), format!("CPUs {cpus}")));
    }
    let s = &r.system;
    let governors = if s.governors.is_empty() {
        "none (no cpufreq in /sys: a VM or fixed frequency)".to_string()
    } else {
        s.governors
            .iter()
            .map(|(g, cpus)| format!("{g} on {cpus}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    rows.push(("cpufreq governor".into(), governors));

    section("Kernel and limits", &mut rows);
    rows.push(("kernel".into(), opt(&s.kernel)));
    rows.push((
        "transparent hugepages".into(),
        format!(
            "enabled {}, defrag {}",
            opt(&s.thp_enabled),
            opt(&s.thp_defrag)
        ),
    ));
    rows.push((
        "io_uring".into(),
        match s.io_uring_disabled {
            None | Some(0) => "allowed".to_string(),
            Some(1) => "restricted to a group (kernel.io_uring_disabled=1)".to_string(),
            Some(v) => format!("disabled (kernel.io_uring_disabled={v})"),
        },
    ));
    rows.push((
        "locked memory (this shell)".into(),
        limit(s.memlock_bytes, bytes),
    ));
    rows.push((
        "open files (this shell)".into(),
        limit(s.open_files, |n| n.to_string()),
    ));

    if let Some(d) = &r.data {
        section(&format!("Data directory {}", d.dir), &mut rows);
        rows.push((
            "mount".into(),
            format!(
                "{} ({}, {}, {})",
                d.mount.mount_point, d.mount.fs_type, d.mount.source, d.mount.options
            ),
        ));
        let device = match (&d.device, &d.dm_name) {
            (Some(dev), Some(dm)) => format!("{dev} ({dm}, {}, {})", d.kind, d.mount.dev),
            (Some(dev), None) => format!("{dev} ({}, {})", d.kind, d.mount.dev),
            (None, _) => format!("none: {} has no block device", d.mount.fs_type),
        };
        rows.push(("device".into(), device));
        for disk in &d.disks {
            let mut v = String::new();
            let _ = write!(
                v,
                "{}",
                match disk.rotational {
                    Some(true) => "rotational",
                    Some(false) => "non-rotational",
                    None => "rotational?",
                }
            );
            let _ = write!(
                v,
                ", scheduler {} (of {})",
                opt(&disk.scheduler),
                disk.schedulers.join(" ")
            );
            let _ = write!(v, ", nr_requests {}", opt(&disk.nr_requests));
            let _ = write!(
                v,
                ", {} hw queue(s) × {} tags",
                disk.hw_queues,
                opt(&disk.hw_queue_depth)
            );
            if let Some(b) = disk.logical_block_bytes {
                let _ = write!(v, ", {b} B logical blocks");
            }
            if let Some(k) = disk.max_io_kib {
                let _ = write!(v, ", max I/O {k} KiB");
            }
            if let Some(n) = disk.numa_node {
                let _ = write!(v, ", NUMA node {n}");
            }
            if disk.paravirtual {
                let _ = write!(v, ", paravirtual");
            }
            if let Some(m) = &disk.model {
                let _ = write!(v, ", {m}");
            }
            rows.push((format!("disk {}", disk.name), v));
        }
    }

    section("Network interrupts", &mut rows);
    if r.nic_interrupts.nics.is_empty() {
        rows.push(("NICs".into(), "no physical network interface".into()));
    }
    for nic in &r.nic_interrupts.nics {
        let fired: Vec<String> = nic
            .irqs
            .iter()
            .filter(|i| i.count > 0)
            .map(|i| {
                format!(
                    "{} {} → CPUs {}",
                    i.irq,
                    i.name,
                    i.effective.as_deref().unwrap_or(&i.affinity)
                )
            })
            .collect();
        let idle = nic.irqs.len() - fired.len();
        let mut v = if fired.is_empty() {
            "no interrupts taken".to_string()
        } else {
            fired.join("; ")
        };
        if idle > 0 {
            let _ = write!(v, " (+{idle} idle)");
        }
        rows.push((nic.interface.clone(), v));
    }
    rows.push((
        "CPUs serving NICs".into(),
        if r.nic_interrupts.cpus.is_empty() {
            "none".to_string()
        } else {
            r.nic_interrupts.cpus.clone()
        },
    ));

    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        if let Some(name) = v.strip_prefix('\u{0}') {
            let _ = writeln!(out, "{}{name}", if out.is_empty() { "" } else { "\n" });
        } else {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
    }
    let _ = writeln!(out, "\nRecommendations");
    if r.recommendations.is_empty() {
        let _ = writeln!(out, "  none: this machine is set up for corekv");
    }
    for (i, rec) in r.recommendations.iter().enumerate() {
        let sev = match rec.severity {
            super::Severity::Error => "ERROR",
            super::Severity::Warn => "WARN ",
            super::Severity::Info => "info ",
        };
        let _ = writeln!(out, "  {:>2}. [{sev}] {}", i + 1, rec.what);
        let _ = writeln!(out, "      why: {}", rec.why);
        let _ = writeln!(out, "      $ {}", rec.command);
    }
    out
}
