//! The Rust client.
//!
//! - [`Client`]: shard-aware. It asks the server for its [`Topology`], opens one connection per
//!   shard, and sends each key's operations straight to the owning shard (no forwarding hop in
//!   the server). Single operations issued concurrently are coalesced into `batch` calls (see
//!   [`coalesce`]); [`Client::batch`] splits a list of operations by owner and sends one call per
//!   shard, in parallel.
//! - [`Connection`]: one connection to one port, one RPC per method, many calls in flight.
//!
//! Both run on any single-threaded executor through [`Runtime`]: [`GlommioRuntime`] inside a
//! glommio executor, [`TokioRuntime`] inside a tokio current-thread runtime's `LocalSet`.
//! See `proto/examples/` for one of each.

pub mod coalesce;
pub mod connection;
mod oneshot;
pub mod runtime;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

pub use coalesce::{CoalesceLimits, KeyHashState};
pub use connection::Connection;
#[cfg(feature = "glommio")]
pub use runtime::GlommioRuntime;
pub use runtime::Runtime;
#[cfg(feature = "tokio")]
pub use runtime::TokioRuntime;

use crate::error::{Error, Result};
use crate::ops::{
    CasOp, CasResult, GetColumnsOp, IncrementOp, Op, OpResult, PutEntityOp, ScanOp, ScanResult,
    ServerInfo, ShardStats, Topology, UpdateColumnsOp, Versioned, VersionedColumns,
};
use crate::shard::{MAX_SHARDS, SHARD_HASH_NAME, shard_for_key};
use coalesce::Coalescer;
use connection::expect;

/// How a [`Client`] sends single operations.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Coalesce concurrent single operations into `batch` calls (default). When false, each
    /// `get`/`put`/... is its own RPC.
    pub coalesce: bool,
    /// Limits of the coalescing queue of each shard.
    pub limits: CoalesceLimits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            coalesce: true,
            limits: CoalesceLimits::default(),
        }
    }
}

/// A shard-aware client: one connection per shard, each key sent to its owner.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    topology: Topology,
    shards: Vec<Rc<Coalescer>>,
    options: ClientOptions,
}

/// Resolves `host:port` to the first address it names.
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Resolve {
            addr: addr.to_string(),
            reason: "no address".to_string(),
        })
}

impl Client {
    /// Connects to a server at `addr` (any of its ports), reads its topology and connects to
    /// every shard's own port.
    pub async fn connect<R: Runtime>(runtime: R, addr: SocketAddr) -> Result<Client> {
        Client::connect_with(runtime, addr, ClientOptions::default()).await
    }

    /// [`Client::connect`] with options.
    pub async fn connect_with<R: Runtime>(
        runtime: R,
        addr: SocketAddr,
        options: ClientOptions,
    ) -> Result<Client> {
        let first = Connection::connect(runtime.clone(), addr).await?;
        let topology = first.topology().await?;
        first.close().await?;
        if topology.hash != SHARD_HASH_NAME {
            return Err(Error::Protocol(format!(
                "the server maps keys with {:?}; this client only knows {SHARD_HASH_NAME:?}",
                topology.hash
            )));
        }
        let count = topology.shard_count;
        if count == 0 || count > MAX_SHARDS || topology.shards.len() != count as usize {
            return Err(Error::Protocol(format!(
                "topology lists {} shards for a shard count of {count}",
                topology.shards.len()
            )));
        }
        let rt = runtime.clone();
        let spawn: Rc<dyn Fn(runtime::LocalBoxFuture<()>)> = Rc::new(move |f| rt.spawn(f));
        let mut shards = Vec::with_capacity(count as usize);
        for (i, info) in topology.shards.iter().enumerate() {
            if info.id as usize != i {
                return Err(Error::Protocol(format!(
                    "topology entry {i} is for shard {}",
                    info.id
                )));
            }
            let shard_addr = shard_address(addr, &info.host, info.port)?;
            let conn = Connection::connect(runtime.clone(), shard_addr).await?;
            shards.push(Coalescer::new(conn, options.limits, Rc::clone(&spawn)));
        }
        Ok(Client {
            inner: Rc::new(Inner {
                topology,
                shards,
                options,
            }),
        })
    }

    /// The topology read at connect time.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: &[u8]) -> u32 {
        shard_for_key(key, self.inner.topology.shard_count)
    }

    /// The connection to shard `shard`'s own port.
    pub fn connection(&self, shard: u32) -> Option<&Connection> {
        self.inner
            .shards
            .get(shard as usize)
            .map(|c| c.connection())
    }

    /// `(batch calls, operations)` the coalescing queues have sent so far, over all shards.
    pub fn coalesced_counts(&self) -> (u64, u64) {
        self.inner.shards.iter().fold((0, 0), |(b, o), c| {
            let (cb, co) = c.sent();
            (b + cb, o + co)
        })
    }

    fn owner(&self, key: &[u8]) -> &Rc<Coalescer> {
        &self.inner.shards[self.shard_of(key) as usize]
    }

    async fn single(&self, key: &[u8], op: Op) -> Result<OpResult> {
        let owner = self.owner(key);
        if self.inner.options.coalesce {
            owner.submit(op).await
        } else {
            let mut results = owner.connection().batch(std::slice::from_ref(&op)).await?;
            results
                .pop()
                .ok_or_else(|| Error::Protocol("empty batch reply".to_string()))
        }
    }

    /// Reads `key`: `None` if it has no live value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.inner.options.coalesce {
            return self.owner(key).connection().get(key).await;
        }
        expect::get(self.single(key, Op::Get { key: key.to_vec() }).await?)
    }

    /// Reads `key` with the sequence number of the write that stored its value (what
    /// [`crate::Expected::Sequence`] takes): `None` if it has no live value.
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<Versioned>> {
        if !self.inner.options.coalesce {
            return self.owner(key).connection().get_versioned(key).await;
        }
        expect::get_versioned(self.single(key, Op::Get { key: key.to_vec() }).await?)
    }

    /// Writes `value` under `key`. Returns the write's sequence number in its shard.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        self.put_op(key, value, 0).await
    }

    /// Writes `value` under `key`, expiring after `ttl` (rounded down to milliseconds, at
    /// least 1 ms).
    pub async fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<u64> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.put_op(key, value, ttl_ms).await
    }

    async fn put_op(&self, key: &[u8], value: &[u8], ttl_ms: u64) -> Result<u64> {
        if !self.inner.options.coalesce {
            return self.owner(key).connection().put(key, value, ttl_ms).await;
        }
        let op = Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_ms,
        };
        expect::write(self.single(key, op).await?)
    }

    /// Removes `key`. Returns the write's sequence number in its shard.
    pub async fn delete(&self, key: &[u8]) -> Result<u64> {
        if !self.inner.options.coalesce {
            return self.owner(key).connection().delete(key).await;
        }
        expect::write(self.single(key, Op::Delete { key: key.to_vec() }).await?)
    }

    /// Compare-and-set.
    pub async fn cas(&self, op: CasOp) -> Result<CasResult> {
        if !self.inner.options.coalesce {
            return self.owner(&op.key).connection().cas(&op).await;
        }
        let key = op.key.clone();
        expect::cas(self.single(&key, Op::Cas(op)).await?)
    }

    /// Replaces the key's value with an entity of `op.columns`. Returns the write's sequence
    /// number.
    pub async fn put_entity(&self, op: PutEntityOp) -> Result<u64> {
        if !self.inner.options.coalesce {
            return self.owner(&op.key).connection().put_entity(&op).await;
        }
        let key = op.key.clone();
        expect::write(self.single(&key, Op::PutEntity(op)).await?)
    }

    /// Sets `op.set` and removes `op.remove` in the entity under `op.key`, atomically, in one
    /// call (the other columns are unchanged). Returns the write's sequence number.
    pub async fn update_columns(&self, op: UpdateColumnsOp) -> Result<u64> {
        if !self.inner.options.coalesce {
            return self.owner(&op.key).connection().update_columns(&op).await;
        }
        let key = op.key.clone();
        expect::write(self.single(&key, Op::UpdateColumns(op)).await?)
    }

    /// Reads the columns `names` (all when empty) of the entity under `key`: `None` if the key
    /// has no live value.
    pub async fn get_columns(
        &self,
        key: &[u8],
        names: Vec<Vec<u8>>,
    ) -> Result<Option<VersionedColumns>> {
        let op = GetColumnsOp {
            key: key.to_vec(),
            names,
        };
        if !self.inner.options.coalesce {
            return self.owner(key).connection().get_columns(&op).await;
        }
        expect::columns(self.single(key, Op::GetColumns(op)).await?)
    }

    /// Adds `op.delta` to a counter; returns its new value and the write's sequence number.
    pub async fn increment(&self, op: IncrementOp) -> Result<(i64, u64)> {
        if !self.inner.options.coalesce {
            return self.owner(&op.key).connection().increment(&op).await;
        }
        let key = op.key.clone();
        expect::increment(self.single(&key, Op::Increment(op)).await?)
    }

    /// One page of a scan (the server merges every shard's entries).
    pub async fn scan(&self, op: &ScanOp) -> Result<ScanResult> {
        // Any shard fans a scan out; spread pages over the shards by their start key.
        let shard = self.shard_of(if op.reverse { &op.end } else { &op.start });
        self.inner.shards[shard as usize]
            .connection()
            .scan(op)
            .await
    }

    /// Every entry of a scan, following continuations page by page (`op.limit` is the page
    /// size). Stops after `entries_max` entries.
    pub async fn scan_all(
        &self,
        op: &ScanOp,
        entries_max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut page_op = op.clone();
        loop {
            let page = self.scan(&page_op).await?;
            out.extend(page.entries);
            if !page.more || out.len() >= entries_max {
                out.truncate(entries_max);
                return Ok(out);
            }
            page_op = page_op.resume(&page.continuation);
        }
    }

    /// Many operations: split by owning shard, one `batch` call per shard (or several, of at
    /// most `limits.batch_ops_max` operations each), all in flight at once. `result[i]`
    /// answers `ops[i]`. Scans go to one shard, which fans them out.
    pub async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let count = self.inner.shards.len();
        let mut groups: Vec<(Vec<usize>, Vec<Op>)> = vec![(Vec::new(), Vec::new()); count];
        for (i, op) in ops.into_iter().enumerate() {
            let shard = op.key().map_or(0, |k| self.shard_of(k)) as usize;
            groups[shard].0.push(i);
            groups[shard].1.push(op);
        }
        let total: usize = groups.iter().map(|g| g.0.len()).sum();
        let chunk = self.inner.options.limits.batch_ops_max;
        let mut calls = Vec::new();
        for (shard, (indices, ops)) in groups.iter().enumerate() {
            for (idx, part) in indices.chunks(chunk).zip(ops.chunks(chunk)) {
                let conn = self.inner.shards[shard].connection();
                calls.push(async move { (idx, conn.batch(part).await) });
            }
        }
        let mut results: Vec<Option<OpResult>> = vec![None; total];
        for (idx, outcome) in futures::future::join_all(calls).await {
            for (&i, r) in idx.iter().zip(outcome?) {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Protocol("a batch result is missing".to_string())))
            .collect()
    }

    /// Counters of every shard.
    pub async fn stats(&self) -> Result<Vec<ShardStats>> {
        self.inner.shards[0].connection().stats().await
    }

    /// What the server is and every limit it enforces.
    pub async fn server_info(&self) -> Result<ServerInfo> {
        self.inner.shards[0].connection().server_info().await
    }
}

/// The address of a shard: its advertised host, or the host we reached the server on when the
/// shard listens on every interface.
fn shard_address(reached: SocketAddr, host: &str, port: u16) -> Result<SocketAddr> {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => Ok(SocketAddr::new(reached.ip(), port)),
        Ok(ip) => Ok(SocketAddr::new(ip, port)),
        Err(_) => resolve(&format!("{host}:{port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_shard_hosts_use_the_address_we_reached() {
        let reached: SocketAddr = "10.1.2.3:7379".parse().unwrap();
        assert_eq!(
            shard_address(reached, "0.0.0.0", 7381).unwrap(),
            "10.1.2.3:7381".parse().unwrap()
        );
        assert_eq!(
            shard_address(reached, "127.0.0.1", 7380).unwrap(),
            "127.0.0.1:7380".parse().unwrap()
        );
        assert_eq!(
            shard_address(reached, "::", 7380).unwrap(),
            "10.1.2.3:7380".parse().unwrap()
        );
    }
}
