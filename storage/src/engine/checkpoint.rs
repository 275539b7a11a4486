//! Checkpoints of an engine applying an external log (a Raft snapshot's content): the tables
//! that hold the log's entries up to [`Engine::flushed_log_index`], hard-linked into a
//! directory beside a descriptor. Another replica's engine installs that directory in place
//! of its whole state ([`Engine::install_checkpoint`]) and goes on applying entries after it.
//!
//! A checkpoint needs no flush: the tables alone are the state as of the last flushed entry
//! (the memtable switches only between entries), and the log keeps the entries after it.
//!
//! ## Descriptor `CHECKPOINT`, version 1, little-endian
//!
//! ```text
//! "CKVCHKPT" | version u32 (1) | crc32c u32 of the edit | edit
//! ```
//! The edit is a manifest edit (the manifest's record encoding): `applied_index`,
//! `applied_time_ms`, `last_seq` (the last sequence number handed out up to the applied entry:
//! the replica goes on numbering from there, as the leader did, even where compactions dropped
//! the newest writes, tombstones or expired values, from the tables) and one added table per
//! file, with its level and metadata, under its number in the checkpoint directory.
//!
//! ## Installing
//! A table's footer names its number, so a copy is first renumbered above every number the
//! receiving engine has used ([`renumber_checkpoint`]). The descriptor and every table are
//! checked before anything changes. The tables are hard-linked into the engine directory,
//! then one manifest edit removes every live table, adds the new ones and records the
//! checkpoint's applied entry: that edit is the commit point (a crash before it leaves the
//! old state; the links are removed as unreferenced on the next open, and the checkpoint
//! directory is intact for another attempt). The memtables are dropped; a flush or
//! compaction that was running when the edit landed is abandoned at its own edit.

use std::collections::HashMap;

use super::*;
use crate::io::CrashPoint;
use crate::io::buffered::{read_exact_at, write_all_at};
use crate::manifest::{ManifestState, VersionEdit};
use crate::options::WAL_BLOCK_SIZE_BYTES;
use crate::sst::footer::{FOOTER_BYTES, Footer};
use crate::sst::reader::{TableReader, table_path};
use crate::version::TableFile;

/// The descriptor's file name inside a checkpoint directory.
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";
const MAGIC: &[u8; 8] = b"CKVCHKPT";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4;
/// Largest descriptor read (bounds what a damaged or hostile file can make us allocate).
pub const DESCRIPTOR_BYTES_MAX: u64 = 64 << 20;
/// Deepest level a descriptor may name.
const LEVELS_MAX: usize = 64;

/// What [`Engine::checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The last log entry the checkpoint holds.
    pub applied_index: u64,
    /// That entry's time (ms since the epoch).
    pub applied_time_ms: u64,
    /// The files of the checkpoint directory with their sizes, tables first, the
    /// descriptor last.
    pub files: Vec<(String, u64)>,
}

impl Engine {
    /// Writes a checkpoint of the tables into `dir` (which must not exist): hard links to
    /// the live tables and the descriptor, synced. The engine goes on meanwhile; the links
    /// keep the tables' contents however compactions change the engine later.
    pub async fn checkpoint(&self, dir: &Path) -> Result<CheckpointInfo> {
        self.external_log("checkpoint")?;
        self.check_open()?;
        let io_err = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |e| Error::io(op, &p, e)
        };
        let owned = dir.to_path_buf();
        crate::io::blocking(move || std::fs::create_dir(owned))
            .await
            .map_err(io_err("create checkpoint directory", dir))?;
        // No manifest edit may land between reading the tables and the entry they hold.
        let permit = self.inner.manifest.lock().await?;
        let version = self.inner.state.borrow().version().clone();
        let mut edit = VersionEdit {
            applied_index: Some(self.inner.manifest.applied_index()),
            applied_time_ms: Some(self.inner.manifest.applied_time_ms()),
            ..VersionEdit::default()
        };
        let mut files = Vec::new();
        let mut links = Vec::new();
        let mut last_seq = self.inner.manifest.flushed_seq();
        for (level, tables) in version.levels.iter().enumerate() {
            for t in tables {
                links.push((
                    table_path(&self.inner.dir, t.number()),
                    table_path(dir, t.number()),
                ));
                last_seq = last_seq.max(t.meta.seq_max);
                edit.added.push((level, t.meta.clone()));
                files.push((
                    crate::sst::builder::table_file_name(t.number()),
                    t.size_bytes(),
                ));
            }
        }
        // The version read and the entry it holds agree: no edit need wait for the links. A
        // table is deleted only with its last holder, and `version` holds them until linked.
        drop(permit);
        hard_link_all(links).await?;
        drop(version);
        edit.last_seq = Some(last_seq);
        let descriptor = encode_descriptor(&edit);
        let path = dir.join(CHECKPOINT_FILE);
        write_file_synced(&self.inner.io, &path, &descriptor).await?;
        self.inner.io.sync_dir(dir).await?;
        files.push((CHECKPOINT_FILE.to_string(), descriptor.len() as u64));
        Ok(CheckpointInfo {
            applied_index: edit.applied_index.unwrap_or(0),
            applied_time_ms: edit.applied_time_ms.unwrap_or(0),
            files,
        })
    }

    /// Checks, changing nothing, that [`Engine::install_checkpoint`] would take the
    /// checkpoint in `dir` (descriptor, every table's footer, index, filter and size, levels,
    /// numbers, an applied entry ahead of this engine's), so that a caller with its own state
    /// to change first (a Raft log) changes it only for a checkpoint that installs. Returns
    /// the descriptor and its largest table number.
    pub async fn check_checkpoint(&self, dir: &Path) -> Result<(VersionEdit, u64)> {
        let log = self.external_log("install_checkpoint")?;
        self.check_writable()?;
        if let Some((open, _)) = log.entry() {
            return Err(Error::InvalidArgument(format!(
                "install_checkpoint: entry {open} is being applied"
            )));
        }
        let checkpoint = read_descriptor(dir).await?;
        let index = checkpoint.applied_index.unwrap_or(0);
        let applied = log.applied().0;
        if index <= applied {
            return Err(Error::InvalidArgument(format!(
                "install_checkpoint: the checkpoint holds entries up to {index}, this engine \
                 has applied up to {applied} already"
            )));
        }
        let inner = &self.inner;
        // Through a cache of its own: nothing read here is served to readers.
        let scratch = BlockCache::new(1 << 20);
        let mut last_number = 0;
        let next_number = inner.state.borrow().next_file_number();
        for (level, meta) in &checkpoint.added {
            let path = table_path(dir, meta.file_number);
            if *level >= inner.options.levels_max {
                return Err(Error::corruption(
                    &path,
                    0,
                    format!(
                        "the checkpoint puts this table at level {level}; this engine has {}",
                        inner.options.levels_max
                    ),
                ));
            }
            if meta.file_number < next_number {
                return Err(Error::InvalidArgument(format!(
                    "install_checkpoint: table {} may be one of this engine's (its numbers \
                     reach {next_number}): renumber the checkpoint first",
                    meta.file_number
                )));
            }
            let table =
                TableReader::open(&inner.io, &path, meta.file_number, scratch.clone()).await?;
            let size = table.size_bytes();
            if size != meta.size_bytes {
                return Err(Error::corruption(
                    &path,
                    0,
                    format!(
                        "the checkpoint records {} bytes for this table, the file has {size}",
                        meta.size_bytes
                    ),
                ));
            }
            last_number = last_number.max(meta.file_number);
        }
        Ok((checkpoint, last_number))
    }

    /// Replaces this engine's whole state with the checkpoint in `dir` (written by
    /// [`Engine::checkpoint`] on another replica, copied here, then given numbers of this
    /// engine by [`renumber_checkpoint`]): this engine then holds the log's entries up to the
    /// checkpoint's and applies the entries after it. Returns that entry's index. The
    /// tables are hard-linked, so `dir` is unchanged (the caller removes it once this
    /// returns) and an attempt cut short by a crash can be made again. Refused between
    /// `begin_entry` and `end_entry`, for a checkpoint not ahead of this engine, and for
    /// table numbers this engine may have used. Every file is checked first: a damaged
    /// checkpoint changes nothing.
    pub async fn install_checkpoint(&self, dir: &Path) -> Result<u64> {
        let log = self.external_log("install_checkpoint")?;
        let (checkpoint, last_number) = self.check_checkpoint(dir).await?;
        let index = checkpoint.applied_index.unwrap_or(0);
        let time_ms = checkpoint.applied_time_ms.unwrap_or(0);
        let inner = &self.inner;
        let _permit = inner.manifest.lock().await?;
        {
            // Checked and raised in one step: no number handed out between the check and the
            // raise (a flush, across the awaits below) can be one of the checkpoint's.
            let mut state = inner.state.borrow_mut();
            let next_number = state.next_file_number();
            if let Some((_, m)) = checkpoint
                .added
                .iter()
                .find(|(_, m)| m.file_number < next_number)
            {
                return Err(Error::InvalidArgument(format!(
                    "install_checkpoint: table {} may be one of this engine's (its numbers \
                     reach {next_number}): renumber the checkpoint first",
                    m.file_number
                )));
            }
            state.raise_next_file_number(last_number + 1);
        }
        let mut edit = VersionEdit {
            applied_index: Some(index),
            applied_time_ms: Some(time_ms),
            ..VersionEdit::default()
        };
        let mut added = HashMap::new();
        let mut links = Vec::new();
        for (_, meta) in &checkpoint.added {
            let to = table_path(&inner.dir, meta.file_number);
            // A link left by an attempt a crash cut short (unreferenced: never read).
            if to.exists() {
                inner.io.remove(&to)?;
            }
            links.push((table_path(dir, meta.file_number), to));
        }
        hard_link_all(links).await?;
        for (level, meta) in &checkpoint.added {
            let to = table_path(&inner.dir, meta.file_number);
            let table =
                TableReader::open(&inner.io, &to, meta.file_number, inner.cache.clone()).await?;
            added.insert(
                meta.file_number,
                TableFile::new(meta.clone(), table, inner.io.clone()),
            );
            edit.added.push((*level, meta.clone()));
        }
        inner.io.sync_dir(&inner.dir).await?;
        inner.io.crash_point(CrashPoint::CheckpointBeforeManifest)?;
        let old = inner.state.borrow().version().clone();
        for (level, tables) in old.levels.iter().enumerate() {
            for t in tables {
                edit.deleted.push((level, t.number()));
            }
        }
        let last_seq = inner
            .state
            .borrow()
            .last_seq()
            .max(checkpoint.last_seq.unwrap_or(0));
        edit.last_seq = Some(last_seq);
        edit.flushed_seq = Some(last_seq);
        edit.next_file_number = Some(inner.state.borrow().next_file_number());
        inner
            .manifest
            .append(&edit, || inner.state.borrow_mut().take_file_number())
            .await?;
        {
            let mut state = inner.state.borrow_mut();
            let next = state.version().apply(&edit, &added);
            state.reset(next, last_seq);
        }
        log.reset_applied((index, time_ms));
        for t in old.levels.iter().flatten() {
            t.mark_obsolete();
        }
        drop(old);
        background::refresh_backlog(inner);
        inner.workers.room_made();
        inner.workers.wake();
        tracing::info!(dir = ?inner.dir, index, tables = added.len(), "checkpoint installed");
        Ok(index)
    }

    /// The next table number this engine would hand out: a checkpoint to install here is
    /// renumbered from above it ([`renumber_checkpoint`]).
    pub fn next_file_number(&self) -> u64 {
        self.inner.state.borrow().next_file_number()
    }
}

/// Gives the tables of the checkpoint in `dir` (a copy of another engine's) numbers from
/// `at_least` up, or from above their current numbers if those are higher: rewrites each
/// table's footer, renames it, and rewrites the descriptor. A crash leaves the directory
/// half renumbered: discard it. Returns the numbers used (first..past the last). Table reads,
/// writes and syncs go through io_uring; the descriptor read and the renames run on the
/// blocking thread ([`crate::io::blocking`]).
pub async fn renumber_checkpoint(dir: &Path, at_least: u64) -> Result<std::ops::Range<u64>> {
    let mut edit = read_descriptor(dir).await?;
    let first = edit
        .added
        .iter()
        .map(|(_, m)| m.file_number + 1)
        .fold(at_least, u64::max);
    let mut renames = Vec::new();
    for (i, (_, meta)) in edit.added.iter_mut().enumerate() {
        let to = first + i as u64;
        let from_path = table_path(dir, meta.file_number);
        renumber_table(&from_path, meta.file_number, to).await?;
        // The new numbers are above every old one, so no rename replaces a table.
        renames.push((from_path, table_path(dir, to)));
        meta.file_number = to;
    }
    let path = dir.join(CHECKPOINT_FILE);
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    write_synced(&tmp, &encode_descriptor(&edit)).await?;
    renames.push((tmp, path));
    for_each_pair("rename", renames, |from, to| std::fs::rename(from, to)).await?;
    let dir_err = |e: glommio::GlommioError<()>| Error::io("sync directory", dir, e.into());
    glommio::io::Directory::open(dir)
        .await
        .map_err(dir_err)?
        .sync()
        .await
        .map_err(dir_err)?;
    Ok(first..first + edit.added.len() as u64)
}

/// Writes `bytes` as the whole new file `path`, durably, through io_uring (the shard's thread
/// does not wait on the disk): one aligned write, cut to length, synced.
async fn write_file_synced(io: &crate::io::Io, path: &Path, bytes: &[u8]) -> Result<()> {
    let f = io.create(path).await?;
    // O_DIRECT: whole blocks (at least one), zeros past the end until the cut.
    let len = bytes.len().max(1).next_multiple_of(WAL_BLOCK_SIZE_BYTES);
    let mut buf = f.alloc(len);
    let out = buf.as_bytes_mut();
    out[..bytes.len()].copy_from_slice(bytes);
    out[bytes.len()..].fill(0);
    f.write_at(buf, 0).await?;
    f.truncate(bytes.len() as u64).await?;
    f.fdatasync().await?;
    f.close().await
}

/// Writes `bytes` as the whole file `path` (created or truncated), buffered, and syncs it.
async fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err =
        |op: &'static str| move |e: glommio::GlommioError<()>| Error::io(op, path, e.into());
    let f = glommio::io::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(path)
        .await
        .map_err(io_err("create"))?;
    write_all_at(&f, bytes.to_vec(), 0)
        .await
        .map_err(|e| Error::io("write", path, e))?;
    f.fdatasync().await.map_err(io_err("sync"))?;
    f.close().await.map_err(io_err("close"))
}

/// Rewrites the number in the footer of table file `path` (table `from`): a table received
/// from another engine takes a number of this one, and its footer names its number.
async fn renumber_table(path: &Path, from: u64, to: u64) -> Result<()> {
    let io_err =
        |op: &'static str| move |e: glommio::GlommioError<()>| Error::io(op, path, e.into());
    let f = glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .buffered_open(path)
        .await
        .map_err(io_err("open"))?;
    let size = f.file_size().await.map_err(io_err("stat"))?;
    let at = size
        .checked_sub(FOOTER_BYTES as u64)
        .ok_or_else(|| Error::corruption(path, 0, "shorter than a footer"))?;
    let bytes = read_exact_at(&f, at, FOOTER_BYTES)
        .await
        .map_err(|e| Error::io("read", path, e))?;
    let mut footer = Footer::decode(&bytes, size).map_err(|d| Error::corruption(path, at, d))?;
    if footer.file_number != from {
        return Err(Error::corruption(
            path,
            at,
            format!(
                "footer names table {}, the checkpoint {from}",
                footer.file_number
            ),
        ));
    }
    footer.file_number = to;
    // Buffered and synced: the engine reads it with O_DIRECT afterwards, which sees it.
    write_all_at(&f, footer.seal().to_vec(), at)
        .await
        .map_err(|e| Error::io("write", path, e))?;
    f.fdatasync().await.map_err(io_err("sync"))?;
    f.close().await.map_err(io_err("close"))
}

fn encode_descriptor(edit: &VersionEdit) -> Vec<u8> {
    let body = edit.encode();
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads and checks the descriptor of the checkpoint in `dir`.
async fn read_descriptor(dir: &Path) -> Result<VersionEdit> {
    let path = dir.join(CHECKPOINT_FILE);
    let bad = |detail: String| Error::corruption(&path, 0, detail);
    let owned = path.clone();
    let b = crate::io::blocking(move || {
        let size = std::fs::metadata(&owned)
            .map_err(|e| Error::io("stat", &owned, e))?
            .len();
        if size > DESCRIPTOR_BYTES_MAX {
            let detail = format!("a checkpoint descriptor of {size} bytes");
            return Err(Error::corruption(&owned, 0, detail));
        }
        std::fs::read(&owned).map_err(|e| Error::io("read", &owned, e))
    })
    .await?;
    decode_descriptor(&b).map_err(bad)
}

/// Makes each hard link `(existing, new)`, in one hand-off to the blocking thread.
async fn hard_link_all(links: Vec<(PathBuf, PathBuf)>) -> Result<()> {
    for_each_pair("link table", links, |from, to| std::fs::hard_link(from, to)).await
}

/// Runs `f(from, to)` for each pair in order, in one hand-off to the blocking thread; stops at
/// the first error (`op` names it, with the `to` path).
async fn for_each_pair(
    op: &'static str,
    pairs: Vec<(PathBuf, PathBuf)>,
    f: fn(&Path, &Path) -> std::io::Result<()>,
) -> Result<()> {
    crate::io::blocking(move || {
        for (from, to) in pairs {
            f(&from, &to).map_err(|e| Error::io(op, &to, e))?;
        }
        Ok(())
    })
    .await
}

/// Decodes a descriptor; what is wrong if it is not a valid one.
pub fn decode_descriptor(b: &[u8]) -> std::result::Result<VersionEdit, String> {
    if b.len() < HEADER_BYTES || &b[..8] != MAGIC {
        return Err("not a checkpoint descriptor (bad magic or too short)".into());
    }
    let word = |at: usize| {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(x)
    };
    if word(8) != VERSION {
        return Err(format!(
            "checkpoint descriptor version {} (expected 1)",
            word(8)
        ));
    }
    let body = &b[HEADER_BYTES..];
    if crc32c::crc32c(body) != word(12) {
        return Err("checkpoint descriptor checksum mismatch".into());
    }
    let edit = VersionEdit::decode(body)?;
    if edit.applied_index.is_none() || !edit.deleted.is_empty() {
        return Err("the descriptor names no applied entry, or deletes tables".into());
    }
    // The tables must form a valid version (levels in range, no number twice, deeper levels
    // disjoint).
    // Levels are checked against the installing engine's; this bound keeps a damaged
    // descriptor from sizing an allocation.
    ManifestState::default().apply(&edit, LEVELS_MAX)?;
    let mut levels: Vec<Vec<(&[u8], &[u8])>> = Vec::new();
    for (level, m) in &edit.added {
        if m.smallest > m.largest {
            return Err(format!(
                "table {}: smallest key above largest",
                m.file_number
            ));
        }
        if *level > 0 {
            if levels.len() <= *level {
                levels.resize_with(*level + 1, Vec::new);
            }
            levels[*level].push((&m.smallest, &m.largest));
        }
    }
    for (level, ranges) in levels.iter_mut().enumerate() {
        ranges.sort();
        if ranges.windows(2).any(|w| w[0].1 >= w[1].0) {
            return Err(format!("level {level} has overlapping tables"));
        }
    }
    Ok(edit)
}
