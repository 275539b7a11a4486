//! [`LevelIter`]: the tables of one level (sorted, key ranges disjoint) read as one sequence;
//! a table is opened for iteration only when the scan reaches it.

use std::rc::Rc;

use crate::error::Result;
use crate::sst::EntryRef;
use crate::sst::reader::{TableIter, TableReader};

/// An iterator over one level.
#[derive(Debug)]
pub struct LevelIter {
    tables: Vec<Rc<TableReader>>,
    sequential: bool,
    idx: usize,
    cur: Option<TableIter>,
}

impl LevelIter {
    /// Iterates `tables` (sorted by key, disjoint). `sequential`: see [`TableReader::iter`].
    pub fn new(tables: Vec<Rc<TableReader>>, sequential: bool) -> LevelIter {
        LevelIter {
            tables,
            sequential,
            idx: 0,
            cur: None,
        }
    }

    /// Whether the iterator is on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        self.cur.as_ref().is_some_and(TableIter::valid)
    }

    /// The current entry (only when valid).
    #[inline]
    pub fn entry(&self) -> EntryRef<'_> {
        match &self.cur {
            Some(t) => t.entry(),
            None => EntryRef {
                key: &[],
                seq: 0,
                kind: crate::sst::EntryKind::Delete,
                expires_at_ms: 0,
                value: &[],
            },
        }
    }

    fn open(&mut self, idx: usize) -> bool {
        match self.tables.get(idx) {
            Some(t) => {
                self.idx = idx;
                self.cur = Some(t.iter(self.sequential));
                true
            }
            None => {
                self.cur = None;
                false
            }
        }
    }

    /// Moves forward from an exhausted table to the next non-empty one.
    async fn skip_forward(&mut self) -> Result<()> {
        while self.cur.as_ref().is_some_and(|c| !c.valid()) {
            if !self.open(self.idx + 1) {
                return Ok(());
            }
            if let Some(c) = self.cur.as_mut() {
                c.seek_to_first().await?;
            }
        }
        Ok(())
    }

    async fn skip_backward(&mut self) -> Result<()> {
        while self.cur.as_ref().is_some_and(|c| !c.valid()) {
            if self.idx == 0 {
                self.cur = None;
                return Ok(());
            }
            self.open(self.idx - 1);
            if let Some(c) = self.cur.as_mut() {
                c.seek_to_last().await?;
            }
        }
        Ok(())
    }

    /// First entry with key `>= key`.
    pub async fn seek_ge(&mut self, key: &[u8]) -> Result<()> {
        let i = self.tables.partition_point(|t| t.largest() < key);
        if !self.open(i) {
            return Ok(());
        }
        if let Some(c) = self.cur.as_mut() {
            c.seek_ge(key).await?;
        }
        self.skip_forward().await
    }

    /// The table a seek of `key` starts in (None: `key` is past the level's last key).
    #[inline]
    pub fn table_for(&self, key: &[u8]) -> Option<&Rc<TableReader>> {
        self.tables
            .get(self.tables.partition_point(|t| t.largest() < key))
    }

    /// [`LevelIter::seek_ge`] without I/O when the blocks it needs are cached; false: call
    /// `seek_ge` (see [`TableIter::seek_ge_cached`]).
    #[inline]
    pub fn seek_ge_cached(&mut self, key: &[u8]) -> bool {
        let i = self.tables.partition_point(|t| t.largest() < key);
        if !self.open(i) {
            return true;
        }
        // A table whose largest key is >= key holds an entry >= key: positioned within it.
        self.cur
            .as_mut()
            .is_some_and(|c| c.seek_ge_cached(key) && c.valid())
    }

    /// Last entry with key `< key` (the very last when None).
    pub async fn seek_lt(&mut self, key: Option<&[u8]>) -> Result<()> {
        let i = match key {
            Some(k) => self.tables.partition_point(|t| t.smallest() < k),
            None => self.tables.len(),
        };
        if i == 0 {
            self.cur = None;
            return Ok(());
        }
        self.open(i - 1);
        if let Some(c) = self.cur.as_mut() {
            match key {
                Some(k) => c.seek_lt(k).await?,
                None => c.seek_to_last().await?,
            }
        }
        self.skip_backward().await
    }

    /// A move within the current table's current block (see [`TableIter::step_in_block`]).
    #[inline]
    pub fn step_in_block(&mut self, forward: bool) -> bool {
        self.cur.as_mut().is_some_and(|c| c.step_in_block(forward))
    }

    /// Next entry.
    pub async fn next(&mut self) -> Result<()> {
        if let Some(c) = self.cur.as_mut() {
            c.next().await?;
        }
        self.skip_forward().await
    }

    /// Previous entry.
    pub async fn prev(&mut self) -> Result<()> {
        if let Some(c) = self.cur.as_mut() {
            c.prev().await?;
        }
        self.skip_backward().await
    }
}
