//! [`MemIter`]: iterates a memtable in chunks of whole keys, so no borrow of the memtable is
//! held across an `.await` (the engine keeps writing into it meanwhile).

use std::cell::RefCell;
use std::ops::Bound;
use std::rc::Rc;

use crate::memtable::{MemChunk, Memtable};
use crate::sst::EntryRef;

/// Keys read by the first chunk after a seek. Small because many scans want only a few
/// entries (a point seek: one), and every key read is copied out of the memtable; each later
/// chunk doubles, up to [`CHUNK_KEYS_MAX`]. With a fixed 64-key first chunk, copying 63
/// unwanted entries was ~10% of the CPU samples of a `corekv-bench engine` seekrandom run;
/// one key instead of two took a 1M-key seekrandom from 294k to 336k seeks/s (BENCHMARKS.md).
const CHUNK_KEYS_FIRST: usize = 1;
/// Most keys read from the memtable per chunk.
const CHUNK_KEYS_MAX: usize = 64;

/// A one-direction iterator over a memtable's versions.
#[derive(Debug)]
pub struct MemIter {
    mem: Rc<RefCell<Memtable>>,
    forward: bool,
    buf: MemChunk,
    pos: usize,
    /// The last key of the previous chunk (where the next one starts).
    last: Vec<u8>,
    /// Whether keys remain in the memtable beyond the chunk in `buf`.
    more: bool,
    /// Keys the next chunk reads.
    chunk_keys: usize,
}

impl MemIter {
    /// An iterator over `mem`, moving forward or in reverse (unpositioned until a seek).
    pub(crate) fn new(mem: Rc<RefCell<Memtable>>, forward: bool) -> MemIter {
        MemIter {
            mem,
            forward,
            buf: MemChunk::default(),
            pos: 0,
            last: Vec::new(),
            more: false,
            chunk_keys: CHUNK_KEYS_FIRST,
        }
    }

    fn fill(&mut self, from: Bound<&[u8]>) {
        self.buf.clear();
        self.more =
            self.mem
                .borrow()
                .collect_versions(from, !self.forward, self.chunk_keys, &mut self.buf);
        self.chunk_keys = (self.chunk_keys * 2).min(CHUNK_KEYS_MAX);
        self.pos = 0;
    }

    /// Starts a seek: its first chunk is small again.
    fn fill_after_seek(&mut self, from: Bound<&[u8]>) {
        self.chunk_keys = CHUNK_KEYS_FIRST;
        self.fill(from);
    }

    /// Whether the iterator is on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// The current entry (only when valid).
    #[inline]
    pub fn entry(&self) -> EntryRef<'_> {
        self.buf.get(self.pos)
    }

    /// First version of the first key `>= key` (forward iterators).
    pub fn seek_ge(&mut self, key: &[u8]) {
        debug_assert!(self.forward);
        self.fill_after_seek(Bound::Included(key));
    }

    /// The versions of the last key `< key` (or of the last key, when None) (reverse
    /// iterators).
    pub fn seek_lt(&mut self, key: Option<&[u8]>) {
        debug_assert!(!self.forward);
        match key {
            Some(k) => self.fill_after_seek(Bound::Excluded(k)),
            None => self.fill_after_seek(Bound::Unbounded),
        }
    }

    /// Moves one entry on.
    pub fn step(&mut self) {
        self.pos += 1;
        if self.pos == self.buf.len() && self.more && !self.buf.is_empty() {
            let mut last = std::mem::take(&mut self.last);
            last.clear();
            last.extend_from_slice(self.buf.last_key());
            self.fill(Bound::Excluded(&last));
            self.last = last;
        }
    }
}
