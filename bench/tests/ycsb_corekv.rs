//! The corekv backend end to end: an in-process corekv server (real shards, WAL on disk under
//! `$COREKV_BENCH_DIR` or /var/tmp) driven through the shard-aware, batching Rust client.
//!
//! Proves: every workload runs with no failed operation (reads find every loaded and
//! acknowledged record, values decode as entities), scans return records in key order through
//! the client's continuations, records end as entities of ten 100-byte columns after one-field
//! updates, and the server stops cleanly and removes its directory.

// Test code: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_bench::ycsb::args::YcsbArgs;
use corekv_bench::ycsb::backend::corekv::CorekvBackend;
use corekv_bench::ycsb::drive;
use corekv_bench::ycsb::measure::Status;
use corekv_bench::ycsb::server::{InProcessOptions, InProcessServer};
use corekv_bench::ycsb::workload::OpKind;
use corekv_proto::client::GlommioRuntime;
use corekv_proto::{Client, ScanOp};

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
    // Records are entities of ten 100-byte columns, one-field updates included.
    let addr = server.addr();
    let check = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let client = Client::connect(GlommioRuntime, addr).await.unwrap();
            let page = client
                .scan(&ScanOp {
                    limit: 200,
                    ..ScanOp::default()
                })
                .await
                .unwrap();
            assert_eq!(page.entries.len(), 200);
            for (key, _) in &page.entries {
                let columns = client.get_columns(key, Vec::new()).await.unwrap().unwrap();
                let names: Vec<Vec<u8>> =
                    (0..10).map(|i| format!("field{i}").into_bytes()).collect();
                let mut sorted = names.clone();
                sorted.sort();
                let got: Vec<_> = columns.columns.iter().map(|(n, _)| n.clone()).collect();
                assert_eq!(got, sorted);
                assert!(columns.columns.iter().all(|(_, v)| v.len() == 100));
            }
        });
    check.unwrap().join().unwrap();
    server.stop().unwrap();
    assert!(!dir.exists(), "the server's directory is removed");
}
