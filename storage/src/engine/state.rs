//! [`State`]: what the engine holds in memory and changes in synchronous steps: the active and
//! immutable memtables, the live tables, the sequence numbers and the file numbers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::SeqNo;
use crate::iter::Source;
use crate::iter::level::LevelIter;
use crate::iter::mem::MemIter;
use crate::memtable::Memtable;
use crate::snapshot::SnapshotList;
use crate::stats::Stats;
use crate::version::Version;

/// A memtable waiting for its flush.
#[derive(Debug, Clone)]
pub(super) struct Immutable {
    memtable: Rc<RefCell<Memtable>>,
    /// Largest sequence number in it.
    seq_max: SeqNo,
    /// Index of the last WAL record whose writes it holds (0 = none).
    wal_index_max: u64,
    /// With an external log: the time of entry `wal_index_max` (0 otherwise).
    log_time_ms: u64,
}

impl Immutable {
    pub(super) fn memtable(&self) -> &Rc<RefCell<Memtable>> {
        &self.memtable
    }

    /// The memtable, if nothing else (a reader's iterator) holds it any more.
    pub(super) fn into_memtable(self) -> Option<Memtable> {
        Rc::try_unwrap(self.memtable).ok().map(RefCell::into_inner)
    }

    /// Largest sequence number in it: once it is in a table, everything up to here is.
    pub(super) fn seq_max(&self) -> SeqNo {
        self.seq_max
    }

    /// Index of the last WAL record whose writes it holds (0 = none).
    pub(super) fn wal_index_max(&self) -> u64 {
        self.wal_index_max
    }

    /// With an external log, the time of entry `wal_index_max`.
    pub(super) fn log_time_ms(&self) -> u64 {
        self.log_time_ms
    }
}

pub(super) struct State {
    /// The memtable writes go to.
    memtable: Rc<RefCell<Memtable>>,
    /// Index of the last WAL record applied to `memtable` (0 = none).
    memtable_wal_index_max: u64,
    /// Immutable memtables, oldest first.
    immutables: VecDeque<Immutable>,
    /// The live tables.
    version: Rc<Version>,
    /// Bumped whenever a flush moves data from a memtable into a table.
    flush_generation: u64,
    /// Next file number to hand out (tables, manifests).
    next_file_number: u64,
    /// Last sequence number handed out.
    last_seq: SeqNo,
    /// Last sequence number readers see.
    visible_seq: SeqNo,
    /// The active memtable's older versions' bytes left by its last pruning pass (needed
    /// by readers then; 0: no pass yet).
    pruned_older_bytes: usize,
    /// Log record bytes written into the active memtable (since it became active, or since
    /// recovery): a memtable that pruning keeps from filling still rotates once this reaches
    /// [`LOG_BYTES_PER_MEMTABLE_FACTOR`] times its bound, so that its log can be dropped.
    memtable_log_bytes: usize,
    /// Bumped when a checkpoint replaces the whole state: a flush or compaction that started
    /// before is abandoned at its manifest edit.
    resets: u64,
}

/// A memtable whose writes took this many times its bound in log rotates even if pruning
/// keeps it from filling (RocksDB bounds its WAL by a multiple of its write buffers too).
pub(super) const LOG_BYTES_PER_MEMTABLE_FACTOR: usize = 4;

/// A memtable with more keys is not walked ([`State::memtable_full_after_prune`]): a walk
/// costs ~50 ns per key on the shard's thread, so this bounds its pause to a few ms.
const PRUNE_KEYS_MAX: usize = 131_072;

/// A pass over the active memtable ([`State::memtable_full_after_prune`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct PrunePass {
    /// Bytes freed.
    pub(super) freed: usize,
    /// Time on the shard's thread.
    pub(super) took: std::time::Duration,
}

/// Whether some reader may read at a sequence number in `[lo, hi)`: one at the read point
/// `visible` or at a live snapshot. Readers at the read point need the newest version at or
/// below it; versions above it are pending writes, kept until published. Both have
/// `visible < hi`.
fn needed_by_readers(
    visible: SeqNo,
    snapshots: &SnapshotList,
) -> impl Fn(SeqNo, SeqNo) -> bool + '_ {
    move |lo, hi| visible < hi || snapshots.any_in(lo, hi)
}

impl State {
    /// The state after recovery: `memtable` holds the WAL's writes up to record
    /// `wal_index_max`; a memtable replayed past `memtable_bytes_max` is queued for its flush
    /// at once.
    pub(super) fn recovered(
        memtable: Memtable,
        wal_index_max: u64,
        version: Version,
        next_file_number: u64,
        last_seq: SeqNo,
        memtable_bytes_max: usize,
    ) -> State {
        let mut state = State {
            memtable: Rc::new(RefCell::new(memtable)),
            memtable_wal_index_max: wal_index_max,
            immutables: VecDeque::new(),
            version: Rc::new(version),
            flush_generation: 0,
            next_file_number,
            last_seq,
            visible_seq: last_seq,
            pruned_older_bytes: 0,
            memtable_log_bytes: 0,
            resets: 0,
        };
        if state.memtable.borrow().bytes() > memtable_bytes_max {
            state.rotate_memtable((0, 0));
        }
        state
    }

    pub(super) fn last_seq(&self) -> SeqNo {
        self.last_seq
    }

    /// The sequence number readers read at: the last acknowledged write.
    pub(super) fn visible_seq(&self) -> SeqNo {
        self.visible_seq
    }

    /// Makes every write up to `seq` visible to readers.
    pub(super) fn publish(&mut self, seq: SeqNo) {
        debug_assert!(seq <= self.last_seq);
        self.visible_seq = self.visible_seq.max(seq);
    }

    pub(super) fn version(&self) -> &Rc<Version> {
        &self.version
    }

    /// Flushes finished since the engine opened.
    pub(super) fn flush_generation(&self) -> u64 {
        self.flush_generation
    }

    pub(super) fn immutable_count(&self) -> usize {
        self.immutables.len()
    }

    /// The memtable to flush next.
    pub(super) fn oldest_immutable(&self) -> Option<Immutable> {
        self.immutables.front().cloned()
    }

    /// Bytes in the active memtable.
    pub(super) fn active_bytes(&self) -> usize {
        self.memtable.borrow().bytes()
    }

    pub(super) fn memtable_is_empty(&self) -> bool {
        self.memtable.borrow().is_empty()
    }

    /// Whether a write of `needed` bytes would push a non-empty active memtable past `max`.
    pub(super) fn memtable_full(&self, needed: usize, max: usize) -> bool {
        let memtable = self.memtable.borrow();
        !memtable.is_empty() && memtable.bytes() + needed > max
    }

    /// [`State::memtable_full`], after a pass that drops the versions no reader needs any
    /// more ([`Memtable::prune`]): a version replaced by a write that was pending stays until
    /// the key is written again, and under updates of a working set that fits the memtable
    /// those versions, not new keys, are what fill it. The pass walks every key, so it runs
    /// only when it can free an eighth of `max`: when older versions hold that much more
    /// than the last pass left (the ones it kept are still needed, by a snapshot or a
    /// pending write). Returns whether it is full, and what a pass freed and took.
    pub(super) fn memtable_full_after_prune(
        &mut self,
        needed: usize,
        max: usize,
        snapshots: &SnapshotList,
    ) -> (bool, Option<PrunePass>) {
        if self.memtable_log_full(max) {
            return (!self.memtable.borrow().is_empty(), None);
        }
        if !self.memtable_full(needed, max) {
            return (false, None);
        }
        let mut memtable = self.memtable.borrow_mut();
        // What insert's own pruning freed since the last pass lowers the mark too.
        let kept = self.pruned_older_bytes.min(memtable.older_bytes());
        if memtable.older_bytes() < kept + max / 8 || memtable.keys() > PRUNE_KEYS_MAX {
            return (true, None);
        }
        let started = std::time::Instant::now();
        let freed = memtable.prune(&needed_by_readers(self.visible_seq, snapshots));
        let pass = PrunePass {
            freed,
            took: started.elapsed(),
        };
        self.pruned_older_bytes = memtable.older_bytes();
        drop(memtable);
        (self.memtable_full(needed, max), Some(pass))
    }

    /// [`State::memtable_full`] without a pass: for checks that must not change anything.
    pub(super) fn memtable_full_now(&self, needed: usize, max: usize) -> bool {
        self.memtable_full(needed, max) || self.memtable_log_full(max)
    }

    /// Whether the active memtable's writes have taken enough log that it must rotate (its
    /// log is dropped only once it is flushed).
    fn memtable_log_full(&self, max: usize) -> bool {
        self.memtable_log_bytes >= max.saturating_mul(LOG_BYTES_PER_MEMTABLE_FACTOR)
    }

    /// Makes the active memtable immutable (queued for its flush) and starts a fresh one.
    /// Returns false, changing nothing, when the active memtable is empty. `applied`: an
    /// external log's last entry applied completely and its time, which the memtable covers
    /// even if the entries after its last write wrote nothing ((0, 0) with the engine's own
    /// WAL).
    pub(super) fn rotate_memtable(&mut self, applied: (u64, u64)) -> bool {
        let (applied_index, log_time_ms) = applied;
        if self.memtable.borrow().is_empty() {
            return false;
        }
        let fresh = Rc::new(RefCell::new(Memtable::new()));
        let full = std::mem::replace(&mut self.memtable, fresh);
        self.pruned_older_bytes = 0;
        self.memtable_log_bytes = 0;
        self.immutables.push_back(Immutable {
            memtable: full,
            seq_max: self.last_seq,
            wal_index_max: std::mem::take(&mut self.memtable_wal_index_max).max(applied_index),
            log_time_ms,
        });
        true
    }

    /// Gives a write's encoded operations their sequence numbers and adds their versions to
    /// the active memtable, invisible to readers until published. Returns the first sequence
    /// number. `ops` was validated: it decodes.
    pub(super) fn apply_write(
        &mut self,
        ops: &[u8],
        count: u32,
        write_time_ms: u64,
        snapshots: &SnapshotList,
    ) -> SeqNo {
        let first_seq = self.last_seq + 1;
        let needed = needed_by_readers(self.visible_seq, snapshots);
        let applied = self
            .memtable
            .borrow_mut()
            .apply(ops, first_seq, write_time_ms, &needed);
        debug_assert_eq!(applied, Ok(count));
        self.last_seq = first_seq + u64::from(count) - 1;
        first_seq
    }

    /// Index of the last log record (or entry) with a write in the active memtable.
    pub(super) fn memtable_log_index(&self) -> u64 {
        self.memtable_wal_index_max
    }

    /// The write applied last is in WAL record `index`.
    pub(super) fn logged(&mut self, index: u64, record_bytes: usize) {
        self.memtable_wal_index_max = index;
        self.memtable_log_bytes += record_bytes;
    }

    /// The value of `key` at `seq` in the memtables, newest first, with the sequence number
    /// that wrote it: Some(None) = deleted or expired there, None = not in any memtable.
    pub(super) fn memtables_lookup(
        &self,
        key: &[u8],
        seq: SeqNo,
        now_ms: u64,
    ) -> Option<Option<(Vec<u8>, SeqNo)>> {
        let owned = |v: Option<(&[u8], SeqNo)>| v.map(|(value, seq)| (value.to_vec(), seq));
        if let Some(v) = self.memtable.borrow().lookup(key, seq, now_ms) {
            return Some(owned(v));
        }
        for immutable in self.immutables.iter().rev() {
            if let Some(v) = immutable.memtable.borrow().lookup(key, seq, now_ms) {
                return Some(owned(v));
            }
        }
        None
    }

    /// One iterator source per memtable and level-0 table and one per deeper level, newest
    /// first, unpositioned.
    pub(super) fn sources(&self, forward: bool) -> Vec<Source> {
        let mut sources = vec![Source::Mem(MemIter::new(self.memtable.clone(), forward))];
        for immutable in &self.immutables {
            let memtable = immutable.memtable.clone();
            sources.push(Source::Mem(MemIter::new(memtable, forward)));
        }
        for t in &self.version.levels[0] {
            sources.push(Source::Table(t.table.iter(false)));
        }
        for files in &self.version.levels[1..] {
            if !files.is_empty() {
                let tables = files.iter().map(|t| t.table.clone()).collect();
                sources.push(Source::Level(LevelIter::new(tables, false)));
            }
        }
        sources
    }

    /// Hands out the next file number (tables, manifests).
    pub(super) fn take_file_number(&mut self) -> u64 {
        let n = self.next_file_number;
        self.next_file_number += 1;
        n
    }

    pub(super) fn next_file_number(&self) -> u64 {
        self.next_file_number
    }

    /// Hands out no number below `n` from now on (tables that came from elsewhere use them).
    pub(super) fn raise_next_file_number(&mut self, n: u64) {
        self.next_file_number = self.next_file_number.max(n);
    }

    /// Swaps in the live tables after a manifest edit.
    pub(super) fn install(&mut self, version: Version) {
        self.version = Rc::new(version);
    }

    /// Times a checkpoint replaced the whole state.
    pub(super) fn resets(&self) -> u64 {
        self.resets
    }

    /// Replaces the whole state (a checkpoint was installed): `version`'s tables hold every
    /// write up to `last_seq`; the memtables' writes are dropped.
    pub(super) fn reset(&mut self, version: Version, last_seq: SeqNo) {
        self.memtable = Rc::new(RefCell::new(Memtable::new()));
        self.memtable_wal_index_max = 0;
        self.pruned_older_bytes = 0;
        self.memtable_log_bytes = 0;
        // Whoever waits for a flush of a dropped memtable is done waiting.
        self.flush_generation += self.immutables.len() as u64 + 1;
        self.immutables.clear();
        self.version = Rc::new(version);
        self.last_seq = self.last_seq.max(last_seq);
        self.visible_seq = self.last_seq;
        self.resets += 1;
    }

    /// The oldest immutable memtable is in a table now.
    pub(super) fn flushed_oldest(&mut self) {
        self.immutables.pop_front();
        self.flush_generation += 1;
    }

    /// Reports the memtables', the tables' and the sequence numbers' figures into `s`.
    pub(super) fn report(&self, s: &mut Stats) {
        s.seq_last = self.last_seq;
        s.seq_visible = self.visible_seq;
        {
            let memtable = self.memtable.borrow();
            s.memtable_bytes = memtable.bytes() as u64;
            s.memtable_keys = memtable.keys() as u64;
            s.memtable_versions = memtable.versions() as u64;
        }
        s.memtables_immutable = self.immutables.len() as u64;
        let v = &self.version;
        let mut per_level = [(0u64, 0u64); 7];
        for (l, files) in v.levels.iter().enumerate() {
            let slot = &mut per_level[l.min(6)];
            slot.0 += files.len() as u64;
            slot.1 += v.level_bytes(l);
        }
        s.set_levels(per_level);
        s.tables_live = per_level.iter().map(|p| p.0).sum();
        s.tables_bytes = per_level.iter().map(|p| p.1).sum();
    }
}
