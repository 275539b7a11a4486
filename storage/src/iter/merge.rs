//! [`MergeIter`]: merges sources into one stream of versions, in (key ascending, sequence
//! descending) order when forward and exactly the reverse otherwise, with a binary heap of
//! source indices (O(log n) per step).

use std::cmp::Ordering;

use super::Source;
use crate::error::Result;
use crate::sst::EntryRef;

/// A one-direction merge of several sources.
#[derive(Debug)]
pub struct MergeIter {
    sources: Vec<Source>,
    /// Indices of valid sources, a heap whose top (index 0) holds the next entry.
    heap: Vec<usize>,
    /// `heads[i]`: the first 8 bytes of source `i`'s current key as a big-endian integer
    /// (zero-padded). Two keys whose heads differ are ordered by them, so most comparisons
    /// of the heap need neither the sources' entries nor a `memcmp`.
    heads: Vec<u64>,
    forward: bool,
}

/// Tables whose seek blocks [`MergeIter::seek_ge`] prefetches (the first ones; more are
/// positioned without).
const SEEK_PREFETCH_TABLES_MAX: usize = 16;

/// Order of two entries in the merged stream (Less = comes first).
#[inline]
fn order(a: &EntryRef<'_>, b: &EntryRef<'_>, forward: bool) -> Ordering {
    let o = a.key.cmp(b.key).then_with(|| b.seq.cmp(&a.seq));
    if forward { o } else { o.reverse() }
}

/// The head of a key (see [`MergeIter::heads`]).
#[inline]
pub(crate) fn key_head(key: &[u8]) -> u64 {
    crate::sst::block::key_prefix(key)
}

impl MergeIter {
    /// A merge of `sources`, moving forward or in reverse (unpositioned until a seek).
    pub fn new(sources: Vec<Source>, forward: bool) -> MergeIter {
        MergeIter {
            heap: Vec::with_capacity(sources.len()),
            heads: vec![0; sources.len()],
            sources,
            forward,
        }
    }

    /// The direction.
    pub fn forward(&self) -> bool {
        self.forward
    }

    #[inline]
    fn before(&self, a: usize, b: usize) -> bool {
        let (ha, hb) = (self.heads[a], self.heads[b]);
        if ha != hb {
            return (ha < hb) == self.forward;
        }
        order(
            &self.sources[a].entry(),
            &self.sources[b].entry(),
            self.forward,
        ) == Ordering::Less
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                return;
            }
            let r = l + 1;
            let c = if r < n && self.before(self.heap[r], self.heap[l]) {
                r
            } else {
                l
            };
            if self.before(self.heap[c], self.heap[i]) {
                self.heap.swap(c, i);
                i = c;
            } else {
                return;
            }
        }
    }

    fn rebuild(&mut self) {
        self.heap = (0..self.sources.len())
            .filter(|&i| self.sources[i].valid())
            .collect();
        for &i in &self.heap {
            self.heads[i] = key_head(self.sources[i].entry().key);
        }
        for i in (0..self.heap.len() / 2).rev() {
            self.sift_down(i);
        }
    }

    /// Forward: positions at the first version of the first key `>= key`.
    ///
    /// With its blocks cached, a seek is bound by memory latency: per table a chain of
    /// dependent cache misses (index, block slot, the block's `Rc` header, the block's
    /// header, prefixes and offsets). The chains of different tables are independent, so the
    /// seek first walks them side by side in three prefetch stages — each stage's loads for
    /// all tables are in flight together — and then positions the sources as before, on
    /// lines that are arriving or there.
    pub async fn seek_ge(&mut self, key: &[u8]) -> Result<()> {
        debug_assert!(self.forward);
        self.prefetch_seek(key);
        for s in &mut self.sources {
            if !s.seek_ge_now(key) {
                s.seek_ge(key).await?;
            }
        }
        self.rebuild();
        Ok(())
    }

    /// The prefetch stages of [`MergeIter::seek_ge`] (hints only).
    fn prefetch_seek(&self, key: &[u8]) {
        let mut plan = [None; SEEK_PREFETCH_TABLES_MAX];
        let tables = self.sources.iter().filter_map(|s| s.seek_table(key));
        for (p, t) in plan.iter_mut().zip(tables) {
            let i = t.seek_block_index(key);
            t.prefetch_slot(i);
            *p = Some((t, i));
        }
        for &(t, i) in plan.iter().flatten() {
            t.prefetch_block_header(i);
        }
        for &(t, i) in plan.iter().flatten() {
            t.prefetch_block_data(i);
        }
    }

    /// Reverse: positions at the oldest version of the last key `< key` (the last key of
    /// all when None).
    pub async fn seek_lt(&mut self, key: Option<&[u8]>) -> Result<()> {
        debug_assert!(!self.forward);
        for s in &mut self.sources {
            s.seek_lt(key).await?;
        }
        self.rebuild();
        Ok(())
    }

    /// Whether the merge is on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        !self.heap.is_empty()
    }

    /// The current entry (only when valid).
    #[inline]
    pub fn entry(&self) -> EntryRef<'_> {
        self.sources[self.heap[0]].entry()
    }

    /// The head of the current entry's key (only when valid; see [`MergeIter::heads`]).
    #[inline]
    pub fn head(&self) -> u64 {
        self.heap.first().map_or(0, |&i| self.heads[i])
    }

    /// Moves to the next entry of the merged stream.
    pub async fn step(&mut self) -> Result<()> {
        if self.step_fast() {
            return Ok(());
        }
        self.step_slow().await
    }

    /// [`MergeIter::step`] when no I/O is needed (see [`Source::step_fast`]): true when it
    /// moved, false when nothing changed and [`MergeIter::step_slow`] must do the step. The
    /// hot path of scans: it builds no future (the async step's future is several hundred
    /// bytes, copied at every level of awaiting).
    #[inline]
    pub fn step_fast(&mut self) -> bool {
        let Some(&top) = self.heap.first() else {
            return true;
        };
        if !self.sources[top].step_fast(self.forward) {
            return false;
        }
        self.after_step(top);
        true
    }

    /// The step, reading the next block of the top source if needed.
    pub async fn step_slow(&mut self) -> Result<()> {
        let Some(&top) = self.heap.first() else {
            return Ok(());
        };
        self.sources[top].step(self.forward).await?;
        self.after_step(top);
        Ok(())
    }

    /// Restores the heap after source `top` (the top) moved.
    #[inline]
    fn after_step(&mut self, top: usize) {
        if self.sources[top].valid() {
            self.heads[top] = key_head(self.sources[top].entry().key);
        } else {
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
        }
        self.sift_down(0);
    }
}
