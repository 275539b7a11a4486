//! [`RaftLog`]: a shard's Raft log and hard state on disk, and the raft-rs [`Storage`] over
//! them.
//!
//! The log is a [`Wal`] (the same segments, frames, group commit and recovery as a
//! single-node engine's WAL), whose dense record index *is* the Raft index: entry `i` is WAL
//! record `i`. raft-rs's `Storage` is synchronous, so every entry the WAL holds past the last
//! compaction is also kept in memory; compaction ([`RaftLog::compact`]) drops both once the
//! engine's tables hold the entries (the memory at once, whole segments in a task of its own).
//!
//! ## Entry record (the WAL payload), version 2 (1 is read too: the same layout), little-endian
//!
//! ```text
//! +------------+-------------+----------+-----------+------------------+---------+------+
//! | version u8 | entry_type  | term u64 | index u64 | context_len u32  | context | data |
//! | (2)        | u8 (eraftpb)|          |           |                  |         |      |
//! +------------+-------------+----------+-----------+------------------+---------+------+
//! ```
//! `index` repeats the WAL record index, so a record found at the wrong place is damage.
//!
//! ## State file `raft-state`, version 1, little-endian, replaced atomically
//!
//! ```text
//! "CKVRAFTS" | version u32 (1) | crc32c u32 of what follows | term u64 | vote u64 |
//! commit u64 | compacted_index u64 | compacted_term u64 | voters u32 | voter id u64 ...
//! ```
//! Written (temporary file, fsync, rename, fsync directory) when the term, the vote or the
//! voters change, and before a compaction deletes a segment (one that deletes none stays in
//! memory: after a restart its entries are back): rarely, not per write, and on the
//! executor's blocking thread, one write at a time in the order asked (each holds the state
//! as it was when its turn came), so the shard's thread goes on while the disk syncs. The commit
//! index it holds may be stale; on open it is raised to what the engine's tables hold
//! (applied entries were committed), and the leader brings it up to date.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use corekv_storage::io::FaultInjector;
use corekv_storage::wal::{Replayed, Wal, WalOptions};
use corekv_storage::{Durability, Options, WalRecoveryMode};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use files::{
    ENTRY_HEADER_BYTES, PersistedState, encode_entry_head, read_marker, remove_marker,
    replace_file, write_marker,
};
pub use files::{decode_entry, encode_entry};

/// The directory of the log's WAL segments, inside the shard's directory.
pub const RAFT_LOG_DIR: &str = "raft-log";
/// The file holding the hard state, inside the shard's directory.
pub const RAFT_STATE_FILE: &str = "raft-state";
/// Present while a snapshot replaces the log (see [`RaftLog::begin_snapshot`]).
pub const SNAPSHOT_MARKER_FILE: &str = "raft-snapshot-installing";

/// An error of the Raft log (I/O, damage, misuse).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The WAL under the log failed.
    #[error(transparent)]
    Storage(#[from] corekv_storage::Error),
    /// The state file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A record or the state file is damaged.
    #[error("{path}: {what}")]
    Corruption {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// The in-memory half of the log: what raft-rs reads through [`Storage`].
#[derive(Debug, Default)]
struct Core {
    state: PersistedState,
    /// Every entry after `state.compacted_index`, in index order.
    entries: VecDeque<Entry>,
    /// For each of `entries`, a running total of their weights ([`entry_weight`]) up to and
    /// including it (from any start: only differences are read), for a byte-bounded
    /// compaction.
    ends: VecDeque<u64>,
    /// The snapshot this replica can send now, (index, term): its checkpoint is ready.
    offered: Option<(u64, u64)>,
    /// raft-rs asked for a snapshot that is not ready (none offered, or one too old).
    snapshot_wanted: bool,
    /// The term and vote the state file holds (last written, or read at open): a hard state
    /// is written when it differs, whatever happened to an earlier write.
    written_term_vote: (u64, u64),
}

impl Core {
    fn first_index(&self) -> u64 {
        self.state.compacted_index + 1
    }

    fn last_index(&self) -> u64 {
        self.state.compacted_index + self.entries.len() as u64
    }

    fn push(&mut self, e: Entry) {
        let end = self.ends.back().copied().unwrap_or(0) + entry_weight(&e);
        self.ends.push_back(end);
        self.entries.push_back(e);
    }

    fn truncate(&mut self, keep: usize) {
        self.entries.truncate(keep);
        self.ends.truncate(keep);
    }

    fn drop_front(&mut self, n: usize) {
        self.entries.drain(..n);
        self.ends.drain(..n);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.ends.clear();
    }
}

/// What an entry is counted as holding, in bytes, for [`RaftLog::compaction_point`]: its
/// payload and record header.
fn entry_weight(e: &Entry) -> u64 {
    (ENTRY_HEADER_BYTES + e.context.len() + e.data.len()) as u64
}

/// A shard's Raft log: the WAL of entries, the state file, and the in-memory copy raft-rs
/// reads. Cloning gives another handle to the same log (one lives inside the `RawNode`).
#[derive(Clone)]
pub struct RaftLog {
    core: Rc<RefCell<Core>>,
    wal: Rc<Wal>,
    dir: PathBuf,
    /// One write of the state or marker file at a time, in order.
    file_turn: Rc<glommio::sync::Semaphore>,
    /// The task deleting compacted segments (one at a time), for [`RaftLog::settle`].
    deleting: Rc<RefCell<Option<glommio::task::JoinHandle<()>>>>,
    /// Whether that task runs.
    deleting_now: Rc<std::cell::Cell<bool>>,
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RaftLog {
    /// Opens (creating with `voters` if new) the log in the shard directory `dir`. `applied`:
    /// the last entry the engine's tables hold, so the commit index is at least that.
    pub async fn open(
        dir: &Path,
        options: &Options,
        voters: &[u64],
        applied: u64,
    ) -> Result<RaftLog, LogError> {
        Self::open_with_faults(dir, options, voters, applied, None).await
    }

    /// [`RaftLog::open`] with the WAL's file operations going through `faults` (tests).
    pub async fn open_with_faults(
        dir: &Path,
        options: &Options,
        voters: &[u64],
        applied: u64,
        faults: Option<FaultInjector>,
    ) -> Result<RaftLog, LogError> {
        let state_path = dir.join(RAFT_STATE_FILE);
        let mut state = match std::fs::read(&state_path) {
            Ok(bytes) => PersistedState::decode(&bytes).map_err(|what| LogError::Corruption {
                path: state_path.clone(),
                what,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedState {
                voters: voters.to_vec(),
                ..PersistedState::default()
            },
            Err(source) => {
                return Err(LogError::Io {
                    op: "read",
                    path: state_path,
                    source,
                });
            }
        };
        // A snapshot was replacing the log when the replica stopped: the state file may or
        // may not say so yet; the marker does (and the WAL is restarted below).
        let marker = read_marker(dir)?;
        if let Some((index, term)) = marker
            && state.compacted_index < index
        {
            state.compacted_index = index;
            state.compacted_term = term;
            state.hard.commit = state.hard.commit.max(index);
        }
        let compacted = state.compacted_index;
        let mut wal_options = WalOptions::from_options(options);
        // The log is what makes a write durable on this replica: always synced. Its entries
        // were acknowledged to the leader (they count for commits and votes), so only a torn
        // tail, never acknowledged, may be cut; other damage stops the open.
        wal_options.durability = Durability::Sync;
        wal_options.recovery_mode = WalRecoveryMode::TolerateTornTail;
        let mut entries = VecDeque::new();
        let (wal, report) = Wal::open(
            dir.join(RAFT_LOG_DIR),
            wal_options,
            faults,
            |r: Replayed<'_>| {
                let bad = |what: String| corekv_storage::Error::Corruption {
                    file: r.file.to_path_buf(),
                    offset: r.offset,
                    detail: format!("Raft entry {}: {what}", r.index),
                };
                let e = decode_entry(r.payload).map_err(bad)?;
                if e.index != r.index {
                    return Err(bad(format!("record holds entry {}", e.index)));
                }
                // Segments drop whole: records below the compaction point may remain.
                if e.index > compacted {
                    entries.push_back(e);
                }
                Ok(())
            },
        )
        .await?;
        let report_next = if let Some((index, _)) = marker {
            // Entries of the old log may follow the snapshot's index: the leader's log after
            // it may differ, so none of them is kept.
            debug_assert_eq!(index, compacted);
            entries.clear();
            wal.restart_at(compacted + 1).await?;
            // The state file may predate the snapshot: it must say where the log starts now
            // before the marker that says so goes.
            replace_file(dir, RAFT_STATE_FILE, &state.encode())?;
            remove_marker(dir)?;
            compacted + 1
        } else {
            report.next_index
        };
        let first_in_memory = entries.front().map(|e: &Entry| e.index);
        if first_in_memory.is_some_and(|first| first != compacted + 1)
            || (first_in_memory.is_none() && report_next != compacted + 1)
        {
            return Err(LogError::Corruption {
                path: dir.join(RAFT_LOG_DIR),
                what: format!(
                    "the log resumes at entry {first_in_memory:?}, the state file says entries \
                     up to {compacted} were compacted"
                ),
            });
        }
        let last = compacted + entries.len() as u64;
        if applied > last {
            return Err(LogError::Corruption {
                path: dir.join(RAFT_LOG_DIR),
                what: format!(
                    "the engine holds entries up to {applied}, but the log ends at {last}: \
                     the log lost entries this replica acknowledged"
                ),
            });
        }
        // Applied entries were committed; the stored commit may be older (it is written only
        // with term and vote changes).
        state.hard.commit = state.hard.commit.max(applied).min(last);
        tracing::info!(dir = ?dir, first = compacted + 1, last, term = state.hard.term,
            commit = state.hard.commit, "raft log opened");
        let mut core = Core {
            written_term_vote: (state.hard.term, state.hard.vote),
            state,
            ..Core::default()
        };
        for e in entries {
            core.push(e);
        }
        Ok(RaftLog {
            core: Rc::new(RefCell::new(core)),
            wal: Rc::new(wal),
            dir: dir.to_path_buf(),
            file_turn: Rc::new(glommio::sync::Semaphore::new(1)),
            deleting: Rc::default(),
            deleting_now: Rc::default(),
        })
    }

    /// Appends `entries` (taken from a `Ready`, kept without a copy), first removing any
    /// suffix they conflict with, and waits until they are durable.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<(), LogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let (first_index, last_index) = self.bounds();
        if first.index < first_index {
            return Err(LogError::Corruption {
                path: self.dir.join(RAFT_LOG_DIR),
                what: format!(
                    "asked to replace entries from {}, before the compaction point {first_index}",
                    first.index
                ),
            });
        }
        if first.index <= last_index {
            // The leader's entries replace ours from `first.index` on.
            self.wal.truncate_suffix(first.index).await?;
            let mut core = self.core.borrow_mut();
            let keep = (first.index - core.first_index()) as usize;
            core.truncate(keep);
        }
        let last = self.append_queued(entries)?;
        self.wal.wait_durable(last).await?;
        Ok(())
    }

    /// Whether `entries` follow the last one held, so [`RaftLog::append_queued`] takes them
    /// (no suffix of the log to replace first).
    pub fn follows_last(&self, entries: &[Entry]) -> bool {
        entries
            .first()
            .is_none_or(|e| e.index == self.core.borrow().last_index() + 1)
    }

    /// Adds `entries`, which follow the last one held, to the log at once (raft-rs reads them
    /// from now on) and queues their WAL records; returns the last index held, to pass to
    /// [`RaftLog::wait_durable`].
    pub fn append_queued(&self, entries: Vec<Entry>) -> Result<u64, LogError> {
        for e in entries {
            let expected = self.core.borrow().last_index() + 1;
            assert_eq!(e.index, expected, "raft-rs hands entries in index order");
            // The entry's data goes to the WAL as it is (a shared view): copied once, into
            // the write.
            let index = self
                .wal
                .append_parts(encode_entry_head(&e, 0), Box::new(e.data.clone()))?;
            assert_eq!(index, e.index, "the WAL index is the Raft index");
            self.core.borrow_mut().push(e);
        }
        Ok(self.core.borrow().last_index())
    }

    /// Resolves once every entry up to `index` is durable.
    pub async fn wait_durable(&self, index: u64) -> Result<(), LogError> {
        Ok(self.wal.wait_durable(index).await?)
    }

    /// Every entry up to this index is durable.
    pub fn durable_index(&self) -> u64 {
        self.wal.synced_index()
    }

    /// Whether recording `hs` writes the state file (its term or vote changed).
    pub fn hard_state_changes(&self, hs: &HardState) -> bool {
        self.core.borrow().written_term_vote != (hs.term, hs.vote)
    }

    /// Records a new hard state; written to disk (synced) when the term or vote changed.
    pub async fn set_hard_state(&self, hs: &HardState) -> Result<(), LogError> {
        let changed = {
            let mut core = self.core.borrow_mut();
            core.state.hard = hs.clone();
            core.written_term_vote != (hs.term, hs.vote)
        };
        if changed {
            self.persist_state().await?;
        }
        Ok(())
    }

    /// Records a new commit index (in memory: the state file's may lag, see the module doc).
    pub fn set_commit(&self, commit: u64) {
        let mut core = self.core.borrow_mut();
        core.state.hard.commit = core.state.hard.commit.max(commit);
    }

    /// Where to compact so that at most `keep_entries` entries, weighing at most `keep_bytes`
    /// ([`entry_weight`]), stay at or below `through` (what the engine's tables hold): the
    /// index to pass to [`RaftLog::compact`]. Entries after `through` all stay.
    pub fn compaction_point(&self, through: u64, keep_entries: u64, keep_bytes: u64) -> u64 {
        let core = self.core.borrow();
        let through = through.min(core.last_index());
        let compacted = core.state.compacted_index;
        if through <= compacted {
            return compacted;
        }
        let by_count = through.saturating_sub(keep_entries);
        // `ends` rises by position; the entries after position `i` up to `through` (at
        // position `at`) weigh `ends[at] - ends[i]`.
        let at = (through - compacted - 1) as usize;
        let end = core.ends[at];
        // Where the running total stood before the first entry held.
        let start = core.ends[0] - entry_weight(&core.entries[0]);
        let by_bytes = if end - start <= keep_bytes {
            compacted
        } else {
            // The first position whose successors fit is the last entry to drop.
            let last_dropped = core
                .ends
                .partition_point(|&e| end.saturating_sub(e) > keep_bytes);
            compacted + 1 + last_dropped as u64
        };
        by_count.max(by_bytes)
    }

    /// Drops the entries up to `index` (the engine's tables hold them) in memory now, and
    /// the segments they fill on disk in a task of its own: the state file first (synced),
    /// then the segments, each a synced write the group's loop must not wait for. A
    /// compaction that frees no segment writes nothing: after a restart from the older
    /// point its entries are back, which loses nothing.
    pub fn compact(&self, index: u64) {
        {
            let mut core = self.core.borrow_mut();
            let index = index.min(core.last_index()).min(core.state.hard.commit);
            if index <= core.state.compacted_index {
                return;
            }
            let drop_count = (index - core.state.compacted_index) as usize;
            let term = core.entries[drop_count - 1].term;
            core.drop_front(drop_count);
            core.state.compacted_index = index;
            core.state.compacted_term = term;
        }
        let upto = self.core.borrow().state.compacted_index + 1;
        if self.deleting_now.get() || !self.wal.drops_a_segment(upto) {
            return;
        }
        self.deleting_now.set(true);
        let log = self.clone();
        let task = glommio::spawn_local(async move {
            let mut upto = upto;
            loop {
                // The state file first (with the compaction point when its turn comes, at or
                // past `upto`): a crash after it and before the segments go only leaves
                // records that open skips. On failure the segments stay (a segment whose
                // removal failed stays the WAL's first) for the next compaction to retry.
                let deleted = match log.persist_state().await {
                    Ok(()) => log.wal.drop_prefix(upto).await.map_err(LogError::from),
                    Err(e) => Err(e),
                };
                if let Err(e) = deleted {
                    tracing::warn!(error = %e, "could not delete compacted Raft log segments");
                    break;
                }
                // Compactions meanwhile may have passed another segment.
                upto = log.core.borrow().state.compacted_index + 1;
                if !log.wal.drops_a_segment(upto) {
                    break;
                }
            }
            log.deleting_now.set(false);
        });
        *self.deleting.borrow_mut() = Some(task.detach());
    }

    /// Waits until no deletion of compacted segments is under way.
    pub async fn settle(&self) {
        loop {
            let task = self.deleting.borrow_mut().take();
            match task {
                Some(task) => {
                    task.await;
                }
                None => return,
            }
        }
    }

    /// The entry the log was compacted to (or a snapshot replaced it up to): (index, term).
    pub fn compacted(&self) -> (u64, u64) {
        let core = self.core.borrow();
        (core.state.compacted_index, core.state.compacted_term)
    }

    /// A snapshot at (index, term) is ready to send: raft-rs gets it from
    /// [`Storage::snapshot`] while it is recent enough.
    pub fn offer_snapshot(&self, index: u64, term: u64) {
        let mut core = self.core.borrow_mut();
        core.offered = Some((index, term));
        core.snapshot_wanted = false;
    }

    /// Stops offering the snapshot (index, term) (its checkpoint is gone); raft-rs asks again
    /// when a follower needs one.
    pub fn withdraw_snapshot(&self, index: u64, term: u64) {
        let mut core = self.core.borrow_mut();
        if core.offered == Some((index, term)) {
            core.offered = None;
        }
    }

    /// Whether raft-rs asked for a snapshot that is not ready (and forgets the asking).
    pub fn take_snapshot_wanted(&self) -> bool {
        std::mem::take(&mut self.core.borrow_mut().snapshot_wanted)
    }

    /// First step of replacing the log with a snapshot at (index, term), before the engine
    /// takes the snapshot's state: records the intent (a marker file, synced), then the log's
    /// new start in the state file, and drops the entries in memory. Until
    /// [`RaftLog::finish_snapshot`], a restart finishes the log's part from the marker (and
    /// the engine's part is the caller's: its state is behind [`RaftLog::compacted`]).
    pub async fn begin_snapshot(&self, index: u64, term: u64) -> Result<(), LogError> {
        // A deletion of compacted segments finishes before the log restarts.
        self.settle().await;
        let dir = self.dir.clone();
        self.file_op(|| move || write_marker(&dir, index, term))
            .await?;
        {
            let mut core = self.core.borrow_mut();
            core.clear();
            core.state.compacted_index = index;
            core.state.compacted_term = term;
            core.state.hard.commit = core.state.hard.commit.max(index);
        }
        self.persist_state().await
    }

    /// Last step of replacing the log with a snapshot: the WAL starts over after it.
    pub async fn finish_snapshot(&self) -> Result<(), LogError> {
        let (index, _) = self.compacted();
        self.wal.restart_at(index + 1).await?;
        let dir = self.dir.clone();
        self.file_op(|| move || remove_marker(&dir)).await
    }

    /// The hard state as last set.
    pub fn hard_state(&self) -> HardState {
        self.core.borrow().state.hard.clone()
    }

    /// (first, last) index of the entries held.
    pub fn bounds(&self) -> (u64, u64) {
        let core = self.core.borrow();
        (core.first_index(), core.last_index())
    }

    /// Closes the WAL (everything appended is durable already), once a deletion of
    /// compacted segments under way is done.
    pub async fn close(&self) -> Result<(), LogError> {
        self.settle().await;
        self.wal.close().await?;
        Ok(())
    }

    /// Writes the state file, with the state as it is when this write's turn comes.
    async fn persist_state(&self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let mut term_vote = (0, 0);
        self.file_op(|| {
            let core = self.core.borrow();
            term_vote = (core.state.hard.term, core.state.hard.vote);
            let bytes = core.state.encode();
            move || replace_file(&dir, RAFT_STATE_FILE, &bytes)
        })
        .await?;
        self.core.borrow_mut().written_term_vote = term_vote;
        Ok(())
    }

    /// Runs an operation on the executor's blocking thread, after every file operation asked
    /// before; `make` makes it (on this thread) when its turn comes.
    async fn file_op<F>(&self, make: impl FnOnce() -> F) -> Result<(), LogError>
    where
        F: FnOnce() -> Result<(), LogError> + Send + 'static,
    {
        let _turn = self
            .file_turn
            .acquire_permit(1)
            .await
            .map_err(|e| LogError::Io {
                op: "wait for its turn to write",
                path: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let op = make();
        corekv_storage::io::blocking(op).await
    }
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.borrow();
        let conf = ConfState {
            voters: core.state.voters.clone(),
            ..ConfState::default()
        };
        Ok(RaftState::new(core.state.hard.clone(), conf))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.borrow();
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= core.last_index() + 1,
            "entries({low}, {high}) past the last index {}",
            core.last_index()
        );
        let offset = core.first_index();
        let mut out: Vec<Entry> = core
            .entries
            .range((low - offset) as usize..(high - offset) as usize)
            .cloned()
            .collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let core = self.core.borrow();
        if idx == core.state.compacted_index {
            return Ok(core.state.compacted_term);
        }
        if idx < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > core.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(idx - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut core = self.core.borrow_mut();
        // A snapshot older than the compaction point would leave a gap: the entries after it
        // are gone.
        let oldest = request_index.max(core.state.compacted_index);
        match core.offered {
            Some((index, term)) if index >= oldest && index > 0 => {
                let mut snapshot = Snapshot::default();
                let meta = snapshot.mut_metadata();
                meta.index = index;
                meta.term = term;
                meta.mut_conf_state().voters = core.state.voters.clone();
                Ok(snapshot)
            }
            _ => {
                // The group makes a checkpoint; raft-rs asks again at the next heartbeat.
                core.snapshot_wanted = true;
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

mod files;
#[cfg(test)]
mod tests;
