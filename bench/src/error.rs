//! The error type of `corekv-bench`'s library: what went wrong, where, and what to do.

/// Everything that can stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value is out of range or inconsistent with another.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The driver could not open a connection to the database.
    #[error(
        "cannot connect to {backend} at {addr}: {reason} (is the server running there? pass --addr HOST:PORT)"
    )]
    Connect {
        /// `redis`, `corekv`, ...
        backend: &'static str,
        /// Where it tried.
        addr: String,
        /// The underlying failure.
        reason: String,
    },

    /// A client thread could not be started.
    #[error("cannot start client thread {thread}: {reason}")]
    Thread {
        /// Its index.
        thread: usize,
        /// The underlying failure.
        reason: String,
    },

    /// A system call the driver needs failed.
    #[error("{call} failed: {source}")]
    Os {
        /// Which call.
        call: &'static str,
        /// The error.
        source: std::io::Error,
    },

    /// The in-process corekv server could not start, or failed.
    #[error("in-process corekv server: {0}")]
    Server(String),

    /// The storage engine under test failed (`corekv-bench engine`).
    #[error("storage engine: {0}")]
    Engine(String),

    /// Writing results failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}
