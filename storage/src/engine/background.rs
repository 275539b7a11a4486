//! Background work of one engine: the flush task, the compaction task and the unlink task
//! (obsolete tables removed on the blocking thread, `crate::io::Io::serve_unlinks`), all in a
//! low-share glommio task queue so foreground reads and writes keep their latency.
//!
//! The tasks hold the engine only weakly while idle, so dropping the last `Engine` handle
//! stops them; `Engine::close` stops them and waits until they have let go of the files.
//! The first failure of flush or compaction (an I/O error while writing a table or the
//! manifest) is kept in [`Workers`]: the engine then refuses writes (reads go on), like a
//! failed WAL.

use std::collections::HashMap;
use std::rc::{Rc, Weak};

use super::state::{Immutable, State};
use super::workers::Workers;
use super::{Engine, Inner};
use crate::backlog::Backlog;
use crate::compaction::job::{self, JobContext};
use crate::compaction::picker::Plan;
use crate::error::{Error, Result};
use crate::io::CrashPoint;
use crate::manifest::VersionEdit;
use crate::sst::builder::{TableBuilder, TableMeta};
use crate::sst::reader::{TableReader, table_path};
use crate::version::TableFile;

/// Starts the flush, compaction and unlink tasks of `inner`, in this executor's background
/// queue (whose shares follow the backlog, see [`crate::backlog`]).
pub(super) fn start(inner: &Rc<Inner>) -> Result<()> {
    let tq = crate::backlog::register(&inner.backlog);
    refresh_backlog(inner);
    let workers = inner.workers.clone();
    // Each task is counted once it is spawned, so `wait_stopped` never waits for one that
    // failed to start.
    let spawn = |task: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        glommio::spawn_local_into(task, tq)
            .map_err(|e| Error::InvalidArgument(format!("cannot start background tasks: {e}")))?
            .detach();
        workers.tasks_started(1);
        Ok::<(), Error>(())
    };
    spawn(Box::pin(task_loop(
        Rc::downgrade(inner),
        workers.clone(),
        Task::Flush,
    )))?;
    spawn(Box::pin(task_loop(
        Rc::downgrade(inner),
        workers.clone(),
        Task::Compaction,
    )))?;
    let io = inner.io.clone();
    let w = workers.clone();
    spawn(Box::pin(async move {
        io.serve_unlinks(|| w.room_made()).await;
        w.task_ended();
    }))?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Flush,
    Compaction,
}

async fn task_loop(weak: Weak<Inner>, workers: Rc<Workers>, task: Task) {
    loop {
        let seen = workers.work_generation();
        if workers.is_stopped() {
            break;
        }
        let Some(inner) = weak.upgrade() else { break };
        if workers.has_failed() {
            break;
        }
        workers.job_started();
        let r = match task {
            Task::Flush => flush_next(&inner).await,
            Task::Compaction => compact_next(&inner).await,
        };
        workers.job_ended();
        match r {
            Ok(true) => {
                workers.room_made();
                workers.wake();
            }
            Ok(false) => {
                // Idle: no notification here (a stalled writer woken for nothing would wake
                // the tasks again, and the two would spin).
                drop(inner);
                workers.work_changed(seen).await;
            }
            Err(Error::Closed) => break,
            Err(e) => {
                let what = match task {
                    Task::Flush => "flush",
                    Task::Compaction => "compaction",
                };
                tracing::error!(error = %e, "{what} failed; the engine refuses writes until reopened");
                inner.stats.borrow_mut().background_errors_total += 1;
                workers.fail(format!("{what} failed: {e}"));
                break;
            }
        }
    }
    if let Some(inner) = weak.upgrade() {
        refresh_backlog(&inner);
    }
    workers.task_ended();
}

/// Re-reads what waits for the background tasks into `inner.backlog` (the background queue's
/// shares and the foreground's cooperation follow it). Called whenever a memtable becomes
/// immutable, a version is installed, a compaction starts or ends, and a task stops.
pub(super) fn refresh_backlog(inner: &Inner) {
    let o = &inner.options;
    let b = {
        let state = inner.state.borrow();
        let version = state.version();
        let max = o.memtable_size_bytes_max;
        // Writes waiting, or a memtable full by the log it took, are at the stall whatever
        // the active memtable's bytes: it counts full.
        let at_stall = inner.workers.stalled_writers() > 0 || state.memtable_full_now(0, max);
        Backlog {
            memtables_immutable: state.immutable_count(),
            memtables_immutable_max: o.memtables_immutable_max,
            memtable_active_bytes: if at_stall { max } else { state.active_bytes() },
            memtable_bytes_max: max,
            level0_files: version.levels[0].len(),
            level0_trigger_files: o.l0_compaction_trigger_files,
            level0_stop_files: o.l0_stop_writes_files,
            compaction_due: inner.workers.is_compacting() || inner.picker.is_due(version),
            compaction_pending_bytes: inner.picker.pending_bytes(version),
            compaction_pending_bytes_stop: o.pending_compaction_bytes_stop,
        }
    };
    let stopped = inner.workers.is_stopped() || inner.workers.has_failed();
    inner.backlog.set(b, stopped);
}

/// Whether flush or compaction has work.
fn has_work(inner: &Inner) -> bool {
    let state = inner.state.borrow();
    state.immutable_count() > 0 || inner.picker.is_due(state.version())
}

/// Waits until no flush, compaction or table removal is pending or running.
pub(super) async fn wait_idle(inner: &Rc<Inner>) -> Result<()> {
    wait_until(inner, |inner| {
        inner.workers.is_idle() && !has_work(inner) && !inner.io.unlinks_pending()
    })
    .await
}

/// Waits until at least `generation` flushes have finished and no immutable memtable waits.
pub(super) async fn wait_flushed(inner: &Rc<Inner>, generation: u64) -> Result<()> {
    wait_until(inner, |inner| {
        let state = inner.state.borrow();
        state.flush_generation() >= generation && state.immutable_count() == 0
    })
    .await
}

/// Wakes the tasks until `done` holds; fails if they failed or stopped first.
async fn wait_until(inner: &Rc<Inner>, done: impl Fn(&Inner) -> bool) -> Result<()> {
    let workers = &inner.workers;
    loop {
        let seen = workers.room_generation();
        if let Some(reason) = workers.failure() {
            return Err(Error::ReadOnly { reason });
        }
        if workers.is_stopped() {
            return Err(Error::Closed);
        }
        if done(inner) {
            return Ok(());
        }
        workers.wake();
        workers.room_changed(seen).await;
    }
}

fn take_file_number(inner: &Inner) -> u64 {
    inner.state.borrow_mut().take_file_number()
}

/// Appends `edit` to the manifest and, once it is durable, swaps in the next version with
/// `added`, calling `also` in the same synchronous step. Returns false, changing nothing
/// and deleting the tables in `added`, when a checkpoint replaced the state since the job
/// began (at `resets`): the job's inputs are gone.
async fn install(
    inner: &Inner,
    mut edit: VersionEdit,
    added: HashMap<u64, Rc<TableFile>>,
    resets: u64,
    also: impl FnOnce(&mut State),
) -> Result<bool> {
    let _permit = inner.manifest.lock().await?;
    if inner.state.borrow().resets() != resets {
        for t in added.values() {
            if edit.deleted.iter().all(|&(_, n)| n != t.number()) {
                t.mark_obsolete();
            }
        }
        return Ok(false);
    }
    {
        let state = inner.state.borrow();
        edit.last_seq = Some(state.last_seq());
        edit.next_file_number = Some(state.next_file_number());
    }
    inner
        .manifest
        .append(&edit, || take_file_number(inner))
        .await?;
    {
        let mut state = inner.state.borrow_mut();
        let next = state.version().apply(&edit, &added);
        state.install(next);
        also(&mut state);
    }
    refresh_backlog(inner);
    Ok(true)
}

async fn open_table(inner: &Inner, meta: TableMeta) -> Result<Rc<TableFile>> {
    let path = table_path(&inner.dir, meta.file_number);
    let table = TableReader::open(&inner.io, &path, meta.file_number, inner.cache.clone()).await?;
    Ok(TableFile::new(meta, table, inner.io.clone()))
}

/// Flushes the oldest immutable memtable. Ok(false) when there is none.
async fn flush_next(inner: &Inner) -> Result<bool> {
    let (immutable, resets) = {
        let state = inner.state.borrow();
        let Some(immutable) = state.oldest_immutable() else {
            return Ok(false);
        };
        (immutable, state.resets())
    };
    // Its writes must be durable in the WAL first: a table never holds a write that a crash
    // could still take back from the log.
    let wal_index_max = immutable.wal_index_max();
    if wal_index_max > 0 {
        inner.log.wait_durable(wal_index_max).await?;
    }
    let number = take_file_number(inner);
    let meta = write_memtable(inner, &immutable, number).await?;

    let mut edit = VersionEdit {
        flushed_seq: Some(immutable.seq_max()),
        applied_index: inner.log.external().map(|_| wal_index_max),
        applied_time_ms: inner.log.external().map(|_| immutable.log_time_ms()),
        ..VersionEdit::default()
    };
    let mut added = HashMap::new();
    if let Some(meta) = &meta {
        inner.io.sync_dir(&inner.dir).await?;
        inner.io.crash_point(CrashPoint::FlushBeforeManifest)?;
        let t = open_table(inner, meta.clone()).await?;
        added.insert(meta.file_number, t);
        edit.added.push((0, meta.clone()));
    }
    if !install(inner, edit, added, resets, State::flushed_oldest).await? {
        return Ok(true);
    }
    inner.io.crash_point(CrashPoint::FlushBeforeWalRelease)?;

    inner.log.release_upto(wal_index_max).await?;
    {
        let mut stats = inner.stats.borrow_mut();
        stats.flushes_total += 1;
        stats.flush_bytes_written_total += meta.map_or(0, |m| m.size_bytes);
    }
    // Freeing a full memtable (one allocation per key and per value: milliseconds for 64 MiB
    // of small entries) would stall the shard's thread; the blocking thread frees it while the
    // shard serves, and the next flush need not wait for it. An iterator still holding it
    // frees it when it ends.
    if let Some(memtable) = immutable.into_memtable() {
        glommio::spawn_local(crate::io::blocking(move || drop(memtable))).detach();
    }
    Ok(true)
}

/// Writes every version of `immutable` to table `number`; None if it holds nothing.
async fn write_memtable(
    inner: &Inner,
    immutable: &Immutable,
    number: u64,
) -> Result<Option<TableMeta>> {
    let memtable = immutable.memtable();
    if memtable.borrow().is_empty() {
        return Ok(None);
    }
    let mut it = crate::iter::mem::MemIter::new(memtable.clone(), true);
    it.seek_ge(&[]);
    let opts = Engine::table_options(&inner.options, 0);
    let half = memtable.borrow().versions() / 2;
    let mut b = TableBuilder::create(&inner.io, &inner.dir, number, opts).await?;
    if inner.cache_fill.get() {
        b.fill_cache(inner.cache.clone());
    }
    let mut n = 0usize;
    while it.valid() {
        // Filling takes fresh memory for every block (a page fault each while the cache
        // grows) and makes the flush slower; once another memtable waits behind this one,
        // writes are outrunning the flush and would soon stall on it.
        if n % 1024 == 0 && b.fills_cache() && inner.state.borrow().immutable_count() > 1 {
            b.stop_filling_cache();
            inner.stats.borrow_mut().flush_cache_fill_stops_total += 1;
        }
        let mut r = b.add(&it.entry()).await;
        n += 1;
        if r.is_ok() && n == half.max(1) {
            r = inner.io.crash_point(CrashPoint::FlushMidTable);
        }
        if let Err(e) = r {
            let _ = b.abandon().await;
            return Err(e);
        }
        it.step();
        if n % 1024 == 0 {
            glommio::yield_if_needed().await;
        }
    }
    b.finish().await.map(Some)
}

/// Runs the next compaction, if one is needed. Ok(false) when none is.
async fn compact_next(inner: &Inner) -> Result<bool> {
    let plan = inner.picker.next(inner.state.borrow().version());
    let Some(plan) = plan else {
        return Ok(false);
    };
    for t in plan.all_inputs() {
        t.compacting.set(true);
    }
    inner.workers.set_compacting(true);
    let r = run_plan(inner, &plan).await;
    inner.workers.set_compacting(false);
    for t in plan.all_inputs() {
        t.compacting.set(false);
    }
    refresh_backlog(inner);
    r.map(|()| true)
}

async fn run_plan(inner: &Inner, plan: &Plan) -> Result<()> {
    let resets = inner.state.borrow().resets();
    let mut edit = VersionEdit::default();
    for t in &plan.inputs {
        edit.deleted.push((plan.level, t.number()));
    }
    for t in &plan.next_inputs {
        edit.deleted.push((plan.output_level, t.number()));
    }
    let mut added = HashMap::new();
    if plan.trivial_move {
        let t = &plan.inputs[0];
        edit.added.push((plan.output_level, t.meta.clone()));
        added.insert(t.number(), t.clone());
        if !install(inner, edit, added, resets, |_| {}).await? {
            return Ok(());
        }
        inner.stats.borrow_mut().compaction_trivial_moves_total += 1;
        tracing::debug!(
            table = t.number(),
            from = plan.level,
            "compaction: trivial move"
        );
        return Ok(());
    }
    let visible_seq = inner.state.borrow().visible_seq();
    let next_number = || take_file_number(inner);
    let should_stop = || inner.workers.is_stopped();
    let ctx = JobContext {
        io: &inner.io,
        dir: &inner.dir,
        table_options: Engine::table_options(&inner.options, plan.output_level),
        target_file_size_bytes: inner.options.target_file_size_bytes as u64,
        snapshots: &inner.snapshots,
        visible_seq,
        // With an external log, expiry is judged at the time of the last entry the tables
        // hold: every entry applied later, or again after a crash, is at least as late, so
        // what this drops as expired is expired for all of them, on every replica.
        now_ms: match inner.log.external() {
            Some(_) => inner.manifest.applied_time_ms(),
            None => inner.clock.now_ms(),
        },
        next_file_number: &next_number,
        should_stop: &should_stop,
        cache: inner.cache_fill.get().then_some(&inner.cache),
    };
    let res = job::run(plan, &ctx).await?;
    if !res.outputs.is_empty() {
        inner.io.sync_dir(&inner.dir).await?;
    }
    inner.io.crash_point(CrashPoint::CompactionBeforeManifest)?;
    for meta in &res.outputs {
        let t = open_table(inner, meta.clone()).await?;
        added.insert(meta.file_number, t);
        edit.added.push((plan.output_level, meta.clone()));
    }
    if !install(inner, edit, added, resets, |_| {}).await? {
        return Ok(());
    }
    inner
        .io
        .crash_point(CrashPoint::CompactionBeforeInputsDeleted)?;
    for t in plan.all_inputs() {
        t.mark_obsolete();
    }
    tracing::debug!(
        level = plan.level,
        reason = plan.reason,
        inputs = plan.inputs.len() + plan.next_inputs.len(),
        outputs = res.outputs.len(),
        bytes_read = res.bytes_read,
        bytes_written = res.bytes_written,
        dropped = res.versions_dropped,
        "compaction finished"
    );
    let mut stats = inner.stats.borrow_mut();
    stats.compactions_total += 1;
    stats.compaction_bytes_read_total += res.bytes_read;
    stats.compaction_bytes_written_total += res.bytes_written;
    stats.compaction_versions_dropped_total += res.versions_dropped;
    Ok(())
}
