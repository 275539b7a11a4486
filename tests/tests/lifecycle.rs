//! Starting and stopping: what the server prints, a clean stop on SIGTERM/SIGINT (exit 0),
//! transparent huge pages off for the process, and
//! the clear refusals: a second server on the same data directory or on a port that is taken,
//! a restart with another shard count, bad log settings.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_proto::Connection;
use corekv_proto::client::TokioRuntime;
use std::process::{Command, Stdio};
use std::time::Instant;

use corekv_tests::{
    PROCESS_DEADLINE, Server, ServerOptions, bin_path, block_on, cpus, run, test_dir,
};

#[test]
fn startup_says_where_it_listens_and_sigterm_stops_it_cleanly() {
    let dir = test_dir("lifecycle");
    let mut server = Server::start(dir.path(), ServerOptions::default());
    let log = server.log();
    for i in 0..server.shards {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("shard {i} on CPU")))
            .unwrap_or_else(|| panic!("no startup line for shard {i}:\n{log}"));
        assert!(line.contains(&server.shard_addr(i).to_string()), "{line}");
        assert!(line.contains(&format!("shard-{i}")), "{line}");
    }
    let ready = log
        .lines()
        .find(|l| l.contains("corekv-server ready"))
        .unwrap();
    assert!(ready.contains(&server.addr.to_string()), "{ready}");
    assert!(
        ready.contains(&server.data_dir.display().to_string()),
        "{ready}"
    );
    // Transparent huge pages are off for the server process (`corekv_server::hugepages`).
    assert_eq!(thp_enabled(&server).as_deref(), thp_line().then_some("0"));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(server.log().contains("stopped cleanly"));
    // SIGINT (Ctrl-C) does the same, on a restart of the same directory; this one keeps
    // transparent huge pages as asked.
    let mut again =
        server.restart_with(ServerOptions::default().args(&["--transparent-huge-pages", "true"]));
    assert_eq!(thp_enabled(&again).as_deref(), thp_line().then_some("1"));
    let status = again.signal_and_wait(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "{}", again.log());
}

/// Whether this kernel reports `THP_enabled:` in `/proc/<pid>/status` (Linux 6.0 and later).
fn thp_line() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .contains("THP_enabled:")
}

/// The running server's `THP_enabled:` value (`0` after `PR_SET_THP_DISABLE`), if reported.
fn thp_enabled(server: &Server) -> Option<String> {
    let pid = server.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let dir = test_dir("locked");
    let first = Server::start(dir.path(), ServerOptions::shards(1));
    let err = match Server::try_start(&first.data_dir, &ServerOptions::shards(1)) {
        Ok(_) => panic!("a second server started on {:?}", first.data_dir),
        Err(log) => log,
    };
    assert!(err.contains("is in use by another corekv-server"), "{err}");
    assert!(err.contains(&first.pid().unwrap().to_string()), "{err}");
    // The first one keeps serving.
    block_on(async {
        let conn = Connection::connect(TokioRuntime, first.addr).await.unwrap();
        conn.put(b"k", b"v", 0).await.unwrap();
        assert_eq!(conn.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
    });
}

/// Runs `corekv-server` on a fresh directory with `args` and expects it to exit with an error
/// before the deadline (killed and failed otherwise); returns what it printed.
fn server_refuses(dir: &std::path::Path, args: &[&str]) -> String {
    let mut child = Command::new(bin_path("corekv-server"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--shards", "1", "--io-memory-bytes", "1048576"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "corekv-server {args:?} was not refused:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_second_server_on_a_taken_port_is_refused() {
    let dir = test_dir("port-taken");
    // The shards share the main port with SO_REUSEPORT; a second process must not join them,
    // nor share the metrics port (bound explicitly: ports the kernel picks are never shared).
    let metrics = format!("127.0.0.1:{}", corekv_tests::free_ports(1));
    let first = Server::start(
        dir.path(),
        ServerOptions::shards(1).args(&["--metrics", &metrics]),
    );
    let main = first.addr.to_string();
    let err = server_refuses(&dir.path().join("second"), &["--listen", &main]);
    assert!(err.contains(&format!("cannot listen on {main}: ")), "{err}");
    assert!(err.contains("in use"), "{err}");
    // The metrics port too (the second server on free ports of its own).
    let metrics = metrics.as_str();
    let other = format!("127.0.0.1:{}", corekv_tests::free_ports(2));
    let err = server_refuses(
        &dir.path().join("third"),
        &["--listen", &other, "--metrics", metrics],
    );
    assert!(
        err.contains(&format!("cannot listen on {metrics}: ")),
        "{err}"
    );
    // The first server still answers every connection on its main port.
    block_on(async {
        for _ in 0..8 {
            let conn = Connection::connect(TokioRuntime, first.addr).await.unwrap();
            conn.put(b"k", b"v", 0).await.unwrap();
            assert_eq!(conn.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
        }
    });
}

#[test]
fn a_restart_with_another_shard_count_is_refused() {
    if cpus() < 2 {
        eprintln!("SKIPPED: needs 2 CPUs to run two different shard counts");
        return;
    }
    let dir = test_dir("reshard");
    let mut server = Server::start(dir.path(), ServerOptions::shards(2));
    assert_eq!(server.terminate().code(), Some(0));
    let err = match Server::try_start(&server.data_dir, &ServerOptions::shards(1)) {
        Ok(_) => panic!("started with 1 shard on a 2-shard directory"),
        Err(log) => log,
    };
    assert!(err.contains("was created with 2 shards"), "{err}");
    assert!(err.contains("--shards 2"), "{err}");
    // With the recorded count it starts again.
    let _again = server.restart();
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = test_dir("json-logs");
    let mut server = Server::start(
        dir.path(),
        ServerOptions::default().args(&["--log-format", "json", "--log-level", "debug"]),
    );
    assert_eq!(server.terminate().code(), Some(0));
    let log = server.log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        messages.iter().any(|m| m.contains("corekv-server ready")),
        "{log}"
    );
    assert!(
        messages.iter().any(|m| m.contains("stopped cleanly")),
        "{log}"
    );
}

#[test]
fn a_bad_log_level_is_a_usage_error() {
    let out = run("corekv-server", &["--log-level", "info,corekv=loud"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --log-level"));
}

#[test]
fn a_damaged_io_properties_file_stops_the_start_with_its_name() {
    let dir = test_dir("io-properties");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("io-properties.toml"),
        "format_version = 1\nbogus = 3\n",
    )
    .unwrap();
    let err = match Server::try_start(&data, &ServerOptions::shards(1)) {
        Ok(_) => panic!("started with a damaged io-properties.toml"),
        Err(log) => log,
    };
    assert!(err.contains("io-properties.toml"), "{err}");
    assert!(err.contains("corekv-tune disk"), "{err}");
}

#[test]
fn a_relative_data_directory_works_like_the_quick_start() {
    let dir = test_dir("relative");
    let options = ServerOptions {
        relative_data_dir: true,
        ..ServerOptions::default()
    };
    let mut server = Server::start(dir.path(), options);
    let keys: Vec<Vec<u8>> = (0..64).map(|i| format!("rel{i}").into_bytes()).collect();
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        // Writes on every shard: the storage engine opens its WAL directory on the first one.
        for k in &keys {
            conn.put(k, b"v", 0).await.unwrap();
        }
    });
    assert_eq!(server.terminate().code(), Some(0), "{}", server.log());
    let again = server.restart();
    block_on(async {
        let conn = Connection::connect(TokioRuntime, again.addr).await.unwrap();
        for k in &keys {
            assert_eq!(conn.get(k).await.unwrap().as_deref(), Some(&b"v"[..]));
        }
    });
}
