//! The `CoreKv` Cap'n Proto interface, served per connection.
//!
//! Each method decodes its parameters into [`corekv_proto::Op`]s when the call is dispatched,
//! enters the connection's key order ([`crate::net::order`]: calls touching the same key take
//! effect in the order sent), waits for its turn, hands the operations to the shard (which
//! routes them) and encodes the results. User errors are typed results; an `Err` here (an RPC
//! exception) means the request itself was malformed.
//!
//! Operations that write run in a detached task: if the client disconnects mid-call, the
//! write still completes (or fails) as a whole inside the engine instead of being cancelled
//! half-way; its reply is then dropped. Each such task is counted in the shard's
//! `work_in_flight`, which shutdown waits for.

use std::cell::Cell;
use std::rc::Rc;

use capnp::capability::Rc as CapRc;
use capnp::struct_list;
use corekv_proto::corekv_capnp::{core_kv, op};
use corekv_proto::{ErrorCode, Op, OpError, OpResult, codec};

use crate::counters;
use crate::metrics::{Method, OpKind};
use crate::net::conn_state::ConnState;
use crate::net::order::{Access, Turn};
use crate::shard::Shard;
use crate::shard::local::{PlainWrites, RequestOp};

/// The bootstrap capability of one connection.
pub struct CoreKvService {
    shard: Rc<Shard>,
    conn: Rc<ConnState>,
}

impl CoreKvService {
    /// The service for one connection of `shard`.
    pub fn new(shard: Rc<Shard>, conn: Rc<ConnState>) -> CoreKvService {
        CoreKvService { shard, conn }
    }

    fn count_call(&self, ops: usize) {
        let c = &self.shard.counters;
        counters::incr(&c.calls_total);
        counters::add(&c.ops_total, ops as u64);
    }

    /// Runs a `batch` call's [`PlainWrites`] in a detached task ([`run_detached`], as
    /// [`run_ops`] runs writes): each operation gets its own result.
    async fn run_plain_writes<H: 'static>(
        &self,
        w: PlainWrites,
        held: H,
    ) -> Result<Result<Vec<OpResult>, Option<OpError>>, capnp::Error> {
        let c = &self.shard.counters;
        let count = w.kinds.len();
        let puts = w.kinds.iter().filter(|&&k| k == OpKind::Put).count();
        counters::add(&c.put_ops_total, puts as u64);
        counters::add(&c.delete_ops_total, (count - puts) as u64);
        let write = w.write;
        let out = run_detached(&self.shard, |shard| async move {
            let _held = held;
            shard.execute_plain_writes(write, count).await
        })
        .await?;
        debug_assert_eq!(out.len(), count);
        let errors = out
            .iter()
            .filter(|r| matches!(r, OpResult::Error(_)))
            .count();
        counters::add(&c.op_errors_total, errors as u64);
        self.shard.metrics.count_errors(w.kinds, &out);
        Ok(Ok(out))
    }

    fn count_op(&self, op: &Op) {
        let c = &self.shard.counters;
        counters::incr(match op {
            Op::Get { .. } => &c.get_ops_total,
            Op::Put { .. } => &c.put_ops_total,
            Op::Delete { .. } => &c.delete_ops_total,
            Op::Cas(_) => &c.cas_ops_total,
            Op::Scan(_) => &c.scan_ops_total,
            Op::PutEntity(_) => &c.put_entity_ops_total,
            Op::UpdateColumns(_) => &c.update_columns_ops_total,
            Op::GetColumns(_) => &c.get_columns_ops_total,
            Op::Increment(_) => &c.increment_ops_total,
        });
    }
}

/// Runs `ops` on the shard; writes in a detached task that outlives a vanished caller.
///
/// `held` (the call's place in its connection's order and its in-flight count) is kept until
/// the operations' effect is complete: for writes, in the detached task, so that a call the
/// client cancels still holds back the calls behind it until its write is done.
async fn run_ops<H: 'static>(
    shard: &Rc<Shard>,
    ops: Vec<Op>,
    held: H,
) -> Result<Vec<OpResult>, capnp::Error> {
    if !ops.iter().any(Op::is_write) {
        let out = if ops.len() == 1 {
            let op = ops.into_iter().next().ok_or_else(lost)?;
            vec![shard.execute_one(op).await]
        } else {
            shard.execute(ops).await
        };
        drop(held);
        return Ok(out);
    }
    run_detached(shard, |shard| async move {
        let _held = held;
        if ops.len() == 1 {
            match ops.into_iter().next() {
                Some(op) => vec![shard.execute_one(op).await],
                None => Vec::new(),
            }
        } else {
            shard.execute(ops).await
        }
    })
    .await
}

/// Runs `work` in a detached task counted in the shard's `work_in_flight` (shutdown waits for
/// it), so that a write outlives a caller that vanishes; returns its result.
async fn run_detached<T, F, Fut>(shard: &Rc<Shard>, work: F) -> Result<T, capnp::Error>
where
    T: 'static,
    F: FnOnce(Rc<Shard>) -> Fut,
    Fut: std::future::Future<Output = T> + 'static,
{
    let guard = WorkGuard::new(&shard.work_in_flight);
    let task = work(Rc::clone(shard));
    glommio::spawn_local(async move {
        let _guard = guard;
        task.await
    })
    .detach()
    .await
    .ok_or_else(lost)
}

/// The answer to a request dispatched while its connection closes: it is not run.
fn shutting_down() -> OpError {
    OpError::new(
        ErrorCode::ShuttingDown,
        "the server is stopping; the operation was not applied",
    )
}

fn lost() -> capnp::Error {
    capnp::Error::failed("the server lost this request's result; its outcome is unknown".into())
}

/// Counts a detached task in the shard's `work_in_flight` while it lives.
pub struct WorkGuard {
    gauge: Rc<Cell<u64>>,
}

impl WorkGuard {
    /// Adds one to `gauge` until dropped.
    pub fn new(gauge: &Rc<Cell<u64>>) -> WorkGuard {
        gauge.set(gauge.get() + 1);
        WorkGuard {
            gauge: Rc::clone(gauge),
        }
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        counters::decr(&self.gauge);
    }
}

/// Reads every operation of `list` once. (Once: Cap'n Proto counts every byte read against
/// the message's traversal limit, which is also the frame size limit, so a second pass over a
/// frame of maximal size would fail.)
fn read_ops<'a>(
    list: struct_list::Reader<'a, op::Owned>,
) -> Result<Vec<RequestOp<'a>>, capnp::Error> {
    let mut ops = Vec::with_capacity(list.len() as usize);
    for r in list.iter() {
        ops.push(match r.which() {
            Ok(op::Put(p)) => {
                let p = p?;
                RequestOp::Put {
                    key: p.get_key()?,
                    value: p.get_value()?,
                    ttl_ms: p.get_ttl_ms(),
                }
            }
            Ok(op::Delete(d)) => RequestOp::Delete { key: d?.get_key()? },
            _ => RequestOp::Other(codec::read_op(r)?),
        });
    }
    Ok(ops)
}

async fn run_one<H: 'static>(shard: &Rc<Shard>, op: Op, held: H) -> Result<OpResult, capnp::Error> {
    run_ops(shard, vec![op], held).await?.pop().ok_or_else(lost)
}

/// What a result that would take a `batch` reply past `reply_max` bytes gets instead (the reply
/// would then reach `wanted` bytes). The operation itself ran: a write in the batch is applied.
fn reply_too_large(reply_max: usize, wanted: usize) -> OpResult {
    OpResult::Error(OpError {
        code: ErrorCode::BatchTooLarge,
        message: format!(
            "the batch's reply would reach {wanted} bytes, over its limit of {reply_max}; \
             repeat this operation in another batch"
        ),
        limit: reply_max as u64,
        actual: wanted as u64,
        leader: None,
    })
}

/// Whether a result carries data back (a value, scan entries, a failed CAS's current value):
/// only those are refused when a reply grows too large.
fn carries_data(r: &OpResult) -> bool {
    match r {
        OpResult::Get(v) => v.is_some(),
        OpResult::Scan(s) => !s.entries.is_empty(),
        OpResult::Cas(c) => c.current.is_some(),
        OpResult::Columns(c) => c.as_ref().is_some_and(|c| !c.columns.is_empty()),
        OpResult::Error(_) | OpResult::Write { .. } | OpResult::Increment { .. } => false,
    }
}

impl CoreKvService {
    /// Serves a single-operation method: `op` decoded from its parameters (when the call is
    /// dispatched, so that it enters the connection's order in arrival order), `reply` writes
    /// the result into the method's results.
    fn call_one(
        self: CapRc<Self>,
        method: Method,
        op: Result<Op, capnp::Error>,
        reply: impl FnOnce(&OpResult) + 'static,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let timer = self.shard.metrics.start(method);
        let guard = self.conn.begin(1);
        self.count_call(1);
        let closing = self.conn.is_closing();
        let entered = op.map(|op| {
            let access = if op.is_write() {
                Access::Write
            } else {
                Access::Read
            };
            let scans = matches!(op, Op::Scan(_));
            let turn = self.conn.order.enter(op.key(), access, scans);
            (op, turn)
        });
        async move {
            let (op, mut turn) = entered?;
            turn.ready().await;
            self.count_op(&op);
            let kind = OpKind::of(&op);
            let result = if closing {
                counters::incr(&self.shard.counters.op_errors_total);
                OpResult::Error(shutting_down())
            } else {
                run_one(&self.shard, op, (turn, guard)).await?
            };
            reply(&result);
            self.shard.metrics.count_errors([kind], [&result]);
            self.shard.metrics.finish(timer);
            Ok(())
        }
    }

    /// Reads a `batch` call's operations and enters it in the connection's order.
    fn decode_batch(
        &self,
        params: &core_kv::BatchParams,
        len: usize,
    ) -> Result<(BatchWork, Option<Turn>), capnp::Error> {
        let limits = &self.shard.limits;
        if self.conn.is_closing() {
            return Ok((BatchWork::Refused(Some(shutting_down())), None));
        }
        if len > limits.batch_ops_max {
            return Ok((BatchWork::Refused(limits.check_batch(len, 0).err()), None));
        }
        let read = read_ops(params.get()?.get_ops()?)?;
        let keys = read.iter().filter_map(RequestOp::key);
        let access = if read.iter().any(RequestOp::is_write) {
            Access::Write
        } else {
            Access::Read
        };
        let scans = read
            .iter()
            .any(|op| matches!(op, RequestOp::Other(Op::Scan(_))));
        let turn = self.conn.order.enter(keys, access, scans);
        let work = match self.shard.plain_write_call(&read) {
            Some(w) => BatchWork::Plain(w),
            None => BatchWork::Ops(read.into_iter().map(RequestOp::into_op).collect()),
        };
        Ok((work, Some(turn)))
    }
}

/// What a `batch` call runs.
enum BatchWork {
    /// Over a request limit: every result is this error (`None`: the generic one).
    Refused(Option<OpError>),
    /// Puts and deletes as one write: a store write, or in a cluster one Raft entry.
    Plain(PlainWrites),
    /// The general path.
    Ops(Vec<Op>),
}

impl core_kv::Server for CoreKvService {
    fn get(
        self: CapRc<Self>,
        params: core_kv::GetParams,
        mut results: core_kv::GetResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params.get().and_then(|p| {
            Ok(Op::Get {
                key: p.get_key()?.to_vec(),
            })
        });
        self.call_one(Method::Get, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn put(
        self: CapRc<Self>,
        params: core_kv::PutParams,
        mut results: core_kv::PutResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params.get().and_then(|p| {
            Ok(Op::Put {
                key: p.get_key()?.to_vec(),
                value: p.get_value()?.to_vec(),
                ttl_ms: p.get_ttl_ms(),
            })
        });
        self.call_one(Method::Put, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn delete(
        self: CapRc<Self>,
        params: core_kv::DeleteParams,
        mut results: core_kv::DeleteResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params.get().and_then(|p| {
            Ok(Op::Delete {
                key: p.get_key()?.to_vec(),
            })
        });
        self.call_one(Method::Delete, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn cas(
        self: CapRc<Self>,
        params: core_kv::CasParams,
        mut results: core_kv::CasResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params
            .get()
            .and_then(|p| Ok(Op::Cas(codec::read_cas_op(p.get_op()?)?)));
        self.call_one(Method::Cas, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn scan(
        self: CapRc<Self>,
        params: core_kv::ScanParams,
        mut results: core_kv::ScanResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params
            .get()
            .and_then(|p| Ok(Op::Scan(codec::read_scan_op(p.get_op()?)?)));
        self.call_one(Method::Scan, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn put_entity(
        self: CapRc<Self>,
        params: core_kv::PutEntityParams,
        mut results: core_kv::PutEntityResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params
            .get()
            .and_then(|p| Ok(Op::PutEntity(codec::read_put_entity_op(p.get_op()?)?)));
        self.call_one(Method::PutEntity, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn update_columns(
        self: CapRc<Self>,
        params: core_kv::UpdateColumnsParams,
        mut results: core_kv::UpdateColumnsResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params.get().and_then(|p| {
            Ok(Op::UpdateColumns(codec::read_update_columns_op(
                p.get_op()?,
            )?))
        });
        self.call_one(Method::UpdateColumns, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn get_columns(
        self: CapRc<Self>,
        params: core_kv::GetColumnsParams,
        mut results: core_kv::GetColumnsResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params
            .get()
            .and_then(|p| Ok(Op::GetColumns(codec::read_get_columns_op(p.get_op()?)?)));
        self.call_one(Method::GetColumns, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn increment(
        self: CapRc<Self>,
        params: core_kv::IncrementParams,
        mut results: core_kv::IncrementResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let op = params
            .get()
            .and_then(|p| Ok(Op::Increment(codec::read_increment_op(p.get_op()?)?)));
        self.call_one(Method::Increment, op, move |r| {
            codec::write_result(results.get().init_result(), r)
        })
    }

    fn batch(
        self: CapRc<Self>,
        params: core_kv::BatchParams,
        mut results: core_kv::BatchResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let len = params
            .get()
            .and_then(|p| p.get_ops())
            .map_or(0, |l| l.len() as usize);
        let timer = self.shard.metrics.start(Method::Batch);
        let guard = self.conn.begin(len.max(1));
        self.count_call(len);
        counters::incr(&self.shard.counters.batch_calls_total);
        let decoded = self.decode_batch(&params, len);
        drop(params);
        async move {
            let (work, mut turn) = decoded?;
            if let Some(turn) = &mut turn {
                turn.ready().await;
            }
            // Held until the operations' effect is complete (see `run_ops`).
            let mut held = Some((turn, guard));
            let limits = &self.shard.limits;
            let outcome = match work {
                BatchWork::Refused(e) => Err(e),
                BatchWork::Plain(w) => self.run_plain_writes(w, held.take()).await?,
                BatchWork::Ops(ops) => {
                    for op in &ops {
                        self.count_op(op);
                    }
                    let bytes = ops.iter().map(Op::payload_bytes).sum();
                    let kinds: Vec<OpKind> = ops.iter().map(OpKind::of).collect();
                    match limits.check_batch(len, bytes) {
                        Ok(()) => {
                            let out = run_ops(&self.shard, ops, held.take()).await?;
                            self.shard.metrics.count_errors(kinds, &out);
                            Ok(out)
                        }
                        Err(e) => Err(Some(e)),
                    }
                }
            };
            drop(held);
            let out = match outcome {
                Ok(out) => out,
                Err(e) => {
                    let e = e.unwrap_or_else(|| OpError::new(ErrorCode::BatchTooLarge, "batch"));
                    counters::add(&self.shard.counters.op_errors_total, len as u64);
                    vec![OpResult::Error(e); len]
                }
            };
            let mut list = results.get().init_results(len as u32);
            let reply_max = self.shard.limits.reply_bytes_max;
            let mut reply_bytes = 0usize;
            for (i, r) in out.iter().enumerate() {
                let b = list.reborrow().get(i as u32);
                let wanted = reply_bytes + codec::result_wire_bytes(r);
                if wanted > reply_max && carries_data(r) {
                    let e = reply_too_large(reply_max, wanted);
                    reply_bytes += codec::result_wire_bytes(&e);
                    codec::write_result(b, &e);
                } else {
                    reply_bytes = wanted;
                    codec::write_result(b, r);
                }
            }
            self.shard.metrics.finish(timer);
            Ok(())
        }
    }

    fn topology(
        self: CapRc<Self>,
        _params: core_kv::TopologyParams,
        mut results: core_kv::TopologyResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        self.count_call(0);
        let shard = Rc::clone(&self.shard);
        async move {
            let topology = shard.topology().await;
            codec::write_topology(results.get().init_topology(), &topology);
            Ok(())
        }
    }

    fn server_info(
        self: CapRc<Self>,
        _params: core_kv::ServerInfoParams,
        mut results: core_kv::ServerInfoResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        self.count_call(0);
        codec::write_server_info(results.get().init_info(), &self.shard.info);
        std::future::ready(Ok(()))
    }

    fn transfer_leader(
        self: CapRc<Self>,
        params: core_kv::TransferLeaderParams,
        mut results: core_kv::TransferLeaderResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let guard = self.conn.begin(1);
        self.count_call(0);
        async move {
            let p = params.get()?;
            let (shard, to) = (p.get_shard(), p.get_to());
            if let Err(e) = self.shard.transfer_leader(shard, to).await {
                codec::write_error(results.get().init_error(), &e);
            }
            drop(guard);
            Ok(())
        }
    }

    fn stats(
        self: CapRc<Self>,
        _params: core_kv::StatsParams,
        mut results: core_kv::StatsResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let guard = self.conn.begin(1);
        self.count_call(0);
        async move {
            let all = self.shard.gather_stats().await;
            let mut list = results.get().init_stats().init_shards(all.len() as u32);
            for (i, s) in all.iter().enumerate() {
                codec::write_shard_stats(list.reborrow().get(i as u32), s);
            }
            drop(guard);
            Ok(())
        }
    }
}
