//! The block cache: decoded (checked, decompressed) data blocks in page-aligned buffers taken
//! from a reusable pool, bounded in bytes, evicted by CLOCK (second chance).
//!
//! One cache per engine (per shard), single-threaded: no locks. A block handed out is an
//! `Rc`, so a reader holding it keeps it valid even if the cache evicts it meanwhile; its
//! buffer returns to the pool when the last holder drops it.
//!
//! Index and filter blocks are not in the CLOCK: each open table holds its own, for its whole
//! life ("pinned"). Their bytes are charged to the same budget ([`BlockCache::pin`]), so
//! `block_cache_size_bytes` bounds index + filter + data blocks together; data blocks get what
//! the pinned blocks leave.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr::NonNull;
use std::rc::Rc;

use crate::disk::PAGE_SIZE_BYTES;

/// Buffers of up to this many pages are kept in the pool's free lists when released.
const POOLED_PAGES_MAX: usize = 16;

/// A page-aligned buffer of a whole number of pages, returned to its pool on drop.
pub struct PooledBuf {
    ptr: NonNull<u8>,
    pages: usize,
    pool: Rc<BufferPool>,
}

impl std::fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuf")
            .field("pages", &self.pages)
            .finish()
    }
}

impl PooledBuf {
    fn layout(pages: usize) -> Option<Layout> {
        Layout::from_size_align(pages.max(1) * PAGE_SIZE_BYTES, PAGE_SIZE_BYTES).ok()
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.pages * PAGE_SIZE_BYTES
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to an allocation of `pages * PAGE_SIZE_BYTES` bytes that this
        // buffer owns exclusively; it was zeroed when allocated, so every byte is initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity()) }
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity()) }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        pool.release(self.ptr, self.pages);
    }
}

/// A pool of page-aligned buffers, reused instead of freed (bounded: at most
/// `free_bytes_max` bytes sit idle in it).
#[derive(Debug)]
pub struct BufferPool {
    /// `free[p]` holds released buffers of p pages (p in 1..=POOLED_PAGES_MAX).
    free: RefCell<Vec<Vec<NonNull<u8>>>>,
    free_bytes: Cell<usize>,
    free_bytes_max: usize,
    allocated_total: Cell<u64>,
    reused_total: Cell<u64>,
}

impl BufferPool {
    pub fn new(free_bytes_max: usize) -> Rc<BufferPool> {
        Rc::new(BufferPool {
            free: RefCell::new(vec![Vec::new(); POOLED_PAGES_MAX + 1]),
            free_bytes: Cell::new(0),
            free_bytes_max,
            allocated_total: Cell::new(0),
            reused_total: Cell::new(0),
        })
    }

    /// A zeroed-once (reused buffers keep old contents) buffer of at least `len` bytes.
    pub fn get(self: &Rc<Self>, len: usize) -> PooledBuf {
        let pages = len.div_ceil(PAGE_SIZE_BYTES).max(1);
        if pages <= POOLED_PAGES_MAX {
            let reused = self.free.borrow_mut()[pages].pop();
            if let Some(ptr) = reused {
                self.free_bytes
                    .set(self.free_bytes.get() - pages * PAGE_SIZE_BYTES);
                self.reused_total.set(self.reused_total.get() + 1);
                return PooledBuf {
                    ptr,
                    pages,
                    pool: self.clone(),
                };
            }
        }
        let Some(layout) = PooledBuf::layout(pages) else {
            std::alloc::handle_alloc_error(Layout::new::<u8>());
        };
        // SAFETY: the layout has a non-zero size (at least one page).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        self.allocated_total.set(self.allocated_total.get() + 1);
        PooledBuf {
            ptr,
            pages,
            pool: self.clone(),
        }
    }

    fn release(&self, ptr: NonNull<u8>, pages: usize) {
        let bytes = pages * PAGE_SIZE_BYTES;
        if pages <= POOLED_PAGES_MAX && self.free_bytes.get() + bytes <= self.free_bytes_max {
            self.free.borrow_mut()[pages].push(ptr);
            self.free_bytes.set(self.free_bytes.get() + bytes);
            return;
        }
        if let Some(layout) = PooledBuf::layout(pages) {
            // SAFETY: `ptr` was allocated by `get` with exactly this layout and is released
            // once (the buffer that owned it is being dropped).
            unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
        }
    }

    /// Buffers allocated from the system (not reused).
    pub fn allocated_total(&self) -> u64 {
        self.allocated_total.get()
    }

    /// Buffers handed out again from the free lists.
    pub fn reused_total(&self) -> u64 {
        self.reused_total.get()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        for (pages, list) in self.free.get_mut().iter_mut().enumerate() {
            for ptr in list.drain(..) {
                if let Some(layout) = PooledBuf::layout(pages) {
                    // SAFETY: every pointer in free list `pages` was allocated by `get` with
                    // the layout for `pages` pages and is owned by the pool alone.
                    unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
                }
            }
        }
    }
}

/// A decoded block in a pooled buffer.
#[derive(Debug)]
pub struct CachedBlock {
    buf: PooledBuf,
    len: usize,
    /// CLOCK's reference bit. It lives in the block, not in the cache's slot, so a reader
    /// that reaches the block without the cache's map (a table's direct handle, see
    /// [`crate::sst::reader::TableReader`]) marks it used by touching a line it loads anyway.
    referenced: Cell<bool>,
}

impl CachedBlock {
    pub fn new(buf: PooledBuf, len: usize) -> CachedBlock {
        debug_assert!(len <= buf.capacity());
        CachedBlock {
            buf,
            len,
            referenced: Cell::new(false),
        }
    }

    /// Marks the block as used (CLOCK gives it a second chance).
    #[inline]
    pub fn touch(&self) {
        self.referenced.set(true);
    }

    /// The block's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes charged to the cache for it.
    pub fn charge(&self) -> usize {
        self.buf.capacity()
    }
}

/// A block's cache key: (table file number, block offset).
pub type BlockKey = (u64, u64);

/// FxHash (rustc's): a multiply-rotate hash, much cheaper than SipHash for two integers.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug)]
struct Slot {
    key: BlockKey,
    block: Option<Rc<CachedBlock>>,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<BlockKey, usize, BuildHasherDefault<FxHasher>>,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    hand: usize,
    used_bytes: usize,
    pinned_bytes: usize,
}

/// Counters of a [`BlockCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub used_bytes: u64,
    pub pinned_bytes: u64,
    pub capacity_bytes: u64,
    pub blocks: u64,
}

/// The block cache (see the module doc).
#[derive(Debug)]
pub struct BlockCache {
    capacity_bytes: usize,
    inner: RefCell<CacheInner>,
    pool: Rc<BufferPool>,
    hits: Cell<u64>,
    misses: Cell<u64>,
    inserts: Cell<u64>,
    evictions: Cell<u64>,
}

impl BlockCache {
    /// A cache of at most `capacity_bytes` (pinned blocks included).
    pub fn new(capacity_bytes: usize) -> Rc<BlockCache> {
        // Keep a few idle buffers: enough to absorb the churn of misses without holding much.
        let pool_free_max = (capacity_bytes / 64).clamp(64 * PAGE_SIZE_BYTES, 8 << 20);
        Rc::new(BlockCache {
            capacity_bytes,
            inner: RefCell::new(CacheInner::default()),
            pool: BufferPool::new(pool_free_max),
            hits: Cell::new(0),
            misses: Cell::new(0),
            inserts: Cell::new(0),
            evictions: Cell::new(0),
        })
    }

    /// The buffer pool blocks are read into.
    pub fn pool(&self) -> &Rc<BufferPool> {
        &self.pool
    }

    /// The cached block at `key`, counting a hit or a miss.
    #[inline]
    pub fn get(&self, key: BlockKey) -> Option<Rc<CachedBlock>> {
        let found = self.lookup(key);
        match &found {
            Some(_) => self.hits.set(self.hits.get() + 1),
            None => self.misses.set(self.misses.get() + 1),
        }
        found
    }

    /// The cached block at `key` (marked used), counting a hit but not a miss: for a reader
    /// that, on a miss, goes on to [`BlockCache::get`] (which counts it) and the disk.
    #[inline]
    pub fn get_if_cached(&self, key: BlockKey) -> Option<Rc<CachedBlock>> {
        let found = self.lookup(key);
        if found.is_some() {
            self.count_hit();
        }
        found
    }

    /// The block cached at `key`, without counting a hit or marking it used (for a table
    /// being opened, which links its direct handles to blocks its writer cached).
    pub(crate) fn peek(&self, key: BlockKey) -> Option<Rc<CachedBlock>> {
        let inner = self.inner.borrow();
        inner.slots[*inner.map.get(&key)?].block.clone()
    }

    #[inline]
    fn lookup(&self, key: BlockKey) -> Option<Rc<CachedBlock>> {
        let inner = self.inner.borrow();
        let block = inner.slots[*inner.map.get(&key)?].block.clone();
        if let Some(b) = &block {
            b.touch();
        }
        block
    }

    /// Counts a hit on a block reached without [`BlockCache::get`] (a table's direct handle
    /// to a block it found in the cache before).
    #[inline]
    pub fn count_hit(&self) {
        self.hits.set(self.hits.get() + 1);
    }

    /// Counts a miss of a reader that looked with [`BlockCache::get_if_cached`].
    #[inline]
    pub fn count_miss(&self) {
        self.misses.set(self.misses.get() + 1);
    }

    /// Adds a block, evicting others (CLOCK) to stay within the budget. A block larger than
    /// what the pinned blocks leave is not cached. Returns whether `block` is now the cached
    /// block at `key` (false: too large, or another block is cached there already).
    pub fn insert(&self, key: BlockKey, block: Rc<CachedBlock>) -> bool {
        let charge = block.charge();
        let mut inner = self.inner.borrow_mut();
        let budget = self.capacity_bytes.saturating_sub(inner.pinned_bytes);
        if charge > budget || inner.map.contains_key(&key) {
            return false;
        }
        let mut steps = 2 * inner.slots.len() + 1;
        while inner.used_bytes + charge > budget && steps > 0 {
            steps -= 1;
            if inner.slots.is_empty() {
                break;
            }
            let h = inner.hand % inner.slots.len();
            inner.hand = h + 1;
            let slot = &mut inner.slots[h];
            let Some(b) = &slot.block else { continue };
            if b.referenced.get() {
                b.referenced.set(false);
                continue;
            }
            let freed = b.charge();
            let k = slot.key;
            slot.block = None;
            inner.used_bytes -= freed;
            inner.map.remove(&k);
            inner.free_slots.push(h);
            self.evictions.set(self.evictions.get() + 1);
        }
        if inner.used_bytes + charge > budget {
            return false;
        }
        let slot = Slot {
            key,
            block: Some(block),
        };
        let i = match inner.free_slots.pop() {
            Some(i) => {
                inner.slots[i] = slot;
                i
            }
            None => {
                inner.slots.push(slot);
                inner.slots.len() - 1
            }
        };
        inner.map.insert(key, i);
        inner.used_bytes += charge;
        self.inserts.set(self.inserts.get() + 1);
        true
    }

    /// Drops the block at `key` if it is cached (its table was deleted: the space goes to
    /// live blocks instead of waiting for the CLOCK hand). Not counted as an eviction.
    pub fn remove(&self, key: BlockKey) {
        let mut inner = self.inner.borrow_mut();
        let Some(i) = inner.map.remove(&key) else {
            return;
        };
        if let Some(b) = inner.slots[i].block.take() {
            inner.used_bytes -= b.charge();
        }
        inner.free_slots.push(i);
    }

    /// Charges `bytes` of pinned blocks (a table's index and filter) to the budget, evicting
    /// data blocks as needed on the next insert.
    pub fn pin(&self, bytes: usize) {
        self.inner.borrow_mut().pinned_bytes += bytes;
    }

    /// Returns pinned bytes (a table was closed).
    pub fn unpin(&self, bytes: usize) {
        let mut inner = self.inner.borrow_mut();
        debug_assert!(inner.pinned_bytes >= bytes);
        inner.pinned_bytes = inner.pinned_bytes.saturating_sub(bytes);
    }

    /// The configured budget.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    pub fn counters(&self) -> CacheCounters {
        let inner = self.inner.borrow();
        CacheCounters {
            hits: self.hits.get(),
            misses: self.misses.get(),
            inserts: self.inserts.get(),
            evictions: self.evictions.get(),
            used_bytes: inner.used_bytes as u64,
            pinned_bytes: inner.pinned_bytes as u64,
            capacity_bytes: self.capacity_bytes as u64,
            blocks: inner.map.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cache: &BlockCache, fill: u8, len: usize) -> Rc<CachedBlock> {
        let mut buf = cache.pool().get(len);
        buf[..len].fill(fill);
        Rc::new(CachedBlock::new(buf, len))
    }

    #[test]
    fn stays_within_its_budget_and_counts_hits_and_misses() {
        let cache = BlockCache::new(10 * PAGE_SIZE_BYTES);
        for i in 0..100u64 {
            cache.insert((1, i * 4096), block(&cache, i as u8, 4000));
            let c = cache.counters();
            assert!(c.used_bytes <= c.capacity_bytes, "{c:?}");
        }
        let c = cache.counters();
        assert_eq!(c.blocks, 10);
        assert_eq!(c.evictions, 90);
        assert!(cache.get((1, 0)).is_none());
        let b = cache.get((1, 99 * 4096)).unwrap();
        assert!(b.data().iter().all(|&x| x == 99) && b.data().len() == 4000);
        let c = cache.counters();
        assert_eq!((c.hits, c.misses), (1, 1));
    }

    #[test]
    fn removed_blocks_free_their_space_for_others() {
        let cache = BlockCache::new(4 * PAGE_SIZE_BYTES);
        for i in 0..4u64 {
            cache.insert((1, i * 4096), block(&cache, i as u8, 4000));
        }
        cache.remove((1, 0));
        cache.remove((1, 4096));
        cache.remove((7, 0)); // not cached: nothing happens
        let c = cache.counters();
        assert_eq!(
            (c.blocks, c.used_bytes),
            (2, 2 * PAGE_SIZE_BYTES as u64),
            "{c:?}"
        );
        assert!(cache.get((1, 0)).is_none());
        // Two new blocks fit without evicting the two that stayed.
        cache.insert((2, 0), block(&cache, 20, 4000));
        cache.insert((2, 4096), block(&cache, 21, 4000));
        let c = cache.counters();
        assert_eq!((c.blocks, c.evictions), (4, 0), "{c:?}");
        assert!(cache.get((1, 2 * 4096)).is_some() && cache.get((2, 4096)).is_some());
    }

    #[test]
    fn clock_gives_referenced_blocks_a_second_chance() {
        let cache = BlockCache::new(4 * PAGE_SIZE_BYTES);
        for i in 0..4u64 {
            cache.insert((1, i), block(&cache, 0, 100));
        }
        // Touch block 0; inserting a fifth evicts block 1 (the first unreferenced one).
        assert!(cache.get((1, 0)).is_some());
        cache.insert((1, 4), block(&cache, 0, 100));
        assert!(cache.get((1, 0)).is_some());
        assert!(cache.get((1, 1)).is_none());
        assert!(cache.get((1, 4)).is_some());
    }

    #[test]
    fn pinned_bytes_shrink_the_data_budget() {
        let cache = BlockCache::new(8 * PAGE_SIZE_BYTES);
        cache.pin(6 * PAGE_SIZE_BYTES);
        for i in 0..8u64 {
            cache.insert((2, i), block(&cache, 0, 10));
        }
        assert_eq!(cache.counters().blocks, 2);
        // Larger than what is left: not cached at all.
        cache.insert((3, 0), block(&cache, 0, 3 * PAGE_SIZE_BYTES));
        assert!(cache.get((3, 0)).is_none());
        cache.unpin(6 * PAGE_SIZE_BYTES);
        assert_eq!(cache.counters().pinned_bytes, 0);
    }

    #[test]
    fn buffers_are_aligned_and_reused() {
        let pool = BufferPool::new(1 << 20);
        let a = pool.get(100);
        assert_eq!(a.as_ptr() as usize % PAGE_SIZE_BYTES, 0);
        assert_eq!(a.capacity(), PAGE_SIZE_BYTES);
        let big = pool.get(5 * PAGE_SIZE_BYTES + 1);
        assert_eq!(big.capacity(), 6 * PAGE_SIZE_BYTES);
        drop(a);
        let b = pool.get(4096);
        assert_eq!(pool.reused_total(), 1);
        assert_eq!(pool.allocated_total(), 2);
        drop((b, big));
        // A block held by a reader survives its eviction.
        let cache = BlockCache::new(PAGE_SIZE_BYTES);
        cache.insert((1, 0), block(&cache, 7, 10));
        let held = cache.get((1, 0)).unwrap();
        cache.insert((1, 1), block(&cache, 8, 10));
        assert!(cache.get((1, 0)).is_none());
        assert_eq!(held.data(), &[7; 10]);
    }
}
