//! The crash loop: start a real server, run the [`crate::workload`] against it,
//! `kill -9` it at a random moment, restart it, check every key against the [`Model`], and
//! again, cycle after cycle on the same data directory. Optionally, some cycles run with disk
//! faults injected through the storage engine's I/O seam (`--debug-fault-injection`); the
//! restart after them runs without faults (the fault "clears") and must pass the same check.
//!
//! With the LSM engine's crash points, some cycles instead arm `crash=POINT@N`: the server kills
//! itself (SIGKILL) the `N`-th time a flush or compaction reaches `POINT`, so kills land inside
//! flushes and compactions for sure, not only by chance.
//!
//! Everything random comes from one seed, printed at the start; `COREKV_CRASH_SEED=<seed>`
//! replays the same schedule (operations, kill points, faults), though not the exact thread
//! interleaving. `COREKV_CRASH_CYCLES=<n>` or `COREKV_CRASH_MINUTES=<m>` make a run longer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_proto::client::TokioRuntime;
use corekv_proto::ops::counter_total;
use corekv_proto::{Client, Connection, Op, OpResult, ScanOp, ShardStats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{Model, Totals};
use crate::workload::{self, Progress, Shape};
use crate::{PROCESS_DEADLINE, Server, ServerOptions, block_on, free_ports};

/// One crash-loop configuration.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    /// Name in messages.
    pub name: String,
    /// Shards of the server.
    pub shards: usize,
    /// `--durability`.
    pub durability: String,
    /// More server flags (memtable size, ...).
    pub server_args: Vec<String>,
    /// The workload.
    pub shape: Shape,
    /// Cycles to run (overridden by `COREKV_CRASH_CYCLES` / `COREKV_CRASH_MINUTES`).
    pub cycles: u64,
    /// Operations answered before the kill: drawn from this range each cycle.
    pub ops_before_kill: std::ops::Range<u64>,
    /// Share of cycles (0..=1) that run with a random fault plan.
    pub fault_cycle_share: f64,
    /// Every this many cycles (0: never), a cycle without a fault plan is armed with the next
    /// crash point in turn ([`CRASH_POINTS`], flushes and compactions alternating): the
    /// server kills itself there. Such a cycle runs until it does (or up to
    /// [`CRASH_POINT_OPS_MAX`] operations, then the usual kill).
    pub crash_point_every: u64,
}

/// Operations a crash-point cycle runs at most while waiting for its point.
pub const CRASH_POINT_OPS_MAX: u64 = 20_000;

/// The crash points a plan can name (`corekv_server::faults`), flushes and compactions
/// alternating.
pub const CRASH_POINTS: [&str; 6] = [
    "flush-mid-table",
    "compaction-mid-output",
    "flush-before-manifest",
    "compaction-before-manifest",
    "flush-before-wal-release",
    "compaction-before-inputs-deleted",
];

/// What a crash loop did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Cycles run.
    pub cycles: u64,
    /// `kill -9`s.
    pub kills: u64,
    /// Cycles started with a fault plan.
    pub fault_plans: u64,
    /// Cycles where the plan's fault fired (the engine saw an I/O error).
    pub faults_fired: u64,
    /// Starts that failed because the fault fired while opening (then retried without).
    pub failed_starts: u64,
    /// `io` errors clients got.
    pub io_errors: u64,
    /// `read_only` errors clients got.
    pub read_only_errors: u64,
    /// Memtable flushes seen in stats before the kills (0 if the engine has none).
    pub flushes: u64,
    /// Compactions seen in stats before the kills.
    pub compactions: u64,
    /// Whether the engine reports flushes at all (the `flushes_total` counter exists).
    pub engine_flushes: bool,
    /// Cycles armed with a crash point.
    pub crash_plans: u64,
    /// Kills the server did itself at a crash point inside a flush.
    pub kills_in_flush: u64,
    /// Kills the server did itself at a crash point inside a compaction.
    pub kills_in_compaction: u64,
    /// Random kills that found background work under way or queued (an immutable memtable
    /// waiting for its flush, or compaction bytes pending) just before.
    pub kills_with_background_work: u64,
    /// Files a restart removed because no live version referred to them: tables of a flush or
    /// compaction the kill interrupted, inputs it had not deleted yet, old manifests.
    pub orphans_removed: u64,
    /// Cycles where an injected fault hit a flush or compaction (`background_errors_total`).
    pub background_faults: u64,
    /// Totals of the model.
    pub totals: Totals,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.totals;
        write!(
            f,
            "seed={} cycles={} kills={} kills_in_flush={} kills_in_compaction={} \
             kills_with_background_work={} orphans_removed={} fault_plans={} faults_fired={} \
             background_faults={} failed_starts={} \
             io_errors={} read_only_errors={} flushes={} compactions={} writes_acked={} \
             writes_refused={} writes_unknown={} unknown_found_applied={} reads_checked={} \
             cas_mismatches={} keys_verified={} acked_writes_verified={} lost={}",
            self.seed,
            self.cycles,
            self.kills,
            self.kills_in_flush,
            self.kills_in_compaction,
            self.kills_with_background_work,
            self.orphans_removed,
            self.fault_plans,
            self.faults_fired,
            self.background_faults,
            self.failed_starts,
            self.io_errors,
            self.read_only_errors,
            self.flushes,
            self.compactions,
            t.writes_acked,
            t.writes_refused,
            t.writes_unknown,
            t.unknown_found_applied,
            t.reads_checked,
            t.cas_mismatches,
            t.keys_verified,
            t.acked_writes_verified,
            t.violations,
        )
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// The seed: `COREKV_CRASH_SEED`, or a fresh one.
pub fn seed() -> u64 {
    env_u64("COREKV_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    })
}

/// Counters of a running server (empty if it cannot be reached).
pub fn stats(server: &Server) -> Vec<ShardStats> {
    block_on(async {
        match Connection::connect(TokioRuntime, server.addr).await {
            Ok(c) => c.stats().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    })
}

/// Reads every key of `model` and scans the whole key space of a running server, then checks
/// what it found against the model (which then holds it as the known state).
pub fn verify(server: &Server, model: &Mutex<Model>, context: &str) {
    if let Err(e) = try_verify(server, model, context) {
        panic!("{e}");
    }
}

/// Like [`verify`], but a failure to reach the server or to read (not a wrong answer) is
/// `Err`: the server may have died meanwhile.
pub fn try_verify(server: &Server, model: &Mutex<Model>, context: &str) -> Result<(), String> {
    let keys = model.lock().unwrap().keys();
    let (found, scanned) = block_on(async {
        let client = Client::connect(TokioRuntime, server.addr)
            .await
            .map_err(|e| format!("{context}: cannot connect to verify: {e}"))?;
        let mut found: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for chunk in keys.chunks(512) {
            let ops = chunk.iter().map(|k| Op::Get { key: k.clone() }).collect();
            let results = client
                .batch(ops)
                .await
                .map_err(|e| format!("{context}: reads failed: {e}"))?;
            for (k, r) in chunk.iter().zip(results) {
                match r {
                    OpResult::Get(v) => {
                        found.insert(k.clone(), v.map(|v| v.value));
                    }
                    other => panic!("{context}: read of {k:?} answered {other:?}"),
                }
            }
        }
        let scanned = client
            .scan_all(&ScanOp::default(), usize::MAX)
            .await
            .map_err(|e| format!("{context}: scan failed: {e}"))?;
        Ok::<_, String>((found, scanned))
    })?;
    model
        .lock()
        .unwrap()
        .check_restart(&found, &scanned, context);
    Ok(())
}

/// A random fault plan for one cycle: one rule, at a random point of a random kind of
/// operation, on any file or aimed at WAL segments, tables (flushes and compactions) or the
/// manifest. Points past the end of the cycle simply never fire.
fn fault_plan(rng: &mut ChaCha8Rng) -> String {
    let any_write = ["eio", "enospc", "short", "torn"];
    let (op, fault, nth, persistent) = match rng.gen_range(0..16) {
        0..=3 => (
            "write",
            any_write[rng.gen_range(0..4)],
            rng.gen_range(0..150),
            rng.gen_bool(0.3),
        ),
        4..=5 => (
            "sync",
            ["eio", "enospc"][rng.gen_range(0..2)],
            rng.gen_range(0..150),
            false,
        ),
        6 => ("create", "enospc", rng.gen_range(0..6), true),
        7 => ("allocate", "enospc", rng.gen_range(0..6), true),
        8 => ("syncdir", "eio", rng.gen_range(0..8), false),
        9 => (
            ["rename", "remove"][rng.gen_range(0..2)],
            "eio",
            rng.gen_range(0..4),
            false,
        ),
        // Flushes and compactions: their table writes, syncs and creations.
        10..=11 => (
            "write/.sst",
            any_write[rng.gen_range(0..4)],
            rng.gen_range(0..40),
            rng.gen_bool(0.3),
        ),
        12 => (
            ["sync/.sst", "create/.sst"][rng.gen_range(0..2)],
            ["eio", "enospc"][rng.gen_range(0..2)],
            rng.gen_range(0..10),
            false,
        ),
        // Manifest edits and the switch to a new manifest.
        13..=14 => (
            ["write/MANIFEST", "sync/MANIFEST"][rng.gen_range(0..2)],
            ["eio", "enospc"][rng.gen_range(0..2)],
            rng.gen_range(0..20),
            rng.gen_bool(0.3),
        ),
        _ => (
            ["write/CURRENT", "rename/CURRENT"][rng.gen_range(0..2)],
            "eio",
            rng.gen_range(0..3),
            false,
        ),
    };
    let fault = if op.starts_with("write/M") && rng.gen_bool(0.3) {
        "torn"
    } else {
        fault
    };
    format!(
        "seed={},{op}={fault}@{nth}{}",
        rng.r#gen::<u32>(),
        if persistent { "+" } else { "" }
    )
}

/// The `i`-th crash-point plan: the points in turn, each at its first or second passage.
fn crash_plan(i: u64, rng: &mut ChaCha8Rng) -> String {
    let point = CRASH_POINTS[(i % CRASH_POINTS.len() as u64) as usize];
    format!("crash={point}@{}", rng.gen_range(0..2))
}

/// Counts a kill the server did itself at a crash point (its log names the point).
fn count_crash_point_kill(report: &mut Report, log: &str, ctx: &str) {
    let point = log
        .lines()
        .rev()
        .find_map(|l| {
            let at = l.find("crash point ")?;
            l[at + "crash point ".len()..].split(' ').next()
        })
        .unwrap_or_else(|| panic!("{ctx}: the server died, but not at a crash point:\n{log}"));
    if point.starts_with("flush") {
        report.kills_in_flush += 1;
    } else {
        assert!(
            point.starts_with("compaction"),
            "{ctx}: crash point {point}"
        );
        report.kills_in_compaction += 1;
    }
}

/// Waits (up to [`PROCESS_DEADLINE`]) for a server that lost its connections to exit.
fn wait_exit(server: &mut Server) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while Instant::now() < deadline {
        if let Some(status) = server.exited() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Files the server's open removed as unreferenced (see `remove_unreferenced_files`).
fn orphans_in(log: &str) -> u64 {
    log.matches("removing a file no live version refers to")
        .count() as u64
}

fn faults_seen(stats: &[ShardStats]) -> u64 {
    [
        "wal_io_errors_total",
        "failed_io_total",
        "background_errors_total",
    ]
    .iter()
    .map(|c| counter_total(stats, c))
    .sum()
}

impl CrashLoop {
    /// Runs the loop in `dir`; panics with every violation found (and the seed).
    pub fn run(&self, dir: &Path, seed: u64) -> Report {
        let cycles = env_u64("COREKV_CRASH_CYCLES").unwrap_or(self.cycles);
        let until =
            env_u64("COREKV_CRASH_MINUTES").map(|m| Instant::now() + Duration::from_secs(60 * m));
        eprintln!(
            "crash loop {}: seed {seed} (replay with COREKV_CRASH_SEED={seed}), {} shards, {}",
            self.name,
            self.shards,
            match until {
                Some(_) => format!(
                    "for {} minutes",
                    env_u64("COREKV_CRASH_MINUTES").unwrap_or(0)
                ),
                None => format!("{cycles} cycles"),
            }
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = dir.join("data");
        let model = Arc::new(Mutex::new(self.shape.model()));
        let mut report = Report {
            seed,
            ..Report::default()
        };
        let base = ServerOptions {
            shards: self.shards,
            durability: self.durability.clone(),
            ..ServerOptions::default()
        }
        .args(
            &self
                .server_args
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        // Every start after the first is on the same address, at once, as a supervisor
        // restarts a crashed server: the killed process's connections still linger then.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_ports(base.shards + 1)));
        let start = |options: ServerOptions| Server::start_at(addr, &data, options);
        let mut cycle = 0u64;
        loop {
            let more = match until {
                Some(t) => Instant::now() < t,
                None => cycle < cycles,
            };
            if !more {
                break;
            }
            let plan = if rng.gen_bool(self.fault_cycle_share) {
                // The first plan fires for sure (an early WAL write fails); the others are
                // drawn from everything.
                Some(if report.fault_plans == 0 {
                    format!("write/wal-0=eio@{}", rng.gen_range(0..20))
                } else {
                    fault_plan(&mut rng)
                })
            } else if self.crash_point_every > 0 && (cycle + 1) % self.crash_point_every == 0 {
                report.crash_plans += 1;
                Some(crash_plan(report.crash_plans - 1, &mut rng))
            } else {
                None
            };
            let mut crash_only = plan.as_ref().is_some_and(|p| p.starts_with("crash="));
            let ctx = format!(
                "{} seed {seed} cycle {cycle}{}",
                self.name,
                plan.as_ref()
                    .map(|p| format!(" (faults {p})"))
                    .unwrap_or_default()
            );
            let mut server = match &plan {
                None => start(base.clone()),
                Some(p) => {
                    if !crash_only {
                        report.fault_plans += 1;
                    }
                    let opts = base.clone().args(&["--debug-fault-injection", p]);
                    match Server::try_start_at(addr, &data, &opts) {
                        Ok(s) => s,
                        Err(log) if crash_only => {
                            // A flush while replaying the WAL reached the crash point.
                            count_crash_point_kill(&mut report, &log, &ctx);
                            report.kills += 1;
                            start(base.clone())
                        }
                        Err(log) => {
                            // The fault fired while the engine opened: a clean failure to start
                            // (say so in the log), then the fault clears.
                            assert!(
                                log.contains("storage") || log.contains("I/O error"),
                                "{ctx}: the server failed to start for another reason:\n{log}"
                            );
                            report.failed_starts += 1;
                            report.faults_fired += 1;
                            start(base.clone())
                        }
                    }
                }
            };
            report.orphans_removed += orphans_in(&server.log());
            if let Err(e) = try_verify(&server, &model, &format!("{ctx}: after restart")) {
                // A crash point may fire as soon as the server is up (a flush of what the
                // restart replayed): that is this cycle's kill; then on without the plan.
                assert!(crash_only, "{e}");
                let status = wait_exit(&mut server)
                    .unwrap_or_else(|| panic!("{e}, and the server is still running"));
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "{e}:\n{}",
                    server.log()
                );
                count_crash_point_kill(&mut report, &server.log(), &ctx);
                report.kills += 1;
                crash_only = false;
                drop(server);
                server = start(base.clone());
                report.orphans_removed += orphans_in(&server.log());
                verify(&server, &model, &format!("{ctx}: after restart"));
            }
            self.fail_on_violations(&model, &report);

            let progress = Arc::new(Progress::default());
            let target = if crash_only {
                CRASH_POINT_OPS_MAX
            } else {
                rng.gen_range(self.ops_before_kill.clone())
            };
            let pause_us = rng.gen_range(0..3000);
            let worker = {
                let (model, progress, addr, shape) = (
                    Arc::clone(&model),
                    Arc::clone(&progress),
                    server.addr,
                    self.shape,
                );
                std::thread::spawn(move || {
                    workload::run(addr, shape, seed, cycle, &model, &progress)
                })
            };
            // The workload must keep moving: no answer at all for this long is a hang.
            let mut deadline = Instant::now() + PROCESS_DEADLINE;
            let mut seen_ops = 0;
            let mut died = None;
            while progress.ops_done.load(Ordering::SeqCst) < target && !worker.is_finished() {
                if crash_only && let Some(status) = server.exited() {
                    died = Some(status);
                    break;
                }
                let ops = progress.ops_done.load(Ordering::SeqCst);
                if ops != seen_ops {
                    seen_ops = ops;
                    deadline = Instant::now() + PROCESS_DEADLINE;
                }
                assert!(
                    Instant::now() < deadline,
                    "{ctx}: the workload made no progress for {PROCESS_DEADLINE:?} ({ops} of \
                     {target} operations):\n{}",
                    server.log()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            if died.is_none() {
                // Land the kill at a random point between operations' send and reply.
                std::thread::sleep(Duration::from_micros(pause_us));
                let st = stats(&server);
                if st.iter().any(|s| s.counter("flushes_total").is_some()) {
                    report.engine_flushes = true;
                }
                report.flushes += counter_total(&st, "flushes_total");
                report.compactions += counter_total(&st, "compactions_total");
                if counter_total(&st, "memtables_immutable") > 0
                    || counter_total(&st, "compaction_pending_bytes") > 0
                {
                    report.kills_with_background_work += 1;
                }
                if plan.is_some() && faults_seen(&st) > 0 {
                    report.faults_fired += 1;
                }
                if counter_total(&st, "background_errors_total") > 0 {
                    report.background_faults += 1;
                }
                // The crash point may have fired meanwhile.
                died = if crash_only { server.exited() } else { None };
                if died.is_none() {
                    server.kill9();
                    // The point may have fired just before our kill (the process was dying,
                    // not yet reapable): its log line says so.
                    if crash_only && server.log().contains("crash point ") {
                        count_crash_point_kill(&mut report, &server.log(), &ctx);
                    }
                }
            }
            if let Some(status) = died {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "{ctx}: the server exited by itself ({status}):\n{}",
                    server.log()
                );
                count_crash_point_kill(&mut report, &server.log(), &ctx);
            }
            report.kills += 1;
            progress.stop.store(true, Ordering::SeqCst);
            let outcome = worker.join().expect("the workload thread panicked");
            report.io_errors += progress.io_errors.load(Ordering::SeqCst);
            report.read_only_errors += progress.read_only_errors.load(Ordering::SeqCst);
            if (plan.is_none() || crash_only) && progress.io_errors.load(Ordering::SeqCst) > 0 {
                panic!(
                    "{ctx}: clients got I/O errors without injected faults:\n{}",
                    server.log()
                );
            }
            if let Err(e) = outcome {
                panic!("{ctx}: {}\n{}", e.0, server.log());
            }
            drop(server);
            cycle += 1;
            report.cycles = cycle;
        }
        // A last restart checks the last kill; then a clean stop must lose nothing either.
        let mut server = start(base.clone());
        report.orphans_removed += orphans_in(&server.log());
        verify(
            &server,
            &model,
            &format!("{} seed {seed}: final restart", self.name),
        );
        let status = server.terminate();
        assert_eq!(status.code(), Some(0), "clean stop:\n{}", server.log());
        let server = server.restart();
        verify(
            &server,
            &model,
            &format!("{} seed {seed}: after a clean stop", self.name),
        );
        drop(server);
        self.fail_on_violations(&model, &report);
        report.totals = model.lock().unwrap().totals();
        eprintln!("crash loop {} summary: {report}", self.name);
        report
    }

    fn fail_on_violations(&self, model: &Mutex<Model>, report: &Report) {
        let m = model.lock().unwrap();
        let v = m.violations();
        if !v.is_empty() {
            panic!(
                "crash loop {}: {} violations (seed {}; replay with COREKV_CRASH_SEED={}):\n{}",
                self.name,
                v.len(),
                report.seed,
                report.seed,
                v.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
