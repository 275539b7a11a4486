//! corekv as a YCSB backend, through `corekv-proto`'s Rust client: shard-aware (one
//! connection per shard, each key sent straight to its owner) and batching (single operations
//! issued concurrently towards one shard are coalesced into `batch` calls).
//!
//! One `--connections` unit is one [`Client`] (so `shards` TCP connections), shared by its
//! `--inflight` slots. A record is stored as an entity, one column per field (the encoding of
//! [`corekv_proto::entity`], as Redis stores it as a hash). Mapping:
//!
//! | YCSB | corekv |
//! |---|---|
//! | insert | `put(key, entity of the record's fields)` (a `put` of an entity's encoding stores the entity; one copy, no per-column allocations) |
//! | read | `get(key)`; the value must decode as an entity |
//! | update (one field) | `updateColumns(key, set = [field])`: one call, applied atomically in the server (as Redis's `HSET key field value`) |
//! | update (`--write-all-fields`) | `put(key, entity of the new record)` |
//! | scan | `scan(start = key, end = ∞, limit = count)`, following continuations until `count` records |

use std::cell::RefCell;
use std::net::SocketAddr;

use corekv_proto::client::GlommioRuntime;
use corekv_proto::{Client, ScanOp, UpdateColumnsOp, entity};

use super::{Backend, Connection, Update};
use crate::ycsb::measure::Status;
use crate::ycsb::record::{decode_record, field_name};

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

    /// Stores `record` (the driver's encoding) as an entity.
    async fn put_record(&self, key: &[u8], record: &[u8]) -> Status {
        let Some(value) = record_to_entity(record) else {
            return Status::UnexpectedState;
        };
        match self.client.put(key, &value).await {
            Ok(_) => Status::Ok,
            Err(e) => self.failed(&e),
        }
    }
}

impl Connection for CorekvConn {
    async fn insert(&self, key: &[u8], record: &[u8]) -> Status {
        self.put_record(key, record).await
    }

    async fn read(&self, key: &[u8], keep: Option<&mut Vec<u8>>) -> Status {
        match self.client.get(key).await {
            Ok(Some(value)) => {
                if entity::decode(&value).is_none() {
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

    async fn update(&self, key: &[u8], update: Update<'_>, _current: Option<&[u8]>) -> Status {
        match update {
            Update::All(record) => self.put_record(key, record).await,
            Update::Field { index, value } => {
                let op = UpdateColumnsOp {
                    key: key.to_vec(),
                    set: vec![(field_name(index).to_vec(), value.to_vec())],
                    remove: Vec::new(),
                    ttl_ms: 0,
                };
                match self.client.update_columns(op).await {
                    Ok(_) => Status::Ok,
                    Err(e) => self.failed(&e),
                }
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
                    if page
                        .entries
                        .iter()
                        .any(|(_, v)| entity::decode(v).is_none())
                    {
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

/// The entity encoding of a record in the driver's encoding: one column per field.
fn record_to_entity(record: &[u8]) -> Option<Vec<u8>> {
    let mut fields = decode_record(record).ok()?;
    fields.sort_unstable_by_key(|(name, _)| *name);
    Some(entity::encode_sorted(fields.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ycsb::record::encode_record;

    #[test]
    fn a_record_becomes_an_entity_of_its_fields() {
        let values: Vec<Vec<u8>> = (0..12).map(|i| vec![b'a' + i as u8; i * 3]).collect();
        let mut record = Vec::new();
        encode_record(&mut record, values.len(), |i| &values[i]);
        let entity = record_to_entity(&record).unwrap();
        let columns = entity::decode_owned(&entity).unwrap();
        assert_eq!(columns.len(), 12);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(columns.get(field_name(i)), Some(v), "field{i}");
        }
        assert_eq!(record_to_entity(b"not a record"), None);
    }
}
