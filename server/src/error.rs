//! The server's error type: what stops a server from starting or keeps it from running.
//! Messages say what happened, where, and what to do.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be read or written.
    #[error("data directory: cannot {op} {path:?}: {source}")]
    DataDirIo {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another server holds the data directory.
    #[error(
        "data directory {path:?} is in use by another corekv-server (pid {holder}, from its LOCK \
         file); stop that server or start this one with another --data-dir"
    )]
    DataDirLocked {
        /// The directory.
        path: PathBuf,
        /// The pid written by the lock holder.
        holder: String,
    },
    /// `corekv.meta` is unreadable, foreign or damaged.
    #[error("data directory record {path:?}: {detail}")]
    DataDirMeta {
        /// The record file.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The directory was created with another shard count.
    #[error(
        "data directory {path:?} was created with {recorded} shards, but this server was asked \
         to run {requested}; start it with `--shards {recorded}` (or `--cores` naming \
         {recorded} CPUs): changing the shard count of existing data is not supported"
    )]
    ShardCountMismatch {
        /// The directory.
        path: PathBuf,
        /// Shard count in `corekv.meta`.
        recorded: usize,
        /// Shard count asked for.
        requested: usize,
    },
    /// `DATA_DIR/io-properties.toml` is unreadable or invalid.
    #[error("io-properties: {0}")]
    IoProperties(#[from] crate::io_properties::IoPropertiesError),
    /// A listening socket could not be opened.
    #[error("shard {shard}: cannot listen on {addr}: {source}")]
    Bind {
        /// The shard.
        shard: usize,
        /// The address.
        addr: SocketAddr,
        /// Why (for example the port is in use).
        #[source]
        source: std::io::Error,
    },
    /// A shard's storage engine failed to open or close.
    #[error("shard {shard}: storage: {source}")]
    Storage {
        /// The shard.
        shard: usize,
        /// The engine's error.
        #[source]
        source: corekv_storage::Error,
    },
    /// A shard's executor could not start or stopped abnormally.
    #[error("shard {shard}: {detail}")]
    Shard {
        /// The shard.
        shard: usize,
        /// What happened.
        detail: String,
    },
}
