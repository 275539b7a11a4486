//! `Engine::iter` (the in-place cursor) against `Engine::scan` and a `BTreeMap` model, both
//! directions, with snapshots, TTLs and tombstones; and an iterator that lives across writes,
//! flushes and compactions: it keeps seeing its point in time, and the table files it reads
//! are not deleted until it is dropped.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{open_with_manual_clock, run, small_tree, test_dir};
use corekv_storage::{Clock, Engine, EngineIter, ScanRange};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Live puts: key -> (value, expiry in ms, 0 = never).
type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

fn visible(m: &Model, now_ms: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter()
        .filter(|(_, (_, exp))| *exp == 0 || now_ms < *exp)
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

/// Half the keys share their first 8 bytes (and more), so the merge's comparisons take both
/// paths: by the 8-byte heads, and by whole keys when the heads are equal.
fn key(i: u64) -> Vec<u8> {
    if i % 2 == 0 {
        format!("k{i:05}").into_bytes()
    } else {
        format!("shared-prefix/{i:05}").into_bytes()
    }
}

/// Every pair from the iterator's position on (at most `limit`).
async fn drain(it: &mut EngineIter, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while it.valid() && out.len() < limit {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next().await.unwrap();
    }
    out
}

async fn apply(e: &Engine, m: &mut Model, rng: &mut ChaCha8Rng, clock: &Clock, ops: usize) {
    for _ in 0..ops {
        let k = key(rng.gen_range(0..3000));
        match rng.gen_range(0..10) {
            0 | 1 => {
                e.delete(&k).await.unwrap();
                m.remove(&k);
            }
            2 => {
                let ttl_ms = rng.gen_range(1..200);
                let v = format!("ttl-{}", rng.r#gen::<u32>()).into_bytes();
                e.put_with_ttl(&k, &v, Duration::from_millis(ttl_ms))
                    .await
                    .unwrap();
                m.insert(k, (v, clock.now_ms() + ttl_ms));
            }
            _ => {
                let mut v = format!("v-{}-", rng.r#gen::<u32>()).into_bytes();
                v.resize(rng.gen_range(8..300), b'x');
                e.put(&k, &v).await.unwrap();
                m.insert(k, (v, 0));
            }
        }
    }
}

/// Checks full and seeked iterations, both ways, against the model and against scan.
async fn check(e: &Engine, want: &[(Vec<u8>, Vec<u8>)], rng: &mut ChaCha8Rng, tag: &str) {
    // Full forward and reverse.
    let mut it = e.iter(false, None).unwrap();
    it.seek_to_first().await.unwrap();
    assert_eq!(drain(&mut it, usize::MAX).await, want, "{tag}: forward");
    let mut it = e.iter(true, None).unwrap();
    it.seek_to_first().await.unwrap();
    let rev: Vec<_> = want.iter().rev().cloned().collect();
    assert_eq!(drain(&mut it, usize::MAX).await, rev, "{tag}: reverse");
    for _ in 0..20 {
        let from = key(rng.gen_range(0..3100));
        let limit = rng.gen_range(1..200);
        let mut it = e.iter(false, None).unwrap();
        it.seek(&from).await.unwrap();
        let got = drain(&mut it, limit).await;
        let exp: Vec<_> = want
            .iter()
            .filter(|(k, _)| *k >= from)
            .take(limit)
            .cloned()
            .collect();
        assert_eq!(got, exp, "{tag}: forward from {from:?}");
        let page = e
            .scan(
                &ScanRange {
                    start: from.clone(),
                    end: None,
                    limit,
                    reverse: false,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(page.entries, exp, "{tag}: scan from {from:?}");
        let mut it = e.iter(true, None).unwrap();
        it.seek(&from).await.unwrap();
        let got = drain(&mut it, limit).await;
        let exp: Vec<_> = want
            .iter()
            .rev()
            .filter(|(k, _)| *k < from)
            .take(limit)
            .cloned()
            .collect();
        assert_eq!(got, exp, "{tag}: reverse below {from:?}");
        let page = e
            .scan(
                &ScanRange {
                    start: Vec::new(),
                    end: Some(from.clone()),
                    limit,
                    reverse: true,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(page.entries, exp, "{tag}: reverse scan below {from:?}");
    }
}

#[test]
fn iterators_match_scan_and_the_model_through_flushes_and_compactions() {
    let dir = test_dir("iter-model");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let seed = 11u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (e, clock) = open_with_manual_clock(&path, small_tree()).await;
        let mut m = Model::new();
        // An unpositioned or exhausted iterator is not valid and stays so.
        let mut it = e.iter(false, None).unwrap();
        assert!(!it.valid());
        it.seek_to_first().await.unwrap();
        assert!(!it.valid() && it.key().is_empty());
        it.next().await.unwrap();
        assert!(!it.valid());
        for round in 0..6 {
            apply(&e, &mut m, &mut rng, &clock, 6000).await;
            if round % 4 != 0 {
                // Tables at several levels (rounds 0 and 4 leave data in memtables too; the
                // key space fits the memtable, so only these flushes make tables).
                e.flush().await.unwrap();
                e.wait_for_background().await.unwrap();
            }
            clock.advance_ms(rng.gen_range(0..120));
            let want = visible(&m, clock.now_ms());
            check(&e, &want, &mut rng, &format!("seed {seed} round {round}")).await;
            // A snapshot's iterator sees the snapshot, not later writes.
            let snap = e.snapshot();
            apply(&e, &mut m, &mut rng, &clock, 500).await;
            let mut it = e.iter(false, Some(&snap)).unwrap();
            it.seek_to_first().await.unwrap();
            assert_eq!(
                drain(&mut it, usize::MAX).await,
                want,
                "seed {seed} round {round}: snapshot"
            );
        }
        let s = e.stats();
        assert!(s.flushes_total > 0 && s.compactions_total > 0, "{s:?}");
        e.close().await.unwrap();
    });
}

fn sst_files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect()
}

#[test]
fn an_iterator_keeps_its_point_in_time_and_its_files_across_compactions() {
    let dir = test_dir("iter-pin");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (e, clock) = open_with_manual_clock(&path, small_tree()).await;
        let mut m = Model::new();
        apply(&e, &mut m, &mut rng, &clock, 12_000).await;
        for reverse in [false, true] {
            e.flush().await.unwrap();
            e.wait_for_background().await.unwrap();
            let files_before = sst_files(&path);
            assert!(!files_before.is_empty());
            let compactions_before = e.stats().compactions_total;
            let want = visible(&m, clock.now_ms());
            let mut it = e.iter(reverse, None).unwrap();
            it.seek_to_first().await.unwrap();
            let mut got = drain(&mut it, want.len() / 3).await;
            // Rewrite everything, flush and compact while the iterator is half-way.
            let mut m2 = m.clone();
            for _ in 0..5 {
                apply(&e, &mut m2, &mut rng, &clock, 12_000).await;
                for i in 0..3000 {
                    if i % 2 == 0 {
                        e.delete(&key(i)).await.unwrap();
                        m2.remove(&key(i));
                    }
                }
                e.flush().await.unwrap();
                e.wait_for_background().await.unwrap();
                if e.stats().compactions_total > compactions_before {
                    break;
                }
            }
            assert!(e.stats().compactions_total > compactions_before);
            // The iterator's tables are all still on disk, though compactions replaced some.
            assert!(
                files_before.iter().all(|f| f.exists()),
                "a table the iterator reads was deleted"
            );
            got.extend(drain(&mut it, usize::MAX).await);
            let exp: Vec<_> = if reverse {
                want.iter().rev().cloned().collect()
            } else {
                want.clone()
            };
            assert_eq!(got, exp, "reverse={reverse}: the iterator's point in time");
            drop(it);
            // Nothing else holds the replaced tables: dropping the iterator deletes them (on
            // the blocking thread, done once the background is idle).
            e.wait_for_background().await.unwrap();
            assert!(
                files_before.iter().any(|f| !f.exists()),
                "no table was released when the iterator was dropped"
            );
            m = m2;
        }
        // Later iterators see the later state.
        let mut it = e.iter(false, None).unwrap();
        it.seek_to_first().await.unwrap();
        assert_eq!(
            drain(&mut it, usize::MAX).await,
            visible(&m, clock.now_ms())
        );
        drop(it);
        e.close().await.unwrap();
    });
}
