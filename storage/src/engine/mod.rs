//! [`Engine`]: one shard's storage engine, the API the server and the benchmarks use.
//!
//! ## Write path
//!
//! A write is validated (limits, empty keys, TTLs; nothing changes on error), checked against
//! the memtable bound, then *sequenced* in one synchronous step: it gets its sequence numbers,
//! its WAL record is queued, and its versions enter the memtable, invisible to readers. The
//! write then waits until its record is as durable as [`Options::durability`] promises and
//! *publishes* its last sequence number, making it visible. Readers read at the published
//! sequence number, so no read observes a write before it is acknowledged. WAL records become
//! durable in order, so publishing sequence `s` also publishes everything before it.
//!
//! If the WAL fails, the waiting writes get the I/O error, nothing more is published (their
//! versions stay invisible), and every later write gets [`Error::ReadOnly`]; reads go on.
//!
//! ## Flush, reads, compaction (the LSM tree)
//!
//! When a write would push the active memtable past `memtable_size_bytes_max`, the memtable
//! becomes immutable (queued, at most `memtables_immutable_max`) and a new one takes the write.
//! A background task ([`background`]) writes the oldest immutable memtable to a level-0
//! SSTable once its writes are durable in the WAL, syncs it and the directory, records it in
//! the manifest, swaps it in for the memtable, and only then lets the WAL drop the segments it
//! covered. Compactions run in the same low-share task queue. Writes stall (explicitly,
//! counted) when the immutable queue is full, level 0 holds `l0_stop_writes_files` tables, or
//! pending compaction bytes pass `pending_compaction_bytes_stop`.
//!
//! A point read checks the active memtable, the immutable ones newest first, then the tables
//! ([`crate::version::Version::get`]: level 0 newest first, then one table per deeper level,
//! each behind its bloom filter). Scans merge all of them ([`crate::iter`]) under an internal
//! snapshot, so the versions they need survive concurrent writes and compactions.
//!
//! Each write is one WAL record, whose payload (a header and the batch's operations) is
//! defined in [`crate::batch`].
//!
//! ## Files
//!
//! Each piece of state has one owner: [`state::State`] (memtables, live tables, sequence and
//! file numbers), [`workers::Workers`] (signals to and from the background tasks, stalled
//! writers, the first background failure), [`manifest_log::ManifestLog`] (the manifest and
//! what it says), [`crate::compaction::picker::Picker`], the [`crate::wal::Wal`], the block cache and the
//! counters. `open.rs` recovers them; `write.rs` (validation, stalls, sequencing, publishing),
//! `read.rs` (point reads, scans, iterators), `stats.rs` and `background.rs` (the flush and
//! compaction tasks) use them through their methods; this file holds the handle and the API
//! types.

mod background;
mod checkpoint;
mod log;
mod manifest_log;
mod open;
mod read;
mod state;
mod stats;
mod workers;
mod write;

pub use checkpoint::{
    CHECKPOINT_FILE, CheckpointInfo, DESCRIPTOR_BYTES_MAX, decode_descriptor, renumber_checkpoint,
};
pub(crate) use open::replay_record;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::SeqNo;
use crate::backlog::{self, EngineBacklog};
use crate::batch::{self, RecordHeader, WriteBatch};
use crate::cache::BlockCache;
use crate::clock::Clock;
use crate::compaction::picker::Picker;
use crate::error::{Error, Result};
use crate::io::{DirLock, FaultInjector, Io};
use crate::iter::cursor::EngineIter;
use crate::iter::merge::MergeIter;
use crate::iter::user::VisibleIter;
use crate::memtable;
use crate::options::Options;
use crate::snapshot::{Snapshot, SnapshotList};
use crate::sst::builder::TableOptions;
use crate::sst::filter::key_hash;
use crate::stats::Stats;
use crate::version::Version;
use manifest_log::ManifestLog;
use state::State;
use workers::Workers;

/// The WAL's directory inside the engine directory.
pub const WAL_DIR: &str = "wal";

/// The result of [`Engine::compare_and_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value matched and the new value (or delete) was written with this sequence number.
    Applied(SeqNo),
    /// The live value differed from `expected`; nothing was written.
    Mismatch {
        /// The live value found (None = absent, deleted or expired).
        current: Option<Vec<u8>>,
        /// The sequence number of the write that stored `current` (0 when absent).
        current_seq: SeqNo,
    },
}

/// What a compare-and-set expects of the key's live value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// No live value (absent, deleted or expired).
    Absent,
    /// A live value equal to these bytes.
    Value(&'a [u8]),
    /// The live value written with this sequence number; 0 means no live value, as
    /// [`CasOutcome::Mismatch`] reports an absent key.
    Sequence(SeqNo),
}

impl<'a> From<Option<&'a [u8]>> for Expect<'a> {
    fn from(expected: Option<&'a [u8]>) -> Expect<'a> {
        expected.map_or(Expect::Absent, Expect::Value)
    }
}

impl Expect<'_> {
    fn holds_for(self, current: Option<(&[u8], SeqNo)>) -> bool {
        match (self, current) {
            // No write has sequence number 0: it stands for "no value", as a failed
            // compare-and-set reports an absent key.
            (Expect::Absent | Expect::Sequence(0), None) => true,
            (Expect::Value(want), Some((value, _))) => value == want,
            (Expect::Sequence(want), Some((_, seq))) => seq == want,
            _ => false,
        }
    }
}

/// What [`Engine::read_modify_write`] does with the key, decided from its live value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// Nothing: the key stays as it is.
    Keep,
    /// Write `value`, invisible to reads once `ttl` (if any) has passed.
    Put {
        /// The new value.
        value: Cow<'a, [u8]>,
        /// Its time to live (1 ms ..= 100 years), or none.
        ttl: Option<Duration>,
    },
    /// Delete the key.
    Delete,
}

/// A key range to scan: `[start, end)`, at most `limit` entries, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange {
    /// Inclusive lower bound; empty = from the first key.
    pub start: Vec<u8>,
    /// Exclusive upper bound; None = to the last key.
    pub end: Option<Vec<u8>>,
    /// Most entries to return, at least 1 (clamped to `Options::scan_entries_max`).
    pub limit: usize,
    /// false: ascending from `start`; true: descending from just below `end`.
    pub reverse: bool,
}

/// One page of scan results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanPage {
    /// Key-value pairs in scan order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// True when the range holds more live entries beyond the last one returned; continue
    /// from just after (or, in reverse, just before) the last key.
    pub more: bool,
}

/// Things tests substitute when opening an engine.
#[derive(Debug, Clone, Default)]
pub struct OpenHooks {
    /// The clock TTLs are judged by (default: the system clock).
    pub clock: Option<Clock>,
    /// Makes file operations fail or simulates a crash (default: none).
    pub faults: Option<FaultInjector>,
}

/// One shard's storage engine. Cheap to clone (an `Rc`); every clone is the same engine.
/// `!Send`: it lives on one glommio executor, and its methods may be called from many tasks
/// on that executor at once (that is what lets group commit batch them).
#[derive(Clone)]
pub struct Engine {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    options: Options,
    clock: Clock,
    io: Io,
    state: RefCell<State>,
    snapshots: Rc<SnapshotList>,
    stats: RefCell<Stats>,
    closed: Cell<bool>,
    /// The engine's WAL (it also holds the WAL directory's lock), or the caller's log.
    log: log::Log,
    cache: Rc<BlockCache>,
    /// Whether flushes and compactions fill the block cache now: the option, unless a caller
    /// turned it off ([`Engine::set_block_cache_fill`]).
    cache_fill: Cell<bool>,
    manifest: ManifestLog,
    workers: Rc<Workers>,
    /// What waits for the background tasks; sets their shares and the foreground's yields.
    backlog: Rc<EngineBacklog>,
    picker: Picker,
    /// The engine directory's lock (the WAL holds its own).
    _lock: DirLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.workers.stop();
        self.io.stop_unlinks();
    }
}

impl Engine {
    /// The directory this engine lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Whether the tables flushes and compactions write from now on fill the block cache:
    /// `on` where [`Options::block_cache_fill_on_table_write`] is set, never otherwise. A Raft
    /// follower, which serves no reads, turns it off: filling takes fresh memory, and its
    /// page faults, for every block written.
    pub fn set_block_cache_fill(&self, on: bool) {
        self.inner
            .cache_fill
            .set(on && self.inner.options.block_cache_fill_on_table_write);
    }

    /// Whether tables written from now on fill the block cache ([`Engine::set_block_cache_fill`]).
    pub fn block_cache_fill(&self) -> bool {
        self.inner.cache_fill.get()
    }

    /// Makes everything acknowledged durable and releases the engine's files. Other clones
    /// of this engine get [`Error::Closed`] afterwards.
    pub async fn close(self) -> Result<()> {
        self.check_open()?;
        self.inner.closed.set(true);
        // Stop flushes and compactions (a compaction in progress is abandoned; its inputs
        // stay) and wait for them to let go of the files, and for queued removals.
        self.inner.workers.stop();
        self.inner.io.stop_unlinks();
        self.inner.workers.wait_stopped().await;
        self.inner.manifest.close().await?;
        self.inner.log.close().await
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.get() {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

impl Engine {
    /// Table options for tables written to `level`.
    pub(crate) fn table_options(options: &Options, level: usize) -> TableOptions {
        TableOptions {
            block_size_bytes: options.block_size_bytes,
            bloom_bits_per_key: options.bloom_bits_per_key,
            compression: options.compression_for_level(level),
        }
    }

    /// Flushes the active memtable to a level-0 table now (if it holds anything) and waits
    /// until every immutable memtable is in a table. Writes go on meanwhile.
    pub async fn flush(&self) -> Result<()> {
        self.check_writable()?;
        let target = {
            let state = self.inner.state.borrow();
            if state.memtable_is_empty() {
                None
            } else {
                Some(state.flush_generation() + state.immutable_count() as u64 + 1)
            }
        };
        let Some(target) = target else {
            return background::wait_flushed(&self.inner, 0).await;
        };
        // Make room for one more immutable memtable, then switch (with an external log,
        // between two entries).
        loop {
            self.make_room(0).await?;
            let switched = {
                let mut state = self.inner.state.borrow_mut();
                if state.immutable_count() >= self.inner.options.memtables_immutable_max
                    || !self.may_switch_memtable(&state)
                {
                    false
                } else {
                    state.rotate_memtable(self.applied_log_entry());
                    true
                }
            };
            if switched {
                background::refresh_backlog(&self.inner);
                break;
            }
            let seen = self.inner.workers.room_generation();
            self.inner.workers.wake();
            self.inner.workers.room_changed(seen).await;
        }
        self.inner.workers.wake();
        background::wait_flushed(&self.inner, target).await
    }

    /// Waits until no flush or compaction is pending or running (tests, benchmarks: "after
    /// compaction settles"). Returns the background error if one stopped the work.
    pub async fn wait_for_background(&self) -> Result<()> {
        background::wait_idle(&self.inner).await
    }
}
