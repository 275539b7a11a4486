//! Runs one phase (load or run) of a workload against a backend.
//!
//! Threads: `--threads` client threads, each a glommio executor pinned to one CPU
//! (`--cpus`, round-robin; default every CPU the process may use). Thread `t` opens its share
//! of `--connections` and runs `--inflight` *slots* per connection. A slot is a closed loop:
//! claim the next operation, wait for its intended start time when a target rate is set, issue
//! it, record its latency, repeat. So up to `connections × inflight` operations are in flight,
//! and a connection pipelines its slots' requests.
//!
//! Work is split as YCSB splits it: the load phase gives thread `t` the key numbers
//! `records·t/T .. records·(t+1)/T`; the run phase gives it its share of `--operations` and of
//! `--target` (each thread runs its own schedule at `target / T` ops/s, like YCSB's per-thread
//! throttle). Run-phase inserts take key numbers from one [`AcknowledgedCounter`] shared by
//! all threads, so reads never target a record whose insert has not completed.
//!
//! Threads talk to the main thread only over crossbeam channels: "connected", a start signal
//! (one common start instant), a per-second progress snapshot (ops and a latency histogram,
//! printed on stderr as ops/s and p99 so far), and the final measurements.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use glommio::{LocalExecutorBuilder, Placement, spawn_local};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::backend::{Backend, Connection, Update};
use super::counter::AcknowledgedCounter;
use super::keys::{KeyChooser, key_name};
use super::measure::{Measurements, Status, latency_histogram, latency_us};
use super::record::ValuePool;
use super::report::{CpuUsage, PhaseReport};
use super::workload::{OpKind, OperationChooser, Workload};
use crate::Error;
use crate::sys::thread_cpu_usage;

/// Which phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Insert records `0..records`.
    Load,
    /// The workload's operation mix.
    Run,
}

impl Phase {
    /// `load` or `run`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Run => "run",
        }
    }
}

/// Locked memory each client executor registers for I/O: it does no file I/O, so the minimum.
const CLIENT_IO_MEMORY_BYTES: usize = 512 << 10;

/// Everything a phase needs to know.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    /// Load or run.
    pub phase: Phase,
    /// The workload (its mix is ignored by the load phase, which only inserts).
    pub workload: Workload,
    /// Records loaded (load phase: to insert; run phase: already there).
    pub records: u64,
    /// Run phase: operations over all threads (`None`: until `duration`).
    pub operations: Option<u64>,
    /// Run phase: stop issuing operations after this long.
    pub duration: Option<Duration>,
    /// Client threads.
    pub threads: usize,
    /// Connections over all threads (at least one per thread).
    pub connections: usize,
    /// Operations in flight per connection.
    pub inflight: usize,
    /// Operations per second over all threads (`None`: as fast as possible).
    pub target_ops_per_sec: Option<f64>,
    /// Fields per record.
    pub field_count: usize,
    /// Bytes per field.
    pub field_length_bytes: usize,
    /// Updates write every field (YCSB `writeallfields=true`) instead of one.
    pub write_all_fields: bool,
    /// CPUs to pin client threads to, round-robin; empty: do not pin.
    pub cpus: Vec<usize>,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// Seed of every random choice (thread `t` uses `seed + t`).
    pub seed: u64,
    /// `[CONFIG]` lines for the report.
    pub config: Vec<(&'static str, String)>,
}

impl PhaseSpec {
    /// Checks limits and consistency.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidOption(m));
        if self.threads == 0 {
            return bad("--threads must be at least 1".into());
        }
        if self.connections < self.threads {
            return bad(format!(
                "--connections ({}) must be at least --threads ({}): each thread needs a connection",
                self.connections, self.threads
            ));
        }
        if self.inflight == 0 {
            return bad("--inflight must be at least 1".into());
        }
        if self.records == 0 {
            return bad("--records must be at least 1".into());
        }
        if self.phase == Phase::Run && self.operations.is_none() && self.duration.is_none() {
            return bad("the run phase needs --operations or --duration".into());
        }
        if let Some(t) = self.target_ops_per_sec {
            if !(t.is_finite() && t > 0.0) {
                return bad(format!("--target {t} must be a positive rate"));
            }
        }
        Ok(())
    }

    /// Inserts the run phase expects (YCSB: operations × insert proportion), used to size the
    /// Zipfian key space; with only a duration, `records` stands in for the operation count.
    pub fn expected_inserts(&self) -> u64 {
        let ops = self.operations.unwrap_or(self.records);
        (ops as f64 * self.workload.insert_proportion()) as u64
    }
}

/// Thread `t`'s share of `total` split over `n` (YCSB's split: the first threads get the
/// remainder's extra one).
fn share(total: u64, t: usize, n: usize) -> (u64, u64) {
    let lo = (u128::from(total) * t as u128 / n as u128) as u64;
    let hi = (u128::from(total) * (t + 1) as u128 / n as u128) as u64;
    (lo, hi)
}

enum Msg {
    Ready(Result<(), Error>),
    Progress { ops: u64, histogram: Histogram<u64> },
    Done(Box<ThreadResult>),
}

struct ThreadResult {
    measurements: Measurements,
    cpu: CpuUsage,
    finished: Instant,
    errors: BTreeSet<String>,
    error_samples: BTreeSet<String>,
}

/// Distinct messages of failed operations kept per thread, for the report.
const ERROR_SAMPLES_MAX: usize = 5;

/// What one client thread does.
struct ThreadPlan {
    index: usize,
    connections: usize,
    inflight: usize,
    /// Load: first key number; run: unused.
    load_first_keynum: u64,
    /// Operations this thread issues (`None`: until the deadline).
    budget: Option<u64>,
    /// Seconds between this thread's intended start times, if throttled.
    interval_secs: Option<f64>,
}

/// Per-thread state shared by the thread's slots (single-threaded: `Cell`/`RefCell`).
struct ThreadCtx {
    spec: PhaseSpec,
    plan: ThreadPlan,
    start: Instant,
    deadline: Option<Instant>,
    next_ticket: Cell<u64>,
    rng: RefCell<SmallRng>,
    chooser: OperationChooser,
    keys: RefCell<KeyChooser>,
    pool: ValuePool,
    inserted: Arc<AcknowledgedCounter>,
    measurements: RefCell<Measurements>,
    progress_ops: Cell<u64>,
    progress_histogram: RefCell<Histogram<u64>>,
    errors: RefCell<BTreeSet<String>>,
    error_samples: RefCell<BTreeSet<String>>,
}

impl ThreadCtx {
    /// The next operation's ticket (its index in this thread's schedule), or `None` when the
    /// budget or the time is used up.
    fn claim(&self) -> Option<u64> {
        let k = self.next_ticket.get();
        if self.plan.budget.is_some_and(|b| k >= b) || self.past_deadline() {
            return None;
        }
        self.next_ticket.set(k + 1);
        Some(k)
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// When ticket `k` should start, if throttled.
    fn intended_start(&self, k: u64) -> Option<Instant> {
        self.plan
            .interval_secs
            .map(|i| self.start + Duration::from_secs_f64(k as f64 * i))
    }

    fn record(&self, kind: OpKind, status: Status, latency: Duration) {
        self.measurements.borrow_mut().record(kind, status, latency);
    }

    /// Counts a finished transaction for the totals and the progress line.
    fn finish_transaction(&self, latency: Duration) {
        self.measurements.borrow_mut().transactions += 1;
        self.progress_ops.set(self.progress_ops.get() + 1);
        self.progress_histogram
            .borrow_mut()
            .saturating_record(latency_us(latency));
    }

    fn new_record(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut rng = self.rng.borrow_mut();
        self.pool
            .encode_new_record(self.spec.field_count, &mut *rng, out);
    }

    fn next_request_key(&self, out: &mut Vec<u8>) {
        let keynum = {
            let mut rng = self.rng.borrow_mut();
            self.keys.borrow_mut().next(&self.inserted, &mut *rng)
        };
        key_name(keynum, out);
    }
}

/// A slot's reusable buffers.
#[derive(Default)]
struct SlotBuffers {
    key: Vec<u8>,
    value: Vec<u8>,
    current: Vec<u8>,
}

/// Runs one phase and returns its merged results.
pub fn run_phase<B: Backend>(backend: &B, spec: &PhaseSpec) -> Result<PhaseReport, Error> {
    spec.validate()?;
    let threads = spec.threads;
    let inserted = Arc::new(AcknowledgedCounter::new(spec.records));
    let (msg_tx, msg_rx) = channel::unbounded::<Msg>();
    let mut go_senders = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);

    for t in 0..threads {
        let (conn_lo, conn_hi) = share(spec.connections as u64, t, threads);
        let (load_lo, load_hi) = share(spec.records, t, threads);
        let budget = match spec.phase {
            Phase::Load => Some(load_hi - load_lo),
            Phase::Run => spec.operations.map(|ops| {
                let (lo, hi) = share(ops, t, threads);
                hi - lo
            }),
        };
        let plan = ThreadPlan {
            index: t,
            connections: (conn_hi - conn_lo) as usize,
            inflight: spec.inflight,
            load_first_keynum: load_lo,
            budget,
            interval_secs: spec
                .target_ops_per_sec
                .map(|target| threads as f64 / target),
        };
        let (go_tx, go_rx) = channel::bounded::<Option<Instant>>(1);
        go_senders.push(go_tx);
        let placement = if spec.cpus.is_empty() {
            Placement::Unbound
        } else {
            Placement::Fixed(spec.cpus[t % spec.cpus.len()])
        };
        let (backend, spec, inserted, msg_tx) = (
            backend.clone(),
            spec.clone(),
            inserted.clone(),
            msg_tx.clone(),
        );
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("ycsb-client-{t}"))
            .io_memory(CLIENT_IO_MEMORY_BYTES)
            .spawn(move || client_thread(backend, spec, plan, inserted, msg_tx, go_rx))
            .map_err(|e| Error::Thread {
                thread: t,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(msg_tx);

    // Wait until every thread is connected, or one failed.
    let mut ready = 0;
    let mut failure = None;
    while ready < threads {
        match msg_rx.recv() {
            Ok(Msg::Ready(Ok(()))) => ready += 1,
            Ok(Msg::Ready(Err(e))) => {
                failure.get_or_insert(e);
                ready += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if ready < threads || failure.is_some() {
        for g in &go_senders {
            let _ = g.send(None);
        }
        for h in handles {
            let _ = h.join();
        }
        return Err(failure.unwrap_or(Error::Thread {
            thread: ready,
            reason: "a client thread stopped before connecting".into(),
        }));
    }

    let start = Instant::now();
    for g in &go_senders {
        let _ = g.send(Some(start));
    }

    let mut so_far = latency_histogram();
    let (mut ops_so_far, mut ops_at_last_line) = (0u64, 0u64);
    let mut last_line = start;
    let mut next_line = start + Duration::from_secs(1);
    let mut results = Vec::with_capacity(threads);
    while results.len() < threads {
        match msg_rx.recv_deadline(next_line) {
            Ok(Msg::Progress { ops, histogram }) => {
                ops_so_far += ops;
                let _ = so_far.add(&histogram);
            }
            Ok(Msg::Done(r)) => results.push(r),
            Ok(Msg::Ready(_)) => {}
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if spec.progress {
                    let rate = (ops_so_far - ops_at_last_line) as f64
                        / now.duration_since(last_line).as_secs_f64();
                    eprintln!(
                        "corekv-bench: {} {} s: {} operations; {:.1} current ops/sec; p99 so far {} us",
                        spec.phase.name(),
                        now.duration_since(start).as_secs(),
                        ops_so_far,
                        rate,
                        so_far.value_at_percentile(99.0)
                    );
                }
                ops_at_last_line = ops_so_far;
                last_line = now;
                next_line += Duration::from_secs(1);
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    for (t, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            return Err(Error::Thread {
                thread: t,
                reason: "the client thread panicked".into(),
            });
        }
    }
    if results.len() < threads {
        return Err(Error::Thread {
            thread: results.len(),
            reason: "a client thread ended without reporting".into(),
        });
    }

    let mut measurements = Measurements::default();
    let mut driver_cpu = CpuUsage::default();
    let mut errors = BTreeSet::new();
    let mut error_samples = BTreeSet::new();
    let mut finished = start;
    for r in &results {
        measurements.merge(&r.measurements);
        driver_cpu.add(r.cpu);
        errors.extend(r.errors.iter().cloned());
        error_samples.extend(r.error_samples.iter().cloned());
        finished = finished.max(r.finished);
    }
    Ok(PhaseReport {
        phase: spec.phase.name(),
        config: spec.config.clone(),
        runtime: finished.duration_since(start),
        measurements,
        driver_cpu,
        threads,
        errors: errors.into_iter().collect(),
        error_samples: error_samples.into_iter().take(ERROR_SAMPLES_MAX).collect(),
    })
}

async fn client_thread<B: Backend>(
    backend: B,
    spec: PhaseSpec,
    plan: ThreadPlan,
    inserted: Arc<AcknowledgedCounter>,
    msgs: Sender<Msg>,
    go: Receiver<Option<Instant>>,
) {
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        match backend.connect().await {
            Ok(c) => conns.push(Rc::new(c)),
            Err(e) => {
                let _ = msgs.send(Msg::Ready(Err(e)));
                return;
            }
        }
    }
    // Set-up that takes time (a megabyte of random values; `latest` sums zeta over every
    // record) happens before the start signal, so it is not counted in the phase.
    let mut rng = SmallRng::seed_from_u64(spec.seed.wrapping_add(plan.index as u64));
    let pool = ValuePool::new(spec.field_length_bytes, &mut rng);
    let keys = KeyChooser::new(
        spec.workload.distribution,
        spec.records,
        spec.expected_inserts(),
    );
    let _ = msgs.send(Msg::Ready(Ok(())));
    // Blocking here is fine: nothing else on this executor has work until the start.
    let Ok(Some(start)) = go.recv() else {
        return;
    };
    let cpu_at_start = thread_cpu_usage();
    let inflight = plan.inflight;
    let ctx = Rc::new(ThreadCtx {
        deadline: match spec.phase {
            Phase::Run => spec.duration.map(|d| start + d),
            Phase::Load => None,
        },
        chooser: spec.workload.chooser(),
        spec,
        plan,
        start,
        next_ticket: Cell::new(0),
        rng: RefCell::new(rng),
        keys: RefCell::new(keys),
        pool,
        inserted,
        measurements: RefCell::new(Measurements::default()),
        progress_ops: Cell::new(0),
        progress_histogram: RefCell::new(latency_histogram()),
        errors: RefCell::new(BTreeSet::new()),
        error_samples: RefCell::new(BTreeSet::new()),
    });

    let mut slots = Vec::with_capacity(conns.len() * inflight);
    for conn in &conns {
        for _ in 0..inflight {
            slots.push(spawn_local(slot_loop(ctx.clone(), conn.clone())));
        }
    }
    let progress = spawn_local(progress_loop(ctx.clone(), msgs.clone()));
    for s in slots {
        s.await;
    }
    let finished = Instant::now();
    drop(progress);
    let cpu_now = thread_cpu_usage();
    let cpu = CpuUsage {
        user: cpu_now.user.saturating_sub(cpu_at_start.user),
        system: cpu_now.system.saturating_sub(cpu_at_start.system),
    };
    let _ = msgs.send(Msg::Done(Box::new(ThreadResult {
        measurements: ctx.measurements.take(),
        cpu,
        finished,
        errors: ctx.errors.take(),
        error_samples: ctx.error_samples.take(),
    })));
    drop(conns);
}

/// How often threads send progress to the main thread, which prints a line each second.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

async fn progress_loop(ctx: Rc<ThreadCtx>, msgs: Sender<Msg>) {
    loop {
        glommio::timer::sleep(PROGRESS_INTERVAL).await;
        let histogram = std::mem::replace(
            &mut *ctx.progress_histogram.borrow_mut(),
            latency_histogram(),
        );
        let ops = ctx.progress_ops.replace(0);
        if msgs.send(Msg::Progress { ops, histogram }).is_err() {
            return;
        }
    }
}

async fn slot_loop<C: Connection>(ctx: Rc<ThreadCtx>, conn: Rc<C>) {
    let mut bufs = SlotBuffers::default();
    while let Some(ticket) = ctx.claim() {
        let intended = ctx.intended_start(ticket);
        if let Some(at) = intended {
            let now = Instant::now();
            if at > now {
                glommio::timer::sleep(at - now).await;
                ctx.measurements
                    .borrow_mut()
                    .timer_lateness
                    .get_or_insert_with(Default::default)
                    .record(latency_us(at.elapsed()));
                if ctx.past_deadline() {
                    break;
                }
            }
        }
        let began = Instant::now();
        // With a target rate, latency counts from the intended start (no coordinated omission).
        let from = intended.unwrap_or(began);
        match ctx.spec.phase {
            Phase::Load => {
                key_name(ctx.plan.load_first_keynum + ticket, &mut bufs.key);
                ctx.new_record(&mut bufs.value);
                let status = conn.insert(&bufs.key, &bufs.value).await;
                ctx.record(OpKind::Insert, status, from.elapsed());
            }
            Phase::Run => run_transaction(&ctx, &*conn, &mut bufs, from).await,
        }
        ctx.finish_transaction(from.elapsed());
        if let Some(message) = conn.last_error() {
            let mut samples = ctx.error_samples.borrow_mut();
            if samples.len() < ERROR_SAMPLES_MAX {
                samples.insert(message);
            }
        }
        if let Some(reason) = conn.failure() {
            ctx.errors.borrow_mut().insert(reason);
            break;
        }
    }
}

/// One run-phase transaction, as YCSB's `CoreWorkload.doTransaction`.
async fn run_transaction<C: Connection>(
    ctx: &ThreadCtx,
    conn: &C,
    bufs: &mut SlotBuffers,
    from: Instant,
) {
    let kind = ctx.chooser.next(&mut *ctx.rng.borrow_mut());
    match kind {
        OpKind::Read => {
            ctx.next_request_key(&mut bufs.key);
            let status = conn.read(&bufs.key, None).await;
            ctx.record(kind, status, from.elapsed());
        }
        OpKind::Update => {
            ctx.next_request_key(&mut bufs.key);
            let status = update(ctx, conn, bufs, None).await;
            ctx.record(kind, status, from.elapsed());
        }
        OpKind::Insert => {
            let keynum = ctx.inserted.next();
            key_name(keynum, &mut bufs.key);
            ctx.new_record(&mut bufs.value);
            let status = conn.insert(&bufs.key, &bufs.value).await;
            // Acknowledged whether or not it succeeded, as YCSB does: a failed insert must not
            // hold back the limit forever.
            if ctx.inserted.acknowledge(keynum).is_err() {
                ctx.errors.borrow_mut().insert(format!(
                    "more than {} inserts outstanding",
                    super::counter::ACK_WINDOW_SLOTS
                ));
            }
            ctx.record(kind, status, from.elapsed());
        }
        OpKind::Scan => {
            ctx.next_request_key(&mut bufs.key);
            let len = ctx.spec.workload.scan_length(&mut *ctx.rng.borrow_mut());
            let status = conn.scan(&bufs.key, len).await;
            ctx.record(kind, status, from.elapsed());
        }
        OpKind::ReadModifyWrite => {
            ctx.next_request_key(&mut bufs.key);
            let status = conn.read(&bufs.key, Some(&mut bufs.current)).await;
            ctx.record(OpKind::Read, status, from.elapsed());
            let status = if status.is_ok() {
                let update_began = Instant::now();
                let current = std::mem::take(&mut bufs.current);
                let s = update(ctx, conn, bufs, Some(&current)).await;
                bufs.current = current;
                // The update alone, from when it was sent; the whole transaction below.
                ctx.record(OpKind::Update, s, update_began.elapsed());
                s
            } else {
                status
            };
            ctx.record(kind, status, from.elapsed());
        }
    }
}

/// An update of the record whose key is in `bufs.key`: one field, or all with
/// `--write-all-fields`.
async fn update<C: Connection>(
    ctx: &ThreadCtx,
    conn: &C,
    bufs: &mut SlotBuffers,
    current: Option<&[u8]>,
) -> Status {
    if ctx.spec.write_all_fields {
        ctx.new_record(&mut bufs.value);
        conn.update(&bufs.key, Update::All(&bufs.value), current)
            .await
    } else {
        let index = {
            let mut rng = ctx.rng.borrow_mut();
            let index = rng.gen_range(0..ctx.spec.field_count);
            bufs.value.clear();
            bufs.value.extend_from_slice(ctx.pool.field(&mut *rng));
            index
        };
        conn.update(
            &bufs.key,
            Update::Field {
                index,
                value: &bufs.value,
            },
            current,
        )
        .await
    }
}
