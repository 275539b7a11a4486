//! `server/scripts/local-cluster.sh`, the documented way to start a local 3-node cluster: the
//! three nodes share one machine's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use corekv_tests::{
    PROCESS_DEADLINE, bin_path, ephemeral_ports_low, free_ports, repo_root, test_dir,
};

/// What every node gets besides the flag under test, as the test harness gives its servers:
/// small registered-memory buffers (tests run many servers under `ulimit -l`).
const SERVER_ARGS: &str = "--io-memory-bytes 1048576 --shutdown-grace-ms 5000";

/// A node 1 client port for the script (`COREKV_CLUSTER_PORT`) whose layout is free: node i
/// on `base + 1000 * (i - 1)` (its shard's listener on the next port) and its peers on that
/// plus 100. Not the default 7379 and up: a developer's own local cluster may hold those.
fn free_layout() -> u16 {
    let ephemeral_low = ephemeral_ports_low();
    loop {
        let base = free_ports(2);
        if u32::from(base) + 2101 >= ephemeral_low {
            continue;
        }
        let all_free = (0..3u16)
            .flat_map(|i| [0u16, 1, 100].map(|d| base.checked_add(1000 * i + d)))
            .all(|p| p.is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()));
        if all_free {
            return base;
        }
    }
}

/// A cluster started by the script in `dir`, stopped by it when dropped (a failing assertion
/// must not leave three servers behind).
struct ScriptCluster {
    dir: PathBuf,
    port: u16,
}

impl ScriptCluster {
    fn start(dir: &Path, server_args: &str) -> ScriptCluster {
        let cluster = ScriptCluster {
            dir: dir.to_path_buf(),
            port: free_layout(),
        };
        let out = cluster.run("start", server_args);
        assert!(
            out.status.success(),
            "local-cluster.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn run(&self, what: &str, server_args: &str) -> std::process::Output {
        Command::new("bash")
            .arg(repo_root().join("server/scripts/local-cluster.sh"))
            .arg(what)
            .env("COREKV_SERVER", bin_path("corekv-server"))
            .env("COREKV_CLUSTER_DIR", &self.dir)
            .env("COREKV_CLUSTER_PORT", self.port.to_string())
            .env("COREKV_SHARDS", "1")
            .env("COREKV_SERVER_ARGS", server_args)
            .output()
            .unwrap()
    }

    /// Each node's block cache per shard, from the line every server logs at start.
    fn block_cache_bytes_per_shard(&self) -> Vec<u64> {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        (1..=3)
            .map(|i| {
                loop {
                    let log = std::fs::read_to_string(self.dir.join(format!("node{i}.log")))
                        .unwrap_or_default();
                    if let Some(v) = log
                        .split("block_cache_bytes_per_shard=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                    {
                        break v.parse().unwrap();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "node {i} never logged its cache:\n{log}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            })
            .collect()
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        let out = self.run("stop", "");
        if !std::thread::panicking() {
            assert!(out.status.success(), "local-cluster.sh stop failed");
            let status = self.run("status", "");
            let text = String::from_utf8_lossy(&status.stdout);
            assert_eq!(text.matches("stopped").count(), 3, "{text}");
        }
    }
}

#[test]
fn the_three_nodes_share_one_servers_block_cache_unless_told_otherwise() {
    let dir = test_dir("local-cluster-script");
    // A lone server takes a quarter of physical memory for its cache; three of them on one
    // machine would promise three quarters.
    let quarter = corekv_server::config::physical_memory_bytes().unwrap() / 4;
    {
        let cluster = ScriptCluster::start(&dir.path().join("default"), SERVER_ARGS);
        let caches = cluster.block_cache_bytes_per_shard();
        assert!(
            caches.iter().sum::<u64>() <= quarter,
            "the nodes' caches {caches:?} add up to more than a quarter of memory ({quarter})"
        );
        for c in &caches {
            assert!(
                *c >= quarter / 3 - (1 << 20),
                "{caches:?}: far under a third each"
            );
        }
    }
    // The caller's choice stands (here in the `--flag=value` form).
    let cluster = ScriptCluster::start(
        &dir.path().join("chosen"),
        &format!("{SERVER_ARGS} --block-cache-bytes=8388608"),
    );
    assert_eq!(cluster.block_cache_bytes_per_shard(), vec![8 << 20; 3]);
}
