//! Two WAL writes in flight (`sync` mode through `O_DSYNC`): the second starts on a fresh
//! block; reads, replay, truncation, failures and power loss across the gaps; segments of
//! older formats get no more records.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wal::*;
use common::{run, test_dir};
use corekv_storage::Error;
use corekv_storage::io::FaultInjector;
use corekv_storage::wal::Wal;

/// Appends records in bursts of 1-12 with a short sleep between bursts, so that records
/// arrive while a write is in flight, waiting for each burst's last record; stops after
/// `records` records once `enough()` holds (at most 10x `records`) or at the first error.
/// Returns every record appended, by index, and the last index acknowledged.
async fn append_in_bursts(
    wal: &Wal,
    records: u64,
    enough: impl Fn(&Wal) -> bool,
) -> (Vec<(u64, Vec<u8>)>, u64) {
    let mut appended = Vec::new();
    let mut acked = 0;
    let mut n = 0u64;
    while n < records || (!enough(wal) && n < 10 * records) {
        let burst = 1 + n % 12;
        let mut last = None;
        for _ in 0..burst {
            n += 1;
            let p = payload(n * 7919);
            match wal.append(p.clone()) {
                Ok(idx) => {
                    appended.push((idx, p));
                    last = Some(idx);
                }
                Err(_) => return (appended, acked),
            }
        }
        glommio::timer::sleep(std::time::Duration::from_micros(40)).await;
        if n % 3 == 0
            && let Some(last) = last
        {
            if wal.wait_durable(last).await.is_err() {
                return (appended, acked);
            }
            acked = last;
        }
    }
    if let Some(&(last, _)) = appended.last() {
        if wal.wait_durable(last).await.is_ok() {
            acked = last;
        }
    }
    (appended, acked)
}

/// The records a dropped log left, once its writer (ending its failed writes) lets go of the
/// directory.
async fn reopen(path: &std::path::Path) -> Vec<(u64, Vec<u8>)> {
    let mut tries = 0;
    loop {
        match open(path, opts(64)).await {
            Err(Error::Locked { .. }) if tries < 500 => {
                tries += 1;
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
            other => return other.unwrap().1,
        }
    }
}

#[test]
fn writes_overlap_under_load_and_every_record_reads_back_and_replays_in_order() {
    let dir = test_dir("wal-overlap");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _, _) = open(&path, opts(64)).await.unwrap();
        let (appended, acked) =
            append_in_bursts(&wal, 1500, |w| w.stats().writes_overlapped_total >= 20).await;
        assert_eq!(acked, appended.len() as u64);
        let st = wal.stats();
        assert!(
            st.writes_overlapped_total >= 20,
            "writes never overlapped: {st:?}"
        );
        assert!(st.gap_bytes_total > 0, "{st:?}");
        assert!(st.segments_created_total >= 2, "{st:?}");
        // Reads by index cross the gaps.
        let first = wal.first_index();
        let mut read = Vec::new();
        while read.len() < appended.len() {
            let from = first + read.len() as u64;
            read.extend(wal.read(from..acked + 1, 1 << 20).await.unwrap());
        }
        assert!(read == appended, "records read back differ");
        wal.close().await.unwrap();
        drop(wal);
        let (wal, got, report) = open(&path, opts(64)).await.unwrap();
        assert_eq!(report.torn_tails_cut, 0);
        assert!(got == appended, "replayed records differ");
        // The log goes on after the gaps.
        append_synced(&wal, acked + 1..acked + 50).await;
    });
}

/// Power loss while two writes are in flight: whatever order their sectors reached the disk
/// in, every acknowledged record replays, and what replays is a gapless prefix of what was
/// appended.
#[test]
fn power_loss_with_overlapping_writes_keeps_every_acknowledged_record() {
    let points = if common::long_tests() { 60 } else { 30 };
    let overlapped = std::rc::Rc::new(std::cell::Cell::new(0));
    for crash_at in 0..points {
        let dir = test_dir("wal-overlap-crash");
        let path = dir.path().to_path_buf();
        let seen = run(move || async move {
            let inj = FaultInjector::new(7 + crash_at);
            inj.track_unsynced_writes();
            let (wal, _) = Wal::open(&path, opts(64), Some(inj.clone()), |_| Ok(()))
                .await
                .unwrap();
            inj.crash_at(crash_at * 3);
            let (appended, acked) = append_in_bursts(&wal, 400, |_| true).await;
            let overlapped = wal.stats().writes_overlapped_total;
            assert!(inj.crashed(), "crash point {crash_at} was never reached");
            drop(wal);
            inj.settle().await;
            inj.power_loss().unwrap();
            let got = reopen(&path).await;
            assert!(
                got.len() as u64 >= acked,
                "crash at {crash_at}: {} records replayed, {acked} acknowledged",
                got.len()
            );
            assert!(
                got[..] == appended[..got.len()],
                "crash at {crash_at}: the replay is not a prefix of the appended records"
            );
            overlapped
        });
        overlapped.set(overlapped.get() + seen);
    }
    assert!(overlapped.get() > 0, "no run had writes in flight at once");
}

/// A segment written before format 3 (version 1: no gaps; version 2: gaps without a salt)
/// gets no more records after an upgrade: its rules do not keep forged frames out, so the
/// first append starts a format 3 segment; the old one still replays.
#[test]
fn a_segment_of_an_older_format_gets_no_more_records() {
    for version in [1, 2] {
        let dir = test_dir("wal-format-old");
        let path = dir.path().to_path_buf();
        run(move || async move {
            // One write at a time, so no gaps.
            let serial = corekv_storage::wal::WalOptions {
                dsync_writes: false,
                ..opts(8192)
            };
            let (wal, _, _) = open(&path, serial).await.unwrap();
            append_all(&wal, 1..10).await;
            wal.close().await.unwrap();
            drop(wal);
            let segs = segments(&path);
            assert_eq!(segs.len(), 1);
            let old = as_old_format(&std::fs::read(&segs[0]).unwrap(), version);
            std::fs::write(&segs[0], &old).unwrap();

            let (wal, got, _) = open(&path, opts(8192)).await.unwrap();
            assert_records(&got, 1..10);
            let (mut appended, acked) = append_in_bursts(&wal, 1500, |_| true).await;
            assert_eq!(
                wal.stats().segments_created_total,
                1,
                "version {version}: {:?}",
                wal.stats()
            );
            wal.close().await.unwrap();
            drop(wal);
            assert_eq!(
                std::fs::read(&segs[0]).unwrap(),
                old,
                "version {version}: the old segment changed"
            );
            let segs = segments(&path);
            assert_eq!(segs.len(), 2);
            assert_eq!(first_index_of(&segs[1]), 10);
            let (_wal, got, report) = open(&path, opts(8192)).await.unwrap();
            assert_eq!(report.torn_tails_cut, 0);
            let mut want: Vec<_> = (1..10).map(|i| (i, payload(i))).collect();
            want.append(&mut appended);
            assert_eq!(got.len() as u64, acked);
            assert!(got == want, "version {version}: replayed records differ");
        });
    }
}

/// Every mode writes format 3 (salted records); only `sync` through `O_DSYNC` overlaps writes.
#[test]
fn every_mode_writes_the_newest_format() {
    use corekv_storage::Durability;
    use corekv_storage::wal::FORMAT_VERSION;
    for (durability, dsync_writes) in [
        (Durability::Sync, true),
        (Durability::Sync, false),
        (Durability::Periodic { interval_ms: 1000 }, true),
        (Durability::None, true),
    ] {
        let dir = test_dir("wal-format-mode");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let o = corekv_storage::wal::WalOptions {
                durability,
                dsync_writes,
                ..opts(64)
            };
            let (wal, _, _) = open(&path, o.clone()).await.unwrap();
            let (_, acked) = append_in_bursts(&wal, 1500, |_| true).await;
            wal.wait_synced(acked).await.unwrap();
            let st = wal.stats();
            assert!(st.segments_created_total > 1, "{st:?}");
            if !(durability == Durability::Sync && dsync_writes) {
                assert_eq!(st.writes_overlapped_total, 0, "{durability}: {st:?}");
            }
            wal.close().await.unwrap();
            drop(wal);
            for seg in segments(&path) {
                let header = std::fs::read(&seg).unwrap();
                let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
                assert_eq!(
                    version, FORMAT_VERSION,
                    "{durability} dsync {dsync_writes}: {seg:?}"
                );
            }
            let (_wal, got, _) = open(&path, o).await.unwrap();
            assert_eq!(got.len() as u64, acked);
        });
    }
}

/// Indexes of the records in a segment image that follow a gap (zeros to a block boundary).
fn records_after_gaps(data: &[u8]) -> Vec<u64> {
    const BLOCK: usize = 4096;
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let mut found = Vec::new();
    let mut pos = BLOCK;
    while pos + 24 <= data.len() {
        let len = u32_at(pos);
        if len > 0 {
            pos += (24 + len).next_multiple_of(8);
            continue;
        }
        let next = pos.next_multiple_of(BLOCK);
        if pos % BLOCK == 0 || next + 24 > data.len() || u32_at(next) == 0 {
            break;
        }
        found.push(u64::from_le_bytes(
            data[next + 8..next + 16].try_into().unwrap(),
        ));
        pos = next;
    }
    found
}

/// Cutting the log back to the first record after a gap ends it where the record before the
/// gap ends, so records appended next follow directly, read back and replay.
#[test]
fn truncating_to_the_first_record_after_a_gap_keeps_the_log_readable() {
    let dir = test_dir("wal-overlap-truncate");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // One segment (8 MiB: room for a gap before every record), so the whole log is in
        // one file.
        let (wal, _, _) = open(&path, opts(8192)).await.unwrap();
        let (mut appended, acked) =
            append_in_bursts(&wal, 600, |w| w.stats().gap_bytes_total > 0).await;
        assert_eq!(acked, appended.len() as u64);
        let segs = segments(&path);
        assert_eq!(segs.len(), 1);
        let after_gaps = records_after_gaps(&std::fs::read(&segs[0]).unwrap());
        let Some(&from) = after_gaps.first() else {
            panic!("no gap in the log: {:?}", wal.stats());
        };
        wal.truncate_suffix(from).await.unwrap();
        appended.truncate((from - 1) as usize);
        for i in 0..40 {
            let p = payload(10_000 + i);
            let idx = wal.append(p.clone()).unwrap();
            wal.wait_durable(idx).await.unwrap();
            appended.push((idx, p));
        }
        let last = appended.last().unwrap().0;
        assert_eq!(wal.read(1..last + 1, usize::MAX).await.unwrap(), appended);
        // The record appended at `from` follows the one before it directly.
        let after_gaps = records_after_gaps(&std::fs::read(&segs[0]).unwrap());
        assert!(!after_gaps.contains(&from), "{from} written after a gap");
        wal.close().await.unwrap();
        drop(wal);
        let (_wal, got, report) = open(&path, opts(8192)).await.unwrap();
        assert_eq!(report.torn_tails_cut, 0);
        assert!(got == appended, "replayed records differ after the cut");
    });
}

/// One of two writes in flight fails (its write or its sync, whichever of the two started
/// first): the log stops, nothing after the failure is acknowledged, and what replays is a
/// gapless prefix holding every acknowledged record.
#[test]
fn a_failed_write_beside_another_in_flight_loses_no_acknowledged_record() {
    use corekv_storage::io::{Fault, FaultOp};
    let mut runs = Vec::new();
    for op in [FaultOp::Write, FaultOp::Sync] {
        for n in 3..15 {
            runs.push((op, n));
        }
    }
    let (mut overlapped, mut unacked, mut beside) = (0, 0, 0);
    for (op, n) in runs {
        let dir = test_dir("wal-overlap-fail");
        let path = dir.path().to_path_buf();
        let (o, u, b) = run(move || async move {
            let inj = FaultInjector::new(n);
            let (wal, _) = Wal::open(&path, opts(64), Some(inj.clone()), |_| Ok(()))
                .await
                .unwrap();
            // Segments only: a failure preparing the spare segment is only logged.
            inj.fail_nth_in(op, n, Fault::Eio, "wal-0");
            let (appended, acked) = append_in_bursts(&wal, 400, |_| true).await;
            assert!(
                (acked as usize) < appended.len() || wal.append(payload(1)).is_err(),
                "{op:?} {n}: the failure was never seen"
            );
            let overlapped = wal.stats().writes_overlapped_total;
            drop(wal);
            inj.settle().await;
            let got = reopen(&path).await;
            assert!(
                got.len() as u64 >= acked,
                "{op:?} {n}: {} records replayed, {acked} acknowledged",
                got.len()
            );
            assert!(
                got[..] == appended[..got.len()],
                "{op:?} {n}: the replay is not a prefix of the appended records"
            );
            let beside = inj.in_flight_at_faults().iter().filter(|&&n| n > 0).count();
            (overlapped, (appended.len() as u64 - acked) as usize, beside)
        });
        overlapped += o;
        unacked += u;
        beside += b;
    }
    assert!(overlapped > 0, "no write ever overlapped another");
    assert!(unacked > 0, "every record was acknowledged");
    assert!(
        beside > 0,
        "no fault hit an operation with another in flight"
    );
}
