//! The Redis backend against a real `redis-server` (Debian's `redis-server`; `tests/setup.sh`
//! installs it). Without it the test is reported as skipped locally and fails under CI.
//!
//! Proves: the hand-written RESP client pipelines correctly (every reply matched to its
//! request: all operations OK, none NOT_FOUND), the record mapping (one hash of ten fields per
//! record plus the `_indices` sorted set), and scans in key order through the index.

// Test code: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corekv_bench::ycsb::args::YcsbArgs;
use corekv_bench::ycsb::backend::redis::RedisBackend;
use corekv_bench::ycsb::drive;
use corekv_bench::ycsb::keys::key_name;
use corekv_bench::ycsb::measure::Status;
use corekv_bench::ycsb::workload::OpKind;

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install redis-server (tests/setup.sh does)"
            );
            eprintln!("SKIPPED: redis-server is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let give_up = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < give_up,
                "redis-server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

#[test]
fn workloads_run_against_a_real_redis() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let backend = RedisBackend::new(redis.addr(), 10);
    let mut inserted = 0;
    for workload in ["a", "d", "e", "f"] {
        let flags = [
            "--workload",
            workload,
            "--records",
            "2000",
            "--operations",
            "3000",
            "--threads",
            "2",
            "--connections",
            "3",
            "--inflight",
            "16",
            "--quiet",
        ];
        // Load once; later workloads run against the same records.
        let phase = if workload == "a" { "both" } else { "run" };
        let args = YcsbArgs::parse_flags(flags.iter().copied().chain(["--phase", phase])).unwrap();
        let reports = drive(&backend, &args, Vec::new()).unwrap();
        let run = reports.last().unwrap();
        assert!(run.errors.is_empty(), "{workload}: {:?}", run.errors);
        assert_eq!(run.measurements.transactions, 3000, "workload {workload}");
        assert_eq!(
            run.measurements.failures(),
            0,
            "workload {workload}: {}",
            run.to_ycsb_text()
        );
        // Each run phase inserts from key number 2000 again (YCSB's insert counter starts at
        // recordcount), so runs overwrite each other's inserts.
        inserted = inserted.max(run.measurements.returned(OpKind::Insert, Status::Ok));
        if workload == "e" {
            assert!(run.measurements.returned(OpKind::Scan, Status::Ok) > 2500);
        }
    }
    // One hash per record plus the index, which lists every record.
    let records = 2000 + inserted;
    assert_eq!(redis.cli(&["DBSIZE"]), (records + 1).to_string());
    assert_eq!(redis.cli(&["ZCARD", "_indices"]), records.to_string());
    let mut key = Vec::new();
    key_name(7, &mut key);
    let key = String::from_utf8(key).unwrap();
    assert_eq!(redis.cli(&["HLEN", &key]), "10");
    assert_eq!(redis.cli(&["HSTRLEN", &key, "field9"]), "100");
}

#[test]
fn a_server_that_goes_away_is_reported() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let backend = RedisBackend::new(redis.addr(), 10);
    let load = YcsbArgs::parse_flags(["--phase", "load", "--records", "100", "--quiet"]).unwrap();
    drive(&backend, &load, Vec::new()).unwrap();
    let addr = redis.addr();
    drop(redis);
    let run = YcsbArgs::parse_flags(["--phase", "run", "--records", "100", "--quiet"]).unwrap();
    let err = drive(&RedisBackend::new(addr.clone(), 10), &run, Vec::new()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&addr) && message.contains("redis"),
        "{message}"
    );
}
