//! Cost of the key choosers, record encoding and the shard hash: the driver must never be the
//! bottleneck. `cargo bench -p corekv-bench --bench generators`.

use std::hint::black_box;

use corekv_bench::ycsb::counter::AcknowledgedCounter;
use corekv_bench::ycsb::keys::{KeyChooser, RequestDistribution, key_name};
use corekv_bench::ycsb::latest::SkewedLatest;
use corekv_bench::ycsb::record::{ValuePool, merge_field};
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
    let mut latest = SkewedLatest::new(999_999);
    c.bench_function("latest_next_1M_items", |b| {
        b.iter(|| black_box(latest.next(999_999, &mut rng)))
    });
    // What a read costs the driver before the network: choose a key number, name the key.
    let inserted = AcknowledgedCounter::new(1_000_000);
    let mut chooser = KeyChooser::new(RequestDistribution::Zipfian, 1_000_000, 0);
    let mut key = Vec::with_capacity(32);
    c.bench_function("request_key_zipfian_1M_records", |b| {
        b.iter(|| {
            let n = chooser.next(&inserted, &mut rng);
            key_name(n, &mut key);
            black_box(&key);
        })
    });
    // What an insert costs it: a 10 x 100 B record.
    let pool = ValuePool::new(100, &mut rng);
    let mut record = Vec::with_capacity(2048);
    c.bench_function("encode_record_10x100B", |b| {
        b.iter(|| {
            record.clear();
            pool.encode_new_record(10, &mut rng, &mut record);
            black_box(&record);
        })
    });
    // A one-field update of a one-value record (corekv): decode, replace, encode.
    let mut merged = Vec::with_capacity(2048);
    c.bench_function("merge_field_10x100B", |b| {
        b.iter(|| {
            merged.clear();
            let _ = merge_field(&record, 3, &record[20..120], &mut merged);
            black_box(&merged);
        })
    });
    let key = b"user6284781860667377211";
    c.bench_function("shard_for_key_23B_8_shards", |b| {
        b.iter(|| black_box(corekv_proto::shard_for_key(black_box(key), 8)))
    });
}

criterion_group!(benches, generators);
criterion_main!(benches);
