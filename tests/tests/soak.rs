//! Load and soak: a server holding 1000 idle connections, 50 connections stuck in
//! the middle of a frame (a header announcing a large message, then nothing), and 200 busy
//! connections each keeping several requests in flight, round after round. Every request is
//! answered — applied, or refused with a typed error such as `overloaded` — none is lost or
//! left hanging, every acknowledged write reads back, and the server's resident memory
//! (`/proc/<pid>/status`) after the last round stays within a bound of what it was after the
//! first: nothing grows with the number of requests served.
//!
//! Bounded by rounds, not time. `COREKV_SOAK_ROUNDS=<n>` runs longer (docs/RELIABILITY.md).

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;

use corekv_proto::client::TokioRuntime;
use corekv_proto::{Connection, Error, ErrorCode};
use corekv_tests::{Server, ServerOptions, block_on, rss_bytes, test_dir};

const IDLE_CONNECTIONS: usize = 1000;
const STUCK_CONNECTIONS: usize = 50;
const BUSY_CONNECTIONS: usize = 200;
/// Requests each busy connection keeps in flight at once.
const IN_FLIGHT: usize = 4;
const VALUE_BYTES: usize = 1024;
/// Resident memory the server may gain between the end of the first round and the end of the
/// last one.
const RSS_GROWTH_BYTES_MAX: u64 = 64 << 20;

#[derive(Default)]
struct Tally {
    applied: u64,
    refused: u64,
    /// key -> last acknowledged value's round.
    acked: BTreeMap<Vec<u8>, usize>,
}

fn key(conn: usize, slot: usize) -> Vec<u8> {
    format!("soak/{conn:03}/{slot}").into_bytes()
}

fn value(conn: usize, slot: usize, round: usize) -> Vec<u8> {
    let mut v = format!("{conn}/{slot}/{round}/").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

#[test]
fn many_connections_with_requests_in_flight_are_all_answered_and_memory_stays_bounded() {
    let rounds: usize = std::env::var("COREKV_SOAK_ROUNDS")
        .ok()
        .map_or(8, |v| v.parse().expect("COREKV_SOAK_ROUNDS is a number"));
    assert!(rounds >= 2);
    let dir = test_dir("soak");
    let server = Server::start(
        dir.path(),
        ServerOptions::shards(2).args(&[
            "--memtable-size-bytes",
            "1048576",
            "--block-cache-bytes",
            "16777216",
            "--shard-connections-max",
            "4096",
        ]),
    );
    let pid = server.pid().unwrap();
    let rss_start = rss_bytes(pid);

    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|i| TcpStream::connect(server.shard_addr(i % server.shards)).unwrap())
        .collect();
    // A frame header (one segment of 8 Ki words = 64 KiB) and the first word of it, then
    // silence: the server must not wait on them. (Frames this small need no frame budget:
    // tests/tests/slow_senders.rs covers large ones.)
    let stuck: Vec<TcpStream> = (0..STUCK_CONNECTIONS)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            let mut frame = Vec::new();
            frame.extend_from_slice(&0u32.to_le_bytes());
            frame.extend_from_slice(&(8u32 << 10).to_le_bytes());
            frame.extend_from_slice(&[0u8; 8]);
            s.write_all(&frame).unwrap();
            s
        })
        .collect();

    let mut rss_after_first = 0;
    let mut rss_max = 0;
    let tally = block_on(async {
        let mut conns = Vec::with_capacity(BUSY_CONNECTIONS);
        for _ in 0..BUSY_CONNECTIONS {
            conns.push(
                Connection::connect(TokioRuntime, server.addr)
                    .await
                    .unwrap(),
            );
        }
        let mut tally = Tally::default();
        for round in 0..rounds {
            // Every connection's requests at once: puts and reads of its own keys.
            let requests = conns.iter().enumerate().flat_map(|(c, conn)| {
                (0..IN_FLIGHT).map(move |slot| async move {
                    let k = key(c, slot);
                    let put = conn.put(&k, &value(c, slot, round), 0).await;
                    let get = conn.get(&k).await;
                    (k, put, get)
                })
            });
            for (k, put, get) in futures::future::join_all(requests).await {
                match put {
                    Ok(_) => {
                        tally.applied += 1;
                        tally.acked.insert(k.clone(), round);
                    }
                    Err(Error::Server(e))
                        if matches!(e.code, ErrorCode::Overloaded | ErrorCode::ShuttingDown) =>
                    {
                        tally.refused += 1
                    }
                    Err(e) => panic!("round {round}: a write was neither applied nor refused: {e}"),
                }
                match get {
                    Ok(v) => {
                        // The read follows the write on the same connection: it sees the last
                        // acknowledged value (this round's, unless this round's was refused).
                        let expected = tally.acked.get(&k).map(|&r| {
                            let (c, slot) = parse_key(&k);
                            value(c, slot, r)
                        });
                        assert_eq!(v, expected, "round {round}: read after write");
                    }
                    Err(Error::Server(e)) if e.code == ErrorCode::Overloaded => tally.refused += 1,
                    Err(e) => panic!("round {round}: a read was neither answered nor refused: {e}"),
                }
            }
            let rss = rss_bytes(pid);
            rss_max = rss_max.max(rss);
            if round == 0 {
                rss_after_first = rss;
            }
        }
        tally
    });
    let rss_end = rss_bytes(pid);
    eprintln!(
        "soak: {rounds} rounds, {BUSY_CONNECTIONS} busy connections x {IN_FLIGHT} in flight, \
         {IDLE_CONNECTIONS} idle, {STUCK_CONNECTIONS} stuck mid-frame: {} writes applied, {} \
         requests refused; server RSS {} MiB at start, {} MiB after round 1, {} MiB max, {} MiB \
         at the end",
        tally.applied,
        tally.refused,
        rss_start >> 20,
        rss_after_first >> 20,
        rss_max >> 20,
        rss_end >> 20
    );
    assert!(tally.applied > 0);
    assert!(
        rss_end <= rss_after_first + RSS_GROWTH_BYTES_MAX,
        "server memory grew from {} MiB after the first round to {} MiB after {rounds}",
        rss_after_first >> 20,
        rss_end >> 20
    );
    drop(stuck);
    drop(idle);
    // Every acknowledged write is there, read on a fresh connection after the crowd left.
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        for (k, &round) in &tally.acked {
            let (c, slot) = parse_key(k);
            assert_eq!(conn.get(k).await.unwrap(), Some(value(c, slot, round)));
        }
    });
}

fn parse_key(k: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(k).unwrap();
    let mut parts = s.split('/').skip(1);
    let c = parts.next().unwrap().parse().unwrap();
    let slot = parts.next().unwrap().parse().unwrap();
    (c, slot)
}
