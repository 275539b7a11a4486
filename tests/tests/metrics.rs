//! `corekv-server --metrics ADDR`: a real server serves requests, `/metrics` is scraped before
//! and after, Prometheus' own checker (`promtool check metrics`) accepts the output, and the
//! counters, histograms and gauges moved by what was served.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use corekv_proto::client::TokioRuntime;
use corekv_proto::{CasOp, Connection, Op, shard_for_key};
use corekv_tests::{Server, ServerOptions, block_on, test_dir};

/// Sends one raw HTTP request; returns (status line, headers, body).
fn http(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, headers, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: corekv\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    body
}

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse::<f64>().unwrap())
        })
        .collect()
}

/// Sum over shards of the samples of `name` whose labels include every `label`.
fn total(s: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

fn promtool_check(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is not installed ({e}): tests/setup.sh installs Debian's `prometheus` package"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rejected the output:\n{}{}\n--- output ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The address the server logged for its metrics endpoint (started with port 0, so the
/// kernel picked a free port that no other test can be given too).
fn metrics_addr(server: &Server) -> SocketAddr {
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("serving Prometheus metrics on http://"))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("unreadable metrics line: {line}"));
    let addr: SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0, "{line}");
    addr
}

#[test]
fn metrics_pass_promtool_and_move_with_requests() {
    let dir = test_dir("metrics");
    let server = Server::start(
        dir.path(),
        ServerOptions::shards(2).args(&["--metrics", "127.0.0.1:0"]),
    );
    let metrics = metrics_addr(&server);
    let before = scrape(metrics);
    promtool_check(&before);
    let b = samples(&before);

    let puts = 40;
    block_on(async {
        // Shard 0's own port: keys owned by shard 1 cross over.
        let conn = Connection::connect(TokioRuntime, server.shard_addr(0))
            .await
            .unwrap();
        for i in 0..puts {
            let key = format!("metrics:{i}");
            conn.put(key.as_bytes(), b"value", 0).await.unwrap();
            assert_eq!(
                conn.get(key.as_bytes()).await.unwrap(),
                Some(b"value".to_vec())
            );
        }
        let batch: Vec<Op> = (0..10)
            .map(|i| Op::Get {
                key: format!("metrics:{i}").into_bytes(),
            })
            .collect();
        conn.batch(&batch).await.unwrap();
        // A compare-and-set whose expectation fails (an answer, not an error), and a put
        // refused for its empty key (an error).
        let cas = CasOp {
            key: b"metrics:0".to_vec(),
            expected: corekv_proto::Expected::Value(b"not-the-value".to_vec()),
            new: Some(b"x".to_vec()),
            ttl_ms: 0,
        };
        conn.cas(&cas).await.unwrap();
        assert!(conn.put(b"", b"v", 0).await.is_err());
    });

    let after_text = scrape(metrics);
    promtool_check(&after_text);
    let a = samples(&after_text);
    let delta = |name: &str, labels: &[&str]| total(&a, name, labels) - total(&b, name, labels);

    assert_eq!(
        delta("corekv_operations_total", &["op=\"put\""]),
        f64::from(puts + 1)
    );
    assert_eq!(
        delta("corekv_operations_total", &["op=\"get\""]),
        f64::from(puts + 10)
    );
    assert_eq!(delta("corekv_operation_errors_total", &["op=\"put\""]), 1.0);
    assert_eq!(delta("corekv_operation_errors_total", &["op=\"get\""]), 0.0);
    assert_eq!(
        delta("corekv_rpc_duration_seconds_count", &["method=\"put\""]),
        f64::from(puts + 1)
    );
    assert_eq!(
        delta("corekv_rpc_duration_seconds_count", &["method=\"batch\""]),
        1.0
    );
    assert_eq!(
        delta(
            "corekv_rpc_duration_seconds_bucket",
            &["method=\"get\"", "le=\"+Inf\""]
        ),
        f64::from(puts)
    );
    assert!(delta("corekv_rpc_duration_seconds_sum", &["method=\"get\""]) > 0.0);
    assert!(delta("corekv_network_received_bytes_total", &[]) > 0.0);
    assert!(delta("corekv_network_sent_bytes_total", &[]) > 0.0);
    assert!(delta("corekv_server_connections_accepted_total", &[]) >= 1.0);
    // Every acknowledged put was made durable by a WAL fdatasync (sync mode), in group commits.
    assert!(delta("corekv_storage_wal_syncs_total", &[]) >= 1.0);
    assert!(delta("corekv_storage_wal_group_commit_records_count", &[]) >= 1.0);
    assert!(delta("corekv_storage_wal_group_commit_records_sum", &[]) >= f64::from(puts));
    assert!(total(&a, "corekv_storage_memtable_bytes", &[]) > 0.0);
    // No io-properties in the test's data directory and no --io-concurrency: glommio's default.
    for shard in 0..server.shards {
        assert_eq!(
            a.get(&format!("corekv_server_io_ring_depth{{shard=\"{shard}\"}}")),
            Some(&128.0)
        );
    }
    // The LSM's figures are exported for every shard, whether or not they moved yet.
    for family in [
        "corekv_storage_level_files",
        "corekv_storage_level_bytes",
        "corekv_storage_write_stalls_total",
        "corekv_storage_write_stall_seconds_total",
        "corekv_storage_flush_bytes_written_total",
        "corekv_storage_compaction_bytes_read_total",
        "corekv_storage_compaction_bytes_written_total",
        "corekv_storage_block_cache_hits_total",
        "corekv_storage_block_cache_misses_total",
    ] {
        let shards_reporting = a
            .keys()
            .filter(|k| k.split('{').next() == Some(family))
            .filter(|k| !k.contains("level=") || k.contains("level=\"0\""))
            .count();
        assert_eq!(
            shards_reporting, server.shards,
            "{family} in:\n{after_text}"
        );
    }
    if server.shards > 1 {
        let owned_by_1 = (0..puts)
            .filter(|i| shard_for_key(format!("metrics:{i}").as_bytes(), 2) == 1)
            .count();
        assert!(owned_by_1 > 0);
        assert!(delta("corekv_server_cross_shard_messages_sent_total", &[]) >= owned_by_1 as f64);
        assert!(delta("corekv_server_ops_forwarded_out_total", &["shard=\"0\""]) > 0.0);
    }
}

#[test]
fn lsm_metrics_move_when_data_reaches_tables() {
    let dir = test_dir("metrics-lsm");
    // A 64 KiB memtable: a few hundred KiB of puts make several level-0 tables.
    let server = Server::start(
        dir.path(),
        ServerOptions::shards(1).args(&[
            "--metrics",
            "127.0.0.1:0",
            "--memtable-size-bytes",
            "65536",
        ]),
    );
    let metrics = metrics_addr(&server);
    let before = samples(&scrape(metrics));
    let keys = 2000;
    let value = vec![b'v'; 200];
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.shard_addr(0))
            .await
            .unwrap();
        for chunk in (0..keys).collect::<Vec<u32>>().chunks(100) {
            let ops: Vec<Op> = chunk
                .iter()
                .map(|i| Op::Put {
                    key: format!("lsm:{i:05}").into_bytes(),
                    value: value.clone(),
                    ttl_ms: 0,
                })
                .collect();
            conn.batch(&ops).await.unwrap();
        }
    });
    // Flushes run in the background: wait (bounded) until one has finished.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut after = samples(&scrape(metrics));
    while total(&after, "corekv_storage_flushes_total", &[]) == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no flush after {keys} puts into a 64 KiB memtable"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        after = samples(&scrape(metrics));
    }
    // Read the first keys back: they are in tables now, so the block cache is consulted.
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.shard_addr(0))
            .await
            .unwrap();
        for i in 0..50 {
            let key = format!("lsm:{i:05}");
            assert_eq!(conn.get(key.as_bytes()).await.unwrap(), Some(value.clone()));
        }
    });
    let text = scrape(metrics);
    promtool_check(&text);
    let after = samples(&text);
    let delta = |name: &str| total(&after, name, &[]) - total(&before, name, &[]);
    assert!(
        delta("corekv_storage_flush_bytes_written_total") > 0.0,
        "{text}"
    );
    assert!(
        total(&after, "corekv_storage_level_files", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        total(&after, "corekv_storage_level_bytes", &[]) > 0.0,
        "{text}"
    );
    assert!(
        delta("corekv_storage_block_cache_hits_total")
            + delta("corekv_storage_block_cache_misses_total")
            > 0.0,
        "{text}"
    );
}

#[test]
fn other_paths_and_methods_get_http_errors() {
    let dir = test_dir("metrics-http");
    let server = Server::start(
        dir.path(),
        ServerOptions::shards(1).args(&["--metrics", "127.0.0.1:0"]),
    );
    let metrics = metrics_addr(&server);
    assert_eq!(
        http(metrics, "GET / HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http(metrics, "POST /metrics HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(http(metrics, "hello\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    // Still serving after the bad requests.
    assert!(scrape(metrics).contains("corekv_operations_total"));
}
