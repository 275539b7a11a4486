//! The WAL writer task: group commit.
//!
//! One task per WAL does all of its writes and syncs, one at a time. Appending only queues a
//! record and wakes the task; the task takes every queued record that fits (up to
//! `wal_write_bytes_max` and the end of the segment), writes them with the partially filled
//! last block in one aligned O_DIRECT write, and in `sync` mode makes it durable (through an
//! `O_DSYNC` descriptor, or write + `fdatasync` when `wal_dsync_writes` is off). Records queued
//! while that write and sync are in flight wait for the next round, where they are written and
//! synced together: under load, one `fdatasync` covers many writers.
//!
//! The partially filled last block is rewritten by the next write with the same bytes for the
//! records it already holds, so a torn rewrite (at 512-byte sector granularity) cannot damage
//! them. Before a new segment gets its first record, the previous one is synced, so only the
//! last segment can ever end in a torn write.

use std::rc::{Rc, Weak};
use std::time::Duration;

use super::record;
use super::segment::{self, HEADER_BLOCK_BYTES};
use super::{Active, Failure, Segment, Shared, Spare};
use crate::error::Result;
use crate::options::{Durability, WAL_BLOCK_SIZE_BYTES};

const BLOCK: u64 = WAL_BLOCK_SIZE_BYTES as u64;

enum Job {
    Exit,
    Idle,
    Work,
}

fn next_job(shared: &Shared) -> Job {
    let state = shared.state.borrow();
    if state.failure.is_some() {
        return Job::Exit;
    }
    if state.maintenance {
        return Job::Idle;
    }
    if !state.pending.is_empty() {
        return Job::Work;
    }
    if state.sync_target > state.synced_index && state.written_index > state.synced_index {
        return Job::Work;
    }
    if state.shutdown {
        return Job::Exit;
    }
    Job::Idle
}

/// The writer task's body. Ends on shutdown (once everything queued is written) or on the
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
        let mut state = shared.state.borrow_mut();
        state.busy = false;
        if let Err(e) = result {
            tracing::error!(error = %e, dir = ?shared.dir, "WAL write failed; the engine is read-only until reopened");
            state.stats.io_errors_total += 1;
            state.failure = Some(Failure::from_error(&e));
            drop(state);
            shared.progress.notify();
            break;
        }
        drop(state);
        shared.progress.notify();
    }
    shared.state.borrow_mut().writer_running = false;
    shared.progress.notify();
}

/// One round: write what is queued (rolling over first if needed) and sync as the mode or a
/// sync request asks; or only sync.
async fn work(shared: &Rc<Shared>) -> Result<()> {
    let first_frame = shared
        .state
        .borrow()
        .pending
        .front()
        .map(|p| record::frame_len(p.payload.len()) as u64);
    let Some(first_frame) = first_frame else {
        return sync_only(shared).await;
    };
    let has_room = {
        let state = shared.state.borrow();
        match (&state.active, state.segments.last()) {
            (Some(a), Some(seg)) => a.end + first_frame <= seg.size_bytes,
            _ => false,
        }
    };
    if !has_room {
        rollover(shared, first_frame).await?;
    }

    // Build one write from the tail block and as many queued records as fit.
    let (file, buf, block_start, offsets, last_index, new_end, new_tail, records) = {
        let mut state = shared.state.borrow_mut();
        let state = &mut *state;
        let (Some(active), Some(seg)) = (state.active.as_ref(), state.segments.last()) else {
            return Err(crate::Error::io(
                "wal write",
                &shared.dir,
                std::io::Error::other("internal error: no active segment after rollover"),
            ));
        };
        let start = active.end;
        let block_start = start - start % BLOCK;
        let tail_len = (start - block_start) as usize;
        debug_assert_eq!(tail_len, active.tail.len());
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
        debug_assert!(take > 0);
        let len = (tail_len + frames).next_multiple_of(WAL_BLOCK_SIZE_BYTES);
        let mut buf = active.file.alloc(len);
        let bytes = buf.as_bytes_mut();
        bytes[..tail_len].copy_from_slice(&active.tail);
        let durable_index = state.synced_index;
        let mut at = tail_len;
        let mut offsets = Vec::with_capacity(take);
        let mut last_index = 0;
        for _ in 0..take {
            let Some(p) = state.pending.pop_front() else {
                break;
            };
            let f = record::frame_len(p.payload.len());
            record::encode(&mut bytes[at..at + f], p.index, durable_index, &p.payload);
            state.pending_bytes -= p.payload.len();
            offsets.push(block_start + at as u64);
            debug_assert_eq!(p.index, state.written_index + offsets.len() as u64);
            last_index = p.index;
            at += f;
        }
        bytes[at..].fill(0);
        let new_end = block_start + at as u64;
        let tail_from = at - at % WAL_BLOCK_SIZE_BYTES;
        let new_tail = bytes[tail_from..at].to_vec();
        (
            active.file.clone(),
            buf,
            block_start,
            offsets,
            last_index,
            new_end,
            new_tail,
            take,
        )
    };
    let write_len = buf.len() as u64;
    let sync_now = shared.opts.durability == Durability::Sync || {
        let state = shared.state.borrow();
        state.sync_target > state.synced_index
    };
    // In `sync` mode every write is synced at once: one O_DSYNC write does both.
    let durable_write = sync_now && shared.opts.dsync_writes;
    if durable_write {
        file.write_durable_at(buf, block_start).await?;
    } else {
        file.write_at(buf, block_start).await?;
    }
    {
        let mut state = shared.state.borrow_mut();
        let state = &mut *state;
        if let Some(seg) = state.segments.last_mut() {
            seg.offsets.extend_from_slice(&offsets);
            seg.end = new_end;
        }
        if let Some(a) = state.active.as_mut() {
            a.end = new_end;
            a.tail = new_tail;
        }
        state.written_index = last_index;
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
    let (file, path) = match spare {
        Some(spare) => {
            segment::install(&shared.io, &shared.dir, spare, first_index, size_bytes).await?
        }
        None => {
            let zero = shared.opts.zero_fill();
            segment::create(&shared.io, &shared.dir, first_index, size_bytes, zero).await?
        }
    };
    ensure_spare(shared);
    let mut state = shared.state.borrow_mut();
    state.segments.push(Segment {
        first_index,
        path,
        size_bytes,
        offsets: Vec::new(),
        end: HEADER_BLOCK_BYTES,
    });
    state.active = Some(Active {
        file: Rc::new(file),
        end: HEADER_BLOCK_BYTES,
        tail: Vec::new(),
    });
    state.stats.segments_created_total += 1;
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
