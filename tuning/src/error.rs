//! The one error type of `corekv-tune`: what went wrong, where, and what to do about it.

use std::path::PathBuf;

/// Everything `corekv-tune` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file under `/proc` or `/sys` (or another input) could not be read.
    #[error("cannot read {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but its contents are not what the kernel writes there.
    #[error("{path:?}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A system call on a file failed (the disk probe, the io-properties file).
    #[error("{op} {path:?}: {source}{hint}")]
    Io {
        /// What was being done (`open`, `write`, `fdatasync`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What the user can do, starting with `; ` (or empty).
        hint: String,
    },
    /// An argument or setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// `perf` could not be run or failed, or its output could not be turned into a flame graph.
    #[error("{0}")]
    Profile(String),
}

impl Error {
    /// An [`Error::Io`] without a hint.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
            hint: String::new(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
