//! The data directory: its layout, the lock that keeps a second server out, and the record of
//! how many shards it was created with.
//!
//! ```text
//! DATA_DIR/
//!   LOCK          flock(LOCK_EX) held for the server's lifetime; holds the owner's pid (text)
//!   corekv.meta   format version, shard count and hash name (TOML text, below); written once
//!   cluster       a cluster node's id and its `--initial-cluster` (text), written when the
//!                 directory is first used by that node; absent for a single node
//!   shard-0/      shard 0's storage engine (its WAL, tables, ...)
//!   ...
//!   shard-<N-1>/
//! ```
//!
//! `corekv.meta`, version 1 (UTF-8 TOML; written to `corekv.meta.tmp`, fsynced, renamed,
//! directory fsynced, so it is either absent or complete):
//!
//! ```text
//! # corekv data directory: written when the directory was created; do not edit.
//! format_version = 1
//! shard_count = 4
//! hash = "fnv1a64-fmix64-jump-v1"
//! ```
//!
//! Keys are placed by `hash` over `shard_count` shards, so opening the directory with another
//! count would look for every key in the wrong shard: that is refused with a message saying
//! which count to use.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use corekv_proto::SHARD_HASH_NAME;
use serde::Deserialize;

use crate::error::Error;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the layout record inside the data directory.
pub const META_FILE: &str = "corekv.meta";
/// Name of the cluster record inside the data directory.
pub const CLUSTER_FILE: &str = "cluster";
/// Version of the `corekv.meta` format written by this build.
pub const META_FORMAT_VERSION: u32 = 1;

/// An open, locked data directory. The lock is released when this is dropped (or the process
/// exits, however it exits).
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    shard_count: usize,
    _lock: File,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format_version: u32,
    shard_count: usize,
    hash: String,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::DataDirIo {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl DataDir {
    /// Creates (if needed), locks and checks the data directory for `shard_count` shards, and
    /// creates every shard's subdirectory.
    pub fn open(root: &Path, shard_count: usize) -> Result<DataDir, Error> {
        assert!(shard_count >= 1);
        std::fs::create_dir_all(root).map_err(io_err("create directory", root))?;
        // Absolute from here on: logs say exactly where the data is, and glommio opens
        // directories relative to no directory at all (a relative path fails with EBADF).
        let root = &std::fs::canonicalize(root).map_err(io_err("resolve", root))?;
        let lock = lock(root)?;
        let meta_path = root.join(META_FILE);
        match std::fs::read_to_string(&meta_path) {
            Ok(text) => check_meta(root, &meta_path, &text, shard_count)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                refuse_unrecorded_shards(root)?;
                write_meta(root, shard_count)?;
            }
            Err(e) => return Err(io_err("read", &meta_path)(e)),
        }
        for shard in 0..shard_count {
            let dir = shard_dir(root, shard);
            std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        sync_dir(root)?;
        Ok(DataDir {
            root: root.to_path_buf(),
            shard_count,
            _lock: lock,
        })
    }

    /// Checks the directory against the cluster this server starts in (`identity`: what
    /// [`crate::config::ClusterConfig::identity`] gives, None for a single node), recording it
    /// on first use. A directory is used by one node of one cluster, or by a single node, for
    /// its whole life: a replicated shard's state lives in its Raft log, which a single node
    /// does not read, and another node's data would join the cluster under a false identity.
    pub fn check_cluster(&self, identity: Option<&str>) -> Result<(), Error> {
        let path = self.root.join(CLUSTER_FILE);
        let refuse = |detail: String| {
            Err(Error::DataDirMeta {
                path: path.clone(),
                detail,
            })
        };
        match (std::fs::read_to_string(&path), identity) {
            (Ok(recorded), Some(identity)) if recorded == identity => Ok(()),
            (Ok(recorded), Some(_)) => refuse(format!(
                "this directory belongs to another cluster node ({}); start with the same \
                 `--node-id` and `--initial-cluster`, or use another data directory",
                recorded.trim().replace('\n', ", ")
            )),
            (Ok(recorded), None) => refuse(format!(
                "this directory belongs to a cluster node ({}); start it with its cluster flags",
                recorded.trim().replace('\n', ", ")
            )),
            (Err(e), _) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err("read", &path)(e))
            }
            (Err(_), None) => Ok(()),
            (Err(_), Some(identity)) => {
                for shard in 0..self.shard_count {
                    let dir = shard_dir(&self.root, shard);
                    let used = std::fs::read_dir(&dir)
                        .map_err(io_err("list directory", &dir))?
                        .next()
                        .is_some();
                    if used {
                        return refuse(format!(
                            "{} holds a single node's data; a cluster node starts from an \
                             empty data directory",
                            dir.display()
                        ));
                    }
                }
                let tmp = self.root.join(format!("{CLUSTER_FILE}.tmp"));
                let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
                file.write_all(identity.as_bytes())
                    .map_err(io_err("write", &tmp))?;
                file.sync_all().map_err(io_err("fsync", &tmp))?;
                drop(file);
                std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
                sync_dir(&self.root)
            }
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Shard `shard`'s directory.
    pub fn shard_dir(&self, shard: usize) -> PathBuf {
        assert!(shard < self.shard_count);
        shard_dir(&self.root, shard)
    }
}

fn shard_dir(root: &Path, shard: usize) -> PathBuf {
    root.join(format!("shard-{shard}"))
}

/// Takes the directory's lock without waiting, recording our pid in it.
fn lock(root: &Path) -> Result<File, Error> {
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open", &path))?;
    // SAFETY: `file` is an open file descriptor for the duration of the call; flock does not
    // touch memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::DataDirLocked {
                path: root.to_path_buf(),
                holder: holder.trim().to_string(),
            });
        }
        return Err(io_err("flock", &path)(err));
    }
    file.set_len(0).map_err(io_err("truncate", &path))?;
    file.rewind().map_err(io_err("seek", &path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_err("write", &path))?;
    Ok(file)
}

fn check_meta(root: &Path, meta_path: &Path, text: &str, shard_count: usize) -> Result<(), Error> {
    let meta: Meta = toml::from_str(text).map_err(|e| Error::DataDirMeta {
        path: meta_path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if meta.format_version != META_FORMAT_VERSION {
        return Err(Error::DataDirMeta {
            path: meta_path.to_path_buf(),
            detail: format!(
                "format_version {} is not supported by this build (it reads version \
                 {META_FORMAT_VERSION})",
                meta.format_version
            ),
        });
    }
    if meta.hash != SHARD_HASH_NAME {
        return Err(Error::DataDirMeta {
            path: meta_path.to_path_buf(),
            detail: format!(
                "keys were placed with hash {:?}; this build only knows {SHARD_HASH_NAME:?}",
                meta.hash
            ),
        });
    }
    if meta.shard_count != shard_count {
        return Err(Error::ShardCountMismatch {
            path: root.to_path_buf(),
            recorded: meta.shard_count,
            requested: shard_count,
        });
    }
    Ok(())
}

/// A directory with shard data but no record is not ours to guess about.
fn refuse_unrecorded_shards(root: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(root).map_err(io_err("list", root))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", root))?;
        if entry.file_name().to_string_lossy().starts_with("shard-") {
            return Err(Error::DataDirMeta {
                path: root.join(META_FILE),
                detail: format!(
                    "missing, but {:?} exists: the directory holds shard data without a record \
                     of its shard count; restore {META_FILE} or use another --data-dir",
                    entry.path()
                ),
            });
        }
    }
    Ok(())
}

fn write_meta(root: &Path, shard_count: usize) -> Result<(), Error> {
    let tmp = root.join(format!("{META_FILE}.tmp"));
    let text = format!(
        "# corekv data directory: written when the directory was created; do not edit.\n\
         format_version = {META_FORMAT_VERSION}\nshard_count = {shard_count}\nhash = \"{SHARD_HASH_NAME}\"\n"
    );
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(text.as_bytes())
        .map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    let path = root.join(META_FILE);
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(root)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_layout_and_reopens_with_the_same_count() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        {
            let d = DataDir::open(&root, 3).unwrap();
            assert!(d.shard_dir(2).is_dir());
            let meta = std::fs::read_to_string(root.join(META_FILE)).unwrap();
            assert!(meta.contains("shard_count = 3"), "{meta}");
            assert!(meta.contains(SHARD_HASH_NAME), "{meta}");
            let pid = std::fs::read_to_string(root.join(LOCK_FILE)).unwrap();
            assert_eq!(pid.trim(), std::process::id().to_string());
        }
        DataDir::open(&root, 3).unwrap();
    }

    #[test]
    fn a_directory_serves_one_cluster_node_or_a_single_node_for_life() {
        let dir = tempfile::tempdir().unwrap();
        let node1 = "node-id=1\ninitial-cluster=1=127.0.0.1:7479,2=127.0.0.1:8479\n";
        let node2 = "node-id=2\ninitial-cluster=1=127.0.0.1:7479,2=127.0.0.1:8479\n";
        let cluster_root = dir.path().join("cluster");
        {
            let d = DataDir::open(&cluster_root, 1).unwrap();
            d.check_cluster(Some(node1)).unwrap();
            d.check_cluster(Some(node1)).unwrap();
            let err = d.check_cluster(Some(node2)).unwrap_err().to_string();
            assert!(err.contains("another cluster node"), "{err}");
            let err = d.check_cluster(None).unwrap_err().to_string();
            assert!(err.contains("start it with its cluster flags"), "{err}");
        }
        // A single node's data does not become a cluster node's.
        let single_root = dir.path().join("single");
        let d = DataDir::open(&single_root, 1).unwrap();
        d.check_cluster(None).unwrap();
        std::fs::write(d.shard_dir(0).join("000001.sst"), b"data").unwrap();
        let err = d.check_cluster(Some(node1)).unwrap_err().to_string();
        assert!(err.contains("single node's data"), "{err}");
    }

    #[test]
    fn relative_paths_become_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(dir.path(), &cwd).join("rel");
        let d = DataDir::open(&relative, 1).unwrap();
        assert!(d.root().is_absolute(), "{:?}", d.root());
        assert!(d.shard_dir(0).is_absolute());
        assert_eq!(
            d.root(),
            std::fs::canonicalize(dir.path().join("rel")).unwrap()
        );
    }

    /// `target` expressed relative to `base` (both absolute), with `..` components.
    fn pathdiff(target: &Path, base: &Path) -> PathBuf {
        let (t, b): (Vec<_>, Vec<_>) = (target.components().collect(), base.components().collect());
        let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let mut out = PathBuf::new();
        for _ in common..b.len() {
            out.push("..");
        }
        for c in &t[common..] {
            out.push(c);
        }
        out
    }

    #[test]
    fn another_shard_count_is_refused_with_the_recorded_one() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDir::open(dir.path(), 2).unwrap());
        let e = DataDir::open(dir.path(), 1).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(
            e,
            Error::ShardCountMismatch {
                recorded: 2,
                requested: 1,
                ..
            }
        ));
        assert!(msg.contains("--shards 2"), "{msg}");
    }

    #[test]
    fn a_second_open_while_locked_fails_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDir::open(dir.path(), 1).unwrap();
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts just as another process would.
        let e = DataDir::open(dir.path(), 1).unwrap_err();
        assert!(matches!(e, Error::DataDirLocked { .. }), "{e}");
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
    }

    #[test]
    fn damaged_or_foreign_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(META_FILE), "shard_count = \"x\"").unwrap();
        let e = DataDir::open(dir.path(), 1).unwrap_err();
        assert!(e.to_string().contains(META_FILE), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(META_FILE),
            "format_version = 1\nshard_count = 1\nhash = \"crc32-mod\"\n",
        )
        .unwrap();
        let e = DataDir::open(dir.path(), 1).unwrap_err();
        assert!(e.to_string().contains("crc32-mod"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shard-0")).unwrap();
        let e = DataDir::open(dir.path(), 1).unwrap_err();
        assert!(e.to_string().contains("without a record"), "{e}");
    }
}
