//! The WAL writer task: group commit.
//!
//! One task per WAL does all of its writes and syncs. Appending only queues a record and wakes
//! the task; the task takes every queued record that fits (up to `wal_write_bytes_max` and
//! the end of the segment), writes them with the partially filled last block in one aligned
//! O_DIRECT write, and in `sync` mode makes it durable (through an `O_DSYNC` descriptor, or
//! write + `fdatasync` when `wal_dsync_writes` is off). Under load, one write and sync covers
//! many writers.
//!
//! **Two writes in flight.** In `sync` mode through `O_DSYNC`, where each write is durable by
//! itself, records queued while a write is in flight go out at once in a second write instead
//! of waiting for the first to complete: glommio reaps a completion only between runs of its
//! task queues, so under load a write is seen complete well after the disk finished it, and a
//! record queued just after a write started would otherwise wait for up to two such rounds.
//! The second write starts at the next 4 KiB boundary (the zeros before it are a gap the
//! format allows, see `segment.rs`), so the two never write the same block, and completions
//! are published in order: a record counts as written and durable only once every write before
//! it is too. A crash can keep the second write and lose the first; recovery then finds the
//! index sequence broken after the last complete write and cuts the rest as a torn tail (no
//! record of the second write was acknowledged). Other modes write one round at a time.
//!
//! The partially filled last block is rewritten by the next write (when none is in flight)
//! with the same bytes for the records it already holds, so a torn rewrite (at 512-byte sector
//! granularity) cannot damage them. Before a new segment gets its first record, the previous
//! one is synced and no write is in flight, so only the last segment can ever end in a torn
//! write.

use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::io::DmaBuffer;

use super::reader::SegmentFormat;
use super::record;
use super::segment::{self, HEADER_BLOCK_BYTES};
use super::{Failure, Shared, Spare, State, WalOptions};
use crate::error::Result;
use crate::options::{Durability, WAL_BLOCK_SIZE_BYTES};

const BLOCK: u64 = WAL_BLOCK_SIZE_BYTES as u64;

/// Most writes in flight at once (see the module doc).
pub(super) const WRITES_IN_FLIGHT_MAX: usize = 2;

enum Job {
    Exit,
    Idle,
    Work,
}

fn next_job(shared: &Shared) -> Job {
    let state = shared.state.borrow();
    if state.failure.is_some() {
        // Writes in flight finish first, so that no I/O outlives the writer.
        return if state.in_flight == 0 {
            Job::Exit
        } else {
            Job::Idle
        };
    }
    if state.maintenance {
        return Job::Idle;
    }
    if !state.pending.is_empty() {
        return if state.in_flight == 0 || can_overlap(&shared.opts, &state) {
            Job::Work
        } else {
            Job::Idle
        };
    }
    if state.in_flight > 0 {
        return Job::Idle;
    }
    if state.sync_target > state.synced_index && state.written_index > state.synced_index {
        return Job::Work;
    }
    if state.shutdown {
        return Job::Exit;
    }
    Job::Idle
}

/// Whether each write is made durable by itself, so that writes may overlap.
fn durable_writes(opts: &WalOptions) -> bool {
    opts.durability == Durability::Sync && opts.dsync_writes
}

/// Whether the next write may start while others are in flight: below the maximum, with room
/// for the first queued record after the gap. (A write in flight means the active segment is
/// format 3: a first write seals a segment of an older format, see [`work`].)
fn can_overlap(opts: &WalOptions, state: &State) -> bool {
    if state.in_flight >= WRITES_IN_FLIGHT_MAX || !durable_writes(opts) {
        return false;
    }
    let (Some(active), Some(seg), Some(p)) =
        (&state.active, state.segments.last(), state.pending.front())
    else {
        return false;
    };
    let frame = record::frame_len(p.payload.len()) as u64;
    active.end.next_multiple_of(BLOCK) + frame <= seg.size_bytes
}

/// The writer task's body. Ends on shutdown (once everything queued is written) or after the
/// first I/O failure, which it records so every waiter and every later append fails.
pub(super) async fn run(shared: Rc<Shared>) {
    loop {
        let seen = shared.work.generation();
        match next_job(&shared) {
            Job::Exit => break,
            Job::Idle => {
                shared.work.changed(seen).await;
                continue;
            }
            Job::Work => {}
        }
        shared.state.borrow_mut().busy = true;
        let result = work(&shared).await;
        shared.state.borrow_mut().busy = false;
        if let Err(e) = result {
            fail(&shared, &e);
        }
        shared.progress.notify();
    }
    shared.state.borrow_mut().writer_running = false;
    shared.progress.notify();
}

/// Records a write or sync failure: the WAL writes nothing more until reopened.
fn fail(shared: &Shared, e: &crate::Error) {
    let mut state = shared.state.borrow_mut();
    state.stats.io_errors_total += 1;
    if state.failure.is_none() {
        tracing::error!(error = %e, dir = ?shared.dir, "WAL write failed; the engine is read-only until reopened");
        state.failure = Some(Failure::from_error(e));
    }
}

/// One write being made: what to write where, and what it publishes once complete.
struct Round {
    /// Rounds are published in this order (1, 2, ...).
    seq: u64,
    file: Rc<crate::io::File>,
    buf: DmaBuffer,
    /// Where `buf` goes (a block boundary).
    at: u64,
    /// Frame offsets of its records.
    offsets: Vec<u64>,
    last_index: u64,
    /// Offset just past its last record.
    end: u64,
}

/// Starts a write of what is queued (rolling over first if needed), or only syncs. In
/// `sync` mode through `O_DSYNC` the write goes on in its own task, so that the writer can
/// start the next one; otherwise it completes (and syncs, if asked) before this returns.
async fn work(shared: &Rc<Shared>) -> Result<()> {
    let (first_frame, overlap) = {
        let state = shared.state.borrow();
        let frame = state
            .pending
            .front()
            .map(|p| record::frame_len(p.payload.len()) as u64);
        (frame, state.in_flight > 0)
    };
    let Some(first_frame) = first_frame else {
        return sync_only(shared).await;
    };
    if !overlap {
        let has_room = {
            let state = shared.state.borrow();
            // A segment of an older format (recovered after an upgrade) takes no more
            // records: its rules do not keep forged frames out (see `segment.rs`).
            match (&state.active, state.segments.last()) {
                (Some(a), Some(seg)) => {
                    a.end + first_frame <= seg.size_bytes
                        && matches!(seg.format, SegmentFormat::V3(_))
                }
                _ => false,
            }
        };
        if !has_room {
            rollover(shared, first_frame).await?;
        }
    }
    let durable = durable_writes(&shared.opts);
    if durable && !overlap {
        // Open the O_DSYNC descriptor here, once per segment, not in two writes at once.
        let file = shared
            .state
            .borrow()
            .active
            .as_ref()
            .map(|a| a.file.clone());
        if let Some(file) = file {
            file.open_dsync().await?;
        }
    }
    let round = build_round(shared, overlap)?;
    if durable {
        let shared = shared.clone();
        glommio::spawn_local(async move {
            if let Err(e) = finish_round(&shared, round).await {
                fail(&shared, &e);
            }
            round_done(&shared);
        })
        .detach();
        Ok(())
    } else {
        let result = finish_round(shared, round).await;
        round_done(shared);
        result
    }
}

/// Takes as many queued records as fit into one write after the active segment's reserved
/// end (after the tail block, rewritten, when nothing is in flight; at the next block
/// boundary when `overlap`), and reserves their place.
fn build_round(shared: &Shared, overlap: bool) -> Result<Round> {
    let mut state = shared.state.borrow_mut();
    let state = &mut *state;
    let (Some(active), Some(seg)) = (state.active.as_mut(), state.segments.last()) else {
        return Err(crate::Error::io(
            "wal write",
            &shared.dir,
            std::io::Error::other("internal error: no active segment after rollover"),
        ));
    };
    let start = if overlap {
        active.end.next_multiple_of(BLOCK)
    } else {
        active.end
    };
    let salt = seg.format.salt();
    assert!(
        start == active.end || salt.is_some(),
        "a WAL write leaving a gap in a segment of a format without the salt"
    );
    let tail: &[u8] = if overlap { &[] } else { &active.tail };
    let block_start = start - start % BLOCK;
    let tail_len = (start - block_start) as usize;
    assert_eq!(tail_len, tail.len(), "WAL tail block out of step");
    let mut frames = 0usize;
    let mut take = 0usize;
    for p in &state.pending {
        let f = record::frame_len(p.payload.len());
        if start + (frames + f) as u64 > seg.size_bytes {
            break;
        }
        if take > 0 && tail_len + frames + f > shared.opts.write_bytes_max {
            break;
        }
        frames += f;
        take += 1;
    }
    assert!(take > 0, "a WAL round without room for its first record");
    let len = (tail_len + frames).next_multiple_of(WAL_BLOCK_SIZE_BYTES);
    let mut buf = active.file.alloc(len);
    let bytes = buf.as_bytes_mut();
    bytes[..tail_len].copy_from_slice(tail);
    let durable_index = state.synced_index;
    let mut at = tail_len;
    let mut offsets = Vec::with_capacity(take);
    let mut last_index = 0;
    for _ in 0..take {
        let Some(p) = state.pending.pop_front() else {
            break;
        };
        let f = record::frame_len(p.payload.len());
        record::encode(
            &mut bytes[at..at + f],
            p.index,
            durable_index,
            (&p.payload.head, p.payload.body()),
            salt,
        );
        state.pending_bytes -= p.payload.len();
        offsets.push(block_start + at as u64);
        debug_assert!(last_index == 0 || p.index == last_index + 1);
        last_index = p.index;
        at += f;
    }
    bytes[at..].fill(0);
    let end = block_start + at as u64;
    let tail_from = at - at % WAL_BLOCK_SIZE_BYTES;
    if overlap {
        state.stats.writes_overlapped_total += 1;
        state.stats.gap_bytes_total += start - active.end;
    }
    active.tail = bytes[tail_from..at].to_vec();
    active.end = end;
    state.rounds_started += 1;
    state.in_flight += 1;
    Ok(Round {
        seq: state.rounds_started,
        file: active.file.clone(),
        buf,
        at: block_start,
        offsets,
        last_index,
        end,
    })
}

/// Writes a round, waits until every earlier round is published, then publishes it: its
/// records count as written, and as synced if the write made them durable (else syncs when
/// the mode or a sync request asks). Publishes nothing once a failure was recorded.
async fn finish_round(shared: &Shared, round: Round) -> Result<()> {
    let Round {
        seq,
        file,
        buf,
        at,
        offsets,
        last_index,
        end,
    } = round;
    let records = offsets.len();
    let write_len = buf.len() as u64;
    let sync_now = shared.opts.durability == Durability::Sync || {
        let state = shared.state.borrow();
        state.sync_target > state.synced_index
    };
    // In `sync` mode every write is synced at once: one O_DSYNC write does both.
    let durable_write = sync_now && shared.opts.dsync_writes;
    if durable_write {
        file.write_durable_at(buf, at).await?;
    } else {
        file.write_at(buf, at).await?;
    }
    loop {
        let seen = shared.progress.generation();
        {
            let state = shared.state.borrow();
            if state.failure.is_some() {
                return Ok(());
            }
            if state.rounds_published + 1 == seq {
                break;
            }
        }
        shared.progress.changed(seen).await;
    }
    {
        let mut state = shared.state.borrow_mut();
        let state = &mut *state;
        if let Some(seg) = state.segments.last_mut() {
            debug_assert!(seg.offsets.last().is_none_or(|&o| o < offsets[0]));
            seg.offsets.extend_from_slice(&offsets);
            seg.end = end;
        }
        state.written_index = last_index;
        state.rounds_published = seq;
        state.stats.records_total += records as u64;
        state.stats.write_bytes_total += write_len;
        state.stats.writes_total += 1;
        state.stats.record_group(records as u64);
    }
    if durable_write {
        synced(shared, last_index);
    } else if sync_now {
        sync_file(shared, &file, last_index).await?;
    }
    Ok(())
}

/// A round ended (published or not): wakes whoever waits for progress, and the writer.
fn round_done(shared: &Shared) {
    shared.state.borrow_mut().in_flight -= 1;
    shared.progress.notify();
    shared.work.notify();
}

async fn sync_only(shared: &Shared) -> Result<()> {
    let (file, upto) = {
        let state = shared.state.borrow();
        match &state.active {
            Some(a) => (a.file.clone(), state.written_index),
            None => return Ok(()),
        }
    };
    sync_file(shared, &file, upto).await
}

/// `fdatasync`s `file`, after which every record up to `upto` is durable.
async fn sync_file(shared: &Shared, file: &crate::io::File, upto: u64) -> Result<()> {
    file.fdatasync().await?;
    synced(shared, upto);
    Ok(())
}

/// Records that every record up to `upto` is durable (after an `fdatasync` or a durable write).
fn synced(shared: &Shared, upto: u64) {
    let mut state = shared.state.borrow_mut();
    state.synced_index = state.synced_index.max(upto);
    state.stats.syncs_total += 1;
}

/// Seals the active segment (synced, so it can never end torn) and starts a new one whose
/// first record is the next queued one, big enough for a frame of `frame_len` bytes.
async fn rollover(shared: &Rc<Shared>, frame_len: u64) -> Result<()> {
    let old = shared.state.borrow_mut().active.take();
    if let Some(old) = old {
        let upto = shared.state.borrow().written_index;
        if shared.state.borrow().synced_index < upto {
            sync_file(shared, &old.file, upto).await?;
        }
        drop(old);
    }
    let first_index = shared.state.borrow().written_index + 1;
    let size_bytes = (shared.opts.segment_size_bytes as u64)
        .max((HEADER_BLOCK_BYTES + frame_len).next_multiple_of(BLOCK));
    let spare = if size_bytes == shared.opts.segment_size_bytes as u64 {
        take_spare(shared).await
    } else {
        None
    };
    let header = segment::Header::new(first_index, size_bytes);
    let (file, path) = match spare {
        Some(spare) => segment::install(&shared.io, &shared.dir, spare, &header).await?,
        None => {
            let zero = shared.opts.zero_fill();
            segment::create(&shared.io, &shared.dir, &header, zero).await?
        }
    };
    ensure_spare(shared);
    shared.state.borrow_mut().start_segment(&header, path, file);
    tracing::debug!(first_index, size_bytes, "WAL segment created");
    Ok(())
}

/// The spare segment, waiting for it if it is being prepared; None if there is none.
async fn take_spare(shared: &Shared) -> Option<crate::io::File> {
    loop {
        let seen = shared.progress.generation();
        let spare = std::mem::take(&mut shared.state.borrow_mut().spare);
        match spare {
            Spare::Ready(f) => return Some(f),
            Spare::None => return None,
            Spare::Preparing => {
                shared.state.borrow_mut().spare = Spare::Preparing;
                shared.progress.changed(seen).await;
            }
        }
    }
}

/// Starts preparing a spare segment (allocated, zero-filled, synced) in the background, if
/// there is none. A failure only logs: the next rollover then creates its segment itself and
/// reports any error to the writers.
pub(super) fn ensure_spare(shared: &Rc<Shared>) {
    {
        let mut state = shared.state.borrow_mut();
        if !matches!(state.spare, Spare::None) || state.shutdown || state.failure.is_some() {
            return;
        }
        state.spare = Spare::Preparing;
    }
    let shared = shared.clone();
    glommio::spawn_local(async move {
        let size = shared.opts.segment_size_bytes as u64;
        // Stop early when the WAL is dropped or fails.
        let stop = || {
            let state = shared.state.borrow();
            (state.shutdown && !state.writer_running) || state.failure.is_some()
        };
        let result = segment::prepare_spare(&shared.io, &shared.dir, size, shared.opts.zero_fill(), &stop).await;
        shared.state.borrow_mut().spare = match result {
            Ok(Some(f)) => Spare::Ready(f),
            Ok(None) => Spare::None,
            Err(e) => {
                tracing::warn!(error = %e, "preparing a spare WAL segment failed; the next rollover creates one itself");
                Spare::None
            }
        };
        shared.progress.notify();
    })
    .detach();
}

/// In `periodic` mode: asks the writer for an `fdatasync` every interval while there is
/// unsynced data. Ends with the WAL.
pub(super) async fn periodic_sync(shared: Weak<Shared>, interval: Duration) {
    loop {
        glommio::timer::sleep(interval).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        {
            let mut state = shared.state.borrow_mut();
            if state.shutdown || state.failure.is_some() {
                return;
            }
            // Everything appended so far is to be synced.
            state.sync_target = state.sync_target.max(state.next_index - 1);
        }
        shared.work.notify();
    }
}
