//! Durability across restarts with `--durability sync`: every write the server acknowledged is
//! there after a clean stop (SIGTERM) and after a crash (SIGKILL), while writers were busy.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_proto::client::TokioRuntime;
use corekv_proto::{Client, Connection, ErrorCode, Op, OpResult, ScanOp};
use corekv_tests::{PROCESS_DEADLINE, Server, ServerOptions, block_on, test_dir};

/// Acknowledged state: key -> value (`None` = deleted), as the writers saw it acknowledged.
type Acked = Arc<Mutex<BTreeMap<Vec<u8>, Option<Vec<u8>>>>>;

/// Writers that keep writing (single puts, deletes and batches, several in flight) until the
/// server goes away, recording every acknowledged write. Each key is written by one writer
/// only, in order, so the last acknowledged write of a key is its expected value.
fn start_writers(
    addr: SocketAddr,
    acked: Acked,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|w| {
            let (acked, count, stop) = (Arc::clone(&acked), Arc::clone(&count), Arc::clone(&stop));
            std::thread::spawn(move || {
                block_on(async move {
                    let client = Client::connect(TokioRuntime, addr).await.unwrap();
                    // Tasks with disjoint keys, so that several writes are in flight at once.
                    let tasks = (0..8).map(|t| {
                        let (client, acked, count, stop) = (
                            client.clone(),
                            Arc::clone(&acked),
                            Arc::clone(&count),
                            Arc::clone(&stop),
                        );
                        async move {
                            let mut i = 0u64;
                            while !stop.load(Ordering::SeqCst) {
                                let key = format!("w{w}:t{t}:k{}", i % 50).into_bytes();
                                let value = format!("v{i}").into_bytes();
                                let outcome = match i % 10 {
                                    0 => client.delete(&key).await.map(|_| None),
                                    1 => {
                                        let ops = vec![Op::Put {
                                            key: key.clone(),
                                            value: value.clone(),
                                            ttl_ms: 0,
                                        }];
                                        match client.batch(ops).await {
                                            Ok(r) => match &r[0] {
                                                OpResult::Write { .. } => Ok(Some(value)),
                                                OpResult::Error(e) => {
                                                    Err(corekv_proto::Error::Server(e.clone()))
                                                }
                                                other => panic!("batch put answered {other:?}"),
                                            },
                                            Err(e) => Err(e),
                                        }
                                    }
                                    _ => client.put(&key, &value).await.map(|_| Some(value)),
                                };
                                match outcome {
                                    Ok(v) => {
                                        acked.lock().unwrap().insert(key, v);
                                        count.fetch_add(1, Ordering::SeqCst);
                                    }
                                    // A stopping server refuses what it has not started, and
                                    // promises it was not applied: the key keeps its last
                                    // acknowledged value, which the restart checks.
                                    Err(corekv_proto::Error::Server(e))
                                        if e.code == ErrorCode::ShuttingDown =>
                                    {
                                        return None;
                                    }
                                    Err(corekv_proto::Error::Server(e)) => {
                                        panic!("typed error during writes: {e}")
                                    }
                                    // The server went away: this write's outcome is unknown,
                                    // and so is every later one of this key; stop here.
                                    Err(_) => return Some(key),
                                }
                                i += 1;
                            }
                            None
                        }
                    });
                    // A key whose last write failed may or may not hold that write: forget it.
                    for unknown in futures::future::join_all(tasks).await.into_iter().flatten() {
                        acked.lock().unwrap().remove(&unknown);
                    }
                });
            })
        })
        .collect()
}

fn crash_while_writing(signal: libc::c_int) {
    let dir = test_dir("restart");
    let mut server = Server::start(dir.path(), ServerOptions::default());
    let acked: Acked = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(
        server.addr,
        Arc::clone(&acked),
        Arc::clone(&count),
        Arc::clone(&stop),
    );
    // Let the writers get going (by count, not by time), then stop the server under them.
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while count.load(Ordering::SeqCst) < 2000 {
        assert!(
            Instant::now() < deadline,
            "writers made no progress:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = server.signal_and_wait(signal);
    if signal == libc::SIGTERM {
        assert_eq!(status.code(), Some(0), "{}", server.log());
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "too few writes to mean anything");

    let again = server.restart();
    block_on(async {
        let client = Client::connect(TokioRuntime, again.addr).await.unwrap();
        for (key, want) in &acked {
            let got = client.get(key).await.unwrap();
            assert_eq!(
                &got,
                want,
                "key {:?} after restart",
                String::from_utf8_lossy(key)
            );
        }
        // Nothing appears that was never written.
        let all = client
            .scan_all(&ScanOp::default(), usize::MAX)
            .await
            .unwrap();
        for (k, _) in all {
            assert!(k.starts_with(b"w"), "unexpected key {k:?}");
        }
    });
}

#[test]
fn acknowledged_writes_survive_a_clean_stop_under_load() {
    crash_while_writing(libc::SIGTERM);
}

#[test]
fn acknowledged_writes_survive_kill_9_under_load() {
    crash_while_writing(libc::SIGKILL);
}

/// Opens `count` client connections spread over the main port and every shard's own port,
/// each used once (so the server has accepted it).
async fn open_connections(server: &Server, count: usize) -> Vec<Connection> {
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let addr = match i % (server.shards + 1) {
            0 => server.addr,
            s => server.shard_addr(s - 1),
        };
        let conn = Connection::connect(TokioRuntime, addr).await.unwrap();
        conn.put(format!("conn{i}").as_bytes(), b"x", 0)
            .await
            .unwrap();
        conns.push(conn);
    }
    conns
}

/// A crashed server is back at once on its own ports, as a supervisor (systemd, Kubernetes)
/// restarts it: its old connections still linger in the kernel (FIN_WAIT_2/TIME_WAIT on the
/// server's side), which without `SO_REUSEADDR` keeps the ports unbindable for about a minute,
/// and its listeners close a few milliseconds after the process is reaped (with its io_uring
/// rings). Three stops and restarts in a row, each at once.
fn restarts_at_once_on_its_ports(signal: libc::c_int) {
    let dir = test_dir("restart-same-port");
    let mut server = Server::start(dir.path(), ServerOptions::default());
    let first_addr = server.addr;
    block_on(async {
        for round in 0..3 {
            // Kept open (the client side never closes) through the stop and the restart.
            let conns = open_connections(&server, 50).await;
            server.signal_and_wait(signal);
            let started = Instant::now();
            let again = server.restart();
            let client = Client::connect(TokioRuntime, again.addr).await.unwrap();
            assert_eq!(client.get(b"conn49").await.unwrap(), Some(b"x".to_vec()));
            let serving_after = started.elapsed();
            assert!(
                serving_after < Duration::from_secs(2),
                "round {round}: the restart took {serving_after:?} to serve on {}",
                again.addr
            );
            assert_eq!(again.addr, first_addr);
            drop(conns);
            server = again;
        }
    });
}

#[test]
fn a_server_killed_with_50_open_connections_serves_again_on_its_ports_within_2_s() {
    restarts_at_once_on_its_ports(libc::SIGKILL);
}

#[test]
fn a_server_stopped_with_50_open_connections_serves_again_on_its_ports_within_2_s() {
    restarts_at_once_on_its_ports(libc::SIGTERM);
}
