//! `server/scripts/local-cluster.sh`, the documented way to start a local 3-node cluster: the
//! three nodes share one machine's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use corekv_tests::{PROCESS_DEADLINE, bin_path, repo_root, test_dir};

/// A cluster started by the script in `dir`, stopped by it when dropped (a failing assertion
/// must not leave three servers behind).
struct ScriptCluster {
    dir: PathBuf,
}

impl ScriptCluster {
    fn start(dir: &Path, server_args: &str) -> ScriptCluster {
        let cluster = ScriptCluster {
            dir: dir.to_path_buf(),
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

fn physical_memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024
}

#[test]
fn the_three_nodes_share_one_servers_block_cache_unless_told_otherwise() {
    let dir = test_dir("local-cluster-script");
    // A lone server takes a quarter of physical memory for its cache; three of them on one
    // machine would promise three quarters.
    let quarter = physical_memory_bytes() / 4;
    {
        let cluster = ScriptCluster::start(dir.path(), "");
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
    // The caller's choice stands.
    let cluster = ScriptCluster::start(dir.path(), "--block-cache-bytes 8388608");
    assert_eq!(cluster.block_cache_bytes_per_shard(), vec![8 << 20; 3]);
}
