//! The WAL on its own: replay after reopen, segment rollover, torn tails at every offset of
//! the last block, corruption reported with file and offset, the recovery modes, and the
//! Raft-log operations (read by index range, truncate a suffix, drop a prefix). Overlapping
//! writes are in `wal_overlap.rs`.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::wal::*;
use common::{run, test_dir};
use corekv_storage::wal::WalOptions;
use corekv_storage::{Durability, Error, WalRecoveryMode};

#[test]
fn records_survive_reopen_and_segments_roll_over() {
    let dir = test_dir("wal-reopen");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (wal, got, report) = open(&path, opts(64)).await.unwrap();
        assert!(got.is_empty());
        assert_eq!((report.first_index, report.next_index), (1, 1));
        append_synced(&wal, 1..300).await;
        let st = wal.stats();
        assert_eq!(st.syncs_total, 299, "one sync per awaited record");
        append_all(&wal, 300..600).await;
        let st = wal.stats();
        assert!(st.segments_created_total >= 2, "{st:?}");
        assert!(
            st.writes_total < 599,
            "appends without waiting group-commit: {st:?}"
        );
        wal.close().await.unwrap();
        assert!(matches!(wal.append(payload(1)), Err(Error::Closed)));
        drop(wal);

        let (wal, got, report) = open(&path, opts(64)).await.unwrap();
        assert_records(&got, 1..600);
        assert_eq!(report.records_replayed, 599);
        assert_eq!(report.torn_tails_cut, 0);
        // Appends continue the index sequence, in the last segment.
        append_synced(&wal, 600..700).await;
        wal.close().await.unwrap();
        drop(wal);
        let (_wal, got, _) = open(&path, opts(64)).await.unwrap();
        assert_records(&got, 1..700);
    });
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own_segment() {
    let dir = test_dir("wal-big");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _, _) = open(&path, opts(64)).await.unwrap();
        let big = vec![7u8; 200 << 10];
        let i = wal.append(b"small".to_vec()).unwrap();
        let j = wal.append(big.clone()).unwrap();
        let k = wal.append(b"after".to_vec()).unwrap();
        wal.wait_durable(k).await.unwrap();
        assert_eq!((i, j, k), (1, 2, 3));
        wal.close().await.unwrap();
        drop(wal);
        let (wal, got, _) = open(&path, opts(64)).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].1, big);
        let read = wal.read(1..4, usize::MAX).await.unwrap();
        assert_eq!(read, got);
        assert!(
            wal.append(Vec::new()).is_err(),
            "empty payloads are refused"
        );
    });
}

/// Writes records 1..=n (each synced) and returns the byte offset of each record's frame in
/// the single segment (and the end of the last one), plus the segment's path.
async fn one_segment_log(path: &Path, n: u64) -> (PathBuf, Vec<u64>) {
    let (wal, _, _) = open(path, opts(64)).await.unwrap();
    append_synced(&wal, 1..n + 1).await;
    wal.close().await.unwrap();
    drop(wal);
    let segs = segments(path);
    assert_eq!(segs.len(), 1);
    // Frame offsets: header block, then frames padded to 8 bytes.
    let mut offsets = Vec::new();
    let mut at = 4096u64;
    for i in 1..=n {
        offsets.push(at);
        at += ((24 + payload(i).len()) as u64).next_multiple_of(8);
    }
    offsets.push(at);
    (segs[0].clone(), offsets)
}

#[test]
fn torn_tails_at_every_offset_of_the_last_block_lose_exactly_the_torn_records() {
    let dir = test_dir("wal-torn");
    let base = dir.path().join("base");
    run(move || async move {
        let n = 40;
        let (seg, offsets) = one_segment_log(&base, n).await;
        let end = offsets[n as usize];
        let last_block = end - end % 4096;
        let name = seg.file_name().unwrap().to_owned();
        let work = base.parent().unwrap().join("work");
        // Every 8-byte step over the last block and the records before it.
        let from = offsets[n as usize - 6].min(last_block);
        let mut cases = 0;
        // COREKV_LONG_TESTS=1: every 8-byte step, each followed by appends and a reopen.
        let long = common::long_tests();
        let step = if long { 8 } else { 100 };
        for cut in (from..end).step_by(step).chain([end - 1]) {
            // Zero the rest of the last block, or cut the file short anywhere in the range.
            for zero in [true, false] {
                if zero && cut < last_block {
                    continue;
                }
                let _ = std::fs::remove_dir_all(&work);
                copy_dir(&base, &work);
                let f = work.join(&name);
                if zero {
                    // Zero from the cut to the end of its block (a torn/unwritten block).
                    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
                    let block_end = (cut / 4096 + 1) * 4096;
                    use std::os::unix::fs::FileExt;
                    file.write_all_at(&vec![0u8; (block_end - cut) as usize], cut)
                        .unwrap();
                } else {
                    // The file ends at the cut (a crash before a size change reached disk).
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&f)
                        .unwrap()
                        .set_len(cut)
                        .unwrap();
                }
                // Records wholly before the cut survive (their padding may go); the rest are a
                // torn tail.
                let keep = (1..=n)
                    .filter(|&i| offsets[i as usize - 1] + 24 + payload(i).len() as u64 <= cut)
                    .count() as u64;
                let (wal, got, report) = open(&work, opts(64))
                    .await
                    .unwrap_or_else(|e| panic!("cut {cut} zero {zero}: {e}"));
                assert_records(&got, 1..keep + 1);
                // A cut exactly at a frame boundary looks like a clean end; anything else is a
                // torn tail, detected and counted.
                let torn = keep < n && cut > offsets[keep as usize];
                assert_eq!(
                    report.torn_tails_cut,
                    u64::from(torn),
                    "cut {cut} zero {zero}"
                );
                cases += 1;
                if !long && cases % 4 != 1 {
                    wal.close().await.unwrap();
                    continue;
                }
                // The cut log takes new records and reads back clean.
                append_synced(&wal, keep + 1..keep + 3).await;
                wal.close().await.unwrap();
                drop(wal);
                let (w, got, report) = open(&work, opts(64)).await.unwrap();
                assert_records(&got, 1..keep + 3);
                assert_eq!(report.torn_tails_cut, 0);
                w.close().await.unwrap();
            }
        }
        assert!(cases > 60, "{cases}");
    });
}

#[test]
fn a_corrupt_byte_in_an_earlier_record_fails_open_with_file_and_offset() {
    let dir = test_dir("wal-corrupt");
    let base = dir.path().join("base");
    run(move || async move {
        let n = 30;
        let (seg, offsets) = one_segment_log(&base, n).await;
        let name = seg.file_name().unwrap().to_owned();
        let work = base.parent().unwrap().join("work");
        for victim in [1u64, 2, 10, n - 1] {
            // Corrupt the first payload byte, then a header byte.
            for delta in [24u64, 9] {
                let _ = std::fs::remove_dir_all(&work);
                copy_dir(&base, &work);
                let f = work.join(&name);
                let at = offsets[victim as usize - 1] + delta;
                flip(&f, at);
                match open(&work, opts(64)).await {
                    Err(Error::Corruption { file, offset, .. }) => {
                        assert_eq!(file, f);
                        assert_eq!(offset, offsets[victim as usize - 1], "victim {victim}");
                    }
                    Err(other) => panic!("victim {victim}: unexpected {other}"),
                    Ok(_) => panic!("victim {victim}: corruption was not detected"),
                }
                // The file is left as it was: nothing is repaired silently.
                let mut again = std::fs::read(&f).unwrap();
                again[at as usize] ^= 0x40;
                assert_eq!(again, std::fs::read(base.join(&name)).unwrap());
            }
        }
        // The very last record damaged: indistinguishable from a torn write, cut and counted.
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&base, &work);
        flip(&work.join(&name), offsets[n as usize - 1] + 24);
        let (w, got, report) = open(&work, opts(64)).await.unwrap();
        assert_records(&got, 1..n);
        assert_eq!(report.torn_tails_cut, 1);
        w.close().await.unwrap();
    });
}

fn flip(f: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    file.write_all_at(&b, at).unwrap();
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_and_the_recovery_modes_differ() {
    let dir = test_dir("wal-modes");
    let base = dir.path().join("base");
    run(move || async move {
        let (wal, _, _) = open(&base, opts(64)).await.unwrap();
        append_all(&wal, 1..1500).await;
        wal.close().await.unwrap();
        drop(wal);
        let segs = segments(&base);
        assert!(segs.len() >= 3);
        let work = base.parent().unwrap().join("work");
        let second = segs[1].file_name().unwrap().to_owned();
        let first_of_third: u64 = segs[2].file_name().unwrap().to_str().unwrap()[4..24]
            .parse()
            .unwrap();
        let first_of_second: u64 = second.to_str().unwrap()[4..24].parse().unwrap();

        // The LAST record of a sealed segment damaged: still corruption (only the last
        // segment may end torn). Find it by reading the segment's record offsets back.
        let prepare = |work: &Path| {
            let _ = std::fs::remove_dir_all(work);
            copy_dir(&base, work);
            let f = work.join(&second);
            // Damage the first record of the second segment.
            flip(&f, 4096 + 24);
            f
        };
        let f = prepare(&work);
        match open(&work, opts(64)).await {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!(file, f);
                assert_eq!(offset, 4096);
            }
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
        let strict = WalOptions {
            recovery_mode: WalRecoveryMode::AbsoluteConsistency,
            ..opts(64)
        };
        assert!(matches!(
            open(&work, strict.clone()).await,
            Err(Error::Corruption { .. })
        ));

        // skip-to-last-good: replay stops before the damage; later segments are deleted.
        let skip = WalOptions {
            recovery_mode: WalRecoveryMode::SkipToLastGood,
            ..opts(64)
        };
        let (wal, got, report) = open(&work, skip).await.unwrap();
        assert_records(&got, 1..first_of_second);
        assert_eq!(report.corruptions_skipped, 1);
        assert!(report.segments_dropped >= 1);
        assert_eq!(segments(&work).len(), 2);
        assert!(first_of_third > first_of_second);
        // The log continues from the last good record, and reopens cleanly in the default mode.
        append_synced(&wal, first_of_second..first_of_second + 5).await;
        wal.close().await.unwrap();
        drop(wal);
        let (w, got, _) = open(&work, opts(64)).await.unwrap();
        assert_records(&got, 1..first_of_second + 5);
        w.close().await.unwrap();
        drop(w);

        // absolute-consistency refuses even a torn tail.
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&base, &work);
        let last = segments(&work).pop().unwrap();
        let len = std::fs::metadata(&last).unwrap().len();
        let data = std::fs::read(&last).unwrap();
        let end = data.iter().rposition(|&b| b != 0).unwrap() as u64;
        flip(&last, end);
        assert!(matches!(
            open(&work, strict).await,
            Err(Error::Corruption { .. })
        ));
        assert_eq!(std::fs::metadata(&last).unwrap().len(), len);
        let (_w, _got, report) = open(&work, opts(64)).await.unwrap();
        assert_eq!(report.torn_tails_cut, 1);
    });
}

#[test]
fn an_unknown_format_version_or_missing_segment_is_refused() {
    let dir = test_dir("wal-version");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _, _) = open(&path, opts(64)).await.unwrap();
        append_all(&wal, 1..1500).await;
        wal.close().await.unwrap();
        drop(wal);
        let segs = segments(&path);
        // A missing middle segment is a gap.
        let middle = segs[1].clone();
        let saved = std::fs::read(&middle).unwrap();
        std::fs::remove_file(&middle).unwrap();
        match open(&path, opts(64)).await {
            Err(Error::Corruption { file, detail, .. }) => {
                assert_eq!(file, segs[2]);
                assert!(detail.contains("previous one ends"), "{detail}");
            }
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
        std::fs::write(&middle, &saved).unwrap();
        // A segment from a future format version.
        let future = corekv_storage::wal::FORMAT_VERSION + 1;
        let v2 = with_format_version(&saved, future);
        std::fs::write(&middle, &v2).unwrap();
        match open(&path, opts(64)).await {
            Err(Error::Corruption { file, detail, .. }) => {
                assert_eq!(file, middle);
                assert!(detail.contains(&format!("version {future}")), "{detail}");
            }
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn raft_log_operations_read_truncate_and_compact() {
    let dir = test_dir("wal-raft");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _, _) = open(&path, opts(64)).await.unwrap();
        append_all(&wal, 1..500).await;
        append_synced(&wal, 500..510).await;
        append_all(&wal, 510..1500).await;
        let segs = segments(&path).len();
        assert!(segs >= 4);

        // Read any range, across segments, with a byte budget.
        let all = wal.read(1..1500, usize::MAX).await.unwrap();
        assert_records(&all, 1..1500);
        assert_records(&wal.read(123..1321, usize::MAX).await.unwrap(), 123..1321);
        let some = wal.read(10..400, 1000).await.unwrap();
        assert!(!some.is_empty() && some.len() < 390);
        assert_records(&some, 10..10 + some.len() as u64);
        assert!(wal.read(0..5, 10).await.is_err());
        assert!(
            wal.read(1490..1501, 10).await.is_err(),
            "beyond the written log"
        );

        // Drop a prefix: whole segments below the index go, the first index moves up.
        let second: u64 = first_index_of(&segments(&path)[1]);
        assert_eq!(
            wal.drop_prefix(second - 1).await.unwrap(),
            1,
            "segment 1 still needed"
        );
        let first = wal.drop_prefix(second + 1).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(wal.first_index(), first);
        assert!(wal.read(1..2, 10).await.is_err());
        assert_records(
            &wal.read(second..second + 50, usize::MAX).await.unwrap(),
            second..second + 50,
        );
        assert_eq!(wal.stats().segments_deleted_total, 1);

        // Truncate a suffix in the middle of a segment: later segments go, and the next
        // append reuses the index.
        let cut = first_index_of(&segments(&path)[2]) + 10;
        wal.truncate_suffix(cut).await.unwrap();
        assert_eq!(wal.last_index(), cut - 1);
        assert_eq!(segments(&path).len(), 3);
        assert!(wal.read(cut - 1..cut + 1, usize::MAX).await.is_err());
        // New content at the same indices.
        for i in cut..cut + 10 {
            let idx = wal.append(format!("new-{i}").into_bytes()).unwrap();
            assert_eq!(idx, i);
            wal.wait_durable(idx).await.unwrap();
        }
        let read = wal.read(cut - 2..cut + 10, usize::MAX).await.unwrap();
        assert_eq!(read[1], (cut - 1, payload(cut - 1)));
        assert_eq!(read[2], (cut, format!("new-{cut}").into_bytes()));
        wal.close().await.unwrap();
        drop(wal);
        let (wal, got, report) = open(&path, opts(64)).await.unwrap();
        assert_eq!(report.first_index, first);
        assert_records(&got[..(cut - first) as usize], first..cut);
        assert_eq!(got.len() as u64, cut + 10 - first);
        assert_eq!(
            got.last().unwrap(),
            &(cut + 9, format!("new-{}", cut + 9).into_bytes())
        );

        // Truncate at a segment's first index, then everything.
        wal.truncate_suffix(first).await.unwrap();
        assert_eq!(wal.last_index(), first - 1);
        let i = wal.append(b"again".to_vec()).unwrap();
        assert_eq!(i, first);
        wal.wait_durable(i).await.unwrap();
        wal.truncate_suffix(first).await.unwrap();
        wal.close().await.unwrap();
        drop(wal);
        let (wal, got, report) = open(&path, opts(64)).await.unwrap();
        assert!(got.is_empty());
        assert_eq!(
            report.next_index, first,
            "the next index survives an empty log"
        );
        assert!(wal.truncate_suffix(first - 1).await.is_err());
        assert_eq!(wal.append(b"x".to_vec()).unwrap(), first);
    });
}

#[test]
fn close_syncs_a_backlog_of_many_writes_in_every_mode() {
    for durability in [
        Durability::None,
        Durability::Periodic { interval_ms: 1000 },
        Durability::Sync,
    ] {
        let dir = test_dir("wal-backlog");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let o = WalOptions {
                durability,
                write_bytes_max: 4096,
                ..opts(64)
            };
            let (wal, _, _) = open(&path, o.clone()).await.unwrap();
            // Far more than one write's worth, queued before the writer runs at all; close
            // must write and sync all of it.
            for i in 1..2000 {
                wal.append(payload(i)).unwrap();
            }
            let closed = glommio::timer::timeout(std::time::Duration::from_secs(60), async {
                Ok(wal.close().await)
            })
            .await;
            closed.expect("close did not finish").unwrap();
            assert_eq!(wal.synced_index(), 1999, "{durability}");
            drop(wal);
            let (_w, got, _) = open(&path, o).await.unwrap();
            assert_records(&got, 1..2000);
        });
    }
}

/// Descriptors of this process open on `path`, with their `open(2)` flags (from
/// `/proc/self/fdinfo`).
fn open_flags_of(path: &Path) -> Vec<u32> {
    let want = std::fs::canonicalize(path).unwrap();
    let mut flags = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap() {
        let e = e.unwrap();
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target != want {
            continue;
        }
        let fd = e.file_name();
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.to_str().unwrap()))
        else {
            continue;
        };
        let octal = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .unwrap()
            .trim();
        flags.push(u32::from_str_radix(octal, 8).unwrap());
    }
    flags
}

/// In `sync` mode the WAL's writes go through an `O_DSYNC` descriptor of the active segment
/// (write and device flush in one operation; one sync counted per write); with
/// `dsync_writes` off no such descriptor exists and every write is followed by `fdatasync`.
/// Either way every acknowledged record comes back on reopen.
#[test]
fn sync_writes_use_an_o_dsync_descriptor_only_when_asked() {
    const O_DSYNC: u32 = 0o10000;
    for dsync_writes in [true, false] {
        let dir = test_dir("wal-dsync");
        let path = dir.path().to_path_buf();
        run(move || async move {
            let o = WalOptions {
                dsync_writes,
                ..opts(64)
            };
            let (wal, _, _) = open(&path, o.clone()).await.unwrap();
            append_synced(&wal, 1..50).await;
            let s = wal.stats();
            assert_eq!(s.records_total, 49);
            assert_eq!(s.syncs_total, s.writes_total, "one sync per write: {s:?}");
            let active = segments(&path).pop().unwrap();
            let flags = open_flags_of(&active);
            assert!(!flags.is_empty(), "no descriptor open on {active:?}");
            let dsync = flags.iter().filter(|f| *f & O_DSYNC != 0).count();
            assert_eq!(dsync, usize::from(dsync_writes), "flags {flags:?}");
            wal.close().await.unwrap();
            drop(wal);
            let (_, got, _) = open(&path, o).await.unwrap();
            assert_eq!(got.len(), 49);
        });
    }
}

#[test]
fn a_log_restarted_at_a_later_index_holds_nothing_before_it_and_survives_reopen() {
    let dir = test_dir("wal-restart");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _, _) = open(&path, opts(64)).await.unwrap();
        append_all(&wal, 1..700).await;
        assert!(segments(&path).len() >= 2);
        assert!(wal.restart_at(0).await.is_err());
        wal.restart_at(5000).await.unwrap();
        assert_eq!(segments(&path).len(), 1);
        assert_eq!((wal.first_index(), wal.last_index()), (5000, 4999));
        assert!(wal.read(1..2, 10).await.is_err());
        append_synced(&wal, 5000..5010).await;
        wal.close().await.unwrap();
        drop(wal);
        let (wal, got, report) = open(&path, opts(64)).await.unwrap();
        assert_eq!(report.first_index, 5000);
        assert_records(&got, 5000..5010);
        // Restarted again, below where it had got to (a snapshot before a longer old log),
        // with nothing appended: the next index survives a reopen.
        wal.restart_at(9000).await.unwrap();
        append_synced(&wal, 9000..9020).await;
        wal.restart_at(9000).await.unwrap();
        wal.close().await.unwrap();
        drop(wal);
        let (wal, got, report) = open(&path, opts(64)).await.unwrap();
        assert!(got.is_empty());
        assert_eq!(report.next_index, 9000);
        assert_eq!(wal.append(b"x".to_vec()).unwrap(), 9000);
    });
}

/// Unlinking a full segment frees its blocks (milliseconds on ext4 for a 16 MiB one): the
/// shard's other tasks run meanwhile, so a prefix drop is seen half done by a task that
/// counts the segments between its own yields.
#[test]
fn dropping_a_prefix_removes_segments_while_other_tasks_run() {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::task::Poll;

    async fn yield_now() {
        let mut yielded = false;
        futures::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    let dir = test_dir("wal-drop-off-thread");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (wal, _, _) = open(&path, opts(64)).await.unwrap();
        append_all(&wal, 1..1500).await;
        let before = segments(&path);
        assert!(before.len() >= 4, "{before:?}");
        let last_first = first_index_of(before.last().unwrap());

        let seen = Rc::new(RefCell::new(Vec::new()));
        let stop = Rc::new(Cell::new(false));
        let observer = glommio::spawn_local({
            let (seen, stop, path) = (seen.clone(), stop.clone(), path.clone());
            async move {
                while !stop.get() {
                    seen.borrow_mut().push(segments(&path).len());
                    yield_now().await;
                }
            }
        });
        assert_eq!(wal.drop_prefix(last_first).await.unwrap(), last_first);
        stop.set(true);
        observer.await;

        assert_eq!(segments(&path).len(), 1);
        let seen = seen.borrow();
        assert!(
            seen.iter().any(|&n| n > 1 && n < before.len()),
            "no task ran between two segments' removals: {seen:?}"
        );
        assert_eq!(wal.stats().segments_deleted_total, before.len() as u64 - 1);
    });
}

/// A segment whose removal fails stays the first: the next drop retries it before any after
/// it, so the files never skip a segment (open would refuse the gap) and every record above
/// the drop point still replays.
#[test]
fn a_failed_segment_removal_is_retried_before_later_segments() {
    use corekv_storage::io::{Fault, FaultInjector, FaultOp};
    use corekv_storage::wal::Wal;

    let dir = test_dir("wal-drop-fails");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let inj = FaultInjector::new(1);
        let (wal, _) = Wal::open(&path, opts(64), Some(inj.clone()), |_| Ok(()))
            .await
            .unwrap();
        append_all(&wal, 1..1500).await;
        let before = segments(&path);
        assert!(before.len() >= 4, "{before:?}");
        let third = first_index_of(&before[2]);
        let last_first = first_index_of(before.last().unwrap());

        // The second removal fails: the first segment went, the second stays the first.
        inj.fail_nth(FaultOp::Remove, 1, Fault::Eio);
        assert!(wal.drop_prefix(third).await.is_err());
        assert_eq!(segments(&path), before[1..].to_vec());
        assert_eq!(wal.first_index(), first_index_of(&before[1]));
        assert_eq!(wal.stats().segments_deleted_total, 1);

        // A later drop takes the failed one first, then the rest.
        assert_eq!(wal.drop_prefix(last_first).await.unwrap(), last_first);
        assert_eq!(segments(&path), before[before.len() - 1..].to_vec());
        assert_eq!(wal.stats().segments_deleted_total, before.len() as u64 - 1);
        wal.close().await.unwrap();
        drop(wal);

        let (_, records, _) = open(&path, opts(64)).await.unwrap();
        assert_records(&records, last_first..1500);
    });
}
