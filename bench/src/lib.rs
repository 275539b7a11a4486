//! `corekv-bench`: how corekv's speed is measured.
//!
//! - [`ycsb`]: YCSB's core workloads against a server (corekv or a peer such as Redis), with
//!   YCSB's key choosers and output format.
//!
//! Figures go into `docs/BENCHMARKS.md` beside a peer measured in the same run.

pub mod ycsb;
