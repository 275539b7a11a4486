//! One Cap'n Proto RPC connection to one server port, with one method per RPC.
//!
//! Every call is sent at once: many calls can be in flight on one connection (pipelining);
//! replies complete their futures in any order.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use futures::FutureExt;
use futures::io::BufReader;

use super::runtime::{LocalBoxFuture, Runtime};
use crate::codec;
use crate::corekv_capnp::core_kv;
use crate::error::{Error, Result};
use crate::io::MessageWriter;
use crate::ops::{
    CasOp, CasResult, GetColumnsOp, IncrementOp, Op, OpResult, PutEntityOp, ScanOp, ScanResult,
    ServerInfo, ShardStats, Topology, UpdateColumnsOp, Versioned, VersionedColumns,
};

/// Largest reply this client reads, in 8-byte words (128 MiB): above the server's own frame
/// limit, so every reply the server can send is accepted.
pub const REPLY_WORDS_MAX: usize = 16 << 20;

/// Read buffer, and write buffer kept between requests, on the client side.
const BUFFER_BYTES: usize = 64 << 10;
/// The most bytes of one request sent in one write (see [`MessageWriter`]).
const GATHER_BYTES_MAX: usize = 1 << 20;

type Spawner = Rc<dyn Fn(LocalBoxFuture<()>)>;

/// Sends a single-operation request and reads the `(result :OpResult)` of its reply. (Each
/// method has its own generated results type, all with a `result` field.)
macro_rules! read_reply {
    ($req:expr) => {{
        let reply = $req.send().promise.await?;
        codec::read_result(reply.get()?.get_result()?)?
    }};
}

/// A connection to one corekv port. Dropping it closes the connection.
pub struct Connection {
    client: core_kv::Client,
    addr: SocketAddr,
    disconnector: RefCell<Option<capnp_rpc::Disconnector<twoparty::VatId>>>,
    spawner: Spawner,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` and starts the RPC session on `runtime`.
    pub async fn connect<R: Runtime>(runtime: R, addr: SocketAddr) -> Result<Connection> {
        let (reader, writer) = runtime
            .connect(addr)
            .await
            .map_err(|source| Error::Connect { addr, source })?;
        let mut options = capnp::message::ReaderOptions::new();
        options.traversal_limit_in_words(Some(REPLY_WORDS_MAX));
        let network = twoparty::VatNetwork::new(
            BufReader::with_capacity(BUFFER_BYTES, reader),
            MessageWriter::new(writer, BUFFER_BYTES, GATHER_BYTES_MAX),
            Side::Client,
            options,
        );
        let mut rpc = RpcSystem::new(Box::new(network), None);
        let client: core_kv::Client = rpc.bootstrap(Side::Server);
        let disconnector = rpc.get_disconnector();
        // The session ends when the server goes away or `close`/drop disconnects it; either way
        // its error is reported to the calls in flight, not here.
        runtime.spawn(Box::pin(rpc.map(drop)));
        let rt = runtime.clone();
        Ok(Connection {
            client,
            addr,
            disconnector: RefCell::new(Some(disconnector)),
            spawner: Rc::new(move |f| rt.spawn(f)),
        })
    }

    /// The address this connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The raw capability, for calls this type does not wrap.
    pub fn capability(&self) -> &core_kv::Client {
        &self.client
    }

    /// Closes the connection once the calls already sent have been answered.
    pub async fn close(self) -> Result<()> {
        let disconnector = self.disconnector.borrow_mut().take();
        if let Some(d) = disconnector {
            d.await?;
        }
        Ok(())
    }

    /// Reads `key`: `None` if it has no live value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key).await?.map(|v| v.value))
    }

    /// Reads `key` with the sequence number of the write that stored its value (what
    /// [`crate::Expected::Sequence`] takes): `None` if it has no live value.
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<Versioned>> {
        let mut req = self.client.get_request();
        req.get().set_key(key);
        expect_get_versioned(read_reply!(req))
    }

    /// Writes `value` under `key`; `ttl_ms` > 0 makes it expire. Returns the sequence number.
    pub async fn put(&self, key: &[u8], value: &[u8], ttl_ms: u64) -> Result<u64> {
        let mut req = self.client.put_request();
        req.get().set_key(key);
        req.get().set_value(value);
        req.get().set_ttl_ms(ttl_ms);
        expect_write(read_reply!(req))
    }

    /// Removes `key`. Returns the sequence number.
    pub async fn delete(&self, key: &[u8]) -> Result<u64> {
        let mut req = self.client.delete_request();
        req.get().set_key(key);
        expect_write(read_reply!(req))
    }

    /// Compare-and-set.
    pub async fn cas(&self, op: &CasOp) -> Result<CasResult> {
        let mut req = self.client.cas_request();
        codec::write_cas_op(req.get().init_op(), op);
        expect_cas(read_reply!(req))
    }

    /// Replaces the key's value with an entity. Returns the sequence number.
    pub async fn put_entity(&self, op: &PutEntityOp) -> Result<u64> {
        let mut req = self.client.put_entity_request();
        codec::write_put_entity_op(req.get().init_op(), op);
        expect_write(read_reply!(req))
    }

    /// Sets and removes columns of an entity. Returns the sequence number.
    pub async fn update_columns(&self, op: &UpdateColumnsOp) -> Result<u64> {
        let mut req = self.client.update_columns_request();
        codec::write_update_columns_op(req.get().init_op(), op);
        expect_write(read_reply!(req))
    }

    /// Reads columns of an entity: `None` if the key has no live value.
    pub async fn get_columns(&self, op: &GetColumnsOp) -> Result<Option<VersionedColumns>> {
        let mut req = self.client.get_columns_request();
        codec::write_get_columns_op(req.get().init_op(), op);
        expect_columns(read_reply!(req))
    }

    /// Adds to a counter. Returns its new value and the write's sequence number.
    pub async fn increment(&self, op: &IncrementOp) -> Result<(i64, u64)> {
        let mut req = self.client.increment_request();
        codec::write_increment_op(req.get().init_op(), op);
        expect_increment(read_reply!(req))
    }

    /// One page of a scan over every shard.
    pub async fn scan(&self, op: &ScanOp) -> Result<ScanResult> {
        let mut req = self.client.scan_request();
        codec::write_scan_op(req.get().init_op(), op);
        expect_scan(read_reply!(req))
    }

    /// Many operations in one call; `result[i]` answers `ops[i]`. Typed errors of single
    /// operations are in their `OpResult`; `Err` means the whole call failed.
    pub async fn batch<O: std::borrow::Borrow<Op>>(&self, ops: &[O]) -> Result<Vec<OpResult>> {
        let mut req = self.client.batch_request();
        let len = u32::try_from(ops.len())
            .map_err(|_| Error::Protocol(format!("{} operations in one batch", ops.len())))?;
        let mut list = req.get().init_ops(len);
        for (i, op) in ops.iter().enumerate() {
            codec::write_op(list.reborrow().get(i as u32), op.borrow());
        }
        let reply = req.send().promise.await?;
        let results = reply.get()?.get_results()?;
        if results.len() != len {
            return Err(Error::Protocol(format!(
                "batch of {len} operations answered with {} results",
                results.len()
            )));
        }
        results.iter().map(|r| Ok(codec::read_result(r)?)).collect()
    }

    /// In a cluster: makes node `to` the leader of shard `shard`'s group. Send it to the
    /// group's leader (another replica refuses with `notLeader` naming it); returns once `to`
    /// leads (see `transferLeader` in the schema).
    pub async fn transfer_leader(&self, shard: u32, to: u64) -> Result<()> {
        let mut req = self.client.transfer_leader_request();
        req.get().set_shard(shard);
        req.get().set_to(to);
        let reply = req.send().promise.await?;
        let reply = reply.get()?;
        if reply.has_error() {
            return Err(Error::Server(codec::read_error(reply.get_error()?)?));
        }
        Ok(())
    }

    /// How keys map to shards and where each shard listens.
    pub async fn topology(&self) -> Result<Topology> {
        let reply = self.client.topology_request().send().promise.await?;
        Ok(codec::read_topology(reply.get()?.get_topology()?)?)
    }

    /// What the server is and every limit it enforces.
    pub async fn server_info(&self) -> Result<ServerInfo> {
        let reply = self.client.server_info_request().send().promise.await?;
        Ok(codec::read_server_info(reply.get()?.get_info()?)?)
    }

    /// Counters of every shard.
    pub async fn stats(&self) -> Result<Vec<ShardStats>> {
        let reply = self.client.stats_request().send().promise.await?;
        let mut out = Vec::new();
        for s in reply.get()?.get_stats()?.get_shards()?.iter() {
            out.push(codec::read_shard_stats(s)?);
        }
        Ok(out)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(d) = self.disconnector.borrow_mut().take() {
            (self.spawner)(Box::pin(d.map(drop)));
        }
    }
}

pub(crate) fn expect_get(r: OpResult) -> Result<Option<Vec<u8>>> {
    Ok(expect_get_versioned(r)?.map(|v| v.value))
}

pub(crate) fn expect_get_versioned(r: OpResult) -> Result<Option<Versioned>> {
    match r {
        OpResult::Get(v) => Ok(v),
        other => unexpected("get", other),
    }
}

pub(crate) fn expect_write(r: OpResult) -> Result<u64> {
    match r {
        OpResult::Write { sequence } => Ok(sequence),
        other => unexpected("write", other),
    }
}

pub(crate) fn expect_cas(r: OpResult) -> Result<CasResult> {
    match r {
        OpResult::Cas(c) => Ok(c),
        other => unexpected("cas", other),
    }
}

pub(crate) fn expect_columns(r: OpResult) -> Result<Option<VersionedColumns>> {
    match r {
        OpResult::Columns(c) => Ok(c),
        other => unexpected("columns", other),
    }
}

pub(crate) fn expect_increment(r: OpResult) -> Result<(i64, u64)> {
    match r {
        OpResult::Increment { value, sequence } => Ok((value, sequence)),
        other => unexpected("increment", other),
    }
}

pub(crate) fn expect_scan(r: OpResult) -> Result<ScanResult> {
    match r {
        OpResult::Scan(s) => Ok(s),
        other => unexpected("scan", other),
    }
}

/// Turns a result of the wrong kind (or a typed error) into an `Err`.
pub(crate) fn unexpected<T>(wanted: &str, got: OpResult) -> Result<T> {
    match got {
        OpResult::Error(e) => Err(Error::Server(e)),
        other => Err(Error::Protocol(format!(
            "expected a {wanted} result, got {other:?}"
        ))),
    }
}

/// Public helpers to unwrap a result of a known kind (used by [`super::Client`]).
pub(crate) mod expect {
    pub(crate) use super::{
        expect_cas as cas, expect_columns as columns, expect_get as get,
        expect_get_versioned as get_versioned, expect_increment as increment,
        expect_write as write,
    };
}
