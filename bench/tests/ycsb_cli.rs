//! `corekv-bench ycsb` as a user runs it: YCSB-format stdout that parses, `--json`, exit codes.

// Test code: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use corekv_bench::ycsb::report::parse_ycsb;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn prints_ycsb_format_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("out.json");
    let out = bench(&[
        "ycsb",
        "--backend",
        "memory",
        "--workload",
        "b",
        "--records",
        "500",
        "--operations",
        "2000",
        "--threads",
        "2",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = parse_ycsb(&stdout).unwrap();
    let get = |section: &str, metric: &str| -> Vec<f64> {
        lines
            .iter()
            .filter(|l| l.section == section && l.metric == metric)
            .map(|l| l.number().unwrap())
            .collect()
    };
    // Two phases: load then run.
    assert_eq!(get("OVERALL", "RunTime(ms)").len(), 2);
    assert_eq!(get("INSERT", "Operations"), vec![500.0]);
    let reads = get("READ", "Operations")[0];
    let updates = get("UPDATE", "Operations")[0];
    assert_eq!(reads + updates, 2000.0);
    for metric in [
        "AverageLatency(us)",
        "MinLatency(us)",
        "MaxLatency(us)",
        "95thPercentileLatency(us)",
        "99thPercentileLatency(us)",
        "Return=OK",
    ] {
        assert_eq!(get("READ", metric).len(), 1, "[READ], {metric} missing");
    }
    assert_eq!(get("DRIVER", "CpuTime(ms)").len(), 2);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let phases = json["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0]["phase"], "load");
    let run = &phases[1];
    assert_eq!(
        run["operations"]["READ"]["operations"].as_f64(),
        Some(reads)
    );
    assert!(run["operations"]["READ"]["p99_9_latency_us"].is_u64());
    assert_eq!(run["overall"]["operations"], 2000);
    assert!(run["driver"]["cpu_utilization_percent"].is_f64());
}

#[test]
fn unreachable_server_and_bad_flags_fail_clearly() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = bench(&[
        "ycsb",
        "--backend",
        "redis",
        "--addr",
        &addr,
        "--records",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("cannot connect"),
        "{stderr}"
    );

    // etcd fails the same way, naming the member it tried.
    let out = bench(&[
        "ycsb",
        "--backend",
        "etcd",
        "--addr",
        &addr,
        "--records",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("cannot connect to etcd"),
        "{stderr}"
    );

    // Only etcd takes a list of addresses.
    let out = bench(&[
        "ycsb",
        "--backend",
        "redis",
        "--addr",
        "127.0.0.1:1,127.0.0.1:2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only --backend etcd"));

    let out = bench(&["ycsb", "--workload", "z"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workload"));
}

#[test]
fn without_addr_corekv_runs_against_an_in_process_server() {
    let cpu = corekv_bench::sys::allowed_cpus().unwrap()[0].to_string();
    // The one-command path, with its defaults (durability sync) on one shard.
    let out = bench(&[
        "ycsb",
        "--records",
        "200",
        "--operations",
        "300",
        "--server-cores",
        &cpu,
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("in-process corekv server"), "{stderr}");
    let lines = parse_ycsb(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let ok = |section: &str| {
        lines
            .iter()
            .filter(|l| l.section == section && l.metric == "Return=OK")
            .map(|l| l.number().unwrap())
            .sum::<f64>()
    };
    assert_eq!(ok("INSERT"), 200.0);
    assert_eq!(ok("READ") + ok("UPDATE"), 300.0);
    assert!(
        lines
            .iter()
            .all(|l| !l.metric.starts_with("Return=") || l.metric == "Return=OK")
    );

    // Server flags make no sense against another backend.
    let out = bench(&["ycsb", "--backend", "redis", "--server-cores", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in-process"));
}
