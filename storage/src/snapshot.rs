//! Snapshots: a sequence number that reads can use, kept registered while it lives so the
//! memtable keeps the versions it needs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::SeqNo;

/// A consistent point-in-time view of one engine: reads at a snapshot see exactly the writes
/// acknowledged before it was taken (TTL expiry is still judged by the clock at read time).
/// The versions it needs are kept until it is dropped. Cloning registers another reader.
#[derive(Debug)]
pub struct Snapshot {
    seq: SeqNo,
    list: Rc<SnapshotList>,
}

impl Snapshot {
    /// The sequence number this snapshot reads at.
    pub fn seq(&self) -> SeqNo {
        self.seq
    }

    pub(crate) fn belongs_to(&self, list: &Rc<SnapshotList>) -> bool {
        Rc::ptr_eq(&self.list, list)
    }
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        self.list.acquire(self.seq);
        Snapshot {
            seq: self.seq,
            list: self.list.clone(),
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.list.release(self.seq);
    }
}

/// The live snapshots of one engine: sequence number -> how many handles.
#[derive(Debug, Default)]
pub(crate) struct SnapshotList {
    live: RefCell<BTreeMap<SeqNo, usize>>,
}

impl SnapshotList {
    pub(crate) fn take(self: &Rc<Self>, seq: SeqNo) -> Snapshot {
        self.acquire(seq);
        Snapshot {
            seq,
            list: self.clone(),
        }
    }

    fn acquire(&self, seq: SeqNo) {
        *self.live.borrow_mut().entry(seq).or_insert(0) += 1;
    }

    fn release(&self, seq: SeqNo) {
        let mut live = self.live.borrow_mut();
        if let Some(n) = live.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                live.remove(&seq);
            }
        }
    }

    /// The oldest sequence number a live snapshot reads at.
    #[cfg(test)]
    pub(crate) fn oldest(&self) -> Option<SeqNo> {
        self.live.borrow().keys().next().copied()
    }

    /// Whether a live snapshot reads at a sequence number in `[lo, hi)`.
    pub(crate) fn any_in(&self, lo: SeqNo, hi: SeqNo) -> bool {
        lo < hi && self.live.borrow().range(lo..hi).next().is_some()
    }

    /// Number of live snapshot handles.
    pub(crate) fn count(&self) -> usize {
        self.live.borrow().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_tracks_live_handles() {
        let list = Rc::new(SnapshotList::default());
        assert_eq!(list.oldest(), None);
        let a = list.take(5);
        let b = list.take(9);
        let a2 = a.clone();
        assert_eq!((list.oldest(), list.count()), (Some(5), 3));
        drop(a);
        assert_eq!(list.oldest(), Some(5));
        drop(a2);
        assert_eq!(list.oldest(), Some(9));
        drop(b);
        assert_eq!((list.oldest(), list.count()), (None, 0));
    }
}
