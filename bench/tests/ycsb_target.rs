//! `--target`: the schedule holds the rate, and latency counts from each operation's intended
//! start, so a server stall is charged to every request it delayed (no coordinated omission).

// Test code: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_bench::ycsb::args::YcsbArgs;
use corekv_bench::ycsb::backend::memory::{MemoryBackend, MemoryConn};
use corekv_bench::ycsb::backend::{Backend, Connection, Update};
use corekv_bench::ycsb::drive;
use corekv_bench::ycsb::measure::Status;
use corekv_bench::ycsb::workload::OpKind;

/// How long the simulated server freezes.
const STALL: Duration = Duration::from_millis(300);
/// The run-phase operation (counting from the first read) that triggers the freeze.
const STALL_AT_READ: u64 = 200;

/// A map that freezes once, for [`STALL`], at the [`STALL_AT_READ`]th read: every request
/// arriving during the freeze waits until it ends, as with a server stuck in a long GC pause.
#[derive(Clone)]
struct Stalling {
    inner: MemoryBackend,
    reads: Arc<AtomicU64>,
    frozen_until: Arc<Mutex<Option<Instant>>>,
}

struct StallingConn {
    inner: MemoryConn,
    backend: Stalling,
}

impl Backend for Stalling {
    type Conn = StallingConn;
    fn name(&self) -> &'static str {
        "stalling"
    }
    async fn connect(&self) -> Result<StallingConn, corekv_bench::Error> {
        Ok(StallingConn {
            inner: self.inner.connect().await?,
            backend: self.clone(),
        })
    }
}

impl StallingConn {
    async fn maybe_freeze(&self) {
        let n = self.backend.reads.fetch_add(1, Ordering::Relaxed);
        let until = {
            let mut f = self.backend.frozen_until.lock().unwrap();
            if n == STALL_AT_READ {
                *f = Some(Instant::now() + STALL);
            }
            *f
        };
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                glommio::timer::sleep(until - now).await;
            }
        }
    }
}

impl Connection for StallingConn {
    async fn insert(&self, key: &[u8], record: &[u8]) -> Status {
        self.inner.insert(key, record).await
    }
    async fn read(&self, key: &[u8], keep: Option<&mut Vec<u8>>) -> Status {
        self.maybe_freeze().await;
        self.inner.read(key, keep).await
    }
    async fn update(&self, key: &[u8], update: Update<'_>, current: Option<&[u8]>) -> Status {
        self.inner.update(key, update, current).await
    }
    async fn scan(&self, start: &[u8], count: u64) -> Status {
        self.inner.scan(start, count).await
    }
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Runs workload C (reads only) for 1000 operations; returns the number of reads that took at
/// least 100 ms, the throughput, the runtime, and how many times a slot slept for its
/// intended start.
fn run(extra: &[&str]) -> (u64, f64, Duration, u64) {
    let backend = Stalling {
        inner: MemoryBackend::new(),
        reads: Arc::new(AtomicU64::new(0)),
        frozen_until: Arc::new(Mutex::new(None)),
    };
    let flags = [
        "--workload",
        "c",
        "--records",
        "100",
        "--operations",
        "1000",
        "--threads",
        "1",
        "--inflight",
        "4",
        "--quiet",
    ];
    let args = YcsbArgs::parse_flags(flags.iter().chain(extra)).unwrap();
    let reports = drive(&backend, &args, Vec::new()).unwrap();
    let run = &reports[1];
    assert_eq!(run.measurements.returned(OpKind::Read, Status::Ok), 1000);
    let reads = run.measurements.ok[OpKind::Read.index()].as_ref().unwrap();
    let slow = reads.histogram.count_between(100_000, u64::MAX);
    let wakeups = run
        .measurements
        .timer_lateness
        .as_ref()
        .map_or(0, |t| t.count());
    (slow, run.throughput_ops_per_sec(), run.runtime, wakeups)
}

#[test]
fn a_stall_is_charged_to_every_request_it_delayed() {
    // 1000 reads at 1000/s: the freeze at read 200 holds back the ~300 reads scheduled during
    // it; about 200 of them were due at least 100 ms before they could be answered.
    let (slow, throughput, runtime, wakeups) = run(&["--target", "1000"]);
    assert!(
        slow >= 150,
        "only {slow} reads charged >= 100 ms for a 300 ms stall"
    );
    // The schedule holds: 1000 ops at 1000/s take at least 1 s whatever the stall.
    assert!(runtime >= Duration::from_millis(999), "runtime {runtime:?}");
    assert!(
        throughput <= 1001.0,
        "throughput {throughput} above the target"
    );
    // Slots slept for their intended start (all but the backlog after the stall).
    assert!(wakeups > 0 && wakeups <= 1000, "{wakeups} timer wake-ups");

    // Unthrottled, latency counts from the send: only the 4 reads in flight see the stall.
    let (slow, _, _, wakeups) = run(&[]);
    assert!(slow <= 4, "{slow} reads >= 100 ms without a target");
    assert_eq!(wakeups, 0, "an unthrottled run never sleeps");
}
