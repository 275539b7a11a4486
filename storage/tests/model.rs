//! Model test: random puts, TTL puts, deletes, batches, compare-and-sets, gets, scans and
//! snapshots against a `BTreeMap` oracle, with random clean reopens and random simulated
//! crashes in the middle of concurrent group commits.
//!
//! In `sync` mode a crash is a power loss: unsynced writes may land torn, whole, or not at
//! all, sector by sector. In `periodic` mode it is a process crash (`kill -9`): completed
//! writes stay. Either way every acknowledged write must survive, and the unacknowledged ones
//! of the crashed burst may survive only as a prefix in sequence order.
//!
//! The LSM tree is configured tiny (memtables of a few KiB, 256-byte blocks, level targets of
//! a few KiB), so every run flushes and compacts many times and crashes land in the middle of
//! flushes, compactions and manifest edits as well as WAL writes. Every other crash is aimed:
//! it happens at a named step of a flush or a compaction ([`CrashPoint`]: half a table
//! written, table durable but not in the manifest, manifest edit durable but the WAL or the
//! input tables not yet released), taking each point in turn; every run must crash inside
//! flushes and inside compactions.
//!
//! Every run prints its seed. Replay one with `COREKV_MODEL_SEED=<seed>`; run longer with
//! `COREKV_LONG_TESTS=1`.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{run, test_dir};
use corekv_storage::io::{CrashPoint, FaultInjector};
use corekv_storage::{
    CasOutcome, Clock, Durability, Engine, Error, OpenHooks, Options, ScanRange, Snapshot,
    WriteBatch,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// key -> (value, expiry in unix ms, 0 = never)
type Oracle = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    PutTtl(Vec<u8>, Vec<u8>, u64),
    Delete(Vec<u8>),
}

/// Applies `ops` (one atomic write at wall time `now`) to the oracle.
fn apply(o: &mut Oracle, ops: &[Op], now: u64) {
    for op in ops {
        match op {
            Op::Put(k, v) => {
                o.insert(k.clone(), (v.clone(), 0));
            }
            Op::PutTtl(k, v, ttl) => {
                o.insert(k.clone(), (v.clone(), now + ttl));
            }
            Op::Delete(k) => {
                o.remove(k);
            }
        }
    }
}

fn live(o: &Oracle, k: &[u8], now: u64) -> Option<Vec<u8>> {
    o.get(k)
        .filter(|(_, exp)| *exp == 0 || now < *exp)
        .map(|(v, _)| v.clone())
}

fn live_all(o: &Oracle, now: u64) -> Entries {
    o.iter()
        .filter(|(_, (_, exp))| *exp == 0 || now < *exp)
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn oracle_scan(o: &Oracle, r: &ScanRange, now: u64) -> (Entries, bool) {
    let mut all: Vec<_> = live_all(o, now)
        .into_iter()
        .filter(|(k, _)| k >= &r.start && r.end.as_ref().is_none_or(|e| k < e))
        .collect();
    if r.reverse {
        all.reverse();
    }
    let more = all.len() > r.limit;
    all.truncate(r.limit);
    (all, more)
}

async fn write_ops(e: &Engine, ops: &[Op]) -> corekv_storage::Result<u64> {
    if ops.len() == 1 {
        return match &ops[0] {
            Op::Put(k, v) => e.put(k, v).await,
            Op::PutTtl(k, v, t) => e.put_with_ttl(k, v, Duration::from_millis(*t)).await,
            Op::Delete(k) => e.delete(k).await,
        };
    }
    let mut b = WriteBatch::new();
    for op in ops {
        match op {
            Op::Put(k, v) => b.put(k, v),
            Op::PutTtl(k, v, t) => b.put_with_ttl(k, v, Duration::from_millis(*t)),
            Op::Delete(k) => b.delete(k),
        };
    }
    e.write(b).await
}

struct Model {
    rng: ChaCha8Rng,
    seed: u64,
    clock: Clock,
    durability: Durability,
    oracle: Oracle,
    snapshots: Vec<(Snapshot, Oracle)>,
    crashes: u32,
    reopens: u32,
    /// Memtable bound for this run (tiny: a flush every few dozen writes).
    memtable_bytes: usize,
    flushes: u64,
    compactions: u64,
    /// Aimed crashes that happened at their point, per point.
    point_crashes: BTreeMap<String, u32>,
}

impl Model {
    fn key(&mut self) -> Vec<u8> {
        format!("k{:03}", self.rng.gen_range(0..160)).into_bytes()
    }

    fn value(&mut self) -> Vec<u8> {
        let len = self.rng.gen_range(0..200);
        let b = self.rng.r#gen::<u8>();
        (0..len).map(|i| b.wrapping_add(i as u8)).collect()
    }

    fn random_op(&mut self) -> Op {
        let k = self.key();
        match self.rng.gen_range(0..10) {
            0..=5 => Op::Put(k, self.value()),
            6..=7 => Op::Delete(k),
            _ => {
                let ttl = self.rng.gen_range(1..60);
                Op::PutTtl(k, self.value(), ttl)
            }
        }
    }

    fn random_write(&mut self) -> Vec<Op> {
        let n = if self.rng.gen_bool(0.25) {
            self.rng.gen_range(2..8)
        } else {
            1
        };
        (0..n).map(|_| self.random_op()).collect()
    }

    fn options(&self) -> Options {
        Options {
            durability: self.durability,
            wal_segment_size_bytes: 64 << 10,
            wal_write_bytes_max: 8 << 10,
            memtable_size_bytes_max: self.memtable_bytes,
            memtables_immutable_max: 1,
            block_size_bytes: 256,
            block_cache_size_bytes: 64 << 10,
            target_file_size_bytes: 4096,
            level1_size_bytes_max: 16 << 10,
            level_size_ratio: 2,
            levels_max: 4,
            l0_compaction_trigger_files: 2,
            l0_stop_writes_files: 6,
            ..Options::default()
        }
    }

    fn faults(&self, n: u64) -> FaultInjector {
        let f = FaultInjector::new(self.seed ^ (n << 32));
        f.track_unsynced_writes();
        f
    }

    async fn open(&self, dir: &Path, faults: FaultInjector) -> Engine {
        let hooks = OpenHooks {
            clock: Some(self.clock.clone()),
            faults: Some(faults),
        };
        for _ in 0..1000 {
            match Engine::open_with_hooks(dir, self.options(), hooks.clone()).await {
                Err(Error::Locked { .. }) => {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                other => return other.unwrap_or_else(|e| panic!("seed {}: open: {e}", self.seed)),
            }
        }
        panic!("seed {}: the old engine never released its lock", self.seed);
    }

    fn count_background(&mut self, e: &Engine) {
        let s = e.stats();
        self.flushes += s.flushes_total;
        self.compactions += s.compactions_total + s.compaction_trivial_moves_total;
    }

    /// After a simulated crash (`faults.crash_now()` done): power loss in `sync` mode, reopen,
    /// and check that the state is the oracle with `writes[..acked]` applied plus maybe a
    /// prefix of the rest, in order; the oracle becomes that state.
    async fn after_crash(
        &mut self,
        e: Engine,
        faults: &mut FaultInjector,
        path: &Path,
        writes: &[Vec<Op>],
        acked: usize,
        step: usize,
    ) -> Engine {
        let seed = self.seed;
        let now = self.clock.now_ms();
        self.count_background(&e);
        self.snapshots.clear();
        drop(e);
        // Operations the crashed engine had started must not land after the power loss or
        // on the reopened engine's files.
        faults.settle().await;
        if self.durability == Durability::Sync {
            faults.power_loss().unwrap();
        }
        self.crashes += 1;
        *faults = self.faults(u64::from(self.reopens + self.crashes));
        let e = self.open(path, faults.clone()).await;
        // The survivors are the acknowledged writes plus maybe more, in order.
        let got = e.scan(&full_range(), None).await.unwrap().entries;
        let mut state = self.oracle.clone();
        for ops in &writes[..acked] {
            apply(&mut state, ops, now);
        }
        let mut matched = None;
        for p in acked..=writes.len() {
            if p > acked {
                apply(&mut state, &writes[p - 1], now);
            }
            if got == live_all(&state, now) {
                matched = Some(state.clone());
                break;
            }
        }
        self.oracle = matched.unwrap_or_else(|| {
            panic!(
                "seed {seed} step {step}: after a crash with {acked} of {} writes \
                 acknowledged, the state is no prefix of the writes",
                writes.len()
            )
        });
        e
    }

    async fn check_everything(&self, e: &Engine, what: &str) {
        let now = self.clock.now_ms();
        let page = e.scan(&full_range(), None).await.unwrap();
        assert!(!page.more);
        assert_eq!(
            page.entries,
            live_all(&self.oracle, now),
            "seed {}: state differs from the oracle {what}",
            self.seed
        );
    }
}

fn full_range() -> ScanRange {
    ScanRange {
        start: Vec::new(),
        end: None,
        limit: 100_000,
        reverse: false,
    }
}

fn run_model(seed: u64, steps: usize) {
    println!("model seed = {seed} (replay: COREKV_MODEL_SEED={seed})");
    let dir = test_dir("model");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let durability = if rng.gen_bool(0.7) {
            Durability::Sync
        } else {
            Durability::Periodic { interval_ms: 5 }
        };
        let mut m = Model {
            rng,
            seed,
            clock: Clock::manual(1_700_000_000_000),
            durability,
            oracle: Oracle::new(),
            snapshots: Vec::new(),
            crashes: 0,
            reopens: 0,
            memtable_bytes: 4096 << (seed % 2),
            flushes: 0,
            compactions: 0,
            point_crashes: BTreeMap::new(),
        };
        let mut faults = m.faults(0);
        let mut e = m.open(&path, faults.clone()).await;
        for step in 0..steps {
            let now = m.clock.now_ms();
            let dice = m.rng.gen_range(0..100);

            match dice {
                // A write.
                0..=39 => {
                    let ops = m.random_write();
                    write_ops(&e, &ops).await.unwrap();
                    apply(&mut m.oracle, &ops, now);
                }
                // Compare-and-set.
                40..=47 => {
                    let k = m.key();
                    let current = live(&m.oracle, &k, now);
                    let expected = if m.rng.gen_bool(0.6) {
                        current.clone()
                    } else {
                        Some(m.value())
                    };
                    let new = m.rng.gen_bool(0.8).then(|| m.value());
                    let ttl =
                        (new.is_some() && m.rng.gen_bool(0.2)).then(|| m.rng.gen_range(1..60));
                    let got = e
                        .compare_and_set(
                            &k,
                            expected.as_deref(),
                            new.as_deref(),
                            ttl.map(Duration::from_millis),
                        )
                        .await
                        .unwrap();
                    if expected == current {
                        assert!(
                            matches!(got, CasOutcome::Applied(_)),
                            "seed {seed} step {step}"
                        );
                        let op = match (new, ttl) {
                            (Some(v), Some(t)) => Op::PutTtl(k, v, t),
                            (Some(v), None) => Op::Put(k, v),
                            (None, _) => Op::Delete(k),
                        };
                        apply(&mut m.oracle, &[op], now);
                    } else {
                        let CasOutcome::Mismatch {
                            current: found,
                            current_seq,
                        } = got
                        else {
                            panic!("seed {seed} step {step}: {got:?}");
                        };
                        assert_eq!(found, current, "seed {seed} step {step}");
                        assert_eq!(current_seq > 0, found.is_some(), "seed {seed} step {step}");
                    }
                }
                // Reads.
                48..=59 => {
                    let k = m.key();
                    assert_eq!(
                        e.get(&k).await.unwrap(),
                        live(&m.oracle, &k, now),
                        "seed {seed} step {step}: get {k:?}"
                    );
                }
                60..=67 => {
                    let (a, b) = (m.key(), m.key());
                    let r = ScanRange {
                        start: if m.rng.gen_bool(0.2) {
                            Vec::new()
                        } else {
                            a.min(b.clone())
                        },
                        end: if m.rng.gen_bool(0.2) {
                            None
                        } else {
                            Some(b.max(m.key()))
                        },
                        limit: m.rng.gen_range(1..12),
                        reverse: m.rng.gen_bool(0.5),
                    };
                    let page = e.scan(&r, None).await.unwrap();
                    let (want, more) = oracle_scan(&m.oracle, &r, now);
                    assert_eq!(page.entries, want, "seed {seed} step {step}: scan {r:?}");
                    assert_eq!(page.more, more, "seed {seed} step {step}: scan {r:?}");
                }
                // Snapshots: take, read, drop.
                68..=71 => {
                    if m.snapshots.len() < 4 {
                        m.snapshots.push((e.snapshot(), m.oracle.clone()));
                    }
                }
                72..=76 => {
                    if !m.snapshots.is_empty() {
                        let i = m.rng.gen_range(0..m.snapshots.len());
                        let k = m.key();
                        let (snap, old) = &m.snapshots[i];
                        assert_eq!(
                            e.get_at(&k, snap).await.unwrap(),
                            live(old, &k, now),
                            "seed {seed} step {step}: get_at {k:?}"
                        );
                        let page = e.scan(&full_range(), Some(snap)).await.unwrap();
                        assert_eq!(
                            page.entries,
                            live_all(old, now),
                            "seed {seed} step {step}: scan at snapshot"
                        );
                    }
                }
                77..=79 => {
                    if !m.snapshots.is_empty() {
                        let i = m.rng.gen_range(0..m.snapshots.len());
                        m.snapshots.swap_remove(i);
                    }
                }
                // Time passes (TTLs expire).
                80..=85 => m.clock.advance_ms(m.rng.gen_range(0..25)),
                // Concurrent writers, all acknowledged: group commit keeps their order.
                86..=91 => {
                    let writes: Vec<Vec<Op>> = (0..m.rng.gen_range(2..12))
                        .map(|_| m.random_write())
                        .collect();
                    let tasks: Vec<_> = writes
                        .iter()
                        .cloned()
                        .map(|ops| {
                            let e = e.clone();
                            glommio::spawn_local(async move { write_ops(&e, &ops).await })
                        })
                        .collect();
                    let mut seqs = Vec::new();
                    for t in tasks {
                        seqs.push(t.await.unwrap());
                    }
                    // Sequenced in spawn order.
                    assert!(
                        seqs.windows(2).all(|w| w[0] < w[1]),
                        "seed {seed}: {seqs:?}"
                    );
                    for ops in &writes {
                        apply(&mut m.oracle, ops, now);
                    }
                }
                // Clean reopen.
                92..=94 => {
                    m.count_background(&e);
                    m.snapshots.clear();
                    e.close().await.unwrap();
                    m.reopens += 1;
                    faults = m.faults(u64::from(m.reopens + m.crashes));
                    e = m.open(&path, faults.clone()).await;
                    m.check_everything(&e, &format!("after a clean reopen at step {step}"))
                        .await;
                }
                // Crash at a named step of a flush or a compaction, while writing one write
                // at a time: at most the write in flight is unacknowledged.
                _ if m.crashes % 2 == 1 => {
                    let point = CrashPoint::ALL[(m.crashes as usize / 2) % CrashPoint::ALL.len()];
                    faults.crash_at_point(point, m.rng.gen_range(0..2));
                    let mut pending = Vec::new();
                    for _ in 0..1500 {
                        let ops = m.random_write();
                        let now = m.clock.now_ms();
                        if write_ops(&e, &ops).await.is_ok() {
                            apply(&mut m.oracle, &ops, now);
                        } else {
                            pending.push(ops);
                            break;
                        }
                        if faults.crashed() {
                            break;
                        }
                    }
                    if let Some(p) = faults.crashed_at_point() {
                        *m.point_crashes.entry(format!("{p:?}")).or_default() += 1;
                    }
                    faults.crash_now();
                    e = m
                        .after_crash(e, &mut faults, &path, &pending, 0, step)
                        .await;
                }
                // Crash in the middle of a burst of concurrent writes.
                _ => {
                    let writes: Vec<Vec<Op>> = (0..m.rng.gen_range(1..10))
                        .map(|_| m.random_write())
                        .collect();
                    faults.crash_at(m.rng.gen_range(0..6));
                    let tasks: Vec<_> = writes
                        .iter()
                        .cloned()
                        .map(|ops| {
                            let e = e.clone();
                            glommio::spawn_local(async move { write_ops(&e, &ops).await.is_ok() })
                        })
                        .collect();
                    let mut acked = 0;
                    for (i, t) in tasks.into_iter().enumerate() {
                        if t.await {
                            assert_eq!(acked, i, "seed {seed}: acknowledgements out of order");
                            acked += 1;
                        }
                    }
                    faults.crash_now();
                    e = m
                        .after_crash(e, &mut faults, &path, &writes, acked, step)
                        .await;
                }
            }
        }
        m.check_everything(&e, "at the end").await;
        m.count_background(&e);
        e.close().await.unwrap();
        println!(
            "model seed {seed}: {steps} steps, {} clean reopens, {} crashes, {} flushes, \
             {} compactions, durability {}",
            m.reopens, m.crashes, m.flushes, m.compactions, m.durability
        );
        assert!(m.crashes + m.reopens > 0 || steps < 50);
        assert!(
            m.flushes > 5 && m.compactions > 0,
            "seed {seed}: the tiny LSM settings should flush and compact many times"
        );
        println!("model seed {seed}: aimed crashes {:?}", m.point_crashes);
        if m.crashes >= 2 * CrashPoint::ALL.len() as u32 {
            let hit = |flush: bool| {
                CrashPoint::ALL
                    .iter()
                    .filter(|p| p.is_flush() == flush)
                    .any(|p| m.point_crashes.contains_key(&format!("{p:?}")))
            };
            assert!(
                hit(true) && hit(false),
                "seed {seed}: no crash inside a flush or inside a compaction: {:?}",
                m.point_crashes
            );
        }
    });
}

#[test]
fn engine_matches_a_btreemap_through_reopens_and_crashes() {
    let long = common::long_tests();
    let steps = if long { 20_000 } else { 500 };
    match std::env::var("COREKV_MODEL_SEED") {
        Ok(s) => run_model(s.parse().expect("COREKV_MODEL_SEED is a u64"), steps),
        Err(_) => {
            let base: u64 = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            for i in 0..if long { 10 } else { 3 } {
                run_model(base.wrapping_add(i), steps);
            }
        }
    }
}
