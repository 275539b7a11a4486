//! Disk faults injected into a real server through the storage engine's I/O seam
//! (`--debug-fault-injection`, see `corekv_server::faults`): EIO, ENOSPC, short writes and
//! torn writes at WAL writes, syncs and segment creation, and at the table writes of flushes and
//! compactions and the manifest's edits (`OP/PART=` rules aimed at `.sst` and `MANIFEST` files). The server reports every failure to the client, never
//! acknowledges a write that failed, keeps serving reads (and the shards whose disk is fine),
//! and after the fault clears and a restart every acknowledged write is there.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use corekv_proto::client::TokioRuntime;
use corekv_proto::{Client, Error, ErrorCode, Op, OpResult};
use corekv_tests::crash::{self, CrashLoop};
use corekv_tests::workload::Shape;
use corekv_tests::{Server, ServerOptions, block_on, cpus, test_dir};

/// What the writer saw.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Answered `io`: may or may not be on disk.
    unknown: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Answered `read_only`: must not be on disk.
    refused: Vec<Vec<u8>>,
    acked_on_healthy_shard_after_failure: usize,
}

/// Writes distinct keys one after another until shard 0's storage has failed and refused
/// 20 more writes, checking reads of acknowledged keys all along.
async fn write_until_refused(client: &Client, round: usize) -> Seen {
    let mut seen = Seen::default();
    let mut failed = false;
    for i in 0..20_000 {
        if seen.refused.len() >= 20 {
            break;
        }
        let key = format!("r{round}/k{i:05}").into_bytes();
        let value = format!("r{round}-v{i}-{}", "x".repeat(i % 300)).into_bytes();
        let shard = client.shard_of(&key);
        match client.put(&key, &value).await {
            Ok(_) => {
                if failed && shard == 0 {
                    panic!("round {round}: shard 0 acknowledged a write after its disk failed");
                }
                if failed {
                    seen.acked_on_healthy_shard_after_failure += 1;
                }
                seen.acked.insert(key, value);
            }
            Err(Error::Server(e)) if e.code == ErrorCode::Io => {
                assert_eq!(shard, 0, "round {round}: a healthy shard failed: {e}");
                assert!(e.message.contains("I/O error"), "{e}");
                failed = true;
                seen.unknown.insert(key, value);
            }
            Err(Error::Server(e)) if e.code == ErrorCode::ReadOnly => {
                assert_eq!(shard, 0, "round {round}: a healthy shard refused: {e}");
                assert!(
                    e.message.contains("reopen"),
                    "the message says what to do: {e}"
                );
                failed = true;
                seen.refused.push(key);
            }
            Err(e) => panic!("round {round}: unexpected error {e}"),
        }
        // Reads keep working, on every shard, failed or not.
        if i % 7 == 0 {
            if let Some((k, v)) = seen.acked.iter().nth(i % seen.acked.len().max(1)) {
                assert_eq!(
                    client.get(k).await.unwrap().as_ref(),
                    Some(v),
                    "round {round}: read of an acknowledged key"
                );
            }
        }
    }
    assert!(failed, "round {round}: the fault never fired");
    seen
}

/// Reads `keys` in batches of 256.
async fn read_all(client: &Client, keys: &[&Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(256) {
        let ops = chunk
            .iter()
            .map(|k| Op::Get { key: (*k).clone() })
            .collect();
        for r in client.batch(ops).await.unwrap() {
            match r {
                OpResult::Get(v) => out.push(v.map(|v| v.value)),
                other => panic!("a read answered {other:?}"),
            }
        }
    }
    out
}

/// Every kind of fault, one round each on the same data directory: the faulty server answers
/// `io` then `read_only` for shard 0 and keeps serving reads and shard 1; a restart without
/// faults finds every acknowledged write (and none that was refused) and writes again.
#[test]
fn failed_writes_are_reported_never_acknowledged_and_recovered_after_restart() {
    let dir = test_dir("disk-faults");
    let data = dir.path().join("data");
    let shards = 2.min(cpus());
    // Tiny memtables: flushes, compactions and manifest edits happen within a few writes.
    let base = ServerOptions::shards(shards).args(&[
        "--wal-segment-size-bytes",
        "65536",
        "--memtable-size-bytes",
        "16384",
    ]);
    let rules = [
        "write=eio@30",
        "write=enospc@30+",
        "write=short@30",
        "write=torn@30",
        "sync=eio@30",
        "sync=enospc@30",
        // Roll-overs of the 64 KiB WAL segments.
        "create=enospc@1+",
        "allocate=enospc@1+",
        "syncdir=eio@1",
        // Flushes and compactions: table writes, syncs, creations.
        "write/.sst=eio@0",
        "write/.sst=torn@3",
        "write/.sst=enospc@6+",
        "sync/.sst=eio@5",
        "create/.sst=enospc@4",
        // Manifest edits.
        "write/MANIFEST=eio@2",
        "write/MANIFEST=torn@6",
        "sync/MANIFEST=enospc@3",
    ];
    let mut all_acked: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (round, rule) in rules.iter().enumerate() {
        let plan = format!("shard=0,seed={round},{rule}");
        let mut server = Server::start_with_data(
            &data,
            base.clone().args(&["--debug-fault-injection", &plan]),
        );
        assert!(server.log().contains("FAULT INJECTION IS ON"));
        let seen = block_on(async {
            let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
            let seen = write_until_refused(&client, round).await;
            let stats = client.stats().await.unwrap();
            assert_eq!(stats[0].counter("read_only"), Some(1), "{rule}");
            // The failure was a client's write (answered `io`) or a flush or compaction.
            let (client_failures, background_failures) = (
                stats[0].counter("failed_io_total").unwrap_or(0),
                stats[0].counter("background_errors_total").unwrap_or(0),
            );
            assert!(
                client_failures + background_failures >= 1,
                "{rule}: failed_io_total {client_failures}, background_errors_total \
                 {background_failures}"
            );
            if rule.contains(".sst") {
                assert_eq!(
                    background_failures, 1,
                    "{rule}: a flush or compaction failed"
                );
            }
            if shards > 1 {
                assert_eq!(stats[1].counter("read_only"), Some(0), "{rule}");
            }
            seen
        });
        if shards > 1 {
            assert!(
                seen.acked_on_healthy_shard_after_failure > 0,
                "{rule}: shard 1 stopped taking writes"
            );
        }
        // Crash the faulty server; the fault clears with the restart.
        server.kill9();
        let server = server.restart_with(base.clone());
        block_on(async {
            let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
            all_acked.extend(seen.acked.clone());
            let keys: Vec<&Vec<u8>> = all_acked.keys().collect();
            for (k, got) in keys.iter().zip(read_all(&client, &keys).await) {
                assert_eq!(
                    got.as_ref(),
                    all_acked.get(*k),
                    "{rule}: acknowledged {} lost",
                    String::from_utf8_lossy(k)
                );
            }
            let keys: Vec<&Vec<u8>> = seen.unknown.keys().collect();
            for (k, got) in keys.iter().zip(read_all(&client, &keys).await) {
                assert!(
                    got.is_none() || got.as_ref() == seen.unknown.get(*k),
                    "{rule}: {got:?}"
                );
                if let Some(v) = got {
                    all_acked.insert((*k).clone(), v);
                }
            }
            let keys: Vec<&Vec<u8>> = seen.refused.iter().collect();
            for got in read_all(&client, &keys).await {
                assert_eq!(got, None, "{rule}: a refused write");
            }
            // The restarted shard 0 writes again.
            for i in 0..20 {
                let k = format!("r{round}/after/{i}").into_bytes();
                client.put(&k, b"ok").await.unwrap();
                all_acked.insert(k, b"ok".to_vec());
            }
        });
    }
}

/// The crash loop with a random fault plan in most cycles (random fault, random kind of
/// operation — WAL, table or manifest file, or any — random point, sometimes persistent): the
/// faulty cycles end with `kill -9`, the next starts without faults and must pass the full
/// check.
#[test]
fn crash_loop_with_random_disk_faults_loses_nothing_acknowledged() {
    let dir = test_dir("crash-loop-faults");
    let report = CrashLoop {
        name: "sync-faults".to_string(),
        shards: 2.min(cpus()),
        durability: "sync".to_string(),
        server_args: vec![
            "--memtable-size-bytes".into(),
            "16384".into(),
            "--wal-segment-size-bytes".into(),
            "65536".into(),
        ],
        shape: Shape {
            clients: 2,
            tasks: 4,
            keys_per_task: 24,
            shared_keys: 8,
            value_bytes_max: 400,
        },
        cycles: 8,
        ops_before_kill: 300..1500,
        fault_cycle_share: 0.75,
        crash_point_every: 0,
    }
    .run(dir.path(), crash::seed());
    assert_eq!(report.totals.violations, 0);
    assert!(report.fault_plans > 0, "{report}");
    assert!(report.faults_fired > 0, "no injected fault fired: {report}");
}
