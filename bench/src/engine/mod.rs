//! `corekv-bench engine`: db_bench's micro-benchmarks against one corekv storage engine (one
//! shard) in-process, with db_bench's flags and output lines, so the same command can be given
//! to RocksDB's `db_bench` (`../shared/peers/rocksdb.sh`) and the lines read side by side.
//!
//! - Seeds: `--seed`, plus the benchmark's position and the task number, so each benchmark
//!   draws fresh random keys, as db_bench does.
//! - Keys: db_bench's: the key number as 8 big-endian bytes, padded with `'0'` to `--key_size`.
//!   `fillseq` writes 0, 1, 2, ...; the random benchmarks draw from `[0, num)`.
//! - Values: `--value_size` bytes sliced from a random buffer.
//! - `--threads` = concurrent tasks on the engine's one executor, each awaiting its own
//!   operations (with `--sync=1` they share `fdatasync`s through group commit); `--num` and
//!   `--reads` are per task, as in db_bench.
//! - Benchmarks whose name starts with `fill` start from an empty database, as in db_bench.
//! - After each db_bench line, a detail line: latency percentiles (hdrhistogram) and WAL
//!   group-commit sizes.

pub mod args;
pub mod report;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use corekv_storage::{Engine, Options};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::Error;
pub use args::EngineArgs;
pub use report::BenchResult;

/// glommio's registered I/O memory for the engine's executor.
const IO_MEMORY_BYTES: usize = 16 << 20;
/// readseq entries per latency sample (and per `yield_if_needed`).
const READSEQ_BATCH_ENTRIES: u64 = 1024;

/// Runs the benchmarks in order, printing each result as it completes.
pub fn run(args: &EngineArgs) -> Result<Vec<BenchResult>, Error> {
    args.validate().map_err(Error::InvalidOption)?;
    let (dir, temporary) = match &args.db {
        Some(d) => (d.clone(), false),
        // /var/tmp, not /tmp: it must be a real disk for O_DIRECT, never tmpfs.
        None => (
            PathBuf::from("/var/tmp").join(format!("corekv-bench-engine-{}", std::process::id())),
            true,
        ),
    };
    println!(
        "# corekv-bench engine: keys {} bytes, values {} bytes, num {} per task, reads {} per \
         task, tasks {}, durability {}, db {}, transparent huge pages {}",
        args.key_size,
        args.value_size,
        args.num,
        args.reads(),
        args.threads,
        args.durability(),
        dir.display(),
        match corekv_server::hugepages::transparent_huge_pages_disabled() {
            Ok(true) => "off",
            Ok(false) => "allowed",
            Err(_) => "unknown",
        }
    );
    let placement = match args.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let a = args.clone();
    let d = dir.clone();
    let result = LocalExecutorBuilder::new(placement)
        .name("corekv-bench-engine")
        .io_memory(IO_MEMORY_BYTES)
        // The WAL writer is a task on this executor, and glommio only preempts a busy task
        // (making it yield at `yield_if_needed`) on this timer: with the 100 ms default, a task
        // looping over puts keeps the writer's completions waiting up to that long (in `none`
        // mode the WAL then lags, bounded by wal_pending_bytes_max).
        .preempt_timer(std::time::Duration::from_micros(args.preempt_timer_us))
        .spawn(move || async move { run_all(&a, &d).await })
        .map_err(|e| Error::Thread {
            thread: 0,
            reason: e.to_string(),
        })?
        .join()
        .map_err(|e| Error::Thread {
            thread: 0,
            reason: format!("{e:?}"),
        })?;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn storage_error(e: corekv_storage::Error) -> Error {
    Error::Engine(e.to_string())
}

async fn open(args: &EngineArgs, dir: &Path, fresh: bool) -> Result<Engine, Error> {
    if fresh && dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::Output {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let mut options = Options {
        durability: args.durability(),
        ..Options::default()
    };
    if let Some(b) = args.write_buffer_size {
        options.memtable_size_bytes_max = b;
    }
    if let Some(b) = args.cache_size {
        options.block_cache_size_bytes = b;
    }
    if let Some(b) = args.bloom_bits {
        options.bloom_bits_per_key = b;
    }
    if let Some(b) = args.wal_segment_size_bytes {
        options.wal_segment_size_bytes = b;
    }
    if let Some(b) = args.wal_write_bytes_max {
        options.wal_write_bytes_max = b;
    }
    if let Some(b) = args.wal_pending_bytes_max {
        options.wal_pending_bytes_max = b;
    }
    if let Some(d) = args.wal_dsync {
        options.wal_dsync_writes = d != 0;
    }
    Engine::open(dir, options).await.map_err(storage_error)
}

async fn run_all(args: &EngineArgs, dir: &Path) -> Result<Vec<BenchResult>, Error> {
    let values = Rc::new(ValueSource::new(args.value_size, args.seed));
    let mut engine: Option<Engine> = None;
    let mut results = Vec::new();
    for (position, name) in args.benchmarks.iter().enumerate() {
        let fresh = name.starts_with("fill");
        if fresh || engine.is_none() {
            if let Some(e) = engine.take() {
                e.close().await.map_err(storage_error)?;
            }
            engine = Some(open(args, dir, fresh).await?);
        }
        let Some(e) = engine.as_ref() else {
            continue;
        };
        if matches!(name.as_str(), "flush" | "waitforcompaction") {
            let start = Instant::now();
            if name == "flush" {
                e.flush().await.map_err(storage_error)?;
            } else {
                e.wait_for_background().await.map_err(storage_error)?;
            }
            println!(
                "{:<12} : done in {:.3} seconds",
                name,
                start.elapsed().as_secs_f64()
            );
            println!("{}", report::engine_line(name, &e.stats()));
            continue;
        }
        let r = run_one(e, name, position as u64, args, &values).await?;
        println!("{}", r.db_bench_line());
        println!("{}", r.detail_line());
        println!("{}", report::engine_line(name, &e.stats()));
        results.push(r);
    }
    if let Some(e) = engine.take() {
        e.close().await.map_err(storage_error)?;
    }
    Ok(results)
}

/// db_bench's key for number `n`: 8 big-endian bytes, then '0's.
fn fill_key(key: &mut [u8], n: u64) {
    key[..8].copy_from_slice(&n.to_be_bytes());
    key[8..].fill(b'0');
}

/// Values sliced from a random buffer, as db_bench's RandomGenerator does.
struct ValueSource {
    data: Vec<u8>,
    size: usize,
}

impl ValueSource {
    fn new(size: usize, seed: u64) -> Self {
        let len = (1 << 20).max(size * 4);
        let mut data = vec![0u8; len];
        SmallRng::seed_from_u64(seed ^ 0x5eed).fill_bytes(&mut data);
        ValueSource { data, size }
    }

    fn value(&self, n: u64) -> &[u8] {
        let room = self.data.len() - self.size;
        let at = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (room as u64 + 1)) as usize;
        &self.data[at..at + self.size]
    }
}

/// What one task measured.
struct TaskResult {
    ops: u64,
    bytes: u64,
    found: u64,
    looked_up: u64,
    secs: f64,
    latency_ns: Histogram<u64>,
}

/// 1 ns .. 100 s at 3 significant digits.
fn histogram() -> Result<Histogram<u64>, Error> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .map_err(|e| Error::InvalidOption(format!("latency histogram: {e}")))
}

async fn run_one(
    engine: &Engine,
    name: &str,
    position: u64,
    args: &EngineArgs,
    values: &Rc<ValueSource>,
) -> Result<BenchResult, Error> {
    let before = engine.stats();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.threads);
    for t in 0..args.threads {
        let engine = engine.clone();
        let values = values.clone();
        let name = name.to_string();
        let args = args.clone();
        // As in db_bench, every benchmark's tasks draw from fresh seeds: reads do not
        // replay the keys the fill wrote.
        let seed = args
            .seed
            .wrapping_add(position.wrapping_mul(1_000_003))
            .wrapping_add(t as u64);
        tasks.push(glommio::spawn_local(async move {
            run_task(&engine, &name, &args, t as u64, seed, &values).await
        }));
    }
    let mut total = TaskResult {
        ops: 0,
        bytes: 0,
        found: 0,
        looked_up: 0,
        secs: 0.0,
        latency_ns: histogram()?,
    };
    for t in tasks {
        let r = t.await?;
        total.ops += r.ops;
        total.bytes += r.bytes;
        total.found += r.found;
        total.looked_up += r.looked_up;
        total.secs += r.secs;
        let _ = total.latency_ns.add(&r.latency_ns);
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let after = engine.stats();
    let groups = |s: &corekv_storage::Stats| {
        [
            s.wal_group_records_1_total,
            s.wal_group_records_2_3_total,
            s.wal_group_records_4_7_total,
            s.wal_group_records_8_15_total,
            s.wal_group_records_16_31_total,
            s.wal_group_records_32_plus_total,
        ]
    };
    let (g0, g1) = (groups(&before), groups(&after));
    let mut wal_groups = [0u64; 6];
    for i in 0..6 {
        wal_groups[i] = g1[i] - g0[i];
    }
    let reads = matches!(name, "readrandom" | "seekrandom");
    Ok(BenchResult {
        name: name.to_string(),
        ops: total.ops,
        elapsed_secs,
        task_secs_sum: total.secs,
        bytes: total.bytes,
        found: reads.then_some((total.found, total.looked_up)),
        latency_ns: total.latency_ns,
        wal_records: after.wal_records_total - before.wal_records_total,
        wal_writes: after.wal_writes_total - before.wal_writes_total,
        wal_syncs: after.wal_syncs_total - before.wal_syncs_total,
        wal_group_max: after.wal_group_records_max,
        wal_groups,
    })
}

async fn run_task(
    engine: &Engine,
    name: &str,
    args: &EngineArgs,
    task: u64,
    seed: u64,
    values: &ValueSource,
) -> Result<TaskResult, Error> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut key = vec![0u8; args.key_size];
    let mut r = TaskResult {
        ops: 0,
        bytes: 0,
        found: 0,
        looked_up: 0,
        secs: 0.0,
        latency_ns: histogram()?,
    };
    let start = Instant::now();
    match name {
        "fillseq" | "fillrandom" | "overwrite" => {
            let seq = name == "fillseq";
            for i in 0..args.num {
                let n = if seq { i } else { rng.gen_range(0..args.num) };
                fill_key(&mut key, n);
                let value = values.value(i ^ (task << 40));
                let t0 = Instant::now();
                engine.put(&key, value).await.map_err(storage_error)?;
                let _ = r.latency_ns.record(t0.elapsed().as_nanos() as u64);
                r.ops += 1;
                r.bytes += (key.len() + value.len()) as u64;
                if i % 64 == 63 {
                    glommio::yield_if_needed().await;
                }
            }
        }
        "readrandom" | "seekrandom" => {
            let seek = name == "seekrandom";
            for i in 0..args.reads() {
                fill_key(&mut key, rng.gen_range(0..args.num));
                let t0 = Instant::now();
                if seek {
                    // As db_bench's seekrandom (without --use_tailing_iterator): a new
                    // iterator per seek, counted as found when it lands on the key itself.
                    let mut it = engine.iter(false, None).map_err(storage_error)?;
                    it.seek(&key).await.map_err(storage_error)?;
                    if it.valid() && it.key() == key.as_slice() {
                        r.found += 1;
                    }
                } else if let Some(v) = engine.get(&key).await.map_err(storage_error)? {
                    r.found += 1;
                    r.bytes += (key.len() + v.len()) as u64;
                }
                let _ = r.latency_ns.record(t0.elapsed().as_nanos() as u64);
                r.looked_up += 1;
                r.ops += 1;
                if i % 64 == 63 {
                    glommio::yield_if_needed().await;
                }
            }
        }
        "readseq" => {
            // As db_bench's readseq: one iterator from the first key, touching each key and
            // value. Latency is timed per batch of entries (a clock read per entry would cost
            // a good part of an entry's time) and recorded as the batch's mean per entry.
            let want = args.reads();
            let mut it = engine.iter(false, None).map_err(storage_error)?;
            let mut t0 = Instant::now();
            it.seek_to_first().await.map_err(storage_error)?;
            let mut batch = 0u64;
            while it.valid() && r.ops < want {
                r.bytes += (it.key().len() + it.value().len()) as u64;
                r.ops += 1;
                batch += 1;
                it.next().await.map_err(storage_error)?;
                if batch == READSEQ_BATCH_ENTRIES {
                    let per_entry = t0.elapsed().as_nanos() as u64 / batch;
                    let _ = r.latency_ns.record_n(per_entry.max(1), batch);
                    batch = 0;
                    glommio::yield_if_needed().await;
                    t0 = Instant::now();
                }
            }
            if let Some(per_entry) = (t0.elapsed().as_nanos() as u64).checked_div(batch) {
                let _ = r.latency_ns.record_n(per_entry.max(1), batch);
            }
        }
        other => {
            return Err(Error::InvalidOption(format!("unknown benchmark {other:?}")));
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    Ok(r)
}
