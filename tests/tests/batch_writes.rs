//! `batch` calls made only of puts and deletes: whether the server takes its direct path (one
//! write set built from the request) or the general one (owned operations, phases, owners),
//! the results, the data and the counters are those the general path gives.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_proto::client::TokioRuntime;
use corekv_proto::ops::counter_total;
use corekv_proto::{Connection, ErrorCode, Op, OpResult, shard_for_key};
use corekv_tests::{Server, ServerOptions, block_on, test_dir};

fn put(key: &str, value: &str, ttl_ms: u64) -> Op {
    Op::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ttl_ms,
    }
}

fn del(key: &str) -> Op {
    Op::Delete {
        key: key.as_bytes().to_vec(),
    }
}

fn seq(r: &OpResult) -> u64 {
    match r {
        OpResult::Write { sequence } => *sequence,
        other => panic!("expected a write result, got {other:?}"),
    }
}

#[test]
fn put_and_delete_batches_apply_in_order_with_per_operation_errors() {
    let dir = test_dir("batch-writes");
    let server = Server::start(dir.path(), ServerOptions::shards(1));
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        conn.put(b"gone", b"x", 0).await.unwrap();
        // Distinct keys: one atomic write, every operation answered with its own sequence
        // number (consecutive: the engine numbers a batch's writes one by one), the version a
        // get of its key reports.
        let ops = vec![
            put("a", "1", 0),
            put("b", "2", 60_000),
            del("gone"),
            put("c", "3", 0),
        ];
        let r = conn.batch(&ops).await.unwrap();
        assert_eq!(r.len(), 4);
        let s = seq(&r[0]);
        for (i, x) in r.iter().enumerate() {
            assert_eq!(seq(x), s + i as u64, "{r:?}");
        }
        assert_eq!(
            conn.get_versioned(b"c").await.unwrap().unwrap().sequence,
            s + 3
        );
        assert_eq!(conn.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(conn.get(b"b").await.unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(conn.get(b"c").await.unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(conn.get(b"gone").await.unwrap(), None);

        // A key twice: two phases, applied in list order (later writes win).
        let ops = vec![
            put("k", "first", 0),
            put("j", "j", 0),
            put("k", "second", 0),
        ];
        let r = conn.batch(&ops).await.unwrap();
        assert_eq!(seq(&r[0]) + 1, seq(&r[1]));
        assert!(seq(&r[2]) > seq(&r[1]), "{r:?}");
        assert_eq!(
            conn.get(b"k").await.unwrap().as_deref(),
            Some(&b"second"[..])
        );
        let ops = vec![put("d", "1", 0), del("d")];
        conn.batch(&ops).await.unwrap();
        assert_eq!(conn.get(b"d").await.unwrap(), None);

        // A bad operation among puts fails alone; the others are applied.
        let ops = vec![put("e", "1", 0), put("", "empty key", 0), put("f", "2", 0)];
        let r = conn.batch(&ops).await.unwrap();
        assert!(matches!(r[0], OpResult::Write { .. }));
        assert!(matches!(&r[1], OpResult::Error(e) if e.code == ErrorCode::EmptyKey));
        assert!(matches!(r[2], OpResult::Write { .. }));
        assert_eq!(conn.get(b"f").await.unwrap().as_deref(), Some(&b"2"[..]));
        let ops = vec![put("g", "1", 0), put("h", "1", u64::MAX)];
        let r = conn.batch(&ops).await.unwrap();
        assert!(matches!(r[0], OpResult::Write { .. }));
        assert!(matches!(&r[1], OpResult::Error(e) if e.code == ErrorCode::InvalidArgument));

        let stats = conn.stats().await.unwrap();
        // 1 put, then 4 + 3 + 2 + 3 + 2 batched operations.
        assert_eq!(
            counter_total(&stats, "put_ops_total"),
            1 + 3 + 3 + 1 + 3 + 2
        );
        assert_eq!(counter_total(&stats, "delete_ops_total"), 2);
        assert_eq!(counter_total(&stats, "op_errors_total"), 2);
    });
}

#[test]
fn a_put_batch_spanning_shards_is_forwarded_as_before() {
    let dir = test_dir("batch-writes-shards");
    let server = Server::start(dir.path(), ServerOptions::shards(2));
    let shards = server.shards as u32;
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.shard_addr(0))
            .await
            .unwrap();
        let keys: Vec<String> = (0..32).map(|i| format!("span:{i}")).collect();
        let ops: Vec<Op> = keys.iter().map(|k| put(k, k, 0)).collect();
        for r in conn.batch(&ops).await.unwrap() {
            seq(&r);
        }
        for k in &keys {
            assert_eq!(
                conn.get(k.as_bytes()).await.unwrap(),
                Some(k.clone().into_bytes())
            );
        }
        let foreign = keys
            .iter()
            .filter(|k| shard_for_key(k.as_bytes(), shards) != 0)
            .count() as u64;
        let stats = conn.stats().await.unwrap();
        // Each foreign key is forwarded for the batched put and for the get.
        assert_eq!(
            counter_total(&stats, "ops_forwarded_out_total"),
            2 * foreign
        );
        assert_eq!(counter_total(&stats, "put_ops_total"), 32);
    });
}
