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
//! State today (issue 3): writes are durable through the WAL as the durability mode promises;
//! all data lives in the memtable, bounded by `Options::memtable_size_bytes_max` (a write at
//! the bound fails with [`Error::MemtableFull`]). SSTables and flushes are issue 4.

pub mod batch;
pub mod cache;
pub mod clock;
mod disk;
pub mod engine;
pub mod error;
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
pub mod wal;

/// A write's sequence number: every operation gets the next one, starting at 1.
pub type SeqNo = u64;

pub use batch::WriteBatch;
pub use clock::Clock;
pub use engine::{CasOutcome, Engine, OpenHooks, ScanPage, ScanRange};
pub use error::{Error, Limit, Result};
pub use options::{Durability, Options, WalRecoveryMode};
pub use snapshot::Snapshot;
pub use stats::Stats;
