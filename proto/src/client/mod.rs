//! The Rust client.
//!
//! - [`Client`]: shard-aware. It asks the server for its [`Topology`], opens one connection per
//!   shard, and sends each key's operations straight to the owning shard (no forwarding hop in
//!   the server). Single operations issued concurrently are coalesced into `batch` calls (see
//!   [`coalesce`]); [`Client::batch`] splits a list of operations by owner and sends one call per
//!   shard, in parallel.
//! - [`Connection`]: one connection to one port, one RPC per method, many calls in flight.
//!
//! Against a cluster (the topology lists replicas), a [`Client`] sends each shard's operations
//! to the node it last found leading the shard. An answer `notLeader` (the operation was not
//! applied) sends it again to the leader the replica names (at once the first time, after a
//! pause when hints lead in a circle), or, from a replica that knows no leader (an election,
//! or a replica cut off from the others), to the next known replica after a pause, for up to
//! [`ClientOptions::leader_wait`]; that connection is kept for the shard's next operations. A connection that fails mid-call gives the caller the error (a write's
//! outcome is then unknown: never reported as success) and is replaced by one to another
//! replica for the next calls.
//!
//! Both run on any single-threaded executor through [`Runtime`]: [`GlommioRuntime`] inside a
//! glommio executor, [`TokioRuntime`] inside a tokio current-thread runtime's `LocalSet`.
//! See `proto/examples/` for one of each.

pub mod coalesce;
pub mod connection;
mod oneshot;
pub mod runtime;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use coalesce::{CoalesceLimits, KeyHashState};
pub use connection::Connection;
#[cfg(feature = "glommio")]
pub use runtime::GlommioRuntime;
pub use runtime::Runtime;
#[cfg(feature = "tokio")]
pub use runtime::TokioRuntime;

use crate::error::{Error, Result};
use crate::ops::{
    CasOp, CasResult, ErrorCode, GetColumnsOp, IncrementOp, Op, OpResult, PutEntityOp, ScanOp,
    ScanResult, ServerInfo, ShardStats, Topology, UpdateColumnsOp, Versioned, VersionedColumns,
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
    /// In a cluster: how long an operation keeps looking for its shard's leader (following
    /// `notLeader` answers, waiting out elections) before the last `notLeader` is returned.
    pub leader_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            coalesce: true,
            limits: CoalesceLimits::default(),
            leader_wait: Duration::from_secs(10),
        }
    }
}

/// Longest pause between two tries while a shard has no leader.
const LEADER_PAUSE_MAX: Duration = Duration::from_millis(50);

/// A shard-aware client: one connection per shard, each key sent to its owner.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    topology: Topology,
    /// Each shard's connection: in a cluster, to the node last found leading it.
    shards: Vec<RefCell<Rc<Coalescer>>>,
    options: ClientOptions,
    /// The topology lists replicas: `notLeader` answers are followed.
    cluster: bool,
    /// Per shard, the addresses of its replicas this client has seen (`topology` listed them,
    /// `notLeader` named a leader): where its calls go when its node fails or knows no
    /// leader. Only that shard's own ports: another shard's port, or a node's main port, is
    /// not another replica of it.
    known: Vec<RefCell<Vec<SocketAddr>>>,
    /// Per shard, where the next move starts in `known`.
    next_replica: Vec<Cell<usize>>,
    /// The address the client was given: the last place to look for another node.
    given: SocketAddr,
    connect: Rc<dyn Fn(SocketAddr) -> runtime::LocalBoxFuture<Result<Connection>>>,
    sleep: Rc<dyn Fn(Duration) -> runtime::LocalBoxFuture<()>>,
    spawn: Rc<dyn Fn(runtime::LocalBoxFuture<()>)>,
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
            shards.push(RefCell::new(Coalescer::new(
                conn,
                options.limits,
                Rc::clone(&spawn),
            )));
        }
        let cluster = topology.shards.iter().any(|s| !s.replicas.is_empty());
        let known = replica_addresses(addr, &topology)
            .into_iter()
            .map(RefCell::new)
            .collect();
        let next_replica = (0..count).map(|_| Cell::new(0)).collect();
        let rt = runtime.clone();
        let connect = Rc::new(move |addr| {
            let rt = rt.clone();
            Box::pin(async move { Connection::connect(rt, addr).await })
                as runtime::LocalBoxFuture<Result<Connection>>
        });
        let rt = runtime;
        let sleep = Rc::new(move |d| rt.sleep(d));
        Ok(Client {
            inner: Rc::new(Inner {
                topology,
                shards,
                options,
                cluster,
                known,
                next_replica,
                given: addr,
                connect,
                sleep,
                spawn,
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

    /// The address shard `shard`'s operations go to now (in a cluster: the node last found
    /// leading it).
    pub fn shard_addr(&self, shard: u32) -> Option<SocketAddr> {
        self.inner
            .shards
            .get(shard as usize)
            .map(|c| c.borrow().connection().addr())
    }

    /// `(batch calls, operations)` the coalescing queues have sent so far, over all shards.
    pub fn coalesced_counts(&self) -> (u64, u64) {
        self.inner.shards.iter().fold((0, 0), |(b, o), c| {
            let (cb, co) = c.borrow().sent();
            (b + cb, o + co)
        })
    }

    /// Runs `call` on the connection of the shard owning `key`, following `notLeader` in a
    /// cluster (see the module doc).
    async fn routed<T, F, Fut>(&self, key: &[u8], call: F) -> Result<T>
    where
        F: Fn(Rc<Coalescer>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.routed_shard(self.shard_of(key), call).await
    }

    async fn routed_shard<T, F, Fut>(&self, shard: u32, call: F) -> Result<T>
    where
        F: Fn(Rc<Coalescer>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.inner.options.leader_wait;
        let mut pause = Duration::from_millis(10);
        let mut followed = false;
        loop {
            let owner = self.inner.shards[shard as usize].borrow().clone();
            let refusal = match call(Rc::clone(&owner)).await {
                Err(Error::Server(e)) if e.code == ErrorCode::NotLeader && self.inner.cluster => e,
                Err(e @ (Error::Rpc(_) | Error::Connect { .. })) if self.inner.cluster => {
                    // The node may be gone: the next calls go to another replica, whose
                    // answer leads them to the leader. This call's outcome stays unknown.
                    self.replace(shard, &owner).await;
                    return Err(e);
                }
                other => return other,
            };
            if Instant::now() >= deadline {
                return Err(Error::Server(refusal));
            }
            let hint = refusal
                .leader
                .as_ref()
                .and_then(|l| l.address.as_deref())
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .filter(|a| *a != owner.connection().addr());
            match hint {
                Some(addr) => {
                    self.learn(shard, addr);
                    // Followed at once the first time; stale hints that send the call round
                    // in a circle wait like an election does.
                    if self.switch(shard, &owner, addr).await && !followed {
                        followed = true;
                        continue;
                    }
                }
                // This replica knows no leader; another one may (this one may be cut off).
                None => {
                    self.next_replica(shard, &owner).await;
                }
            }
            (self.inner.sleep)(pause).await;
            pause = (pause * 2).min(LEADER_PAUSE_MAX);
        }
    }

    /// Sends shard `shard`'s operations to `addr` from now on, unless another call switched
    /// already (from `old`). False when `addr` cannot be reached.
    async fn switch(&self, shard: u32, old: &Rc<Coalescer>, addr: SocketAddr) -> bool {
        if !Rc::ptr_eq(&self.inner.shards[shard as usize].borrow(), old) {
            // Another call moved the shard already (the operations of one refused batch all
            // come here at once): no connection of its own.
            return true;
        }
        match (self.inner.connect)(addr).await {
            Ok(conn) => {
                let mut slot = self.inner.shards[shard as usize].borrow_mut();
                if Rc::ptr_eq(&slot, old) {
                    *slot = Coalescer::new(
                        conn,
                        self.inner.options.limits,
                        Rc::clone(&self.inner.spawn),
                    );
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Remembers the address of a replica of `shard`.
    fn learn(&self, shard: u32, addr: SocketAddr) {
        let mut known = self.inner.known[shard as usize].borrow_mut();
        if !known.contains(&addr) {
            known.push(addr);
        }
    }

    /// Sends shard `shard`'s next calls to the next known replica of it after `old`'s that
    /// accepts a connection, unless another call moved them already; None when none does
    /// (`old` stays). When it knows no other replica of the shard (the node that answered
    /// `topology` had not learned its peers yet), any other node it knows will do: that node
    /// forwards the calls or names the leader.
    async fn next_replica(&self, shard: u32, old: &Rc<Coalescer>) -> Option<SocketAddr> {
        let current = old.connection().addr();
        let known = self.inner.known[shard as usize].borrow().clone();
        let next = &self.inner.next_replica[shard as usize];
        let n = known.len();
        for k in 0..n {
            let i = (next.get() + k) % n;
            if known[i] != current && self.switch(shard, old, known[i]).await {
                next.set(i + 1);
                return Some(known[i]);
            }
        }
        let others: Vec<SocketAddr> = self
            .inner
            .known
            .iter()
            .flat_map(|k| k.borrow().clone())
            .chain([self.inner.given])
            .filter(|a| *a != current && !known.contains(a))
            .collect();
        for a in others {
            if self.switch(shard, old, a).await {
                return Some(a);
            }
        }
        None
    }

    /// Replaces shard `shard`'s failed connection `old` with one to the next known node that
    /// accepts one, and learns the replicas that node knows (none reachable: `old` stays, and
    /// the next call fails again).
    async fn replace(&self, shard: u32, old: &Rc<Coalescer>) {
        if self.next_replica(shard, old).await.is_none() {
            return;
        }
        // Where the shard went (this call's choice, or another call's).
        let now = self.inner.shards[shard as usize].borrow().clone();
        let addr = now.connection().addr();
        if let Ok(topology) = now.connection().topology().await {
            // Only from a node that maps keys as the client does: its shard i is ours.
            let same = topology.shard_count == self.inner.topology.shard_count
                && topology.hash == self.inner.topology.hash
                && topology
                    .shards
                    .iter()
                    .enumerate()
                    .all(|(i, s)| s.id as usize == i);
            if same {
                for (s, addrs) in replica_addresses(addr, &topology).into_iter().enumerate() {
                    for a in addrs {
                        self.learn(s as u32, a);
                    }
                }
            }
        }
    }

    async fn single(&self, key: &[u8], op: Op) -> Result<OpResult> {
        let coalesce = self.inner.options.coalesce;
        // Shared, not copied, with each attempt (a refused one is sent again).
        let op = Rc::new(op);
        self.routed(key, |owner| {
            let op = Rc::clone(&op);
            async move {
                let result = if coalesce {
                    owner.submit(op).await?
                } else {
                    let mut results = owner.connection().batch(std::slice::from_ref(&op)).await?;
                    results
                        .pop()
                        .ok_or_else(|| Error::Protocol("empty batch reply".to_string()))?
                };
                // A refusal is an error here, so that `notLeader` is followed.
                match result {
                    OpResult::Error(e) => Err(Error::Server(e)),
                    r => Ok(r),
                }
            }
        })
        .await
    }

    /// Reads `key`: `None` if it has no live value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.inner.options.coalesce {
            return self
                .routed(key, |o| async move { o.connection().get(key).await })
                .await;
        }
        expect::get(self.single(key, Op::Get { key: key.to_vec() }).await?)
    }

    /// Reads `key` with the sequence number of the write that stored its value (what
    /// [`crate::Expected::Sequence`] takes): `None` if it has no live value.
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<Versioned>> {
        if !self.inner.options.coalesce {
            return self
                .routed(
                    key,
                    |o| async move { o.connection().get_versioned(key).await },
                )
                .await;
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
            return self
                .routed(key, |o| async move {
                    o.connection().put(key, value, ttl_ms).await
                })
                .await;
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
            return self
                .routed(key, |o| async move { o.connection().delete(key).await })
                .await;
        }
        expect::write(self.single(key, Op::Delete { key: key.to_vec() }).await?)
    }

    /// Compare-and-set.
    pub async fn cas(&self, op: CasOp) -> Result<CasResult> {
        if !self.inner.options.coalesce {
            return self
                .routed(&op.key, |o| {
                    let op = &op;
                    async move { o.connection().cas(op).await }
                })
                .await;
        }
        let key = op.key.clone();
        expect::cas(self.single(&key, Op::Cas(op)).await?)
    }

    /// Replaces the key's value with an entity of `op.columns`. Returns the write's sequence
    /// number.
    pub async fn put_entity(&self, op: PutEntityOp) -> Result<u64> {
        if !self.inner.options.coalesce {
            return self
                .routed(&op.key, |o| {
                    let op = &op;
                    async move { o.connection().put_entity(op).await }
                })
                .await;
        }
        let key = op.key.clone();
        expect::write(self.single(&key, Op::PutEntity(op)).await?)
    }

    /// Sets `op.set` and removes `op.remove` in the entity under `op.key`, atomically, in one
    /// call (the other columns are unchanged). Returns the write's sequence number.
    pub async fn update_columns(&self, op: UpdateColumnsOp) -> Result<u64> {
        if !self.inner.options.coalesce {
            return self
                .routed(&op.key, |o| {
                    let op = &op;
                    async move { o.connection().update_columns(op).await }
                })
                .await;
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
            return self
                .routed(key, |o| {
                    let op = &op;
                    async move { o.connection().get_columns(op).await }
                })
                .await;
        }
        expect::columns(self.single(key, Op::GetColumns(op)).await?)
    }

    /// Adds `op.delta` to a counter; returns its new value and the write's sequence number.
    pub async fn increment(&self, op: IncrementOp) -> Result<(i64, u64)> {
        if !self.inner.options.coalesce {
            return self
                .routed(&op.key, |o| {
                    let op = &op;
                    async move { o.connection().increment(op).await }
                })
                .await;
        }
        let key = op.key.clone();
        expect::increment(self.single(&key, Op::Increment(op)).await?)
    }

    /// One page of a scan (the server merges every shard's entries).
    pub async fn scan(&self, op: &ScanOp) -> Result<ScanResult> {
        // Any shard fans a scan out; spread pages over the shards by their start key.
        let key = if op.reverse { &op.end } else { &op.start };
        self.routed(key, |o| async move { o.connection().scan(op).await })
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
                calls.push(async move { (idx, self.shard_batch(shard as u32, part).await) });
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

    /// One `batch` call of operations shard `shard` owns. In a cluster, a reply refusing
    /// every operation with `notLeader` (a follower's: none was applied) is followed like a
    /// single operation's.
    async fn shard_batch(&self, shard: u32, ops: &[Op]) -> Result<Vec<OpResult>> {
        self.routed_shard(shard, |o| async move {
            let results = o.connection().batch(ops).await?;
            let refused =
                |r: &OpResult| matches!(r, OpResult::Error(e) if e.code == ErrorCode::NotLeader);
            match results.first() {
                Some(OpResult::Error(e)) if results.iter().all(refused) => {
                    Err(Error::Server(e.clone()))
                }
                _ => Ok(results),
            }
        })
        .await
    }

    /// Counters of every shard (of the node the first shard's operations go to).
    pub async fn stats(&self) -> Result<Vec<ShardStats>> {
        let first = self.inner.shards[0].borrow().clone();
        first.connection().stats().await
    }

    /// What the server is and every limit it enforces.
    pub async fn server_info(&self) -> Result<ServerInfo> {
        let first = self.inner.shards[0].borrow().clone();
        first.connection().server_info().await
    }
}

/// Per shard of `topology` (read from a node reached at `reached`), the addresses of its
/// replicas: the answering node's own shard port first, then every listed replica whose
/// address the node knows, each once.
fn replica_addresses(reached: SocketAddr, topology: &Topology) -> Vec<Vec<SocketAddr>> {
    topology
        .shards
        .iter()
        .map(|info| {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            let own = shard_address(reached, &info.host, info.port).ok();
            let replicas = info
                .replicas
                .iter()
                .filter(|r| !r.host.is_empty())
                .filter_map(|r| shard_address(reached, &r.host, r.port).ok());
            for a in own.into_iter().chain(replicas) {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            addrs
        })
        .collect()
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
    use crate::ops::{ReplicaInfo, ShardInfo};

    /// A shard's calls move only between replicas of that shard: never to a node's main
    /// port (the same node as its shard port) or another shard's port.
    #[test]
    fn each_shard_knows_only_its_own_replicas_once() {
        let replica = |node: u64, host: &str, port: u16| ReplicaInfo {
            node,
            host: host.to_string(),
            port,
        };
        // Node n serves clients on port n7379 and its shards on n7380, n7381.
        let topology = Topology {
            shard_count: 2,
            hash: SHARD_HASH_NAME.to_string(),
            shards: (0..2u16)
                .map(|s| ShardInfo {
                    id: u32::from(s),
                    host: "0.0.0.0".to_string(),
                    port: 17380 + s,
                    leader: 2,
                    replicas: vec![
                        replica(1, "127.0.0.1", 17380 + s),
                        replica(2, "127.0.0.1", 27380 + s),
                        // Not learned yet by the answering node.
                        replica(3, "", 0),
                    ],
                })
                .collect(),
        };
        let reached: SocketAddr = "127.0.0.1:17379".parse().unwrap();
        let addrs = |ports: &[u16]| -> Vec<SocketAddr> {
            ports
                .iter()
                .map(|&p| SocketAddr::new(reached.ip(), p))
                .collect()
        };
        assert_eq!(
            replica_addresses(reached, &topology),
            [addrs(&[17380, 27380]), addrs(&[17381, 27381])]
        );
    }

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
