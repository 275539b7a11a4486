//! `corekv-tune plan`: where to put the shards.
//!
//! Rules, in order:
//! 1. One shard per physical core, on the core's first logical CPU; SMT siblings stay idle
//!    (two shards on one core's threads compete for its execution units and caches).
//! 2. With `--numa disk`, only cores on the data disk's NUMA node, and memory bound there too.
//!    With `--numa all` (default), every node; each shard's memory is first-touched by its own
//!    pinned thread and so is node-local (`numactl --localalloc` makes that explicit).
//! 3. Cores serving NIC interrupts are avoided when enough remain: at least 2 cores, and at
//!    least half of the candidates. Otherwise they are kept, and on machines with 4 or more
//!    cores the plan prints the commands that move the NIC interrupts to one core per NUMA
//!    node, after which `plan` avoids that core.
//! 4. `--max-shards N` keeps N cores, taken round-robin across NUMA nodes so both stay used.

use std::collections::BTreeMap;
use std::path::Path;

use corekv_server::cpuset::CpuSet;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::inspect::NicInterrupts;
use crate::topology::{PhysicalCore, Topology};

/// Which NUMA nodes to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumaPolicy {
    /// Every node; memory local to each shard's node.
    #[default]
    All,
    /// Only the data disk's node (cores, memory and disk all local; fewer shards).
    Disk,
}

/// What the plan is made from, beyond the topology.
#[derive(Debug, Clone, Default)]
pub struct PlanInput<'a> {
    /// NIC interrupts and the CPUs serving them.
    pub nic: Option<&'a NicInterrupts>,
    /// NUMA node of the data disk, when known.
    pub disk_node: Option<usize>,
    /// Node policy.
    pub numa: NumaPolicy,
    /// At most this many shards.
    pub max_shards: Option<usize>,
    /// Data directory to put in the command.
    pub data_dir: Option<&'a Path>,
}

/// A shard placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// CPUs to run shards on (`--cores`).
    pub cores: String,
    /// Number of shards.
    pub shards: usize,
    /// NUMA node → CPUs of the plan on it.
    pub cores_by_node: BTreeMap<usize, String>,
    /// SMT siblings of the chosen cores, left idle.
    pub idle_siblings: String,
    /// CPUs left out because they serve NIC interrupts.
    pub avoided_irq_cpus: String,
    /// Commands to run before starting the server (moving NIC interrupts), if any.
    pub prepare: Vec<String>,
    /// The exact server command line.
    pub command: String,
    /// Why the plan is what it is, one line each.
    pub notes: Vec<String>,
}

/// Makes the plan.
pub fn plan(topology: &Topology, input: &PlanInput<'_>) -> Result<Plan> {
    let all_cores = topology.cores();
    if all_cores.is_empty() {
        return Err(Error::Invalid("the topology has no online CPU".to_string()));
    }
    let mut notes = Vec::new();
    notes.push(format!(
        "{} physical cores ({} CPUs, SMT {}) on {} NUMA node(s)",
        all_cores.len(),
        topology.cpus.len(),
        if topology.smt_active() { "on" } else { "off" },
        topology.nodes.len().max(1)
    ));

    let mut candidates = all_cores.clone();
    let mut bind_node = None;
    if input.numa == NumaPolicy::Disk {
        match input.disk_node {
            Some(n) if candidates.iter().any(|c| c.node == Some(n)) => {
                candidates.retain(|c| c.node == Some(n));
                bind_node = Some(n);
                notes.push(format!(
                    "--numa disk: only NUMA node {n}, where the data disk is ({} cores)",
                    candidates.len()
                ));
            }
            Some(n) => notes.push(format!(
                "--numa disk: the data disk is on NUMA node {n}, which has no online CPU; using all nodes"
            )),
            None => notes.push(
                "--numa disk: the data disk's NUMA node is unknown; using all nodes".to_string(),
            ),
        }
    }

    let irq_cpus = input.nic.map(NicInterrupts::cpu_set).unwrap_or_default();
    let serves_irq = |c: &PhysicalCore| c.cpus.iter().any(|cpu| irq_cpus.contains(cpu));
    let free: Vec<PhysicalCore> = candidates
        .iter()
        .filter(|c| !serves_irq(c))
        .cloned()
        .collect();
    let mut avoided = CpuSet::default();
    let mut prepare = Vec::new();
    if free.len() < candidates.len() {
        let irq_core_cpus: CpuSet = candidates
            .iter()
            .filter(|c| serves_irq(c))
            .flat_map(|c| c.cpus.iter())
            .collect();
        if free.len() >= 2 && free.len() * 2 >= candidates.len() {
            notes.push(format!(
                "avoiding CPUs {irq_core_cpus}: their cores serve NIC interrupts ({} cores remain)",
                free.len()
            ));
            avoided = irq_core_cpus;
            candidates = free;
        } else {
            notes.push(format!(
                "NIC interrupts are served on {} of {} cores (CPUs {irq_cpus}): too many to avoid, \
                 shards share those cores",
                candidates.len() - free.len(),
                candidates.len()
            ));
            if candidates.len() >= 4
                && let Some(nic) = input.nic
            {
                prepare = steer_irqs(&all_cores, nic);
                notes.push(
                    "to free the other cores, run the `prepare` commands (one IRQ core per NUMA \
                     node), then run `corekv-tune plan` again"
                        .to_string(),
                );
            }
        }
    }

    if let Some(max) = input.max_shards {
        if max == 0 {
            return Err(Error::Invalid(
                "--max-shards must be at least 1".to_string(),
            ));
        }
        if max < candidates.len() {
            candidates = round_robin_by_node(candidates, max);
            notes.push(format!("--max-shards {max}: spread over the NUMA nodes"));
        }
    }

    let chosen: CpuSet = candidates.iter().map(PhysicalCore::first_cpu).collect();
    let idle: CpuSet = candidates
        .iter()
        .flat_map(|c| c.cpus.iter().skip(1))
        .collect();
    if !idle.is_empty() {
        notes.push(format!(
            "one shard per physical core: SMT siblings {idle} stay idle"
        ));
    }
    let mut by_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for c in &candidates {
        if let Some(n) = c.node {
            by_node.entry(n).or_default().push(c.first_cpu());
        }
    }
    let cores_by_node: BTreeMap<usize, String> = by_node
        .into_iter()
        .map(|(n, cpus)| (n, cpus.into_iter().collect::<CpuSet>().to_string()))
        .collect();

    let mut command = String::new();
    if let Some(n) = bind_node {
        command.push_str(&format!("numactl --cpunodebind={n} --membind={n} "));
    } else if topology.nodes.len() > 1 {
        command.push_str("numactl --localalloc ");
    }
    command.push_str(&format!("corekv-server --cores {chosen}"));
    if let Some(d) = input.data_dir {
        command.push_str(&format!(
            " --data-dir {}",
            shell_word(&d.display().to_string())
        ));
    }
    Ok(Plan {
        cores: chosen.to_string(),
        shards: chosen.len(),
        cores_by_node,
        idle_siblings: idle.to_string(),
        avoided_irq_cpus: avoided.to_string(),
        prepare,
        command,
        notes,
    })
}

/// Commands that move every NIC interrupt to the first core of each NUMA node that has one
/// (all of that core's threads), spreading interrupts over those cores.
fn steer_irqs(cores: &[PhysicalCore], nic: &NicInterrupts) -> Vec<String> {
    let mut first_of_node: BTreeMap<Option<usize>, &PhysicalCore> = BTreeMap::new();
    for c in cores {
        first_of_node.entry(c.node).or_insert(c);
    }
    let target: CpuSet = first_of_node.values().flat_map(|c| c.cpus.iter()).collect();
    let mut out = vec!["systemctl stop irqbalance  # it would move them back".to_string()];
    for n in &nic.nics {
        for irq in &n.irqs {
            out.push(format!(
                "echo {target} > /proc/irq/{}/smp_affinity_list  # {} {}",
                irq.irq, n.interface, irq.name
            ));
        }
    }
    out
}

fn round_robin_by_node(cores: Vec<PhysicalCore>, max: usize) -> Vec<PhysicalCore> {
    let mut queues: BTreeMap<Option<usize>, std::collections::VecDeque<PhysicalCore>> =
        BTreeMap::new();
    for c in cores {
        queues.entry(c.node).or_default().push_back(c);
    }
    let mut out = Vec::with_capacity(max);
    while out.len() < max {
        let mut took = false;
        for q in queues.values_mut() {
            if out.len() < max
                && let Some(c) = q.pop_front()
            {
                out.push(c);
                took = true;
            }
        }
        if !took {
            break;
        }
    }
    out.sort_by_key(PhysicalCore::first_cpu);
    out
}

/// Quotes a path for a POSIX shell when it needs quoting.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Renders the plan for people: notes and suggested preparation as `#` comments, then the
/// server command, so the output can be pasted into a shell and only starts the server.
pub fn render(p: &Plan) -> String {
    let mut out = String::new();
    for n in &p.notes {
        out.push_str(&format!("# {n}\n"));
    }
    for (node, cpus) in &p.cores_by_node {
        out.push_str(&format!("# NUMA node {node}: shards on CPUs {cpus}\n"));
    }
    out.push_str(&format!("# {} shards on CPUs {}\n", p.shards, p.cores));
    if !p.prepare.is_empty() {
        out.push_str("# suggested first (review, then run as root):\n");
    }
    for c in &p.prepare {
        out.push_str(&format!("#   {c}\n"));
    }
    out.push_str(&p.command);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::FakeHost;
    use crate::host::Host;

    fn make(h: &FakeHost, input: PlanInput<'_>) -> Plan {
        let host = Host::at(h.root());
        let t = Topology::read(&host.sys_root()).unwrap();
        let nic = NicInterrupts::read(&host).unwrap();
        plan(
            &t,
            &PlanInput {
                nic: Some(&nic),
                ..input
            },
        )
        .unwrap()
    }

    /// A NIC with one queue interrupt per CPU in `cpus`, each taken on that CPU.
    fn nic_on(h: &mut FakeHost, cpus: &[usize]) {
        let counts: Vec<[(usize, u64); 1]> = cpus.iter().map(|&c| [(c, 100)]).collect();
        let names: Vec<String> = (0..cpus.len()).map(|q| format!("eth0-TxRx-{q}")).collect();
        let effective: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
        let irqs: Vec<crate::fixture::FakeIrq<'_>> = (0..cpus.len())
            .map(|i| {
                (
                    100 + i as u32,
                    names[i].as_str(),
                    &counts[i][..],
                    effective[i].as_str(),
                )
            })
            .collect();
        h.nic("eth0", "0000:00:03.0", None, &irqs);
    }

    #[test]
    fn one_socket_smt_off_uses_every_core() {
        let h = FakeHost::one_socket(4, false);
        let p = make(&h, PlanInput::default());
        assert_eq!(p.cores, "0-3");
        assert_eq!(p.shards, 4);
        assert_eq!(p.idle_siblings, "");
        assert_eq!(p.command, "corekv-server --cores 0-3");
    }

    #[test]
    fn one_socket_smt_on_uses_one_thread_per_core() {
        let h = FakeHost::one_socket(4, true);
        let p = make(
            &h,
            PlanInput {
                data_dir: Some(Path::new("/srv/kv data")),
                ..Default::default()
            },
        );
        assert_eq!(p.cores, "0-3");
        assert_eq!(p.idle_siblings, "4-7");
        assert_eq!(
            p.command,
            "corekv-server --cores 0-3 --data-dir '/srv/kv data'"
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("SMT siblings 4-7 stay idle")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn two_numa_nodes_smt_on_spread_over_both_with_local_memory() {
        let h = FakeHost::two_nodes(4, true);
        let p = make(&h, PlanInput::default());
        assert_eq!(p.cores, "0-7");
        assert_eq!(p.cores_by_node[&0], "0-3");
        assert_eq!(p.cores_by_node[&1], "4-7");
        assert_eq!(p.idle_siblings, "8-15");
        assert_eq!(p.command, "numactl --localalloc corekv-server --cores 0-7");

        let p = make(
            &h,
            PlanInput {
                max_shards: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(p.cores, "0-1,4", "round-robin over the nodes");

        let p = make(
            &h,
            PlanInput {
                numa: NumaPolicy::Disk,
                disk_node: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(p.cores, "4-7");
        assert_eq!(
            p.command,
            "numactl --cpunodebind=1 --membind=1 corekv-server --cores 4-7"
        );
        let p = make(
            &h,
            PlanInput {
                numa: NumaPolicy::Disk,
                disk_node: None,
                ..Default::default()
            },
        );
        assert_eq!(p.cores, "0-7");
        assert!(p.notes.iter().any(|n| n.contains("NUMA node is unknown")));
    }

    #[test]
    fn nic_interrupt_cores_are_avoided_when_enough_remain() {
        // 2 nodes × 4 cores, SMT on; IRQs on CPU 0 and on CPU 12 (the sibling of CPU 4).
        let mut h = FakeHost::two_nodes(4, true);
        nic_on(&mut h, &[0, 12]);
        let p = make(&h, PlanInput::default());
        assert_eq!(p.cores, "1-3,5-7");
        assert_eq!(p.avoided_irq_cpus, "0,4,8,12");
        assert!(p.prepare.is_empty());
        assert_eq!(
            p.command,
            "numactl --localalloc corekv-server --cores 1-3,5-7"
        );
    }

    #[test]
    fn interrupts_on_every_core_are_shared_and_steering_is_suggested() {
        let mut h = FakeHost::one_socket(4, false);
        nic_on(&mut h, &[0, 1, 2, 3]);
        let p = make(&h, PlanInput::default());
        assert_eq!(p.cores, "0-3");
        assert_eq!(p.avoided_irq_cpus, "");
        assert!(
            p.notes.iter().any(|n| n.contains("too many to avoid")),
            "{:?}",
            p.notes
        );
        assert!(
            p.prepare
                .iter()
                .any(|c| c.starts_with("echo 0 > /proc/irq/100/smp_affinity_list")),
            "{:?}",
            p.prepare
        );
        let text = render(&p);
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with("corekv-server --cores 0-3"),
            "{text}"
        );
        assert!(
            text.lines()
                .filter(|l| l.contains("/proc/irq"))
                .all(|l| l.starts_with('#')),
            "{text}"
        );

        // With 2 cores, nothing is suggested: too few to dedicate one to interrupts.
        let mut h = FakeHost::one_socket(2, false);
        nic_on(&mut h, &[1]);
        let p = make(&h, PlanInput::default());
        assert_eq!(p.cores, "0-1");
        assert!(p.prepare.is_empty());
    }

    #[test]
    fn zero_shards_is_refused() {
        let h = FakeHost::one_socket(2, false);
        let host = Host::at(h.root());
        let t = Topology::read(&host.sys_root()).unwrap();
        let e = plan(
            &t,
            &PlanInput {
                max_shards: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
}
