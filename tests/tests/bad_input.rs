//! Bad input: garbage, malformed and truncated frames close only their own connection and are
//! counted; oversized keys, values and batches get typed errors on a connection that stays
//! usable; clients that vanish mid-request leak nothing; idle connections by the thousand and
//! pipelining without limit do not stop others from being served.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use corekv_proto::client::TokioRuntime;
use corekv_proto::ops::counter_total;
use corekv_proto::{Client, Connection, Error, ErrorCode, Op, OpResult, ShardStats};
use corekv_tests::{PROCESS_DEADLINE, Server, ServerOptions, block_on, test_dir};

async fn try_stats(server: &Server) -> Result<Vec<ShardStats>, Error> {
    Connection::connect(TokioRuntime, server.addr)
        .await?
        .stats()
        .await
}

async fn stats(server: &Server) -> Vec<ShardStats> {
    try_stats(server).await.unwrap()
}

/// Waits (by polling) until the server's counters satisfy `done`. A stats connection the
/// server refuses (it may be at its connection limit) is retried.
async fn wait_for_stats(server: &Server, what: &str, done: impl Fn(&[ShardStats]) -> bool) {
    let deadline = Instant::now() + PROCESS_DEADLINE;
    loop {
        let s = try_stats(server).await;
        if s.as_deref().is_ok_and(&done) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `bytes` on a fresh connection and returns once the server has closed it.
fn send_and_expect_close(server: &Server, bytes: &[u8], half_close: bool) {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(PROCESS_DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            // The server may send an Abort message before closing; read to the end.
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

/// A Cap'n Proto stream frame header: segment count - 1, then each segment's size in words.
fn frame_header(words: u32) -> Vec<u8> {
    let mut h = 0u32.to_le_bytes().to_vec();
    h.extend_from_slice(&words.to_le_bytes());
    h
}

#[test]
fn garbage_malformed_truncated_and_oversized_frames_close_only_their_connection() {
    let dir = test_dir("garbage");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let bystander = Client::connect(TokioRuntime, server.addr).await.unwrap();
        bystander.put(b"before", b"1").await.unwrap();
    });
    // Not Cap'n Proto at all (an HTTP request: "GET " reads as a huge segment count).
    send_and_expect_close(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    // Well framed, but the message is not a valid RPC message.
    let mut malformed = frame_header(4);
    malformed.extend_from_slice(&[0xff; 32]);
    send_and_expect_close(&server, &malformed, false);
    // A frame cut short, then the client stops sending.
    let mut truncated = frame_header(100);
    truncated.extend_from_slice(&[0; 80]);
    send_and_expect_close(&server, &truncated, true);
    // A frame announcing 1.6 GB: refused from its header, nothing allocated.
    send_and_expect_close(&server, &frame_header(200 << 20), false);
    block_on(async {
        wait_for_stats(&server, "4 protocol errors", |s| {
            counter_total(s, "protocol_errors_total") == 4
        })
        .await;
        // Everyone else is still served.
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        assert_eq!(
            client.get(b"before").await.unwrap().as_deref(),
            Some(&b"1"[..])
        );
        client.put(b"after", b"2").await.unwrap();
    });
}

fn typed(e: Error) -> (ErrorCode, u64, u64) {
    match e {
        Error::Server(e) => (e.code, e.limit, e.actual),
        other => panic!("expected a typed server error, got {other}"),
    }
}

#[test]
fn oversized_keys_values_and_batches_get_typed_errors_and_the_connection_stays_usable() {
    let dir = test_dir("oversized");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        let big_value = vec![7u8; (8 << 20) + 1];
        let e = conn.put(b"k", &big_value, 0).await.unwrap_err();
        assert_eq!(typed(e), (ErrorCode::ValueTooLarge, 8 << 20, (8 << 20) + 1));
        let big_key = vec![b'k'; (16 << 10) + 1];
        let e = conn.get(&big_key).await.unwrap_err();
        assert_eq!(typed(e), (ErrorCode::KeyTooLarge, 16 << 10, (16 << 10) + 1));
        let e = conn.delete(b"").await.unwrap_err();
        assert_eq!(typed(e).0, ErrorCode::EmptyKey);
        // The largest value accepted is accepted, on the same connection.
        let max_value = vec![9u8; 8 << 20];
        conn.put(b"k", &max_value, 0).await.unwrap();
        assert_eq!(
            conn.get(b"k").await.unwrap().map(|v| v.len()),
            Some(8 << 20)
        );
        // In a batch, only the bad operation fails.
        let ops = vec![
            Op::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                ttl_ms: 0,
            },
            Op::Put {
                key: b"b".to_vec(),
                value: big_value.clone(),
                ttl_ms: 0,
            },
            Op::Get { key: b"a".to_vec() },
        ];
        let r = conn.batch(&ops).await.unwrap();
        let OpResult::Write { sequence } = r[0] else {
            panic!("{:?}", r[0]);
        };
        assert!(matches!(&r[1], OpResult::Error(e) if e.code == ErrorCode::ValueTooLarge));
        assert_eq!(
            r[2],
            OpResult::Get(Some(corekv_proto::Versioned {
                value: b"1".to_vec(),
                sequence
            }))
        );
        assert_eq!(conn.get(b"b").await.unwrap(), None);
        // Too many operations: every result says so and nothing is applied.
        let ops: Vec<Op> = (0..10_001)
            .map(|i| Op::Put {
                key: format!("many{i}").into_bytes(),
                value: vec![],
                ttl_ms: 0,
            })
            .collect();
        let r = conn.batch(&ops).await.unwrap();
        assert_eq!(r.len(), 10_001);
        assert!(
            r.iter()
                .all(|r| matches!(r, OpResult::Error(e) if e.code == ErrorCode::BatchTooLarge))
        );
        assert_eq!(conn.get(b"many0").await.unwrap(), None);
        // Too many bytes: 9 values of 8 MiB exceed the 64 MiB batch limit.
        let ops: Vec<Op> = (0..9)
            .map(|i| Op::Put {
                key: format!("fat{i}").into_bytes(),
                value: max_value.clone(),
                ttl_ms: 0,
            })
            .collect();
        let r = conn.batch(&ops).await.unwrap();
        assert!(
            r.iter()
                .all(|r| matches!(r, OpResult::Error(e) if e.code == ErrorCode::BatchTooLarge))
        );
        conn.put(b"still", b"usable", 0).await.unwrap();
        assert_eq!(
            conn.get(b"still").await.unwrap().as_deref(),
            Some(&b"usable"[..])
        );
    });
}

#[test]
fn clients_that_vanish_mid_request_leak_nothing() {
    let dir = test_dir("vanish");
    let server = Server::start(dir.path(), ServerOptions::default());
    // Several clients pipeline writes and reads and disconnect without waiting for replies.
    for round in 0..5 {
        let addr = server.addr;
        std::thread::spawn(move || {
            block_on(async move {
                let conn = Connection::connect(TokioRuntime, addr).await.unwrap();
                let value = vec![round as u8; 64 << 10];
                let calls: Vec<_> = (0..200)
                    .map(|i| {
                        let conn = &conn;
                        let value = &value;
                        Box::pin(async move {
                            let key = format!("vanish{round}:{i}").into_bytes();
                            let _ = conn.put(&key, value, 0).await;
                            let _ = conn.get(&key).await;
                        })
                    })
                    .collect();
                // Start every call (they are written to the socket), then drop them all and
                // the connection with them.
                let mut all = futures::future::join_all(calls);
                let _ = futures::poll!(&mut all);
                tokio::time::sleep(Duration::from_millis(1)).await;
                let _ = futures::poll!(&mut all);
            })
        })
        .join()
        .unwrap();
    }
    block_on(async {
        // Only our own stats connection stays open, and no request is still running.
        wait_for_stats(&server, "connections to close", |s| {
            counter_total(s, "connections_open") == 1 && counter_total(s, "work_in_flight") == 0
        })
        .await;
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        client.put(b"alive", b"yes").await.unwrap();
        assert_eq!(
            client.get(b"alive").await.unwrap().as_deref(),
            Some(&b"yes"[..])
        );
    });
}

#[test]
fn thousands_of_idle_connections_do_not_stop_others() {
    let dir = test_dir("idle");
    let server = Server::start(dir.path(), ServerOptions::default());
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("busy{i}").into_bytes()).collect();
        for r in futures::future::join_all(keys.iter().map(|k| client.put(k, k))).await {
            r.unwrap();
        }
        for k in &keys {
            assert_eq!(client.get(k).await.unwrap().as_deref(), Some(&k[..]));
        }
        // 2000 idle + the client's connections (one per shard) + this stats connection.
        wait_for_stats(&server, "idle connections to be accepted", |s| {
            counter_total(s, "connections_open") as usize == 2000 + server.shards + 1
        })
        .await;
    });
    drop(idle);
    block_on(async {
        wait_for_stats(&server, "idle connections to close", |s| {
            counter_total(s, "connections_open") == 1
        })
        .await;
    });
}

#[test]
fn connections_beyond_the_limit_are_refused_and_counted() {
    let dir = test_dir("conn-limit");
    let server = Server::start(
        dir.path(),
        ServerOptions::shards(1).args(&["--shard-connections-max", "3"]),
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Wait until the server has accepted all three (each shows as open).
    let deadline = Instant::now() + PROCESS_DEADLINE;
    let mut refused = 0;
    while refused == 0 {
        assert!(
            Instant::now() < deadline,
            "a fourth connection was never refused"
        );
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1];
        // Refused connections are closed at once: the read sees end of stream.
        if let Ok(0) = s.read(&mut buf) {
            refused += 1;
        }
    }
    drop(held);
    block_on(async {
        wait_for_stats(&server, "a refusal to be counted", |s| {
            counter_total(s, "connections_rejected_total") >= 1
        })
        .await;
    });
}

#[test]
fn a_connection_that_pipelines_without_limit_is_throttled_and_fully_answered() {
    let dir = test_dir("backpressure");
    let server = Server::start(
        dir.path(),
        ServerOptions::shards(2).args(&["--connection-inflight-ops-max", "4"]),
    );
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("bp{i}").into_bytes()).collect();
        let puts = futures::future::join_all(keys.iter().map(|k| conn.put(k, k, 0))).await;
        assert!(puts.iter().all(Result::is_ok));
        let gets = futures::future::join_all(keys.iter().map(|k| conn.get(k))).await;
        for (k, g) in keys.iter().zip(gets) {
            assert_eq!(g.unwrap().as_deref(), Some(&k[..]));
        }
        let s = stats(&server).await;
        assert!(counter_total(&s, "reads_throttled_total") > 0, "{s:?}");
    });
}
