//! The block device under a data directory: which mount holds the directory
//! (`/proc/self/mountinfo`), which device that is (`/sys/dev/block/MAJ:MIN`), and the queue
//! settings of the whole disk(s) doing the I/O: a partition's parent disk, or the disks under a
//! device-mapper / md device (`slaves/`, followed recursively).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::host::{Host, read_num_opt, read_opt, selected};

/// One mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: String,
    /// `major:minor` of the mounted device (`0:N` for filesystems without one).
    pub dev: String,
    /// Filesystem type (`ext4`, `xfs`, `tmpfs`, ...).
    pub fs_type: String,
    /// What is mounted (`/dev/vda1`, `tmpfs`, ...).
    pub source: String,
    /// Per-mount options and filesystem options, comma-separated.
    pub options: String,
}

/// Parses `/proc/self/mountinfo`, unescaping `\040`-style octal escapes in paths.
pub fn parse_mountinfo(path: &Path, text: &str) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || Error::Parse {
            path: path.to_path_buf(),
            reason: format!("line {}: not a mountinfo line: {line:?}", n + 1),
        };
        let (left, right) = line.split_once(" - ").ok_or_else(bad)?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 6 || right.len() < 2 {
            return Err(bad());
        }
        let super_opts = right.get(2).copied().unwrap_or_default();
        let mut options: Vec<&str> = Vec::new();
        for o in left[5].split(',').chain(super_opts.split(',')) {
            if !o.is_empty() && !options.contains(&o) {
                options.push(o);
            }
        }
        mounts.push(Mount {
            mount_point: unescape(left[4]),
            dev: left[2].to_string(),
            fs_type: right[0].to_string(),
            source: unescape(right[1]),
            options: options.join(","),
        });
    }
    Ok(mounts)
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// The mount holding `dir` (an absolute, symlink-free path): the longest mount point that is a
/// path prefix of it; of several mounts on the same point, the last (the visible one).
pub fn mount_of<'a>(mounts: &'a [Mount], dir: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if dir.starts_with(&m.mount_point)
            && best.is_none_or(|b| m.mount_point.len() >= b.mount_point.len())
        {
            best = Some(m);
        }
    }
    best
}

/// Queue settings of one whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// Kernel name (`vda`, `nvme0n1`, `sda`).
    pub name: String,
    /// Spinning disk (`queue/rotational`).
    pub rotational: Option<bool>,
    /// Active I/O scheduler (`queue/scheduler`).
    pub scheduler: Option<String>,
    /// Schedulers the kernel offers for it.
    pub schedulers: Vec<String>,
    /// Requests the block layer queues per hardware queue (`queue/nr_requests`).
    pub nr_requests: Option<u32>,
    /// Hardware queues (`mq/*`).
    pub hw_queues: usize,
    /// Tags (in-flight commands) per hardware queue (`mq/0/nr_tags`).
    pub hw_queue_depth: Option<u32>,
    /// Largest I/O the kernel sends, in KiB (`queue/max_sectors_kb`).
    pub max_io_kib: Option<u32>,
    /// Logical block size in bytes: the O_DIRECT alignment.
    pub logical_block_bytes: Option<u32>,
    /// Physical block size in bytes.
    pub physical_block_bytes: Option<u32>,
    /// Model string, when the driver reports one.
    pub model: Option<String>,
    /// A paravirtual disk (virtio-blk `vd*`, Xen `xvd*`): its `rotational` flag is whatever the
    /// hypervisor chose (virtio-blk says rotational by default), not what the storage is.
    pub paravirtual: bool,
    /// NUMA node of the disk's controller, when known (`-1` in sysfs means unknown).
    pub numa_node: Option<usize>,
}

/// What the data directory is stored on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataDevice {
    /// The directory asked about (made absolute).
    pub dir: String,
    /// The mount holding it.
    pub mount: Mount,
    /// The block device's kernel name (`vda1`, `dm-0`); `None` for filesystems without one
    /// (`tmpfs`, `overlay`, network filesystems).
    pub device: Option<String>,
    /// `disk`, `partition`, `device-mapper`, `md` or `none`.
    pub kind: String,
    /// The device-mapper name (`vg0-data`), for `device-mapper`.
    pub dm_name: Option<String>,
    /// The whole disks under it.
    pub disks: Vec<Disk>,
}

impl DataDevice {
    /// Finds what `dir` is stored on. `dir` must be absolute; the live caller canonicalizes it.
    pub fn read(host: &Host, dir: &Path) -> Result<DataDevice> {
        let path = host.proc("self/mountinfo");
        let text = crate::host::read(&path)?;
        let mounts = parse_mountinfo(&path, &text)?;
        let mount = mount_of(&mounts, dir)
            .ok_or_else(|| Error::Parse {
                path: path.clone(),
                reason: format!("no mount holds {dir:?}"),
            })?
            .clone();
        let mut out = DataDevice {
            dir: dir.display().to_string(),
            mount,
            device: None,
            kind: "none".to_string(),
            dm_name: None,
            disks: Vec::new(),
        };
        let Some(dev_dir) = device_dir(host, &out.mount) else {
            return Ok(out);
        };
        out.device = dev_dir.file_name().map(|n| n.to_string_lossy().to_string());
        out.kind = kind(&dev_dir).to_string();
        out.dm_name = read_opt(&dev_dir.join("dm/name"))?;
        let mut disk_dirs = Vec::new();
        whole_disks(&dev_dir, &mut disk_dirs, 0);
        for d in disk_dirs {
            out.disks.push(read_disk(&d)?);
        }
        Ok(out)
    }
}

/// The sysfs directory of the mount's device: by `major:minor`, else by the source's name
/// (btrfs and some others report an anonymous `0:N` device).
fn device_dir(host: &Host, mount: &Mount) -> Option<PathBuf> {
    if let Ok(d) = std::fs::canonicalize(host.sys(&format!("dev/block/{}", mount.dev))) {
        return Some(d);
    }
    let source = mount.source.strip_prefix("/dev/")?;
    // `/dev/mapper/vg-lv` is a symlink to `/dev/dm-N` on a live system.
    let name = std::fs::canonicalize(host.root().join("dev").join(source))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_else(|| source.rsplit('/').next().unwrap_or(source).to_string());
    std::fs::canonicalize(host.sys(&format!("class/block/{name}"))).ok()
}

fn kind(dev_dir: &Path) -> &'static str {
    if dev_dir.join("partition").exists() {
        "partition"
    } else if dev_dir.join("dm").is_dir() {
        "device-mapper"
    } else if dev_dir.join("md").is_dir() {
        "md"
    } else {
        "disk"
    }
}

/// Collects the whole disks doing a device's I/O. Depth is bounded: device stacks are shallow,
/// and a loop in a synthetic tree must not hang us.
fn whole_disks(dev_dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    if dev_dir.join("partition").exists() {
        if let Some(parent) = dev_dir.parent() {
            whole_disks(parent, out, depth + 1);
        }
        return;
    }
    let mut slaves: Vec<PathBuf> = std::fs::read_dir(dev_dir.join("slaves"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::canonicalize(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if slaves.is_empty() {
        if !out.contains(&dev_dir.to_path_buf()) {
            out.push(dev_dir.to_path_buf());
        }
        return;
    }
    slaves.sort();
    for s in slaves {
        whole_disks(&s, out, depth + 1);
    }
}

fn read_disk(dir: &Path) -> Result<Disk> {
    let q = dir.join("queue");
    let (scheduler, schedulers) = match read_opt(&q.join("scheduler"))? {
        Some(t) => selected(&t),
        None => (None, Vec::new()),
    };
    let hw_queues = std::fs::read_dir(dir.join("mq"))
        .map(|e| e.flatten().count())
        .unwrap_or(0);
    let model = match read_opt(&dir.join("device/model"))? {
        Some(m) if !m.is_empty() => Some(m),
        _ => None,
    };
    Ok(Disk {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        rotational: read_num_opt::<u8>(&q.join("rotational"))?.map(|r| r != 0),
        scheduler,
        schedulers,
        nr_requests: read_num_opt(&q.join("nr_requests"))?,
        hw_queues,
        hw_queue_depth: read_num_opt(&dir.join("mq/0/nr_tags"))?,
        max_io_kib: read_num_opt(&q.join("max_sectors_kb"))?,
        logical_block_bytes: read_num_opt(&q.join("logical_block_size"))?,
        physical_block_bytes: read_num_opt(&q.join("physical_block_size"))?,
        model,
        paravirtual: is_paravirtual(dir),
        numa_node: numa_node(dir)?,
    })
}

fn is_paravirtual(dir: &Path) -> bool {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let via_virtio = std::fs::canonicalize(dir.join("device"))
        .map(|d| {
            d.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("virtio"))
        })
        .unwrap_or(false);
    via_virtio || name.starts_with("vd") || name.starts_with("xvd")
}

/// The NUMA node of the device's controller: the first `numa_node` file found walking up from
/// `device/` (a virtio disk's is on its PCI parent).
fn numa_node(dir: &Path) -> Result<Option<usize>> {
    let Ok(mut d) = std::fs::canonicalize(dir.join("device")) else {
        return Ok(None);
    };
    for _ in 0..6 {
        if let Some(n) = read_num_opt::<i64>(&d.join("numa_node"))? {
            return Ok(usize::try_from(n).ok());
        }
        match d.parent() {
            Some(p) => d = p.to_path_buf(),
            None => break,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 254:1 / /srv/my\\040data rw,noatime - xfs /dev/vda1 rw
31 30 0:40 / /srv/my\\040data/tmp rw - tmpfs tmpfs rw
32 30 253:0 / /srv/my\\040data/tmp rw - ext4 /dev/mapper/vg-lv rw
";

    #[test]
    fn mount_of_takes_the_longest_prefix_and_the_last_overmount() {
        let m = parse_mountinfo(Path::new("mountinfo"), MOUNTINFO).unwrap();
        assert_eq!(m[2].mount_point, "/srv/my data");
        assert_eq!(m[2].options, "rw,noatime");
        let at = |p: &str| mount_of(&m, Path::new(p)).unwrap().dev.clone();
        assert_eq!(at("/var/lib"), "254:0");
        assert_eq!(at("/srv/my data/x"), "254:1");
        // `/srv/my datax` is not under `/srv/my data`.
        assert_eq!(at("/srv/my datax"), "254:0");
        assert_eq!(at("/srv/my data/tmp/a"), "253:0");
        let e = parse_mountinfo(Path::new("mi"), "garbage\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
