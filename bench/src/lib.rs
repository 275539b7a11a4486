//! `corekv-bench`: how corekv's speed is measured.
//!
//! - [`ycsb`]: YCSB's core workloads A–F against a server (corekv or a peer: Redis, etcd),
//!   with YCSB's key choosers, record layout and output format; start at [`ycsb::run`].
//! - [`engine`]: db_bench's micro-benchmarks (fillseq, fillrandom, overwrite, readrandom,
//!   readseq, seekrandom) against one storage engine in-process, with db_bench's flags and
//!   output lines; start at [`engine::run`].
//! - [`sys`]: CPU affinity and CPU-time accounting the driver reports about itself.
//!
//! Figures go into `docs/BENCHMARKS.md` beside a peer measured in the same run.

pub mod engine;
pub mod error;
pub mod sys;
pub mod ycsb;

pub use error::Error;
