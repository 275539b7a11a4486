//! Per-connection ordering: calls on one connection that touch the same key take effect in the
//! order they were sent.
//!
//! capnp-rpc dispatches a connection's calls in the order they arrive, but runs them
//! concurrently: a `put` waits for its WAL write while a `get` of the same key sent right after
//! it reads the memtable at once and would return the old value. So every call enters a
//! [`KeyOrder`] when it is dispatched (synchronously, hence in arrival order) and gets a
//! [`Turn`]: the gates of earlier calls it must wait for, and a gate of its own that later calls
//! touching its keys wait for. The gate opens when the turn drops, after the call's effect is
//! complete (a write acknowledged, a read answered).
//!
//! Who gets a gate: a call that writes, and a read that had to wait (a write sent after it must
//! not overtake it while it waits). A read that did not wait needs none: it takes its view of
//! the data when it first runs, before any later call of the connection starts. A scan touches
//! a range, so it waits for every gate of the connection, and one that waited holds a gate every
//! later call waits for.
//!
//! Cost when keys differ: a keyed hash per key and a map insert and removal per written key; a
//! read on a connection with nothing pending does no hashing at all.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::task::{Poll, Waker};

use corekv_proto::client::KeyHashState;

/// Opens once; tasks waiting for it are woken then. A gate opened by a call that was dropped
/// before its own turn came (a cancelled call) passes on what that call was waiting for:
/// it counts as open only once those are.
#[derive(Default)]
struct Gate {
    open: Cell<bool>,
    after: RefCell<Vec<Rc<Gate>>>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    fn open(&self, after: Vec<Rc<Gate>>) {
        *self.after.borrow_mut() = after;
        self.open.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// The gate a follower of this one must wait for now, if any. Iterative: each gate
    /// opened by a cancelled call adds a level, and a client could cancel many in a row.
    fn first_closed(self: &Rc<Self>) -> Option<Rc<Gate>> {
        let mut stack = vec![Rc::clone(self)];
        while let Some(gate) = stack.pop() {
            if !gate.open.get() {
                return Some(gate);
            }
            let mut after = gate.after.borrow_mut();
            // Open gates with nothing after them are done: forget them.
            after.retain(|g| !g.open.get() || !g.after.borrow().is_empty());
            stack.extend(after.iter().cloned());
        }
        None
    }

    fn wait_for(&self, cx: &std::task::Context<'_>) {
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
    }
}

/// The ordering state of one connection.
pub struct KeyOrder {
    /// Keyed (SipHash with a random key per connection): keys come from clients, and colliding
    /// keys would only make calls wait for each other needlessly, but must not be forced.
    hasher: RandomState,
    /// Per key hash, the gate of the latest call that touched the key and holds one.
    /// (Keyed by those hashes as they are: [`KeyHashState`].)
    latest: RefCell<HashMap<u64, Rc<Gate>, KeyHashState>>,
    /// The gate of the latest scan that had to wait, while it runs.
    scan: RefCell<Option<Rc<Gate>>>,
}

impl Default for KeyOrder {
    fn default() -> Self {
        KeyOrder {
            hasher: RandomState::new(),
            latest: RefCell::new(HashMap::default()),
            scan: RefCell::new(None),
        }
    }
}

/// What a call touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads its keys only.
    Read,
    /// Writes some of its keys (may read others).
    Write,
}

impl KeyOrder {
    /// Enters a call that touches `keys` (and every key, if `scans`). Must be called when the
    /// call is dispatched, before any later call of the connection enters.
    pub fn enter<'k>(
        self: &Rc<Self>,
        keys: impl IntoIterator<Item = &'k [u8]>,
        access: Access,
        scans: bool,
    ) -> Turn {
        let mut turn = Turn {
            order: Rc::clone(self),
            waits: Vec::new(),
            own: None,
            own_keys: Vec::new(),
            own_scan: false,
        };
        {
            let mut scan = self.scan.borrow_mut();
            match scan
                .as_ref()
                .map(|gate| (gate.first_closed().is_some(), gate))
            {
                Some((true, gate)) => turn.waits.push(Rc::clone(gate)),
                Some((false, _)) => *scan = None,
                None => {}
            }
        }
        if access == Access::Read && turn.waits.is_empty() && self.latest.borrow().is_empty() {
            return turn;
        }
        let mut latest = self.latest.borrow_mut();
        let hashes: Vec<u64> = keys.into_iter().map(|k| self.hasher.hash_one(k)).collect();
        for h in &hashes {
            if let Some(gate) = latest.get(h) {
                if gate.first_closed().is_some() {
                    push_once(&mut turn.waits, gate);
                } else {
                    // Left by a cancelled call whose predecessors are done.
                    latest.remove(h);
                }
            }
        }
        if scans {
            latest.retain(|_, gate| gate.first_closed().is_some());
            for gate in latest.values() {
                push_once(&mut turn.waits, gate);
            }
        }
        if access == Access::Write || !turn.waits.is_empty() {
            let own = Rc::new(Gate::default());
            for &h in &hashes {
                latest.insert(h, Rc::clone(&own));
            }
            turn.own = Some(own);
            turn.own_keys = hashes;
        }
        drop(latest);
        if scans && !turn.waits.is_empty() {
            turn.take_scan_gate();
        }
        turn
    }
}

fn push_once(waits: &mut Vec<Rc<Gate>>, gate: &Rc<Gate>) {
    if !waits.iter().any(|g| Rc::ptr_eq(g, gate)) {
        waits.push(Rc::clone(gate));
    }
}

/// A call's place in its connection's order: wait for it, then run; drop it once the call's
/// effect is complete.
pub struct Turn {
    order: Rc<KeyOrder>,
    waits: Vec<Rc<Gate>>,
    own: Option<Rc<Gate>>,
    own_keys: Vec<u64>,
    own_scan: bool,
}

impl Turn {
    fn take_scan_gate(&mut self) {
        let own = Rc::clone(self.own.get_or_insert_with(|| Rc::new(Gate::default())));
        *self.order.scan.borrow_mut() = Some(own);
        self.own_scan = true;
    }

    /// Resolves once every earlier call this one must follow has completed.
    pub fn ready(&mut self) -> impl Future<Output = ()> + '_ {
        futures::future::poll_fn(move |cx| {
            while let Some(gate) = self.waits.last() {
                if let Some(closed) = gate.first_closed() {
                    closed.wait_for(cx);
                    return Poll::Pending;
                }
                self.waits.pop();
            }
            Poll::Ready(())
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(own) = self.own.take() else {
            return;
        };
        // A call dropped before its turn came (cancelled by the client): its followers wait
        // for what it waited for, and its entries stay to lead later calls there too (`enter`
        // forgets them once that is done).
        let pending: Vec<Rc<Gate>> = self.waits.iter().filter_map(Gate::first_closed).collect();
        let cancelled = !pending.is_empty();
        own.open(pending);
        if cancelled {
            return;
        }
        let mut latest = self.order.latest.borrow_mut();
        for h in &self.own_keys {
            if latest.get(h).is_some_and(|g| Rc::ptr_eq(g, &own)) {
                latest.remove(h);
            }
        }
        drop(latest);
        if self.own_scan {
            let mut scan = self.order.scan.borrow_mut();
            if scan.as_ref().is_some_and(|g| Rc::ptr_eq(g, &own)) {
                *scan = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn enter(order: &Rc<KeyOrder>, keys: &[&[u8]], access: Access) -> Turn {
        order.enter(keys.iter().copied(), access, false)
    }

    fn is_ready(turn: &mut Turn) -> bool {
        turn.ready().now_or_never().is_some()
    }

    #[test]
    fn a_read_waits_for_an_earlier_write_of_its_key_only() {
        let order = Rc::new(KeyOrder::default());
        let write = enter(&order, &[b"a", b"b"], Access::Write);
        let mut read_a = enter(&order, &[b"a"], Access::Read);
        let mut read_c = enter(&order, &[b"c"], Access::Read);
        assert!(!is_ready(&mut read_a));
        assert!(is_ready(&mut read_c));
        drop(write);
        assert!(is_ready(&mut read_a));
        drop(read_a);
        assert!(order.latest.borrow().is_empty(), "gates are removed");
    }

    #[test]
    fn a_write_after_a_waiting_read_waits_for_the_read() {
        let order = Rc::new(KeyOrder::default());
        let first = enter(&order, &[b"k"], Access::Write);
        let mut read = enter(&order, &[b"k"], Access::Read);
        let mut second = enter(&order, &[b"k"], Access::Write);
        drop(first);
        assert!(!is_ready(&mut second), "the read has not run yet");
        assert!(is_ready(&mut read));
        drop(read);
        assert!(is_ready(&mut second));
    }

    #[test]
    fn reads_on_an_idle_connection_take_no_gate() {
        let order = Rc::new(KeyOrder::default());
        let mut read = enter(&order, &[b"k"], Access::Read);
        assert!(is_ready(&mut read));
        let mut write = enter(&order, &[b"k"], Access::Write);
        assert!(
            is_ready(&mut write),
            "a read that did not wait holds no gate"
        );
    }

    #[test]
    fn a_scan_waits_for_every_pending_write_and_later_calls_wait_for_it() {
        let order = Rc::new(KeyOrder::default());
        let write = enter(&order, &[b"x"], Access::Write);
        let mut scan = order.enter([], Access::Read, true);
        let mut later = enter(&order, &[b"y"], Access::Write);
        assert!(!is_ready(&mut scan));
        assert!(!is_ready(&mut later));
        drop(write);
        assert!(is_ready(&mut scan));
        assert!(!is_ready(&mut later), "the scan is still running");
        drop(scan);
        assert!(is_ready(&mut later));
        drop(later);
        assert!(order.scan.borrow().is_none() && order.latest.borrow().is_empty());
    }

    #[test]
    fn a_call_entered_after_a_cancelled_one_still_follows_the_pending_write() {
        let order = Rc::new(KeyOrder::default());
        let a = enter(&order, &[b"k"], Access::Write);
        let b = enter(&order, &[b"k"], Access::Write);
        drop(b);
        let mut c = enter(&order, &[b"k"], Access::Read);
        assert!(!is_ready(&mut c), "a is still pending");
        let mut scan = order.enter([], Access::Read, true);
        assert!(!is_ready(&mut scan));
        drop(a);
        assert!(is_ready(&mut c));
        // The scan also follows the read, which had to wait and so holds a gate.
        assert!(!is_ready(&mut scan));
        drop(c);
        assert!(is_ready(&mut scan));
        drop(scan);
        let mut d = enter(&order, &[b"k"], Access::Read);
        assert!(is_ready(&mut d));
        assert!(
            order.latest.borrow().is_empty(),
            "resolved entries are forgotten"
        );
    }

    #[test]
    fn a_chain_of_cancelled_calls_is_followed_without_recursion() {
        let order = Rc::new(KeyOrder::default());
        let head = enter(&order, &[b"k"], Access::Write);
        for _ in 0..100_000 {
            drop(enter(&order, &[b"k"], Access::Write));
        }
        let mut last = enter(&order, &[b"k"], Access::Read);
        assert!(!is_ready(&mut last));
        drop(head);
        assert!(is_ready(&mut last));
    }

    #[test]
    fn a_read_that_waits_only_for_a_scan_holds_a_gate() {
        let order = Rc::new(KeyOrder::default());
        let write = enter(&order, &[b"x"], Access::Write);
        let scan = order.enter([], Access::Read, true);
        drop(write);
        // `latest` is empty now; the scan still runs.
        let mut read = enter(&order, &[b"k"], Access::Read);
        let mut later = enter(&order, &[b"k"], Access::Write);
        assert!(!is_ready(&mut read));
        drop(scan);
        assert!(!is_ready(&mut later), "the read has not run yet");
        assert!(is_ready(&mut read));
        drop(read);
        assert!(is_ready(&mut later));
    }

    #[test]
    fn a_call_dropped_before_its_turn_passes_on_what_it_waited_for() {
        let order = Rc::new(KeyOrder::default());
        let a = enter(&order, &[b"k"], Access::Write);
        let b = enter(&order, &[b"k"], Access::Write);
        let mut c = enter(&order, &[b"k"], Access::Read);
        drop(b);
        assert!(!is_ready(&mut c), "b waited for a: c still follows a");
        drop(a);
        assert!(is_ready(&mut c));
    }
}
