//! Iterators that merge the memtables and SSTables into one ordered view.
//!
//! * [`mem::MemIter`]: a memtable, read in chunks (it may change between reads; versions a
//!   reader needs are kept by its snapshot).
//! * [`level::LevelIter`]: one level of non-overlapping tables, as one sequence.
//! * [`merge::MergeIter`]: a heap over any of those (plus single L0 tables), yielding every
//!   version in (key ascending, sequence descending) order, or exactly the reverse.
//! * [`user::VisibleIter`]: what a reader at a sequence number sees: the newest version of each
//!   key at or below it, tombstones and expired values hidden.
//!
//! * [`cursor::EngineIter`]: the public cursor ([`crate::Engine::iter`]): a `VisibleIter` plus
//!   the snapshot and table version it pins.
//!
//! An iterator runs in one direction, fixed when it is made: forward scans seek to their
//! start and go up, reverse scans seek below their end and go down.

pub mod cursor;
pub mod level;
pub mod mem;
pub mod merge;
#[cfg(test)]
mod tests;
pub mod user;

use crate::error::Result;
use crate::sst::EntryRef;
use crate::sst::reader::TableIter;

/// One input of a [`merge::MergeIter`].
#[derive(Debug)]
pub enum Source {
    /// A memtable (active or immutable).
    Mem(mem::MemIter),
    /// One table (a level-0 table).
    Table(TableIter),
    /// A level of non-overlapping tables.
    Level(level::LevelIter),
}

impl Source {
    /// Whether the source is on an entry.
    #[inline]
    pub fn valid(&self) -> bool {
        match self {
            Source::Mem(m) => m.valid(),
            Source::Table(t) => t.valid(),
            Source::Level(l) => l.valid(),
        }
    }

    /// The current entry (only when valid).
    #[inline]
    pub fn entry(&self) -> EntryRef<'_> {
        match self {
            Source::Mem(m) => m.entry(),
            Source::Table(t) => t.entry(),
            Source::Level(l) => l.entry(),
        }
    }

    /// First entry with key `>= key` (forward sources).
    pub async fn seek_ge(&mut self, key: &[u8]) -> Result<()> {
        match self {
            Source::Mem(m) => {
                m.seek_ge(key);
                Ok(())
            }
            Source::Table(t) => t.seek_ge(key).await,
            Source::Level(l) => l.seek_ge(key).await,
        }
    }

    /// The table a forward seek of `key` reads first (None for memtables).
    #[inline]
    pub fn seek_table(&self, key: &[u8]) -> Option<&std::rc::Rc<crate::sst::reader::TableReader>> {
        match self {
            Source::Mem(_) => None,
            Source::Table(t) => Some(t.table()),
            Source::Level(l) => l.table_for(key),
        }
    }

    /// [`Source::seek_ge`] without I/O and without building a future, when it can (memtables
    /// always; tables when the blocks are cached). False: call `seek_ge`.
    #[inline]
    pub fn seek_ge_now(&mut self, key: &[u8]) -> bool {
        match self {
            Source::Mem(m) => {
                m.seek_ge(key);
                true
            }
            Source::Table(t) => t.seek_ge_cached(key),
            Source::Level(l) => l.seek_ge_cached(key),
        }
    }

    /// Last entry with key `< key`, or the very last entry when `key` is None (reverse
    /// sources).
    pub async fn seek_lt(&mut self, key: Option<&[u8]>) -> Result<()> {
        match (self, key) {
            (Source::Mem(m), k) => {
                m.seek_lt(k);
                Ok(())
            }
            (Source::Table(t), Some(k)) => t.seek_lt(k).await,
            (Source::Table(t), None) => t.seek_to_last().await,
            (Source::Level(l), k) => l.seek_lt(k).await,
        }
    }

    /// Moves one entry on without I/O if it can (memtable chunks refill synchronously; tables
    /// only within their current block). False: nothing moved, use [`Source::step`].
    #[inline]
    pub fn step_fast(&mut self, forward: bool) -> bool {
        match self {
            Source::Mem(m) => {
                m.step();
                true
            }
            Source::Table(t) => t.step_in_block(forward),
            Source::Level(l) => l.step_in_block(forward),
        }
    }

    /// Moves one entry on in the iterator's direction.
    pub async fn step(&mut self, forward: bool) -> Result<()> {
        match (self, forward) {
            (Source::Mem(m), _) => {
                m.step();
                Ok(())
            }
            (Source::Table(t), true) => t.next().await,
            (Source::Table(t), false) => t.prev().await,
            (Source::Level(l), true) => l.next().await,
            (Source::Level(l), false) => l.prev().await,
        }
    }
}
