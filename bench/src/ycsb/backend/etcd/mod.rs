//! etcd (v3 API, tested with 3.4) as a YCSB backend, over gRPC as etcd's own `benchmark` tool
//! talks to it: HTTP/2 with [`h2`] ([`grpc`]) and the few protobuf messages written and read
//! by hand ([`proto`]).
//!
//! etcd has no hashes or columns, so a record is one value: the driver's encoding of it
//! ([`crate::ycsb::record`]). Mapping, as in YCSB's etcd binding (`site.ycsb.db.etcd`):
//!
//! | YCSB | etcd (`/etcdserverpb.KV/...`) |
//! |---|---|
//! | insert | `Put(key, record)` |
//! | read | `Range(key)`; the value must decode as a record |
//! | update (one field) | `Range(key)`, the field set in the record, `Put(key, record)` (workload F's read-modify-write reuses its read) |
//! | update (`--write-all-fields`) | `Put(key, new record)` |
//! | scan | `Range(key, range_end = "\0", limit = count)`: every key from `key` on, at most `count` |
//!
//! An update of one field is two round trips and not atomic: two slots updating one record at
//! once may lose one field's change, as with YCSB's binding. Reads are linearizable (etcd's
//! default; `serializable` is not set).
//!
//! One `--connections` unit is one HTTP/2 connection; each of its `--inflight` slots runs its
//! calls on streams of their own. With several endpoints (`--addr A,B,C`), connections go to
//! them round-robin, as etcd's client balances: a follower forwards writes to the leader.

pub mod grpc;
pub mod proto;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use glommio::net::TcpStream;
use glommio::{Task, spawn_local};
use h2::client::SendRequest;
use http::Uri;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use self::grpc::{CallError, encode_message, method_uri, unary};
use self::proto::{
    check_put_response, encode_put_request, encode_range_request, read_range_response,
};
use super::{Backend, Connection, Update};
use crate::ycsb::measure::Status;
use crate::ycsb::record::{decode_record, merge_field};

/// gRPC path of `KV.Put`.
pub const PUT_PATH: &str = "/etcdserverpb.KV/Put";
/// gRPC path of `KV.Range`.
pub const RANGE_PATH: &str = "/etcdserverpb.KV/Range";
/// `range_end` meaning "every key from `key` on".
pub const RANGE_END_ALL: &[u8] = b"\0";
/// Most endpoints in `--addr`.
pub const ENDPOINTS_MAX: usize = 64;
/// HTTP/2 receive window per stream: a scan of 100 records of 1 KiB arrives without waiting
/// for a window update.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// HTTP/2 receive window per connection, shared by its `--inflight` streams.
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// Key read once per connection at start, to check that a gRPC etcd answers there.
const CONNECT_CHECK_KEY: &[u8] = b"corekv-bench/connect-check";

/// One etcd member's client address.
#[derive(Debug, Clone)]
struct Endpoint {
    /// As given (`HOST:PORT`): the HTTP/2 `:authority`.
    authority: String,
    addr: SocketAddr,
}

/// An etcd cluster reachable at one or more client addresses.
#[derive(Debug, Clone)]
pub struct EtcdBackend {
    endpoints: Arc<[Endpoint]>,
    /// Round-robin position, shared by every client thread's clone.
    next: Arc<AtomicUsize>,
}

impl EtcdBackend {
    /// Talks to the members in `addrs`, a comma-separated list of `HOST:PORT` (each resolved
    /// now, to its first address).
    pub fn new(addrs: &str) -> Result<Self, crate::Error> {
        let bad = |m: String| crate::Error::InvalidOption(format!("--addr: {m}"));
        let mut endpoints = Vec::new();
        for item in addrs.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(bad(format!("empty address in {addrs:?}")));
            }
            let addr = corekv_proto::client::resolve(item).map_err(|e| bad(e.to_string()))?;
            // Checked here, so that a bad address is refused before any client thread starts.
            method_uri(item, PUT_PATH).map_err(|e| bad(format!("{item:?}: {e}")))?;
            endpoints.push(Endpoint {
                authority: item.to_string(),
                addr,
            });
        }
        if endpoints.len() > ENDPOINTS_MAX {
            return Err(bad(format!(
                "{} addresses, more than {ENDPOINTS_MAX}",
                endpoints.len()
            )));
        }
        Ok(EtcdBackend {
            endpoints: endpoints.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The members' addresses, in `--addr` order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|e| e.authority.as_str())
    }
}

/// One HTTP/2 connection to one member.
pub struct EtcdConn {
    sender: SendRequest<Bytes>,
    put: Uri,
    range: Uri,
    failure: Rc<RefCell<Option<String>>>,
    last_error: RefCell<Option<String>>,
    // Dropping the connection cancels the task that drives HTTP/2 (and closes the socket).
    _driver: Task<()>,
}

impl Backend for EtcdBackend {
    type Conn = EtcdConn;

    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn connect(&self) -> Result<EtcdConn, crate::Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let endpoint = &self.endpoints[i];
        let connect_error = |reason: String| crate::Error::Connect {
            backend: "etcd",
            addr: endpoint.authority.clone(),
            reason,
        };
        let stream = TcpStream::connect(endpoint.addr)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(e.to_string()))?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .handshake::<_, Bytes>(stream.compat())
            .await
            .map_err(|e| connect_error(format!("HTTP/2 handshake: {e}")))?;
        let failure = Rc::new(RefCell::new(None));
        let driver = spawn_local({
            let failure = failure.clone();
            async move {
                let why = match connection.await {
                    Ok(()) => "etcd closed the connection".to_string(),
                    Err(e) => format!("HTTP/2 connection failed: {e}"),
                };
                failure.borrow_mut().get_or_insert(why);
            }
        });
        let uri =
            |path| method_uri(&endpoint.authority, path).map_err(|e| connect_error(e.to_string()));
        let conn = EtcdConn {
            sender,
            put: uri(PUT_PATH)?,
            range: uri(RANGE_PATH)?,
            failure,
            last_error: RefCell::new(None),
            _driver: driver,
        };
        // Fail now, not mid-benchmark, if no gRPC etcd answers there.
        let answer = conn
            .range(CONNECT_CHECK_KEY, b"", 1)
            .await
            .map_err(|e| connect_error(format!("a Range call failed: {e}")))?;
        read_range_response(&answer, |_| {})
            .map_err(|e| connect_error(format!("a Range call's answer: {e}")))?;
        Ok(conn)
    }
}

/// Why a call's answer could not be used.
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Malformed(#[from] proto::MalformedMessage),
}

impl EtcdConn {
    /// Calls `Range(key, range_end, limit)` and returns the answer's message.
    async fn range(&self, key: &[u8], range_end: &[u8], limit: u64) -> Result<Vec<u8>, OpError> {
        let request = encode_message(|out| encode_range_request(out, key, range_end, limit))?;
        Ok(unary(&self.sender, &self.range, request).await?)
    }

    /// Stores `record` under `key`.
    async fn put(&self, key: &[u8], record: &[u8]) -> Status {
        let result = async {
            let request = encode_message(|out| encode_put_request(out, key, record))?;
            let answer = unary(&self.sender, &self.put, request).await?;
            check_put_response(&answer)?;
            Ok::<_, OpError>(())
        }
        .await;
        match result {
            Ok(()) => Status::Ok,
            Err(e) => self.failed(&e),
        }
    }

    /// `ERROR`, remembering why; a lost connection also makes the connection unusable.
    fn failed(&self, e: &OpError) -> Status {
        let text = e.to_string();
        if let OpError::Call(call) = e {
            if call.is_connection_lost() {
                self.failure.borrow_mut().get_or_insert(text.clone());
            }
        }
        *self.last_error.borrow_mut() = Some(text);
        Status::Error
    }
}

impl Connection for EtcdConn {
    async fn insert(&self, key: &[u8], record: &[u8]) -> Status {
        self.put(key, record).await
    }

    async fn read(&self, key: &[u8], keep: Option<&mut Vec<u8>>) -> Status {
        let answer = match self.range(key, b"", 0).await {
            Ok(answer) => answer,
            Err(e) => return self.failed(&e),
        };
        let mut value = None;
        let summary = match read_range_response(&answer, |kv| value = Some(kv.value)) {
            Ok(summary) => summary,
            Err(e) => return self.failed(&e.into()),
        };
        match (summary.kvs, value) {
            (0, _) => Status::NotFound,
            (1, Some(value)) if decode_record(value).is_ok() => {
                if let Some(keep) = keep {
                    keep.clear();
                    keep.extend_from_slice(value);
                }
                Status::Ok
            }
            // Another number of keys for one key, or a value the driver did not write.
            _ => Status::UnexpectedState,
        }
    }

    async fn update(&self, key: &[u8], update: Update<'_>, current: Option<&[u8]>) -> Status {
        let (index, value) = match update {
            Update::All(record) => return self.put(key, record).await,
            Update::Field { index, value } => (index, value),
        };
        let mut fetched = Vec::new();
        let current = match current {
            Some(current) => current,
            None => {
                let status = self.read(key, Some(&mut fetched)).await;
                if !status.is_ok() {
                    return status;
                }
                &fetched
            }
        };
        let mut merged = Vec::with_capacity(current.len() + value.len());
        if merge_field(current, index, value, &mut merged).is_err() {
            return Status::UnexpectedState;
        }
        self.put(key, &merged).await
    }

    async fn scan(&self, start: &[u8], count: u64) -> Status {
        let answer = match self.range(start, RANGE_END_ALL, count).await {
            Ok(answer) => answer,
            Err(e) => return self.failed(&e),
        };
        let mut all_records = true;
        let summary = match read_range_response(&answer, |kv| {
            all_records &= decode_record(kv.value).is_ok();
        }) {
            Ok(summary) => summary,
            Err(e) => return self.failed(&e.into()),
        };
        if summary.kvs as u64 > count || !all_records {
            Status::UnexpectedState
        } else if summary.kvs == 0 {
            Status::NotFound
        } else {
            Status::Ok
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.borrow_mut().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_a_comma_separated_list() {
        let b = EtcdBackend::new("127.0.0.1:44001, 127.0.0.1:44002,localhost:44003").unwrap();
        assert_eq!(
            b.endpoints().collect::<Vec<_>>(),
            ["127.0.0.1:44001", "127.0.0.1:44002", "localhost:44003"]
        );
        for bad in ["", "127.0.0.1:1,", "127.0.0.1", "127.0.0.1:1,,127.0.0.1:2"] {
            assert!(
                matches!(EtcdBackend::new(bad), Err(crate::Error::InvalidOption(_))),
                "{bad:?} accepted"
            );
        }
    }
}
