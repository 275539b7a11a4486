//! Table round trips, corruption and filter tests against a `BTreeMap` model, on a real disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::builder::{TableBuilder, TableMeta, TableOptions};
use super::filter::{expected_fpr, key_hash};
use super::footer::FOOTER_BYTES;
use super::reader::{TableGet, TableIter, TableReader, table_path};
use super::{Compression, Entry, EntryKind};
use crate::cache::BlockCache;
use crate::error::Error;
use crate::io::Io;
use crate::test_util::{damage, probe, run, test_dir};

/// Model: (key, seq descending) -> entry. Keyed by (key, !seq) so iteration order matches.
type Model = BTreeMap<(Vec<u8>, u64), Entry>;

fn random_entries(rng: &mut ChaCha8Rng, keys: usize, big_every: usize) -> Model {
    let mut m = Model::new();
    let mut seq = 1u64;
    for i in 0..keys {
        let key = format!("key-{:08}", i * 7).into_bytes();
        let versions = rng.gen_range(1..=3);
        for _ in 0..versions {
            seq += rng.gen_range(1..5);
            let kind = match rng.gen_range(0..10) {
                0 => EntryKind::Delete,
                1 => EntryKind::PutTtl,
                _ => EntryKind::Put,
            };
            let len = if big_every > 0 && i % big_every == 0 {
                rng.gen_range(5000..20000)
            } else {
                rng.gen_range(0..120)
            };
            let value = if kind == EntryKind::Delete {
                Vec::new()
            } else {
                (0..len).map(|_| rng.r#gen::<u8>()).collect()
            };
            let e = Entry {
                key: key.clone(),
                seq,
                kind,
                expires_at_ms: if kind == EntryKind::PutTtl {
                    seq * 1000
                } else {
                    0
                },
                value,
            };
            m.insert((key.clone(), !seq), e);
        }
    }
    m
}

async fn build(dir: &Path, number: u64, model: &Model, opts: TableOptions) -> TableMeta {
    let mut b = TableBuilder::create(&Io::default(), dir, number, opts)
        .await
        .unwrap();
    for e in model.values() {
        b.add(&e.as_ref()).await.unwrap();
    }
    b.finish().await.unwrap()
}

/// The model's answer for a point read of `key` at `read_seq`.
fn model_get(m: &Model, key: &[u8], read_seq: u64) -> Option<Entry> {
    m.range((key.to_vec(), !read_seq)..=(key.to_vec(), u64::MAX))
        .next()
        .map(|(_, e)| e.clone())
}

async fn collect(it: &mut TableIter, forward: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    while it.valid() {
        out.push(it.entry().to_owned());
        if forward {
            it.next().await.unwrap();
        } else {
            it.prev().await.unwrap();
        }
    }
    out
}

async fn check_table(t: &Rc<TableReader>, model: &Model, rng: &mut ChaCha8Rng) {
    let all: Vec<Entry> = model.values().cloned().collect();
    // Whole scans, both directions, cached and sequential.
    for sequential in [false, true] {
        let mut it = t.iter(sequential);
        it.seek_to_first().await.unwrap();
        assert_eq!(collect(&mut it, true).await, all);
        let mut it = t.iter(sequential);
        it.seek_to_last().await.unwrap();
        let mut rev = collect(&mut it, false).await;
        rev.reverse();
        assert_eq!(rev, all);
    }
    let max_seq = model.values().map(|e| e.seq).max().unwrap();
    for _ in 0..300 {
        let i = rng.gen_range(0..model.len() / 2 + 2) * 7;
        let probe = match rng.gen_range(0..3) {
            0 => format!("key-{i:08}").into_bytes(),
            1 => format!("key-{i:08}x").into_bytes(),
            _ => format!("key-{:07}", i / 10).into_bytes(),
        };
        let read_seq = rng.gen_range(0..=max_seq + 1);
        let want = model_get(model, &probe, read_seq);
        let got = t.get(&probe, key_hash(&probe), read_seq).await.unwrap();
        match (&want, got) {
            (Some(w), TableGet::Found(g)) => assert_eq!(*w, g),
            (None, TableGet::NotFound | TableGet::FilteredOut) => {}
            (w, g) => panic!("get {probe:?}@{read_seq}: want {w:?}, got {g:?}"),
        }
        // seek_ge / seek_lt against the model.
        let mut it = t.iter(false);
        it.seek_ge(&probe).await.unwrap();
        let want_ge = model
            .range((probe.clone(), 0)..)
            .next()
            .map(|(_, e)| e.clone());
        assert_eq!(
            it.valid().then(|| it.entry().to_owned()),
            want_ge,
            "seek_ge {probe:?}"
        );
        // The synchronous seek (blocks cached: the seek above just read them) lands on the
        // same entry, and then moves on like the asynchronous one.
        let mut cached = t.iter(false);
        t.prefetch_block_data(t.seek_block_index(&probe));
        assert!(cached.seek_ge_cached(&probe), "seek_ge_cached {probe:?}");
        assert_eq!(
            cached.valid().then(|| cached.entry().to_owned()),
            want_ge,
            "seek_ge_cached {probe:?}"
        );
        if cached.valid() {
            cached.next().await.unwrap();
            it.next().await.unwrap();
            assert_eq!(
                cached.valid().then(|| cached.entry().to_owned()),
                it.valid().then(|| it.entry().to_owned()),
                "after seek_ge_cached {probe:?}"
            );
        }
        let mut it = t.iter(false);
        it.seek_lt(&probe).await.unwrap();
        let want_lt = model
            .range(..(probe.clone(), 0))
            .next_back()
            .map(|(_, e)| e.clone());
        assert_eq!(
            it.valid().then(|| it.entry().to_owned()),
            want_lt,
            "seek_lt {probe:?}"
        );
    }
}

#[test]
fn tables_round_trip_with_every_option() {
    let dir = test_dir("sst-roundtrip");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let cache = BlockCache::new(1 << 20);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let cases = [
            (TableOptions::default(), 0),
            (TableOptions::default(), 37),
            (
                TableOptions {
                    block_size_bytes: 256,
                    bloom_bits_per_key: 4,
                    compression: Compression::None,
                },
                50,
            ),
            (
                TableOptions {
                    block_size_bytes: 8192,
                    bloom_bits_per_key: 10,
                    compression: Compression::Zstd(3),
                },
                41,
            ),
            (
                TableOptions {
                    block_size_bytes: 1000,
                    compression: Compression::Zstd(1),
                    ..TableOptions::default()
                },
                0,
            ),
        ];
        for (n, (opts, big_every)) in cases.into_iter().enumerate() {
            let model = random_entries(&mut rng, 1500, big_every);
            let number = 10 + n as u64;
            let meta = build(&path, number, &model, opts).await;
            assert_eq!(meta.entries, model.len() as u64);
            assert_eq!(meta.smallest, model.keys().next().unwrap().0);
            assert_eq!(meta.largest, model.keys().next_back().unwrap().0);
            assert_eq!(meta.size_bytes % 4096, 0);
            let t = TableReader::open(
                &Io::default(),
                &table_path(&path, number),
                number,
                cache.clone(),
            )
            .await
            .unwrap();
            assert_eq!(t.size_bytes(), meta.size_bytes);
            check_table(&t, &model, &mut rng).await;
        }
        // A table of one huge entry (value far larger than a block).
        let mut model = Model::new();
        let big = Entry {
            key: b"huge".to_vec(),
            seq: 5,
            kind: EntryKind::Put,
            expires_at_ms: 0,
            value: vec![0xab; 3 << 20],
        };
        model.insert((big.key.clone(), !5), big.clone());
        build(&path, 99, &model, TableOptions::default()).await;
        let t = TableReader::open(&Io::default(), &table_path(&path, 99), 99, cache.clone())
            .await
            .unwrap();
        assert_eq!(
            t.get(b"huge", key_hash(b"huge"), 9).await.unwrap(),
            TableGet::Found(big)
        );
        // Compression makes repetitive data smaller on disk.
        let mut model = Model::new();
        for i in 0..5000u64 {
            let key = format!("k{i:06}").into_bytes();
            let e = Entry {
                key: key.clone(),
                seq: i + 1,
                kind: EntryKind::Put,
                expires_at_ms: 0,
                value: vec![b'x'; 100],
            };
            model.insert((key, !(i + 1)), e);
        }
        let plain = build(&path, 100, &model, TableOptions::default()).await;
        let zstd = build(
            &path,
            101,
            &model,
            TableOptions {
                compression: Compression::Zstd(3),
                ..TableOptions::default()
            },
        )
        .await;
        assert!(
            zstd.size_bytes * 3 < plain.size_bytes,
            "{} vs {}",
            zstd.size_bytes,
            plain.size_bytes
        );
    });
}

#[test]
fn builder_rejects_out_of_order_entries_and_empty_tables() {
    let dir = test_dir("sst-order");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let e = |k: &'static [u8], seq| Entry {
            key: k.to_vec(),
            seq,
            kind: EntryKind::Put,
            expires_at_ms: 0,
            value: vec![],
        };
        let mut b = TableBuilder::create(&Io::default(), &path, 1, TableOptions::default())
            .await
            .unwrap();
        b.add(&e(b"b", 5).as_ref()).await.unwrap();
        assert!(matches!(
            b.add(&e(b"a", 6).as_ref()).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            b.add(&e(b"b", 7).as_ref()).await,
            Err(Error::InvalidArgument(_))
        ));
        b.add(&e(b"b", 4).as_ref()).await.unwrap();
        b.abandon().await.unwrap();
        assert!(!table_path(&path, 1).exists());
        let b = TableBuilder::create(&Io::default(), &path, 2, TableOptions::default())
            .await
            .unwrap();
        assert!(matches!(b.finish().await, Err(Error::InvalidArgument(_))));
    });
}

fn expect_corruption<T: std::fmt::Debug>(r: crate::error::Result<T>, file: &Path, offset: u64) {
    match r {
        Err(Error::Corruption {
            file: f, offset: o, ..
        }) => {
            assert_eq!((f.as_path(), o), (file, offset));
        }
        other => panic!("expected corruption at {offset} in {file:?}, got {other:?}"),
    }
}

#[test]
fn a_damaged_byte_anywhere_is_reported_with_file_and_offset() {
    let dir = test_dir("sst-corrupt");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let model = random_entries(&mut rng, 2000, 0);
        let meta = build(&path, 1, &model, TableOptions::default()).await;
        let file = table_path(&path, 1);
        let pristine = std::fs::read(&file).unwrap();
        let restore = || std::fs::write(&file, &pristine).unwrap();
        let footer = {
            let t = TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20))
                .await
                .unwrap();
            t.footer_for_tests()
        };
        let size = meta.size_bytes;
        // Footer: any byte.
        for off in [size - FOOTER_BYTES as u64, size - 60, size - 1] {
            damage(&file, off, 0x20);
            expect_corruption(
                TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20)).await,
                &file,
                size - FOOTER_BYTES as u64,
            );
            restore();
        }
        // Index, filter, props: open fails naming the block.
        for (what, off, len) in [
            ("index", footer.index_offset, footer.index_size),
            ("filter", footer.filter_offset, footer.filter_size),
            ("props", footer.props_offset, footer.props_size),
        ] {
            for pos in [0, u64::from(len) / 2, u64::from(len) - 1] {
                damage(&file, off + pos, 0x01);
                let r = TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20)).await;
                assert!(r.is_err(), "{what} damage at +{pos} not detected");
                expect_corruption(r, &file, off);
                restore();
            }
        }
        // Data blocks: the table opens; reads touching the block fail, others work.
        let keys: Vec<&Vec<u8>> = model.keys().map(|(k, _)| k).collect();
        for _ in 0..20 {
            let k = keys[rng.gen_range(0..keys.len())].clone();
            let t = TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20))
                .await
                .unwrap();
            let h = t.block_for_tests(&k);
            let block_off = h.offset;
            drop(t);
            let at = block_off + rng.gen_range(0..u64::from(h.size));
            damage(&file, at, 1 << rng.gen_range(0..8));
            let t = TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20))
                .await
                .unwrap();
            expect_corruption(t.get(&k, key_hash(&k), u64::MAX).await, &file, block_off);
            let mut it = t.iter(false);
            it.seek_ge(&k).await.map(|_| ()).map_or_else(
                |e| assert!(matches!(e, Error::Corruption { offset, .. } if offset == block_off)),
                |()| panic!("seek into a damaged block succeeded"),
            );
            // A full scan stops with the same error, in both read modes.
            for sequential in [false, true] {
                let mut it = t.iter(sequential);
                let mut r = it.seek_to_first().await;
                while r.is_ok() && it.valid() {
                    r = it.next().await;
                }
                expect_corruption(r, &file, block_off);
            }
            drop(t);
            restore();
        }
        // Truncated file.
        std::fs::write(&file, &pristine[..pristine.len() - 4096]).unwrap();
        assert!(matches!(
            TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20)).await,
            Err(Error::Corruption { .. })
        ));
        restore();
        // Opened under the wrong number.
        expect_corruption(
            TableReader::open(&Io::default(), &file, 2, BlockCache::new(1 << 20)).await,
            &file,
            size - FOOTER_BYTES as u64,
        );
    });
}

#[test]
fn table_filter_false_positive_rate_is_near_configured() {
    let dir = test_dir("sst-bloom");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let mut model = Model::new();
        for i in 0..20_000u64 {
            let key = format!("present-{i:08}").into_bytes();
            let e = Entry {
                key: key.clone(),
                seq: i + 1,
                kind: EntryKind::Put,
                expires_at_ms: 0,
                value: b"v".to_vec(),
            };
            model.insert((key, !(i + 1)), e);
        }
        let opts = TableOptions {
            bloom_bits_per_key: 10,
            ..TableOptions::default()
        };
        build(&path, 1, &model, opts).await;
        let t = TableReader::open(
            &Io::default(),
            &table_path(&path, 1),
            1,
            BlockCache::new(4 << 20),
        )
        .await
        .unwrap();
        let (mut fp, mut filtered) = (0u64, 0u64);
        let probes = 100_000u64;
        for i in 0..probes {
            // Absent keys inside the table's key range (so the range check does not answer).
            let k = format!("present-{:08}~{i}", i % 20_000).into_bytes();
            match t.get(&k, key_hash(&k), u64::MAX).await.unwrap() {
                TableGet::FilteredOut => filtered += 1,
                TableGet::NotFound => fp += 1,
                TableGet::Found(e) => panic!("found absent key {e:?}"),
            }
        }
        assert_eq!(fp + filtered, probes);
        let measured = fp as f64 / probes as f64;
        let expected = expected_fpr(10);
        assert!(
            (measured - expected).abs() < expected * 0.3,
            "measured {measured:.4}, expected {expected:.4}"
        );
    });
}

/// First keys of three different data blocks of `t` (keys of `model`).
fn keys_in_three_blocks(t: &TableReader, model: &Model) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut last = None;
    for (k, _) in model.keys() {
        let off = t.block_for_tests(k).offset;
        if last != Some(off) {
            last = Some(off);
            keys.push(k.clone());
            if keys.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(keys.len(), 3, "the table needs three data blocks");
    keys
}

#[test]
fn direct_block_handles_follow_the_cache_and_die_with_eviction() {
    let dir = test_dir("sst-handles");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let model = random_entries(&mut rng, 400, 0);
        let opts = TableOptions {
            block_size_bytes: 1000,
            compression: Compression::None,
            ..TableOptions::default()
        };
        build(&path, 1, &model, opts).await;
        let file = table_path(&path, 1);
        let pinned = {
            let cache = BlockCache::new(4 << 20);
            let _t = TableReader::open(&Io::default(), &file, 1, cache.clone())
                .await
                .unwrap();
            cache.counters().pinned_bytes as usize
        };
        // Room for exactly two data blocks (each charged one page).
        let cache = BlockCache::new(pinned + 2 * 4096);
        let t = TableReader::open(&Io::default(), &file, 1, cache.clone())
            .await
            .unwrap();
        let keys = keys_in_three_blocks(&t, &model);
        let get = |k: &Vec<u8>| {
            let t = t.clone();
            let k = k.clone();
            async move {
                match t.get(&k, key_hash(&k), u64::MAX).await.unwrap() {
                    TableGet::Found(e) => assert_eq!(e.key, k),
                    other => panic!("{k:?}: {other:?}"),
                }
            }
        };
        let hm = |c: &BlockCache| {
            let c = c.counters();
            (c.hits, c.misses)
        };
        get(&keys[0]).await;
        get(&keys[1]).await;
        assert_eq!(hm(&cache), (0, 2));
        // Block 0 again, through the table's handle: a hit that also marks it for CLOCK.
        get(&keys[0]).await;
        assert_eq!(hm(&cache), (1, 2));
        // A third block evicts block 1 (unreferenced), not block 0 (referenced by the hit).
        get(&keys[2]).await;
        assert_eq!(hm(&cache), (1, 3));
        let c = cache.counters();
        assert_eq!((c.evictions, c.blocks), (1, 2), "{c:?}");
        assert!(c.used_bytes as usize <= 2 * 4096, "{c:?}");
        get(&keys[0]).await;
        assert_eq!(hm(&cache), (2, 3));
        // Block 1's handle died with its eviction: read from disk again.
        get(&keys[1]).await;
        assert_eq!(hm(&cache), (2, 4));

        // A block an iterator holds is reached through the handle even if the cache's map
        // lost it ...
        let mut it = t.iter(false);
        it.seek_ge(&keys[2]).await.unwrap();
        assert!(it.valid());
        let (h0, m0) = hm(&cache);
        cache.remove((1, t.block_for_tests(&keys[2]).offset));
        get(&keys[2]).await;
        assert_eq!(hm(&cache), (h0 + 1, m0));
        // ... but never after the table's blocks were evicted (the table is being deleted).
        t.evict_cached_blocks();
        assert_eq!(cache.counters().blocks, 0);
        get(&keys[2]).await;
        assert_eq!(hm(&cache), (h0 + 1, m0 + 1));
        assert_eq!(it.entry().key, keys[2].as_slice());
        drop(it);
        // Closing the table returns its pinned bytes (index, filter and block handles).
        drop(t);
        let c = cache.counters();
        assert_eq!(c.pinned_bytes, 0, "{c:?}");
        assert!(c.used_bytes as usize <= 2 * 4096, "{c:?}");
    });
}

/// A table opened after its writer (a flush or compaction) cached its blocks links its direct
/// handles to them, so its first reader of each block skips the cache's map.
#[test]
fn a_table_opened_after_its_writer_cached_its_blocks_is_linked_to_them() {
    let dir = test_dir("sst-linked");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let model = random_entries(&mut rng, 400, 0);
        let opts = TableOptions {
            block_size_bytes: 1000,
            compression: Compression::None,
            ..TableOptions::default()
        };
        let cache = BlockCache::new(4 << 20);
        let mut b = TableBuilder::create(&Io::default(), &path, 1, opts)
            .await
            .unwrap();
        b.fill_cache(cache.clone());
        for e in model.values() {
            b.add(&e.as_ref()).await.unwrap();
        }
        b.finish().await.unwrap();
        let file = table_path(&path, 1);
        let t = TableReader::open(&Io::default(), &file, 1, cache.clone())
            .await
            .unwrap();
        let (linked, blocks) = t.linked_blocks_for_tests();
        assert!(blocks > 3, "{blocks} blocks");
        assert_eq!(linked, blocks);
        // Opening counts no hit; reads through the links count hits, never a miss.
        assert_eq!(cache.counters().hits, 0);
        check_table(&t, &model, &mut rng).await;
        assert_eq!(cache.counters().misses, 0);
        // Opened with another cache (a restart), nothing is linked.
        let t = TableReader::open(&Io::default(), &file, 1, BlockCache::new(4 << 20))
            .await
            .unwrap();
        assert_eq!(t.linked_blocks_for_tests(), (0, blocks));
    });
}

/// A compressed data block whose stated uncompressed length is larger than any block (with a
/// valid checksum, as a crafted file would have) is corruption, refused before allocating.
#[test]
fn a_compressed_block_claiming_more_than_a_block_holds_is_corruption() {
    let dir = test_dir("sst-zstd-len");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut model = random_entries(&mut rng, 300, 0);
        // Compressible values, so that data blocks are stored compressed.
        for e in model.values_mut() {
            if e.kind != EntryKind::Delete {
                e.value = vec![b'z'; 100];
            }
        }
        let opts = TableOptions {
            compression: Compression::Zstd(3),
            ..TableOptions::default()
        };
        build(&path, 1, &model, opts).await;
        let file = table_path(&path, 1);
        let k = model.keys().next().unwrap().0.clone();
        let h = {
            let t = TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20))
                .await
                .unwrap();
            t.block_for_tests(&k)
        };
        let mut bytes = std::fs::read(&file).unwrap();
        let (start, end) = (h.offset as usize, h.offset as usize + h.size as usize);
        let code_at = end - super::BLOCK_TRAILER_BYTES;
        assert_eq!(bytes[code_at], 1, "the block is stored compressed");
        for claimed in [super::DATA_BLOCK_BYTES_MAX as u32 + 1, u32::MAX] {
            bytes[start..start + 4].copy_from_slice(&claimed.to_le_bytes());
            let crc = crc32c::crc32c(&bytes[start..=code_at]);
            bytes[code_at + 1..end].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&file, &bytes).unwrap();
            let t = TableReader::open(&Io::default(), &file, 1, BlockCache::new(1 << 20))
                .await
                .unwrap();
            let r = t.get(&k, key_hash(&k), u64::MAX).await;
            match &r {
                Err(Error::Corruption { detail, .. }) => {
                    assert!(detail.contains("claims"), "{detail}")
                }
                other => panic!("expected corruption, got {other:?}"),
            }
            expect_corruption(r, &file, h.offset);
        }
    });
}
