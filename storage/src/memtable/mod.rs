//! The memtable: an ordered in-memory map from key to its versions, newest last.
//!
//! Every version carries the sequence number of the write that made it, so a read at sequence
//! `s` sees, for each key, the newest version with `seq <= s` (MVCC). Versions that no reader
//! can see any more are pruned when the key is next written: a write keeps every version newer
//! than the *floor* (the oldest sequence number a reader may still use: the oldest live
//! snapshot or the current read point) plus the newest version at or below the floor. A key
//! not written again keeps what its last write kept (the version it replaced, needed until that
//! write was published) until [`Memtable::prune`] walks the whole memtable.
//!
//! Deletes are tombstones (kept: once SSTables exist they must shadow older data on disk).
//! A version may carry an absolute expiry time; an expired version reads as absent.
//!
//! Point reads first ask a bloom filter over the memtable's keys ([`KeyFilter`]): once most
//! data lives in tables, most reads miss the memtable, and the filter answers those with one
//! cache line instead of a tree search (a cache miss per level).
//!
//! Memory is accounted approximately but conservatively ([`Memtable::bytes`]): key and value
//! bytes plus a fixed per-key and per-version overhead for the tree node, allocation headers
//! and metadata. The engine compares it with `memtable_size_bytes_max` before each write.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::SeqNo;
use crate::batch::{BatchIter, BatchOp};

/// Bytes charged per key on top of its length (tree slot, boxed key header, entry).
pub(crate) const KEY_OVERHEAD_BYTES: usize = 88;
/// Bytes charged per version on top of its value length.
pub(crate) const VERSION_OVERHEAD_BYTES: usize = 40;

#[derive(Debug)]
struct KeyVersion {
    seq: SeqNo,
    /// Unix milliseconds at which the value stops being visible; 0 = never.
    expires_at_ms: u64,
    /// None = tombstone.
    value: Option<Box<[u8]>>,
}

impl KeyVersion {
    fn cost(&self) -> usize {
        VERSION_OVERHEAD_BYTES + self.value.as_ref().map_or(0, |v| v.len())
    }

    /// The live value, if this version is a put that has not expired at `now_ms`.
    fn live_value(&self, now_ms: u64) -> Option<&[u8]> {
        let value = self.value.as_deref()?;
        if self.expires_at_ms != 0 && now_ms >= self.expires_at_ms {
            return None;
        }
        Some(value)
    }
}

/// All versions of one key: `older` oldest first, then `newest`.
#[derive(Debug)]
struct KeyVersions {
    newest: KeyVersion,
    older: Vec<KeyVersion>,
}

impl KeyVersions {
    /// Drops the older versions no reader needs: `older[i]` stays if `needed` says a reader
    /// may read in `[older[i].seq, next newer seq)`. Returns (bytes freed, versions dropped).
    fn prune(&mut self, needed: &dyn Fn(SeqNo, SeqNo) -> bool) -> (usize, usize) {
        let n = self.older.len();
        let mut kept = 0;
        let mut freed = 0;
        for i in 0..n {
            let next = self.older.get(i + 1).map_or(self.newest.seq, |v| v.seq);
            if needed(self.older[i].seq, next) {
                self.older.swap(kept, i);
                kept += 1;
            } else {
                freed += self.older[i].cost();
            }
        }
        self.older.truncate(kept);
        (freed, n - kept)
    }

    /// The newest version with `seq <= read_seq`.
    fn visible(&self, read_seq: SeqNo) -> Option<&KeyVersion> {
        if self.newest.seq <= read_seq {
            return Some(&self.newest);
        }
        self.older.iter().rev().find(|v| v.seq <= read_seq)
    }
}

/// An owned key-value pair as scans return it.
#[cfg(test)]
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// A key as the tree stores it: its first 16 bytes as a big-endian integer (zero-padded)
/// inline, then the whole key on the heap. Ordered exactly like the key bytes: when the
/// prefixes differ they decide (zero padding sorts a shorter key first, as byte order does);
/// when they are equal the bytes do. Most comparisons while searching the tree then touch only
/// the inline prefix instead of following a pointer to the key (a cache miss each). 16 bytes,
/// not 8: keys often share a longer prefix (`key:000000123456`, `user:42:...`), and with 8 a
/// point read over such keys spent most of its time in `memcmp` behind those pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MemKey {
    prefix: u128,
    bytes: Box<[u8]>,
}

fn key_prefix(key: &[u8]) -> u128 {
    let mut p = [0u8; 16];
    let n = key.len().min(16);
    p[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(p)
}

impl MemKey {
    fn new(key: &[u8]) -> Self {
        MemKey {
            prefix: key_prefix(key),
            bytes: Box::from(key),
        }
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.bytes.cmp(&other.bytes))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Filter bits per key at the filter's fullest (about 1% false positives); it is rebuilt
/// twice as big when its keys exceed that, so it holds 10 to 20 bits (1.25-2.5 bytes) per key.
/// Not counted in [`Memtable::bytes`]: small beside the [`KEY_OVERHEAD_BYTES`] charged per key.
const FILTER_BITS_PER_KEY: usize = 10;
/// Blocks of a memtable's first filter (4 KiB, about 3,200 keys).
const FILTER_BLOCKS_MIN: usize = 64;

/// A split-block bloom filter over the keys of one memtable (the layout of
/// [`crate::sst::filter`]: a key sets one bit in each of the eight words of one 64-byte block).
/// Keys are never removed from a memtable (a delete is a tombstone version), so the filter only
/// grows; when its keys exceed `FILTER_BITS_PER_KEY` bits each it is rebuilt from the tree at
/// twice the size (amortised: each key is re-added at most about once on average).
#[derive(Debug, Default)]
struct KeyFilter {
    blocks: Vec<[u64; 8]>,
}

impl KeyFilter {
    fn keys_max(&self) -> usize {
        self.blocks.len() * 512 / FILTER_BITS_PER_KEY
    }

    fn add(&mut self, h: u64) {
        let i = crate::sst::filter::block_index(h, self.blocks.len());
        let block = &mut self.blocks[i];
        for (w, word) in block.iter_mut().enumerate() {
            *word |= crate::sst::filter::bit(h, w);
        }
    }

    fn may_contain(&self, h: u64) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let block = &self.blocks[crate::sst::filter::block_index(h, self.blocks.len())];
        block
            .iter()
            .enumerate()
            .all(|(w, word)| word & crate::sst::filter::bit(h, w) != 0)
    }

    /// A filter of `blocks` blocks holding `keys`.
    fn rebuilt<'a>(blocks: usize, keys: impl Iterator<Item = &'a MemKey>) -> KeyFilter {
        let mut f = KeyFilter {
            blocks: vec![[0; 8]; blocks],
        };
        for k in keys {
            f.add(crate::sst::filter::key_hash(&k.bytes));
        }
        f
    }
}

/// The ordered in-memory table of one engine.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    map: BTreeMap<MemKey, KeyVersions>,
    /// Every key of `map` (see [`KeyFilter`]).
    filter: KeyFilter,
    /// A reusable search key for point reads (saves an allocation per `get`).
    probe: std::cell::RefCell<Option<MemKey>>,
    bytes: usize,
    versions: usize,
    /// The part of `bytes` held by versions other than each key's newest.
    older_bytes: usize,
}

/// What a write costs the memtable at most (used for the bound check before writing).
pub(crate) fn write_cost_bytes(key_len: usize, value_len: usize) -> usize {
    KEY_OVERHEAD_BYTES + key_len + VERSION_OVERHEAD_BYTES + value_len
}

impl Memtable {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Approximate memory held, in bytes (see the module doc).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of distinct keys (including keys whose newest version is a tombstone).
    pub(crate) fn keys(&self) -> usize {
        self.map.len()
    }

    /// Number of versions held.
    pub(crate) fn versions(&self) -> usize {
        self.versions
    }

    /// Adds the versions of encoded batch operations (see [`crate::batch`]), operation `i` at
    /// `first_seq + i`, TTLs counted from `write_time_ms`; `needed` as for
    /// [`Memtable::insert`]. Returns how many operations there were, or the offset of a
    /// malformed one (operations before it are applied).
    pub(crate) fn apply(
        &mut self,
        ops: &[u8],
        first_seq: SeqNo,
        write_time_ms: u64,
        needed: &dyn Fn(SeqNo, SeqNo) -> bool,
    ) -> std::result::Result<u32, usize> {
        let mut n = 0u32;
        for (i, op) in BatchIter::new(ops).enumerate() {
            n += 1;
            let seq = first_seq + i as u64;
            match op? {
                BatchOp::Put { key, value, ttl_ms } => {
                    let expires = ttl_ms.map_or(0, |t| write_time_ms.saturating_add(t).max(1));
                    self.insert(key, seq, Some(value), expires, needed);
                }
                BatchOp::Delete { key } => self.insert(key, seq, None, 0, needed),
            }
        }
        Ok(n)
    }

    /// Adds a version of `key` (`value` None = delete) and drops versions of `key` that no
    /// reader can see any more. `needed(lo, hi)` answers whether some reader may read at a
    /// sequence number in `[lo, hi)` (the engine knows its snapshots and its read point); a
    /// version is kept when a reader may read between it and the next newer version.
    pub(crate) fn insert(
        &mut self,
        key: &[u8],
        seq: SeqNo,
        value: Option<&[u8]>,
        expires_at_ms: u64,
        needed: &dyn Fn(SeqNo, SeqNo) -> bool,
    ) {
        let version = KeyVersion {
            seq,
            expires_at_ms,
            value: value.map(Box::from),
        };
        self.bytes += version.cost();
        self.versions += 1;
        // One search: the entry API finds the slot or the existing entry.
        match self.map.entry(MemKey::new(key)) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                self.bytes += KEY_OVERHEAD_BYTES + key.len();
                slot.insert(KeyVersions {
                    newest: version,
                    older: Vec::new(),
                });
                self.filter_add(key);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let entry = slot.get_mut();
                // Sequence numbers only grow: a new version is always the newest.
                debug_assert!(entry.newest.seq < seq, "sequence numbers must grow");
                let previous = std::mem::replace(&mut entry.newest, version);
                self.older_bytes += previous.cost();
                entry.older.push(previous);
                let (freed, dropped) = entry.prune(needed);
                self.bytes -= freed;
                self.older_bytes -= freed;
                self.versions -= dropped;
            }
        }
    }

    /// Drops, from every key, the older versions no reader can see any more, as
    /// [`Memtable::insert`] does for the key it writes. A write keeps the version it replaces
    /// while the write is not yet published (readers at the read point still see the old
    /// one); without another write of that key, only this pass frees it. Returns the bytes
    /// freed. Walks every key: the caller runs it when the memtable is full, not per write.
    pub(crate) fn prune(&mut self, needed: &dyn Fn(SeqNo, SeqNo) -> bool) -> usize {
        let (mut freed, mut dropped) = (0, 0);
        for entry in self.map.values_mut() {
            if !entry.older.is_empty() {
                let (f, d) = entry.prune(needed);
                freed += f;
                dropped += d;
                if entry.older.is_empty() {
                    // Its buffer is not charged to `bytes`; a key at rest should not keep it.
                    entry.older = Vec::new();
                }
            }
        }
        self.bytes -= freed;
        self.older_bytes -= freed;
        self.versions -= dropped;
        freed
    }

    /// Bytes held by versions other than each key's newest: at most what [`Memtable::prune`]
    /// can free.
    pub(crate) fn older_bytes(&self) -> usize {
        self.older_bytes
    }

    /// Adds a key just inserted into `map` to the filter, first rebuilding the filter twice
    /// as big if it is full.
    fn filter_add(&mut self, key: &[u8]) {
        if self.map.len() > self.filter.keys_max() {
            let blocks = (self.filter.blocks.len() * 2).max(FILTER_BLOCKS_MIN);
            // The new key is in `map` already, so the rebuild adds it.
            self.filter = KeyFilter::rebuilt(blocks, self.map.keys());
        } else {
            self.filter.add(crate::sst::filter::key_hash(key));
        }
        debug_assert!(self.filter.may_contain(crate::sst::filter::key_hash(key)));
    }

    /// The version of `key` a reader at `read_seq` sees, if the memtable has one: `Some(None)`
    /// is a tombstone or an expired value (the key is absent; older layers must not be read),
    /// `Some(Some((value, seq)))` a live value and the sequence number that wrote it.
    pub(crate) fn lookup(
        &self,
        key: &[u8],
        read_seq: SeqNo,
        now_ms: u64,
    ) -> Option<Option<(&[u8], SeqNo)>> {
        self.find(key)
            .and_then(|e| e.visible(read_seq))
            .map(|v| v.live_value(now_ms).map(|value| (value, v.seq)))
    }

    /// The entry of `key`, searched with the reusable probe key (no allocation per read).
    fn find(&self, key: &[u8]) -> Option<&KeyVersions> {
        if !self.filter.may_contain(crate::sst::filter::key_hash(key)) {
            return None;
        }
        let mut probe = self.probe.borrow_mut();
        let probe = match probe.as_mut() {
            Some(p) if p.bytes.len() == key.len() => {
                p.bytes.copy_from_slice(key);
                p.prefix = key_prefix(key);
                p
            }
            _ => probe.insert(MemKey::new(key)),
        };
        self.map.get(&*probe)
    }

    /// True when the memtable holds no version.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live value of `key` as of `read_seq` at wall-clock time `now_ms` (the engine uses
    /// [`Memtable::lookup`], which also reports tombstones; this is the tests' shorthand).
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8], read_seq: SeqNo, now_ms: u64) -> Option<&[u8]> {
        self.find(key)
            .and_then(|e| e.visible(read_seq))
            .and_then(|v| v.live_value(now_ms))
    }

    // A reference scan of one memtable, checked by the tests; the engine scans through
    // `crate::iter` (memtables and tables merged).
    #[cfg(test)]
    /// Up to `limit` live entries of `[start, end)` as of `read_seq`, in ascending order (or
    /// descending from below `end` when `reverse`), and whether more live entries remain.
    pub(crate) fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        read_seq: SeqNo,
        now_ms: u64,
    ) -> (Vec<KeyValue>, bool) {
        let mut out = Vec::new();
        if let Some(end) = end
            && end <= start
        {
            return (out, false);
        }
        let end = end.map(MemKey::new);
        let upper = match &end {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let start = MemKey::new(start);
        let range = self.map.range((Bound::Included(&start), upper));
        let live = |(k, e): (&MemKey, &KeyVersions)| {
            e.visible(read_seq)
                .and_then(|v| v.live_value(now_ms))
                .map(|v| (k.bytes.to_vec(), v.to_vec()))
        };
        let mut more = false;
        let mut collect = |it: &mut dyn Iterator<Item = (&MemKey, &KeyVersions)>| {
            for (k, e) in it {
                if let Some(kv) = live((k, e)) {
                    if out.len() == limit {
                        more = true;
                        break;
                    }
                    out.push(kv);
                }
            }
        };
        if reverse {
            collect(&mut range.rev());
        } else {
            collect(&mut { range });
        }
        (out, more)
    }
}

/// A key bound as the tree's key type.
fn owned_bound(b: Bound<&[u8]>) -> Bound<MemKey> {
    match b {
        Bound::Included(k) => Bound::Included(MemKey::new(k)),
        Bound::Excluded(k) => Bound::Excluded(MemKey::new(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Versions copied out of a memtable into two reused buffers — the bytes of their keys and
/// values back to back, and their positions and metadata — so that reading a chunk allocates
/// nothing per entry (an owned key and value per version cost two allocations and two frees).
#[derive(Debug, Default)]
pub(crate) struct MemChunk {
    bytes: Vec<u8>,
    entries: Vec<ChunkEntry>,
}

#[derive(Debug, Clone, Copy)]
struct ChunkEntry {
    key_at: usize,
    key_len: usize,
    value_len: usize,
    seq: SeqNo,
    kind: crate::sst::EntryKind,
    expires_at_ms: u64,
}

impl MemChunk {
    /// Empties the chunk (keeping its buffers).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// Versions held.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the chunk holds no version.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Version `i` (`i < len()`).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> crate::sst::EntryRef<'_> {
        let e = &self.entries[i];
        let value_at = e.key_at + e.key_len;
        crate::sst::EntryRef {
            key: &self.bytes[e.key_at..value_at],
            seq: e.seq,
            kind: e.kind,
            expires_at_ms: e.expires_at_ms,
            value: &self.bytes[value_at..value_at + e.value_len],
        }
    }

    /// The key of the last version (empty when none).
    pub(crate) fn last_key(&self) -> &[u8] {
        self.entries
            .last()
            .map_or(&[], |e| &self.bytes[e.key_at..e.key_at + e.key_len])
    }
}

impl KeyVersion {
    fn push_to(&self, key: &[u8], out: &mut MemChunk) {
        use crate::sst::EntryKind;
        let kind = match (&self.value, self.expires_at_ms) {
            (None, _) => EntryKind::Delete,
            (Some(_), 0) => EntryKind::Put,
            (Some(_), _) => EntryKind::PutTtl,
        };
        let value = self.value.as_deref().unwrap_or(&[]);
        let key_at = out.bytes.len();
        out.bytes.extend_from_slice(key);
        out.bytes.extend_from_slice(value);
        out.entries.push(ChunkEntry {
            key_at,
            key_len: key.len(),
            value_len: value.len(),
            seq: self.seq,
            kind,
            expires_at_ms: self.expires_at_ms,
        });
    }
}

impl Memtable {
    /// Appends to `out` every version of up to `keys_max` keys starting at `from`, in the
    /// order a merging iterator needs: ascending keys with versions newest first, or (when
    /// `reverse`) descending keys with versions oldest first. Returns whether keys remain
    /// beyond the last one appended.
    pub(crate) fn collect_versions(
        &self,
        from: Bound<&[u8]>,
        reverse: bool,
        keys_max: usize,
        out: &mut MemChunk,
    ) -> bool {
        let mut push = |k: &[u8], e: &KeyVersions| {
            if reverse {
                for v in &e.older {
                    v.push_to(k, out);
                }
                e.newest.push_to(k, out);
            } else {
                e.newest.push_to(k, out);
                for v in e.older.iter().rev() {
                    v.push_to(k, out);
                }
            }
        };
        // The keys' and values' bytes live in allocations of their own, scattered in memory by
        // the order of the writes: the chunk's entries are picked first and all their bytes
        // asked for, so that their cache misses overlap instead of following one another.
        let mut picked = Vec::with_capacity(keys_max.min(CHUNK_PICK_MAX));
        let from = owned_bound(from);
        let more = if reverse {
            let mut it = self.map.range((Bound::Unbounded, from.as_ref())).rev();
            picked.extend(it.by_ref().take(keys_max));
            it.next().is_some()
        } else {
            let mut it = self.map.range((from.as_ref(), Bound::Unbounded));
            picked.extend(it.by_ref().take(keys_max));
            it.next().is_some()
        };
        for (k, e) in &picked {
            prefetch(&k.bytes);
            if let Some(v) = &e.newest.value {
                prefetch(v);
            }
            if let Some(older) = e.older.first() {
                prefetch_item(older);
            }
        }
        for (k, e) in picked {
            push(&k.bytes, e);
        }
        more
    }
}

/// Entries [`Memtable::collect_versions`] reserves room for at once (more grow the list).
const CHUNK_PICK_MAX: usize = 256;

/// [`prefetch`] of the memory holding `item`.
#[inline(always)]
fn prefetch_item<T>(item: &T) {
    // SAFETY: `item` is a live reference, so its size_of::<T>() bytes are readable.
    prefetch(unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(item).cast::<u8>(), size_of::<T>())
    });
}

/// Asks the CPU to start loading the first two cache lines of `bytes` (a hint: it changes no
/// result).
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = bytes.as_ptr().cast::<i8>();
        // SAFETY: a prefetch only hints the cache: it reads nothing the program sees and
        // never faults, whatever the address; SSE is in every x86_64 CPU.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            if bytes.len() > 64 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests;
