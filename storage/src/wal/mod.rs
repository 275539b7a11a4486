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
//! - Recovery ([`Wal::open`], `recovery.rs`): replays every segment in order. A torn or zero-filled tail of
//!   the last segment is cut off (logged, counted); any other damage is
//!   [`Error::Corruption`] naming the file and offset, unless [`WalRecoveryMode`] says
//!   otherwise. A cut rewrites the segment's good prefix into a new file and renames it over
//!   the old one, so a crash during recovery leaves either the old or the new segment.
//! - Raft-log operations (`log.rs`): [`Wal::read`] (entries by index range), [`Wal::truncate_suffix`],
//!   [`Wal::drop_prefix`]. Segments are deleted only by `truncate_suffix` (records the caller
//!   discards) and `drop_prefix` (records the caller has made safe elsewhere): the engine
//!   drops the segments whose records a flush has made durable in tables.

mod log;
pub(crate) mod reader;
mod recovery;

use recovery::recover;
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
    /// Writes started while another was in flight (`sync` mode; see `writer.rs`).
    pub writes_overlapped_total: u64,
    /// Zero bytes left before such writes so that they start on a fresh block.
    pub gap_bytes_total: u64,
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
    /// What its format allows between records. The writer appends only to a version 3
    /// segment ([`reader::SegmentFormat::V3`]): an older one is sealed by the first append.
    format: reader::SegmentFormat,
}

/// The segment being written (always the last one).
#[derive(Debug)]
struct Active {
    file: Rc<File>,
    /// Offset where the next record goes: the segment's `end` once no write is in flight,
    /// past it while writes are.
    end: u64,
    /// Bytes of the partially filled block `[end - end % 4096, end)`, rewritten by the next
    /// write (unless one is in flight: then the next starts on the next block).
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
    payload: Payload,
}

/// A queued record's payload: `head`, then `body` if any. The body is a view the caller
/// hands over (a Raft entry's data), copied only into the write buffer.
struct Payload {
    head: Vec<u8>,
    body: Option<Box<dyn AsRef<[u8]>>>,
}

impl Payload {
    fn body(&self) -> &[u8] {
        self.body.as_ref().map_or(&[], |b| (**b).as_ref())
    }

    fn len(&self) -> usize {
        self.head.len() + self.body().len()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
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
    /// Writes started and not yet ended (published or failed).
    in_flight: usize,
    /// Writes started so far; each is published in this order.
    rounds_started: u64,
    /// Writes published so far (their records count as written).
    rounds_published: u64,
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
    /// Makes a freshly created, empty segment (the one `header` describes) the active one.
    fn start_segment(&mut self, header: &segment::Header, path: PathBuf, file: File) {
        self.segments.push(Segment {
            first_index: header.first_index,
            path,
            size_bytes: header.segment_size_bytes,
            offsets: Vec::new(),
            end: segment::HEADER_BLOCK_BYTES,
            format: header.format(),
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
    state: RefCell<State>,
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
    shared: Rc<Shared>,
}

/// The writer is told to stop when the handle goes: it writes what is queued (unless the
/// simulated machine crashed or a write failed), then ends and releases the lock. Use
/// [`Wal::close`] to also sync.
impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.state.borrow_mut().shutdown = true;
        self.shared.work.notify();
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
        let mut state = State::default();
        let report = recover(&io, &dir, &opts, &mut state, &mut replay).await?;
        if state.active.is_none() {
            // A fresh (or sealed) log: make the first segment now, so the first write does not
            // wait for a segment to be zero-filled.
            let header = segment::Header::new(state.next_index, opts.segment_size_bytes as u64);
            match segment::create(&io, &dir, &header, opts.zero_fill()).await {
                Ok((file, path)) => state.start_segment(&header, path, file),
                Err(e @ Error::Io { .. }) => {
                    // A full (or failing) disk: what was recovered stays readable, writes are
                    // refused as after any WAL failure, until a reopen with space again. The
                    // half-made segment holds no record; the next open removes it.
                    tracing::error!(error = %e, dir = ?dir, "cannot create a WAL segment; the engine opens read-only");
                    state.stats.io_errors_total += 1;
                    state.failure = Some(Failure::from_error(&e));
                }
                Err(e) => return Err(e),
            }
        }
        state.stats.recovery = report;
        state.writer_running = true;
        let shared = Rc::new(Shared {
            dir,
            io,
            opts,
            state: RefCell::new(state),
            work: Signal::default(),
            progress: Signal::default(),
            _lock: lock,
        });
        glommio::spawn_local(writer::run(shared.clone())).detach();
        writer::ensure_spare(&shared);
        if let Durability::Periodic { interval_ms } = shared.opts.durability {
            glommio::spawn_local(writer::periodic_sync(
                Rc::downgrade(&shared),
                Duration::from_millis(interval_ms),
            ))
            .detach();
        }
        Ok((Wal { shared }, report))
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Queues a record (payload 1 byte to ~4 GiB) and returns its index. It is not durable
    /// yet: wait with [`Wal::wait_durable`].
    pub fn append(&self, payload: Vec<u8>) -> Result<u64> {
        self.append_payload(Payload {
            head: payload,
            body: None,
        })
    }

    /// [`Wal::append`] of the payload `head` then `body`, which is not copied until it is
    /// written.
    pub fn append_parts(&self, head: Vec<u8>, body: Box<dyn AsRef<[u8]>>) -> Result<u64> {
        self.append_payload(Payload {
            head,
            body: Some(body),
        })
    }

    fn append_payload(&self, payload: Payload) -> Result<u64> {
        let mut state = self.shared.state.borrow_mut();
        self.check_appendable_in(&state, payload.len())?;
        let index = state.next_index;
        state.next_index += 1;
        state.pending_bytes += payload.len();
        state.pending.push_back(Pending { index, payload });
        drop(state);
        self.shared.work.notify();
        Ok(index)
    }

    /// Whether [`Wal::append`] would accept a payload of this size now.
    pub fn check_appendable(&self, payload_len: usize) -> Result<()> {
        self.check_appendable_in(&self.shared.state.borrow(), payload_len)
    }

    fn check_appendable_in(&self, state: &State, payload_len: usize) -> Result<()> {
        if let Some(f) = &state.failure {
            return Err(Error::ReadOnly {
                reason: f.text.clone(),
            });
        }
        if state.shutdown {
            return Err(Error::Closed);
        }
        if state.maintenance {
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
        self.shared
            .state
            .borrow()
            .failure
            .as_ref()
            .map(|f| f.text.clone())
    }

    /// Resolves once record `index` is as durable as the durability mode promises (see the
    /// module doc), or fails if it never will be.
    pub async fn wait_durable(&self, index: u64) -> Result<()> {
        match self.shared.opts.durability {
            Durability::Sync => self.wait(index, Level::Synced).await,
            Durability::Periodic { .. } => self.wait(index, Level::Written).await,
            Durability::None => {
                // Nothing to wait for, unless the writer falls far behind: then writers wait
                // for it, so queued records stay bounded.
                let behind =
                    self.shared.state.borrow().pending_bytes > self.shared.opts.pending_bytes_max;
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
            let mut state = self.shared.state.borrow_mut();
            if state.synced_index >= index {
                return Ok(());
            }
            state.sync_target = state.sync_target.max(index);
        }
        self.shared.work.notify();
        self.wait(index, Level::Synced).await
    }

    /// Makes every record appended so far durable (written and synced).
    pub async fn sync(&self) -> Result<()> {
        let last = self.last_index();
        self.wait_synced(last).await
    }

    async fn wait(&self, index: u64, level: Level) -> Result<()> {
        loop {
            let seen = self.shared.progress.generation();
            {
                let state = self.shared.state.borrow();
                let reached = match level {
                    Level::Written => state.written_index,
                    Level::Synced => state.synced_index,
                };
                if reached >= index {
                    return Ok(());
                }
                if let Some(f) = &state.failure {
                    return Err(f.to_error());
                }
                if index >= state.next_index {
                    return Err(Error::InvalidArgument(format!(
                        "WAL index {index} has not been appended (next is {})",
                        state.next_index
                    )));
                }
            }
            self.shared.progress.changed(seen).await;
        }
    }

    /// Index of the first record the log holds (or the next index, when empty).
    pub fn first_index(&self) -> u64 {
        let state = self.shared.state.borrow();
        state
            .segments
            .first()
            .map_or(state.next_index, |s| s.first_index)
    }

    /// Index of the last record appended (0 if none ever was).
    pub fn last_index(&self) -> u64 {
        self.shared.state.borrow().next_index - 1
    }

    /// Every record up to this index has been written.
    pub fn written_index(&self) -> u64 {
        self.shared.state.borrow().written_index
    }

    /// Every record up to this index has been written and synced.
    pub fn synced_index(&self) -> u64 {
        self.shared.state.borrow().synced_index
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        let state = self.shared.state.borrow();
        let mut s = state.stats;
        s.segments_live = state.segments.len() as u64;
        s.segments_bytes = state.segments.iter().map(|s| s.size_bytes).sum();
        s
    }

    /// Writes and syncs everything appended, stops the writer and closes the files. Later
    /// appends fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.sync().await?;
        self.shared.state.borrow_mut().shutdown = true;
        self.shared.work.notify();
        loop {
            let seen = self.shared.progress.generation();
            if !self.shared.state.borrow().writer_running {
                break;
            }
            self.shared.progress.changed(seen).await;
        }
        let active = self.shared.state.borrow_mut().active.take();
        if let Some(a) = active
            && let Ok(file) = Rc::try_unwrap(a.file)
        {
            file.close().await?;
        }
        // A spare being prepared finishes; a ready one goes (the next open prepares anew).
        loop {
            let seen = self.shared.progress.generation();
            let spare = std::mem::take(&mut self.shared.state.borrow_mut().spare);
            match spare {
                Spare::Preparing => {
                    self.shared.state.borrow_mut().spare = Spare::Preparing;
                    self.shared.progress.changed(seen).await;
                }
                Spare::Ready(f) => {
                    f.close().await?;
                    break;
                }
                Spare::None => break,
            }
        }
        let spare = self.shared.dir.join(segment::SPARE_FILE);
        if spare.exists() {
            self.shared.io.remove_off_thread(&spare).await?;
        }
        Ok(())
    }
}
