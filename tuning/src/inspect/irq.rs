//! Which CPUs serve the network cards' interrupts.
//!
//! A NIC's interrupts are found two ways, and the union is taken: the IRQ numbers its PCI
//! function lists in `msi_irqs/` (or its legacy `irq`), and the `/proc/interrupts` rows whose
//! action name carries the interface name (`eth0-TxRx-3`) or its virtio device (`virtio2-input.0`).
//! An IRQ that has never fired (a virtio `config` vector, an idle queue) is listed but does not
//! count as serving: the CPUs serving a NIC are the effective affinity (falling back to
//! `smp_affinity_list`) of the IRQs that did fire.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use corekv_server::cpuset::CpuSet;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::host::{Host, parse_list, parse_num, read, read_opt};

/// One row of `/proc/interrupts` for a numbered IRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptRow {
    /// IRQ number.
    pub irq: u32,
    /// Interrupts taken so far, per CPU id.
    pub counts: BTreeMap<usize, u64>,
    /// Everything after the counts: controller, hardware IRQ, trigger and action names.
    pub description: String,
}

/// Parses `/proc/interrupts`: the header names the CPU columns; rows with a numeric IRQ are
/// returned (the named rows such as `LOC:` are per-CPU system interrupts, not devices).
pub fn parse_interrupts(path: &Path, text: &str) -> Result<Vec<InterruptRow>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let cpus: Vec<usize> = header
        .split_whitespace()
        .map(|c| {
            c.strip_prefix("CPU")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::Parse {
                    path: path.to_path_buf(),
                    reason: format!("header column {c:?} is not CPU<n>"),
                })
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for line in lines {
        let Some((label, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = label.trim().parse::<u32>() else {
            continue;
        };
        let mut fields = rest.split_whitespace().peekable();
        let mut counts = BTreeMap::new();
        for &cpu in &cpus {
            match fields.peek().map(|f| f.parse::<u64>()) {
                Some(Ok(n)) => {
                    counts.insert(cpu, n);
                    fields.next();
                }
                _ => break,
            }
        }
        rows.push(InterruptRow {
            irq,
            counts,
            description: fields.collect::<Vec<_>>().join(" "),
        });
    }
    Ok(rows)
}

/// One interrupt of a network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicIrq {
    /// IRQ number.
    pub irq: u32,
    /// Action name(s) from `/proc/interrupts`.
    pub name: String,
    /// Interrupts taken so far, all CPUs together.
    pub count: u64,
    /// CPUs it may be delivered to (`smp_affinity_list`).
    pub affinity: String,
    /// CPUs it is delivered to now (`effective_affinity_list`), when the kernel says.
    pub effective: Option<String>,
}

/// One physical network interface and its interrupts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// Interface name.
    pub interface: String,
    /// Its interrupts.
    pub irqs: Vec<NicIrq>,
}

/// The NICs and the CPUs that serve their interrupts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicInterrupts {
    /// Physical interfaces (virtual ones such as `lo`, bridges and `veth` have no interrupts).
    pub nics: Vec<Nic>,
    /// CPUs serving at least one NIC interrupt that has fired.
    pub cpus: String,
}

impl NicInterrupts {
    /// The serving CPUs as a set.
    pub fn cpu_set(&self) -> CpuSet {
        self.cpus.parse().unwrap_or_default()
    }

    /// Reads NIC interrupts from `host`.
    pub fn read(host: &Host) -> Result<NicInterrupts> {
        let path = host.proc("interrupts");
        let rows = match read_opt(&path)? {
            Some(text) => parse_interrupts(&path, &text)?,
            None => Vec::new(),
        };
        let mut nics = Vec::new();
        let mut serving = BTreeSet::new();
        let net = host.sys("class/net");
        let mut names: Vec<String> = match std::fs::read_dir(&net) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        for name in names {
            let Some(device) = physical_device(&net.join(&name)) else {
                continue;
            };
            let (mut irq_numbers, tags) = device_irqs(&host.sys_root(), &device)?;
            for row in &rows {
                let matches = row.description.split_whitespace().any(|action| {
                    action_is(action, &name) || tags.iter().any(|t| action_is(action, t))
                });
                if matches {
                    irq_numbers.insert(row.irq);
                }
            }
            let mut irqs = Vec::new();
            for irq in irq_numbers {
                let row = rows.iter().find(|r| r.irq == irq);
                let dir = host.proc(&format!("irq/{irq}"));
                let affinity = match read_opt(&dir.join("smp_affinity_list"))? {
                    Some(t) => t,
                    // An MSI vector listed by the device but not allocated: skip it.
                    None if row.is_none() => continue,
                    None => String::new(),
                };
                let effective = read_opt(&dir.join("effective_affinity_list"))?;
                let count = row.map(|r| r.counts.values().sum()).unwrap_or(0);
                if count > 0 {
                    let cpus = effective.as_deref().unwrap_or(&affinity);
                    let list = parse_list(&dir.join("effective_affinity_list"), cpus)?;
                    serving.extend(list.iter());
                }
                irqs.push(NicIrq {
                    irq,
                    name: row
                        .map(|r| action_names(&r.description))
                        .unwrap_or_default(),
                    count,
                    affinity,
                    effective,
                });
            }
            nics.push(Nic {
                interface: name,
                irqs,
            });
        }
        Ok(NicInterrupts {
            nics,
            cpus: serving.into_iter().collect::<CpuSet>().to_string(),
        })
    }
}

/// Whether an action name in `/proc/interrupts` belongs to `tag` (`eth0`, `virtio2`):
/// `eth0`, `eth0-rx-0`, `eth0:1`, `virtio2-input.0`, but not `eth01`.
fn action_is(action: &str, tag: &str) -> bool {
    let action = action.trim_end_matches(',');
    match action.strip_prefix(tag) {
        Some(rest) => rest.is_empty() || rest.starts_with(['-', '_', ':', '@', '.']),
        None => false,
    }
}

/// The action names at the end of a `/proc/interrupts` description: after the controller,
/// the hardware IRQ and the trigger (`PCI-MSIX-0000:00:03.0 1-edge virtio2-input.0`).
fn action_names(description: &str) -> String {
    let fields: Vec<&str> = description.split_whitespace().collect();
    match fields
        .iter()
        .position(|f| f.ends_with("-edge") || f.ends_with("-level"))
    {
        Some(i) => fields[i + 1..].join(" "),
        None => fields.last().copied().unwrap_or_default().to_string(),
    }
}

/// The device directory of a network interface, or `None` for a virtual interface.
fn physical_device(iface: &Path) -> Option<PathBuf> {
    let resolved = std::fs::canonicalize(iface).ok()?;
    if resolved.components().any(|c| c.as_os_str() == "virtual") {
        return None;
    }
    std::fs::canonicalize(iface.join("device")).ok()
}

/// IRQs listed by a device and its parents up to the sysfs root (`msi_irqs/`, `irq`), and the
/// names of those devices (`virtio2`), which prefix its interrupt action names.
fn device_irqs(sys_root: &Path, device: &Path) -> Result<(BTreeSet<u32>, Vec<String>)> {
    let mut irqs = BTreeSet::new();
    let mut tags = Vec::new();
    let sys_root = std::fs::canonicalize(sys_root).unwrap_or_else(|_| sys_root.to_path_buf());
    let mut dir = Some(device);
    while let Some(d) = dir {
        if !d.starts_with(&sys_root) || d == sys_root {
            break;
        }
        if let Some(name) = d.file_name() {
            tags.push(name.to_string_lossy().to_string());
        }
        let msi = d.join("msi_irqs");
        if let Ok(entries) = std::fs::read_dir(&msi) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                irqs.insert(parse_num(&msi.join(&name), &name)?);
            }
        } else if let Ok(text) = read(&d.join("irq")) {
            // A legacy (INTx) interrupt; 0 means none.
            if let Ok(n) = text.parse::<u32>()
                && n > 0
            {
                irqs.insert(n);
            }
        }
        // The PCI function is the last level that describes the NIC itself.
        if d.join("msi_irqs").exists() || d.join("vendor").exists() && d.join("class").exists() {
            break;
        }
        dir = d.parent();
    }
    Ok((irqs, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_table_parses() {
        let text = "           CPU0       CPU2\n\
             24:          1          0  IO-APIC   5-edge      ACPI:Ged\n\
             38:          0       2920  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n\
             NMI:          0          0   Non-maskable interrupts\n\
             ERR:          0\n";
        let rows = parse_interrupts(Path::new("interrupts"), text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].irq, 38);
        assert_eq!(rows[1].counts[&2], 2920);
        assert_eq!(rows[1].counts[&0], 0);
        assert_eq!(action_names(&rows[1].description), "virtio2-input.0");
        let e = parse_interrupts(Path::new("interrupts"), "CPUx\n").unwrap_err();
        assert!(e.to_string().contains("not CPU<n>"), "{e}");
    }

    #[test]
    fn action_names_match_whole_tags() {
        assert!(action_is("eth0-TxRx-3", "eth0"));
        assert!(action_is("eth0", "eth0"));
        assert!(action_is("virtio2-input.0", "virtio2"));
        assert!(!action_is("eth01", "eth0"));
        assert!(!action_is("virtio20-input.0", "virtio2"));
    }
}
