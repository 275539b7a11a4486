//! The block format shared by data, index and props blocks: a fixed-width array of 8-byte key
//! prefixes searched without branches, then entry offsets, then the entries.
//!
//! ```text
//! offset 0        4            8                 8+8n              8+12n
//! +---------------+------------+-----------------+-----------------+-----------------------+
//! | n (u32 LE)    | shared_len | prefix[0..n]    | offset[0..n]    | entry 0 | entry 1 ... |
//! |               | (u32 LE)   | u64 LE each     | u32 LE each     |                       |
//! +---------------+------------+-----------------+-----------------+-----------------------+
//! entry i at offset[i] (from the block start):
//! +------------------+--------------------+---------+-----------+
//! | key_len (varint) | value_len (varint) | key     | value     |
//! +------------------+--------------------+---------+-----------+
//! ```
//!
//! `shared_len` is the length of the prefix common to every key of the block (that of its first
//! and last keys). `prefix[i]` is the 8 bytes of key `i` that follow it, read as a big-endian
//! integer (zero-padded when the key is shorter), so comparing prefixes as integers orders
//! keys like comparing those bytes, and keys that share a long common prefix (`tenant-42/...`)
//! still get distinct prefixes. A lookup compares the target with the shared part once, counts the prefixes below the target's (a branch-free loop the compiler
//! turns into AVX2 compares; for large blocks such as an index, a branch-free binary search),
//! then compares whole keys only among entries whose prefix equals the target's. For keys that
//! differ in their first 8 bytes that is zero full-key comparisons. The `block_search` criterion
//! benchmark (`cargo bench -p corekv-bench --bench block_search`) compares this with a plain
//! binary search over whole keys.
//!
//! Entries are sorted by key (data blocks: by key, then by sequence number descending, so one
//! key's versions are adjacent, newest first). Keys may repeat in data blocks (versions) and index blocks (a key whose versions span
//! blocks ends each of them).

use super::{
    EntryRef, data_value_len, decode_data_value, encode_data_value, put_varint, varint_len,
};

/// Bytes before the prefix array.
const HEADER_BYTES: usize = 8;
/// Per-entry bytes of the prefix and offset arrays.
const SLOT_BYTES: usize = 12;
/// Blocks with more entries than this use a binary search over the prefixes.
const LINEAR_SEARCH_MAX: usize = 64;

/// The first 8 bytes of `key` as a big-endian integer, zero-padded.
#[inline]
pub fn key_prefix(key: &[u8]) -> u64 {
    if key.len() >= 8 {
        u64::from_be_bytes([
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
        ])
    } else {
        let mut b = [0u8; 8];
        b[..key.len()].copy_from_slice(key);
        u64::from_be_bytes(b)
    }
}

/// Accumulates entries and encodes a block.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    /// (start, length) of each key in `entries`.
    keys: Vec<(u32, u32)>,
    /// Entry offsets relative to the start of the entry area.
    offsets: Vec<u32>,
    entries: Vec<u8>,
}

impl BlockBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Encoded size of the block as it stands.
    pub fn size_bytes(&self) -> usize {
        HEADER_BYTES + SLOT_BYTES * self.keys.len() + self.entries.len()
    }

    /// Encoded size of one more entry with these key and value lengths.
    pub fn entry_cost_bytes(key_len: usize, value_len: usize) -> usize {
        SLOT_BYTES + varint_len(key_len as u64) + varint_len(value_len as u64) + key_len + value_len
    }

    fn push_header(&mut self, key: &[u8], value_len: usize) {
        self.offsets.push(self.entries.len() as u32);
        put_varint(&mut self.entries, key.len() as u64);
        put_varint(&mut self.entries, value_len as u64);
        self.keys
            .push((self.entries.len() as u32, key.len() as u32));
        self.entries.extend_from_slice(key);
    }

    /// Adds a plain key-value entry (index and props blocks).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.push_header(key, value.len());
        self.entries.extend_from_slice(value);
    }

    /// Adds a data entry (its value carries the tag, expiry and user value).
    pub fn add_entry(&mut self, e: &EntryRef<'_>) {
        self.push_header(e.key, data_value_len(e));
        encode_data_value(e, &mut self.entries);
    }

    /// Size a data entry would add.
    pub fn data_entry_cost_bytes(e: &EntryRef<'_>) -> usize {
        Self::entry_cost_bytes(e.key.len(), data_value_len(e))
    }

    /// Appends the encoded block to `out` and resets the builder.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        let n = self.keys.len();
        let base = (HEADER_BYTES + SLOT_BYTES * n) as u32;
        let key = |&(at, len): &(u32, u32)| &self.entries[at as usize..(at + len) as usize];
        let shared = match (self.keys.first(), self.keys.last()) {
            (Some(a), Some(b)) if n > 1 => common_prefix_len(key(a), key(b)),
            _ => 0,
        };
        out.reserve(self.size_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&(shared as u32).to_le_bytes());
        for k in &self.keys {
            out.extend_from_slice(&key_prefix(&key(k)[shared..]).to_le_bytes());
        }
        for o in &self.offsets {
            out.extend_from_slice(&(base + o).to_le_bytes());
        }
        out.extend_from_slice(&self.entries);
        self.keys.clear();
        self.offsets.clear();
        self.entries.clear();
    }
}

/// A validated block: every accessor is in bounds (checked once by [`BlockRef::parse`]).
#[derive(Debug, Clone, Copy)]
pub struct BlockRef<'a> {
    data: &'a [u8],
    n: usize,
    shared: usize,
}

/// Whether a block's values are data values (tag + ...) to be validated as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Data,
    Plain,
}

impl<'a> BlockRef<'a> {
    /// Checks the structure of `data` (counts, offsets, lengths, order, data values) so later
    /// accesses cannot fail. Returns a description of the first problem.
    pub fn parse(data: &'a [u8], kind: BlockKind) -> Result<BlockRef<'a>, String> {
        if data.len() < HEADER_BYTES {
            return Err(format!(
                "block of {} bytes is shorter than its header",
                data.len()
            ));
        }
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let slots_end = n
            .checked_mul(SLOT_BYTES)
            .and_then(|s| s.checked_add(HEADER_BYTES))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| format!("block claims {n} entries but has {} bytes", data.len()))?;
        let shared = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
        let b = BlockRef { data, n, shared };
        let mut prev_end = slots_end;
        let mut common: &[u8] = &[];
        for i in 0..n {
            let off = b.offset(i);
            if off != prev_end {
                return Err(format!("entry {i} starts at {off}, expected {prev_end}"));
            }
            let (k, v, end) = decode_entry(data, off)
                .ok_or_else(|| format!("entry {i} at {off} runs past the block"))?;
            if i == 0 {
                common = k
                    .get(..shared)
                    .ok_or("shared prefix longer than the first key")?;
            }
            if !k.starts_with(common) || b.prefix(i) != key_prefix(&k[shared..]) {
                return Err(format!("entry {i}: prefix does not match its key"));
            }
            if kind == BlockKind::Data && decode_data_value(k, v).is_none() {
                return Err(format!("entry {i}: malformed tag"));
            }
            if i > 0 {
                let pk = b.key(i - 1);
                let ordered = match kind {
                    // Index keys repeat when one key's versions span blocks.
                    BlockKind::Plain => pk <= k,
                    BlockKind::Data => pk < k || (pk == k && b.seq_unchecked(i - 1) > seq_of(v)),
                };
                if !ordered {
                    return Err(format!("entry {i} is out of order"));
                }
            }
            prev_end = end;
        }
        if prev_end != data.len() {
            return Err(format!(
                "block has {} trailing bytes after its last entry",
                data.len() - prev_end
            ));
        }
        Ok(b)
    }

    /// Wraps a block that [`BlockRef::parse`] accepted before.
    #[inline]
    pub fn trusted(data: &'a [u8]) -> BlockRef<'a> {
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let shared = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
        BlockRef { data, n, shared }
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the block holds no entry.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    #[inline]
    fn prefix(&self, i: usize) -> u64 {
        let at = HEADER_BYTES + 8 * i;
        let d = &self.data[at..at + 8];
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    #[inline]
    fn prefixes(&self) -> &'a [u8] {
        &self.data[HEADER_BYTES..HEADER_BYTES + 8 * self.n]
    }

    #[inline]
    fn offset(&self, i: usize) -> usize {
        let at = HEADER_BYTES + 8 * self.n + 4 * i;
        let d = &self.data[at..at + 4];
        u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize
    }

    /// Key and value of entry `i`.
    #[inline]
    pub fn entry(&self, i: usize) -> (&'a [u8], &'a [u8]) {
        match decode_entry(self.data, self.offset(i)) {
            Some((k, v, _)) => (k, v),
            // parse() checked every entry; an empty pair keeps this total without a panic.
            None => (&[], &[]),
        }
    }

    /// Key of entry `i`.
    #[inline]
    pub fn key(&self, i: usize) -> &'a [u8] {
        self.entry(i).0
    }

    fn seq_unchecked(&self, i: usize) -> u64 {
        seq_of(self.entry(i).1)
    }

    /// Entry `i` of a data block.
    #[inline]
    pub fn data_entry(&self, i: usize) -> EntryRef<'a> {
        let (k, v) = self.entry(i);
        decode_data_value(k, v).unwrap_or(EntryRef {
            key: k,
            seq: 0,
            kind: super::EntryKind::Delete,
            expires_at_ms: 0,
            value: &[],
        })
    }

    /// Index of the first entry whose key is `>= target` (`len()` if none), using the prefix
    /// array: entries `[lt, le)` share the target's prefix; only they need whole-key
    /// comparisons (none when the range is empty, one when it holds one entry, a binary search
    /// over it otherwise — keys sharing long prefixes degrade gracefully).
    #[inline]
    pub fn lower_bound(&self, target: &[u8]) -> usize {
        if self.shared > 0 && self.n > 0 {
            let common = &self.key(0)[..self.shared];
            let head = &target[..self.shared.min(target.len())];
            match head.cmp(common) {
                std::cmp::Ordering::Less => return 0,
                std::cmp::Ordering::Greater => return self.n,
                // A target that is a proper prefix of the shared part is below every key.
                std::cmp::Ordering::Equal if target.len() < self.shared => return 0,
                std::cmp::Ordering::Equal => {}
            }
        }
        let p = key_prefix(&target[self.shared.min(target.len())..]);
        let (lt, le) = if self.n <= LINEAR_SEARCH_MAX {
            count_less_and_equal(self.prefixes(), p)
        } else {
            let lt = self.prefix_lower_bound(p);
            let le = if lt < self.n && self.prefix(lt) == p {
                self.prefix_upper_bound(p)
            } else {
                lt
            };
            (lt, le)
        };
        match le - lt {
            0 => lt,
            1 => lt + usize::from(self.key(lt) < target),
            _ => self.binary_in(lt, le, target),
        }
    }

    /// First `i` in `[lo, hi)` with `key(i) >= target` (`hi` if none).
    fn binary_in(&self, mut lo: usize, mut hi: usize, target: &[u8]) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// First `i` with `prefix(i) >= p`, by a branch-free binary search.
    #[inline]
    fn prefix_lower_bound(&self, p: u64) -> usize {
        if self.n == 0 {
            return 0;
        }
        let mut base = 0usize;
        let mut size = self.n;
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            base = if self.prefix(mid) < p { mid } else { base };
            size -= half;
        }
        base + usize::from(self.prefix(base) < p)
    }

    /// First `i` with `prefix(i) > p`, by a branch-free binary search.
    #[inline]
    fn prefix_upper_bound(&self, p: u64) -> usize {
        if self.n == 0 {
            return 0;
        }
        let mut base = 0usize;
        let mut size = self.n;
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            base = if self.prefix(mid) <= p { mid } else { base };
            size -= half;
        }
        base + usize::from(self.prefix(base) <= p)
    }

    /// [`BlockRef::lower_bound`] by a plain binary search over whole keys (the baseline the
    /// benchmark compares with).
    pub fn lower_bound_binary(&self, target: &[u8]) -> usize {
        self.binary_in(0, self.n, target)
    }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn seq_of(value: &[u8]) -> u64 {
    value.get(..8).map_or(0, |t| {
        u64::from_le_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]) >> 8
    })
}

/// Decodes the entry at `off`: (key, value, end offset).
#[inline]
fn decode_entry(data: &[u8], off: usize) -> Option<(&[u8], &[u8], usize)> {
    let mut pos = off;
    let klen = super::get_varint(data, &mut pos)? as usize;
    let vlen = super::get_varint(data, &mut pos)? as usize;
    let kend = pos.checked_add(klen)?;
    let vend = kend.checked_add(vlen)?;
    if vend > data.len() {
        return None;
    }
    Some((&data[pos..kend], &data[kend..vend], vend))
}

/// How many of the little-endian u64 `prefixes` are below `p`, and how many are at most `p`:
/// no branches, so the loop vectorises (AVX2 when the CPU has it).
#[inline]
fn count_less_and_equal(prefixes: &[u8], p: u64) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the function only reads the
            // slice it is given.
            return unsafe { count_avx2(prefixes, p) };
        }
    }
    count_portable(prefixes, p)
}

#[inline(always)]
fn count_portable(prefixes: &[u8], p: u64) -> (usize, usize) {
    let mut lt = 0usize;
    let mut le = 0usize;
    for c in prefixes.chunks_exact(8) {
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        lt += usize::from(x < p);
        le += usize::from(x <= p);
    }
    (lt, le)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_avx2(prefixes: &[u8], p: u64) -> (usize, usize) {
    count_portable(prefixes, p)
}

#[cfg(test)]
mod tests {
    use super::super::EntryKind;
    use super::*;

    fn plain_block(keys: &[&[u8]]) -> Vec<u8> {
        let mut b = BlockBuilder::new();
        for k in keys {
            b.add(k, b"v");
        }
        let mut out = Vec::new();
        b.finish_into(&mut out);
        out
    }

    #[test]
    fn prefix_order_matches_byte_order() {
        let keys: [&[u8]; 8] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\x01",
            b"abcdefgh",
            b"abcdefgh\0",
            b"b",
        ];
        for w in keys.windows(2) {
            assert!(key_prefix(w[0]) <= key_prefix(w[1]), "{w:?}");
        }
    }

    #[test]
    fn lower_bound_agrees_with_binary_search_for_all_sizes() {
        // Keys sharing long prefixes force the full-key tie-break; sizes cross the linear limit.
        // Families: mixed prefixes; one long shared prefix (the block's `shared_len`), with
        // ties after it too.
        let families: [fn(usize) -> Vec<u8>; 2] = [
            |i| {
                if i % 3 == 0 {
                    format!("samepfx-{i:06}").into_bytes()
                } else {
                    format!("{i:04}").into_bytes()
                }
            },
            |i| {
                format!(
                    "tenant-0042/obj/{}{i:05}",
                    if i % 2 == 0 { "aaaaaaaaaa" } else { "" }
                )
                .into_bytes()
            },
        ];
        for (n, family) in [0usize, 1, 2, 7, 63, 64, 65, 200, 1000]
            .into_iter()
            .flat_map(|n| families.iter().map(move |f| (n, f)))
        {
            let mut keys: Vec<Vec<u8>> = (0..n).map(family).collect();
            keys.sort();
            keys.dedup();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let data = plain_block(&refs);
            let b = BlockRef::parse(&data, BlockKind::Plain).unwrap();
            assert_eq!(b.len(), keys.len());
            let mut probes: Vec<Vec<u8>> = keys.clone();
            probes.extend(keys.iter().map(|k| [k.as_slice(), b"\0"].concat()));
            probes.extend(keys.iter().map(|k| k[..k.len() - 1].to_vec()));
            probes.push(Vec::new());
            probes.push(vec![0xff; 20]);
            probes.push(b"tenant-0042/".to_vec());
            probes.push(b"tenant-0042/obj/zzz".to_vec());
            probes.push(b"tenant-0041/zzz".to_vec());
            for t in &probes {
                let want = keys.partition_point(|k| k.as_slice() < t.as_slice());
                assert_eq!(b.lower_bound(t), want, "n={n} target={t:?}");
                assert_eq!(b.lower_bound_binary(t), want, "n={n} target={t:?}");
            }
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(b.entry(i), (k.as_slice(), &b"v"[..]));
            }
        }
    }

    #[test]
    fn data_blocks_keep_versions_newest_first() {
        let mut b = BlockBuilder::new();
        let e = |key: &'static [u8], seq, kind| EntryRef {
            key,
            seq,
            kind,
            expires_at_ms: if kind == EntryKind::PutTtl { 77 } else { 0 },
            value: if kind == EntryKind::Delete {
                b""
            } else {
                b"val"
            },
        };
        let entries = [
            e(b"a", 9, EntryKind::Put),
            e(b"a", 3, EntryKind::Delete),
            e(b"b", 5, EntryKind::PutTtl),
        ];
        for x in &entries {
            b.add_entry(x);
        }
        let mut out = Vec::new();
        b.finish_into(&mut out);
        let blk = BlockRef::parse(&out, BlockKind::Data).unwrap();
        for (i, x) in entries.iter().enumerate() {
            assert_eq!(blk.data_entry(i), *x);
        }
        // Same key with a rising sequence number is rejected as out of order.
        let mut bad = BlockBuilder::new();
        bad.add_entry(&e(b"a", 3, EntryKind::Put));
        bad.add_entry(&e(b"a", 9, EntryKind::Put));
        let mut out = Vec::new();
        bad.finish_into(&mut out);
        assert!(BlockRef::parse(&out, BlockKind::Data).is_err());
    }

    #[test]
    fn parse_rejects_damaged_blocks_without_panicking() {
        let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("key{i:03}").into_bytes()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let data = plain_block(&refs);
        BlockRef::parse(&data, BlockKind::Plain).unwrap();
        let mut rejected = 0;
        for i in 0..data.len() {
            for bit in [0x01u8, 0x80] {
                let mut d = data.clone();
                d[i] ^= bit;
                if BlockRef::parse(&d, BlockKind::Plain).is_err() {
                    rejected += 1;
                }
            }
        }
        // Most single-bit flips break the structure (the rest are caught by the crc).
        assert!(rejected > data.len(), "only {rejected} flips rejected");
        for cut in 0..data.len() {
            assert!(BlockRef::parse(&data[..cut], BlockKind::Plain).is_err() || cut == data.len());
        }
    }
}
