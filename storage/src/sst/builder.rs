//! [`TableBuilder`]: writes one SSTable from entries given in order, through O_DIRECT writes of
//! whole pages (see [`super`] for the layout).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::block::BlockBuilder;
use super::filter::FilterBuilder;
use super::footer::{FOOTER_BYTES, Footer};
use super::{
    BLOCK_TRAILER_BYTES, BlockHandle, Compression, DATA_BLOCK_BYTES_MAX, EntryKind, EntryRef,
    SEQ_MAX, append_trailer,
};
use crate::SeqNo;
use crate::cache::{BlockCache, CachedBlock};
use crate::disk::{DiskFile, PAGE_SIZE_BYTES, align_down, align_up};
use crate::error::{Error, Result};
use crate::io::Io;

/// Bytes gathered before the builder issues a write (a multiple of the page size).
const WRITE_CHUNK_BYTES: usize = 256 << 10;

/// How tables are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// Target size of a data block on disk, trailer included. With no compression and a
    /// multiple of 4 KiB, blocks are padded to start on a page. An entry larger than a block
    /// gets a block of its own.
    pub block_size_bytes: usize,
    /// Bloom filter bits per key.
    pub bloom_bits_per_key: u32,
    /// Data block compression.
    pub compression: Compression,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size_bytes: PAGE_SIZE_BYTES,
            bloom_bits_per_key: 10,
            compression: Compression::None,
        }
    }
}

/// What a finished table holds; the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// The table's number (file `NNNNNN.sst`).
    pub file_number: u64,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Smallest user key.
    pub smallest: Vec<u8>,
    /// Largest user key.
    pub largest: Vec<u8>,
    /// Smallest sequence number.
    pub seq_min: SeqNo,
    /// Largest sequence number.
    pub seq_max: SeqNo,
    /// Versions stored.
    pub entries: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Key + value bytes of the entries.
    pub raw_bytes: u64,
}

/// The file name of table `number`.
pub fn table_file_name(number: u64) -> String {
    format!("{number:06}.sst")
}

/// Writes one table. Add entries in (key ascending, sequence descending) order, then
/// [`TableBuilder::finish`]; [`TableBuilder::abandon`] removes a half-written file.
#[derive(Debug)]
pub struct TableBuilder {
    io: Io,
    file: DiskFile,
    path: PathBuf,
    file_number: u64,
    opts: TableOptions,
    align_blocks: bool,
    block: BlockBuilder,
    index: BlockBuilder,
    filter: FilterBuilder,
    last_key: Vec<u8>,
    last_seq: SeqNo,
    first_key: Option<Vec<u8>>,
    /// Encoded bytes not yet written; they start at file offset `written`.
    out: Vec<u8>,
    written: u64,
    scratch: Vec<u8>,
    footer: Footer,
    /// Where finished data blocks also go (see [`TableBuilder::fill_cache`]).
    cache: Option<Rc<BlockCache>>,
}

impl TableBuilder {
    /// Creates `dir/NNNNNN.sst` (replacing a leftover of a crashed attempt).
    pub(crate) async fn create(
        io: &Io,
        dir: &Path,
        file_number: u64,
        opts: TableOptions,
    ) -> Result<TableBuilder> {
        let path = dir.join(table_file_name(file_number));
        let file = DiskFile::create(io, &path).await?;
        Ok(TableBuilder {
            io: io.clone(),
            file,
            path,
            file_number,
            align_blocks: opts.compression == Compression::None
                && opts.block_size_bytes % PAGE_SIZE_BYTES == 0,
            opts,
            block: BlockBuilder::new(),
            index: BlockBuilder::new(),
            filter: FilterBuilder::new(opts.bloom_bits_per_key),
            last_key: Vec::new(),
            last_seq: 0,
            first_key: None,
            out: Vec::with_capacity(WRITE_CHUNK_BYTES + PAGE_SIZE_BYTES),
            written: 0,
            scratch: Vec::new(),
            cache: None,
            footer: Footer {
                seq_min: u64::MAX,
                ..bytemuck::Zeroable::zeroed()
            },
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True before the first entry.
    pub fn is_empty(&self) -> bool {
        self.first_key.is_none()
    }

    /// Bytes the table would take if finished now (approximately).
    pub fn estimated_size_bytes(&self) -> u64 {
        self.written + self.out.len() as u64 + self.block.size_bytes() as u64
    }

    /// Also inserts each finished data block, decoded, into `cache` under this table's
    /// number, as reads would after reading it (`Options::block_cache_fill_on_table_write`).
    /// Blocks of a table that is then abandoned are never read and age out of the cache.
    pub(crate) fn fill_cache(&mut self, cache: Rc<BlockCache>) {
        self.cache = Some(cache);
    }

    /// Stops filling the cache: blocks finished from now on go only to the file.
    pub(crate) fn stop_filling_cache(&mut self) {
        self.cache = None;
    }

    /// Whether finished blocks go into the cache too ([`Self::fill_cache`]).
    pub(crate) fn fills_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// The last key added.
    pub fn last_key(&self) -> Option<&[u8]> {
        self.first_key.as_ref().map(|_| self.last_key.as_slice())
    }

    /// Adds one version. Entries must come in (key ascending, sequence descending) order;
    /// anything else is [`Error::InvalidArgument`] (a bug in the caller, not bad data).
    pub async fn add(&mut self, e: &EntryRef<'_>) -> Result<()> {
        if e.seq > SEQ_MAX {
            return Err(Error::InvalidArgument(format!(
                "sequence number {} exceeds the table format's limit {SEQ_MAX}",
                e.seq
            )));
        }
        let new_key = match &self.first_key {
            None => true,
            Some(_) => match self.last_key.as_slice().cmp(e.key) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal if e.seq < self.last_seq => false,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "table {}: entries out of order at key {:?} seq {}",
                        self.path.display(),
                        String::from_utf8_lossy(e.key),
                        e.seq
                    )));
                }
            },
        };
        let cost = BlockBuilder::data_entry_cost_bytes(e);
        if !self.block.is_empty()
            && self.block.size_bytes() + cost + BLOCK_TRAILER_BYTES > self.opts.block_size_bytes
        {
            self.finish_data_block()?;
        }
        if new_key {
            self.filter.add_key(e.key);
            self.last_key.clear();
            self.last_key.extend_from_slice(e.key);
            if self.first_key.is_none() {
                self.first_key = Some(e.key.to_vec());
            }
        }
        self.last_seq = e.seq;
        self.block.add_entry(e);
        let f = &mut self.footer;
        f.entries += 1;
        f.tombstones += u64::from(e.kind == EntryKind::Delete);
        f.seq_min = f.seq_min.min(e.seq);
        f.seq_max = f.seq_max.max(e.seq);
        f.raw_bytes += (e.key.len() + e.value.len()) as u64;
        if self.out.len() >= WRITE_CHUNK_BYTES {
            self.write_out(false).await?;
        }
        Ok(())
    }

    fn offset(&self) -> u64 {
        self.written + self.out.len() as u64
    }

    fn finish_data_block(&mut self) -> Result<()> {
        let start = self.out.len();
        let offset = self.offset();
        self.scratch.clear();
        self.block.finish_into(&mut self.scratch);
        // Readers refuse larger blocks. The engine's key and value limits keep new entries
        // within; an entry written under larger limits (before they were lowered) cannot be
        // moved into a table, and says so instead of writing one no reader accepts.
        if self.scratch.len() > DATA_BLOCK_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "{}: a data block of {} bytes is over the largest a table holds ({}); an entry \
                 this large was written under larger key or value limits",
                self.path.display(),
                self.scratch.len(),
                DATA_BLOCK_BYTES_MAX
            )));
        }
        if let Some(cache) = &self.cache {
            let len = self.scratch.len();
            let mut buf = cache.pool().get(len);
            buf[..len].copy_from_slice(&self.scratch);
            cache.insert(
                (self.file_number, offset),
                Rc::new(CachedBlock::new(buf, len)),
            );
        }
        let code = match self.opts.compression {
            Compression::Zstd(level) => {
                let compressed = zstd::bulk::compress(&self.scratch, level)
                    .map_err(|e| Error::io("zstd compress", &self.path, e))?;
                // Keep it only when it saves at least 1/8.
                if compressed.len() + 4 <= self.scratch.len() - self.scratch.len() / 8 {
                    self.out
                        .extend_from_slice(&(self.scratch.len() as u32).to_le_bytes());
                    self.out.extend_from_slice(&compressed);
                    1
                } else {
                    self.out.extend_from_slice(&self.scratch);
                    0
                }
            }
            Compression::None => {
                self.out.extend_from_slice(&self.scratch);
                0
            }
        };
        append_trailer(&mut self.out, start, code);
        let size = (self.out.len() - start) as u32;
        if self.align_blocks {
            let end = align_up(self.offset());
            self.out
                .resize(self.out.len() + (end - self.offset()) as usize, 0);
        }
        let handle = BlockHandle { offset, size };
        self.index.add(&self.last_key, &handle.encode());
        self.footer.data_blocks += 1;
        Ok(())
    }

    /// Appends a meta block (never compressed) and returns its handle.
    fn add_meta_block(&mut self, payload: &[u8]) -> BlockHandle {
        let start = self.out.len();
        let offset = self.offset();
        self.out.extend_from_slice(payload);
        append_trailer(&mut self.out, start, 0);
        BlockHandle {
            offset,
            size: (self.out.len() - start) as u32,
        }
    }

    /// Writes the whole pages of `out` (all of it, zero-padded, when `all`).
    async fn write_out(&mut self, all: bool) -> Result<()> {
        if all {
            let end = align_up(self.offset());
            self.out
                .resize(self.out.len() + (end - self.offset()) as usize, 0);
        }
        let n = align_down(self.out.len() as u64) as usize;
        if n == 0 {
            return Ok(());
        }
        let mut buf = self.file.alloc(n);
        buf.as_bytes_mut().copy_from_slice(&self.out[..n]);
        self.file.write_at(buf, self.written).await?;
        self.written += n as u64;
        self.out.drain(..n);
        Ok(())
    }

    /// Writes the filter, index, props and footer, syncs the file and closes it. The caller
    /// syncs the directory before anything refers to the table.
    pub async fn finish(mut self) -> Result<TableMeta> {
        let Some(smallest) = self.first_key.take() else {
            return Err(Error::InvalidArgument(format!(
                "table {}: cannot finish a table with no entries",
                self.path.display()
            )));
        };
        if !self.block.is_empty() {
            self.finish_data_block()?;
        }
        self.footer.data_bytes = self.offset();
        let mut payload = Vec::new();
        self.filter.finish_into(&mut payload);
        let filter = self.add_meta_block(&payload);
        payload.clear();
        let mut index = std::mem::take(&mut self.index);
        index.finish_into(&mut payload);
        let index = self.add_meta_block(&payload);
        payload.clear();
        let mut props = BlockBuilder::new();
        props.add(b"largest", &self.last_key);
        props.add(b"smallest", &smallest);
        props.finish_into(&mut payload);
        let props = self.add_meta_block(&payload);
        // The footer ends the last page.
        let footer_at = align_up(self.offset() + FOOTER_BYTES as u64) - FOOTER_BYTES as u64;
        self.out
            .resize(self.out.len() + (footer_at - self.offset()) as usize, 0);
        let mut footer = self.footer;
        footer.filter_offset = filter.offset;
        footer.filter_size = filter.size;
        footer.index_offset = index.offset;
        footer.index_size = index.size;
        footer.props_offset = props.offset;
        footer.props_size = props.size;
        footer.file_number = self.file_number;
        self.out.extend_from_slice(&footer.seal());
        debug_assert_eq!(self.offset() % PAGE_SIZE_BYTES as u64, 0);
        self.write_out(true).await?;
        self.file.fdatasync().await?;
        let size_bytes = self.written;
        let meta = TableMeta {
            file_number: self.file_number,
            size_bytes,
            smallest,
            largest: std::mem::take(&mut self.last_key),
            seq_min: footer.seq_min,
            seq_max: footer.seq_max,
            entries: footer.entries,
            tombstones: footer.tombstones,
            raw_bytes: footer.raw_bytes,
        };
        self.file.close().await?;
        Ok(meta)
    }

    /// Closes and removes the half-written file.
    pub async fn abandon(self) -> Result<()> {
        let path = self.path.clone();
        self.file.close().await?;
        self.io.remove(&path)
    }
}
