//! The client's one error type.

use std::net::SocketAddr;

use crate::ops::OpError;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused this operation with a typed error; nothing was changed and the
    /// connection stays usable.
    #[error("server refused the operation: {0}")]
    Server(OpError),
    /// The RPC failed (connection lost, protocol failure): the outcome of the call is unknown.
    #[error("RPC failed, the outcome of the call is unknown: {0}")]
    Rpc(#[from] capnp::Error),
    /// Could not open a TCP connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An address could not be resolved.
    #[error("cannot resolve {addr:?}: {reason}")]
    Resolve {
        /// What was given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server answered with a reply this client did not expect (for example a `write`
    /// result for a `get`), or a topology it cannot use.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
}

impl Error {
    /// The typed server error, if this is one.
    pub fn server_error(&self) -> Option<&OpError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }

    /// A copy for fanning one failure out to several callers (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Server(e) => Error::Server(e.clone()),
            Error::Rpc(e) => Error::Rpc(e.clone()),
            Error::Connect { addr, source } => Error::Connect {
                addr: *addr,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Resolve { addr, reason } => Error::Resolve {
                addr: addr.clone(),
                reason: reason.clone(),
            },
            Error::Protocol(m) => Error::Protocol(m.clone()),
        }
    }
}

/// Result alias of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;
