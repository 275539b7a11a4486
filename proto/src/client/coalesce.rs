//! Coalescing: single operations issued concurrently towards one shard travel in one `batch`
//! call.
//!
//! A capnp-rpc call costs the server about 10 µs of CPU whatever it carries, so one call per
//! operation caps a connection near 100k operations/s. Here each operation joins a queue; a
//! flush task, started after the current task yields once (so that every task made ready by the
//! same wake-up can join), sends the whole queue as one `batch`. At most
//! `batch_calls_in_flight_max` batches are outstanding per shard: under load operations pile up
//! while those are answered and leave together in the next batch, so batches grow with load and
//! an idle client still sends each operation at once.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::connection::Connection;
use super::oneshot;
use super::runtime::{LocalBoxFuture, yield_now};
use crate::error::{Error, Result};
use crate::ops::{Op, OpResult};

/// Limits of one shard's coalescing queue.
#[derive(Debug, Clone, Copy)]
pub struct CoalesceLimits {
    /// Most operations in one `batch` call.
    pub batch_ops_max: usize,
    /// Most `batch` calls outstanding on one connection.
    pub batch_calls_in_flight_max: usize,
}

struct Waiting {
    op: Op,
    reply: oneshot::Sender<Result<OpResult>>,
}

/// The coalescing queue in front of one shard's connection.
pub(crate) struct Coalescer {
    connection: Connection,
    limits: CoalesceLimits,
    queue: RefCell<Vec<Waiting>>,
    calls_in_flight: Cell<usize>,
    flush_scheduled: Cell<bool>,
    spawn: Rc<dyn Fn(LocalBoxFuture<()>)>,
    /// Batches sent and operations carried, for callers that want to see the batching work.
    batches_sent: Cell<u64>,
    ops_sent: Cell<u64>,
}

impl Coalescer {
    pub(crate) fn new(
        connection: Connection,
        limits: CoalesceLimits,
        spawn: Rc<dyn Fn(LocalBoxFuture<()>)>,
    ) -> Rc<Coalescer> {
        assert!(limits.batch_ops_max >= 1 && limits.batch_calls_in_flight_max >= 1);
        Rc::new(Coalescer {
            connection,
            limits,
            queue: RefCell::new(Vec::new()),
            calls_in_flight: Cell::new(0),
            flush_scheduled: Cell::new(false),
            spawn,
            batches_sent: Cell::new(0),
            ops_sent: Cell::new(0),
        })
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// `(batch calls sent, operations they carried)` so far.
    pub(crate) fn sent(&self) -> (u64, u64) {
        (self.batches_sent.get(), self.ops_sent.get())
    }

    /// Queues `op` and waits for its result.
    pub(crate) async fn submit(self: &Rc<Self>, op: Op) -> Result<OpResult> {
        let (reply, result) = oneshot::channel();
        self.queue.borrow_mut().push(Waiting { op, reply });
        self.schedule_flush();
        result.await.unwrap_or_else(|_| {
            Err(Error::Protocol(
                "the connection's batch task ended without answering".to_string(),
            ))
        })
    }

    /// Starts a flush task unless one is pending, the queue is empty, or the connection already
    /// has the most batches in flight (then the next reply starts it).
    fn schedule_flush(self: &Rc<Self>) {
        if self.flush_scheduled.get()
            || self.calls_in_flight.get() >= self.limits.batch_calls_in_flight_max
            || self.queue.borrow().is_empty()
        {
            return;
        }
        self.flush_scheduled.set(true);
        let me = Rc::clone(self);
        (self.spawn)(Box::pin(async move {
            yield_now().await;
            me.flush_scheduled.set(false);
            me.send_one_batch().await;
        }));
    }

    async fn send_one_batch(self: Rc<Self>) {
        let waiting: Vec<Waiting> = {
            let mut queue = self.queue.borrow_mut();
            let n = queue.len().min(self.limits.batch_ops_max);
            queue.drain(..n).collect()
        };
        if waiting.is_empty() {
            return;
        }
        self.calls_in_flight.set(self.calls_in_flight.get() + 1);
        // More than one batch's worth queued: let another call go out in parallel.
        self.schedule_flush();
        let (ops, replies): (Vec<Op>, Vec<_>) =
            waiting.into_iter().map(|w| (w.op, w.reply)).unzip();
        self.batches_sent.set(self.batches_sent.get() + 1);
        self.ops_sent.set(self.ops_sent.get() + ops.len() as u64);
        let outcome = self.connection.batch(&ops).await;
        drop(ops);
        self.calls_in_flight.set(self.calls_in_flight.get() - 1);
        match outcome {
            Ok(results) => {
                debug_assert_eq!(results.len(), replies.len());
                for (reply, result) in replies.into_iter().zip(results) {
                    // The caller may have stopped waiting; that is fine.
                    reply.send(Ok(result));
                }
            }
            Err(e) => {
                for reply in replies {
                    reply.send(Err(e.duplicate()));
                }
            }
        }
        self.schedule_flush();
    }
}
