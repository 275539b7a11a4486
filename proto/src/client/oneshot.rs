//! A single-threaded one-shot channel: the coalescer hands each waiting operation its result
//! through one. `futures::channel::oneshot` would do, but it is built for threads (an `Arc`,
//! atomics and a lock per message); everything here stays on one thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
    sender_gone: Cell<bool>,
}

/// The sending half; dropping it unsent makes the receiver resolve to `Err(Canceled)`.
pub(crate) struct Sender<T>(Rc<Slot<T>>);

/// The receiving half, a future of the value.
pub(crate) struct Receiver<T>(Rc<Slot<T>>);

/// The sender was dropped without sending.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Canceled;

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(Slot {
        value: RefCell::new(None),
        waker: RefCell::new(None),
        sender_gone: Cell::new(false),
    });
    (Sender(Rc::clone(&slot)), Receiver(slot))
}

impl<T> Sender<T> {
    /// Delivers `value` (dropped if the receiver is gone).
    pub(crate) fn send(self, value: T) {
        if Rc::strong_count(&self.0) > 1 {
            *self.0.value.borrow_mut() = Some(value);
        }
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.sender_gone.set(true);
        if let Some(w) = self.0.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(v) = self.0.value.borrow_mut().take() {
            return Poll::Ready(Ok(v));
        }
        if self.0.sender_gone.get() {
            return Poll::Ready(Err(Canceled));
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn delivers_once_and_reports_a_dropped_sender() {
        let (tx, mut rx) = channel::<u32>();
        assert!((&mut rx).now_or_never().is_none());
        tx.send(7);
        assert_eq!(rx.now_or_never(), Some(Ok(7)));
        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(rx.now_or_never(), Some(Err(Canceled)));
        // Sending to a dropped receiver is fine.
        let (tx, rx) = channel::<u32>();
        drop(rx);
        tx.send(1);
    }
}
