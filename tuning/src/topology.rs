//! CPU topology as Linux describes it under `/sys/devices/system/cpu` and
//! `/sys/devices/system/node`. Every reader takes the sysfs root as a parameter so tests can
//! point it at a synthetic tree.

use std::collections::BTreeMap;
use std::path::Path;

use corekv_server::cpuset::CpuSet;

use crate::error::Result;
use crate::host::{read_list, read_num};

/// One logical CPU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cpu {
    /// Logical CPU id.
    pub id: usize,
    /// Socket.
    pub package: usize,
    /// Physical core id within the package.
    pub core: usize,
    /// NUMA node, if the kernel reports one.
    pub node: Option<usize>,
    /// This CPU and its SMT siblings (the logical CPUs of the same physical core).
    pub siblings: String,
}

/// The machine's CPUs and NUMA nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Topology {
    /// Online logical CPUs.
    pub cpus: Vec<Cpu>,
    /// NUMA node id → its online CPUs (empty map when the kernel has no NUMA information).
    pub nodes: BTreeMap<usize, String>,
}

impl Topology {
    /// Reads the topology from a sysfs tree rooted at `sys` (normally `/sys`).
    pub fn read(sys: &Path) -> Result<Topology> {
        let cpu_dir = sys.join("devices/system/cpu");
        let online = read_list(&cpu_dir.join("online"))?;
        let mut nodes = BTreeMap::new();
        let mut node_of = BTreeMap::new();
        let node_dir = sys.join("devices/system/node");
        if let Ok(entries) = std::fs::read_dir(&node_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(id) = name
                    .strip_prefix("node")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                let cpus = read_list(&entry.path().join("cpulist"))?;
                for cpu in cpus.iter() {
                    node_of.insert(cpu, id);
                }
                nodes.insert(id, cpus.to_string());
            }
        }
        let mut cpus = Vec::new();
        for id in online.iter() {
            let topo = cpu_dir.join(format!("cpu{id}/topology"));
            let num = |file: &str| -> Result<usize> { read_num(&topo.join(file)) };
            cpus.push(Cpu {
                id,
                package: num("physical_package_id")?,
                core: num("core_id")?,
                node: node_of.get(&id).copied(),
                siblings: read_list(&topo.join("thread_siblings_list"))?.to_string(),
            });
        }
        Ok(Topology { cpus, nodes })
    }

    /// Number of physical cores among the online CPUs.
    pub fn physical_cores(&self) -> usize {
        let mut cores: Vec<(usize, usize)> =
            self.cpus.iter().map(|c| (c.package, c.core)).collect();
        cores.sort_unstable();
        cores.dedup();
        cores.len()
    }

    /// Whether any physical core has more than one online logical CPU.
    pub fn smt_active(&self) -> bool {
        self.physical_cores() < self.cpus.len()
    }

    /// The online CPUs.
    pub fn online(&self) -> CpuSet {
        self.cpus.iter().map(|c| c.id).collect()
    }

    /// The physical cores, each with its online logical CPUs, ordered by their lowest CPU id.
    pub fn cores(&self) -> Vec<PhysicalCore> {
        let mut by_core: BTreeMap<(usize, usize), Vec<&Cpu>> = BTreeMap::new();
        for cpu in &self.cpus {
            by_core
                .entry((cpu.package, cpu.core))
                .or_default()
                .push(cpu);
        }
        let mut cores: Vec<PhysicalCore> = by_core
            .into_iter()
            .map(|((package, core), cpus)| PhysicalCore {
                package,
                core,
                node: cpus.iter().find_map(|c| c.node),
                cpus: cpus.iter().map(|c| c.id).collect(),
            })
            .collect();
        cores.sort_by_key(|c| c.cpus.iter().next());
        cores
    }
}

/// One physical core and its online logical CPUs (more than one when SMT is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalCore {
    /// Socket.
    pub package: usize,
    /// Core id within the socket.
    pub core: usize,
    /// NUMA node, if known.
    pub node: Option<usize>,
    /// Its online logical CPUs.
    pub cpus: CpuSet,
}

impl PhysicalCore {
    /// The CPU a shard runs on: the core's first logical CPU.
    pub fn first_cpu(&self) -> usize {
        self.cpus.iter().next().unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a synthetic sysfs tree: `cpus` is (id, package, core, node) per online CPU.
    pub(crate) fn fake_sys(root: &Path, cpus: &[(usize, usize, usize, usize)]) {
        let cpu_dir = root.join("devices/system/cpu");
        std::fs::create_dir_all(&cpu_dir).unwrap();
        let online: CpuSet = cpus.iter().map(|c| c.0).collect();
        std::fs::write(cpu_dir.join("online"), format!("{online}\n")).unwrap();
        for &(id, package, core, _) in cpus {
            let topo = cpu_dir.join(format!("cpu{id}/topology"));
            std::fs::create_dir_all(&topo).unwrap();
            std::fs::write(topo.join("physical_package_id"), format!("{package}\n")).unwrap();
            std::fs::write(topo.join("core_id"), format!("{core}\n")).unwrap();
            let siblings: CpuSet = cpus
                .iter()
                .filter(|c| c.1 == package && c.2 == core)
                .map(|c| c.0)
                .collect();
            std::fs::write(topo.join("thread_siblings_list"), format!("{siblings}\n")).unwrap();
        }
        let mut nodes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(id, _, _, node) in cpus {
            nodes.entry(node).or_default().push(id);
        }
        for (node, ids) in nodes {
            let dir = root.join(format!("devices/system/node/node{node}"));
            std::fs::create_dir_all(&dir).unwrap();
            let list: CpuSet = ids.into_iter().collect();
            std::fs::write(dir.join("cpulist"), format!("{list}\n")).unwrap();
        }
    }

    #[test]
    fn two_nodes_with_smt() {
        let dir = tempfile::tempdir().unwrap();
        // 2 sockets × 2 cores × 2 threads; Linux numbers siblings apart: cpu0/cpu4 share a core.
        let cpus: Vec<_> = (0..8)
            .map(|id| (id, (id % 4) / 2, id % 2, (id % 4) / 2))
            .collect();
        fake_sys(dir.path(), &cpus);
        let t = Topology::read(dir.path()).unwrap();
        assert_eq!(t.cpus.len(), 8);
        assert_eq!(t.physical_cores(), 4);
        assert!(t.smt_active());
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.nodes[&0], "0-1,4-5");
        assert_eq!(t.cpus[4].siblings, "0,4");
        assert_eq!(t.cpus[6].node, Some(1));
    }

    #[test]
    fn one_socket_without_smt_or_numa_dir() {
        let dir = tempfile::tempdir().unwrap();
        fake_sys(dir.path(), &[(0, 0, 0, 0), (1, 0, 1, 0)]);
        std::fs::remove_dir_all(dir.path().join("devices/system/node")).unwrap();
        let t = Topology::read(dir.path()).unwrap();
        assert_eq!(t.physical_cores(), 2);
        assert!(!t.smt_active());
        assert!(t.nodes.is_empty());
        assert_eq!(t.cpus[1].node, None);
    }

    #[test]
    fn malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fake_sys(dir.path(), &[(0, 0, 0, 0)]);
        std::fs::write(
            dir.path().join("devices/system/cpu/cpu0/topology/core_id"),
            "x\n",
        )
        .unwrap();
        let e = Topology::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("core_id") && e.contains("not a number"), "{e}");
    }

    #[test]
    fn this_machine_reads() {
        let t = Topology::read(Path::new("/sys")).unwrap();
        let online = std::thread::available_parallelism().unwrap().get();
        assert!(
            t.cpus.len() >= online,
            "sysfs says {} CPUs, std says {online}",
            t.cpus.len()
        );
        assert!(t.physical_cores() >= 1);
    }
}
