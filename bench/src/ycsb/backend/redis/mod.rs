//! Redis as a YCSB backend, over RESP written by hand ([`resp`]) and pipelined ([`pipeline`]).
//!
//! Mapping, as in YCSB's Redis binding (`site.ycsb.db.RedisClient`):
//!
//! | YCSB | Redis commands | replies |
//! |---|---|---|
//! | insert | `HSET key field0 v0 … field9 v9` then `ZADD _indices 0 key` | 2 |
//! | read | `HGETALL key` | 1 |
//! | update | `HSET key fieldN v` (or every field with `--write-all-fields`) | 1 |
//! | scan | `ZRANGEBYLEX _indices [start + LIMIT 0 count`, then one `HGETALL` per key, pipelined | 1 + count |
//!
//! One deliberate difference from YCSB's binding: its scan index scores each key with Java's
//! `String.hashCode` and scans by score (`ZRANGEBYSCORE`), which walks keys in hash-code order.
//! Here every key has score 0 and the scan walks the index in key order (`ZRANGEBYLEX`), so a
//! Redis scan reads exactly the records a corekv scan from the same start key reads (corekv
//! scans in key order). The index costs the same either way (a skiplist insert per record).
//! The per-key `HGETALL`s of a scan are sent together rather than one round trip each.

pub mod pipeline;
pub mod resp;

use std::cell::RefCell;

use glommio::net::TcpStream;

use self::pipeline::Pipeline;
use self::resp::{Reply, encode_command};
use super::{Backend, Connection, Update};
use crate::ycsb::measure::Status;
use crate::ycsb::record::{decode_record, field_name};

/// The sorted set that indexes every record key, for scans (YCSB's `INDEX_KEY`).
pub const INDEX_KEY: &[u8] = b"_indices";

/// A Redis server at `addr`.
#[derive(Debug, Clone)]
pub struct RedisBackend {
    addr: String,
    field_count: usize,
}

impl RedisBackend {
    /// Talks to `addr` (`HOST:PORT`); records have `field_count` fields.
    pub fn new(addr: impl Into<String>, field_count: usize) -> Self {
        RedisBackend {
            addr: addr.into(),
            field_count,
        }
    }
}

/// One pipelined connection to Redis.
pub struct RedisConn {
    pipe: Pipeline,
    field_count: usize,
    last_error: RefCell<Option<String>>,
}

impl Backend for RedisBackend {
    type Conn = RedisConn;

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn connect(&self) -> Result<RedisConn, crate::Error> {
        let connect_error = |e: &dyn std::fmt::Display| crate::Error::Connect {
            backend: "redis",
            addr: self.addr.clone(),
            reason: e.to_string(),
        };
        let stream = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|e| connect_error(&e))?;
        stream.set_nodelay(true).map_err(|e| connect_error(&e))?;
        let conn = RedisConn {
            pipe: Pipeline::new(stream),
            field_count: self.field_count,
            last_error: RefCell::new(None),
        };
        // Fail now, not mid-benchmark, if this is not a Redis that answers.
        match conn
            .pipe
            .call(1, |out| encode_command(out, &[b"PING"]))
            .await
        {
            Ok(r) if r == [Reply::Simple(b"PONG".to_vec())] => Ok(conn),
            Ok(r) => Err(crate::Error::Connect {
                backend: "redis",
                addr: self.addr.clone(),
                reason: format!("PING answered {r:?}, not PONG"),
            }),
            Err(reason) => Err(crate::Error::Connect {
                backend: "redis",
                addr: self.addr.clone(),
                reason,
            }),
        }
    }
}

impl RedisConn {
    /// `ERROR`, remembering why.
    fn error(&self, why: &str) -> Status {
        *self.last_error.borrow_mut() = Some(why.to_string());
        Status::Error
    }

    /// The status of a reply that should be an integer (HSET, ZADD).
    fn integer_status(&self, r: &Reply) -> Status {
        match r {
            Reply::Integer(_) => Status::Ok,
            Reply::Error(e) => self.error(e),
            _ => Status::UnexpectedState,
        }
    }

    /// The status of an `HGETALL` reply: a full record, no record, or something else.
    fn record_status(&self, r: &Reply) -> Status {
        match r {
            Reply::Array(Some(items)) if items.is_empty() => Status::NotFound,
            Reply::Array(Some(items)) if items.len() == 2 * self.field_count => Status::Ok,
            Reply::Error(e) => self.error(e),
            _ => Status::UnexpectedState,
        }
    }
}

impl Connection for RedisConn {
    async fn insert(&self, key: &[u8], record: &[u8]) -> Status {
        let Ok(fields) = decode_record(record) else {
            return Status::Error;
        };
        let mut args: Vec<&[u8]> = Vec::with_capacity(2 + 2 * fields.len());
        args.push(b"HSET");
        args.push(key);
        for (name, value) in &fields {
            args.push(name);
            args.push(value);
        }
        let result = self
            .pipe
            .call(2, |out| {
                encode_command(out, &args);
                encode_command(out, &[b"ZADD", INDEX_KEY, b"0", key]);
            })
            .await;
        match result {
            Ok(r) => match (self.integer_status(&r[0]), self.integer_status(&r[1])) {
                (Status::Ok, Status::Ok) => Status::Ok,
                (Status::Ok, other) | (other, _) => other,
            },
            Err(e) => self.error(&e),
        }
    }

    async fn read(&self, key: &[u8], _keep: Option<&mut Vec<u8>>) -> Status {
        match self
            .pipe
            .call(1, |out| encode_command(out, &[b"HGETALL", key]))
            .await
        {
            Ok(r) => self.record_status(&r[0]),
            Err(e) => self.error(&e),
        }
    }

    async fn update(&self, key: &[u8], update: Update<'_>, _current: Option<&[u8]>) -> Status {
        let result = match update {
            Update::Field { index, value } => {
                self.pipe
                    .call(1, |out| {
                        encode_command(out, &[b"HSET", key, field_name(index), value])
                    })
                    .await
            }
            Update::All(record) => {
                let Ok(fields) = decode_record(record) else {
                    return Status::Error;
                };
                let mut args: Vec<&[u8]> = Vec::with_capacity(2 + 2 * fields.len());
                args.push(b"HSET");
                args.push(key);
                for (name, value) in &fields {
                    args.push(name);
                    args.push(value);
                }
                self.pipe.call(1, |out| encode_command(out, &args)).await
            }
        };
        match result {
            Ok(r) => self.integer_status(&r[0]),
            Err(e) => self.error(&e),
        }
    }

    async fn scan(&self, start: &[u8], count: u64) -> Status {
        let mut min = Vec::with_capacity(start.len() + 1);
        min.push(b'[');
        min.extend_from_slice(start);
        let count_text = count.to_string();
        let keys = match self
            .pipe
            .call(1, |out| {
                encode_command(
                    out,
                    &[
                        b"ZRANGEBYLEX",
                        INDEX_KEY,
                        &min,
                        b"+",
                        b"LIMIT",
                        b"0",
                        count_text.as_bytes(),
                    ],
                )
            })
            .await
        {
            Ok(mut r) => match r.pop() {
                Some(Reply::Array(Some(keys))) => keys,
                Some(Reply::Error(e)) => return self.error(&e),
                _ => return Status::UnexpectedState,
            },
            Err(e) => return self.error(&e),
        };
        if keys.is_empty() {
            return Status::NotFound;
        }
        let mut names = Vec::with_capacity(keys.len());
        for k in &keys {
            match k {
                Reply::Bulk(Some(name)) => names.push(name.as_slice()),
                _ => return Status::UnexpectedState,
            }
        }
        let records = self
            .pipe
            .call(names.len(), |out| {
                for name in &names {
                    encode_command(out, &[b"HGETALL", name]);
                }
            })
            .await;
        match records {
            Ok(r) => r
                .iter()
                .map(|rec| self.record_status(rec))
                .find(|s| !s.is_ok())
                .unwrap_or(Status::Ok),
            Err(e) => self.error(&e),
        }
    }

    fn failure(&self) -> Option<String> {
        self.pipe.failure()
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.borrow_mut().take()
    }
}
