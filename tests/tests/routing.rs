//! Key routing: any port answers for any key (the server forwards to the owner), and the
//! shard-aware client sends every operation straight to its owner, so nothing crosses shards
//! (checked through the `stats` counters). A single node refuses a leader transfer for any of
//! its shards, asked through any port, and names an unknown shard.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_proto::client::TokioRuntime;
use corekv_proto::ops::counter_total;
use corekv_proto::{CasOp, Client, Connection, Op, OpResult, shard_for_key};
use corekv_tests::{Server, ServerOptions, block_on, test_dir};

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("route:{i}").into_bytes()).collect()
}

#[test]
fn requests_on_the_wrong_shard_port_are_forwarded_and_answered() {
    let dir = test_dir("wrong-port");
    let server = Server::start(dir.path(), ServerOptions::shards(2));
    let shards = server.shards as u32;
    block_on(async {
        let keys = keys(64);
        for port_shard in 0..server.shards {
            let conn = Connection::connect(TokioRuntime, server.shard_addr(port_shard))
                .await
                .unwrap();
            for k in &keys {
                let v = [k.as_slice(), format!("@{port_shard}").as_bytes()].concat();
                conn.put(k, &v, 0).await.unwrap();
                assert_eq!(conn.get(k).await.unwrap(), Some(v));
            }
            let batch: Vec<Op> = keys.iter().map(|k| Op::Get { key: k.clone() }).collect();
            for (k, r) in keys.iter().zip(conn.batch(&batch).await.unwrap()) {
                let want = [k.as_slice(), format!("@{port_shard}").as_bytes()].concat();
                let OpResult::Get(Some(got)) = r else {
                    panic!("{r:?}");
                };
                assert_eq!(got.value, want);
            }
        }
        if shards == 1 {
            return;
        }
        let foreign = |port_shard: u32| {
            keys.iter()
                .filter(|k| shard_for_key(k, shards) != port_shard)
                .count() as u64
        };
        let stats = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap()
            .stats()
            .await
            .unwrap();
        for s in &stats {
            // Each key not owned by this port's shard was forwarded for the put, the get and
            // the batch get: 3 operations.
            assert_eq!(
                s.counter("ops_forwarded_out_total"),
                Some(3 * foreign(s.id)),
                "shard {}",
                s.id
            );
        }
        assert_eq!(
            counter_total(&stats, "ops_forwarded_out_total"),
            counter_total(&stats, "ops_forwarded_in_total")
        );
    });
}

#[test]
fn shard_aware_routing_sends_nothing_across_shards() {
    let dir = test_dir("shard-aware");
    let server = Server::start(dir.path(), ServerOptions::shards(2));
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        let keys = keys(200);
        for r in futures::future::join_all(keys.iter().map(|k| client.put(k, b"v"))).await {
            r.unwrap();
        }
        for k in &keys {
            assert_eq!(client.get(k).await.unwrap().as_deref(), Some(&b"v"[..]));
        }
        let ops: Vec<Op> = keys
            .iter()
            .map(|k| {
                Op::Cas(CasOp {
                    key: k.clone(),
                    expected: corekv_proto::Expected::Value(b"v".to_vec()),
                    new: None,
                    ttl_ms: 0,
                })
            })
            .collect();
        for r in client.batch(ops).await.unwrap() {
            assert!(matches!(r, OpResult::Cas(c) if c.succeeded));
        }
        for k in &keys {
            assert!(client.delete(k).await.unwrap() > 0);
        }
        let stats = client.stats().await.unwrap();
        assert_eq!(counter_total(&stats, "ops_total"), 800);
        assert_eq!(counter_total(&stats, "ops_forwarded_out_total"), 0);
        assert_eq!(counter_total(&stats, "ops_forwarded_in_total"), 0);
        if server.shards > 1 {
            // Every shard got its own keys' operations.
            for s in &stats {
                assert!(s.counter("ops_total").unwrap() > 0, "shard {} idle", s.id);
            }
        }
    });
}

#[test]
fn a_single_node_refuses_a_leader_transfer_for_any_shard() {
    let dir = test_dir("transfer-single");
    let server = Server::start(dir.path(), ServerOptions::shards(2));
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.shard_addr(1))
            .await
            .unwrap();
        // Shard 0 is asked through shard 1's port (the server routes the call to it).
        for (shard, want) in [(0, "single node"), (1, "single node"), (7, "no shard 7")] {
            match conn.transfer_leader(shard, 1).await {
                Err(corekv_proto::Error::Server(e)) => {
                    assert_eq!(e.code, corekv_proto::ErrorCode::InvalidArgument, "{e}");
                    assert!(e.message.contains(want), "shard {shard}: {e}");
                }
                other => panic!("shard {shard}: {other:?}"),
            }
        }
    });
}
