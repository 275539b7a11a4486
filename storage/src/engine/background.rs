//! Background work of one engine: the flush task and the compaction task, both in a
//! low-share glommio task queue so foreground reads and writes keep their latency.
//!
//! The tasks hold the engine only weakly while idle, so dropping the last `Engine` handle
//! stops them; `Engine::close` stops them and waits until they have let go of the files.
//! The first failure of either (an I/O error while writing a table or the manifest) is kept
//! in `bg_error`: the engine then refuses writes (reads go on), like a failed WAL.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use super::{Engine, Immutable, Inner};
use crate::backlog::Backlog;
use crate::compaction::job::{self, JobContext};
use crate::compaction::picker::{self, Plan};
use crate::error::{Error, Result};
use crate::io::CrashPoint;
use crate::manifest::VersionEdit;
use crate::signal::Signal;
use crate::sst::builder::{TableBuilder, TableMeta};
use crate::sst::reader::{Table, table_path};
use crate::version::TableFile;

/// Signals shared between the engine and its background tasks.
#[derive(Debug, Default)]
pub(crate) struct Background {
    /// Wakes the tasks: a memtable became immutable, a table was added, or stop.
    work: Signal,
    /// Wakes stalled writers: a flush or compaction finished, or a task stopped.
    room: Signal,
    stop: Cell<bool>,
    /// Tasks still running.
    running: Cell<u32>,
    /// Tasks currently doing a job (not idle).
    busy: Cell<u32>,
    /// A compaction is running (its inputs are not offered to the picker meanwhile).
    compacting: Cell<bool>,
    /// Stalled writers take numbered tickets and go on in ticket order.
    next_ticket: Cell<u64>,
    /// Tickets whose writers are done waiting (in order or not).
    done_tickets: RefCell<std::collections::BTreeSet<u64>>,
    /// The smallest ticket not yet done: its writer's turn.
    serving: Cell<u64>,
}

impl Background {
    pub(crate) fn stop(&self) {
        self.stop.set(true);
        self.work.notify();
        self.room.notify();
    }

    pub(crate) fn wake_workers(&self) {
        self.work.notify();
    }

    /// Writers waiting for room.
    pub(crate) fn stalled_writers(&self) -> u64 {
        self.next_ticket.get() - self.serving.get()
    }

    pub(crate) fn take_ticket(&self) -> u64 {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        t
    }

    pub(crate) fn is_turn(&self, ticket: u64) -> bool {
        ticket == self.serving.get()
    }

    /// The writer holding `ticket` stopped waiting (it goes on, or it failed).
    pub(crate) fn done_ticket(&self, ticket: u64) {
        let mut done = self.done_tickets.borrow_mut();
        done.insert(ticket);
        let mut s = self.serving.get();
        while done.remove(&s) {
            s += 1;
        }
        self.serving.set(s);
        drop(done);
        self.room.notify();
    }

    pub(crate) fn room_generation(&self) -> u64 {
        self.room.generation()
    }

    pub(crate) async fn room_changed(&self, seen: u64) {
        self.room.changed(seen).await
    }

    /// Resolves once every task has ended.
    pub(crate) async fn wait_stopped(&self) {
        while self.running.get() > 0 {
            let seen = self.room.generation();
            if self.running.get() == 0 {
                break;
            }
            self.room.changed(seen).await;
        }
    }
}

/// Starts the flush and compaction tasks of `inner`, in this executor's background queue
/// (whose shares follow the backlog, see [`crate::backlog`]).
pub(crate) fn start(inner: &Rc<Inner>) -> Result<()> {
    let tq = crate::backlog::register(&inner.backlog);
    refresh_backlog(inner);
    let bg = inner.bg.clone();
    bg.running.set(2);
    let spawn_err = |e: glommio::GlommioError<()>| {
        Error::InvalidArgument(format!("cannot start background tasks: {e}"))
    };
    glommio::spawn_local_into(task_loop(Rc::downgrade(inner), bg.clone(), Task::Flush), tq)
        .map_err(spawn_err)?
        .detach();
    glommio::spawn_local_into(task_loop(Rc::downgrade(inner), bg, Task::Compaction), tq)
        .map_err(spawn_err)?
        .detach();
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Flush,
    Compaction,
}

async fn task_loop(weak: Weak<Inner>, bg: Rc<Background>, task: Task) {
    loop {
        let seen = bg.work.generation();
        if bg.stop.get() {
            break;
        }
        let Some(inner) = weak.upgrade() else { break };
        if inner.bg_error.borrow().is_some() {
            break;
        }
        bg.busy.set(bg.busy.get() + 1);
        let r = match task {
            Task::Flush => flush_next(&inner).await,
            Task::Compaction => compact_next(&inner).await,
        };
        bg.busy.set(bg.busy.get() - 1);
        match r {
            Ok(true) => {
                bg.room.notify();
                bg.work.notify();
            }
            Ok(false) => {
                // Idle: no notification here (a stalled writer woken for nothing would wake
                // the tasks again, and the two would spin).
                drop(inner);
                bg.work.changed(seen).await;
            }
            Err(Error::Closed) => break,
            Err(e) => {
                let what = match task {
                    Task::Flush => "flush",
                    Task::Compaction => "compaction",
                };
                tracing::error!(error = %e, "{what} failed; the engine refuses writes until reopened");
                inner.stats.borrow_mut().background_errors_total += 1;
                inner
                    .bg_error
                    .borrow_mut()
                    .get_or_insert_with(|| format!("{what} failed: {e}"));
                break;
            }
        }
    }
    bg.running.set(bg.running.get() - 1);
    if let Some(inner) = weak.upgrade() {
        refresh_backlog(&inner);
    }
    bg.room.notify();
    bg.work.notify();
}

/// Re-reads what waits for the background tasks into `inner.backlog` (the background queue's
/// shares and the foreground's cooperation follow it). Called whenever a memtable becomes
/// immutable, a version is installed, a compaction starts or ends, and a task stops.
pub(crate) fn refresh_backlog(inner: &Inner) {
    let o = &inner.options;
    let b = {
        let st = inner.state.borrow();
        let mut cursor = inner.compaction_cursor.borrow().clone();
        let due = inner.bg.compacting.get()
            || picker::pick(&st.version, &inner.targets, &mut cursor).is_some();
        Backlog {
            memtables_immutable: st.imm.len(),
            memtables_immutable_max: o.memtables_immutable_max,
            level0_files: st.version.levels[0].len(),
            level0_trigger_files: o.l0_compaction_trigger_files,
            level0_stop_files: o.l0_stop_writes_files,
            compaction_due: due,
            compaction_pending_bytes: picker::pending_compaction_bytes(&st.version, &inner.targets),
            compaction_pending_bytes_stop: o.pending_compaction_bytes_stop,
        }
    };
    let stopped = inner.bg.stop.get() || inner.bg_error.borrow().is_some();
    inner.backlog.set(b, stopped);
}

/// Whether flush or compaction has work.
fn has_work(inner: &Inner) -> bool {
    let st = inner.state.borrow();
    if !st.imm.is_empty() {
        return true;
    }
    let mut cursor = inner.compaction_cursor.borrow().clone();
    picker::pick(&st.version, &inner.targets, &mut cursor).is_some()
}

/// Waits until no flush or compaction is pending or running.
pub(crate) async fn wait_idle(inner: &Rc<Inner>) -> Result<()> {
    loop {
        let seen = inner.bg.room.generation();
        if let Some(e) = inner.bg_error.borrow().clone() {
            return Err(Error::ReadOnly { reason: e });
        }
        if inner.bg.stop.get() {
            return Err(Error::Closed);
        }
        if inner.bg.busy.get() == 0 && !has_work(inner) {
            return Ok(());
        }
        inner.bg.work.notify();
        inner.bg.room.changed(seen).await;
    }
}

/// Waits until at least `generation` flushes have finished and no immutable memtable waits.
pub(crate) async fn wait_flushed(inner: &Rc<Inner>, generation: u64) -> Result<()> {
    loop {
        let seen = inner.bg.room.generation();
        if let Some(e) = inner.bg_error.borrow().clone() {
            return Err(Error::ReadOnly { reason: e });
        }
        if inner.bg.stop.get() {
            return Err(Error::Closed);
        }
        {
            let st = inner.state.borrow();
            if st.flush_generation >= generation && st.imm.is_empty() {
                return Ok(());
            }
        }
        inner.bg.work.notify();
        inner.bg.room.changed(seen).await;
    }
}

fn alloc_file_number(inner: &Inner) -> u64 {
    let mut st = inner.state.borrow_mut();
    let n = st.next_file_number;
    st.next_file_number += 1;
    n
}

/// Appends `edit` to the manifest and, once it is durable, swaps in the next version with
/// `added`, calling `also` in the same synchronous step.
async fn install(
    inner: &Inner,
    mut edit: VersionEdit,
    added: HashMap<u64, Rc<TableFile>>,
    also: impl FnOnce(&mut super::State),
) -> Result<()> {
    let _permit = inner
        .manifest_lock
        .acquire_permit(1)
        .await
        .map_err(|e| Error::InvalidArgument(format!("manifest lock: {e}")))?;
    {
        let st = inner.state.borrow();
        edit.last_seq = Some(st.last_seq);
        edit.next_file_number = Some(st.next_file_number);
    }
    let mut next_state = inner.manifest_state.borrow().clone();
    next_state
        .apply(&edit, inner.options.levels_max)
        .map_err(|d| Error::InvalidArgument(format!("bad version edit: {d}")))?;
    let mut manifest = inner.manifest.borrow_mut().take().ok_or(Error::Closed)?;
    let r = manifest
        .append(&edit, &next_state, || alloc_file_number(inner))
        .await;
    *inner.manifest.borrow_mut() = Some(manifest);
    r?;
    *inner.manifest_state.borrow_mut() = next_state;
    {
        let mut st = inner.state.borrow_mut();
        let next = st.version.apply(&edit, &added);
        st.version = Rc::new(next);
        also(&mut st);
    }
    refresh_backlog(inner);
    Ok(())
}

async fn open_table(inner: &Inner, meta: TableMeta) -> Result<Rc<TableFile>> {
    let path = table_path(&inner.dir, meta.file_number);
    let table = Table::open(&inner.io, &path, meta.file_number, inner.cache.clone()).await?;
    Ok(TableFile::new(meta, table, inner.io.clone()))
}

/// Flushes the oldest immutable memtable. Ok(false) when there is none.
async fn flush_next(inner: &Inner) -> Result<bool> {
    let Some(imm) = inner.state.borrow().imm.front().cloned() else {
        return Ok(false);
    };
    // Its writes must be durable in the WAL first: a table never holds a write that a crash
    // could still take back from the log.
    if imm.wal_index_max > 0 {
        inner.wal.wait_durable(imm.wal_index_max).await?;
    }
    let number = alloc_file_number(inner);
    let meta = write_memtable(inner, &imm, number).await?;

    let mut edit = VersionEdit {
        flushed_seq: Some(imm.seq_max),
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
    install(inner, edit, added, |st| {
        st.imm.pop_front();
        st.flush_generation += 1;
    })
    .await?;
    inner.io.crash_point(CrashPoint::FlushBeforeWalRelease)?;

    if imm.wal_index_max > 0 {
        inner.wal.drop_prefix(imm.wal_index_max + 1).await?;
    }
    let mut stats = inner.stats.borrow_mut();
    stats.flushes_total += 1;
    stats.flush_bytes_written_total += meta.map_or(0, |m| m.size_bytes);
    Ok(true)
}

/// Writes every version of `imm` to table `number`; None if it holds nothing.
async fn write_memtable(inner: &Inner, imm: &Immutable, number: u64) -> Result<Option<TableMeta>> {
    if imm.mem.borrow().is_empty() {
        return Ok(None);
    }
    let mut it = crate::iter::mem::MemIter::new(imm.mem.clone(), true);
    it.seek_ge(&[]);
    let opts = Engine::table_options(&inner.options, 0);
    let half = imm.mem.borrow().versions() / 2;
    let mut b = TableBuilder::create(&inner.io, &inner.dir, number, opts).await?;
    if inner.options.block_cache_fill_on_table_write {
        b.fill_cache(inner.cache.clone());
    }
    let mut n = 0usize;
    while it.valid() {
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
    let plan = {
        let st = inner.state.borrow();
        let mut cursor = inner.compaction_cursor.borrow_mut();
        picker::pick(&st.version, &inner.targets, &mut cursor)
    };
    let Some(plan) = plan else {
        return Ok(false);
    };
    for t in plan.all_inputs() {
        t.compacting.set(true);
    }
    inner.bg.compacting.set(true);
    let r = run_plan(inner, &plan).await;
    inner.bg.compacting.set(false);
    for t in plan.all_inputs() {
        t.compacting.set(false);
    }
    refresh_backlog(inner);
    r.map(|()| true)
}

async fn run_plan(inner: &Inner, plan: &Plan) -> Result<()> {
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
        install(inner, edit, added, |_| {}).await?;
        inner.stats.borrow_mut().compaction_trivial_moves_total += 1;
        tracing::debug!(
            table = t.number(),
            from = plan.level,
            "compaction: trivial move"
        );
        return Ok(());
    }
    let visible_seq = inner.state.borrow().visible_seq;
    let next_number = || alloc_file_number(inner);
    let should_stop = || inner.bg.stop.get();
    let ctx = JobContext {
        io: &inner.io,
        dir: &inner.dir,
        table_options: Engine::table_options(&inner.options, plan.output_level),
        target_file_size_bytes: inner.options.target_file_size_bytes as u64,
        snapshots: &inner.snapshots,
        visible_seq,
        now_ms: inner.clock.now_ms(),
        next_file_number: &next_number,
        should_stop: &should_stop,
        cache: inner
            .options
            .block_cache_fill_on_table_write
            .then_some(&inner.cache),
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
    install(inner, edit, added, |_| {}).await?;
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
