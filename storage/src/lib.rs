//! `corekv-storage`: the per-shard LSM storage engine.
//!
//! One engine instance serves one shard and lives on that shard's glommio executor: it is
//! single-threaded (`!Send`), takes no locks, and does its disk I/O through io_uring.
//! It knows nothing about networking or Cap'n Proto.
//!
//! Start with [`options`] (what can be configured, and the limits every write is checked
//! against) and [`error`] (what can go wrong).

pub mod error;
pub mod options;

pub use error::{Error, Limit, Result};
pub use options::{Durability, Options};
