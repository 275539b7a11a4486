//! [`Log`]: where the engine's writes are logged before they are acknowledged.
//!
//! - [`Log::Wal`]: the engine's own [`Wal`]. Every write is one record, replayed on open;
//!   a flush lets the WAL drop the records its table holds.
//! - [`Log::External`]: a log the caller keeps, the Raft log of a replicated shard (etcd's
//!   model: the log is the WAL, the engine is the state). The caller applies the log's
//!   entries in index order, each between [`Engine::begin_entry`] and [`Engine::end_entry`];
//!   the engine writes no log of its own (so a replicated write costs one durable append, the
//!   log's) and records, with every flush, the index of the last entry its tables hold
//!   ([`Engine::flushed_log_index`]). After a crash the caller applies the entries after that
//!   index again. For that replay to rebuild exactly what was lost, the memtable switches
//!   only between entries (an entry's writes are never split across a flush) and the time an
//!   entry's writes are judged by (TTLs, expiry) is the entry's, not the replica's clock.

use std::cell::Cell;

use super::*;
use crate::wal::{Wal, WalStats};

/// The engine's log (see the module doc).
pub(super) enum Log {
    /// The engine's own WAL.
    Wal(Wal),
    /// A log the caller keeps and applies, entry by entry.
    External(ExternalLog),
}

/// The engine's side of an external log: the entry being applied and the last one applied.
#[derive(Debug, Default)]
pub(super) struct ExternalLog {
    /// The entry being applied: (index, its time in ms since the epoch).
    entry: Cell<Option<(u64, u64)>>,
    /// The last entry applied completely, and its time.
    applied: Cell<(u64, u64)>,
}

impl Log {
    /// Why writes are refused, once a log write or sync has failed.
    pub(super) fn failure(&self) -> Option<String> {
        match self {
            Log::Wal(wal) => wal.failure(),
            Log::External(_) => None,
        }
    }

    pub(super) fn stats(&self) -> WalStats {
        match self {
            Log::Wal(wal) => wal.stats(),
            Log::External(_) => WalStats::default(),
        }
    }

    /// Refuses, before anything changes, a write the log would refuse.
    pub(super) fn check_appendable(&self, record_bytes: usize) -> Result<()> {
        match self {
            Log::Wal(wal) => wal.check_appendable(record_bytes),
            Log::External(log) => log.open_entry().map(|_| ()),
        }
    }

    /// Logs a sequenced write; returns the index of the log record (or entry) holding it.
    pub(super) fn append(&self, record: impl FnOnce() -> Vec<u8>) -> Result<u64> {
        match self {
            Log::Wal(wal) => wal.append(record()),
            Log::External(log) => log.open_entry(),
        }
    }

    /// Waits until record `index` is as durable as promised. An external log's entries are
    /// durable before they are applied.
    pub(super) async fn wait_durable(&self, index: u64) -> Result<()> {
        match self {
            Log::Wal(wal) => wal.wait_durable(index).await,
            Log::External(_) => Ok(()),
        }
    }

    /// Waits until everything logged so far is as durable as promised.
    pub(super) async fn wait_all_durable(&self) -> Result<()> {
        match self {
            Log::Wal(wal) => {
                let index = wal.last_index();
                if index > 0 {
                    wal.wait_durable(index).await?;
                }
                Ok(())
            }
            Log::External(_) => Ok(()),
        }
    }

    /// A flush put every write up to record `index` in a table: the WAL may drop them. An
    /// external log is compacted by its owner, who reads [`Engine::flushed_log_index`].
    pub(super) async fn release_upto(&self, index: u64) -> Result<()> {
        match self {
            Log::Wal(wal) if index > 0 => wal.drop_prefix(index + 1).await.map(|_| ()),
            _ => Ok(()),
        }
    }

    pub(super) async fn close(&self) -> Result<()> {
        match self {
            Log::Wal(wal) => wal.close().await,
            Log::External(_) => Ok(()),
        }
    }

    pub(super) fn external(&self) -> Option<&ExternalLog> {
        match self {
            Log::External(log) => Some(log),
            Log::Wal(_) => None,
        }
    }
}

impl ExternalLog {
    /// A log whose entries up to `applied` (index, time) are in the engine.
    pub(super) fn new(applied: (u64, u64)) -> Self {
        ExternalLog {
            entry: Cell::new(None),
            applied: Cell::new(applied),
        }
    }

    /// The index of the entry being applied; writes outside one are refused.
    fn open_entry(&self) -> Result<u64> {
        match self.entry.get() {
            Some((index, _)) => Ok(index),
            None => Err(Error::InvalidArgument(
                "this engine applies a replicated log: writes happen only while an entry is \
                 applied (begin_entry .. end_entry)"
                    .into(),
            )),
        }
    }

    /// The entry being applied, if one is.
    pub(super) fn entry(&self) -> Option<(u64, u64)> {
        self.entry.get()
    }

    /// The last entry applied completely: (index, time).
    pub(super) fn applied(&self) -> (u64, u64) {
        self.applied.get()
    }

    /// A checkpoint holding the entries up to `applied` replaced the engine's state.
    pub(super) fn reset_applied(&self, applied: (u64, u64)) {
        self.applied.set(applied);
    }
}

impl Engine {
    /// The log kind this engine was opened with is external: see [`Engine::open_applying`].
    pub(super) fn external_log(&self, what: &str) -> Result<&ExternalLog> {
        self.inner.log.external().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{what}: this engine keeps its own WAL (open it with Engine::open_applying to \
                 apply an external log)"
            ))
        })
    }

    /// Starts applying log entry `index`, whose writes are judged at `time_ms` (ms since the
    /// Unix epoch, from the entry, so every replica judges them alike; raised to the previous
    /// entry's time if it is earlier). Entries are applied in
    /// increasing index order, one at a time; indexes may skip entries that write nothing.
    pub fn begin_entry(&self, index: u64, time_ms: u64) -> Result<()> {
        let log = self.external_log("begin_entry")?;
        if let Some((open, _)) = log.entry.get() {
            return Err(Error::InvalidArgument(format!(
                "begin_entry({index}): entry {open} is still being applied"
            )));
        }
        let (applied, applied_time_ms) = log.applied.get();
        if index <= applied {
            return Err(Error::InvalidArgument(format!(
                "begin_entry({index}): entries up to {applied} are applied already"
            )));
        }
        // Entry times never go back (a new leader's clock may be behind the old one's):
        // clamped, every replica and every replay still computes the same time, and what a
        // compaction judged expired stays expired for every later entry.
        log.entry.set(Some((index, time_ms.max(applied_time_ms))));
        Ok(())
    }

    /// Finishes applying the entry begun last; the memtable may switch after it.
    pub fn end_entry(&self) -> Result<()> {
        let log = self.external_log("end_entry")?;
        let Some(entry) = log.entry.take() else {
            return Err(Error::InvalidArgument(
                "end_entry: no entry is being applied".into(),
            ));
        };
        log.applied.set(entry);
        // A flush waiting for an entry boundary may switch the memtable now.
        self.inner.workers.room_made();
        Ok(())
    }

    /// The last log entry applied completely (0 = none; always 0 for an engine with its own
    /// WAL).
    pub fn applied_log_index(&self) -> u64 {
        self.applied_log_entry().0
    }

    /// The last log entry applied completely and its time ((0, 0): none, or an engine with
    /// its own WAL).
    pub fn applied_log_entry(&self) -> (u64, u64) {
        self.inner
            .log
            .external()
            .map_or((0, 0), ExternalLog::applied)
    }

    /// The last log entry whose writes are all in tables (durable without the log): the
    /// owner of an external log may drop the entries up to here, and after a crash applies
    /// those after it again.
    pub fn flushed_log_index(&self) -> u64 {
        self.inner.manifest.applied_index()
    }

    /// The time writes are judged by now: the applied entry's, or the clock's.
    pub(super) fn write_time_ms(&self) -> u64 {
        match self.inner.log.external().and_then(ExternalLog::entry) {
            Some((_, time_ms)) => time_ms,
            None => self.inner.clock.now_ms(),
        }
    }
}
