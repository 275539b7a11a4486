//! The LSM tree through the engine API: space used after overwrites and deletes, corruption of
//! tables on disk, snapshots across compactions, bloom filters at work, zstd per level,
//! counted write stalls, background work in its task queue (shares following the backlog,
//! progress under a foreground that never waits), the block cache filled by table writes, and
//! replaced tables unlinked by the unlink task (not in place, not after a crash).
//!
//! `COREKV_LONG_TESTS=1` runs the space test at the full size (200 000 keys written five
//! times); the default is 50 000 keys so the test binary stays within seconds.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{run, small_tree, test_dir};
use corekv_storage::io::FaultInjector;
use corekv_storage::sst::Compression;
use corekv_storage::{Engine, Error, Options, ScanRange};

fn key(i: u64) -> Vec<u8> {
    format!("key{:013}", i * 7919 % 1_000_003).into_bytes()
}

fn value(i: u64, round: u64) -> Vec<u8> {
    let mut v = format!("{round:04}-{i:012}-").into_bytes();
    v.resize(100, b'a' + (round % 26) as u8);
    v
}

/// Bytes of the files in `dir` whose names satisfy `f`.
fn bytes_of(dir: &Path, f: impl Fn(&str) -> bool) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| f(&e.file_name().to_string_lossy()))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Bytes of the SSTables in `dir`: the data compaction is responsible for. (The WAL is
/// preallocated and bounded by the memtables; the manifest by `MANIFEST_EDITS_MAX` pages plus
/// one snapshot; both are printed, not asserted.)
fn table_bytes(dir: &Path) -> u64 {
    bytes_of(dir, |n| n.ends_with(".sst"))
}

fn manifest_bytes(dir: &Path) -> u64 {
    bytes_of(dir, |n| n.starts_with("MANIFEST-"))
}

#[test]
fn overwrites_settle_to_at_most_one_and_a_half_times_the_live_data_and_deletes_free_space() {
    let keys: u64 = if common::long_tests() {
        200_000
    } else {
        50_000
    };
    let dir = test_dir("lsm-space");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // Memtables of 1/16 of the live data: level 0 (up to 3 tables before its compaction)
        // then holds at most ~3/16 of it in duplicate, as with large data and 64 MiB memtables.
        let opts = Options {
            memtable_size_bytes_max: (keys as usize * 116 / 16).max(64 << 10),
            ..small_tree()
        };
        let e = Engine::open(&path, opts).await.unwrap();
        for round in 0..5 {
            for i in 0..keys {
                e.put(&key(i), &value(i, round)).await.unwrap();
            }
        }
        e.wait_for_background().await.unwrap();
        let live = keys * (16 + 100);
        let used = table_bytes(&path);
        let st = e.stats();
        println!(
            "{keys} keys x5: live {live} B, tables {used} B ({:.2}x), flushes {}, compactions {} \
             (+{} moves), written by flush {} B, by compaction {} B, stalls {}",
            used as f64 / live as f64,
            st.flushes_total,
            st.compactions_total,
            st.compaction_trivial_moves_total,
            st.flush_bytes_written_total,
            st.compaction_bytes_written_total,
            st.write_stalls_total
        );
        assert!(
            st.flushes_total >= 10 && st.compactions_total >= 3,
            "{st:?}"
        );
        assert!(
            used as f64 <= 1.5 * live as f64,
            "tables hold {used} B for {live} B of live data"
        );
        // Every key reads its last value, through memtables and tables.
        for i in (0..keys).step_by(997) {
            assert_eq!(e.get(&key(i)).await.unwrap(), Some(value(i, 4)));
        }
        // Delete 80% of the keys: the space comes back once compaction has run.
        let deleted = keys * 4 / 5;
        for i in 0..deleted {
            e.delete(&key(i)).await.unwrap();
        }
        // The last deletes are still in the memtable: flush it, then let compaction finish.
        e.flush().await.unwrap();
        e.wait_for_background().await.unwrap();
        let live_after = (keys - deleted) * 116;
        let used_after = table_bytes(&path);
        let st = e.stats();
        println!(
            "levels (files, bytes): {:?} memtable {} B, immutable {}",
            st.levels(),
            st.memtable_bytes,
            st.memtables_immutable
        );
        println!(
            "after deleting {deleted}: live {live_after} B, tables {used_after} B ({:.2}x), \
             manifest {} B",
            used_after as f64 / live_after as f64,
            manifest_bytes(&path)
        );
        assert!(
            (used_after as f64) <= 1.5 * live_after as f64,
            "deleted data still takes {used_after} B for {live_after} B live"
        );
        for i in (0..keys).step_by(991) {
            let want = (i >= deleted).then(|| value(i, 4));
            assert_eq!(e.get(&key(i)).await.unwrap(), want);
        }
        let all = e
            .scan(
                &ScanRange {
                    start: Vec::new(),
                    end: None,
                    limit: 1_000_000,
                    reverse: false,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(all.entries.len() as u64, keys - deleted);
        e.close().await.unwrap();
    });
}

#[test]
fn snapshots_keep_their_versions_through_flushes_and_compactions() {
    let dir = test_dir("lsm-snapshot");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, small_tree()).await.unwrap();
        for i in 0..20_000 {
            e.put(&key(i), &value(i, 0)).await.unwrap();
        }
        let snap = e.snapshot();
        for round in 1..4 {
            for i in 0..20_000 {
                if i % 3 == 0 {
                    e.delete(&key(i)).await.unwrap();
                } else {
                    e.put(&key(i), &value(i, round)).await.unwrap();
                }
            }
        }
        e.wait_for_background().await.unwrap();
        assert!(e.stats().compactions_total > 0);
        for i in (0..20_000).step_by(101) {
            assert_eq!(e.get_at(&key(i), &snap).await.unwrap(), Some(value(i, 0)));
            let now = (i % 3 != 0).then(|| value(i, 3));
            assert_eq!(e.get(&key(i)).await.unwrap(), now);
        }
        let range = ScanRange {
            start: Vec::new(),
            end: None,
            limit: 100_000,
            reverse: true,
        };
        let old = e.scan(&range, Some(&snap)).await.unwrap();
        assert_eq!(old.entries.len(), 20_000);
        drop(snap);
        // With the snapshot gone, a compaction may drop what only it needed.
        e.close().await.unwrap();
    });
}

/// Writes `value(i, round)` to keys `0..keys`.
async fn write_round(e: &Engine, keys: u64, round: u64) {
    for i in 0..keys {
        e.put(&key(i), &value(i, round)).await.unwrap();
    }
}

/// Checks that every seventh of keys `0..keys` holds `value(i, round)`.
async fn check_round(e: &Engine, keys: u64, round: u64) {
    for i in (0..keys).step_by(7) {
        assert_eq!(e.get(&key(i)).await.unwrap(), Some(value(i, round)));
    }
}

#[test]
fn updates_of_a_working_set_that_fits_the_memtable_prune_it_instead_of_flushing() {
    let dir = test_dir("lsm-prune");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // 3000 keys of 100-byte values: one version each fits the 1 MiB memtable, two do not,
        // and each rewrite keeps the version it replaces until a pass drops it.
        let e = Engine::open(&path, small_tree()).await.unwrap();
        let keys: u64 = 3000;
        for round in 0..8 {
            write_round(&e, keys, round).await;
        }
        let s = e.stats();
        assert_eq!(s.flushes_total, 0, "{s:?}");
        assert!(s.memtable_prunes_total > 0, "{s:?}");
        assert!(s.memtable_versions < 2 * keys, "{s:?}");
        check_round(&e, keys, 7).await;
        // A snapshot's versions survive the passes; the ones between it and now do not
        // need to (and with them the memtable fills and flushes as before).
        let snap = e.snapshot();
        for round in 8..14 {
            write_round(&e, keys, round).await;
        }
        check_round(&e, keys, 13).await;
        for i in (0..keys).step_by(7) {
            assert_eq!(e.get_at(&key(i), &snap).await.unwrap(), Some(value(i, 7)));
        }
        let old = e
            .scan(
                &ScanRange {
                    start: Vec::new(),
                    end: None,
                    limit: 100_000,
                    reverse: false,
                },
                Some(&snap),
            )
            .await
            .unwrap();
        assert_eq!(old.entries.len(), keys as usize);
        assert!(
            old.entries
                .iter()
                .all(|(k, v)| v[..4] == *b"0007" && k.starts_with(b"key"))
        );
        e.close().await.unwrap();
    });
}

#[test]
fn a_memtable_that_never_fills_still_rotates_once_its_log_reaches_four_bounds() {
    let dir = test_dir("lsm-log-bound");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // 500 keys rewritten over and over: the memtable (1 MiB bound) never fills, but its
        // log must not grow without end: it rotates, flushes, and its WAL segments go.
        let e = Engine::open(&path, small_tree()).await.unwrap();
        let keys: u64 = 500;
        let mut round = 0;
        while e.stats().wal_write_bytes_total < 10 << 20 {
            write_round(&e, keys, round).await;
            round += 1;
        }
        e.wait_for_background().await.unwrap();
        let s = e.stats();
        assert!(s.memtable_bytes < 1 << 19, "{s:?}");
        assert!(s.flushes_total >= 2, "{s:?}");
        // About 4 MiB of log per memtable (1 MiB segments), not the 10 MiB written.
        assert!(s.wal_segments_live <= 7, "{s:?}");
        check_round(&e, keys, round - 1).await;
        e.close().await.unwrap();
    });
}

fn sst_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_damaged_table_is_reported_with_its_file_and_offset() {
    let dir = test_dir("lsm-corrupt");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let opts = Options {
            block_cache_size_bytes: 1 << 20,
            ..small_tree()
        };
        let e = Engine::open(&path, opts.clone()).await.unwrap();
        for i in 0..30_000 {
            e.put(&key(i), &value(i, 0)).await.unwrap();
        }
        e.wait_for_background().await.unwrap();
        e.close().await.unwrap();
        let tables = sst_files(&path);
        assert!(!tables.is_empty());
        let victim = tables[0].clone();
        let pristine = std::fs::read(&victim).unwrap();
        let size = pristine.len() as u64;

        // A data block (the first page): the engine opens; reads of keys in that block fail
        // with the file and the block's offset, reads elsewhere work.
        flip(&victim, 100);
        let e = Engine::open(&path, opts.clone()).await.unwrap();
        let mut corrupt = 0;
        let mut ok = 0;
        for i in 0..30_000 {
            match e.get(&key(i)).await {
                Ok(v) => {
                    assert_eq!(v, Some(value(i, 0)));
                    ok += 1;
                }
                Err(Error::Corruption { file, offset, .. }) => {
                    assert_eq!((file.as_path(), offset), (victim.as_path(), 0));
                    corrupt += 1;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(corrupt > 0 && ok > 25_000, "{corrupt} corrupt, {ok} ok");
        let scan = e
            .scan(
                &ScanRange {
                    start: Vec::new(),
                    end: None,
                    limit: 100_000,
                    reverse: false,
                },
                None,
            )
            .await;
        assert!(matches!(scan, Err(Error::Corruption { .. })), "{scan:?}");
        e.close().await.unwrap();
        std::fs::write(&victim, &pristine).unwrap();

        // The footer, and the end of the file where the index and filter sit: open fails and
        // names the file.
        for offset in [size - 1, size - 100, size - 4096 - 10] {
            flip(&victim, offset);
            match Engine::open(&path, opts.clone()).await {
                Err(Error::Corruption { file, .. }) => assert_eq!(file, victim),
                other => panic!("damage at {offset}: expected corruption, got {other:?}"),
            }
            std::fs::write(&victim, &pristine).unwrap();
        }
        let e = Engine::open(&path, opts).await.unwrap();
        assert_eq!(e.get(&key(5)).await.unwrap(), Some(value(5, 0)));
        e.close().await.unwrap();
    });
}

#[test]
fn bloom_filters_spare_reads_of_absent_keys() {
    let dir = test_dir("lsm-bloom");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, small_tree()).await.unwrap();
        for i in 0..30_000 {
            e.put(&key(i), &value(i, 0)).await.unwrap();
        }
        e.wait_for_background().await.unwrap();
        let before = e.stats();
        let probes = 20_000;
        for i in 0..probes {
            let k = format!("key{:013}x", i * 37);
            assert_eq!(e.get(k.as_bytes()).await.unwrap(), None);
        }
        let st = e.stats();
        let useful = st.bloom_useful_total - before.bloom_useful_total;
        let false_pos = st.bloom_false_positive_total - before.bloom_false_positive_total;
        let checked = useful + false_pos;
        assert!(checked >= probes, "{st:?}");
        let rate = false_pos as f64 / checked as f64;
        assert!(
            rate < 0.03,
            "false-positive rate {rate:.4} over {checked} filter checks"
        );
        e.close().await.unwrap();
    });
}

#[test]
fn flushed_and_compacted_blocks_are_cached_as_they_are_written_when_enabled() {
    // (the option, `set_block_cache_fill`'s argument): blocks are cached when both are on.
    for (option, on) in [(true, true), (true, false), (false, true)] {
        let fill = option && on;
        let dir = test_dir("lsm-fill-cache");
        let path = dir.path().to_path_buf();
        let misses = run(move || async move {
            let opts = Options {
                block_cache_fill_on_table_write: option,
                block_cache_size_bytes: 32 << 20,
                ..small_tree()
            };
            let e = Engine::open(&path, opts).await.unwrap();
            e.set_block_cache_fill(on);
            for round in 0..2 {
                for i in 0..10_000 {
                    e.put(&key(i), &value(i, round)).await.unwrap();
                }
            }
            e.flush().await.unwrap();
            e.wait_for_background().await.unwrap();
            let s = e.stats();
            assert!(s.flushes_total > 0 && s.compactions_total > 0, "{s:?}");
            let before = s.block_cache_misses_total;
            for i in 0..10_000 {
                assert_eq!(e.get(&key(i)).await.unwrap(), Some(value(i, 1)));
            }
            let misses = e.stats().block_cache_misses_total - before;
            e.close().await.unwrap();
            misses
        });
        if fill {
            assert_eq!(misses, 0, "every block read was cached when written");
        } else {
            assert!(misses > 0, "without the fill, first reads go to the disk");
        }
    }
}

#[test]
fn zstd_chosen_per_level_compresses_only_the_levels_it_names() {
    let dir = test_dir("lsm-zstd");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // Level 0 stored plain, levels 1 and deeper with zstd.
        let opts = Options {
            compression_per_level: vec![Compression::None, Compression::Zstd(3)],
            l0_compaction_trigger_files: 30,
            l0_stop_writes_files: 40,
            ..small_tree()
        };
        let keys = 20_000;
        // Compressible values: a short varying head, then a repeated filler.
        let e = Engine::open(&path, opts.clone()).await.unwrap();
        for i in 0..keys {
            e.put(&key(i), &value(i, 0)).await.unwrap();
        }
        e.flush().await.unwrap();
        e.wait_for_background().await.unwrap();
        let st = e.stats();
        assert!(st.level0_files >= 3, "{st:?}");
        assert_eq!(st.tables_bytes, st.level0_bytes, "{st:?}");
        let raw = keys * (16 + 100);
        assert!(
            st.level0_bytes >= raw,
            "level 0 is not compressed: {} B for {raw} B of keys and values",
            st.level0_bytes
        );
        e.close().await.unwrap();

        // Reopened with a low level-0 trigger, compaction moves everything below level 0,
        // through zstd.
        let e = Engine::open(
            &path,
            Options {
                l0_compaction_trigger_files: 1,
                l0_stop_writes_files: 40,
                ..opts
            },
        )
        .await
        .unwrap();
        e.wait_for_background().await.unwrap();
        let after = e.stats();
        assert_eq!(after.level0_files, 0, "{after:?}");
        assert!(after.compactions_total >= 1, "{after:?}");
        assert!(
            after.tables_bytes * 3 < st.level0_bytes,
            "zstd levels hold {} B, level 0 held {} B",
            after.tables_bytes,
            st.level0_bytes
        );
        for i in (0..keys).step_by(101) {
            assert_eq!(e.get(&key(i)).await.unwrap(), Some(value(i, 0)));
        }
        e.close().await.unwrap();
    });
}

#[test]
fn writes_stall_while_flushes_fall_behind_and_every_stall_is_counted() {
    let dir = test_dir("lsm-stall");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // One immutable memtable at most: in `none` mode a write does not wait for the disk,
        // so a tight loop of writes fills the memtables faster than they are flushed.
        let e = Engine::open(
            &path,
            Options {
                memtable_size_bytes_max: 64 << 10,
                memtables_immutable_max: 1,
                ..small_tree()
            },
        )
        .await
        .unwrap();
        let keys = 10_000;
        for i in 0..keys {
            e.put(&key(i), &value(i, 1)).await.unwrap();
        }
        let st = e.stats();
        assert!(st.write_stalls_total > 0, "{st:?}");
        assert_eq!(
            st.write_stalls_total,
            st.write_stalls_memtables_total
                + st.write_stalls_l0_total
                + st.write_stalls_pending_compaction_total,
            "{st:?}"
        );
        assert!(st.write_stall_us_total > 0, "{st:?}");
        // Memory stayed bounded: the active memtable plus at most one immutable one.
        assert!(st.memtables_immutable <= 1, "{st:?}");
        assert!(st.memtable_bytes <= 64 << 10, "{st:?}");
        for i in (0..keys).step_by(97) {
            assert_eq!(e.get(&key(i)).await.unwrap(), Some(value(i, 1)));
        }
        e.close().await.unwrap();
    });
}

#[test]
fn flushes_and_compactions_run_in_the_background_queue_whose_shares_follow_the_backlog() {
    let dir = test_dir("lsm-queue");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shares = 123;
        let e = Engine::open(
            &path,
            Options {
                background_shares: shares,
                ..small_tree()
            },
        )
        .await
        .unwrap();
        assert_eq!(e.stats().background_shares, shares as u64);
        let mut shares_max = 0;
        for i in 0..30_000 {
            e.put(&key(i), &value(i, 0)).await.unwrap();
            if i % 100 == 0 {
                let st = e.stats();
                shares_max = shares_max.max(st.background_shares);
                assert_eq!(
                    st.background_pending == 0,
                    st.background_backlog_permille == 0
                );
            }
        }
        // Memtables waited for their flush and level 0 reached its trigger meanwhile: the
        // engine asked for more than its idle shares.
        assert!(
            shares_max > shares as u64,
            "shares never rose: {shares_max}"
        );
        e.wait_for_background().await.unwrap();
        let st = e.stats();
        assert!(st.flushes_total > 0 && st.compactions_total > 0, "{st:?}");
        // Idle again: back to the configured shares.
        assert_eq!(st.background_pending, 0, "{st:?}");
        assert_eq!(st.background_shares, shares as u64, "{st:?}");
        // The engine's background queue (not the default one this test runs in) did the work.
        let background = corekv_storage::backlog::background_queue().unwrap();
        let current = glommio::executor().current_task_queue();
        assert_ne!(background, current);
        let runtime = glommio::executor()
            .task_queue_stats(background)
            .unwrap()
            .runtime();
        assert!(
            runtime > std::time::Duration::ZERO,
            "the background queue never ran"
        );
        e.close().await.unwrap();
    });
}

/// While a memtable waits for its flush, the background's shares follow the active
/// memtable's fill (re-read as it passes each sixteenth), and a stalled writer takes them to
/// parity.
#[test]
fn shares_follow_the_active_memtable_while_a_flush_waits() {
    let dir = test_dir("lsm-fill");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(
            &path,
            Options {
                // No check-ins: the flush waits while the loop below writes (until glommio's
                // 100 ms preemption; small memtables fill well before).
                background_poll_interval_us: 0,
                memtable_size_bytes_max: 256 << 10,
                ..small_tree()
            },
        )
        .await
        .unwrap();
        let (mut rose, mut last, mut stalled_shares) = (false, None, 0);
        for i in 0..100_000 {
            let (k, v) = (key(i), value(i, 0));
            let mut put = std::pin::pin!(e.put(&k, &v));
            let first = futures::poll!(put.as_mut());
            if first.is_pending() && e.stats().write_stalls_total > 0 {
                // Stalled on the memtables: the background is at parity while it waits.
                stalled_shares = e.stats().background_shares;
                put.await.unwrap();
                break;
            }
            match first {
                std::task::Poll::Ready(r) => r.unwrap(),
                std::task::Poll::Pending => put.await.unwrap(),
            };
            let st = e.stats();
            if st.memtables_immutable == 1 {
                let now = (st.flushes_total, st.background_backlog_permille);
                if let Some((flushes, permille)) = last {
                    rose |= flushes == now.0 && now.1 > permille;
                }
                last = Some(now);
            }
        }
        assert!(rose, "the backlog did not rise with the active memtable");
        let st = e.stats();
        assert!(st.write_stalls_total > 0, "{st:?}");
        assert_eq!(stalled_shares, 1000, "{st:?}");
        e.close().await.unwrap();
    });
}

/// A foreground that never waits — a loop of gets served from the memtable, on an executor
/// with glommio's default 100 ms preempt timer — still lets a level-0 compaction past its
/// trigger finish within a bounded number of its operations: while background work is
/// pending, the engine's calls sleep on a 1 µs timer about every `background_poll_interval_us`
/// (so the executor reaps the compaction's I/O completions and runs the background queue)
/// and yield at glommio's preemption points.
#[test]
fn a_level0_compaction_completes_under_a_foreground_that_never_waits() {
    let dir = test_dir("lsm-busy-foreground");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // 1 MiB memtables: each batch of 2,000 keys below is one level-0 table.
        let opts = Options {
            l0_compaction_trigger_files: 4,
            ..small_tree()
        };
        let e = Engine::open(&path, opts).await.unwrap();
        // Four flushed memtables: level 0 reaches the trigger with the last flush.
        let per_table = 2_000u64;
        for t in 0..4 {
            for i in t * per_table..(t + 1) * per_table {
                e.put(&key(i), &value(i, t)).await.unwrap();
            }
            e.flush().await.unwrap();
        }
        // Hot keys in the active memtable: gets of them never touch the disk.
        let hot = 8_000..8_100u64;
        for i in hot.clone() {
            e.put(&key(i), &value(i, 9)).await.unwrap();
        }
        let st = e.stats();
        assert_eq!(st.level0_files, 4, "{st:?}");
        assert_eq!(
            st.compactions_total, 0,
            "the compaction ran before the test: {st:?}"
        );
        assert_eq!(st.background_pending, 1, "{st:?}");
        let limit = 2_000_000u64;
        let mut ops = 0u64;
        let mut done = false;
        while ops < limit {
            let i = hot.start + ops % (hot.end - hot.start);
            assert_eq!(e.get(&key(i)).await.unwrap(), Some(value(i, 9)));
            ops += 1;
            if ops % 256 == 0 && e.stats().compactions_total > 0 {
                done = true;
                break;
            }
        }
        let st = e.stats();
        println!("compaction finished after {ops} gets: {st:?}");
        assert!(done, "no compaction after {limit} gets: {st:?}");
        assert!(st.level0_files < 4, "{st:?}");
        for i in (0..4 * per_table).step_by(37) {
            assert_eq!(e.get(&key(i)).await.unwrap(), Some(value(i, i / per_table)));
        }
        e.close().await.unwrap();
    });
}

#[test]
fn obsolete_tables_are_deleted_off_the_shards_thread_once_no_reader_holds_them() {
    let dir = test_dir("lsm-unlink");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, small_tree()).await.unwrap();
        write_round(&e, 20_000, 0).await;
        e.flush().await.unwrap();
        e.wait_for_background().await.unwrap();
        let held = sst_files(&path);
        assert!(!held.is_empty());
        // The iterator holds today's version: its tables outlive the compactions below.
        let it = e.iter(false, None).unwrap();
        for round in 1..4 {
            write_round(&e, 20_000, round).await;
        }
        e.flush().await.unwrap();
        e.wait_for_background().await.unwrap();
        let st = e.stats();
        assert!(st.compactions_total > 0, "{st:?}");
        assert!(held.iter().all(|p| p.exists()), "a held table was deleted");
        // (Tables flushed and compacted meanwhile, which nothing held, are already gone.)
        let deleted = st.tables_deleted_total;
        drop(it);
        // Letting go only queues the removals: the shard's thread makes no unlink call.
        assert!(held.iter().all(|p| p.exists()), "deleted in place");
        e.wait_for_background().await.unwrap();
        let gone = held.iter().filter(|p| !p.exists()).count() as u64;
        assert!(gone > 0, "no held table was compacted away");
        assert_eq!(e.stats().tables_deleted_total, deleted + gone);
        check_round(&e, 20_000, 3).await;
        e.close().await.unwrap();
    });
}

#[test]
fn a_removal_queued_before_a_crash_does_not_land_after_it() {
    let dir = test_dir("lsm-unlink-crash");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let faults = FaultInjector::new(1);
        let e = common::open_with_faults(&path, small_tree(), Some(faults.clone()))
            .await
            .unwrap();
        write_round(&e, 20_000, 0).await;
        e.flush().await.unwrap();
        e.wait_for_background().await.unwrap();
        let held = sst_files(&path);
        let it = e.iter(false, None).unwrap();
        for round in 1..4 {
            write_round(&e, 20_000, round).await;
        }
        e.flush().await.unwrap();
        e.wait_for_background().await.unwrap();
        let deleted = e.stats().tables_deleted_total;
        // The removals are queued, then the machine crashes before the unlink task runs.
        drop(it);
        faults.crash_now();
        e.wait_for_background().await.unwrap();
        faults.settle().await;
        assert!(
            held.iter().all(|p| p.exists()),
            "a table was removed after the crash"
        );
        assert_eq!(e.stats().tables_deleted_total, deleted);
    });
}
