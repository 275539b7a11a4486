//! The merged, visible view of memtables, level-0 tables and levels against a `BTreeMap`
//! model, both directions, at many read points.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Source;
use super::level::LevelIter;
use super::mem::MemIter;
use super::merge::MergeIter;
use super::user::VisibleIter;
use crate::cache::BlockCache;
use crate::io::Io;
use crate::memtable::Memtable;
use crate::sst::builder::{TableBuilder, TableOptions};
use crate::sst::reader::{TableReader, table_path};
use crate::sst::{Entry, EntryKind};
use crate::test_util::{probe, run, test_dir};

type Model = BTreeMap<(Vec<u8>, u64), Entry>;

fn visible(m: &Model, read_seq: u64, now: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    for ((k, _), e) in m {
        if e.seq > read_seq || last.as_ref() == Some(k) {
            continue;
        }
        last = Some(k.clone());
        if !e.as_ref().is_absent_at(now) {
            out.push((k.clone(), e.value.clone()));
        }
    }
    out
}

async fn table(
    dir: &std::path::Path,
    n: u64,
    entries: &[Entry],
    cache: &Rc<BlockCache>,
) -> Rc<TableReader> {
    let opts = TableOptions {
        block_size_bytes: 512,
        ..TableOptions::default()
    };
    let mut b = TableBuilder::create(&Io::default(), dir, n, opts)
        .await
        .unwrap();
    for e in entries {
        b.add(&e.as_ref()).await.unwrap();
    }
    b.finish().await.unwrap();
    TableReader::open(&Io::default(), &table_path(dir, n), n, cache.clone())
        .await
        .unwrap()
}

#[test]
fn merged_scans_match_the_model_in_both_directions() {
    let dir = test_dir("iter-merge");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let seed = 5u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cache = BlockCache::new(1 << 20);
        let mut model = Model::new();
        // Sources: 0,1 memtables; 2,3 L0 tables; 4 level 1 (3 tables); 5 level 2 (2 tables).
        let mut parts: Vec<Vec<Entry>> = vec![Vec::new(); 6];
        let mut seq = 0;
        for _ in 0..4000 {
            seq += 1;
            let k = format!("k{:04}", rng.gen_range(0..600)).into_bytes();
            let kind = match rng.gen_range(0..8) {
                0 => EntryKind::Delete,
                1 => EntryKind::PutTtl,
                _ => EntryKind::Put,
            };
            let e = Entry {
                key: k.clone(),
                seq,
                kind,
                expires_at_ms: if kind == EntryKind::PutTtl {
                    rng.gen_range(1..100)
                } else {
                    0
                },
                value: if kind == EntryKind::Delete {
                    vec![]
                } else {
                    format!("v{seq}").into_bytes()
                },
            };
            model.insert((k, !seq), e.clone());
            parts[rng.gen_range(0..6)].push(e);
        }
        let mems: Vec<Rc<RefCell<Memtable>>> = parts[..2]
            .iter()
            .map(|p| {
                let mut m = Memtable::new();
                for e in p {
                    let v = (e.kind != EntryKind::Delete).then_some(e.value.as_slice());
                    m.insert(&e.key, e.seq, v, e.expires_at_ms, &|_, _| true);
                }
                Rc::new(RefCell::new(m))
            })
            .collect();
        let sorted = |p: &[Entry]| {
            let mut v = p.to_vec();
            v.sort_by(|a, b| a.key.cmp(&b.key).then(b.seq.cmp(&a.seq)));
            v
        };
        let mut number = 1;
        let mut l0 = Vec::new();
        for p in &parts[2..4] {
            l0.push(table(&path, number, &sorted(p), &cache).await);
            number += 1;
        }
        let mut levels = Vec::new();
        for (p, cuts) in [
            (&parts[4], &[&b"k0200"[..], b"k0400"][..]),
            (&parts[5], &[&b"k0300"[..]][..]),
        ] {
            let all = sorted(p);
            let mut tables = Vec::new();
            let mut lo = 0;
            for cut in cuts.iter().map(|c| Some(*c)).chain([None]) {
                let hi = cut.map_or(all.len(), |c| all.partition_point(|e| e.key.as_slice() < c));
                tables.push(table(&path, number, &all[lo..hi], &cache).await);
                number += 1;
                lo = hi;
            }
            levels.push(tables);
        }
        // Level iterators read sequentially (readahead) going forward and through the cache in
        // reverse, so both read modes are exercised.
        let sources = |forward: bool| {
            let mut s: Vec<Source> = mems
                .iter()
                .map(|m| Source::Mem(MemIter::new(m.clone(), forward)))
                .collect();
            s.extend(l0.iter().map(|t| Source::Table(t.iter(false))));
            s.extend(
                levels
                    .iter()
                    .map(|l| Source::Level(LevelIter::new(l.clone(), forward))),
            );
            s
        };
        for round in 0..60 {
            let read_seq = if round == 0 {
                u64::MAX
            } else {
                rng.gen_range(0..=seq)
            };
            let now = rng.gen_range(0..120);
            let want = visible(&model, read_seq, now);
            let start = format!("k{:04}", rng.gen_range(0..650)).into_bytes();
            let limit = rng.gen_range(1..300);
            // Forward from `start`.
            let mut it = VisibleIter::new(MergeIter::new(sources(true), true), read_seq, now);
            it.seek_ge(&start).await.unwrap();
            let mut got = Vec::new();
            while it.valid() && got.len() < limit {
                got.push((it.key().to_vec(), it.value().to_vec()));
                it.next().await.unwrap();
            }
            let exp: Vec<_> = want
                .iter()
                .filter(|(k, _)| *k >= start)
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(
                got, exp,
                "seed {seed} round {round} forward from {start:?} @ {read_seq}"
            );
            // Reverse from below `start` (or from the end).
            let end = (round % 5 != 0).then_some(start.as_slice());
            let mut it = VisibleIter::new(MergeIter::new(sources(false), false), read_seq, now);
            it.seek_lt(end).await.unwrap();
            let mut got = Vec::new();
            while it.valid() && got.len() < limit {
                got.push((it.key().to_vec(), it.value().to_vec()));
                it.next().await.unwrap();
            }
            let exp: Vec<_> = want
                .iter()
                .rev()
                .filter(|(k, _)| end.is_none_or(|e| k.as_slice() < e))
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(
                got, exp,
                "seed {seed} round {round} reverse below {end:?} @ {read_seq}"
            );
        }
    });
}
