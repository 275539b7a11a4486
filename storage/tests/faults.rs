//! Injected I/O faults: a failed write or sync is reported to the writers and never
//! acknowledged, the engine refuses further writes (reads go on) until reopened, and nothing
//! acknowledged is lost. Crashes with power loss at every early point of a group commit.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{run, test_dir};
use corekv_storage::io::{Fault, FaultInjector, FaultOp};
use corekv_storage::{Durability, Engine, Error, Options};

fn options() -> Options {
    Options {
        wal_segment_size_bytes: 64 << 10,
        ..Options::default()
    }
}

async fn open_with(dir: &Path, faults: Option<FaultInjector>) -> corekv_storage::Result<Engine> {
    common::open_with_faults(dir, options(), faults).await
}

/// Reopens without faults once the previous instance's WAL writer has let go of the lock.
async fn reopen(dir: &Path) -> Engine {
    for _ in 0..1000 {
        match open_with(dir, None).await {
            Err(Error::Locked { .. }) => {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await
            }
            other => return other.unwrap(),
        }
    }
    panic!("the old engine never released its lock");
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

#[test]
fn a_failed_write_or_sync_is_never_acknowledged_and_makes_the_engine_read_only() {
    let cases = [
        (FaultOp::Write, Fault::Eio),
        (FaultOp::Write, Fault::Enospc),
        (FaultOp::Write, Fault::ShortWrite),
        (FaultOp::Write, Fault::TornWrite),
        (FaultOp::Sync, Fault::Eio),
        (FaultOp::Sync, Fault::Enospc),
    ];
    for (n, (op, fault)) in cases.into_iter().enumerate() {
        let dir = test_dir("faults-rw");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let inj = FaultInjector::new(n as u64);
            let e = open_with(&path, Some(inj.clone())).await.unwrap();
            for i in 0..10 {
                e.put(&key(i), b"acked").await.unwrap();
            }
            // The next write or sync of a segment (not of the spare prepared in the background).
            inj.fail_nth_in(op, 0, fault, "wal-0");
            match e.put(b"doomed", b"v").await {
                Err(Error::Io {
                    op: what,
                    path: p,
                    source,
                }) => {
                    assert!(p.to_str().unwrap().contains("wal-"), "{p:?}");
                    assert!(!what.is_empty());
                    if fault == Fault::Enospc {
                        assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
                    }
                }
                other => panic!("{op:?} {fault:?}: unexpected {other:?}"),
            }
            // Not visible, and nothing more is accepted; reads go on.
            assert_eq!(e.get(b"doomed").await.unwrap(), None);
            assert!(matches!(
                e.put(b"later", b"v").await,
                Err(Error::ReadOnly { .. })
            ));
            assert_eq!(e.get(&key(3)).await.unwrap(), Some(b"acked".to_vec()));
            let st = e.stats();
            assert_eq!((st.read_only, st.failed_io_total), (1, 1));
            assert_eq!(st.rejected_read_only_total, 1);
            assert_eq!(st.wal_io_errors_total, 1);
            assert!(
                e.clone().close().await.is_err(),
                "close reports the failure"
            );
            drop(e);

            // Reopen: everything acknowledged is there, the engine writes again.
            let e = reopen(&path).await;
            for i in 0..10 {
                assert_eq!(e.get(&key(i)).await.unwrap(), Some(b"acked".to_vec()));
            }
            let doomed = e.get(b"doomed").await.unwrap();
            assert!(doomed.is_none() || doomed == Some(b"v".to_vec()));
            if op == FaultOp::Write && matches!(fault, Fault::Eio | Fault::Enospc) {
                assert_eq!(doomed, None, "a write that failed before reaching disk");
            }
            assert_eq!(e.get(b"later").await.unwrap(), None);
            e.put(b"later", b"v").await.unwrap();
            e.close().await.unwrap();
            let e = reopen(&path).await;
            assert_eq!(e.get(b"later").await.unwrap(), Some(b"v".to_vec()));
        });
    }
}

#[test]
fn every_writer_of_a_failed_group_commit_gets_the_error() {
    let dir = test_dir("faults-group");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let inj = FaultInjector::new(7);
        let e = open_with(&path, Some(inj.clone())).await.unwrap();
        e.put(b"before", b"ok").await.unwrap();
        inj.fail_nth_in(FaultOp::Sync, 0, Fault::Eio, "wal-0");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let e = e.clone();
                glommio::spawn_local(async move { e.put(&key(i), b"v").await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await, Err(Error::Io { .. })));
        }
        for i in 0..16 {
            assert_eq!(e.get(&key(i)).await.unwrap(), None);
        }
        assert_eq!(e.stats().failed_io_total, 16);
        assert_eq!(e.stats().seq_visible, 1);
        drop(e);
        let e = reopen(&path).await;
        assert_eq!(e.get(b"before").await.unwrap(), Some(b"ok".to_vec()));
    });
}

#[test]
fn failures_while_creating_a_segment_are_reported_and_recovered_from() {
    for (n, op) in [FaultOp::Create, FaultOp::Allocate, FaultOp::SyncDir]
        .into_iter()
        .enumerate()
    {
        let dir = test_dir("faults-segment");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let inj = FaultInjector::new(n as u64);
            let e = open_with(&path, Some(inj.clone())).await.unwrap();
            // Fill the first segment, then fail the creation of the second.
            let mut i = 0;
            while e.stats().wal_segments_created_total < 1 || i < 4 {
                e.put(&key(i), &[1; 3000]).await.unwrap();
                i += 1;
            }
            // Every attempt fails from now on: the spare segment prepared in the background
            // and the creation at rollover alike.
            inj.fail_all(op, Fault::Enospc);
            let err = loop {
                match e.put(&key(i), &[1; 3000]).await {
                    Ok(_) => i += 1,
                    Err(err) => break err,
                }
            };
            // (A spare prepared before the fault may serve one more rollover first.)
            assert!(matches!(err, Error::Io { .. }), "{op:?}: {err}");
            assert!(e.stats().wal_segments_created_total <= 2);
            inj.clear();
            drop(e);
            let e = reopen(&path).await;
            for k in 0..i {
                assert!(
                    e.get(&key(k)).await.unwrap() == Some(vec![1; 3000]),
                    "{op:?} key {k}"
                );
            }
            // The half-created segment (if any) was cleaned up; writing rolls over again.
            for k in i..i + 40 {
                e.put(&key(k), &[2; 3000]).await.unwrap();
            }
            assert!(e.stats().wal_segments_created_total >= 1);
            e.close().await.unwrap();
        });
    }
}

/// A restart on a full disk with no room for the next WAL segment (the previous instance
/// failed at its rollover) opens read-only: everything recovered is readable, writes are
/// refused with `ReadOnly`, and a reopen with room again writes and still has everything.
#[test]
fn opening_without_room_for_a_wal_segment_serves_reads_and_refuses_writes() {
    for (n, op) in [FaultOp::Create, FaultOp::Allocate].into_iter().enumerate() {
        let dir = test_dir("faults-open-full");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let inj = FaultInjector::new(n as u64);
            let e = open_with(&path, Some(inj.clone())).await.unwrap();
            // The disk fills up: writes go on until a rollover finds no room.
            inj.fail_all(op, Fault::Enospc);
            let mut acked = 0;
            while e.put(&key(acked), &[3; 3000]).await.is_ok() {
                acked += 1;
            }
            assert!(acked > 4, "{op:?}: only {acked} writes");
            drop(e);
            // Restart, still full.
            let inj = FaultInjector::new(n as u64);
            inj.fail_all(op, Fault::Enospc);
            let e = loop {
                match open_with(&path, Some(inj.clone())).await {
                    Err(Error::Locked { .. }) => {
                        glommio::timer::sleep(std::time::Duration::from_millis(1)).await
                    }
                    other => break other.unwrap(),
                }
            };
            for k in 0..acked {
                assert_eq!(e.get(&key(k)).await.unwrap(), Some(vec![3; 3000]), "{op:?}");
            }
            // Writes fail with the disk's error (an `Io` error at first, or at once the
            // `ReadOnly` refusal that carries it); none is applied.
            for _ in 0..3 {
                match e.put(b"new", b"v").await {
                    Err(Error::Io { source, .. }) => {
                        assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{op:?}")
                    }
                    Err(Error::ReadOnly { reason }) => {
                        assert!(reason.contains("No space left"), "{op:?}: {reason}")
                    }
                    other => panic!("{op:?}: a write on a full disk answered {other:?}"),
                }
            }
            assert!(matches!(
                e.put(b"new", b"v").await,
                Err(Error::ReadOnly { .. })
            ));
            assert_eq!(e.get(b"new").await.unwrap(), None);
            drop(e);
            // Room again.
            let e = reopen(&path).await;
            for k in 0..acked {
                assert_eq!(e.get(&key(k)).await.unwrap(), Some(vec![3; 3000]), "{op:?}");
            }
            e.put(b"new", b"v").await.unwrap();
            e.close().await.unwrap();
        });
    }
}

#[test]
fn a_read_error_during_recovery_fails_open_without_touching_anything() {
    let dir = test_dir("faults-read");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = open_with(&path, None).await.unwrap();
        e.put(b"k", b"v").await.unwrap();
        e.close().await.unwrap();
        let inj = FaultInjector::new(1);
        inj.fail_all(FaultOp::Read, Fault::Eio);
        match open_with(&path, Some(inj)).await {
            Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("unexpected {other:?}"),
        }
        let e = reopen(&path).await;
        assert_eq!(e.get(b"k").await.unwrap(), Some(b"v".to_vec()));
    });
}

/// 16 concurrent writers; the machine crashes at the n-th write or sync and loses power.
/// Every acknowledged write survives, and what survives is a prefix of the sequence.
#[test]
fn crash_and_power_loss_at_each_early_io_keeps_every_acknowledged_write() {
    let (points, per_writer) = if common::long_tests() {
        (150, 80)
    } else {
        (24, 20)
    };
    for crash_at in 0..points {
        let dir = test_dir("faults-crash");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let inj = FaultInjector::new(1000 + crash_at);
            inj.track_unsynced_writes();
            let mut opts = options();
            opts.durability = Durability::Sync;
            let e = common::open_with_faults(&path, opts, Some(inj.clone()))
                .await
                .unwrap();
            inj.crash_at(crash_at);
            // Writers issue puts one after another; their sequence order is their key order.
            let tasks: Vec<_> = (0..16)
                .map(|w| {
                    let e = e.clone();
                    glommio::spawn_local(async move {
                        let mut acked = Vec::new();
                        for j in 0..per_writer {
                            let k = key(w * 100 + j);
                            match e.put(&k, b"v").await {
                                Ok(seq) => acked.push((seq, k)),
                                Err(_) => break,
                            }
                        }
                        acked
                    })
                })
                .collect();
            let mut acked = Vec::new();
            for t in tasks {
                acked.extend(t.await);
            }
            assert!(inj.crashed(), "crash point {crash_at} was never reached");
            drop(e);
            inj.settle().await;
            inj.power_loss().unwrap();
            let e = reopen(&path).await;
            for (seq, k) in &acked {
                assert_eq!(
                    e.get(k).await.unwrap(),
                    Some(b"v".to_vec()),
                    "crash at {crash_at}: acked write seq {seq} lost"
                );
            }
            // Recovered writes form a prefix of the sequence: seq_last writes, no holes.
            let last = e.stats().seq_last;
            let page = e
                .scan(
                    &corekv_storage::ScanRange {
                        start: Vec::new(),
                        end: None,
                        limit: 100_000,
                        reverse: false,
                    },
                    None,
                )
                .await
                .unwrap();
            assert_eq!(page.entries.len() as u64, last, "crash at {crash_at}");
            assert!(acked.iter().all(|(s, _)| *s <= last));
        });
    }
}
