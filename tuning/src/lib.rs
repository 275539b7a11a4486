//! `corekv-tune`: what corekv needs to know about the machine it runs on, and how to set it up.
//!
//! - [`inspect`]: reads `/proc` and `/sys` (NUMA nodes, cores, SMT, governor, huge pages,
//!   limits, the data directory's disk, NIC interrupts) and recommends changes.
//! - [`plan`]: places one shard per physical core, NUMA-aware, away from NIC interrupts, and
//!   prints the `corekv-server` command line.
//! - [`disk`]: measures the data disk with io_uring + O_DIRECT and writes the io-properties file
//!   (`corekv_server::io_properties`) the server reads.
//! - [`flamegraph`]: records a process with `perf record -e cpu-clock` and renders an SVG with
//!   inferno.
//!
//! Every reader takes a [`host::Host`] root, so tests run against synthetic trees
//! (`tests/common/fixture.rs`). This crate changes nothing on the machine: it prints the commands that would.
//! It is not part of the server's request path; the server only reads files it writes.

pub mod disk;
pub mod error;
pub mod flamegraph;
pub mod host;
pub mod inspect;
pub mod plan;
pub mod topology;

#[cfg(test)]
#[path = "../tests/common/fixture.rs"]
pub(crate) mod fixture;

pub use error::{Error, Result};
