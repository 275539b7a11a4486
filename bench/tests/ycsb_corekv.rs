//! The corekv backend end to end: an in-process corekv server (real shards, WAL on disk under
//! `$COREKV_BENCH_DIR` or /var/tmp) driven through the shard-aware, batching Rust client.
//!
//! Proves: every workload runs with no failed operation (reads find every loaded and
//! acknowledged record, values decode as records, one-field updates keep ten fields), scans
//! return records in key order through the client's continuations, and the server stops
//! cleanly and removes its directory.

// Test code: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_bench::ycsb::args::YcsbArgs;
use corekv_bench::ycsb::backend::corekv::CorekvBackend;
use corekv_bench::ycsb::drive;
use corekv_bench::ycsb::measure::Status;
use corekv_bench::ycsb::server::{InProcessOptions, InProcessServer};
use corekv_bench::ycsb::workload::OpKind;

#[test]
fn every_workload_runs_against_an_in_process_server() {
    let first_cpu = corekv_bench::sys::allowed_cpus().unwrap()[0];
    let mut server = InProcessServer::start(&InProcessOptions {
        cores: Some(first_cpu.to_string()),
        // Fsyncs in the background: this test is about the driver path, not durability.
        durability: Some("periodic:50".into()),
    })
    .unwrap();
    let dir = server.data_dir().unwrap().to_path_buf();
    assert!(dir.exists());
    let backend = CorekvBackend::new(server.addr());
    for workload in ["a", "b", "c", "d", "e", "f"] {
        let phase = if workload == "a" { "both" } else { "run" };
        let args = YcsbArgs::parse_flags([
            "--workload",
            workload,
            "--phase",
            phase,
            "--records",
            "500",
            "--operations",
            "1000",
            "--threads",
            "2",
            "--connections",
            "2",
            "--inflight",
            "16",
            "--quiet",
        ])
        .unwrap();
        let reports = drive(&backend, &args, Vec::new()).unwrap();
        let run = reports.last().unwrap();
        assert!(run.errors.is_empty(), "{workload}: {:?}", run.errors);
        assert_eq!(run.measurements.transactions, 1000, "workload {workload}");
        assert_eq!(
            run.measurements.failures(),
            0,
            "workload {workload}: {:?}\n{}",
            run.error_samples,
            run.to_ycsb_text()
        );
        if workload == "e" {
            assert!(run.measurements.returned(OpKind::Scan, Status::Ok) > 850);
        }
        if workload == "a" {
            assert_eq!(
                reports[0].measurements.returned(OpKind::Insert, Status::Ok),
                500
            );
        }
    }
    server.stop().unwrap();
    assert!(!dir.exists(), "the server's directory is removed");
}
