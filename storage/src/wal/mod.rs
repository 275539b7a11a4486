//! The write-ahead log: an append-only sequence of records addressed by a dense index,
//! stored in preallocated segment files written with O_DIRECT in 4 KiB blocks.
//!
//! - Formats: [`segment`] (file naming, header block with the format version) and [`record`]
//!   (the frame: length, crc32c, index, durable index, payload).
//! - Writing: [`Wal::append`] queues a record and returns its index at once; the writer task
//!   (`writer.rs`) group-commits queued records. [`Wal::wait_durable`] resolves once a record
//!   is as durable as the [`Durability`] mode promises:
//!   - `sync`: written and `fdatasync`ed;
//!   - `periodic:MS`: written (in the file, so it survives a process crash); synced within MS;
//!   - `none`: immediately (the writer writes in the background; only `close` syncs).
//! - Failure: the first failed write or sync stops the writer. Records not yet durable are
//!   never reported durable; their waiters, and every later append, get an error. Reopen to
//!   recover (recovery reads what actually reached the disk).
//! - Recovery ([`Wal::open`]): replays every segment in order. A torn or zero-filled tail of
//!   the last segment is cut off (logged, counted); any other damage is
//!   [`Error::Corruption`] naming the file and offset, unless [`WalRecoveryMode`] says
//!   otherwise. A cut rewrites the segment's good prefix into a new file and renames it over
//!   the old one, so a crash during recovery leaves either the old or the new segment.
//! - Raft-log operations: [`Wal::read`] (entries by index range), [`Wal::truncate_suffix`],
//!   [`Wal::drop_prefix`]. Segments are deleted only by `truncate_suffix` (records the caller
//!   discards) and `drop_prefix` (records the caller has made safe elsewhere): the engine
//!   drops the segments whose records a flush has made durable in tables.

pub(crate) mod reader;
pub mod record;
pub mod segment;
mod writer;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::io::{DirLock, FaultInjector, File, Io};
use crate::options::{Durability, Options, WAL_BLOCK_SIZE_BYTES, WalRecoveryMode};
use crate::signal::Signal;

pub use segment::FORMAT_VERSION;

const BLOCK: u64 = WAL_BLOCK_SIZE_BYTES as u64;

/// WAL settings (taken from the engine's [`Options`]).
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// What an acknowledged (durable) record promises.
    pub durability: Durability,
    /// Preallocated size of a segment file.
    pub segment_size_bytes: usize,
    /// Largest single write (one group commit).
    pub write_bytes_max: usize,
    /// What recovery does with damage.
    pub recovery_mode: WalRecoveryMode,
    /// In `none` mode, writers wait once more than this many payload bytes are queued.
    pub pending_bytes_max: usize,
    /// In `sync` mode, write through an `O_DSYNC` descriptor instead of write + `fdatasync`.
    pub dsync_writes: bool,
}

impl WalOptions {
    /// The WAL part of the engine options.
    pub fn from_options(o: &Options) -> Self {
        WalOptions {
            durability: o.durability,
            segment_size_bytes: o.wal_segment_size_bytes,
            write_bytes_max: o.wal_write_bytes_max,
            recovery_mode: o.wal_recovery_mode,
            pending_bytes_max: o.wal_pending_bytes_max,
            dsync_writes: o.wal_dsync_writes,
        }
    }

    /// Whether segments are zero-filled before use: in `sync` mode, where every write is
    /// followed by an `fdatasync` that must not pay for extent conversion.
    fn zero_fill(&self) -> bool {
        self.durability == Durability::Sync
    }
}

/// A record handed to the replay callback of [`Wal::open`].
#[derive(Debug, Clone, Copy)]
pub struct Replayed<'a> {
    /// The record's index.
    pub index: u64,
    /// Its payload.
    pub payload: &'a [u8],
    /// The segment file it is in (for error messages).
    pub file: &'a Path,
    /// Offset of its frame in that file.
    pub offset: u64,
}

/// What recovery found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records replayed.
    pub records_replayed: u64,
    /// Torn tails cut off (0 or 1).
    pub torn_tails_cut: u64,
    /// Bytes of torn tail cut off (from the damaged record to the last non-zero byte).
    pub torn_bytes_cut: u64,
    /// Segments deleted by `skip-to-last-good` recovery (or a segment whose creation was torn).
    pub segments_dropped: u64,
    /// Damaged records skipped by `skip-to-last-good` recovery (0 or 1).
    pub corruptions_skipped: u64,
    /// Index of the first record in the log.
    pub first_index: u64,
    /// Index the next appended record will get.
    pub next_index: u64,
}

/// WAL counters (merged into the engine's [`crate::Stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records written.
    pub records_total: u64,
    /// Bytes handed to writes.
    pub write_bytes_total: u64,
    /// Writes (group commits).
    pub writes_total: u64,
    /// `fdatasync`s.
    pub syncs_total: u64,
    /// Writes by records carried: 1, 2-3, 4-7, 8-15, 16-31, 32+.
    pub group_records: [u64; 6],
    /// Most records in one write.
    pub group_records_max: u64,
    /// Segments created.
    pub segments_created_total: u64,
    /// Segments deleted.
    pub segments_deleted_total: u64,
    /// Segments present.
    pub segments_live: u64,
    /// Bytes of the segments present.
    pub segments_bytes: u64,
    /// Failed writes or syncs.
    pub io_errors_total: u64,
    /// What the last open found.
    pub recovery: RecoveryReport,
}

impl WalStats {
    fn record_group(&mut self, records: u64) {
        let bucket = match records {
            0 | 1 => 0,
            2..=3 => 1,
            4..=7 => 2,
            8..=15 => 3,
            16..=31 => 4,
            _ => 5,
        };
        self.group_records[bucket] += 1;
        self.group_records_max = self.group_records_max.max(records);
    }
}

/// A segment present on disk.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    size_bytes: u64,
    /// Frame offsets of the records written to it, in index order.
    offsets: Vec<u64>,
    /// Offset just past the last written record.
    end: u64,
}

/// The segment being written (always the last one).
#[derive(Debug)]
struct Active {
    file: Rc<File>,
    /// Offset where the next record goes (= the segment's `end`).
    end: u64,
    /// Bytes of the partially filled block `[end - end % 4096, end)`, rewritten by the next
    /// write.
    tail: Vec<u8>,
}

/// The spare segment prepared ahead of the next rollover.
#[derive(Debug, Default)]
enum Spare {
    #[default]
    None,
    Preparing,
    Ready(File),
}

#[derive(Debug)]
struct Pending {
    index: u64,
    payload: Vec<u8>,
}

/// The first write or sync failure; it ends writing for this WAL instance.
#[derive(Debug, Clone)]
struct Failure {
    op: &'static str,
    path: PathBuf,
    kind: std::io::ErrorKind,
    raw_os_error: Option<i32>,
    text: String,
}

impl Failure {
    fn from_error(e: &Error) -> Failure {
        match e {
            Error::Io { op, path, source } => Failure {
                op,
                path: path.clone(),
                kind: source.kind(),
                raw_os_error: source.raw_os_error(),
                text: e.to_string(),
            },
            other => Failure {
                op: "wal",
                path: PathBuf::new(),
                kind: std::io::ErrorKind::Other,
                raw_os_error: None,
                text: other.to_string(),
            },
        }
    }

    /// The error a writer whose record was not made durable gets.
    fn to_error(&self) -> Error {
        let source = match self.raw_os_error {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(self.kind, self.text.clone()),
        };
        Error::io(self.op, &self.path, source)
    }
}

#[derive(Debug, Default)]
struct State {
    segments: Vec<Segment>,
    active: Option<Active>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// Index the next append gets.
    next_index: u64,
    /// Every record up to this index has been written.
    written_index: u64,
    /// Every record up to this index has been `fdatasync`ed.
    synced_index: u64,
    /// The writer is doing I/O.
    busy: bool,
    writer_running: bool,
    failure: Option<Failure>,
    /// Records up to this index must be synced even outside `sync` mode (`wait_synced`,
    /// `close`, the periodic timer).
    sync_target: u64,
    shutdown: bool,
    /// A truncation holds the writer and refuses appends.
    maintenance: bool,
    spare: Spare,
    stats: WalStats,
}

impl State {
    /// Makes a freshly created, empty segment (records from `first_index` on) the active one.
    fn start_segment(&mut self, first_index: u64, path: PathBuf, size_bytes: u64, file: File) {
        self.segments.push(Segment {
            first_index,
            path,
            size_bytes,
            offsets: Vec::new(),
            end: segment::HEADER_BLOCK_BYTES,
        });
        self.active = Some(Active {
            file: Rc::new(file),
            end: segment::HEADER_BLOCK_BYTES,
            tail: Vec::new(),
        });
        self.stats.segments_created_total += 1;
    }
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    io: Io,
    opts: WalOptions,
    st: RefCell<State>,
    /// Wakes the writer.
    work: Signal,
    /// Wakes whoever waits for records to become written or synced.
    progress: Signal,
    /// Held as long as the writer may touch files.
    _lock: DirLock,
}

/// Which point a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Written,
    Synced,
}

/// One write-ahead log. `!Send`; lives on one glommio executor.
#[derive(Debug)]
pub struct Wal {
    sh: Rc<Shared>,
}

/// The writer is told to stop when the handle goes: it writes what is queued (unless the
/// simulated machine crashed or a write failed), then ends and releases the lock. Use
/// [`Wal::close`] to also sync.
impl Drop for Wal {
    fn drop(&mut self) {
        self.sh.st.borrow_mut().shutdown = true;
        self.sh.work.notify();
    }
}

impl Wal {
    /// Opens (creating if missing) the WAL in `dir`, calling `replay` for every record in
    /// index order, then starts the writer. An error from `replay` aborts the open.
    pub async fn open(
        dir: impl AsRef<Path>,
        opts: WalOptions,
        faults: Option<FaultInjector>,
        mut replay: impl FnMut(Replayed<'_>) -> Result<()>,
    ) -> Result<(Wal, RecoveryReport)> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let io = Io::new(faults);
        io.probe(lock.path()).await?;
        let mut st = State::default();
        let report = recover(&io, &dir, &opts, &mut st, &mut replay).await?;
        if st.active.is_none() {
            // A fresh (or sealed) log: make the first segment now, so the first write does not
            // wait for a segment to be zero-filled.
            let size = opts.segment_size_bytes as u64;
            let zero = opts.zero_fill();
            match segment::create(&io, &dir, st.next_index, size, zero).await {
                Ok((file, path)) => {
                    let first_index = st.next_index;
                    st.start_segment(first_index, path, size, file);
                }
                Err(e @ Error::Io { .. }) => {
                    // A full (or failing) disk: what was recovered stays readable, writes are
                    // refused as after any WAL failure, until a reopen with space again. The
                    // half-made segment holds no record; the next open removes it.
                    tracing::error!(error = %e, dir = ?dir, "cannot create a WAL segment; the engine opens read-only");
                    st.stats.io_errors_total += 1;
                    st.failure = Some(Failure::from_error(&e));
                }
                Err(e) => return Err(e),
            }
        }
        st.stats.recovery = report;
        st.writer_running = true;
        let sh = Rc::new(Shared {
            dir,
            io,
            opts,
            st: RefCell::new(st),
            work: Signal::default(),
            progress: Signal::default(),
            _lock: lock,
        });
        glommio::spawn_local(writer::run(sh.clone())).detach();
        writer::ensure_spare(&sh);
        if let Durability::Periodic { interval_ms } = sh.opts.durability {
            glommio::spawn_local(writer::periodic_sync(
                Rc::downgrade(&sh),
                Duration::from_millis(interval_ms),
            ))
            .detach();
        }
        Ok((Wal { sh }, report))
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.sh.dir
    }

    /// Queues a record (payload 1 byte to ~4 GiB) and returns its index. It is not durable
    /// yet: wait with [`Wal::wait_durable`].
    pub fn append(&self, payload: Vec<u8>) -> Result<u64> {
        let mut st = self.sh.st.borrow_mut();
        self.check_appendable_in(&st, payload.len())?;
        let index = st.next_index;
        st.next_index += 1;
        st.pending_bytes += payload.len();
        st.pending.push_back(Pending { index, payload });
        drop(st);
        self.sh.work.notify();
        Ok(index)
    }

    /// Whether [`Wal::append`] would accept a payload of this size now.
    pub fn check_appendable(&self, payload_len: usize) -> Result<()> {
        self.check_appendable_in(&self.sh.st.borrow(), payload_len)
    }

    fn check_appendable_in(&self, st: &State, payload_len: usize) -> Result<()> {
        if let Some(f) = &st.failure {
            return Err(Error::ReadOnly {
                reason: f.text.clone(),
            });
        }
        if st.shutdown {
            return Err(Error::Closed);
        }
        if st.maintenance {
            return Err(Error::InvalidArgument(
                "the WAL is being truncated; append after truncate_suffix returns".into(),
            ));
        }
        if payload_len == 0 || payload_len > record::PAYLOAD_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "WAL payload of {payload_len} bytes: must be 1..={} bytes",
                record::PAYLOAD_BYTES_MAX
            )));
        }
        Ok(())
    }

    /// Why writing stopped, if it did (then the WAL refuses appends until reopened).
    pub fn failure(&self) -> Option<String> {
        self.sh.st.borrow().failure.as_ref().map(|f| f.text.clone())
    }

    /// Resolves once record `index` is as durable as the durability mode promises (see the
    /// module doc), or fails if it never will be.
    pub async fn wait_durable(&self, index: u64) -> Result<()> {
        match self.sh.opts.durability {
            Durability::Sync => self.wait(index, Level::Synced).await,
            Durability::Periodic { .. } => self.wait(index, Level::Written).await,
            Durability::None => {
                // Nothing to wait for, unless the writer falls far behind: then writers wait
                // for it, so queued records stay bounded.
                let behind = self.sh.st.borrow().pending_bytes > self.sh.opts.pending_bytes_max;
                if behind {
                    self.wait(index, Level::Written).await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Resolves once record `index` has been written and `fdatasync`ed (in any mode).
    pub async fn wait_synced(&self, index: u64) -> Result<()> {
        {
            let mut st = self.sh.st.borrow_mut();
            if st.synced_index >= index {
                return Ok(());
            }
            st.sync_target = st.sync_target.max(index);
        }
        self.sh.work.notify();
        self.wait(index, Level::Synced).await
    }

    /// Makes every record appended so far durable (written and synced).
    pub async fn sync(&self) -> Result<()> {
        let last = self.last_index();
        self.wait_synced(last).await
    }

    async fn wait(&self, index: u64, level: Level) -> Result<()> {
        loop {
            let seen = self.sh.progress.generation();
            {
                let st = self.sh.st.borrow();
                let reached = match level {
                    Level::Written => st.written_index,
                    Level::Synced => st.synced_index,
                };
                if reached >= index {
                    return Ok(());
                }
                if let Some(f) = &st.failure {
                    return Err(f.to_error());
                }
                if index >= st.next_index {
                    return Err(Error::InvalidArgument(format!(
                        "WAL index {index} has not been appended (next is {})",
                        st.next_index
                    )));
                }
            }
            self.sh.progress.changed(seen).await;
        }
    }

    /// Index of the first record the log holds (or the next index, when empty).
    pub fn first_index(&self) -> u64 {
        let st = self.sh.st.borrow();
        st.segments.first().map_or(st.next_index, |s| s.first_index)
    }

    /// Index of the last record appended (0 if none ever was).
    pub fn last_index(&self) -> u64 {
        self.sh.st.borrow().next_index - 1
    }

    /// Every record up to this index has been written.
    pub fn written_index(&self) -> u64 {
        self.sh.st.borrow().written_index
    }

    /// Every record up to this index has been written and synced.
    pub fn synced_index(&self) -> u64 {
        self.sh.st.borrow().synced_index
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        let st = self.sh.st.borrow();
        let mut s = st.stats;
        s.segments_live = st.segments.len() as u64;
        s.segments_bytes = st.segments.iter().map(|s| s.size_bytes).sum();
        s
    }

    /// Reads the written records with indices in `range` from disk, checking each frame.
    /// Stops early once `bytes_max` payload bytes have been returned (at least one record is
    /// returned if the range is not empty).
    pub async fn read(&self, range: Range<u64>, bytes_max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        if range.start >= range.end {
            return Ok(out);
        }
        {
            let st = self.sh.st.borrow();
            let first = self.first_index();
            if range.start < first || range.end > st.written_index + 1 {
                return Err(Error::InvalidArgument(format!(
                    "WAL read of [{}, {}): the written log holds [{first}, {})",
                    range.start,
                    range.end,
                    st.written_index + 1
                )));
            }
        }
        let mut next = range.start;
        let mut bytes = 0usize;
        while next < range.end {
            // Find the segment, the byte span of the records wanted from it, and a file.
            let (path, first, span_start, ends, active_file) = {
                let st = self.sh.st.borrow();
                let i = st
                    .segments
                    .partition_point(|s| s.first_index <= next)
                    .saturating_sub(1);
                let seg = &st.segments[i];
                let from = (next - seg.first_index) as usize;
                let to = ((range.end - seg.first_index) as usize).min(seg.offsets.len());
                // Frame ends: the next frame's offset, or the segment end.
                let ends: Vec<u64> = (from..to)
                    .map(|k| seg.offsets.get(k + 1).copied().unwrap_or(seg.end))
                    .collect();
                let active_file = if i + 1 == st.segments.len() {
                    st.active.as_ref().map(|a| a.file.clone())
                } else {
                    None
                };
                let Some(&span_start) = seg.offsets.get(from) else {
                    return Err(Error::InvalidArgument(format!(
                        "WAL record {next} is not in segment {:?}",
                        seg.path
                    )));
                };
                (
                    seg.path.clone(),
                    seg.first_index,
                    span_start,
                    ends,
                    active_file,
                )
            };
            let span_end = ends.last().copied().unwrap_or(span_start);
            let data = match active_file {
                Some(f) => {
                    f.read_at(span_start, (span_end - span_start) as usize)
                        .await?
                }
                None => {
                    let f = self.sh.io.open(&path).await?;
                    let r = f
                        .read_at(span_start, (span_end - span_start) as usize)
                        .await;
                    f.close().await?;
                    r?
                }
            };
            let mut at = 0usize;
            for end in ends {
                let offset = span_start + at as u64;
                let frame =
                    &data[at.min(data.len())..((end - span_start) as usize).min(data.len())];
                match record::decode(frame) {
                    record::Decoded::Record { index, payload, .. } if index == next => {
                        bytes += payload.len();
                        out.push((index, payload.to_vec()));
                    }
                    other => {
                        return Err(Error::corruption(
                            &path,
                            offset,
                            format!("reading record {next}: {other:?}"),
                        ));
                    }
                }
                at = (end - span_start) as usize;
                next += 1;
                if bytes >= bytes_max {
                    return Ok(out);
                }
            }
            debug_assert!(next > first);
        }
        Ok(out)
    }

    /// Holds the writer for a structural change: waits until every queued record is written
    /// and the writer is idle, then refuses appends until [`Wal::end_maintenance`].
    async fn begin_maintenance(&self) -> Result<()> {
        self.wait(self.last_index(), Level::Written).await?;
        self.sh.st.borrow_mut().maintenance = true;
        loop {
            let seen = self.sh.progress.generation();
            if !self.sh.st.borrow().busy {
                return Ok(());
            }
            self.sh.progress.changed(seen).await;
        }
    }

    fn end_maintenance(&self, result: &Result<()>) {
        let mut st = self.sh.st.borrow_mut();
        st.maintenance = false;
        if let Err(e) = result {
            // The files may be half changed: stop writing until reopened.
            st.failure.get_or_insert_with(|| Failure::from_error(e));
            st.stats.io_errors_total += 1;
        }
        drop(st);
        self.sh.work.notify();
        self.sh.progress.notify();
    }

    /// Removes every record with index `from` or above (Raft: entries that conflict with the
    /// leader's). `first_index() <= from <= last_index() + 1`. Durable when it returns: later
    /// segments are deleted (newest first), then the segment holding `from` is replaced by a
    /// copy of its prefix (write, sync, rename, sync directory), so a crash at any point leaves
    /// a prefix of the old log. The next append gets index `from`.
    pub async fn truncate_suffix(&self, from: u64) -> Result<()> {
        let (first, next) = (self.first_index(), self.sh.st.borrow().next_index);
        if from < first || from > next {
            return Err(Error::InvalidArgument(format!(
                "truncate_suffix({from}): must be within [{first}, {next}]"
            )));
        }
        if from == next {
            return Ok(());
        }
        self.begin_maintenance().await?;
        let result = self.truncate_suffix_held(from).await;
        self.end_maintenance(&result);
        result
    }

    async fn truncate_suffix_held(&self, from: u64) -> Result<()> {
        let sh = &self.sh;
        // Delete whole segments at or after `from`, newest first.
        let mut deleted = false;
        loop {
            let path = {
                let mut st = sh.st.borrow_mut();
                match st.segments.last() {
                    Some(s) if s.first_index >= from => {
                        let path = s.path.clone();
                        st.segments.pop();
                        st.active = None;
                        st.stats.segments_deleted_total += 1;
                        path
                    }
                    _ => break,
                }
            };
            sh.io.remove(&path)?;
            deleted = true;
        }
        if deleted {
            sh.io.sync_dir(&sh.dir).await?;
        }
        // Cut the segment holding `from`, if any.
        let cut = {
            let st = sh.st.borrow();
            st.segments.last().and_then(|s| {
                let k = (from - s.first_index) as usize;
                (k < s.offsets.len())
                    .then(|| (s.path.clone(), s.first_index, s.size_bytes, s.offsets[k]))
            })
        };
        if let Some((path, first_index, size_bytes, cut_at)) = cut {
            let active = sh.st.borrow_mut().active.take();
            let prefix = match &active {
                Some(a) => a.file.read_at(0, cut_at as usize).await?,
                None => {
                    let f = sh.io.open(&path).await?;
                    let r = f.read_at(0, cut_at as usize).await;
                    f.close().await?;
                    r?
                }
            };
            drop(active);
            let file = segment::rewrite_prefix(
                &sh.io,
                &sh.dir,
                first_index,
                size_bytes,
                &prefix,
                sh.opts.zero_fill(),
            )
            .await?;
            let mut st = sh.st.borrow_mut();
            if let Some(s) = st.segments.last_mut() {
                s.offsets.truncate((from - first_index) as usize);
                s.end = cut_at;
            }
            let tail_from = (cut_at - cut_at % BLOCK) as usize;
            st.active = Some(Active {
                file: Rc::new(file),
                end: cut_at,
                tail: prefix[tail_from..].to_vec(),
            });
        } else if sh.st.borrow().segments.is_empty() {
            // Everything went: keep an empty segment so the next index survives a restart.
            let (file, path) = segment::create(
                &sh.io,
                &sh.dir,
                from,
                sh.opts.segment_size_bytes as u64,
                sh.opts.zero_fill(),
            )
            .await?;
            sh.st
                .borrow_mut()
                .start_segment(from, path, sh.opts.segment_size_bytes as u64, file);
        } else if sh.st.borrow().active.is_none() {
            // The cut fell on a segment boundary: the previous segment becomes active again.
            let (path, end) = {
                let st = sh.st.borrow();
                let s = st.segments.last().map(|s| (s.path.clone(), s.end));
                s.unwrap_or_default()
            };
            let file = sh.io.open(&path).await?;
            let tail_from = end - end % BLOCK;
            let tail = file.read_at(tail_from, (end - tail_from) as usize).await?;
            sh.st.borrow_mut().active = Some(Active {
                file: Rc::new(file),
                end,
                tail,
            });
        }
        let mut st = sh.st.borrow_mut();
        st.next_index = from;
        st.written_index = from - 1;
        st.synced_index = st.synced_index.min(from - 1);
        st.sync_target = st.sync_target.min(from - 1);
        Ok(())
    }

    /// Deletes whole segments whose records all have indices below `upto` (Raft: entries
    /// compacted into a snapshot; the engine: records flushed to SSTables). Never deletes the
    /// segment being written. Returns the new [`Wal::first_index`], which may be below
    /// `upto`: records below `upto` that share a segment with later ones stay readable.
    pub async fn drop_prefix(&self, upto: u64) -> Result<u64> {
        let sh = &self.sh;
        let mut deleted = false;
        loop {
            let path = {
                let mut st = sh.st.borrow_mut();
                if st.segments.len() < 2 || st.segments[1].first_index > upto {
                    break;
                }
                let s = st.segments.remove(0);
                st.stats.segments_deleted_total += 1;
                s.path
            };
            sh.io.remove(&path)?;
            deleted = true;
        }
        if deleted {
            sh.io.sync_dir(&sh.dir).await?;
        }
        Ok(self.first_index())
    }

    /// Writes and syncs everything appended, stops the writer and closes the files. Later
    /// appends fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.sync().await?;
        self.sh.st.borrow_mut().shutdown = true;
        self.sh.work.notify();
        loop {
            let seen = self.sh.progress.generation();
            if !self.sh.st.borrow().writer_running {
                break;
            }
            self.sh.progress.changed(seen).await;
        }
        let active = self.sh.st.borrow_mut().active.take();
        if let Some(a) = active
            && let Ok(file) = Rc::try_unwrap(a.file)
        {
            file.close().await?;
        }
        // A spare being prepared finishes; a ready one goes (the next open prepares anew).
        loop {
            let seen = self.sh.progress.generation();
            let spare = std::mem::take(&mut self.sh.st.borrow_mut().spare);
            match spare {
                Spare::Preparing => {
                    self.sh.st.borrow_mut().spare = Spare::Preparing;
                    self.sh.progress.changed(seen).await;
                }
                Spare::Ready(f) => {
                    f.close().await?;
                    break;
                }
                Spare::None => break,
            }
        }
        let spare = self.sh.dir.join(segment::SPARE_FILE);
        if spare.exists() {
            self.sh.io.remove(&spare)?;
        }
        Ok(())
    }
}

/// Replays the segments in `dir` into `replay` and fills `st` (see the module doc).
async fn recover(
    io: &Io,
    dir: &Path,
    opts: &WalOptions,
    st: &mut State,
    replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = segment::parse_file_name(name) {
            names.push((first, entry.path()));
        } else if name.ends_with(segment::TMP_SUFFIX) {
            // A segment rewrite that did not finish: the original is still in place.
            tracing::warn!(file = ?entry.path(), "removing an unfinished WAL segment rewrite");
            io.remove(&entry.path())?;
        }
    }
    names.sort();
    let mut expect: Option<u64> = None;
    let count = names.len();
    let mut dropped_from: Option<usize> = None;
    for (i, (first, path)) in names.iter().enumerate() {
        let (first, last) = (*first, i + 1 == count);
        let file = io.open(path).await?;
        let mut data = segment::read_all(&file).await?;
        let header = match segment::Header::decode(&data) {
            Ok(h) => h,
            Err(detail) => {
                let no_records = data
                    .get(segment::HEADER_BLOCK_BYTES as usize..)
                    .is_none_or(|rest| rest.iter().all(|&b| b == 0));
                if last && no_records && opts.recovery_mode != WalRecoveryMode::AbsoluteConsistency
                {
                    // Creation was torn by a crash before any record was written to it.
                    tracing::warn!(file = ?path, %detail, "removing a WAL segment whose creation did not complete");
                    file.close().await?;
                    io.remove(path)?;
                    io.sync_dir(dir).await?;
                    report.segments_dropped += 1;
                    expect.get_or_insert(first);
                    break;
                }
                if opts.recovery_mode == WalRecoveryMode::SkipToLastGood {
                    file.close().await?;
                    report.corruptions_skipped += 1;
                    dropped_from = Some(i);
                    tracing::error!(file = ?path, %detail, "damaged WAL segment header: dropping it and everything after it (skip-to-last-good)");
                    break;
                }
                return Err(segment::header_error(path, detail));
            }
        };
        if header.first_index != first {
            return Err(Error::corruption(
                path,
                16,
                format!(
                    "header says the first index is {}, the file name says {first}",
                    header.first_index
                ),
            ));
        }
        if let Some(e) = expect
            && e != first
        {
            if opts.recovery_mode == WalRecoveryMode::SkipToLastGood {
                file.close().await?;
                report.corruptions_skipped += 1;
                dropped_from = Some(i);
                tracing::error!(file = ?path, expected = e, "WAL index gap: dropping this segment and everything after it (skip-to-last-good)");
                break;
            }
            return Err(Error::corruption(
                path,
                0,
                format!("segment starts at index {first}, but the previous one ends before {e}"),
            ));
        }
        if (data.len() as u64) < header.segment_size_bytes {
            // Cut short (a crash before a size change reached the disk, or a copy): restore
            // the preallocation; the missing bytes read as zeros.
            tracing::warn!(file = ?path, bytes = data.len(), "WAL segment shorter than its header says; reallocating");
            file.allocate(header.segment_size_bytes).await?;
            data.resize(header.segment_size_bytes as usize, 0);
        }
        let scan = reader::scan(&data, first);
        for r in &scan.records {
            replay(Replayed {
                index: r.index,
                payload: &data[r.payload_start..r.payload_start + r.payload_len],
                file: path,
                offset: r.offset,
            })?;
        }
        report.records_replayed += scan.records.len() as u64;
        let mut seg = Segment {
            first_index: first,
            path: path.clone(),
            size_bytes: header.segment_size_bytes.max(data.len() as u64),
            offsets: scan.records.iter().map(|r| r.offset).collect(),
            end: scan.end,
        };
        expect = Some(first + scan.records.len() as u64);
        let mut file = Some(file);
        if let Some(d) = &scan.damage {
            let torn = last && !d.proven_durable;
            let allowed = match opts.recovery_mode {
                WalRecoveryMode::AbsoluteConsistency => false,
                WalRecoveryMode::TolerateTornTail => torn,
                WalRecoveryMode::SkipToLastGood => true,
            };
            if !allowed {
                let why = if d.proven_durable {
                    "; a later record shows this one had been made durable"
                } else if !last {
                    "; only the last segment may end in a torn write"
                } else {
                    ""
                };
                return Err(Error::corruption(
                    path,
                    d.offset,
                    format!("{}{why}", d.detail),
                ));
            }
            if torn {
                report.torn_tails_cut += 1;
                report.torn_bytes_cut += d.nonzero_end - d.offset;
                tracing::warn!(file = ?path, offset = d.offset, bytes = d.nonzero_end - d.offset,
                    detail = %d.detail, "cutting off a torn WAL tail (a write interrupted by a crash, never acknowledged as durable)");
            } else {
                report.corruptions_skipped += 1;
                tracing::error!(file = ?path, offset = d.offset, detail = %d.detail,
                    "WAL corruption: replay stops at the last good record and everything after it is dropped (skip-to-last-good)");
            }
            if let Some(f) = file.take() {
                f.close().await?;
            }
            let prefix = &data[..d.offset as usize];
            let zero = opts.zero_fill();
            file =
                Some(segment::rewrite_prefix(io, dir, first, seg.size_bytes, prefix, zero).await?);
            if !last {
                dropped_from = Some(i + 1);
            }
        }
        if last || dropped_from.is_some() {
            let end = seg.end;
            let tail_from = (end - end % BLOCK) as usize;
            let tail = data[tail_from..end as usize].to_vec();
            seg.end = end;
            st.segments.push(seg);
            if let Some(f) = file {
                st.active = Some(Active {
                    file: Rc::new(f),
                    end,
                    tail,
                });
            }
            if dropped_from.is_some() {
                break;
            }
        } else {
            st.segments.push(seg);
            if let Some(f) = file {
                f.close().await?;
            }
        }
    }
    if let Some(from) = dropped_from {
        for (_, path) in names[from..].iter().rev() {
            tracing::error!(file = ?path, "deleting a WAL segment after the damage (skip-to-last-good)");
            io.remove(path)?;
            report.segments_dropped += 1;
        }
        io.sync_dir(dir).await?;
    }
    // A sealed last segment with no room is fine: the writer rolls over on the first append.
    let next = expect.unwrap_or(1);
    st.next_index = next;
    st.written_index = next - 1;
    st.synced_index = next - 1;
    report.next_index = next;
    report.first_index = st.segments.first().map_or(next, |s| s.first_index);
    debug_assert!(
        st.segments
            .windows(2)
            .all(|w| w[0].first_index < w[1].first_index)
    );
    Ok(report)
}
