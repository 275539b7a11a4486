//! `corekv-load`: a redis-benchmark-like SET/GET load for corekv, to compare with
//! `../shared/peers/redis.sh` on the same terms (requests, value size, clients, pipeline).
//!
//! ```sh
//! corekv-load --addr 127.0.0.1:7379 --tests set,get --requests 200000 --value-bytes 1000 \
//!     --clients 50 --pipeline 16
//! ```
//!
//! `--clients` tasks (spread over `--threads` glommio executors, each with one shard-aware
//! `corekv_proto::Client`) each issue `--pipeline` operations at once and wait for all of them,
//! like redis-benchmark's `-P`. The client coalesces concurrent operations towards one shard
//! into `batch` calls (`--no-coalesce`: one RPC per operation). Keys are `key:NNNNNNNNNNNN`
//! drawn uniformly from `--keyspace` (redis-benchmark's `-r`), a fresh stream per test as in
//! redis-benchmark (so GETs after SETs find about requests/keyspace of their keys, and the
//! share found is printed). Prints throughput, per-operation
//! latency percentiles (from issue to reply, hdrhistogram), the batching the client achieved
//! and the share of operations that crossed shards inside the server (from `stats`).

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use corekv_proto::client::{GlommioRuntime, resolve};
use corekv_proto::ops::counter_total;
use corekv_proto::{Client, ClientOptions, Connection};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SET/GET load against a corekv server.
#[derive(Debug, Parser, Clone)]
#[command(name = "corekv-load")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7379")]
    addr: String,
    /// Tests to run, in order: `set`, `get` (comma-separated).
    #[arg(long, default_value = "set,get")]
    tests: String,
    /// Operations per test.
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Value size.
    #[arg(long, default_value_t = 1000)]
    value_bytes: usize,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Operations each client task issues at once before waiting (redis-benchmark's -P).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Keys are drawn from this many.
    #[arg(long, default_value_t = 1_000_000)]
    keyspace: u64,
    /// Client threads (glommio executors), each with its own connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// One RPC per operation instead of coalescing into batch calls.
    #[arg(long)]
    no_coalesce: bool,
    /// Most operations per coalesced batch call.
    #[arg(long, default_value_t = 1024)]
    batch_ops_max: usize,
    /// Most batch calls in flight per shard connection.
    #[arg(long, default_value_t = 8)]
    batch_calls_in_flight_max: usize,
    /// Split a coalescing queue over several calls in flight only into calls of at least this
    /// many operations (0: never split).
    #[arg(long, default_value_t = 64)]
    batch_ops_split_min: usize,
}

struct ThreadResult {
    histogram: Histogram<u64>,
    batches: u64,
    ops_sent: u64,
    /// GETs that found a value.
    hits: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

async fn run_thread(
    args: Args,
    test: String,
    thread: usize,
    next: Arc<AtomicU64>,
) -> anyhow::Result<ThreadResult> {
    let addr = resolve(&args.addr)?;
    let mut options = ClientOptions {
        coalesce: !args.no_coalesce,
        ..ClientOptions::default()
    };
    options.limits.batch_ops_max = args.batch_ops_max;
    options.limits.batch_calls_in_flight_max = args.batch_calls_in_flight_max;
    options.limits.batch_ops_split_min = match args.batch_ops_split_min {
        0 => usize::MAX,
        n => n,
    };
    let client = Client::connect_with(GlommioRuntime, addr, options).await?;
    let histogram = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let value = vec![b'x'; args.value_bytes];
    let hits = std::cell::Cell::new(0u64);
    let tasks = args.clients / args.threads + usize::from(thread < args.clients % args.threads);
    let workers = (0..tasks).map(|t| {
        let (client, histogram, value, next) = (
            client.clone(),
            Rc::clone(&histogram),
            &value,
            Arc::clone(&next),
        );
        let (test, args, hits) = (&test, &args, &hits);
        async move {
            // Each test draws its own keys, as redis-benchmark does: a GET test after a SET
            // test finds only the keys the SETs happened to write (about requests/keyspace of
            // them), not exactly the SETs' keys.
            let test_salt: u64 = if test == "set" {
                0
            } else {
                0x9e37_79b9_7f4a_7c15
            };
            let mut rng = SmallRng::seed_from_u64((thread * 1_000_003 + t) as u64 ^ test_salt);
            loop {
                let claimed = next.fetch_add(args.pipeline as u64, Ordering::Relaxed);
                if claimed >= args.requests {
                    return Ok::<(), anyhow::Error>(());
                }
                let n = (args.requests - claimed).min(args.pipeline as u64) as usize;
                let keys: Vec<Vec<u8>> = (0..n)
                    .map(|_| key(rng.gen_range(0..args.keyspace)))
                    .collect();
                let started = Instant::now();
                let ops = keys.iter().map(|k| {
                    let client = &client;
                    async move {
                        let begun = Instant::now();
                        if test == "set" {
                            client.put(k, value).await.map(drop)?;
                        } else if client.get(k).await?.is_some() {
                            hits.set(hits.get() + 1);
                        }
                        Ok::<Duration, corekv_proto::Error>(begun.elapsed())
                    }
                });
                for r in futures::future::join_all(ops).await {
                    let took = r?;
                    histogram
                        .borrow_mut()
                        .saturating_record(took.as_micros().max(1) as u64);
                }
                debug_assert!(started.elapsed() >= Duration::ZERO);
            }
        }
    });
    for r in futures::future::join_all(workers).await {
        r?;
    }
    let (batches, ops_sent) = client.coalesced_counts();
    let histogram = histogram.borrow().clone();
    Ok(ThreadResult {
        histogram,
        batches,
        ops_sent,
        hits: hits.get(),
    })
}

/// Reads the server's counters (on a throwaway executor).
fn server_counters(addr: &str) -> anyhow::Result<(u64, u64)> {
    let addr = resolve(addr)?;
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let conn = Connection::connect(GlommioRuntime, addr).await?;
            let stats = conn.stats().await?;
            Ok::<_, corekv_proto::Error>((
                counter_total(&stats, "ops_total"),
                counter_total(&stats, "ops_forwarded_out_total"),
            ))
        })
        .map_err(|e| anyhow::anyhow!("start a stats thread: {e}"))?;
    Ok(handle.join().map_err(|e| anyhow::anyhow!("{e}"))??)
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.threads == 0 || args.clients < args.threads || args.pipeline == 0 {
        bail!("need --threads >= 1, --clients >= --threads and --pipeline >= 1");
    }
    for test in args.tests.split(',') {
        if test != "set" && test != "get" {
            bail!("unknown test {test:?}: use set and/or get");
        }
        let (ops_before, crossed_before) = server_counters(&args.addr)?;
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles = (0..args.threads)
            .map(|thread| {
                let (args, test, next) = (args.clone(), test.to_string(), Arc::clone(&next));
                LocalExecutorBuilder::new(Placement::Unbound)
                    .name(&format!("load-{thread}"))
                    .io_memory(1 << 20)
                    .spawn(move || async move {
                        run_thread(args, test, thread, next)
                            .await
                            .map_err(|e| format!("{e:#}"))
                    })
                    .map_err(|e| anyhow::anyhow!("start a client thread: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let (mut batches, mut ops_sent, mut hits) = (0, 0, 0);
        for h in handles {
            let r = h
                .join()
                .map_err(|e| anyhow::anyhow!("client thread: {e}"))?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            histogram.add(&r.histogram)?;
            batches += r.batches;
            ops_sent += r.ops_sent;
            hits += r.hits;
        }
        let secs = started.elapsed().as_secs_f64();
        let (ops_after, crossed_after) = server_counters(&args.addr)?;
        let ops = ops_after - ops_before;
        let crossed = crossed_after - crossed_before;
        println!(
            "corekv test={test} requests={} value_bytes={} clients={} pipeline={} threads={} \
             coalesce={}: {:.0} ops/s, p50={} us, p99={} us, p99.9={} us, {:.1} ops per batch \
             call, {:.2}% crossed shards{}",
            args.requests,
            args.value_bytes,
            args.clients,
            args.pipeline,
            args.threads,
            !args.no_coalesce,
            args.requests as f64 / secs,
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            if batches == 0 {
                0.0
            } else {
                ops_sent as f64 / batches as f64
            },
            if ops == 0 {
                0.0
            } else {
                100.0 * crossed as f64 / ops as f64
            },
            if test == "get" {
                format!(
                    ", {:.1}% of GETs found a value",
                    100.0 * hits as f64 / args.requests as f64
                )
            } else {
                String::new()
            },
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corekv-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
