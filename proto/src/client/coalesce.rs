//! Coalescing: single operations issued concurrently towards one shard travel in one `batch`
//! call.
//!
//! A capnp-rpc call costs the server about 10 µs of CPU whatever it carries, so one call per
//! operation caps a connection near 100k operations/s. Here each operation joins a queue; a
//! flush task, started after the current task yields once (so that every task made ready by the
//! same wake-up can join), sends queued operations as one `batch`. At most
//! `batch_calls_in_flight_max` batches are outstanding per shard: under load operations pile up
//! while those are answered and leave together in the next batches, so batches grow with load
//! and an idle client still sends each operation at once.
//!
//! **Several calls in flight.** A burst (say 50 tasks issuing 16 operations each) is not sent as
//! one 800-operation call but split evenly over the free call slots, in calls of at least
//! `batch_ops_split_min` operations. With one big call, client and server take turns: the
//! server idles while the client encodes the call and decodes the reply, the client idles while
//! the server executes it, and each side goes to sleep (a wake-up costs tens of µs, more on an
//! idle VM) once per burst. With several calls, the server executes one while the client
//! encodes the next and decodes the previous reply, and tasks whose operations came back issue
//! new ones while the rest are still being served.
//!
//! **Per-key order.** Calls in flight on one connection may complete in any order (a write
//! waits for the WAL; a read behind it does not), so an operation is never sent while an
//! earlier operation on the same key is still unanswered in another call: it stays queued (and
//! so does every later operation on that key) until that call returns. Inside one call the
//! server applies operations on one key in list order. So a client's operations on one key
//! apply in the order they were issued, however they are split. Keys are tracked by a 64-bit
//! hash: a collision only holds an operation back a little longer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
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
    /// A queue is split over several calls in flight only into calls of at least this many
    /// operations (each call costs the server a fixed ~10 µs; a few dozen operations make
    /// that small). `usize::MAX`: never split, one call takes up to `batch_ops_max`.
    pub batch_ops_split_min: usize,
}

impl Default for CoalesceLimits {
    fn default() -> Self {
        CoalesceLimits {
            batch_ops_max: 1024,
            batch_calls_in_flight_max: 8,
            batch_ops_split_min: 64,
        }
    }
}

impl CoalesceLimits {
    /// How many operations the next call takes when `queued` wait and `free_calls` call slots
    /// are free: the queue spread evenly over as many calls as it fills with at least
    /// `batch_ops_split_min` each, at most `batch_ops_max`.
    pub fn next_batch_ops(&self, queued: usize, free_calls: usize) -> usize {
        let calls = (queued / self.batch_ops_split_min.max(1)).clamp(1, free_calls.max(1));
        queued.div_ceil(calls).clamp(1, self.batch_ops_max)
    }
}

/// Maps of key hashes need no second hash: the 64-bit key hash (keyed `RandomState`) is used
/// as it is.
pub type KeyHashState = BuildHasherDefault<KeyHashHasher>;

/// The hasher of [`KeyHashState`]: passes a `u64` through.
#[derive(Default)]
pub struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in, just in case.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Waiting {
    /// Shared with the caller, which keeps it to send again after a refusal (no copy).
    op: Rc<Op>,
    /// Hash of the operation's key (0 for keyless operations, which never wait for others).
    key_hash: Option<u64>,
    reply: oneshot::Sender<Result<OpResult>>,
}

/// The coalescing queue in front of one shard's connection.
pub(crate) struct Coalescer {
    connection: Connection,
    limits: CoalesceLimits,
    queue: RefCell<Vec<Waiting>>,
    /// Key hashes of the operations in calls now in flight, with how many each.
    keys_in_flight: RefCell<HashMap<u64, u32, KeyHashState>>,
    hasher: RandomState,
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
        assert!(
            limits.batch_ops_max >= 1
                && limits.batch_calls_in_flight_max >= 1
                && limits.batch_ops_split_min >= 1
        );
        Rc::new(Coalescer {
            connection,
            limits,
            queue: RefCell::new(Vec::new()),
            keys_in_flight: RefCell::new(HashMap::default()),
            hasher: RandomState::new(),
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
    pub(crate) async fn submit(self: &Rc<Self>, op: Rc<Op>) -> Result<OpResult> {
        let (reply, result) = oneshot::channel();
        let key_hash = op.key().map(|k| self.hasher.hash_one(k));
        self.queue.borrow_mut().push(Waiting {
            op,
            key_hash,
            reply,
        });
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

    /// Takes the next call's operations off the queue, in queue order, skipping (and keeping
    /// queued, in order) every operation whose key has an earlier operation in flight or held
    /// back.
    fn take_batch(&self) -> Vec<Waiting> {
        let mut queue = self.queue.borrow_mut();
        let free = self
            .limits
            .batch_calls_in_flight_max
            .saturating_sub(self.calls_in_flight.get());
        let want = self.limits.next_batch_ops(queue.len(), free);
        let mut in_flight = self.keys_in_flight.borrow_mut();
        if in_flight.is_empty() && queue.len() <= want {
            // Nothing to wait for: everything goes.
            for h in queue.iter().filter_map(|w| w.key_hash) {
                *in_flight.entry(h).or_insert(0) += 1;
            }
            return std::mem::take(&mut *queue);
        }
        let mut taken = Vec::with_capacity(want.min(queue.len()));
        let mut kept = Vec::with_capacity(queue.len().saturating_sub(want));
        // The keys seen in this pass: true = in this call, false = held back (so every later
        // operation on it is held too).
        let mut seen: HashMap<u64, bool, KeyHashState> = HashMap::default();
        let mut rest = queue.drain(..);
        for w in rest.by_ref() {
            let take = match w.key_hash {
                None => true,
                Some(h) => match seen.get(&h) {
                    Some(&in_this_call) => in_this_call,
                    None => !in_flight.contains_key(&h),
                },
            };
            if let Some(h) = w.key_hash {
                seen.insert(h, take);
            }
            if take {
                taken.push(w);
                if taken.len() >= want {
                    break;
                }
            } else {
                kept.push(w);
            }
        }
        kept.extend(rest);
        *queue = kept;
        for h in taken.iter().filter_map(|w| w.key_hash) {
            *in_flight.entry(h).or_insert(0) += 1;
        }
        taken
    }

    fn release_keys(&self, hashes: impl Iterator<Item = u64>) {
        let mut in_flight = self.keys_in_flight.borrow_mut();
        for h in hashes {
            if let Some(n) = in_flight.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(&h);
                }
            }
        }
    }

    async fn send_one_batch(self: Rc<Self>) {
        let waiting = self.take_batch();
        if waiting.is_empty() {
            return;
        }
        self.calls_in_flight.set(self.calls_in_flight.get() + 1);
        // More queued: let another call go out in parallel.
        self.schedule_flush();
        let mut ops = Vec::with_capacity(waiting.len());
        let mut replies = Vec::with_capacity(waiting.len());
        let mut hashes = Vec::with_capacity(waiting.len());
        for w in waiting {
            ops.push(w.op);
            replies.push(w.reply);
            if let Some(h) = w.key_hash {
                hashes.push(h);
            }
        }
        self.batches_sent.set(self.batches_sent.get() + 1);
        self.ops_sent.set(self.ops_sent.get() + ops.len() as u64);
        let outcome = self.connection.batch(&ops).await;
        drop(ops);
        self.calls_in_flight.set(self.calls_in_flight.get() - 1);
        self.release_keys(hashes.into_iter());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, split_min: usize) -> CoalesceLimits {
        CoalesceLimits {
            batch_ops_max: max,
            batch_calls_in_flight_max: 8,
            batch_ops_split_min: split_min,
        }
    }

    #[test]
    fn a_burst_is_spread_evenly_over_the_free_calls() {
        let l = limits(1024, 64);
        // 50 clients x 16: eight calls of 100.
        assert_eq!(l.next_batch_ops(800, 8), 100);
        // Fewer free calls: bigger calls.
        assert_eq!(l.next_batch_ops(800, 2), 400);
        // Not enough for two calls of 64: one call takes everything.
        assert_eq!(l.next_batch_ops(100, 8), 100);
        assert_eq!(l.next_batch_ops(10, 8), 10);
        // Three calls of at least 64 from 200.
        assert_eq!(l.next_batch_ops(200, 8), 67);
        // Never above the most per call, never zero.
        assert_eq!(l.next_batch_ops(100_000, 8), 1024);
        assert_eq!(l.next_batch_ops(0, 8), 1);
        assert_eq!(l.next_batch_ops(50, 0), 50);
        // Splitting off: one call of up to batch_ops_max.
        let never = limits(1024, usize::MAX);
        assert_eq!(never.next_batch_ops(800, 8), 800);
        assert_eq!(never.next_batch_ops(5000, 8), 1024);
    }
}
