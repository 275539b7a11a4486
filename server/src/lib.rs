//! `corekv-server`: the thread-per-core server.
//!
//! One glommio executor is pinned per core; each runs one shard, which owns a slice of the
//! keyspace (see `corekv_proto::shard`), its own storage engine, its connections and its
//! counters. Shards share no mutable state and talk only by messages.
//!
//! Start with [`config`] (flags, file, defaults).

pub mod config;
pub mod cpuset;
pub mod io_properties;
