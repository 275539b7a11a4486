//! Tests of the fault injector: rules, crash points, and power loss of unsynced writes and
//! directory changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::io::Io;
use crate::test_util::{probe, run, test_dir};

#[test]
fn rules_fail_once_or_from_a_point_on_until_cleared() {
    let inj = FaultInjector::new(1);
    let p = Path::new("f");
    let sync = |inj: &FaultInjector| inj.before(FaultOp::Sync, p).is_ok();
    inj.fail_nth(FaultOp::Sync, 1, Fault::Eio);
    assert_eq!(
        (0..4).map(|_| sync(&inj)).collect::<Vec<_>>(),
        [true, false, true, true]
    );
    inj.fail_from(FaultOp::Sync, 2, Fault::Enospc);
    assert_eq!(
        (0..5).map(|_| sync(&inj)).collect::<Vec<_>>(),
        [true, true, false, false, false]
    );
    match inj.before(FaultOp::Sync, p) {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("unexpected {other:?}"),
    }
    // Other operations are not affected; clearing heals the disk.
    assert!(inj.before(FaultOp::Create, p).is_ok());
    inj.clear();
    assert!(sync(&inj));
    assert_eq!(inj.count(FaultOp::Sync), 11);
}

#[test]
fn path_filtered_rules_count_only_matching_files() {
    let inj = FaultInjector::new(1);
    let (table, wal) = (Path::new("d/000007.sst"), Path::new("d/wal/wal-1.log"));
    inj.fail_from_in(FaultOp::Write, 1, Fault::Eio, ".sst");
    assert!(inj.before(FaultOp::Write, wal).is_ok());
    assert!(inj.before(FaultOp::Write, table).is_ok());
    assert!(inj.before(FaultOp::Write, wal).is_ok());
    assert!(inj.before(FaultOp::Write, table).is_err());
    assert!(inj.before(FaultOp::Write, wal).is_ok());
    assert!(inj.before(FaultOp::Write, table).is_err());
}

#[test]
fn the_crash_hook_runs_once_when_the_armed_point_fires() {
    let inj = FaultInjector::new(1);
    let fired = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&fired);
    inj.on_crash_point(move |p| seen.borrow_mut().push(p));
    inj.crash_at_point(CrashPoint::CompactionBeforeManifest, 1);
    assert!(inj.reached(CrashPoint::FlushMidTable).is_ok());
    assert!(inj.reached(CrashPoint::CompactionBeforeManifest).is_ok());
    assert!(fired.borrow().is_empty());
    assert!(inj.reached(CrashPoint::CompactionBeforeManifest).is_err());
    assert_eq!(*fired.borrow(), [CrashPoint::CompactionBeforeManifest]);
    // Dead from then on, without calling the hook again.
    assert!(inj.reached(CrashPoint::FlushMidTable).is_err());
    assert_eq!(fired.borrow().len(), 1);
}

#[test]
fn power_loss_undoes_creations_and_renames_until_their_directory_is_synced() {
    let dir = test_dir("fault-dir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let (a, b, c) = (path.join("a"), path.join("b"), path.join("c"));
        let (mut lost, mut kept) = (0, 0);
        for seed in 0..16u64 {
            for p in [&a, &b, &c] {
                let _ = std::fs::remove_file(p);
            }
            std::fs::write(&c, b"old c").unwrap();
            let faults = FaultInjector::new(seed);
            faults.track_unsynced_writes();
            let io = Io::new(Some(faults.clone()));
            // `a` created and its directory synced: durable.
            let f = io.create(&a).await.unwrap();
            f.fdatasync().await.unwrap();
            io.sync_dir(&path).await.unwrap();
            // `b` created, `a` renamed over `c`, directory not synced.
            let f = io.create(&b).await.unwrap();
            f.fdatasync().await.unwrap();
            io.rename(&a, &c).unwrap();
            faults.crash_now();
            faults.power_loss().unwrap();
            // In order: either both changes stay, only the creation of `b`, or neither.
            match (
                b.exists(),
                a.exists(),
                std::fs::read(&c).unwrap().as_slice(),
            ) {
                (true, false, b"") => kept += 1,
                (true, true, b"old c") | (false, true, b"old c") => lost += 1,
                other => panic!("seed {seed}: impossible state after power loss: {other:?}"),
            }
        }
        assert!(lost > 0 && kept > 0, "lost {lost}, kept {kept}");
    });
}

#[test]
fn a_sync_makes_durable_only_the_writes_complete_when_it_started() {
    let dir = test_dir("fault-sync-order");
    let path = dir.path().join("f");
    run(move || async move {
        probe(path.parent().unwrap()).await;
        let block = |f: &crate::io::File, byte: u8| {
            let mut b = f.alloc(4096);
            b.as_bytes_mut().fill(byte);
            b
        };
        let (mut lost, mut kept) = (0, 0);
        for seed in 0..16u64 {
            let _ = std::fs::remove_file(&path);
            let faults = FaultInjector::new(seed);
            faults.track_unsynced_writes();
            let io = Io::new(Some(faults.clone()));
            let f = io.create(&path).await.unwrap();
            io.sync_dir(path.parent().unwrap()).await.unwrap();
            f.write_at(block(&f, 1), 0).await.unwrap();
            // A sync starts; the second write completes while it runs.
            let covered = faults.sync_starting(&path);
            f.write_at(block(&f, 2), 4096).await.unwrap();
            faults.synced(&path, &covered);
            faults.crash_now();
            faults.power_loss().unwrap();
            let data = std::fs::read(&path).unwrap();
            assert!(
                data[..4096].iter().all(|&b| b == 1),
                "seed {seed}: a synced write was lost"
            );
            // Each 512-byte sector of the unsynced write is kept or lost on its own.
            for sector in data[4096..8192].chunks(512) {
                if sector.iter().all(|&b| b == 2) {
                    kept += 1;
                } else {
                    lost += 1;
                }
            }
        }
        assert!(lost > 0 && kept > 0, "lost {lost}, kept {kept}");
    });
}
