//! Starting and stopping: what the server prints, a clean stop on SIGTERM/SIGINT (exit 0), and
//! the clear refusals: a second server on the same data directory, a restart with another
//! shard count, bad log settings.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_proto::Connection;
use corekv_proto::client::TokioRuntime;
use corekv_tests::{Server, ServerOptions, block_on, cpus, run, test_dir};

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
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(server.log().contains("stopped cleanly"));
    // SIGINT (Ctrl-C) does the same, on a restart of the same directory.
    let mut again = server.restart();
    let status = again.signal_and_wait(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "{}", again.log());
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
