//! The state one connection shares between its reader and its calls: operations in flight
//! (backpressure), closing, the per-connection key order.
//!
//! Every call registers its operations here until it is answered. While
//! `connection_inflight_ops_max` operations are in flight the reader does not read the socket
//! ([`ConnState::may_read`]), so a client that pipelines without limit fills its own socket
//! buffers instead of the server's memory; reading resumes as replies go out. Closing stops
//! the socket reads for good; [`ConnState::settled`] says when every request read has been
//! answered (see [`super::connection`]).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::counters::{self, Counters};
use crate::net::order::KeyOrder;

/// The in-flight accounting of one connection.
pub struct ConnState {
    inflight_ops: Cell<usize>,
    inflight_ops_max: usize,
    reader_waker: RefCell<Option<Waker>>,
    idle_waker: RefCell<Option<Waker>>,
    closing: Cell<bool>,
    /// Closing, and the RPC layer has asked for bytes beyond what was read: every request the
    /// server read has been dispatched.
    starved: Cell<bool>,
    throttled: Cell<bool>,
    counters: Rc<Counters>,
    /// The order in which calls that touch the same key take effect.
    pub order: Rc<KeyOrder>,
}

impl ConnState {
    /// A connection allowed `inflight_ops_max` operations in flight.
    pub fn new(inflight_ops_max: usize, counters: Rc<Counters>) -> ConnState {
        assert!(inflight_ops_max >= 1);
        ConnState {
            inflight_ops: Cell::new(0),
            inflight_ops_max,
            reader_waker: RefCell::new(None),
            idle_waker: RefCell::new(None),
            closing: Cell::new(false),
            starved: Cell::new(false),
            throttled: Cell::new(false),
            counters,
            order: Rc::new(KeyOrder::default()),
        }
    }

    /// Registers a call of `ops` operations until the guard drops.
    pub fn begin(self: &Rc<Self>, ops: usize) -> InflightGuard {
        self.inflight_ops.set(self.inflight_ops.get() + ops);
        InflightGuard {
            conn: Rc::clone(self),
            ops,
        }
    }

    /// Operations in flight now.
    pub fn inflight_ops(&self) -> usize {
        self.inflight_ops.get()
    }

    fn end(&self, ops: usize) {
        debug_assert!(self.inflight_ops.get() >= ops);
        let now = self.inflight_ops.get().saturating_sub(ops);
        self.inflight_ops.set(now);
        if now < self.inflight_ops_max && self.throttled.get() {
            wake(&self.reader_waker);
        }
        if now == 0 {
            wake(&self.idle_waker);
        }
    }

    /// Stops reading new requests from the socket; what was read is still served.
    pub fn start_closing(&self) {
        self.closing.set(true);
        // The reader may be waiting for the socket: poll it again, so that it stops there.
        wake(&self.reader_waker);
    }

    /// Whether the connection is closing: a request dispatched now gets `shuttingDown`.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Resolves when nothing is in flight.
    #[cfg(test)]
    pub fn idle(&self) -> impl Future<Output = ()> + '_ {
        self.idle_when(false)
    }

    /// Resolves, once closing, when every request read from the socket has been dispatched
    /// and answered.
    pub fn drained(&self) -> impl Future<Output = ()> + '_ {
        self.idle_when(true)
    }

    /// Resolves, once closing, when every request read from the socket has started and been
    /// answered. capnp-rpc starts a call it has read only when its own task set next runs (it
    /// queues the call's future there), so after [`ConnState::drained`] the RPC system gets a
    /// few turns ([`SETTLE_TURNS`]) to start what it read; a call that starts meanwhile is
    /// waited for in turn.
    pub async fn settled(&self) {
        'wait: loop {
            self.drained().await;
            for _ in 0..SETTLE_TURNS {
                yield_once().await;
                if self.inflight_ops.get() > 0 {
                    continue 'wait;
                }
            }
            return;
        }
    }

    /// Whether the connection's socket may be read now. If not, the reader is woken when it
    /// may: when operations complete below the limit. A closing connection is never read
    /// again, and a reader that asks while closing has handed up everything it read.
    pub fn may_read(&self, cx: &Context<'_>) -> bool {
        // Kept while reading too: closing must be able to wake a reader waiting for the socket.
        keep_waker(&self.reader_waker, cx);
        if self.closing.get() {
            self.starve();
            return false;
        }
        if self.inflight_ops.get() >= self.inflight_ops_max {
            if !self.throttled.replace(true) {
                counters::incr(&self.counters.reads_throttled_total);
            }
            return false;
        }
        self.throttled.set(false);
        true
    }

    /// Keeps the reader's waker, so that closing wakes a reader waiting for anything (the
    /// socket, operations to complete, frame budget).
    pub fn keep_reader_waker(&self, cx: &Context<'_>) {
        keep_waker(&self.reader_waker, cx);
    }

    /// Records that the reader, while closing, has handed up every request it read.
    pub fn starve(&self) {
        if !self.starved.replace(true) {
            wake(&self.idle_waker);
        }
    }

    fn idle_when(&self, starved: bool) -> impl Future<Output = ()> + '_ {
        futures::future::poll_fn(move |cx| {
            if self.inflight_ops.get() == 0 && (!starved || self.starved.get()) {
                Poll::Ready(())
            } else {
                *self.idle_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Turns the RPC system gets, once a closing connection looks drained, to start the calls it
/// has read: it starts a queued call when its task set next runs, and each turn lets it run
/// again. Several, because a turn may end early when its tasks keep waking themselves.
const SETTLE_TURNS: usize = 16;

/// Returns `Pending` once, waking itself: the task runs again after the executor's other work,
/// and the RPC system (polled before the drain in the same task) gets a turn.
async fn yield_once() {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

fn wake(waker: &RefCell<Option<Waker>>) {
    if let Some(w) = waker.borrow_mut().take() {
        w.wake();
    }
}

/// Keeps `cx`'s waker in `slot` (cloned only when it changed).
fn keep_waker(slot: &RefCell<Option<Waker>>, cx: &Context<'_>) {
    let mut slot = slot.borrow_mut();
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// Holds a call's operations in the connection's in-flight count.
pub struct InflightGuard {
    conn: Rc<ConnState>,
    ops: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.conn.end(self.ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::frames::{FrameBudget, FrameReader};
    use futures::FutureExt;
    use futures::io::AsyncReadExt;

    #[test]
    fn the_reader_pauses_at_the_limit_and_resumes_below_it() {
        let counters = Rc::new(Counters::default());
        let state = Rc::new(ConnState::new(2, Rc::clone(&counters)));
        // One frame of 1000 words: more than the reader's 4 KiB buffer holds.
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend_from_slice(&1000u32.to_le_bytes());
        bytes.extend(std::iter::repeat_n(7u8, 8000));
        let budget = FrameBudget::new(1 << 20);
        let mut reader = FrameReader::new(&bytes[..], Rc::clone(&state), budget, 80 << 20, 4096);
        let mut buf = vec![0u8; 3000];
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 3000);
        let a = state.begin(1);
        let b = state.begin(1);
        // What is buffered is still handed up; the socket is not read.
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 1096);
        assert!(reader.read(&mut buf).now_or_never().is_none());
        assert!(reader.read(&mut buf).now_or_never().is_none());
        // One throttling episode, however often it is polled.
        assert_eq!(counters.reads_throttled_total.get(), 1);
        drop(a);
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 3000);
        drop(b);
        assert!(state.idle().now_or_never().is_some());
        state.start_closing();
        assert!(
            state.drained().now_or_never().is_none(),
            "the reader has not asked for more yet"
        );
        // What was read is still handed up (the rest of the frame); then nothing more.
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 912);
        assert!(state.drained().now_or_never().is_none());
        assert!(reader.read(&mut buf).now_or_never().is_none());
        assert!(state.drained().now_or_never().is_some());
    }
}
