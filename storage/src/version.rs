//! [`Version`]: the set of live tables, per level, that reads use. Immutable: a flush or a
//! compaction builds the next version and swaps it in; readers holding an older one keep its
//! tables open (an `Rc`), and a table that no version references any more is deleted once the
//! last holder lets go (`crate::io::Io::remove_soon`).
//!
//! Level 0 holds flushed memtables, newest first; their key ranges may overlap. Levels 1 and
//! deeper are sorted by key with disjoint ranges. For any key, a version in a shallower level
//! (or a newer level-0 table) is newer than any version in a deeper one, so a point read stops
//! at the first table holding a visible version.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use crate::SeqNo;
use crate::error::Result;
use crate::io::Io;
use crate::manifest::VersionEdit;
use crate::sst::Entry;
use crate::sst::builder::TableMeta;
use crate::sst::reader::{TableGet, TableReader};

/// One live table.
#[derive(Debug)]
pub(crate) struct TableFile {
    pub meta: TableMeta,
    pub table: Rc<TableReader>,
    /// Set when a compaction replaced the table: dropping it queues the file's removal.
    obsolete: Cell<bool>,
    /// Set while a compaction reads it.
    pub compacting: Cell<bool>,
    io: Io,
    path: PathBuf,
}

impl TableFile {
    pub(crate) fn new(meta: TableMeta, table: Rc<TableReader>, io: Io) -> Rc<TableFile> {
        let path = table.path().to_path_buf();
        Rc::new(TableFile {
            meta,
            table,
            obsolete: Cell::new(false),
            compacting: Cell::new(false),
            io,
            path,
        })
    }

    /// Marks the table for deletion once nothing uses it.
    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.set(true);
    }

    pub(crate) fn number(&self) -> u64 {
        self.meta.file_number
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.meta.size_bytes
    }

    pub(crate) fn smallest(&self) -> &[u8] {
        &self.meta.smallest
    }

    pub(crate) fn largest(&self) -> &[u8] {
        &self.meta.largest
    }

    /// Whether the table's key range meets `[lo, hi]`.
    pub(crate) fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest() <= hi && self.largest() >= lo
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        if self.obsolete.get() {
            // Its cached blocks will never be read again: free their space for live ones.
            self.table.evict_cached_blocks();
            // An error leaves the file behind; the next open deletes unreferenced tables.
            if let Err(e) = self.io.remove_soon(&self.path, Some(self.table.file())) {
                tracing::warn!(file = %self.path.display(), error = %e, "could not delete an obsolete table");
            }
        }
    }
}

/// What a point read found in the tables, and how the filters fared.
#[derive(Debug, Default)]
pub(crate) struct GetOutcome {
    pub entry: Option<Entry>,
    /// Filters that ruled a table out.
    pub filter_negatives: u64,
    /// Filters that said "maybe" for a table that had no visible version.
    pub filter_false_positives: u64,
    /// Filters that said "maybe" for the table that had it.
    pub filter_true_positives: u64,
}

/// The live tables.
#[derive(Debug, Default)]
pub(crate) struct Version {
    /// `levels[0]` newest first; deeper levels sorted by smallest key.
    pub levels: Vec<Vec<Rc<TableFile>>>,
}

impl Version {
    pub(crate) fn empty(levels_max: usize) -> Version {
        Version {
            levels: vec![Vec::new(); levels_max],
        }
    }

    /// The next version: this one with `edit` applied; `added` holds the opened tables the
    /// edit adds.
    pub(crate) fn apply(&self, edit: &VersionEdit, added: &HashMap<u64, Rc<TableFile>>) -> Version {
        let mut levels = self.levels.clone();
        for &(level, number) in &edit.deleted {
            if let Some(l) = levels.get_mut(level) {
                l.retain(|t| t.number() != number);
            }
        }
        for (level, meta) in &edit.added {
            if let (Some(l), Some(t)) = (levels.get_mut(*level), added.get(&meta.file_number)) {
                l.push(t.clone());
            }
        }
        for (i, l) in levels.iter_mut().enumerate() {
            if i == 0 {
                // Newest first: flushes hand out growing file numbers and growing sequences.
                l.sort_by(|a, b| {
                    b.meta
                        .seq_max
                        .cmp(&a.meta.seq_max)
                        .then(b.number().cmp(&a.number()))
                });
            } else {
                l.sort_by(|a, b| a.smallest().cmp(b.smallest()));
                debug_assert!(
                    l.windows(2).all(|w| w[0].largest() < w[1].smallest()),
                    "level {i} has overlapping tables"
                );
            }
        }
        Version { levels }
    }

    /// Total bytes of level `l`.
    pub(crate) fn level_bytes(&self, l: usize) -> u64 {
        self.levels
            .get(l)
            .map_or(0, |v| v.iter().map(|t| t.size_bytes()).sum())
    }

    /// Tables of level `l` whose ranges meet `[lo, hi]`.
    pub(crate) fn overlapping(&self, l: usize, lo: &[u8], hi: &[u8]) -> Vec<Rc<TableFile>> {
        self.levels
            .get(l)
            .map(|v| v.iter().filter(|t| t.overlaps(lo, hi)).cloned().collect())
            .unwrap_or_default()
    }

    /// The newest version of `key` at or below `read_seq` in the tables (tombstones
    /// included). `hash` is the filter hash of `key`.
    pub(crate) async fn get(&self, key: &[u8], hash: u64, read_seq: SeqNo) -> Result<GetOutcome> {
        let mut out = GetOutcome::default();
        for (l, files) in self.levels.iter().enumerate() {
            let candidates: &[Rc<TableFile>] = if l == 0 {
                files
            } else {
                let i = files.partition_point(|t| t.largest() < key);
                match files.get(i) {
                    Some(t) if t.smallest() <= key => std::slice::from_ref(&files[i]),
                    _ => &[],
                }
            };
            for t in candidates {
                if key < t.smallest() || key > t.largest() {
                    continue;
                }
                match t.table.get(key, hash, read_seq).await? {
                    TableGet::FilteredOut => out.filter_negatives += 1,
                    TableGet::NotFound => out.filter_false_positives += 1,
                    TableGet::Found(e) => {
                        out.filter_true_positives += 1;
                        out.entry = Some(e);
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}
