//! corekv as a YCSB backend, through `corekv-proto`'s Rust client: shard-aware (one
//! connection per shard, each key sent straight to its owner) and batching (single operations
//! issued concurrently towards one shard are coalesced into `batch` calls).
//!
//! One `--connections` unit is one [`Client`] (so `shards` TCP connections), shared by its
//! `--inflight` slots. Mapping (records encoded as in [`crate::ycsb::record`]):
//!
//! | YCSB | corekv |
//! |---|---|
//! | insert | `put(key, record)` |
//! | read | `get(key)`; the value must decode as a record |
//! | update (one field) | `get(key)`, replace the field, `put(key, record)` (the read is skipped inside a read-modify-write, which has just read the record) |
//! | update (`--write-all-fields`) | `put(key, new record)` |
//! | scan | `scan(start = key, end = ∞, limit = count)`, following continuations until `count` records |

use std::cell::RefCell;
use std::net::SocketAddr;

use corekv_proto::client::GlommioRuntime;
use corekv_proto::{Client, ScanOp};

use super::{Backend, Connection, Update};
use crate::ycsb::measure::Status;
use crate::ycsb::record::{decode_record, merge_field};

/// A corekv server reachable at `addr` (any of its ports).
#[derive(Debug, Clone)]
pub struct CorekvBackend {
    addr: SocketAddr,
}

impl CorekvBackend {
    /// Talks to the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        CorekvBackend { addr }
    }
}

/// One shard-aware client.
pub struct CorekvConn {
    client: Client,
    failure: RefCell<Option<String>>,
    last_error: RefCell<Option<String>>,
}

impl Backend for CorekvBackend {
    type Conn = CorekvConn;

    fn name(&self) -> &'static str {
        "corekv"
    }

    async fn connect(&self) -> Result<CorekvConn, crate::Error> {
        let client = Client::connect(GlommioRuntime, self.addr)
            .await
            .map_err(|e| crate::Error::Connect {
                backend: "corekv",
                addr: self.addr.to_string(),
                reason: e.to_string(),
            })?;
        Ok(CorekvConn {
            client,
            failure: RefCell::new(None),
            last_error: RefCell::new(None),
        })
    }
}

impl CorekvConn {
    /// The status of a failed call. A lost connection makes the connection unusable; an error
    /// the server returned for one operation does not.
    fn failed(&self, e: &corekv_proto::Error) -> Status {
        let text = e.to_string();
        if let corekv_proto::Error::Rpc(rpc) = e {
            if rpc.kind == capnp::ErrorKind::Disconnected {
                self.failure.borrow_mut().get_or_insert(text.clone());
            }
        }
        *self.last_error.borrow_mut() = Some(text);
        Status::Error
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Status {
        match self.client.put(key, value).await {
            Ok(_) => Status::Ok,
            Err(e) => self.failed(&e),
        }
    }
}

impl Connection for CorekvConn {
    async fn insert(&self, key: &[u8], record: &[u8]) -> Status {
        self.put(key, record).await
    }

    async fn read(&self, key: &[u8], keep: Option<&mut Vec<u8>>) -> Status {
        match self.client.get(key).await {
            Ok(Some(value)) => {
                if decode_record(&value).is_err() {
                    return Status::UnexpectedState;
                }
                if let Some(keep) = keep {
                    *keep = value;
                }
                Status::Ok
            }
            Ok(None) => Status::NotFound,
            Err(e) => self.failed(&e),
        }
    }

    async fn update(&self, key: &[u8], update: Update<'_>, current: Option<&[u8]>) -> Status {
        match update {
            Update::All(record) => self.put(key, record).await,
            Update::Field { index, value } => {
                let fetched;
                let current = match current {
                    Some(c) => c,
                    None => match self.client.get(key).await {
                        Ok(Some(v)) => {
                            fetched = v;
                            &fetched
                        }
                        Ok(None) => return Status::NotFound,
                        Err(e) => return self.failed(&e),
                    },
                };
                let mut merged = Vec::with_capacity(current.len() + value.len());
                if merge_field(current, index, value, &mut merged).is_err() {
                    return Status::UnexpectedState;
                }
                self.put(key, &merged).await
            }
        }
    }

    async fn scan(&self, start: &[u8], count: u64) -> Status {
        let count = count.min(u64::from(u32::MAX)) as u32;
        let mut op = ScanOp {
            start: start.to_vec(),
            end: Vec::new(),
            limit: count,
            reverse: false,
        };
        let mut got = 0u32;
        loop {
            match self.client.scan(&op).await {
                Ok(page) => {
                    if page.entries.iter().any(|(_, v)| decode_record(v).is_err()) {
                        return Status::UnexpectedState;
                    }
                    got += page.entries.len() as u32;
                    if !page.more || got >= count {
                        break;
                    }
                    op = op.resume(&page.continuation);
                    op.limit = count - got;
                }
                Err(e) => return self.failed(&e),
            }
        }
        if got == 0 {
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
