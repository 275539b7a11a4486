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
