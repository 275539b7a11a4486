//! `corekv-storage`: the per-shard LSM storage engine.
//!
//! One engine instance serves one shard and lives on that shard's glommio executor: it is
//! single-threaded (`!Send`), takes no locks, and does its disk I/O through io_uring.
//! It knows nothing about networking or Cap'n Proto.
//!
//! Start with [`Engine`] (the API: open, put/delete/batch/compare-and-set, get, snapshots,
//! scans, close, stats), then [`options`] (what can be configured, and the limits every write
//! is checked against) and [`error`] (what can go wrong).
//!
//! Layout: [`engine`] (write path, replay) on top of [`wal`] (segments, record frames, group
//! commit, recovery, Raft-log operations) and the memtable; [`io`] is the seam every file
//! operation goes through, which tests use to inject faults and simulate crashes.
//!
//! Layout of the LSM tree: a full memtable becomes immutable and is flushed to a level-0
//! [`sst`] table in the background; leveled compaction ([`compaction`], module-private) merges
//! tables down the levels; the [`manifest`] log records which tables form the current version.
//! Reads go memtable → immutable memtables → level 0 newest first → deeper levels, through the
//! [`cache`] (O_DIRECT reads: it is the only cache). Writes stall, counted in [`stats`], when
//! flushes or compaction fall behind their bounds.

pub mod backlog;
pub mod batch;
pub mod cache;
pub mod clock;
mod compaction;
mod disk;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod io;
pub mod iter;
pub mod manifest;
mod memtable;
pub mod options;
mod signal;
pub mod snapshot;
pub mod sst;
pub mod stats;
#[cfg(test)]
mod test_util;
mod version;
pub mod wal;

/// A write's sequence number: every operation gets the next one, starting at 1.
pub type SeqNo = u64;

pub use batch::{BatchOp, EncodedBatch, WriteBatch};
pub use clock::Clock;
pub use engine::{CasOutcome, Change, Engine, Expect, OpenHooks, ScanPage, ScanRange};
pub use error::{Error, Limit, Result};
pub use iter::cursor::EngineIter;
pub use options::{Durability, Options, WalRecoveryMode};
pub use snapshot::Snapshot;
pub use stats::Stats;
