//! An engine applying an external log (`Engine::open_applying`, the Raft log of a replicated
//! shard): after a crash at any point — power loss included, and crashes aimed inside
//! flushes — replaying the entries after `flushed_log_index` rebuilds exactly the state and
//! the sequence numbers an engine that never crashed has. That is what lets every replica of
//! a shard answer alike, and what makes increments (not idempotent) safe to replay.
//!
//! Every run prints its seed; replay one with `COREKV_MODEL_SEED=<seed>`.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use common::{run, test_dir};
use corekv_storage::batch::FRAME_HEAD_BYTES;
use corekv_storage::io::{CrashPoint, FaultInjector};
use corekv_storage::{
    Change, Clock, Durability, EncodedBatch, Engine, Error, OpenHooks, Options, ScanRange,
    WriteBatch,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    PutTtl(Vec<u8>, Vec<u8>, u64),
    Delete(Vec<u8>),
    /// Adds to an ASCII decimal counter (absent = 0): a read-modify-write.
    Increment(Vec<u8>, i64),
    /// Sets a counter that expires: whether a later increment finds it depends on the time
    /// the increment is judged at, in a memtable or in a table.
    CounterWithTtl(Vec<u8>, i64, u64),
    /// Puts (some with TTLs) and deletes in one atomic batch.
    Batch(Vec<Op>),
}

#[derive(Debug, Clone)]
struct Entry {
    index: u64,
    time_ms: u64,
    ops: Vec<Op>,
}

fn options() -> Options {
    Options {
        durability: Durability::Sync,
        memtable_size_bytes_max: 8 << 10,
        target_file_size_bytes: 8 << 10,
        level1_size_bytes_max: 32 << 10,
        block_size_bytes: 512,
        ..Options::default()
    }
}

fn random_log(rng: &mut ChaCha8Rng, entries: usize) -> Vec<Entry> {
    let key = |rng: &mut ChaCha8Rng| format!("k{:03}", rng.gen_range(0..120)).into_bytes();
    let value = |rng: &mut ChaCha8Rng| {
        let n = rng.gen_range(1..300);
        (0..n).map(|_| rng.r#gen::<u8>()).collect::<Vec<u8>>()
    };
    let mut index = 0;
    let mut time_ms = 1_000_000;
    (0..entries)
        .map(|_| {
            // Raft indexes are dense, but entries that write nothing (leader no-ops,
            // configuration entries) are skipped by the applier.
            index += rng.gen_range(1..3);
            time_ms += rng.gen_range(0..50);
            // Some entries are larger than a memtable: their writes must still all land in
            // one memtable.
            let n = if rng.gen_bool(0.05) {
                60
            } else {
                rng.gen_range(1..5)
            };
            let ops = (0..n)
                .map(|_| match rng.gen_range(0..10) {
                    0..=3 => Op::Put(key(rng), value(rng)),
                    4 => Op::PutTtl(key(rng), value(rng), rng.gen_range(1..200)),
                    5 => Op::Delete(key(rng)),
                    6 if rng.gen_bool(0.3) => Op::CounterWithTtl(
                        format!("t{}", rng.gen_range(0..3)).into_bytes(),
                        rng.gen_range(0..100),
                        // Some outlive many entries (the log spans ~15 s), some do not.
                        rng.gen_range(1..30_000),
                    ),
                    // Counters with TTLs are incremented rarely: by then their values have
                    // often been flushed and compacted.
                    6 if rng.gen_bool(0.2) => {
                        Op::Increment(format!("t{}", rng.gen_range(0..3)).into_bytes(), 1)
                    }
                    6..=8 => Op::Increment(
                        format!("c{:02}", rng.gen_range(0..20)).into_bytes(),
                        rng.gen_range(-5..10),
                    ),
                    _ => Op::Batch(
                        (0..3)
                            .map(|_| match rng.gen_range(0..4) {
                                0 | 1 => Op::Put(key(rng), value(rng)),
                                2 => Op::PutTtl(key(rng), value(rng), rng.gen_range(1..200)),
                                _ => Op::Delete(key(rng)),
                            })
                            .collect(),
                    ),
                })
                .collect();
            Entry {
                index,
                time_ms,
                ops,
            }
        })
        .collect()
}

/// Applies one entry; returns the sequence number of each write, in order.
async fn apply(e: &Engine, entry: &Entry) -> corekv_storage::Result<Vec<u64>> {
    apply_with(e, entry, false).await
}

/// [`apply`], with batches written as a `WriteBatch` (`Engine::write`) or, `encoded`, as a
/// replicated shard writes them: from the entry's bytes (`Engine::write_encoded`).
async fn apply_with(e: &Engine, entry: &Entry, encoded: bool) -> corekv_storage::Result<Vec<u64>> {
    e.begin_entry(entry.index, entry.time_ms)?;
    let mut seqs = Vec::new();
    for op in &entry.ops {
        let seq = match op {
            Op::Put(k, v) => e.put(k, v).await?,
            Op::PutTtl(k, v, ttl) => e.put_with_ttl(k, v, Duration::from_millis(*ttl)).await?,
            Op::Delete(k) => e.delete(k).await?,
            Op::CounterWithTtl(k, n, ttl) => {
                e.put_with_ttl(k, n.to_string().as_bytes(), Duration::from_millis(*ttl))
                    .await?
            }
            Op::Increment(k, delta) => {
                let (_, seq) = e
                    .read_modify_write(k, |current| {
                        let n: i64 = current
                            .map(|(v, _)| std::str::from_utf8(v).unwrap().parse().unwrap())
                            .unwrap_or(0);
                        let value = Cow::Owned((n + delta).to_string().into_bytes());
                        (Change::Put { value, ttl: None }, ())
                    })
                    .await?;
                seq.unwrap()
            }
            Op::Batch(ops) => {
                let mut b = WriteBatch::new();
                for op in ops {
                    match op {
                        Op::Put(k, v) => b.put(k, v),
                        Op::PutTtl(k, v, ttl) => b.put_with_ttl(k, v, Duration::from_millis(*ttl)),
                        Op::Delete(k) => b.delete(k),
                        other => unreachable!("not generated in a batch: {other:?}"),
                    };
                }
                if encoded {
                    let framed = b.into_framed([0; FRAME_HEAD_BYTES])?;
                    e.write_encoded(EncodedBatch::parse(&framed[FRAME_HEAD_BYTES..])?)
                        .await?
                } else {
                    e.write(b).await?
                }
            }
        };
        seqs.push(seq);
    }
    e.end_entry()?;
    Ok(seqs)
}

fn hooks(clock: &Clock, faults: Option<FaultInjector>) -> OpenHooks {
    OpenHooks {
        clock: Some(clock.clone()),
        faults,
    }
}

async fn open(dir: &Path, clock: &Clock, faults: Option<FaultInjector>) -> Engine {
    for _ in 0..1000 {
        match Engine::open_applying(dir, options(), hooks(clock, faults.clone())).await {
            // The crashed engine's tasks are still letting go of its files.
            Err(Error::Locked { .. }) => glommio::timer::sleep(Duration::from_millis(1)).await,
            other => return other.unwrap(),
        }
    }
    panic!("the old engine never released its lock");
}

/// Everything live, with the sequence number that wrote it.
async fn contents(e: &Engine) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let range = ScanRange {
        start: Vec::new(),
        end: None,
        limit: 100_000,
        reverse: false,
    };
    let mut out = Vec::new();
    for (k, v) in e.scan(&range, None).await.unwrap().entries {
        let (_, seq) = e.get_versioned(&k).await.unwrap().unwrap();
        out.push((k, v, seq));
    }
    out
}

#[test]
fn replay_after_crashes_rebuilds_the_same_state_and_sequence_numbers() {
    let seed: u64 = std::env::var("COREKV_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("external_log seed {seed} (COREKV_MODEL_SEED={seed} replays it)");
    run(move || async move {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let log = random_log(&mut rng, 1500);
        // The replicas' clock is far past every entry's time: a TTL judged by it instead of
        // by the entry's time (in a table lookup, or by a compaction) would find values
        // expired that the entry still sees, and only where they were flushed.
        let clock = Clock::manual(1 << 40);

        // The reference: every entry applied once, no crash.
        let reference_dir = test_dir("external-log-reference");
        let reference = open(reference_dir.path(), &clock, None).await;
        let mut reference_seqs = Vec::new();
        for entry in &log {
            reference_seqs.push(apply(&reference, entry).await.unwrap());
        }
        assert!(reference.stats().flushes_total > 5, "the test must flush");

        // The replica: crashes (half aimed at flush and compaction steps, the other half at
        // the n-th file operation, then power loss), replay from `flushed_log_index`.
        let dir = test_dir("external-log-replica");
        let mut crashes = 0u64;
        let mut faults = FaultInjector::new(seed);
        faults.track_unsynced_writes();
        let mut e = open(dir.path(), &clock, Some(faults.clone())).await;
        let mut next = 0usize;
        // After the last entry, one more crash and replay, with no crash armed after it (a
        // background compaction could otherwise crash the final reads).
        let mut final_pass = false;
        loop {
            if next == log.len() && final_pass {
                break;
            }
            if next < log.len() {
                if !final_pass && (rng.gen_bool(0.02) || (crashes < 8 && rng.gen_bool(0.01))) {
                    if crashes % 2 == 0 {
                        faults.crash_at(rng.gen_range(0..40));
                    } else {
                        let point = CrashPoint::ALL[(crashes as usize / 2) % CrashPoint::ALL.len()];
                        faults.crash_at_point(point, 0);
                    }
                }
                // Batches as a replica writes them, against the reference's `write`.
                let r = apply_with(&e, &log[next], true).await;
                if let Ok(seqs) = r
                    && !faults.crashed()
                {
                    assert_eq!(
                        seqs, reference_seqs[next],
                        "seed {seed}: entry {} numbered differently",
                        log[next].index
                    );
                    next += 1;
                    continue;
                }
            } else {
                final_pass = true;
            }
            // Crashed (an error from the crashed files, or the crash happened in the
            // background), or the final pass: power loss, reopen, replay after what the
            // tables hold.
            let applied_before = next.checked_sub(1).map_or(0, |i| log[i].index);
            faults.crash_now();
            drop(e);
            faults.settle().await;
            faults.power_loss().unwrap();
            crashes += 1;
            faults = FaultInjector::new(seed ^ (crashes << 32));
            faults.track_unsynced_writes();
            e = open(dir.path(), &clock, Some(faults.clone())).await;
            let flushed = e.flushed_log_index();
            assert_eq!(e.applied_log_index(), flushed);
            assert!(
                flushed <= applied_before,
                "seed {seed}: the tables claim entry {flushed}, only {applied_before} was applied"
            );
            next = log.partition_point(|entry| entry.index <= flushed);
        }
        assert!(crashes >= 3, "seed {seed}: only {crashes} crashes");
        assert_eq!(
            contents(&e).await,
            contents(&reference).await,
            "seed {seed}: the replica's state differs from the reference"
        );
        e.close().await.unwrap();
        reference.close().await.unwrap();
    });
}

#[test]
fn ttl_is_judged_by_the_entry_time_not_the_replica_clock() {
    run(|| async {
        let dir = test_dir("external-log-ttl");
        let clock = Clock::manual(5_000_000);
        let e = open(dir.path(), &clock, None).await;
        // Written at entry time 1,000,000 with a 10 s TTL: expired at 1,010,000, long before
        // the replica's clock (5,000,000). Judged by the clock it would live until 5,010,000.
        e.begin_entry(1, 1_000_000).unwrap();
        e.put_with_ttl(b"t", b"v", Duration::from_secs(10))
            .await
            .unwrap();
        e.put(b"p", b"v").await.unwrap();
        e.end_entry().unwrap();
        assert_eq!(e.get(b"t").await.unwrap(), None);
        assert_eq!(e.get(b"p").await.unwrap(), Some(b"v".to_vec()));
        e.close().await.unwrap();
    });
}

#[test]
fn writes_outside_an_entry_and_out_of_order_entries_are_refused() {
    run(|| async {
        let dir = test_dir("external-log-misuse");
        let clock = Clock::manual(1_000_000);
        let e = open(dir.path(), &clock, None).await;
        assert!(matches!(
            e.put(b"k", b"v").await,
            Err(Error::InvalidArgument(_))
        ));
        e.begin_entry(5, 1).unwrap();
        assert!(e.begin_entry(6, 1).is_err(), "entry 5 is still open");
        e.put(b"k", b"v").await.unwrap();
        e.end_entry().unwrap();
        assert!(e.end_entry().is_err());
        assert!(e.begin_entry(5, 1).is_err(), "entry 5 was applied");
        assert_eq!(e.applied_log_index(), 5);
        assert_eq!(e.flushed_log_index(), 0);
        e.flush().await.unwrap();
        assert_eq!(e.flushed_log_index(), 5);
        e.close().await.unwrap();
        let e = open(dir.path(), &clock, None).await;
        assert_eq!(e.flushed_log_index(), 5);
        assert_eq!(e.get(b"k").await.unwrap(), Some(b"v".to_vec()));
        e.close().await.unwrap();
    });
}

#[test]
fn an_engine_is_opened_with_the_log_it_was_created_with() {
    run(|| async {
        let clock = Clock::manual(1_000_000);
        // An engine with its own WAL holds writes only that WAL has.
        let own = test_dir("external-log-own-wal");
        let e = Engine::open(own.path(), options()).await.unwrap();
        e.put(b"k", b"v").await.unwrap();
        e.close().await.unwrap();
        let err = Engine::open_applying(own.path(), options(), hooks(&clock, None))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("its own WAL"), "{err}");

        // An engine applying a log holds entries only that log has.
        let applying = test_dir("external-log-applying");
        let e = open(applying.path(), &clock, None).await;
        e.begin_entry(1, 1).unwrap();
        e.put(b"k", b"v").await.unwrap();
        e.end_entry().unwrap();
        e.flush().await.unwrap();
        e.close().await.unwrap();
        let err = Engine::open(applying.path(), options()).await.unwrap_err();
        assert!(err.to_string().contains("external"), "{err}");
    });
}

/// Copies the files of checkpoint directory `from` into a new directory `to` (a replica
/// receives a copy, never the leader's links).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_checkpoint_replaces_a_lagging_replicas_state_and_the_entries_after_it_apply_alike() {
    let seed: u64 = std::env::var("COREKV_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("checkpoint seed {seed} (COREKV_MODEL_SEED={seed} replays it)");
    run(move || async move {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let log = random_log(&mut rng, 900);
        let clock = Clock::manual(1 << 40);
        let scratch = test_dir("checkpoint");

        // The leader applies 600 entries and checkpoints what its tables hold, then goes on
        // (compacting and deleting the tables it linked).
        let leader_dir = test_dir("checkpoint-leader");
        let leader = open(leader_dir.path(), &clock, None).await;
        for entry in &log[..600] {
            apply(&leader, entry).await.unwrap();
        }
        let checkpoint = scratch.path().join("out");
        let info = leader.checkpoint(&checkpoint).await.unwrap();
        let at = info.applied_index;
        // A flush may land while the descriptor is written: the tables then hold more, but
        // the checkpoint holds exactly what they held when it read them.
        assert!(at <= leader.flushed_log_index());
        assert!(
            at > 0 && at < log[599].index,
            "seed {seed}: checkpoint at {at}"
        );
        assert_eq!(info.files.last().unwrap().0, "CHECKPOINT");
        for entry in &log[600..] {
            apply(&leader, entry).await.unwrap();
        }
        leader.flush().await.unwrap();
        leader.wait_for_background().await.unwrap();

        // The replica applied a few entries of its own (a divergent state: every key of it
        // must go), flushed some, and holds more in its memtable.
        let replica_dir = test_dir("checkpoint-replica");
        let replica = open(replica_dir.path(), &clock, None).await;
        for i in 1..=40u64 {
            replica.begin_entry(i, 1_000_000 + i).unwrap();
            for j in 0..20 {
                let key = format!("junk{i:03}-{j}");
                replica.put(key.as_bytes(), &[7u8; 300]).await.unwrap();
            }
            replica.put(b"k000", b"replica's own").await.unwrap();
            replica.end_entry().unwrap();
        }
        assert!(
            replica.flushed_log_index() > 0,
            "the replica must have tables"
        );
        let before = contents(&replica).await;

        // A damaged copy is refused and changes nothing.
        let damaged = scratch.path().join("damaged");
        copy_dir(&checkpoint, &damaged);
        let descriptor = damaged.join("CHECKPOINT");
        let mut bytes = std::fs::read(&descriptor).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&descriptor, bytes).unwrap();
        assert!(matches!(
            replica.install_checkpoint(&damaged).await,
            Err(Error::Corruption { .. })
        ));
        assert_eq!(contents(&replica).await, before);

        // A good copy replaces everything once renumbered (its table numbers are the
        // leader's, which this engine may use too); the entries after it then apply as on
        // the leader.
        let copy = scratch.path().join("in");
        copy_dir(&checkpoint, &copy);
        corekv_storage::engine::renumber_checkpoint(&copy, replica.next_file_number())
            .await
            .unwrap();
        assert_eq!(replica.install_checkpoint(&copy).await.unwrap(), at);
        assert_eq!(
            (replica.applied_log_index(), replica.flushed_log_index()),
            (at, at)
        );
        assert!(
            replica.install_checkpoint(&copy).await.is_err(),
            "a checkpoint not ahead of the engine is refused"
        );
        let next = log.partition_point(|e| e.index <= at);
        for entry in &log[next..] {
            apply(&replica, entry).await.unwrap();
        }
        // Sequence numbers included: a `cas` expecting one must decide alike on every replica.
        let want = contents(&leader).await;
        assert_eq!(
            contents(&replica).await,
            want,
            "seed {seed}: the replica's state differs from the leader's"
        );

        // Reopened, the replica resumes from what its tables hold and gets the same state.
        replica.close().await.unwrap();
        let replica = open(replica_dir.path(), &clock, None).await;
        let flushed = replica.flushed_log_index();
        assert!(flushed >= at, "seed {seed}: tables hold {flushed} < {at}");
        for entry in &log[log.partition_point(|e| e.index <= flushed)..] {
            apply(&replica, entry).await.unwrap();
        }
        assert_eq!(contents(&replica).await, want);
        replica.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn a_replica_numbers_writes_after_a_checkpoint_as_the_leader_does_though_compaction_emptied_it() {
    run(|| async {
        let clock = Clock::manual(1 << 40);
        let opts = Options {
            l0_compaction_trigger_files: 2,
            ..options()
        };
        let scratch = test_dir("checkpoint-seq");
        let leader_dir = test_dir("checkpoint-seq-leader");
        let leader = Engine::open_applying(leader_dir.path(), opts.clone(), hooks(&clock, None))
            .await
            .unwrap();
        // Entry 1 writes 50 keys and entry 2 deletes them; each is flushed, and compacting the
        // two tables to the bottom level drops everything: the tables hold no write at all,
        // though the leader handed out 100 sequence numbers.
        let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("k{i:03}").into_bytes()).collect();
        leader.begin_entry(1, 1_000_000).unwrap();
        for k in &keys {
            leader.put(k, &[1u8; 100]).await.unwrap();
        }
        leader.end_entry().unwrap();
        leader.flush().await.unwrap();
        leader.begin_entry(2, 1_000_001).unwrap();
        let mut deleted_at = 0;
        for k in &keys {
            deleted_at = leader.delete(k).await.unwrap();
        }
        leader.end_entry().unwrap();
        leader.flush().await.unwrap();
        leader.wait_for_background().await.unwrap();
        let checkpoint = scratch.path().join("out");
        let info = leader.checkpoint(&checkpoint).await.unwrap();
        assert_eq!(info.applied_index, 2);
        assert_eq!(
            info.files.len(),
            1,
            "the compaction should have left no table: {:?}",
            info.files
        );

        let replica_dir = test_dir("checkpoint-seq-replica");
        let reopen =
            || Engine::open_applying(replica_dir.path(), opts.clone(), hooks(&clock, None));
        let replica = reopen().await.unwrap();
        let copy = scratch.path().join("in");
        copy_dir(&checkpoint, &copy);
        corekv_storage::engine::renumber_checkpoint(&copy, replica.next_file_number())
            .await
            .unwrap();
        assert_eq!(replica.install_checkpoint(&copy).await.unwrap(), 2);

        // Entry 3 gets the same sequence numbers on both, so a `cas` by sequence number
        // decides alike on both; and again after the replica restarts.
        let entry = Entry {
            index: 3,
            time_ms: 1_000_002,
            ops: vec![Op::Put(b"x".to_vec(), b"1".to_vec())],
        };
        let on_leader = apply(&leader, &entry).await.unwrap();
        assert_eq!(on_leader, vec![deleted_at + 1]);
        assert_eq!(apply(&replica, &entry).await.unwrap(), on_leader);
        replica.close().await.unwrap();
        let replica = reopen().await.unwrap();
        for e in [&entry]
            .into_iter()
            .filter(|e| e.index > replica.flushed_log_index())
        {
            apply(&replica, e).await.unwrap();
        }
        let entry = Entry {
            index: 4,
            time_ms: 1_000_003,
            ops: vec![Op::Put(b"y".to_vec(), b"2".to_vec())],
        };
        assert_eq!(
            apply(&replica, &entry).await.unwrap(),
            apply(&leader, &entry).await.unwrap()
        );
        assert_eq!(contents(&replica).await, contents(&leader).await);
        replica.close().await.unwrap();
        leader.close().await.unwrap();
    });
}
