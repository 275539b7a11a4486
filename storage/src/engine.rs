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
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::SeqNo;
use crate::io::FaultInjector;
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
    },
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

struct Inner {
    dir: PathBuf,
    options: Options,
    clock: Clock,
    state: RefCell<State>,
    snapshots: Rc<SnapshotList>,
    stats: RefCell<Stats>,
    closed: Cell<bool>,
    /// The WAL; it also holds the directory lock.
    wal: Wal,
}

struct State {
    memtable: Memtable,
    /// Last sequence number handed out.
    last_seq: SeqNo,
    /// Last sequence number readers see.
    visible_seq: SeqNo,
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
        let mut memtable = Memtable::new();
        let mut last_seq: SeqNo = 0;
        let (wal, report) = Wal::open(
            dir.join(WAL_DIR),
            WalOptions::from_options(&options),
            hooks.faults,
            |r| replay_record(&mut memtable, &mut last_seq, r),
        )
        .await?;
        tracing::info!(
            dir = ?dir,
            records = report.records_replayed,
            torn_tails_cut = report.torn_tails_cut,
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
        let inner = Inner {
            dir,
            options,
            clock: hooks.clock.unwrap_or_default(),
            state: RefCell::new(State {
                memtable,
                last_seq,
                visible_seq: last_seq,
            }),
            snapshots: Rc::new(SnapshotList::default()),
            stats: RefCell::new(stats),
            closed: Cell::new(false),
            wal,
        };
        Ok(Engine {
            inner: Rc::new(inner),
        })
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
        // Compare and sequence in one synchronous step: no other write can come between.
        let current = {
            let st = inner.state.borrow();
            st.memtable
                .get(key, st.last_seq, inner.clock.now_ms())
                .map(<[u8]>::to_vec)
        };
        if current.as_deref() == expected {
            let seq = self.sequence(b)?;
            let seq = self.finish_write(seq, WriteKind::Cas).await?;
            inner.stats.borrow_mut().cas_applied_total += 1;
            return Ok(CasOutcome::Applied(seq));
        }
        // The value we compared with may come from a write not yet acknowledged: report it
        // only once everything sequenced so far is durable.
        let seen = inner.state.borrow().last_seq;
        let index = inner.wal.last_index();
        if index > 0 {
            inner.wal.wait_durable(index).await?;
        }
        self.publish(seen);
        inner.stats.borrow_mut().cas_mismatch_total += 1;
        Ok(CasOutcome::Mismatch { current })
    }

    /// The live value of `key`, as of the latest acknowledged write.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        let seq = self.inner.state.borrow().visible_seq;
        self.get_seq(key, seq)
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
        self.get_seq(key, snapshot.seq())
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
        let (entries, more) = self.inner.state.borrow().memtable.scan(
            &range.start,
            range.end.as_deref(),
            limit,
            range.reverse,
            seq,
            self.inner.clock.now_ms(),
        );
        let mut stats = self.inner.stats.borrow_mut();
        stats.scans_total += 1;
        stats.scan_entries_total += entries.len() as u64;
        Ok(ScanPage { entries, more })
    }

    /// Makes everything acknowledged durable and releases the engine's files. Other clones
    /// of this engine get [`Error::Closed`] afterwards.
    pub async fn close(self) -> Result<()> {
        self.check_open()?;
        self.inner.closed.set(true);
        self.inner.wal.close().await
    }

    /// A copy of the engine's counters.
    pub fn stats(&self) -> Stats {
        let mut s = *self.inner.stats.borrow();
        let st = self.inner.state.borrow();
        s.seq_last = st.last_seq;
        s.seq_visible = st.visible_seq;
        s.memtable_bytes = st.memtable.bytes() as u64;
        s.memtable_keys = st.memtable.keys() as u64;
        s.memtable_versions = st.memtable.versions() as u64;
        s.snapshots_live = self.inner.snapshots.count() as u64;
        let w = self.inner.wal.stats();
        s.read_only = u64::from(self.inner.wal.failure().is_some());
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

    fn get_seq(&self, key: &[u8], seq: SeqNo) -> Result<Option<Vec<u8>>> {
        self.inner.options.check_key(key)?;
        self.inner.stats.borrow_mut().gets_total += 1;
        let st = self.inner.state.borrow();
        Ok(st
            .memtable
            .get(key, seq, self.inner.clock.now_ms())
            .map(<[u8]>::to_vec))
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
        if let Some(reason) = self.inner.wal.failure() {
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
        let s = self.sequence(b)?;
        self.finish_write(s, kind).await
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
    fn sequence(&self, b: WriteBatch) -> Result<Sequenced> {
        let inner = &self.inner;
        let mut st = inner.state.borrow_mut();
        let needed: usize = BatchIter::new(b.rep())
            .flatten()
            .map(|op| match op {
                BatchOp::Put { key, value, .. } => {
                    memtable::write_cost_bytes(key.len(), value.len())
                }
                BatchOp::Delete { key } => memtable::write_cost_bytes(key.len(), 0),
            })
            .sum();
        let max = inner.options.memtable_size_bytes_max;
        if st.memtable.bytes() + needed > max {
            inner.stats.borrow_mut().rejected_memtable_full_total += 1;
            return Err(Error::MemtableFull {
                bytes: st.memtable.bytes() as u64,
                needed: needed as u64,
                max: max as u64,
            });
        }
        // Refuse now, before anything changes, what the WAL would refuse below.
        let payload_len = batch::RESERVED_HEADER_BYTES + b.rep().len();
        inner.wal.check_appendable(payload_len)?;
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
        let applied = apply_ops(&mut st.memtable, b.rep(), first_seq, now_ms, &needed);
        debug_assert_eq!(applied, Ok(b.count()));
        let (ops, payload_bytes) = (b.count(), b.payload_bytes());
        st.last_seq = first_seq + u64::from(ops) - 1;
        let index = inner
            .wal
            .append(b.into_buffer_with_header(&payload_header(ops, first_seq, now_ms)))?;
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
/// replayed so far.
fn replay_record(memtable: &mut Memtable, last_seq: &mut SeqNo, r: Replayed<'_>) -> Result<()> {
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
    if count == 0 || first_seq <= *last_seq {
        return bad(
            4,
            format!(
                "record {}: {count} operations from sequence {first_seq}, after sequence {}",
                r.index, *last_seq
            ),
        );
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
    *last_seq = first_seq + u64::from(count) - 1;
    Ok(())
}
