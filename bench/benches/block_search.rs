//! Block lookup: the prefix-array search corekv's blocks use (`BlockRef::lower_bound`) against
//! a plain binary search over whole keys (`lower_bound_binary`), on the block shapes the
//! engine sees: a 4 KiB data block of db_bench keys (16 bytes, distinct 8-byte prefixes), the
//! same with keys sharing a 12-byte prefix (YCSB/tenant style), and a large index block.

use std::hint::black_box;

use corekv_storage::sst::block::{BlockBuilder, BlockKind, BlockRef};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn block(keys: &[Vec<u8>], value_len: usize) -> Vec<u8> {
    let mut b = BlockBuilder::new();
    let v = vec![b'v'; value_len];
    for k in keys {
        b.add(k, &v);
    }
    let mut out = Vec::new();
    b.finish_into(&mut out);
    out
}

/// db_bench's key: the number big-endian in the first 8 bytes, then padding.
fn db_bench_key(n: u64) -> Vec<u8> {
    let mut k = n.to_be_bytes().to_vec();
    k.extend_from_slice(b"00000000");
    k
}

fn shapes() -> Vec<(&'static str, Vec<Vec<u8>>, usize)> {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut sorted = |n: usize, f: &dyn Fn(u64) -> Vec<u8>| {
        let mut v: Vec<Vec<u8>> = (0..n).map(|_| f(rng.gen_range(0..1_000_000))).collect();
        v.sort();
        v.dedup();
        v
    };
    vec![
        ("data_4k_dbbench_keys", sorted(29, &db_bench_key), 108),
        (
            "data_4k_shared_prefix_keys",
            sorted(29, &|n| format!("tenant-0042/{n:08}").into_bytes()),
            100,
        ),
        (
            "index_8k_entries_dbbench_keys",
            sorted(8000, &db_bench_key),
            12,
        ),
    ]
}

fn block_search(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_lower_bound");
    for (name, keys, value_len) in shapes() {
        let data = block(&keys, value_len);
        let b = BlockRef::parse(&data, BlockKind::Plain).unwrap_or_else(|e| panic!("{e}"));
        // Probes: half present keys, half absent ones between them.
        let mut rng = SmallRng::seed_from_u64(2);
        let probes: Vec<Vec<u8>> = (0..1024)
            .map(|i| {
                let k = &keys[rng.gen_range(0..keys.len())];
                if i % 2 == 0 {
                    k.clone()
                } else {
                    [k.as_slice(), b"\x01"].concat()
                }
            })
            .collect();
        for p in &probes {
            assert_eq!(b.lower_bound(p), b.lower_bound_binary(p));
        }
        let mut i = 0;
        g.bench_function(format!("{name}/prefix_array"), |bn| {
            bn.iter(|| {
                i = (i + 1) & 1023;
                black_box(b.lower_bound(black_box(&probes[i])))
            })
        });
        g.bench_function(format!("{name}/binary_search"), |bn| {
            bn.iter(|| {
                i = (i + 1) & 1023;
                black_box(b.lower_bound_binary(black_box(&probes[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, block_search);
criterion_main!(benches);
