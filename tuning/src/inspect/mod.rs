//! `corekv-tune inspect`: what the machine looks like to a storage server, and what to change.
//!
//! Everything is read from `/proc` and `/sys` under a [`Host`] root, so tests run it against
//! synthetic trees. [`Report::read`] gathers; [`advice`] turns the report into recommendations,
//! each with the command that applies it; [`render`] prints the table.

pub mod advice;
pub mod block;
pub mod irq;
pub mod render;
pub mod system;

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::host::Host;
use crate::topology::Topology;

pub use advice::{Recommendation, Severity};
pub use block::DataDevice;
pub use irq::NicInterrupts;
pub use system::System;

/// CPU facts in a form people and scripts read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpus {
    /// Online logical CPUs, as a kernel list.
    pub online: String,
    /// How many.
    pub logical: usize,
    /// Physical cores among them.
    pub physical_cores: usize,
    /// Whether some core runs more than one online thread.
    pub smt_active: bool,
    /// NUMA node → its CPUs; empty without NUMA information.
    pub numa_nodes: std::collections::BTreeMap<usize, String>,
    /// Every online CPU.
    pub detail: Vec<crate::topology::Cpu>,
}

/// Everything `inspect` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// CPUs, cores, NUMA nodes.
    pub cpus: Cpus,
    /// Governor, huge pages, io_uring, limits.
    pub system: System,
    /// The data directory's device, when a directory was given.
    pub data: Option<DataDevice>,
    /// NIC interrupts and the CPUs serving them.
    pub nic_interrupts: NicInterrupts,
    /// What to change, most important first.
    pub recommendations: Vec<Recommendation>,
}

impl Report {
    /// Reads the machine under `host`; `data_dir` (absolute) is the directory corekv will keep
    /// its data in.
    pub fn read(host: &Host, data_dir: Option<&Path>) -> Result<Report> {
        let topology = Topology::read(&host.sys_root())?;
        let online = topology.online();
        let system = System::read(host, &online)?;
        let data = data_dir.map(|d| DataDevice::read(host, d)).transpose()?;
        let nic_interrupts = NicInterrupts::read(host)?;
        let mut report = Report {
            cpus: Cpus {
                online: online.to_string(),
                logical: topology.cpus.len(),
                physical_cores: topology.physical_cores(),
                smt_active: topology.smt_active(),
                numa_nodes: topology.nodes.clone(),
                detail: topology.cpus.clone(),
            },
            system,
            data,
            nic_interrupts,
            recommendations: Vec::new(),
        };
        report.recommendations = advice::recommend(&report);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::FakeHost;

    const LIMITS: &str = "Limit  Soft Limit  Hard Limit  Units\n\
        Max open files            1024                 4096                 files\n\
        Max locked memory         65536                65536                bytes\n";

    /// 2 NUMA nodes × 2 cores × SMT, a virtio NIC whose queues fire on CPUs 0 and 2, an idle
    /// config vector, `lo`, THP `always`, low limits, a governor per CPU.
    fn machine() -> FakeHost {
        let mut h = FakeHost::two_nodes(2, true);
        h.nic(
            "eth0",
            "0000:00:03.0",
            Some("virtio2"),
            &[
                (37, "virtio2-config", &[], "3"),
                (38, "virtio2-input.0", &[(0, 500)], "0"),
                (39, "virtio2-output.0", &[(2, 80), (0, 1)], "2"),
            ],
        );
        h.virtual_nic("lo");
        h.file(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        )
        .file(
            "sys/kernel/mm/transparent_hugepage/defrag",
            "always defer [madvise] never\n",
        )
        .file("proc/self/limits", LIMITS)
        .file("proc/sys/kernel/osrelease", "6.1.0-test\n");
        for cpu in 0..8 {
            let g = if cpu < 4 { "powersave" } else { "performance" };
            h.file(
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                &format!("{g}\n"),
            );
        }
        h
    }

    #[test]
    fn reports_what_the_tree_says() {
        let h = machine();
        let r = Report::read(&Host::at(h.root()), None).unwrap();
        assert_eq!(r.cpus.online, "0-7");
        assert_eq!(r.cpus.physical_cores, 4);
        assert!(r.cpus.smt_active);
        assert_eq!(r.cpus.numa_nodes[&1], "2-3,6-7");
        assert_eq!(r.system.governors["powersave"], "0-3");
        assert_eq!(r.system.governors["performance"], "4-7");
        assert_eq!(r.system.thp_enabled.as_deref(), Some("always"));
        assert_eq!(r.system.thp_defrag.as_deref(), Some("madvise"));
        assert_eq!(r.system.kernel.as_deref(), Some("6.1.0-test"));
        assert_eq!(r.system.open_files.unwrap().soft, Some(1024));
        // Only eth0 (lo is virtual); the config vector never fired, so CPU 3 does not serve it.
        assert_eq!(r.nic_interrupts.nics.len(), 1);
        let nic = &r.nic_interrupts.nics[0];
        assert_eq!(nic.interface, "eth0");
        let irqs: Vec<u32> = nic.irqs.iter().map(|i| i.irq).collect();
        assert_eq!(irqs, [37, 38, 39]);
        assert_eq!(nic.irqs[1].name, "virtio2-input.0");
        assert_eq!(nic.irqs[2].count, 81);
        assert_eq!(r.nic_interrupts.cpus, "0,2");
        assert!(r.data.is_none());

        let what: Vec<&str> = r.recommendations.iter().map(|r| r.what.as_str()).collect();
        let has = |needle: &str| {
            r.recommendations
                .iter()
                .find(|r| r.what.contains(needle))
                .unwrap_or_else(|| panic!("no recommendation about {needle:?}: {what:?}"))
        };
        assert!(
            has("governor of CPUs 0-3")
                .command
                .contains("cpupower frequency-set -g performance")
        );
        assert!(
            has("transparent huge pages")
                .command
                .contains("echo madvise >")
        );
        assert!(has("locked-memory").what.contains("40 MiB"));
        assert!(has("open-file limit").command.contains("limits.conf"));
        assert!(has("physical core").command.contains("corekv-tune plan"));
        assert!(
            has("NIC interrupts (0,2)")
                .command
                .contains("corekv-tune plan")
        );
        assert!(!what.iter().any(|w| w.contains("defrag")), "{what:?}");
        // Most severe first.
        let sev: Vec<Severity> = r.recommendations.iter().map(|r| r.severity).collect();
        assert!(sev.windows(2).all(|w| w[0] <= w[1]), "{sev:?}");
        // The table shows the same facts.
        let table = render::render(&r);
        for needle in [
            "0-7 (8)",
            "4, SMT on",
            "NUMA node 1",
            "powersave on 0-3",
            "CPUs serving NICs",
            "38 virtio2-input.0 → CPUs 0",
            "(+1 idle)",
            "$ cpupower",
        ] {
            assert!(table.contains(needle), "table lacks {needle:?}:\n{table}");
        }
    }

    #[test]
    fn data_directory_on_a_partition_resolves_to_its_disk() {
        let h = FakeHost::one_socket(2, false);
        let vda = h.disk("vda", "254:0", "0000:00:02.0", 0, true);
        h.partition(&vda, "vda1", "254:1");
        h.file(
            "proc/self/mountinfo",
            "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
             30 27 254:1 / /srv rw,noatime - xfs /dev/vda1 rw,discard\n",
        );
        let r = Report::read(&Host::at(h.root()), Some(Path::new("/srv/corekv"))).unwrap();
        let d = r.data.as_ref().unwrap();
        assert_eq!(d.mount.mount_point, "/srv");
        assert_eq!(d.device.as_deref(), Some("vda1"));
        assert_eq!(d.kind, "partition");
        assert_eq!(d.disks.len(), 1);
        let disk = &d.disks[0];
        assert_eq!(disk.name, "vda");
        assert_eq!(disk.rotational, Some(true));
        assert!(disk.paravirtual);
        assert_eq!(disk.scheduler.as_deref(), Some("mq-deadline"));
        assert_eq!(disk.nr_requests, Some(256));
        assert_eq!(disk.hw_queues, 2);
        assert_eq!(disk.hw_queue_depth, Some(128));
        assert_eq!(disk.logical_block_bytes, Some(512));
        assert_eq!(disk.numa_node, Some(0));
        let cmds: Vec<&str> = r
            .recommendations
            .iter()
            .map(|r| r.command.as_str())
            .collect();
        assert!(
            cmds.iter()
                .any(|c| c.starts_with("mount -o remount,nodiscard /srv")),
            "{cmds:?}"
        );
        assert!(
            cmds.iter()
                .any(|c| c.starts_with("echo none > /sys/block/vda/queue/scheduler")),
            "{cmds:?}"
        );
        let measure = r
            .recommendations
            .iter()
            .find(|r| r.command == "corekv-tune disk --dir /srv/corekv")
            .unwrap();
        assert!(measure.why.contains("paravirtual"), "{}", measure.why);
        // A paravirtual disk's rotational flag is not taken as the truth.
        assert!(
            !r.recommendations
                .iter()
                .any(|r| r.what.contains("rotational disk"))
        );
    }

    #[test]
    fn device_mapper_over_two_disks_and_tmpfs() {
        let h = FakeHost::one_socket(2, false);
        let sda = h.disk("sda", "8:0", "0000:00:04.0", 1, false);
        let sdb = h.disk("sdb", "8:16", "0000:00:05.0", 1, true);
        let sda1 = h.partition(&sda, "sda1", "8:1");
        h.dm("dm-0", "vg-data", "253:0", &[&sda1, &sdb]);
        h.file(
            "proc/self/mountinfo",
            "27 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
             31 27 253:0 / /data rw - ext4 /dev/mapper/vg-data rw\n\
             32 27 0:40 / /dev/shm rw - tmpfs tmpfs rw\n",
        );
        let host = Host::at(h.root());
        let r = Report::read(&host, Some(Path::new("/data/kv"))).unwrap();
        let d = r.data.as_ref().unwrap();
        assert_eq!(
            (d.kind.as_str(), d.device.as_deref()),
            ("device-mapper", Some("dm-0"))
        );
        assert_eq!(d.dm_name.as_deref(), Some("vg-data"));
        let names: Vec<&str> = d.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sdb"]);
        assert_eq!(d.disks[0].numa_node, Some(1));
        assert!(
            r.recommendations
                .iter()
                .any(|r| r.what.contains("sdb is a rotational disk"))
        );

        let r = Report::read(&host, Some(Path::new("/dev/shm/kv"))).unwrap();
        let d = r.data.as_ref().unwrap();
        assert_eq!(d.device, None);
        assert_eq!(r.recommendations[0].severity, Severity::Error);
        assert!(
            r.recommendations[0].what.contains("tmpfs"),
            "{:?}",
            r.recommendations[0]
        );
    }
}
