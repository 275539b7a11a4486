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
//! **State today (issue 3, milestone 1): the engine is in memory only.** Writes go to an
//! ordered, sequence-numbered memtable and are acknowledged at once; nothing is written to
//! disk yet, so a closed or crashed engine loses everything. The WAL (durability modes,
//! group commit, recovery) is the next milestone.

pub mod batch;
pub mod clock;
pub mod engine;
pub mod error;
mod memtable;
pub mod options;
pub mod snapshot;
pub mod stats;

/// A write's sequence number: every operation gets the next one, starting at 1.
pub type SeqNo = u64;

pub use batch::WriteBatch;
pub use clock::Clock;
pub use engine::{CasOutcome, Engine, OpenHooks, ScanPage, ScanRange};
pub use error::{Error, Limit, Result};
pub use options::{Durability, Options, WalRecoveryMode};
pub use snapshot::Snapshot;
pub use stats::Stats;
