//! The documented way to profile a running server (docs/TUNING.md §4): `tuning/flamegraph.sh
//! PID SECONDS OUT.svg` while a client keeps the server busy. perf samples with the software
//! clock (`cpu-clock`, no hardware counters needed), `corekv-tune flamegraph` renders the SVG
//! with inferno, and the graph shows the shard thread running corekv's request path. Nothing
//! depends on timing: the load runs until the recording is over, and cpu-clock samples the
//! shard in proportion to the CPU time it spends serving it.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use corekv_proto::client::TokioRuntime;
use corekv_proto::{Connection, Op};
use corekv_tests::{Server, ServerOptions, bin_path, block_on, repo_root, test_dir};

#[test]
fn flamegraph_sh_profiles_a_server_under_load() {
    match Command::new("perf").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        other => panic!("perf is not usable ({other:?}); tests/setup.sh installs linux-perf"),
    }
    let dir = test_dir("flamegraph");
    let server = Server::start(dir.path(), ServerOptions::shards(1));
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, served, addr) = (Arc::clone(&stop), Arc::clone(&served), server.addr);
        std::thread::spawn(move || {
            block_on(async {
                let conn = Connection::connect(TokioRuntime, addr).await.unwrap();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ops: Vec<Op> = (0..64)
                        .map(|i| Op::Put {
                            key: format!("flame:{}", (round * 64 + i) % 4096).into_bytes(),
                            value: vec![b'v'; 100],
                            ttl_ms: 0,
                        })
                        .collect();
                    conn.batch(&ops).await.unwrap();
                    served.fetch_add(ops.len() as u64, Ordering::Relaxed);
                    round += 1;
                }
            });
        })
    };
    // Recording starts once the load does.
    while served.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }

    let svg = dir.path().join("server.svg");
    let out = Command::new("bash")
        .arg(repo_root().join("tuning/flamegraph.sh"))
        .arg(server.pid().unwrap().to_string())
        .arg("2")
        .arg(&svg)
        // Frame-pointer stacks: DWARF unwinding (the default) of this unoptimised test build
        // takes about a minute to render here; fp stacks still reach corekv's frames.
        .args(["--call-graph", "fp"])
        .env("COREKV_TUNE", bin_path("corekv-tune"))
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tuning/flamegraph.sh failed; if perf cannot open events here, check \
         kernel.perf_event_paranoid (needs root or <= 1):\n{stderr}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml"), "not an SVG: {stderr}");
    // The shard's thread (named by the server) was sampled, inside corekv's own code.
    assert!(
        text.contains("shard-0"),
        "no shard thread in the graph: {stderr}"
    );
    assert!(
        text.contains("corekv_server::") && text.contains("corekv_storage::"),
        "corekv's request path is missing from the graph: {stderr}"
    );
}
