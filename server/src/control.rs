//! Lifecycle coordination.
//!
//! [`Control`] is the one piece of state shared by every thread: a stop request (set by the
//! signal thread, or by the launcher when a shard fails) and a count of shards that have
//! drained their connections. It is touched only at start and stop, never on the request path;
//! shards poll it on a timer, which keeps the shutdown path free of cross-thread wake-ups.
//!
//! [`Latch`] is a shard-local, set-once event (for example "this shard is stopping") that any
//! number of tasks can wait on.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often shards look at [`Control`] while running and while stopping.
pub const CONTROL_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// State shared by all threads of one server.
#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    drained: AtomicUsize,
    shard_count: usize,
}

impl Control {
    /// A running server of `shard_count` shards.
    pub fn new(shard_count: usize) -> Control {
        Control {
            stop: AtomicBool::new(false),
            drained: AtomicUsize::new(0),
            shard_count,
        }
    }

    /// Asks every shard to stop: stop accepting, finish in-flight requests, close storage.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Records that one shard has no connections left (so it sends no more cross-shard
    /// requests). Each shard calls this exactly once, however it stops.
    pub fn mark_drained(&self) {
        let before = self.drained.fetch_add(1, Ordering::SeqCst);
        debug_assert!(before < self.shard_count);
    }

    /// Whether every shard has drained: nobody will send another cross-shard request.
    pub fn all_drained(&self) -> bool {
        self.drained.load(Ordering::SeqCst) >= self.shard_count
    }
}

/// Waits on the current glommio executor until `done()` holds or `deadline` passes; returns
/// whether `done()` held.
pub async fn poll_until(mut done: impl FnMut() -> bool, deadline: Option<Instant>) -> bool {
    loop {
        if done() {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        glommio::timer::sleep(CONTROL_POLL_INTERVAL).await;
    }
}

/// A set-once, shard-local event.
#[derive(Debug, Default)]
pub struct Latch {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Latch {
    /// Sets the latch and wakes every waiter. Idempotent.
    pub fn set(&self) {
        if self.set.replace(true) {
            return;
        }
        for w in self.waiters.take() {
            w.wake();
        }
    }

    /// Whether the latch is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Resolves once the latch is set.
    pub fn wait(&self) -> LatchWait<'_> {
        LatchWait { latch: self }
    }
}

/// Future returned by [`Latch::wait`].
#[derive(Debug)]
pub struct LatchWait<'a> {
    latch: &'a Latch,
}

impl Future for LatchWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.latch.set.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.latch.waiters.borrow_mut();
        // A waiter polled many times must not grow the list without bound.
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn latch_wakes_waiters_once_set() {
        let latch = Latch::default();
        let mut w = Box::pin(latch.wait());
        assert!(w.as_mut().now_or_never().is_none());
        assert!(!latch.is_set());
        latch.set();
        latch.set();
        assert!(w.now_or_never().is_some());
        assert!(latch.wait().now_or_never().is_some());
    }

    #[test]
    fn drained_counts_every_shard() {
        let c = Control::new(2);
        assert!(!c.stop_requested());
        c.request_stop();
        assert!(c.stop_requested());
        c.mark_drained();
        assert!(!c.all_drained());
        c.mark_drained();
        assert!(c.all_drained());
    }
}
