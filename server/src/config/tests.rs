//! Tests of the configuration.

use super::*;

fn cpus(s: &str) -> CpuSet {
    s.parse().unwrap()
}

fn cli(args: &[&str]) -> Cli {
    let mut argv = vec!["corekv-server"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap()
}

#[test]
fn defaults_work_on_a_laptop() {
    let c = Config::resolve(cli(&[]), &cpus("0-3")).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("corekv-data"));
    assert_eq!(c.listen, "127.0.0.1:7379".parse().unwrap());
    assert_eq!(c.shard_count(), 4);
    assert_eq!(c.durability, Durability::Sync);
    assert_eq!(c.shard_listen(3).port(), 7383);
    assert!(c.metrics.is_none());
    assert_eq!(c.io_memory_bytes, DEFAULT_IO_MEMORY_BYTES);
    assert_eq!(c.connection_inflight_ops_max, 4096);
    assert_eq!(c.shard_connections_max, 10_000);
    assert_eq!(c.frame_budget_bytes, 256 << 20);
    assert_eq!(c.shutdown_grace_ms, 10_000);
    assert!(!c.transparent_huge_pages);
    assert_eq!(c.idle_poll_us, 200);
    assert_eq!(
        c.block_cache_bytes_per_shard,
        default_block_cache_bytes_per_shard(physical_memory_bytes(), 4)
    );
}

#[test]
fn the_block_cache_defaults_to_a_quarter_of_memory_split_between_shards() {
    assert!(physical_memory_bytes().is_some_and(|m| m > 0));
    assert_eq!(
        default_block_cache_bytes_per_shard(Some(16 << 30), 4),
        1 << 30
    );
    assert_eq!(
        default_block_cache_bytes_per_shard(Some(64 << 20), 64),
        BLOCK_CACHE_BYTES_PER_SHARD_MIN
    );
    assert_eq!(
        default_block_cache_bytes_per_shard(None, 2),
        FALLBACK_BLOCK_CACHE_BYTES_PER_SHARD
    );
    let c = Config::resolve(cli(&["--block-cache-bytes", "100000000"]), &cpus("0-3")).unwrap();
    assert_eq!(c.block_cache_bytes_per_shard, 25_000_000);
    let e = Config::resolve(cli(&["--block-cache-bytes", "1000"]), &cpus("0-1")).unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
}

#[test]
fn limits_are_settable_and_checked() {
    let c = Config::resolve(
        cli(&[
            "--io-memory-bytes",
            "1048576",
            "--connection-inflight-ops-max",
            "8",
            "--shard-connections-max",
            "3",
            "--shutdown-grace-ms",
            "50",
        ]),
        &cpus("0"),
    )
    .unwrap();
    assert_eq!(c.io_memory_bytes, 1 << 20);
    assert_eq!(c.connection_inflight_ops_max, 8);
    assert_eq!(c.shard_connections_max, 3);
    assert_eq!(c.shutdown_grace_ms, 50);
    let e = Config::resolve(cli(&["--io-memory-bytes", "4096"]), &cpus("0")).unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
    let e = Config::resolve(cli(&["--connection-inflight-ops-max", "0"]), &cpus("0")).unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
}

#[test]
fn io_concurrency_comes_from_the_setting_then_the_disk() {
    assert_eq!(
        Config::resolve(cli(&[]), &cpus("0"))
            .unwrap()
            .io_concurrency,
        None
    );
    let c = Config::resolve(cli(&["--io-concurrency", "32"]), &cpus("0")).unwrap();
    assert_eq!(c.io_concurrency, Some(32));
    for bad in ["4", "2000"] {
        let e = Config::resolve(cli(&["--io-concurrency", bad]), &cpus("0")).unwrap_err();
        assert!(e.to_string().contains("between 8 and 1024"), "{e}");
    }
    let disk = |n| IoProperties {
        io_concurrency: n,
        ..crate::io_properties::tests::sample()
    };
    assert_eq!(
        IoConcurrency::resolve(Some(64), Some(&disk(16))),
        IoConcurrency {
            ring_depth: 64,
            source: IoConcurrencySource::Setting
        }
    );
    assert_eq!(
        IoConcurrency::resolve(None, Some(&disk(16))),
        IoConcurrency {
            ring_depth: 16,
            source: IoConcurrencySource::IoProperties { measured: 16 }
        }
    );
    // A disk that wants 2 in flight still gets rings deep enough for the network.
    assert_eq!(IoConcurrency::resolve(None, Some(&disk(2))).ring_depth, 8);
    assert_eq!(
        IoConcurrency::resolve(None, None),
        IoConcurrency {
            ring_depth: DEFAULT_IO_CONCURRENCY,
            source: IoConcurrencySource::Default
        }
    );
}

#[test]
fn shards_and_cores_choose_cpus() {
    let c = Config::resolve(cli(&["--shards", "2"]), &cpus("2-5")).unwrap();
    assert_eq!(c.cores.to_string(), "2-3");
    let c = Config::resolve(cli(&["--cores", "3,5"]), &cpus("2-5")).unwrap();
    assert_eq!(c.cores.to_string(), "3,5");
    let e = Config::resolve(cli(&["--cores", "7"]), &cpus("0-3")).unwrap_err();
    assert!(e.to_string().contains("may only run on 0-3"), "{e}");
    let e = Config::resolve(cli(&["--shards", "5"]), &cpus("0-3")).unwrap_err();
    assert!(e.to_string().contains("between 1 and the 4 CPUs"), "{e}");
    assert!(Config::resolve(cli(&["--shards", "0"]), &cpus("0")).is_err());
    assert!(Cli::try_parse_from(["corekv-server", "--shards", "1", "--cores", "0"]).is_err());
}

#[test]
fn file_settings_apply_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corekv.toml");
    std::fs::write(
        &path,
        "data_dir = \"/srv/kv\"\nlisten = \"0.0.0.0:9000\"\nshards = 1\n\
         durability = \"periodic:50\"\nlog_format = \"json\"\nio_concurrency = 24\n\
         transparent_huge_pages = true\nidle_poll_us = 0\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = Config::resolve(cli(&["--config", p]), &cpus("0-1")).unwrap();
    assert!(c.transparent_huge_pages);
    assert_eq!(c.idle_poll_us, 0);
    assert_eq!(c.data_dir, PathBuf::from("/srv/kv"));
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.shard_count(), 1);
    assert_eq!(c.durability, Durability::Periodic { interval_ms: 50 });
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.io_concurrency, Some(24));
    let c = Config::resolve(
        cli(&[
            "--config",
            p,
            "--cores",
            "1",
            "--durability",
            "none",
            "--data-dir",
            "d",
            "--transparent-huge-pages",
            "false",
            "--idle-poll-us",
            "50",
        ]),
        &cpus("0-1"),
    )
    .unwrap();
    assert!(!c.transparent_huge_pages);
    assert_eq!(c.idle_poll_us, 50);
    assert_eq!(c.cores.to_string(), "1");
    assert_eq!(c.durability, Durability::None);
    assert_eq!(c.data_dir, PathBuf::from("d"));
}

#[test]
fn bad_files_are_reported_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "data_dirr = \"x\"\n").unwrap();
    let e = Config::resolve(cli(&["--config", path.to_str().unwrap()]), &cpus("0")).unwrap_err();
    assert!(
        e.to_string().contains("bad.toml") && e.to_string().contains("data_dirr"),
        "{e}"
    );
    std::fs::write(&path, "durability = \"sometimes\"\n").unwrap();
    let e = Config::resolve(cli(&["--config", path.to_str().unwrap()]), &cpus("0")).unwrap_err();
    assert!(e.to_string().contains("durability"), "{e}");
    let e = Config::resolve(cli(&["--config", "/nonexistent/x.toml"]), &cpus("0")).unwrap_err();
    assert!(e.to_string().contains("cannot read config file"), "{e}");
}

#[test]
fn storage_settings_reach_the_engine_options_and_are_validated() {
    let c = Config::resolve(cli(&[]), &cpus("0")).unwrap();
    let defaults = Options::default();
    assert_eq!(
        c.storage.memtable_size_bytes_max,
        defaults.memtable_size_bytes_max
    );
    assert_eq!(c.storage.durability, Durability::Sync);
    assert!(c.fault_plan.is_none());
    let c = Config::resolve(
        cli(&[
            "--memtable-size-bytes",
            "65536",
            "--wal-segment-size-bytes",
            "131072",
            "--durability",
            "none",
            "--debug-fault-injection",
            "write=enospc@10+",
        ]),
        &cpus("0"),
    )
    .unwrap();
    assert_eq!(c.storage.memtable_size_bytes_max, 65536);
    assert_eq!(c.storage.wal_segment_size_bytes, 131072);
    assert_eq!(c.storage.durability, Durability::None);
    assert_eq!(c.fault_plan.unwrap().rules.len(), 1);
    let e = Config::resolve(cli(&["--wal-segment-size-bytes", "1000"]), &cpus("0")).unwrap_err();
    assert!(e.to_string().contains("wal_segment_size_bytes"), "{e}");
    assert!(
        Cli::try_parse_from(["corekv-server", "--debug-fault-injection", "write=melt@1"]).is_err()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corekv.toml");
    std::fs::write(&path, "memtable_size_bytes = 8192\n").unwrap();
    let c = Config::resolve(cli(&["--config", path.to_str().unwrap()]), &cpus("0")).unwrap();
    assert_eq!(c.storage.memtable_size_bytes_max, 8192);
}

#[test]
fn idle_poll_is_bounded() {
    let c = Config::resolve(cli(&["--idle-poll-us", "100000"]), &cpus("0")).unwrap();
    assert_eq!(c.idle_poll_us, IDLE_POLL_US_MAX);
    let e = Config::resolve(cli(&["--idle-poll-us", "100001"]), &cpus("0")).unwrap_err();
    assert!(e.to_string().contains("`idle_poll_us` is 100001"), "{e}");
    assert!(Cli::try_parse_from(["corekv-server", "--idle-poll-us", "-1"]).is_err());
}

#[test]
fn port_room_is_checked() {
    let e = Config::resolve(cli(&["--listen", "127.0.0.1:65535"]), &cpus("0-1")).unwrap_err();
    assert!(e.to_string().contains("per-shard ports"), "{e}");
}

#[test]
fn this_process_has_cpus() {
    let cpus = allowed_cpus().unwrap();
    assert!(!cpus.is_empty());
    // std's figure is the affinity mask, possibly lowered by a cgroup CPU quota.
    let std_count = std::thread::available_parallelism().unwrap().get();
    assert!(
        std_count <= cpus.len(),
        "std sees {std_count}, affinity has {cpus}"
    );
}

#[test]
fn cluster_settings_need_a_cluster_and_reach_it() {
    let cluster = [
        "--node-id",
        "1",
        "--peer-listen",
        "127.0.0.1:7479",
        "--initial-cluster",
        "1=127.0.0.1:7479,2=127.0.0.1:8479,3=127.0.0.1:9479",
    ];
    let c = Config::resolve(cli(&cluster), &cpus("0-1")).unwrap();
    let cc = c.cluster.unwrap();
    assert_eq!(cc.read_mode, ReadMode::ReadIndex);
    // Two shards per node: each is a replica of its own group.
    assert_eq!(c.cores.len(), 2);

    assert_eq!(cc.request_timeout_ms, 5_000);
    assert_eq!(cc.log_retain_mib, 64);
    // The cluster's flags and `more`.
    let resolve = |more: &[&str]| {
        let mut args = cluster.to_vec();
        args.extend_from_slice(more);
        Config::resolve(cli(&args), &cpus("0-1"))
    };
    let cc = resolve(&[
        "--read-mode",
        "lease",
        "--log-retain-entries",
        "50",
        "--request-timeout-ms",
        "60000",
        "--log-retain-mib",
        "8",
    ])
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!((cc.read_mode, cc.log_retain_entries), (ReadMode::Lease, 50));
    assert_eq!(cc.log_retain_mib, 8);
    assert_eq!(cc.request_timeout_ms, 60_000);
    assert_eq!(cc.max_uncommitted_mib, 64);
    assert_eq!(cc.snapshot_send_mib_per_s, 100);
    let cc = resolve(&["--max-uncommitted-mib", "2"])
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(cc.max_uncommitted_mib, 2);
    for bad in ["0", "1048577"] {
        let e = resolve(&["--max-uncommitted-mib", bad])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at least 1") && e.contains("at most 1048576"),
            "{e}"
        );
    }
    let e = Config::resolve(cli(&["--max-uncommitted-mib", "2"]), &cpus("0-1")).unwrap_err();
    assert!(e.to_string().contains("--max-uncommitted-mib"), "{e}");
    let cc = resolve(&["--snapshot-send-mib-per-s", "0"])
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(cc.snapshot_send_mib_per_s, 0);

    // Clients are told the listen address; with 0.0.0.0, the peer host; or what is advertised.
    let mut args = cluster.to_vec();
    args.extend(["--listen", "0.0.0.0:7379"]);
    let cc = Config::resolve(cli(&args), &cpus("0")).unwrap().cluster;
    assert_eq!(cc.unwrap().client_address, "127.0.0.1:7379");
    args.extend(["--advertise-host", "10.1.2.3"]);
    let cc = Config::resolve(cli(&args), &cpus("0")).unwrap().cluster;
    assert_eq!(cc.unwrap().client_address, "10.1.2.3:7379");
    let mut args = cluster.to_vec();
    args.extend(["--advertise-host", "0.0.0.0"]);
    let e = Config::resolve(cli(&args), &cpus("0")).unwrap_err();
    assert!(e.to_string().contains("unspecified"), "{e}");

    for alone in [
        &["--read-mode", "lease"][..],
        &["--log-retain-entries", "5"],
        &["--log-retain-mib", "5"],
        &["--advertise-host", "10.1.2.3"],
        &["--request-timeout-ms", "100"],
    ] {
        let e = Config::resolve(cli(alone), &cpus("0")).unwrap_err();
        assert!(e.to_string().contains("needs a cluster"), "{e}");
    }
    assert!(Cli::try_parse_from(["corekv-server", "--read-mode", "sometimes"]).is_err());
}
