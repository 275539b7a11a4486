//! Synthetic `/proc` + `/sys` trees for tests: CPUs, NUMA nodes, NICs and their interrupts,
//! mounts and block devices, built the way the kernel lays them out (with real symlinks).
//! Shared by the library's unit tests (`#[path]`-included from `src/lib.rs`) and the
//! integration tests (`mod common`), so it names nothing from the crate.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corekv_server::cpuset::CpuSet;

/// One NIC interrupt: (IRQ number, action name, interrupts taken per CPU id, effective
/// affinity list).
pub type FakeIrq<'a> = (u32, &'a str, &'a [(usize, u64)], &'a str);

/// A synthetic host tree in a temporary directory.
pub struct FakeHost {
    dir: tempfile::TempDir,
    cpus: Vec<usize>,
    interrupts: Vec<String>,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Creates a relative symlink at `link` pointing at `target` (both absolute).
fn symlink(target: &Path, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let up = link.parent().unwrap().components().count();
    let common = target
        .components()
        .zip(link.parent().unwrap().components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in common..up {
        rel.push("..");
    }
    for c in target.components().skip(common) {
        rel.push(c);
    }
    std::os::unix::fs::symlink(rel, link).unwrap();
}

impl FakeHost {
    /// A tree with CPUs given as (id, package, core, node), online.
    pub fn new(cpus: &[(usize, usize, usize, usize)]) -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let cpu_dir = root.join("sys/devices/system/cpu");
        let online: CpuSet = cpus.iter().map(|c| c.0).collect();
        write(&cpu_dir.join("online"), &format!("{online}\n"));
        for &(id, package, core, _) in cpus {
            let topo = cpu_dir.join(format!("cpu{id}/topology"));
            write(&topo.join("physical_package_id"), &format!("{package}\n"));
            write(&topo.join("core_id"), &format!("{core}\n"));
            let siblings: CpuSet = cpus
                .iter()
                .filter(|c| c.1 == package && c.2 == core)
                .map(|c| c.0)
                .collect();
            write(&topo.join("thread_siblings_list"), &format!("{siblings}\n"));
        }
        let mut nodes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(id, _, _, node) in cpus {
            nodes.entry(node).or_default().push(id);
        }
        for (node, ids) in nodes {
            let list: CpuSet = ids.into_iter().collect();
            write(
                &root.join(format!("sys/devices/system/node/node{node}/cpulist")),
                &format!("{list}\n"),
            );
        }
        std::fs::create_dir_all(root.join("sys/class/net")).unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        let mut ids: Vec<usize> = cpus.iter().map(|c| c.0).collect();
        ids.sort_unstable();
        FakeHost {
            dir,
            cpus: ids,
            interrupts: Vec::new(),
        }
    }

    /// 1 socket, `cores` cores, SMT with 2 threads if `smt` (siblings numbered `c` and
    /// `c + cores`, as Linux does), one NUMA node.
    pub fn one_socket(cores: usize, smt: bool) -> FakeHost {
        let mut cpus: Vec<_> = (0..cores).map(|c| (c, 0, c, 0)).collect();
        if smt {
            cpus.extend((0..cores).map(|c| (c + cores, 0, c, 0)));
        }
        FakeHost::new(&cpus)
    }

    /// 2 sockets / NUMA nodes of `cores_per_node` cores each; with `smt`, sibling of CPU `c` is
    /// `c + 2 * cores_per_node`.
    pub fn two_nodes(cores_per_node: usize, smt: bool) -> FakeHost {
        let n = 2 * cores_per_node;
        let mut cpus: Vec<_> = (0..n)
            .map(|c| {
                (
                    c,
                    c / cores_per_node,
                    c % cores_per_node,
                    c / cores_per_node,
                )
            })
            .collect();
        if smt {
            cpus.extend((0..n).map(|c| {
                (
                    c + n,
                    c / cores_per_node,
                    c % cores_per_node,
                    c / cores_per_node,
                )
            }));
        }
        FakeHost::new(&cpus)
    }

    /// The root of the tree.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `root/<rel>`.
    pub fn file(&self, rel: &str, text: &str) -> &FakeHost {
        write(&self.root().join(rel), text);
        self
    }

    /// A PCI network card `iface` at PCI address `pci` with a virtio child device `virtio`
    /// (or none), and its MSI-X interrupts: (irq, action name, count per CPU id, effective
    /// affinity).
    pub fn nic(
        &mut self,
        iface: &str,
        pci: &str,
        virtio: Option<&str>,
        irqs: &[FakeIrq<'_>],
    ) -> &mut FakeHost {
        let root = self.root().to_path_buf();
        let pci_dir = root.join(format!("sys/devices/pci0000:00/{pci}"));
        write(&pci_dir.join("vendor"), "0x1af4\n");
        write(&pci_dir.join("class"), "0x020000\n");
        write(&pci_dir.join("numa_node"), "-1\n");
        let dev_dir = match virtio {
            Some(v) => pci_dir.join(v),
            None => pci_dir.clone(),
        };
        let net_dir = dev_dir.join(format!("net/{iface}"));
        std::fs::create_dir_all(&net_dir).unwrap();
        symlink(&dev_dir, &net_dir.join("device"));
        symlink(&net_dir, &root.join(format!("sys/class/net/{iface}")));
        let all: CpuSet = self.cpus.iter().copied().collect();
        for &(irq, name, counts, effective) in irqs {
            write(&pci_dir.join(format!("msi_irqs/{irq}")), "msix\n");
            write(
                &root.join(format!("proc/irq/{irq}/smp_affinity_list")),
                &format!("{all}\n"),
            );
            write(
                &root.join(format!("proc/irq/{irq}/effective_affinity_list")),
                &format!("{effective}\n"),
            );
            let cols: Vec<String> = self
                .cpus
                .iter()
                .map(|cpu| {
                    let n = counts.iter().find(|c| c.0 == *cpu).map_or(0, |c| c.1);
                    format!("{n:>10}")
                })
                .collect();
            self.interrupts.push(format!(
                "{irq:>4}: {} PCI-MSIX-{pci}   {irq}-edge      {name}",
                cols.join(" ")
            ));
        }
        self.write_interrupts();
        self
    }

    /// A virtual interface (`lo`), which has no interrupts.
    pub fn virtual_nic(&self, iface: &str) -> &FakeHost {
        let dir = self.root().join(format!("sys/devices/virtual/net/{iface}"));
        std::fs::create_dir_all(&dir).unwrap();
        symlink(&dir, &self.root().join(format!("sys/class/net/{iface}")));
        self
    }

    fn write_interrupts(&self) {
        let header: Vec<String> = self.cpus.iter().map(|c| format!("CPU{c:<7}")).collect();
        let mut text = format!("           {}\n", header.join(" "));
        for row in &self.interrupts {
            text.push_str(row);
            text.push('\n');
        }
        let counts: Vec<String> = self.cpus.iter().map(|_| format!("{:>10}", 7)).collect();
        text.push_str(&format!(
            " LOC: {}   Local timer interrupts\n",
            counts.join(" ")
        ));
        write(&self.root().join("proc/interrupts"), &text);
    }

    /// A whole disk `name` with device number `dev` on PCI function `pci` (NUMA node `node`).
    pub fn disk(&self, name: &str, dev: &str, pci: &str, node: i32, rotational: bool) -> PathBuf {
        let root = self.root();
        let pci_dir = root.join(format!("sys/devices/pci0000:00/{pci}"));
        write(&pci_dir.join("numa_node"), &format!("{node}\n"));
        // virtio-blk disks (`vd*`) hang off a virtio device; others off an ATA/SCSI host.
        let child = if name.starts_with("vd") {
            "virtio9"
        } else {
            "ata1"
        };
        let disk = pci_dir.join(format!("{child}/block/{name}"));
        let q = disk.join("queue");
        write(
            &q.join("rotational"),
            if rotational { "1\n" } else { "0\n" },
        );
        write(&q.join("scheduler"), "none [mq-deadline] kyber bfq\n");
        write(&q.join("nr_requests"), "256\n");
        write(&q.join("max_sectors_kb"), "512\n");
        write(&q.join("logical_block_size"), "512\n");
        write(&q.join("physical_block_size"), "4096\n");
        write(&disk.join("mq/0/nr_tags"), "128\n");
        write(&disk.join("mq/1/nr_tags"), "128\n");
        symlink(&pci_dir.join(child), &disk.join("device"));
        self.block_links(name, dev, &disk);
        disk
    }

    /// A partition `name` of `disk` with device number `dev`.
    pub fn partition(&self, disk: &Path, name: &str, dev: &str) -> PathBuf {
        let part = disk.join(name);
        write(&part.join("partition"), "1\n");
        self.block_links(name, dev, &part);
        part
    }

    /// A device-mapper device `dm-N` named `dm_name` over `slaves`.
    pub fn dm(&self, name: &str, dm_name: &str, dev: &str, slaves: &[&Path]) -> PathBuf {
        let dm = self
            .root()
            .join(format!("sys/devices/virtual/block/{name}"));
        write(&dm.join("dm/name"), &format!("{dm_name}\n"));
        write(&dm.join("queue/rotational"), "0\n");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        for s in slaves {
            symlink(s, &dm.join("slaves").join(s.file_name().unwrap()));
        }
        self.block_links(name, dev, &dm);
        dm
    }

    fn block_links(&self, name: &str, dev: &str, dir: &Path) {
        write(&dir.join("dev"), &format!("{dev}\n"));
        symlink(dir, &self.root().join(format!("sys/dev/block/{dev}")));
        symlink(dir, &self.root().join(format!("sys/class/block/{name}")));
    }
}
