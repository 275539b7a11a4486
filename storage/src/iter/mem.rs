//! [`MemIter`]: iterates a memtable in chunks of whole keys, so no borrow of the memtable is
//! held across an `.await` (the engine keeps writing into it meanwhile).

use std::cell::RefCell;
use std::ops::Bound;
use std::rc::Rc;

use crate::memtable::Memtable;
use crate::sst::{Entry, EntryRef};

/// Keys read from the memtable per chunk.
const CHUNK_KEYS: usize = 64;

/// A one-direction iterator over a memtable's versions.
#[derive(Debug)]
pub struct MemIter {
    mem: Rc<RefCell<Memtable>>,
    forward: bool,
    buf: Vec<Entry>,
    pos: usize,
    /// Whether keys remain in the memtable beyond the chunk in `buf`.
    more: bool,
}

impl MemIter {
    /// An iterator over `mem`, moving forward or in reverse (unpositioned until a seek).
    // The engine builds these for scans and flushes (wired in with the engine integration).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn new(mem: Rc<RefCell<Memtable>>, forward: bool) -> MemIter {
        MemIter {
            mem,
            forward,
            buf: Vec::new(),
            pos: 0,
            more: false,
        }
    }

    fn fill(&mut self, from: Bound<&[u8]>) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.more = self
            .mem
            .borrow()
            .collect_versions(from, !self.forward, CHUNK_KEYS, &mut buf);
        self.buf = buf;
        self.pos = 0;
    }

    /// Whether the iterator is on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// The current entry (only when valid).
    #[inline]
    pub fn entry(&self) -> EntryRef<'_> {
        self.buf[self.pos].as_ref()
    }

    /// First version of the first key `>= key` (forward iterators).
    pub fn seek_ge(&mut self, key: &[u8]) {
        debug_assert!(self.forward);
        self.fill(Bound::Included(key));
    }

    /// The versions of the last key `< key` (or of the last key, when None) (reverse
    /// iterators).
    pub fn seek_lt(&mut self, key: Option<&[u8]>) {
        debug_assert!(!self.forward);
        match key {
            Some(k) => self.fill(Bound::Excluded(k)),
            None => self.fill(Bound::Unbounded),
        }
    }

    /// Moves one entry on.
    pub fn step(&mut self) {
        self.pos += 1;
        if self.pos == self.buf.len() && self.more {
            let last = match self.buf.last() {
                Some(e) => e.key.clone(),
                None => return,
            };
            self.fill(Bound::Excluded(&last));
        }
    }
}
