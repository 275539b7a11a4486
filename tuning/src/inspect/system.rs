//! Machine-wide settings that matter to a storage server: the CPU frequency governor,
//! transparent huge pages, io_uring availability, and the resource limits (`/proc/self/limits`).

use std::collections::BTreeMap;

use corekv_server::cpuset::CpuSet;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::host::{Host, read_num_opt, read_opt, selected};

/// A soft/hard resource limit; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// What the process gets now.
    pub soft: Option<u64>,
    /// What it may raise itself to.
    pub hard: Option<u64>,
}

/// Machine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct System {
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// cpufreq governor → the online CPUs using it; empty when the kernel exposes no cpufreq
    /// (virtual machines, fixed-frequency parts).
    pub governors: BTreeMap<String, String>,
    /// Transparent huge pages: the active `enabled` mode (`always`, `madvise`, `never`).
    pub thp_enabled: Option<String>,
    /// Transparent huge pages: the active `defrag` mode.
    pub thp_defrag: Option<String>,
    /// `kernel.io_uring_disabled`: 0 allowed, 1 only for a group, 2 disabled; `None` when the
    /// kernel predates the setting (always allowed).
    pub io_uring_disabled: Option<u32>,
    /// Locked-memory limit in bytes of this process (io_uring registered buffers count against
    /// it); `None` when `/proc/self/limits` is absent.
    pub memlock_bytes: Option<Limit>,
    /// Open-file limit of this process (connections, WAL segments, SSTables).
    pub open_files: Option<Limit>,
}

impl System {
    /// Reads the settings; `online` are the CPUs whose governor is reported.
    pub fn read(host: &Host, online: &CpuSet) -> Result<System> {
        let mut by_governor: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for cpu in online.iter() {
            let path = host.sys(&format!(
                "devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
            ));
            if let Some(g) = read_opt(&path)? {
                by_governor.entry(g).or_default().push(cpu);
            }
        }
        let governors = by_governor
            .into_iter()
            .map(|(g, cpus)| (g, cpus.into_iter().collect::<CpuSet>().to_string()))
            .collect();
        let thp = |file: &str| -> Result<Option<String>> {
            Ok(
                read_opt(&host.sys(&format!("kernel/mm/transparent_hugepage/{file}")))?
                    .and_then(|t| selected(&t).0),
            )
        };
        let limits_path = host.proc("self/limits");
        let limits = read_opt(&limits_path)?;
        let row = |name: &str| -> Result<Option<Limit>> {
            limits
                .as_deref()
                .map(|text| limit(text, name, &limits_path))
                .transpose()
        };
        Ok(System {
            kernel: read_opt(&host.proc("sys/kernel/osrelease"))?,
            governors,
            thp_enabled: thp("enabled")?,
            thp_defrag: thp("defrag")?,
            io_uring_disabled: read_num_opt(&host.proc("sys/kernel/io_uring_disabled"))?,
            memlock_bytes: row("Max locked memory")?,
            open_files: row("Max open files")?,
        })
    }
}

/// Finds one row of `/proc/self/limits` (`Max open files   1024   524288   files`).
fn limit(text: &str, name: &str, path: &std::path::Path) -> Result<Limit> {
    let Some(row) = text.lines().find(|l| l.starts_with(name)) else {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            reason: format!("no {name:?} row"),
        });
    };
    let mut fields = row[name.len()..].split_whitespace();
    let mut value = || -> Result<Option<u64>> {
        match fields.next() {
            Some("unlimited") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| Error::Parse {
                path: path.to_path_buf(),
                reason: format!("{name}: {v:?} is not a number"),
            }),
            None => Err(Error::Parse {
                path: path.to_path_buf(),
                reason: format!("{name}: missing value"),
            }),
        }
    };
    Ok(Limit {
        soft: value()?,
        hard: value()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max open files            1024                 524288               files
Max locked memory         8388608              unlimited            bytes
";

    #[test]
    fn limits_rows_parse() {
        let p = std::path::Path::new("limits");
        assert_eq!(
            limit(LIMITS, "Max open files", p).unwrap(),
            Limit {
                soft: Some(1024),
                hard: Some(524_288)
            }
        );
        assert_eq!(
            limit(LIMITS, "Max locked memory", p).unwrap(),
            Limit {
                soft: Some(8 << 20),
                hard: None
            }
        );
        let e = limit("Max open files  lots 1\n", "Max open files", p).unwrap_err();
        assert!(e.to_string().contains("\"lots\" is not a number"), "{e}");
    }
}
