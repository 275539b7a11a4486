//! [`TableIter`]: a positioned iterator over one table, either way, reading ahead when
//! sequential.

use super::*;

impl TableReader {
    /// An iterator over the table's entries. `sequential` reads ahead in large chunks and
    /// leaves the cache alone (compaction); otherwise blocks go through the cache.
    pub fn iter(self: &Rc<Self>, sequential: bool) -> TableIter {
        TableIter {
            table: self.clone(),
            block_idx: 0,
            block: None,
            pos: 0,
            cur: Decoded::NONE,
            block_n: 0,
            sequential,
            readahead: None,
        }
    }
}

/// Bytes a sequential iterator reads at once.
const READAHEAD_BYTES: usize = 512 << 10;

/// A positioned iterator over one table's entries, in (key ascending, sequence descending)
/// order, movable both ways.
#[derive(Debug)]
pub struct TableIter {
    table: Rc<TableReader>,
    block_idx: usize,
    block: Option<Rc<CachedBlock>>,
    pos: usize,
    /// The entry at `pos`, decoded once when the iterator moves there: a merge compares the
    /// current entries of its sources several times per step, and decoding the varints and
    /// tag on each [`TableIter::entry`] call was ~40% of a warm `readseq`'s CPU samples.
    cur: Decoded,
    /// Entries in `block`.
    block_n: usize,
    sequential: bool,
    /// (file offset of the buffer's first byte, buffer, valid bytes).
    readahead: Option<(u64, PooledBuf, usize)>,
}

/// Where the current entry's parts sit in its block, and its metadata.
#[derive(Debug, Clone, Copy)]
struct Decoded {
    key_at: u32,
    key_len: u32,
    value_at: u32,
    value_len: u32,
    seq: SeqNo,
    kind: crate::sst::EntryKind,
    expires_at_ms: u64,
}

impl Decoded {
    const NONE: Decoded = Decoded {
        key_at: 0,
        key_len: 0,
        value_at: 0,
        value_len: 0,
        seq: 0,
        kind: crate::sst::EntryKind::Delete,
        expires_at_ms: 0,
    };

    /// Records where `e`'s slices sit in `block`.
    #[inline]
    fn of(block: &[u8], e: &EntryRef<'_>) -> Decoded {
        let base = block.as_ptr() as usize;
        Decoded {
            key_at: (e.key.as_ptr() as usize - base) as u32,
            key_len: e.key.len() as u32,
            value_at: (e.value.as_ptr() as usize - base) as u32,
            value_len: e.value.len() as u32,
            seq: e.seq,
            kind: e.kind,
            expires_at_ms: e.expires_at_ms,
        }
    }
}

impl TableIter {
    /// The table iterated.
    pub fn table(&self) -> &Rc<TableReader> {
        &self.table
    }

    /// Whether the iterator is on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        self.block.is_some()
    }

    /// The current entry. Only call when [`TableIter::valid`].
    #[inline]
    pub fn entry(&self) -> EntryRef<'_> {
        match &self.block {
            Some(b) => {
                let d = b.data();
                let c = &self.cur;
                let (k, v) = (c.key_at as usize, c.value_at as usize);
                EntryRef {
                    key: &d[k..k + c.key_len as usize],
                    seq: c.seq,
                    kind: c.kind,
                    expires_at_ms: c.expires_at_ms,
                    value: &d[v..v + c.value_len as usize],
                }
            }
            None => EntryRef {
                key: &[],
                seq: 0,
                kind: crate::sst::EntryKind::Delete,
                expires_at_ms: 0,
                value: &[],
            },
        }
    }

    #[inline]
    fn block_len(&self) -> usize {
        if self.block.is_some() {
            self.block_n
        } else {
            0
        }
    }

    /// Decodes the entry at `pos` into `cur` (call after every move).
    #[inline]
    fn decode(&mut self) {
        if let Some(b) = &self.block {
            let d = b.data();
            let r = BlockRef::trusted(d);
            self.cur = if self.pos < self.block_n {
                Decoded::of(d, &r.data_entry(self.pos))
            } else {
                Decoded::NONE
            };
        }
    }

    async fn load(&mut self, i: usize) -> Result<()> {
        if i >= self.table.block_count() {
            self.block = None;
            return Ok(());
        }
        self.block_idx = i;
        let block = if self.sequential {
            self.load_sequential(i).await?
        } else {
            self.table.data_block(i, true).await?
        };
        self.block_n = BlockRef::trusted(block.data()).len();
        self.block = Some(block);
        Ok(())
    }

    async fn load_sequential(&mut self, i: usize) -> Result<Rc<CachedBlock>> {
        let h = self.table.handle(i);
        let t = &self.table;
        let end = h.offset + u64::from(h.size);
        let covered = self
            .readahead
            .as_ref()
            .is_some_and(|(start, _, len)| h.offset >= *start && end <= start + *len as u64);
        if !covered {
            self.readahead = None;
            let start = align_down(h.offset);
            let want = align_up(
                (end - start)
                    .max(READAHEAD_BYTES as u64)
                    .min(t.footer.data_bytes - start),
            ) as usize;
            let mut buf = t.cache.pool().get(want);
            let got = t.file.read_into(start, &mut buf[..want]).await?;
            self.readahead = Some((start, buf, got));
        }
        let Some((start, ra, len)) = &self.readahead else {
            return Err(crate::error::Error::InvalidArgument(
                "readahead buffer missing".into(),
            ));
        };
        let delta = (h.offset - start) as usize;
        if delta + h.size as usize > *len {
            return Err(corruption(
                t.path(),
                h.offset,
                "block runs past the end of the file",
            ));
        }
        let mut buf = t.cache.pool().get(h.size as usize);
        buf[..h.size as usize].copy_from_slice(&ra[delta..delta + h.size as usize]);
        Ok(Rc::new(decode_data_block(t.path(), &t.cache, buf, 0, h)?))
    }

    /// Positions at the first entry.
    pub async fn seek_to_first(&mut self) -> Result<()> {
        self.seek_to_first_raw().await?;
        self.decode();
        Ok(())
    }

    async fn seek_to_first_raw(&mut self) -> Result<()> {
        self.load(0).await?;
        self.pos = 0;
        Ok(())
    }

    /// Positions at the last entry.
    pub async fn seek_to_last(&mut self) -> Result<()> {
        self.seek_to_last_raw().await?;
        self.decode();
        Ok(())
    }

    async fn seek_to_last_raw(&mut self) -> Result<()> {
        let n = self.table.block_count();
        self.load(n - 1).await?;
        self.pos = self.block_len().saturating_sub(1);
        Ok(())
    }

    /// Positions at the first entry whose key is `>= key`.
    pub async fn seek_ge(&mut self, key: &[u8]) -> Result<()> {
        self.seek_ge_raw(key).await?;
        self.decode();
        Ok(())
    }

    async fn seek_ge_raw(&mut self, key: &[u8]) -> Result<()> {
        let bi = self.table.index().lower_bound(key);
        self.load(bi).await?;
        if let Some(b) = &self.block {
            self.pos = BlockRef::trusted(b.data()).lower_bound(key);
            if self.pos >= self.block_len() {
                // Only possible if the index key were below the block's last key.
                self.load(bi + 1).await?;
                self.pos = 0;
            }
        }
        Ok(())
    }

    /// [`TableIter::seek_ge`] without I/O and without building a future, when the blocks it
    /// needs are cached (the common case of a point seek: a new iterator per seek positions
    /// every table, and the nested futures of the asynchronous path cost more than the search).
    /// False: nothing useful was done (the state is unspecified), call `seek_ge`.
    #[inline]
    pub fn seek_ge_cached(&mut self, key: &[u8]) -> bool {
        if self.sequential {
            return false;
        }
        let n = self.table.block_count();
        let bi = self.table.index().lower_bound(key);
        if bi >= n {
            self.block = None;
            return true;
        }
        let Some(block) = self.table.cached_block(bi) else {
            return false;
        };
        let r = BlockRef::trusted(block.data());
        let (pos, len) = (r.lower_bound(key), r.len());
        if pos < len {
            self.set_block(bi, block, len, pos);
        } else if bi + 1 >= n {
            // Only possible if the index key were below the block's last key.
            self.block = None;
        } else {
            let Some(next) = self.table.cached_block(bi + 1) else {
                return false;
            };
            let len = BlockRef::trusted(next.data()).len();
            self.set_block(bi + 1, next, len, 0);
        }
        true
    }

    #[inline]
    fn set_block(&mut self, idx: usize, block: Rc<CachedBlock>, len: usize, pos: usize) {
        self.block_idx = idx;
        self.block = Some(block);
        self.block_n = len;
        self.pos = pos;
        self.decode();
    }

    /// Positions at the last entry whose key is `< key`.
    pub async fn seek_lt(&mut self, key: &[u8]) -> Result<()> {
        self.seek_lt_raw(key).await?;
        self.decode();
        Ok(())
    }

    async fn seek_lt_raw(&mut self, key: &[u8]) -> Result<()> {
        let bi = self.table.index().lower_bound(key);
        if bi < self.table.block_count() {
            self.load(bi).await?;
            if let Some(b) = &self.block {
                let p = BlockRef::trusted(b.data()).lower_bound(key);
                if p > 0 {
                    self.pos = p - 1;
                    return Ok(());
                }
            }
        }
        if bi == 0 {
            self.block = None;
            return Ok(());
        }
        self.load(bi - 1).await?;
        self.pos = self.block_len().saturating_sub(1);
        Ok(())
    }

    /// Moves one entry on (`forward`) or back within the current block, without I/O and
    /// without building a future. False (nothing moved) when the move leaves the block or
    /// the iterator is not valid: then use [`TableIter::next`] / [`TableIter::prev`].
    #[inline]
    pub fn step_in_block(&mut self, forward: bool) -> bool {
        if self.block.is_none() {
            return false;
        }
        if forward {
            if self.pos + 1 >= self.block_n {
                return false;
            }
            self.pos += 1;
        } else {
            if self.pos == 0 {
                return false;
            }
            self.pos -= 1;
        }
        self.decode();
        true
    }

    /// Moves to the next entry (invalid past the last).
    pub async fn next(&mut self) -> Result<()> {
        self.next_raw().await?;
        self.decode();
        Ok(())
    }

    async fn next_raw(&mut self) -> Result<()> {
        if self.block.is_none() {
            return Ok(());
        }
        self.pos += 1;
        if self.pos >= self.block_len() {
            let next = self.block_idx + 1;
            self.load(next).await?;
            self.pos = 0;
        }
        Ok(())
    }

    /// Moves to the previous entry (invalid before the first).
    pub async fn prev(&mut self) -> Result<()> {
        self.prev_raw().await?;
        self.decode();
        Ok(())
    }

    async fn prev_raw(&mut self) -> Result<()> {
        if self.block.is_none() {
            return Ok(());
        }
        if self.pos > 0 {
            self.pos -= 1;
            return Ok(());
        }
        if self.block_idx == 0 {
            self.block = None;
            return Ok(());
        }
        let prev = self.block_idx - 1;
        self.load(prev).await?;
        self.pos = self.block_len().saturating_sub(1);
        Ok(())
    }
}
