//! [`Engine`]: one shard's storage engine, the API the server and the benchmarks use.
//!
//! ## Write path
//!
//! A write is validated (limits, empty keys, TTLs; nothing changes on error), checked against
//! the memtable bound, then *sequenced* in one synchronous step: it gets its sequence numbers,
//! its WAL record is queued, and its versions enter the memtable, invisible to readers. The
//! write then waits until its record is as durable as [`Options::durability`] promises and
//! *publishes* its last sequence number, making it visible. Readers read at the published
//! sequence number, so no read observes a write before it is acknowledged. WAL records become
//! durable in order, so publishing sequence `s` also publishes everything before it.
//!
//! If the WAL fails, the waiting writes get the I/O error, nothing more is published (their
//! versions stay invisible), and every later write gets [`Error::ReadOnly`]; reads go on.
//!
//! ## Flush, reads, compaction (the LSM tree)
//!
//! When a write would push the active memtable past `memtable_size_bytes_max`, the memtable
//! becomes immutable (queued, at most `memtables_immutable_max`) and a new one takes the write.
//! A background task ([`crate::background`]) writes the oldest immutable memtable to a level-0
//! SSTable once its writes are durable in the WAL, syncs it and the directory, records it in
//! the manifest, swaps it in for the memtable, and only then lets the WAL drop the segments it
//! covered. Compactions run in the same low-share task queue. Writes stall (explicitly,
//! counted) when the immutable queue is full, level 0 holds `l0_stop_writes_files` tables, or
//! pending compaction bytes pass `pending_compaction_bytes_stop`.
//!
//! A point read checks the active memtable, the immutable ones newest first, then the tables
//! ([`crate::version::Version::get`]: level 0 newest first, then one table per deeper level,
//! each behind its bloom filter). Scans merge all of them ([`crate::iter`]) under an internal
//! snapshot, so the versions they need survive concurrent writes and compactions.
//!
//! ## WAL record payload (one per acknowledged write call, little-endian)
//!
//! ```text
//! 0        1          4          8                16                   24
//! +--------+----------+----------+----------------+--------------------+----------------+
//! | kind=1 | reserved | op_count | first_seq      | write_time_unix_ms | operations ... |
//! | u8     | 3 x 0    | u32      | u64            | u64                | (crate::batch) |
//! +--------+----------+----------+----------------+--------------------+----------------+
//! ```
//!
//! Operation `i` has sequence number `first_seq + i`; a TTL of `ttl_ms` expires at
//! `write_time_unix_ms + ttl_ms`. The WAL frame around it is described in
//! [`crate::wal::record`].

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::SeqNo;
use crate::background::{self, Background};
use crate::backlog::{self, EngineBacklog};
use crate::cache::BlockCache;
use crate::compaction::picker::{self, LevelTargets};
use crate::io::{DirLock, FaultInjector, Io};
use crate::iter::Source;
use crate::iter::cursor::EngineIter;
use crate::iter::level::LevelIter;
use crate::iter::mem::MemIter;
use crate::iter::merge::MergeIter;
use crate::iter::user::VisibleIter;
use crate::manifest::{Manifest, ManifestState};
use crate::sst::builder::TableOptions;
use crate::sst::filter::key_hash;
use crate::sst::reader::{Table, table_path};
use crate::version::{TableFile, Version};
use crate::wal::{Replayed, Wal, WalOptions};

/// Payload kind of a write-batch record.
const PAYLOAD_KIND_BATCH: u8 = 1;
/// Bytes before the operations in a record payload (reserved in every `WriteBatch`).
const PAYLOAD_HEADER_BYTES: usize = batch::RESERVED_HEADER_BYTES;
/// The WAL's directory inside the engine directory.
pub const WAL_DIR: &str = "wal";
use crate::batch::{self, BatchIter, BatchOp, WriteBatch};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::memtable::{self, Memtable};
use crate::options::{Durability, Options};
use crate::snapshot::{Snapshot, SnapshotList};
use crate::stats::Stats;

/// The result of [`Engine::compare_and_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value matched and the new value (or delete) was written with this sequence number.
    Applied(SeqNo),
    /// The live value differed from `expected`; nothing was written.
    Mismatch {
        /// The live value found (None = absent, deleted or expired).
        current: Option<Vec<u8>>,
        /// The sequence number of the write that stored `current` (0 when absent).
        current_seq: SeqNo,
    },
}

/// What a compare-and-set expects of the key's live value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// No live value (absent, deleted or expired).
    Absent,
    /// A live value equal to these bytes.
    Value(&'a [u8]),
    /// The live value written with this sequence number; 0 means no live value, as
    /// [`CasOutcome::Mismatch`] reports an absent key.
    Sequence(SeqNo),
}

impl<'a> From<Option<&'a [u8]>> for Expect<'a> {
    fn from(expected: Option<&'a [u8]>) -> Expect<'a> {
        expected.map_or(Expect::Absent, Expect::Value)
    }
}

impl Expect<'_> {
    fn holds_for(self, current: Option<&(Vec<u8>, SeqNo)>) -> bool {
        match (self, current) {
            // No write has sequence number 0: it stands for "no value", as a failed
            // compare-and-set reports an absent key.
            (Expect::Absent | Expect::Sequence(0), None) => true,
            (Expect::Value(want), Some((value, _))) => value.as_slice() == want,
            (Expect::Sequence(want), Some(&(_, seq))) => seq == want,
            _ => false,
        }
    }
}

/// A key range to scan: `[start, end)`, at most `limit` entries, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange {
    /// Inclusive lower bound; empty = from the first key.
    pub start: Vec<u8>,
    /// Exclusive upper bound; None = to the last key.
    pub end: Option<Vec<u8>>,
    /// Most entries to return, at least 1 (clamped to `Options::scan_entries_max`).
    pub limit: usize,
    /// false: ascending from `start`; true: descending from just below `end`.
    pub reverse: bool,
}

/// One page of scan results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanPage {
    /// Key-value pairs in scan order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// True when the range holds more live entries beyond the last one returned; continue
    /// from just after (or, in reverse, just before) the last key.
    pub more: bool,
}

/// Things tests substitute when opening an engine.
#[derive(Debug, Clone, Default)]
pub struct OpenHooks {
    /// The clock TTLs are judged by (default: the system clock).
    pub clock: Option<Clock>,
    /// Makes file operations fail or simulates a crash (default: none).
    pub faults: Option<FaultInjector>,
}

/// One shard's storage engine. Cheap to clone (an `Rc`); every clone is the same engine.
/// `!Send`: it lives on one glommio executor, and its methods may be called from many tasks
/// on that executor at once (that is what lets group commit batch them).
#[derive(Clone)]
pub struct Engine {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) clock: Clock,
    pub(crate) io: Io,
    pub(crate) state: RefCell<State>,
    pub(crate) snapshots: Rc<SnapshotList>,
    pub(crate) stats: RefCell<Stats>,
    pub(crate) closed: Cell<bool>,
    /// The WAL; it also holds the WAL directory's lock.
    pub(crate) wal: Wal,
    pub(crate) cache: Rc<BlockCache>,
    /// The manifest log; taken out while an edit is appended (under `manifest_lock`).
    pub(crate) manifest: RefCell<Option<Manifest>>,
    /// What the manifest says (metadata of the live tables).
    pub(crate) manifest_state: RefCell<ManifestState>,
    /// Serialises manifest edits (flushes and compactions run concurrently).
    pub(crate) manifest_lock: glommio::sync::Semaphore,
    /// Signals shared with the background tasks.
    pub(crate) bg: Rc<Background>,
    /// What waits for the background tasks; sets their shares and the foreground's yields.
    pub(crate) backlog: Rc<EngineBacklog>,
    /// The first background failure: the engine refuses writes after it.
    pub(crate) bg_error: RefCell<Option<String>>,
    /// Round-robin position of compaction per level.
    pub(crate) compaction_cursor: RefCell<Vec<Vec<u8>>>,
    pub(crate) targets: LevelTargets,
    /// The engine directory's lock (the WAL holds its own).
    _lock: DirLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.bg.stop();
    }
}

/// A memtable waiting for its flush.
#[derive(Debug, Clone)]
pub(crate) struct Immutable {
    pub(crate) mem: Rc<RefCell<Memtable>>,
    /// Largest sequence number in it.
    pub(crate) seq_max: SeqNo,
    /// Index of the last WAL record whose writes it holds (0 = none).
    pub(crate) wal_index_max: u64,
}

pub(crate) struct State {
    /// The memtable writes go to.
    pub(crate) mem: Rc<RefCell<Memtable>>,
    /// Index of the last WAL record applied to `mem` (0 = none).
    pub(crate) mem_wal_index_max: u64,
    /// Immutable memtables, oldest first.
    pub(crate) imm: VecDeque<Immutable>,
    /// The live tables.
    pub(crate) version: Rc<Version>,
    /// Bumped whenever a flush moves data from a memtable into a table.
    pub(crate) flush_generation: u64,
    /// Next file number to hand out (tables, manifests).
    pub(crate) next_file_number: u64,
    /// Last sequence number handed out.
    pub(crate) last_seq: SeqNo,
    /// Last sequence number readers see.
    pub(crate) visible_seq: SeqNo,
}

/// Why a write has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StallReason {
    Memtables,
    Level0,
    PendingCompaction,
}

impl Engine {
    /// Opens (creating if missing) the engine in `dir`, replaying the WAL.
    pub async fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        Self::open_with_hooks(dir, options, OpenHooks::default()).await
    }

    /// [`Engine::open`] with test substitutes (a manual clock).
    pub async fn open_with_hooks(
        dir: impl AsRef<Path>,
        options: Options,
        hooks: OpenHooks,
    ) -> Result<Engine> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let io = Io::new(hooks.faults.clone());
        // The lock file is non-empty: the safe first O_DIRECT file (see `Io::probe`).
        io.probe(lock.path()).await?;
        let (manifest, recovered) = Manifest::open(
            &io,
            &dir,
            options.levels_max,
            options.manifest_size_bytes_max,
        )
        .await?;
        let cache = BlockCache::new(options.block_cache_size_bytes);
        let mut version = Version::empty(options.levels_max);
        {
            let mut added = HashMap::new();
            let mut edit = recovered.state.snapshot_edit();
            for (_, meta) in &edit.added {
                let path = table_path(&dir, meta.file_number);
                let table = Table::open(&io, &path, meta.file_number, cache.clone()).await?;
                if table.size_bytes() != meta.size_bytes {
                    return Err(Error::corruption(
                        &path,
                        0,
                        format!(
                            "the manifest records {} bytes for this table, the file has {}",
                            meta.size_bytes,
                            table.size_bytes()
                        ),
                    ));
                }
                added.insert(
                    meta.file_number,
                    TableFile::new(meta.clone(), table, io.clone()),
                );
            }
            edit.deleted.clear();
            version = version.apply(&edit, &added);
        }
        remove_unreferenced_files(&io, &dir, &recovered.state, manifest.number())?;
        let flushed_seq = recovered.state.flushed_seq;
        let mut memtable = Memtable::new();
        let mut last_seq: SeqNo = 0;
        let mut wal_index_max = 0;
        let (wal, report) = Wal::open(
            dir.join(WAL_DIR),
            WalOptions::from_options(&options),
            hooks.faults,
            |r| {
                wal_index_max = r.index;
                replay_record(&mut memtable, &mut last_seq, flushed_seq, r)
            },
        )
        .await?;
        let last_seq = last_seq
            .max(recovered.state.last_seq)
            .max(recovered.state.flushed_seq);
        tracing::info!(
            dir = ?dir,
            records = report.records_replayed,
            torn_tails_cut = report.torn_tails_cut,
            manifest_edits = recovered.edits,
            manifest_torn_tails_cut = recovered.torn_tails_cut,
            tables = version.levels.iter().map(Vec::len).sum::<usize>(),
            last_seq,
            "engine opened"
        );
        let mut stats = Stats::default();
        match options.durability {
            Durability::Sync => stats.durability_sync = 1,
            Durability::Periodic { interval_ms } => {
                stats.durability_periodic_interval_ms = interval_ms
            }
            Durability::None => stats.durability_none = 1,
        }
        stats.memtable_bytes_max = options.memtable_size_bytes_max as u64;
        stats.manifest_torn_tails_cut = recovered.torn_tails_cut;
        let next_file_number = recovered.state.next_file_number.max(manifest.number() + 1);
        // A memtable replayed past its bound is flushed right away.
        let mut imm = VecDeque::new();
        let mut mem_wal_index_max = wal_index_max;
        if memtable.bytes() > options.memtable_size_bytes_max {
            imm.push_back(Immutable {
                mem: Rc::new(RefCell::new(std::mem::take(&mut memtable))),
                seq_max: last_seq,
                wal_index_max,
            });
            mem_wal_index_max = 0;
        }
        let targets = LevelTargets {
            levels_max: options.levels_max,
            l0_compaction_trigger_files: options.l0_compaction_trigger_files,
            level1_size_bytes_max: options.level1_size_bytes_max,
            level_size_ratio: options.level_size_ratio,
        };
        let inner = Inner {
            dir,
            clock: hooks.clock.unwrap_or_default(),
            io,
            state: RefCell::new(State {
                mem: Rc::new(RefCell::new(memtable)),
                mem_wal_index_max,
                imm,
                version: Rc::new(version),
                flush_generation: 0,
                next_file_number,
                last_seq,
                visible_seq: last_seq,
            }),
            snapshots: Rc::new(SnapshotList::default()),
            stats: RefCell::new(stats),
            closed: Cell::new(false),
            wal,
            cache,
            manifest: RefCell::new(Some(manifest)),
            manifest_state: RefCell::new(recovered.state),
            manifest_lock: glommio::sync::Semaphore::new(1),
            bg: Rc::new(Background::default()),
            backlog: Rc::new(EngineBacklog::new(
                options.background_shares,
                options.background_poll_interval_us,
            )),
            bg_error: RefCell::new(None),
            compaction_cursor: RefCell::new(vec![Vec::new(); options.levels_max]),
            targets,
            options,
            _lock: lock,
        };
        let inner = Rc::new(inner);
        background::start(&inner)?;
        Ok(Engine { inner })
    }

    /// The directory this engine lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Writes `key = value`. Returns the write's sequence number once it is as durable as
    /// the durability mode promises.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write_inner(b, WriteKind::Single).await
    }

    /// Writes `key = value`, invisible to reads once `ttl` has passed (1 ms ..= 100 years).
    pub async fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.put_with_ttl(key, value, ttl);
        self.write_inner(b, WriteKind::Single).await
    }

    /// Deletes `key` (a no-op for readers if it is absent, but still a write).
    pub async fn delete(&self, key: &[u8]) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write_inner(b, WriteKind::Single).await
    }

    /// Applies every operation of `batch` atomically: readers (and recovery) see all of them
    /// or none. Returns the sequence number of the batch's last operation.
    pub async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        self.write_inner(batch, WriteKind::Batch).await
    }

    /// Compare-and-set, atomic with respect to every other write to this engine: if the live
    /// value of `key` equals `expected` (None = absent, deleted or expired), writes `new`
    /// (None = delete) with an optional TTL. The comparison includes writes that are sequenced
    /// but not yet acknowledged; a mismatch is reported only once those are acknowledged.
    pub async fn compare_and_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        self.compare_and_set_expecting(key, expected.into(), new, ttl)
            .await
    }

    /// [`Engine::compare_and_set`] with any expectation, a sequence number included.
    pub async fn compare_and_set_expecting(
        &self,
        key: &[u8],
        expected: Expect<'_>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        let mut b = WriteBatch::new();
        match (new, ttl) {
            (Some(v), Some(ttl)) => b.put_with_ttl(key, v, ttl),
            (Some(v), None) => b.put(key, v),
            (None, None) => b.delete(key),
            (None, Some(_)) => {
                self.count_invalid();
                return Err(Error::InvalidArgument(
                    "compare_and_set: a ttl needs a new value (new = None deletes)".into(),
                ));
            }
        };
        self.check_writable()?;
        self.validate(&b)?;
        let inner = &self.inner;
        let needed = write_cost(&b);
        loop {
            self.make_room(needed).await?;
            // The value as of everything sequenced so far: from the memtables synchronously,
            // or from the tables (asynchronously, then re-checked: if a flush or a write to
            // the key came in meanwhile, look again).
            let (mem_hit, version, generation, read_seq) = {
                let st = inner.state.borrow();
                let hit = self.memtables_lookup(&st, key, st.last_seq);
                (hit, st.version.clone(), st.flush_generation, st.last_seq)
            };
            let current = match mem_hit {
                Some(v) => v,
                None => {
                    let from_tables = self.tables_lookup(&version, key, read_seq).await?;
                    let st = inner.state.borrow();
                    if st.flush_generation != generation
                        || self.memtables_lookup(&st, key, st.last_seq).is_some()
                    {
                        continue;
                    }
                    from_tables
                }
            };
            // Compare and sequence in one synchronous step: no other write can come between.
            if expected.holds_for(current.as_ref()) {
                if self.stall_reason(needed).is_some() {
                    continue;
                }
                let seq = self.sequence(b)?;
                let seq = self.finish_write(seq, WriteKind::Cas).await?;
                inner.stats.borrow_mut().cas_applied_total += 1;
                return Ok(CasOutcome::Applied(seq));
            }
            // The value we compared with may come from a write not yet acknowledged: report
            // it only once everything sequenced so far is durable.
            let seen = inner.state.borrow().last_seq;
            let index = inner.wal.last_index();
            if index > 0 {
                inner.wal.wait_durable(index).await?;
            }
            self.publish(seen);
            inner.stats.borrow_mut().cas_mismatch_total += 1;
            let (current, current_seq) = current.map_or((None, 0), |(v, seq)| (Some(v), seq));
            return Ok(CasOutcome::Mismatch {
                current,
                current_seq,
            });
        }
    }

    /// The live value of `key`, as of the latest acknowledged write.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key).await?.map(|(value, _)| value))
    }

    /// The live value of `key` and the sequence number of the write that stored it, as of the
    /// latest acknowledged write.
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<(Vec<u8>, SeqNo)>> {
        self.check_open()?;
        let seq = self.inner.state.borrow().visible_seq;
        self.get_seq(key, seq).await
    }

    /// A consistent point-in-time view; the versions it needs are kept until it is dropped.
    pub fn snapshot(&self) -> Snapshot {
        let seq = self.inner.state.borrow().visible_seq;
        self.inner.snapshots.take(seq)
    }

    /// The live value of `key` as of `snapshot` (taken from this engine).
    pub async fn get_at(&self, key: &[u8], snapshot: &Snapshot) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.check_snapshot(snapshot)?;
        Ok(self
            .get_seq(key, snapshot.seq())
            .await?
            .map(|(value, _)| value))
    }

    /// Live entries of `range`, at `snapshot` or (None) the latest acknowledged state.
    pub async fn scan(&self, range: &ScanRange, snapshot: Option<&Snapshot>) -> Result<ScanPage> {
        self.check_open()?;
        if range.limit == 0 {
            return Err(Error::InvalidArgument(
                "scan limit must be at least 1".into(),
            ));
        }
        let seq = match snapshot {
            Some(s) => {
                self.check_snapshot(s)?;
                s.seq()
            }
            None => self.inner.state.borrow().visible_seq,
        };
        let limit = range.limit.min(self.inner.options.scan_entries_max);
        let (entries, more) = self.scan_seq(range, limit, seq).await?;
        let mut stats = self.inner.stats.borrow_mut();
        stats.scans_total += 1;
        stats.scan_entries_total += entries.len() as u64;
        Ok(ScanPage { entries, more })
    }

    /// A cursor over the live entries at `snapshot` or (None) the latest acknowledged state,
    /// moving towards larger keys, or smaller ones when `reverse`. Unpositioned: call
    /// [`EngineIter::seek`] or [`EngineIter::seek_to_first`]. It reads keys and values in
    /// place, without allocating per entry, and sees exactly what [`Engine::scan`] would
    /// (TTLs judged at the time it is made). It pins the memtables and tables it reads until
    /// it is dropped (see [`EngineIter`]).
    pub fn iter(&self, reverse: bool, snapshot: Option<&Snapshot>) -> Result<EngineIter> {
        self.check_open()?;
        let seq = match snapshot {
            Some(s) => {
                self.check_snapshot(s)?;
                s.seq()
            }
            None => self.inner.state.borrow().visible_seq,
        };
        self.inner.stats.borrow_mut().iterators_total += 1;
        Ok(self.iter_seq(seq, !reverse))
    }

    /// Makes everything acknowledged durable and releases the engine's files. Other clones
    /// of this engine get [`Error::Closed`] afterwards.
    pub async fn close(self) -> Result<()> {
        self.check_open()?;
        self.inner.closed.set(true);
        // Stop flushes and compactions (a compaction in progress is abandoned; its inputs
        // stay) and wait for them to let go of the files.
        self.inner.bg.stop();
        self.inner.bg.wait_stopped().await;
        let manifest = self.inner.manifest.borrow_mut().take();
        if let Some(m) = manifest {
            m.close().await?;
        }
        self.inner.wal.close().await
    }

    /// A copy of the engine's counters.
    pub fn stats(&self) -> Stats {
        let mut s = *self.inner.stats.borrow();
        let st = self.inner.state.borrow();
        s.seq_last = st.last_seq;
        s.seq_visible = st.visible_seq;
        {
            let mem = st.mem.borrow();
            s.memtable_bytes = mem.bytes() as u64;
            s.memtable_keys = mem.keys() as u64;
            s.memtable_versions = mem.versions() as u64;
        }
        s.memtables_immutable = st.imm.len() as u64;
        let v = &st.version;
        let mut per_level = [(0u64, 0u64); 7];
        for (l, files) in v.levels.iter().enumerate() {
            let slot = &mut per_level[l.min(6)];
            slot.0 += files.len() as u64;
            slot.1 += v.level_bytes(l);
        }
        s.set_levels(per_level);
        s.tables_live = per_level.iter().map(|p| p.0).sum();
        s.tables_bytes = per_level.iter().map(|p| p.1).sum();
        s.compaction_pending_bytes = picker::pending_compaction_bytes(v, &self.inner.targets);
        let b = &self.inner.backlog;
        s.background_pending = u64::from(b.pending());
        s.background_backlog_permille = b.backlog().permille();
        s.background_shares = b.shares() as u64;
        let c = self.inner.cache.counters();
        s.block_cache_hits_total = c.hits;
        s.block_cache_misses_total = c.misses;
        s.block_cache_evictions_total = c.evictions;
        s.block_cache_data_bytes = c.used_bytes;
        s.block_cache_pinned_bytes = c.pinned_bytes;
        s.block_cache_capacity_bytes = c.capacity_bytes;
        if let Some(m) = self.inner.manifest.borrow().as_ref() {
            s.manifest_edits_total = m.edits_written();
        }
        s.snapshots_live = self.inner.snapshots.count() as u64;
        let w = self.inner.wal.stats();
        s.read_only =
            u64::from(self.inner.wal.failure().is_some() || self.inner.bg_error.borrow().is_some());
        s.wal_records_total = w.records_total;
        s.wal_write_bytes_total = w.write_bytes_total;
        s.wal_writes_total = w.writes_total;
        s.wal_syncs_total = w.syncs_total;
        s.wal_group_records_1_total = w.group_records[0];
        s.wal_group_records_2_3_total = w.group_records[1];
        s.wal_group_records_4_7_total = w.group_records[2];
        s.wal_group_records_8_15_total = w.group_records[3];
        s.wal_group_records_16_31_total = w.group_records[4];
        s.wal_group_records_32_plus_total = w.group_records[5];
        s.wal_group_records_max = w.group_records_max;
        s.wal_segments_created_total = w.segments_created_total;
        s.wal_segments_deleted_total = w.segments_deleted_total;
        s.wal_segments_live = w.segments_live;
        s.wal_segments_bytes = w.segments_bytes;
        s.wal_io_errors_total = w.io_errors_total;
        s.recovery_records_replayed = w.recovery.records_replayed;
        s.recovery_torn_tails_cut = w.recovery.torn_tails_cut;
        s.recovery_torn_bytes_cut = w.recovery.torn_bytes_cut;
        s.recovery_segments_dropped = w.recovery.segments_dropped;
        s.recovery_corruptions_skipped = w.recovery.corruptions_skipped;
        s
    }

    /// The engine's WAL (read-only access for inspection and tests).
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    async fn get_seq(&self, key: &[u8], seq: SeqNo) -> Result<Option<(Vec<u8>, SeqNo)>> {
        self.inner.options.check_key(key)?;
        backlog::cooperate(&self.inner.backlog).await;
        self.inner.stats.borrow_mut().gets_total += 1;
        // Memtables and the version are taken in one synchronous step: a flush that moves a
        // memtable into a table cannot fall between them.
        let (hit, version) = {
            let st = self.inner.state.borrow();
            (self.memtables_lookup(&st, key, seq), st.version.clone())
        };
        if let Some(v) = hit {
            self.inner.stats.borrow_mut().gets_memtable_hits_total += 1;
            return Ok(v);
        }
        self.tables_lookup(&version, key, seq).await
    }

    /// The value of `key` at `seq` in the memtables, with the sequence number that wrote it:
    /// Some(None) = deleted or expired there, None = not in any memtable.
    fn memtables_lookup(
        &self,
        st: &State,
        key: &[u8],
        seq: SeqNo,
    ) -> Option<Option<(Vec<u8>, SeqNo)>> {
        let now = self.inner.clock.now_ms();
        let owned = |v: Option<(&[u8], SeqNo)>| v.map(|(value, seq)| (value.to_vec(), seq));
        if let Some(v) = st.mem.borrow().lookup(key, seq, now) {
            return Some(owned(v));
        }
        for imm in st.imm.iter().rev() {
            if let Some(v) = imm.mem.borrow().lookup(key, seq, now) {
                return Some(owned(v));
            }
        }
        None
    }

    /// The live value of `key` at `seq` in the tables of `version`.
    async fn tables_lookup(
        &self,
        version: &Version,
        key: &[u8],
        seq: SeqNo,
    ) -> Result<Option<(Vec<u8>, SeqNo)>> {
        let out = version.get(key, key_hash(key), seq).await?;
        {
            let mut stats = self.inner.stats.borrow_mut();
            stats.bloom_useful_total += out.filter_negatives;
            stats.bloom_false_positive_total += out.filter_false_positives;
            stats.bloom_true_positive_total += out.filter_true_positives;
        }
        let now = self.inner.clock.now_ms();
        Ok(out
            .entry
            .filter(|e| !e.as_ref().is_absent_at(now))
            .map(|e| (e.value, e.seq)))
    }

    /// Up to `limit` live entries of `range` at `seq`, and whether more remain.
    async fn scan_seq(
        &self,
        range: &ScanRange,
        limit: usize,
        seq: SeqNo,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, bool)> {
        if let Some(end) = &range.end
            && end.as_slice() <= range.start.as_slice()
        {
            return Ok((Vec::new(), false));
        }
        let forward = !range.reverse;
        let mut it = self.iter_seq(seq, forward);
        let in_range = |k: &[u8]| {
            if forward {
                range.end.as_deref().is_none_or(|e| k < e)
            } else {
                k >= range.start.as_slice()
            }
        };
        match (forward, range.end.as_deref()) {
            (true, _) => it.seek(&range.start).await?,
            (false, Some(end)) => it.seek(end).await?,
            (false, None) => it.seek_to_first().await?,
        }
        let mut out = Vec::new();
        while it.valid() && in_range(it.key()) {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next().await?;
        }
        Ok((out, false))
    }

    /// An unpositioned iterator over the live entries at `seq`.
    fn iter_seq(&self, seq: SeqNo, forward: bool) -> EngineIter {
        // Registered for the iterator's life so writes keep the memtable versions it needs.
        let guard = self.inner.snapshots.take(seq);
        // Memtables and the version are taken in one synchronous step: a flush that moves a
        // memtable into a table cannot fall between them.
        let (sources, version) = {
            let st = self.inner.state.borrow();
            let mut sources = vec![Source::Mem(MemIter::new(st.mem.clone(), forward))];
            for imm in &st.imm {
                sources.push(Source::Mem(MemIter::new(imm.mem.clone(), forward)));
            }
            let v = &st.version;
            for t in &v.levels[0] {
                sources.push(Source::Table(t.table.iter(false)));
            }
            for files in &v.levels[1..] {
                if !files.is_empty() {
                    let tables = files.iter().map(|t| t.table.clone()).collect();
                    sources.push(Source::Level(LevelIter::new(tables, false)));
                }
            }
            (sources, st.version.clone())
        };
        let now = self.inner.clock.now_ms();
        let it = VisibleIter::new(MergeIter::new(sources, forward), seq, now);
        EngineIter::new(it, guard, version, self.inner.backlog.clone())
    }

    fn check_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        if !snapshot.belongs_to(&self.inner.snapshots) {
            return Err(Error::InvalidArgument(
                "snapshot was taken from another engine instance".into(),
            ));
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.get() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        let failure = self
            .inner
            .wal
            .failure()
            .or_else(|| self.inner.bg_error.borrow().clone());
        if let Some(reason) = failure {
            self.inner.stats.borrow_mut().rejected_read_only_total += 1;
            return Err(Error::ReadOnly { reason });
        }
        Ok(())
    }

    fn count_invalid(&self) {
        self.inner.stats.borrow_mut().rejected_invalid_total += 1;
    }

    fn validate(&self, b: &WriteBatch) -> Result<()> {
        batch::validate(b, &self.inner.options).inspect_err(|_| self.count_invalid())
    }

    async fn write_inner(&self, b: WriteBatch, kind: WriteKind) -> Result<SeqNo> {
        self.check_writable()?;
        self.validate(&b)?;
        let needed = write_cost(&b);
        loop {
            self.make_room(needed).await?;
            // No await between make_room and sequence: the room is still there (checked
            // again, cheaply, in case a stalled writer ahead took it).
            if self.stall_reason(needed).is_none() {
                let s = self.sequence(b)?;
                let r = self.finish_write(s, kind).await;
                // After sequencing, never before: writes are sequenced in the order issued.
                backlog::cooperate(&self.inner.backlog).await;
                return r;
            }
        }
    }

    /// Why a write of `needed` bytes cannot be sequenced now, if it cannot.
    fn stall_reason(&self, needed: usize) -> Option<StallReason> {
        let inner = &self.inner;
        let st = inner.state.borrow();
        let o = &inner.options;
        let full = {
            let mem = st.mem.borrow();
            !mem.is_empty() && mem.bytes() + needed > o.memtable_size_bytes_max
        };
        if full && st.imm.len() >= o.memtables_immutable_max {
            return Some(StallReason::Memtables);
        }
        if st.version.levels[0].len() >= o.l0_stop_writes_files {
            return Some(StallReason::Level0);
        }
        if picker::pending_compaction_bytes(&st.version, &inner.targets)
            >= o.pending_compaction_bytes_stop
        {
            return Some(StallReason::PendingCompaction);
        }
        None
    }

    /// Waits (a counted write stall) until a write of `needed` bytes can go in. Stalled
    /// writers go on in arrival order: while one waits, later writers queue behind it, so
    /// writes are still sequenced in the order they were issued and a large write is not
    /// starved by small ones.
    async fn make_room(&self, needed: usize) -> Result<()> {
        let inner = &self.inner;
        let bg = &inner.bg;
        if bg.stalled_writers() == 0 {
            let Some(reason) = self.stall_reason(needed) else {
                return Ok(());
            };
            let mut stats = inner.stats.borrow_mut();
            stats.write_stalls_total += 1;
            match reason {
                StallReason::Memtables => stats.write_stalls_memtables_total += 1,
                StallReason::Level0 => stats.write_stalls_l0_total += 1,
                StallReason::PendingCompaction => stats.write_stalls_pending_compaction_total += 1,
            }
        }
        let started = std::time::Instant::now();
        let ticket = bg.take_ticket();
        bg.wake_workers();
        let r = loop {
            let seen = bg.room_generation();
            if let Err(e) = self.check_writable() {
                break Err(e);
            }
            if bg.is_turn(ticket) && self.stall_reason(needed).is_none() {
                break Ok(());
            }
            bg.room_changed(seen).await;
        };
        bg.done_ticket(ticket);
        inner.stats.borrow_mut().write_stall_us_total += started.elapsed().as_micros() as u64;
        r
    }

    /// Waits until a sequenced write is as durable as promised, then publishes it.
    async fn finish_write(&self, s: Sequenced, kind: WriteKind) -> Result<SeqNo> {
        let last_seq = s.last_seq;
        if let Err(e) = self.inner.wal.wait_durable(s.index).await {
            self.inner.stats.borrow_mut().failed_io_total += 1;
            return Err(e);
        }
        self.publish(last_seq);
        let mut stats = self.inner.stats.borrow_mut();
        stats.writes_total += 1;
        stats.write_ops_total += u64::from(s.ops);
        stats.write_payload_bytes_total += s.payload_bytes as u64;
        if kind == WriteKind::Batch {
            stats.batches_total += 1;
        }
        Ok(last_seq)
    }

    /// Hands out sequence numbers, applies the (still invisible) versions to the memtable and
    /// queues the WAL record. Synchronous: nothing else runs on the shard in between.
    /// A full memtable is first made immutable (and its flush started). The caller has just
    /// checked that there is room (`stall_reason` is None).
    fn sequence(&self, b: WriteBatch) -> Result<Sequenced> {
        let inner = &self.inner;
        let needed = write_cost(&b);
        debug_assert!(self.stall_reason(needed).is_none());
        // Refuse now, before anything changes, what the WAL would refuse below.
        let payload_len = batch::RESERVED_HEADER_BYTES + b.rep().len();
        inner.wal.check_appendable(payload_len)?;
        let mut st = inner.state.borrow_mut();
        let full = {
            let mem = st.mem.borrow();
            !mem.is_empty() && mem.bytes() + needed > inner.options.memtable_size_bytes_max
        };
        if full {
            let old = std::mem::replace(&mut st.mem, Rc::new(RefCell::new(Memtable::new())));
            let imm = Immutable {
                mem: old,
                seq_max: st.last_seq,
                wal_index_max: std::mem::take(&mut st.mem_wal_index_max),
            };
            st.imm.push_back(imm);
            inner.bg.wake_workers();
        }
        if full {
            drop(st);
            background::refresh_backlog(inner);
            st = inner.state.borrow_mut();
        }
        let first_seq = st.last_seq + 1;
        let now_ms = inner.clock.now_ms();
        let visible = st.visible_seq;
        let snapshots = &inner.snapshots;
        let needed = |lo: SeqNo, hi: SeqNo| {
            // Readers at the read point need the newest version at or below it; versions above
            // it are pending writes, kept until published. Both have `visible < hi`.
            visible < hi || snapshots.any_in(lo, hi)
        };
        // The batch was validated: it decodes.
        let mem = st.mem.clone();
        let applied = apply_ops(&mut mem.borrow_mut(), b.rep(), first_seq, now_ms, &needed);
        debug_assert_eq!(applied, Ok(b.count()));
        let (ops, payload_bytes) = (b.count(), b.payload_bytes());
        st.last_seq = first_seq + u64::from(ops) - 1;
        let index = inner
            .wal
            .append(b.into_buffer_with_header(&payload_header(ops, first_seq, now_ms)))?;
        st.mem_wal_index_max = index;
        Ok(Sequenced {
            last_seq: st.last_seq,
            index,
            ops,
            payload_bytes,
        })
    }

    /// Makes every write up to `seq` visible to readers.
    fn publish(&self, seq: SeqNo) {
        let mut st = self.inner.state.borrow_mut();
        debug_assert!(seq <= st.last_seq);
        st.visible_seq = st.visible_seq.max(seq);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Single,
    Batch,
    Cas,
}

/// Applies encoded operations to the memtable, operation `i` at `first_seq + i`.
fn apply_ops(
    memtable: &mut Memtable,
    rep: &[u8],
    first_seq: SeqNo,
    write_time_ms: u64,
    needed: &dyn Fn(SeqNo, SeqNo) -> bool,
) -> std::result::Result<u32, usize> {
    let mut n = 0u32;
    for (i, op) in BatchIter::new(rep).enumerate() {
        n += 1;
        let seq = first_seq + i as u64;
        match op? {
            BatchOp::Put { key, value, ttl_ms } => {
                let expires = ttl_ms.map_or(0, |t| write_time_ms.saturating_add(t).max(1));
                memtable.insert(key, seq, Some(value), expires, needed);
            }
            BatchOp::Delete { key } => memtable.insert(key, seq, None, 0, needed),
        }
    }
    Ok(n)
}

/// The header of a write's WAL record payload (format in the module doc).
fn payload_header(ops: u32, first_seq: SeqNo, now_ms: u64) -> [u8; PAYLOAD_HEADER_BYTES] {
    let mut h = [0u8; PAYLOAD_HEADER_BYTES];
    h[0] = PAYLOAD_KIND_BATCH;
    h[4..8].copy_from_slice(&ops.to_le_bytes());
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..24].copy_from_slice(&now_ms.to_le_bytes());
    h
}

/// A sequenced write, waiting to become durable.
struct Sequenced {
    last_seq: SeqNo,
    index: u64,
    ops: u32,
    payload_bytes: usize,
}

/// Applies one replayed WAL record to the memtable; `last_seq` is the last sequence number
/// replayed so far. Records whose writes are all at or below `flushed_seq` are already in
/// tables and are skipped.
pub(crate) fn replay_record(
    memtable: &mut Memtable,
    last_seq: &mut SeqNo,
    flushed_seq: SeqNo,
    r: Replayed<'_>,
) -> Result<()> {
    let p = r.payload;
    // Errors point at the payload: past the frame header.
    let at = r.offset + crate::wal::record::HEADER_BYTES as u64;
    let bad = |off: u64, what: String| Err(Error::corruption(r.file, at + off, what));
    if p.len() < PAYLOAD_HEADER_BYTES || p[0] != PAYLOAD_KIND_BATCH {
        return bad(
            0,
            format!("record {}: unknown payload kind or short header", r.index),
        );
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&p[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let count = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
    let first_seq = u64_at(8);
    let write_time_ms = u64_at(16);
    // The record's last sequence number; a header whose range would pass u64::MAX is damage
    // (found by tests/tests/decoders.rs: it overflowed).
    let last_in_record = u64::from(count)
        .checked_sub(1)
        .and_then(|n| first_seq.checked_add(n));
    let Some(last_in_record) = last_in_record.filter(|_| first_seq > *last_seq) else {
        return bad(
            4,
            format!(
                "record {}: {count} operations from sequence {first_seq}, after sequence {}",
                r.index, *last_seq
            ),
        );
    };
    if last_in_record <= flushed_seq {
        *last_seq = last_in_record;
        return Ok(());
    }
    // Nobody reads during replay: keep only the newest version of each key.
    let applied = apply_ops(
        memtable,
        &p[PAYLOAD_HEADER_BYTES..],
        first_seq,
        write_time_ms,
        &|_, _| false,
    )
    .map_err(|off| {
        Error::corruption(
            r.file,
            at + (PAYLOAD_HEADER_BYTES + off) as u64,
            format!("record {}: malformed operation", r.index),
        )
    })?;
    if applied != count {
        return bad(
            4,
            format!(
                "record {}: header says {count} operations, found {applied}",
                r.index
            ),
        );
    }
    *last_seq = last_in_record;
    Ok(())
}

/// Memtable bytes a batch needs at most.
fn write_cost(b: &WriteBatch) -> usize {
    BatchIter::new(b.rep())
        .flatten()
        .map(|op| match op {
            BatchOp::Put { key, value, .. } => memtable::write_cost_bytes(key.len(), value.len()),
            BatchOp::Delete { key } => memtable::write_cost_bytes(key.len(), 0),
        })
        .sum()
}

/// Deletes what a crash may have left behind: tables the manifest does not list (a flush or
/// compaction that never reached its edit), old manifests and a half-written `CURRENT.tmp`.
fn remove_unreferenced_files(
    io: &Io,
    dir: &Path,
    state: &ManifestState,
    manifest_number: u64,
) -> Result<()> {
    let live: std::collections::HashSet<u64> = state
        .levels
        .iter()
        .flat_map(|l| l.keys().copied())
        .collect();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = if let Some(n) = name.strip_suffix(".sst") {
            n.parse::<u64>().is_ok_and(|n| !live.contains(&n))
        } else if let Some(n) = name.strip_prefix("MANIFEST-") {
            n.parse::<u64>().is_ok_and(|n| n != manifest_number)
        } else {
            name == "CURRENT.tmp"
        };
        if stale {
            tracing::info!(file = %name, "removing a file no live version refers to");
            io.remove(&entry.path())?;
        }
    }
    Ok(())
}

impl Engine {
    /// Table options for tables written to `level`.
    pub(crate) fn table_options(options: &Options, level: usize) -> TableOptions {
        TableOptions {
            block_size_bytes: options.block_size_bytes,
            bloom_bits_per_key: options.bloom_bits_per_key,
            compression: options.compression_for_level(level),
        }
    }

    /// Flushes the active memtable to a level-0 table now (if it holds anything) and waits
    /// until every immutable memtable is in a table. Writes go on meanwhile.
    pub async fn flush(&self) -> Result<()> {
        self.check_writable()?;
        let target = {
            let st = self.inner.state.borrow_mut();
            if st.mem.borrow().is_empty() {
                None
            } else {
                Some(st.flush_generation + st.imm.len() as u64 + 1)
            }
        };
        let Some(target) = target else {
            return background::wait_flushed(&self.inner, 0).await;
        };
        // Make room for one more immutable memtable, then switch.
        loop {
            self.make_room(0).await?;
            let switched = {
                let mut st = self.inner.state.borrow_mut();
                if st.imm.len() >= self.inner.options.memtables_immutable_max {
                    false
                } else {
                    if !st.mem.borrow().is_empty() {
                        let fresh = Rc::new(RefCell::new(Memtable::new()));
                        let old = std::mem::replace(&mut st.mem, fresh);
                        let imm = Immutable {
                            mem: old,
                            seq_max: st.last_seq,
                            wal_index_max: std::mem::take(&mut st.mem_wal_index_max),
                        };
                        st.imm.push_back(imm);
                    }
                    true
                }
            };
            if switched {
                background::refresh_backlog(&self.inner);
                break;
            }
            let seen = self.inner.bg.room_generation();
            self.inner.bg.wake_workers();
            self.inner.bg.room_changed(seen).await;
        }
        self.inner.bg.wake_workers();
        background::wait_flushed(&self.inner, target).await
    }

    /// Waits until no flush or compaction is pending or running (tests, benchmarks: "after
    /// compaction settles"). Returns the background error if one stopped the work.
    pub async fn wait_for_background(&self) -> Result<()> {
        background::wait_idle(&self.inner).await
    }
}
