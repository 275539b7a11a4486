//! Cost of the key choosers and the shard hash: the driver must never be the bottleneck.

use std::hint::black_box;

use corekv_bench::ycsb::zipfian::{ScrambledZipfian, ZIPFIAN_CONSTANT, Zipfian};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn generators(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(1);
    let zipf = Zipfian::new(1_000_000, ZIPFIAN_CONSTANT);
    c.bench_function("zipfian_next_1M_items", |b| {
        b.iter(|| black_box(zipf.next(&mut rng)))
    });
    let scrambled = ScrambledZipfian::new(1_000_000);
    c.bench_function("scrambled_zipfian_next", |b| {
        b.iter(|| black_box(scrambled.next(&mut rng)))
    });
    let key = b"user6284781860667377211";
    c.bench_function("shard_for_key_23B_8_shards", |b| {
        b.iter(|| black_box(corekv_proto::shard_for_key(black_box(key), 8)))
    });
}

criterion_group!(benches, generators);
criterion_main!(benches);
