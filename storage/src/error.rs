//! The engine's one error type. Variants are what a caller can act on.

use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which configured limit a write exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `Options::key_size_bytes_max`.
    KeySize,
    /// `Options::value_size_bytes_max`.
    ValueSize,
    /// `Options::batch_size_bytes_max` (the encoded size of one atomic write).
    BatchSize,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::KeySize => "key_size_bytes_max",
            Limit::ValueSize => "value_size_bytes_max",
            Limit::BatchSize => "batch_size_bytes_max",
        })
    }
}

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An empty key was given; keys must be at least one byte.
    #[error("empty key: keys must be at least 1 byte")]
    EmptyKey,
    /// A write exceeded a configured limit; nothing was changed.
    #[error("{limit} exceeded: {actual} bytes > {max} bytes; nothing was written")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// The size that was asked for.
        actual: u64,
        /// The configured maximum.
        max: u64,
    },
    /// An argument is invalid (for example an option out of range); the text says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An operating-system I/O call failed.
    #[error("I/O error during {op} on {path:?}: {source}")]
    Io {
        /// What the engine was doing (`"wal write"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed a checksum or structural check.
    #[error(
        "corruption in {file:?} at offset {offset}: {detail}; the data there cannot be trusted \
         (restore from a replica or backup, or open with `wal_recovery_mode = skip-to-last-good` \
         to drop everything from this point on)"
    )]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record or block.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An earlier WAL write or `fdatasync` failed, so the engine no longer knows what is on
    /// disk and refuses writes. Reads still work. Reopen the engine to recover.
    #[error("engine is read-only after an I/O failure ({reason}); reopen it to recover")]
    ReadOnly {
        /// The failure that made the engine read-only.
        reason: String,
    },
    /// The engine was closed (by `close` on another clone); reopen it to continue.
    #[error("engine is closed")]
    Closed,
    /// Another engine (in this process or another) holds the directory's lock.
    #[error("{path:?} is locked by another engine instance; close it first")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Corruption`].
    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }
}
