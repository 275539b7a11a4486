//! [`TableReader`]: an open SSTable. The footer, index, filter and props are read and checked when
//! it opens; the index and filter stay in memory for its life (pinned, charged to the block
//! cache's budget). Data blocks come from the block cache or from one aligned O_DIRECT read,
//! checked (crc32c, structure) on every read from disk.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use super::block::{BlockKind, BlockRef};
use super::filter::Filter;
use super::footer::{FOOTER_BYTES, Footer};
use super::{BlockHandle, DATA_BLOCK_BYTES_MAX, Entry, EntryRef, check_trailer, corruption};
use crate::SeqNo;
use crate::cache::{BlockCache, CachedBlock, PooledBuf};
use crate::disk::{DiskFile, PAGE_SIZE_BYTES, align_down, align_up};
use crate::error::Result;
use crate::io::Io;

mod iter;
pub use iter::TableIter;

/// What a point lookup in one table found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableGet {
    /// The filter says the key is not in the table (no block was read).
    FilteredOut,
    /// The filter said maybe, but the table holds no version of the key visible at the read
    /// sequence number (a false positive, or only newer versions).
    NotFound,
    /// The newest version visible at the read sequence number (possibly a tombstone).
    Found(Entry),
}

/// One data block of a table as its reader sees it: where it is on disk (decoded from the
/// index once, at open), and a direct handle to its cached copy.
///
/// The handle is weak: the cache alone owns cached blocks (plus readers holding one), so
/// eviction frees a block's buffer as before; an evicted block's handle just fails to upgrade
/// (its small `Rc` header, 48 bytes, stays until the handle is replaced or the table closes).
/// With it, a seek that finds its block cached reads this slot and the block's `Rc` header —
/// two cache lines — instead of the index entry, the cache map's control bytes and bucket and
/// the cache's slot (see `TableReader::cached_block`).
struct BlockSlot {
    handle: BlockHandle,
    cached: Cell<Weak<CachedBlock>>,
}

impl std::fmt::Debug for BlockSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSlot")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl BlockSlot {
    /// The cached block, if the handle still reaches it.
    #[inline]
    fn cached(&self) -> Option<Rc<CachedBlock>> {
        let w = self.cached.take();
        let b = w.upgrade();
        self.cached.set(w);
        b
    }
}

/// An open SSTable.
#[derive(Debug)]
pub struct TableReader {
    file: DiskFile,
    file_number: u64,
    size_bytes: u64,
    footer: Footer,
    /// The index block (validated), pinned.
    index: Box<[u8]>,
    /// One per data block, in index order (pinned, charged with the index).
    blocks: Box<[BlockSlot]>,
    filter: Filter,
    smallest: Vec<u8>,
    largest: Vec<u8>,
    cache: Rc<BlockCache>,
    pinned_bytes: usize,
}

impl Drop for TableReader {
    fn drop(&mut self) {
        self.cache.unpin(self.pinned_bytes);
    }
}

/// Reads `size` bytes at `offset` (any alignment) with one aligned read into a pooled buffer;
/// returns the buffer and where the bytes start in it.
async fn read_range(
    file: &DiskFile,
    cache: &BlockCache,
    offset: u64,
    size: usize,
    file_size: u64,
) -> Result<(PooledBuf, usize)> {
    let start = align_down(offset);
    let end = align_up(offset + size as u64);
    let mut buf = cache.pool().get((end - start) as usize);
    let want = (end - start) as usize;
    let got = file.read_into(start, &mut buf[..want]).await?;
    let delta = (offset - start) as usize;
    if got < delta + size {
        return Err(corruption(
            file.path(),
            offset,
            format!("block of {size} bytes runs past the end of the file ({file_size} bytes)"),
        ));
    }
    Ok((buf, delta))
}

impl TableReader {
    /// Opens table `file_number` at `path`, reading and checking its footer, index, filter and
    /// props.
    pub(crate) async fn open(
        io: &Io,
        path: &Path,
        file_number: u64,
        cache: Rc<BlockCache>,
    ) -> Result<Rc<TableReader>> {
        let file = DiskFile::open(io, path).await?;
        let size = file.size().await?;
        if size < PAGE_SIZE_BYTES as u64 || size % PAGE_SIZE_BYTES as u64 != 0 {
            return Err(corruption(
                path,
                size,
                format!("table size {size} is not a positive multiple of {PAGE_SIZE_BYTES}"),
            ));
        }
        let footer_at = size - FOOTER_BYTES as u64;
        let (buf, delta) = read_range(&file, &cache, footer_at, FOOTER_BYTES, size).await?;
        let footer = Footer::decode(&buf[delta..delta + FOOTER_BYTES], size)
            .map_err(|d| corruption(path, footer_at, d))?;
        drop(buf);
        if footer.file_number != file_number {
            return Err(corruption(
                path,
                footer_at,
                format!(
                    "footer names table {} but the file is table {file_number}",
                    footer.file_number
                ),
            ));
        }
        let index = read_meta(&file, &cache, footer.index(), size).await?;
        let index_block = BlockRef::parse(&index, BlockKind::Plain)
            .map_err(|d| corruption(path, footer.index_offset, format!("index block: {d}")))?;
        if index_block.len() != footer.data_blocks as usize || index_block.is_empty() {
            return Err(corruption(
                path,
                footer.index_offset,
                format!(
                    "index has {} entries for {} data blocks",
                    index_block.len(),
                    footer.data_blocks
                ),
            ));
        }
        let mut blocks = Vec::with_capacity(index_block.len());
        for i in 0..index_block.len() {
            let h = BlockHandle::decode(index_block.entry(i).1).filter(|h| {
                h.size as usize > super::BLOCK_TRAILER_BYTES
                    && h.offset.saturating_add(u64::from(h.size)) <= footer.data_bytes
            });
            let Some(handle) = h else {
                return Err(corruption(
                    path,
                    footer.index_offset,
                    format!("index entry {i} holds a bad block handle"),
                ));
            };
            // A table just written (flush, compaction) had its blocks cached by its writer:
            // linked now, the first reader of each block skips the cache's map.
            let cached = cache
                .peek((file_number, handle.offset))
                .map_or_else(Weak::new, |b| Rc::downgrade(&b));
            blocks.push(BlockSlot {
                handle,
                cached: Cell::new(cached),
            });
        }
        let largest = index_block.key(index_block.len() - 1).to_vec();
        let filter_raw = read_meta(&file, &cache, footer.filter(), size).await?;
        let filter = Filter::decode(&filter_raw)
            .map_err(|d| corruption(path, footer.filter_offset, format!("filter: {d}")))?;
        let props = read_meta(&file, &cache, footer.props(), size).await?;
        let props_block = BlockRef::parse(&props, BlockKind::Plain)
            .map_err(|d| corruption(path, footer.props_offset, format!("props block: {d}")))?;
        let prop = |name: &[u8]| {
            let i = props_block.lower_bound(name);
            (i < props_block.len() && props_block.key(i) == name)
                .then(|| props_block.entry(i).1.to_vec())
        };
        let smallest = prop(b"smallest")
            .ok_or_else(|| corruption(path, footer.props_offset, "props lack `smallest`"))?;
        if prop(b"largest").as_deref() != Some(largest.as_slice()) || smallest > largest {
            return Err(corruption(
                path,
                footer.props_offset,
                "props disagree with the index about the key range",
            ));
        }
        let pinned_bytes =
            index.len() + filter.size_bytes() + blocks.len() * std::mem::size_of::<BlockSlot>();
        cache.pin(pinned_bytes);
        Ok(Rc::new(TableReader {
            file,
            file_number,
            size_bytes: size,
            footer,
            index: index.into_boxed_slice(),
            blocks: blocks.into_boxed_slice(),
            filter,
            smallest,
            largest,
            cache,
            pinned_bytes,
        }))
    }

    /// Drops this table's data blocks from the block cache (the table is being deleted), and
    /// its direct handles to them.
    pub fn evict_cached_blocks(&self) {
        for slot in self.blocks.iter() {
            self.cache.remove((self.file_number, slot.handle.offset));
            slot.cached.set(Weak::new());
        }
    }

    /// Another handle to the table's open file.
    pub(crate) fn file(&self) -> std::rc::Rc<crate::io::File> {
        self.file.shared()
    }

    /// The table's number.
    pub fn file_number(&self) -> u64 {
        self.file_number
    }

    /// The table's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// File size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Smallest user key.
    pub fn smallest(&self) -> &[u8] {
        &self.smallest
    }

    /// Largest user key.
    pub fn largest(&self) -> &[u8] {
        &self.largest
    }

    /// Versions stored.
    pub fn entries(&self) -> u64 {
        self.footer.entries
    }

    /// Largest sequence number stored.
    pub fn seq_max(&self) -> SeqNo {
        self.footer.seq_max
    }

    #[cfg(test)]
    pub(crate) fn footer_for_tests(&self) -> Footer {
        self.footer
    }

    /// The handle of the data block a lookup of `key` reads first.
    #[cfg(test)]
    pub(crate) fn block_for_tests(&self, key: &[u8]) -> BlockHandle {
        self.handle(self.index().lower_bound(key))
    }

    /// How many data blocks have a live direct handle, and how many there are.
    #[cfg(test)]
    pub(crate) fn linked_blocks_for_tests(&self) -> (usize, usize) {
        let linked = self.blocks.iter().filter(|s| s.cached().is_some()).count();
        (linked, self.blocks.len())
    }

    fn index(&self) -> BlockRef<'_> {
        BlockRef::trusted(&self.index)
    }

    fn block_count(&self) -> usize {
        self.footer.data_blocks as usize
    }

    fn handle(&self, i: usize) -> BlockHandle {
        // Every index entry was checked (and decoded) when the table opened.
        self.blocks.get(i).map(|s| s.handle).unwrap_or_default()
    }

    /// Which data block a seek of `key` reads first (`block_count()` when `key` is past the
    /// table's last key).
    #[inline]
    pub fn seek_block_index(&self, key: &[u8]) -> usize {
        self.index().lower_bound(key)
    }

    /// Prefetch, stage 1 of 3 (see [`crate::iter::merge::MergeIter::seek_ge`]): starts loading
    /// block `i`'s slot. Hints only: nothing is read, counted or changed.
    #[inline]
    pub fn prefetch_slot(&self, i: usize) {
        if let Some(slot) = self.blocks.get(i) {
            prefetch_lines((slot as *const BlockSlot).cast(), 1);
        }
    }

    /// Prefetch, stage 2: starts loading the `Rc` header of block `i`'s cached copy (the
    /// slot's weak pointer, without dereferencing it).
    #[inline]
    pub fn prefetch_block_header(&self, i: usize) {
        if let Some(slot) = self.blocks.get(i) {
            let w = slot.cached.take();
            // The counts sit just before the value in the `Rc`'s allocation.
            let p = w.as_ptr().cast::<u8>();
            prefetch_lines(p.wrapping_sub(16), 1);
            prefetch_lines(p, 1);
            slot.cached.set(w);
        }
    }

    /// Prefetch, stage 3: starts loading the first lines of block `i`'s data (its header,
    /// key prefixes and offsets) if it is cached.
    #[inline]
    pub fn prefetch_block_data(&self, i: usize) {
        if let Some(b) = self.blocks.get(i).and_then(BlockSlot::cached) {
            let d = b.data();
            prefetch_lines(d.as_ptr(), PREFETCH_BLOCK_LINES.min(d.len().div_ceil(64)));
        }
    }

    /// Data block `i` if it is cached (marked used, counted as a hit), without I/O; None when
    /// it is not (nothing counted: the caller goes on to [`TableReader::data_block`]).
    #[inline]
    fn cached_block(&self, i: usize) -> Option<Rc<CachedBlock>> {
        let slot = self.blocks.get(i)?;
        if let Some(b) = slot.cached() {
            b.touch();
            self.cache.count_hit();
            return Some(b);
        }
        let b = self
            .cache
            .get_if_cached((self.file_number, slot.handle.offset))?;
        slot.cached.set(Rc::downgrade(&b));
        Some(b)
    }

    /// Data block `i` (`< block_count()`), from the cache or the disk (then cached when
    /// `fill_cache`). A block found in the cache before is reached through the table's
    /// direct handle ([`BlockSlot`]) without a lookup in the cache's map.
    async fn data_block(&self, i: usize, fill_cache: bool) -> Result<Rc<CachedBlock>> {
        debug_assert!(i < self.blocks.len());
        let Some(slot) = self.blocks.get(i) else {
            return Err(crate::error::Error::InvalidArgument(format!(
                "data block {i} of {} blocks requested from {}",
                self.blocks.len(),
                self.path().display()
            )));
        };
        if let Some(b) = self.cached_block(i) {
            return Ok(b);
        }
        self.cache.count_miss();
        let h = slot.handle;
        let key = (self.file_number, h.offset);
        let (buf, delta) = read_range(
            &self.file,
            &self.cache,
            h.offset,
            h.size as usize,
            self.size_bytes,
        )
        .await?;
        let block = Rc::new(decode_data_block(self.path(), &self.cache, buf, delta, h)?);
        if fill_cache && self.cache.insert(key, block.clone()) {
            slot.cached.set(Rc::downgrade(&block));
        }
        Ok(block)
    }

    /// The newest version of `key` with a sequence number `<= read_seq`. `hash` is
    /// `filter::key_hash(key)`, computed once per lookup.
    pub async fn get(&self, key: &[u8], hash: u64, read_seq: SeqNo) -> Result<TableGet> {
        if key < self.smallest.as_slice() || key > self.largest.as_slice() {
            return Ok(TableGet::FilteredOut);
        }
        if !self.filter.may_contain(hash) {
            return Ok(TableGet::FilteredOut);
        }
        let mut bi = self.index().lower_bound(key);
        while bi < self.block_count() {
            let block = self.data_block(bi, true).await?;
            let b = BlockRef::trusted(block.data());
            let mut i = b.lower_bound(key);
            while i < b.len() {
                let e = b.data_entry(i);
                if e.key != key {
                    return Ok(TableGet::NotFound);
                }
                if e.seq <= read_seq {
                    return Ok(TableGet::Found(e.to_owned()));
                }
                i += 1;
            }
            // The key's versions continue in the next block.
            bi += 1;
        }
        Ok(TableGet::NotFound)
    }
}

async fn read_meta(
    file: &DiskFile,
    cache: &BlockCache,
    h: BlockHandle,
    file_size: u64,
) -> Result<Vec<u8>> {
    let (buf, delta) = read_range(file, cache, h.offset, h.size as usize, file_size).await?;
    let (payload, code) = check_trailer(&buf[delta..delta + h.size as usize])
        .map_err(|d| corruption(file.path(), h.offset, d))?;
    if code != 0 {
        return Err(corruption(
            file.path(),
            h.offset,
            format!("meta block has compression code {code}; meta blocks are never compressed"),
        ));
    }
    Ok(payload.to_vec())
}

/// Checks and decodes a data block that sits at `delta` in `buf`.
fn decode_data_block(
    path: &Path,
    cache: &BlockCache,
    mut buf: PooledBuf,
    delta: usize,
    h: BlockHandle,
) -> Result<CachedBlock> {
    let raw = &buf[delta..delta + h.size as usize];
    let (payload, code) = check_trailer(raw).map_err(|d| corruption(path, h.offset, d))?;
    let block = match code {
        0 => {
            let len = payload.len();
            if delta > 0 {
                buf.copy_within(delta..delta + len, 0);
            }
            CachedBlock::new(buf, len)
        }
        1 => {
            if payload.len() < 4 {
                return Err(corruption(
                    path,
                    h.offset,
                    "compressed block lacks its length",
                ));
            }
            let len = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
            // Checked before allocating: the length comes from the file.
            if len > DATA_BLOCK_BYTES_MAX {
                return Err(corruption(
                    path,
                    h.offset,
                    format!(
                        "compressed block claims {len} bytes uncompressed, more than a data \
                         block can hold ({DATA_BLOCK_BYTES_MAX})"
                    ),
                ));
            }
            let mut out = cache.pool().get(len);
            let n = zstd::bulk::decompress_to_buffer(&payload[4..], &mut out[..len])
                .map_err(|e| corruption(path, h.offset, format!("zstd: {e}")))?;
            if n != len {
                return Err(corruption(
                    path,
                    h.offset,
                    format!("zstd block decompressed to {n} bytes, expected {len}"),
                ));
            }
            CachedBlock::new(out, len)
        }
        other => {
            return Err(corruption(
                path,
                h.offset,
                format!("unknown compression code {other}"),
            ));
        }
    };
    BlockRef::parse(block.data(), BlockKind::Data)
        .map_err(|d| corruption(path, h.offset, format!("data block: {d}")))?;
    Ok(block)
}

/// Cache lines of a data block's start that a seek prefetches: the header, the key prefixes
/// and the offsets of a 4 KiB block of ~30 entries (16-byte keys, 100-byte values).
const PREFETCH_BLOCK_LINES: usize = 6;

/// Asks the CPU to start loading `lines` cache lines from `p` (a hint: it never faults, so any
/// address will do; nothing happens on other architectures).
#[inline(always)]
// The intrinsic is an `unsafe fn` in older toolchains and safe in newer ones.
#[allow(unused_unsafe)]
fn prefetch_lines(p: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..lines {
        // SAFETY: a prefetch is a hint that reads nothing architecturally and never faults,
        // whatever the address (SSE, which provides it, is part of x86_64's baseline).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(64 * i).cast(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
}

/// Where a table lives: `dir/NNNNNN.sst`.
pub fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(super::builder::table_file_name(number))
}
