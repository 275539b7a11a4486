//! The wire contract as the schema states it (`proto/schema/corekv.capnp`): what its comments
//! promise, checked against a real server.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use corekv_proto::client::TokioRuntime;
use corekv_proto::{Client, Connection, Op, OpResult, ScanOp};
use corekv_tests::{Server, ServerOptions, block_on, repo_root, test_dir};

/// The counter names (backticked snake_case) the schema's `ShardStats` text mentions.
fn counters_named_in_schema() -> BTreeSet<String> {
    let schema = std::fs::read_to_string(repo_root().join("proto/schema/corekv.capnp")).unwrap();
    let start = schema
        .find("struct ShardStats")
        .expect("ShardStats in the schema");
    let end = start + schema[start..].find("\n}").expect("end of ShardStats");
    schema[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| {
            name.contains('_')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_counter_the_schema_names_is_in_stats() {
    let named = counters_named_in_schema();
    assert!(named.len() >= 6, "names found in the schema: {named:?}");
    let dir = test_dir("contract-stats");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        client.put(b"k", b"v").await.unwrap();
        for shard in client.stats().await.unwrap() {
            for name in &named {
                assert!(
                    shard.counter(name).is_some(),
                    "the schema names `{name}`, shard {} does not report it",
                    shard.id
                );
            }
        }
    });
}

/// Scan bounds are checked against the key limit (plus the one byte a continuation adds): a
/// longer bound is `invalidArgument`, one of exactly that length is accepted.
#[test]
fn scan_bounds_longer_than_a_key_and_one_byte_are_invalid() {
    let dir = test_dir("contract-scan-bounds");
    // The default key limit (16 KiB, as the schema says).
    let key_max = 16 << 10;
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        for reverse in [false, true] {
            let fits = ScanOp {
                start: vec![b'a'; key_max + 1],
                end: vec![b'b'; key_max + 1],
                limit: 10,
                reverse,
            };
            assert!(conn.scan(&fits).await.is_ok());
            for long in [
                ScanOp {
                    start: vec![b'a'; key_max + 2],
                    ..fits.clone()
                },
                ScanOp {
                    end: vec![b'b'; key_max + 2],
                    ..fits.clone()
                },
            ] {
                let r = conn.batch(&[Op::Scan(long)]).await.unwrap();
                match &r[0] {
                    OpResult::Error(e) => {
                        assert_eq!(e.code, corekv_proto::ErrorCode::InvalidArgument, "{e:?}")
                    }
                    other => panic!("a bound over the limit was accepted: {other:?}"),
                }
            }
        }
    });
}

/// Calls on one connection that touch the same key take effect in the order sent, as Redis
/// users expect of pipelined commands: a `get` (or `batch`, or `scan`) sent right after an
/// unanswered `put` of its key sees that put, and a `cas` sent after it compares with it.
#[test]
fn pipelined_calls_on_one_connection_take_effect_in_order() {
    let dir = test_dir("contract-order");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        // The main port (forwarding between shards) and a shard's own port.
        for addr in [server.addr, server.shard_addr(0)] {
            let conn = Connection::connect(TokioRuntime, addr).await.unwrap();
            for i in 0..40u32 {
                let key = format!("order:{}", i % 7).into_bytes();
                let value = format!("v{i}").into_bytes();
                // Both requests are sent before either is answered.
                let (put, got) = futures::join!(conn.put(&key, &value, 0), conn.get(&key));
                put.unwrap();
                assert_eq!(
                    got.unwrap(),
                    Some(value.clone()),
                    "get after put, round {i}"
                );

                let (delete, get) = (
                    [Op::Delete { key: key.clone() }],
                    [Op::Get { key: key.clone() }],
                );
                let (del, got) = futures::join!(conn.batch(&delete), conn.batch(&get));
                assert!(matches!(del.unwrap()[0], OpResult::Write { .. }));
                assert_eq!(
                    got.unwrap()[0],
                    OpResult::Get(None),
                    "batch get after batch delete, round {i}"
                );

                let scan = ScanOp {
                    start: key.clone(),
                    end: [key.as_slice(), b"\0"].concat(),
                    limit: 10,
                    reverse: false,
                };
                let (put, page) = futures::join!(conn.put(&key, &value, 0), conn.scan(&scan));
                put.unwrap();
                assert_eq!(
                    page.unwrap().entries,
                    vec![(key.clone(), value.clone())],
                    "scan after put, round {i}"
                );

                let cas = corekv_proto::CasOp {
                    key: key.clone(),
                    expected: corekv_proto::Expected::Value(b"next".to_vec()),
                    new: Some(b"after-cas".to_vec()),
                    ttl_ms: 0,
                };
                let (put, cas) = futures::join!(conn.put(&key, b"next", 0), conn.cas(&cas));
                put.unwrap();
                assert!(cas.unwrap().succeeded, "cas after put, round {i}");
            }
        }
    });
}

/// What one pipelined write got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    ShuttingDown,
    /// The connection closed without an answer: only a request the server never read may get
    /// this, so it must not have been applied either.
    Unanswered,
}

/// On a clean stop, every request the server has read gets its reply before the connection
/// closes: applied ones their result, the others `shuttingDown`; what it did not read is not
/// applied. Clients pipelining writes through SIGTERM check it key by key after a restart.
#[test]
fn a_clean_stop_answers_every_request_it_read() {
    use corekv_proto::ErrorCode;
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};
    let dir = test_dir("contract-stop");
    let mut server = Server::start(dir.path(), ServerOptions::default());
    type Outcomes = Arc<Mutex<Vec<(Vec<u8>, Outcome)>>>;
    let outcomes: Outcomes = Arc::default();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (addr, outcomes, started) = (
                if w == 0 {
                    server.addr
                } else {
                    server.shard_addr(0)
                },
                Arc::clone(&outcomes),
                Arc::clone(&started),
            );
            std::thread::spawn(move || {
                block_on(async move {
                    let conn = Connection::connect(TokioRuntime, addr).await.unwrap();
                    let conn = &conn;
                    // 64 writes in flight at a time, until the connection is gone; then
                    // what was in flight is drained and recorded too.
                    let gone = std::cell::Cell::new(false);
                    let gone = &gone;
                    let mut results = futures::stream::iter(0u64..)
                        .take_while(|_| futures::future::ready(!gone.get()))
                        .map(|i| async move {
                            let key = format!("stop:{w}:{i}").into_bytes();
                            let outcome = if i % 2 == 0 {
                                conn.put(&key, b"v", 0).await.map(|_| ())
                            } else {
                                let op = Op::Put {
                                    key: key.clone(),
                                    value: b"v".to_vec(),
                                    ttl_ms: 0,
                                };
                                conn.batch(&[op]).await.and_then(|r| match &r[0] {
                                    OpResult::Write { .. } => Ok(()),
                                    OpResult::Error(e) => {
                                        Err(corekv_proto::Error::Server(e.clone()))
                                    }
                                    other => panic!("batch put answered {other:?}"),
                                })
                            };
                            let outcome = match outcome {
                                Ok(()) => Outcome::Applied,
                                Err(e) => match e.server_error() {
                                    Some(e) if e.code == ErrorCode::ShuttingDown => {
                                        Outcome::ShuttingDown
                                    }
                                    Some(e) => panic!("write refused: {e:?}"),
                                    None => Outcome::Unanswered,
                                },
                            };
                            (key, outcome)
                        })
                        .buffered(64);
                    while let Some((key, outcome)) = results.next().await {
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if outcome == Outcome::Unanswered {
                            gone.set(true);
                        }
                        outcomes.lock().unwrap().push((key, outcome));
                    }
                })
            })
        })
        .collect();
    while started.load(std::sync::atomic::Ordering::SeqCst) < 3000 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(server.terminate().code(), Some(0), "{}", server.log());
    for w in writers {
        w.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let again = server.restart();
    let count = |o| outcomes.iter().filter(|(_, x)| *x == o).count();
    eprintln!(
        "applied {}, shuttingDown {}, unanswered {}",
        count(Outcome::Applied),
        count(Outcome::ShuttingDown),
        count(Outcome::Unanswered)
    );
    block_on(async {
        let client = Client::connect(TokioRuntime, again.addr).await.unwrap();
        for (key, outcome) in &outcomes {
            let found = client.get(key).await.unwrap().is_some();
            let key = String::from_utf8_lossy(key);
            match outcome {
                Outcome::Applied => assert!(found, "{key} was acknowledged and is lost"),
                Outcome::ShuttingDown => assert!(!found, "{key} got shuttingDown and was applied"),
                Outcome::Unanswered => {
                    assert!(
                        !found,
                        "{key} got no answer, yet the server read and applied it"
                    )
                }
            }
        }
    });
}

/// `serverInfo` reports the limits the server enforces: each is accepted at its value and
/// refused, with that limit, just above it.
#[test]
fn server_info_reports_the_limits_the_server_enforces() {
    use corekv_proto::ErrorCode;
    let dir = test_dir("contract-info");
    let server = Server::start(
        dir.path(),
        ServerOptions::default().args(&["--connection-inflight-ops-max", "77"]),
    );
    let version = corekv_tests::run("corekv-server", &["--version"]);
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        let info = conn.server_info().await.unwrap();
        assert!(
            String::from_utf8_lossy(&version.stdout).contains(&info.version),
            "{info:?}"
        );
        assert_eq!(info.protocol_version, corekv_proto::PROTOCOL_VERSION);
        assert_eq!(info.durability, "sync");
        assert_eq!(info.shard_count as usize, server.shards);
        let l = &info.limits;
        assert_eq!(l.connection_inflight_ops_max, 77);
        assert!(l.reply_bytes_max < 64 << 20 && l.frame_bytes_max > l.batch_bytes_max);
        let refused = |r: &OpResult, code: ErrorCode, limit: u64| match r {
            OpResult::Error(e) => e.code == code && e.limit == limit,
            _ => false,
        };
        // Keys.
        let key = vec![b'k'; l.key_bytes_max as usize];
        conn.put(&key, b"v", 0).await.unwrap();
        let r = conn
            .batch(&[Op::Get {
                key: vec![b'k'; l.key_bytes_max as usize + 1],
            }])
            .await
            .unwrap();
        assert!(
            refused(&r[0], ErrorCode::KeyTooLarge, l.key_bytes_max),
            "{r:?}"
        );
        // Values.
        let value = vec![7u8; l.value_bytes_max as usize];
        conn.put(b"big", &value, 0).await.unwrap();
        let e = conn
            .put(b"big", &vec![7u8; l.value_bytes_max as usize + 1], 0)
            .await
            .unwrap_err();
        let e = e.server_error().unwrap();
        assert_eq!(
            (e.code, e.limit),
            (ErrorCode::ValueTooLarge, l.value_bytes_max)
        );
        // Operations in a batch.
        let gets = |n: u64| -> Vec<Op> {
            (0..n)
                .map(|i| Op::Get {
                    key: format!("g{i}").into_bytes(),
                })
                .collect()
        };
        let r = conn.batch(&gets(l.batch_ops_max)).await.unwrap();
        assert!(r.iter().all(|r| matches!(r, OpResult::Get(None))));
        let r = conn.batch(&gets(l.batch_ops_max + 1)).await.unwrap();
        assert!(refused(&r[0], ErrorCode::BatchTooLarge, l.batch_ops_max));
        // TTL.
        conn.put(b"ttl", b"v", l.ttl_ms_max).await.unwrap();
        let e = conn.put(b"ttl", b"v", l.ttl_ms_max + 1).await.unwrap_err();
        assert_eq!(
            e.server_error().map(|e| e.code),
            Some(ErrorCode::InvalidArgument)
        );
    });
    let out = server.cli(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("durability\tsync\n"), "{text}");
    assert!(text.contains("connection_inflight_ops_max\t77\n"), "{text}");
    assert!(text.contains("key_bytes_max\t16384\n"), "{text}");
}
