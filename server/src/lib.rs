//! `corekv-server`: the thread-per-core server.
//!
//! One glommio executor is pinned per core; each runs one shard, which owns a slice of the
//! keyspace (see `corekv_proto::shard`), its own storage engine, its connections and its
//! counters. Shards share no mutable state and talk only by messages.
//!
//! Where to start: [`launch`] (start-up and shutdown), [`net`] (listeners, connections,
//! backpressure), [`service`] (the Cap'n Proto interface), [`shard`] (routing, local execution,
//! scans across shards), [`mesh`] (cross-shard channels), [`metrics`] (Prometheus `/metrics`),
//! [`store`] (the only module that talks to the storage engine), [`config`] (flags, file,
//! defaults), [`datadir`] (layout, lock), [`faults`] (disk fault injection for tests), [`hugepages`]
//! (transparent huge pages off for the process).
//! The `corekv-cli` binary is built from [`cli`].

pub mod cli;
pub mod config;
pub mod control;
pub mod counters;
pub mod cpuset;
pub mod datadir;
pub mod error;
pub mod faults;
pub mod hugepages;
pub mod io_properties;
pub mod launch;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod net;
pub mod replication;
pub mod service;
pub mod shard;
pub mod store;

pub use error::Error;
