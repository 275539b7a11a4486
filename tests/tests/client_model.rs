//! Every method through the Rust client against a model (a `BTreeMap`): random operations with
//! a printed seed (`COREKV_TEST_SEED=<seed>` replays one), sent through the shard-aware client
//! (coalesced and not) and through a plain connection to the main port (forwarding). The model
//! keeps each value's version (the sequence number its write was answered with), so reads are
//! checked for the version too and compare-and-sets can expect one.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use corekv_proto::client::{CoalesceLimits, TokioRuntime};
use corekv_proto::ops::counter_total;
use corekv_proto::{
    CasOp, CasResult, Client, ClientOptions, Connection, Expected, Op, OpResult, ScanOp,
    ScanResult, Versioned,
};
use corekv_tests::{ClientPaths, Server, ServerOptions, block_on, test_dir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Key -> (value, the sequence number of the write that stored it).
type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

fn seed() -> u64 {
    let seed = std::env::var("COREKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    eprintln!("COREKV_TEST_SEED={seed}");
    seed
}

/// A small key space (so operations collide), with binary keys among them.
fn key(rng: &mut ChaCha8Rng) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0 => vec![0, rng.gen_range(0..4), 255],
        _ => format!("k{:02}", rng.gen_range(0..40)).into_bytes(),
    }
}

fn value(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = rng.gen_range(0..64);
    (0..len).map(|_| rng.r#gen()).collect()
}

fn model_range(model: &Model, op: &ScanOp) -> Vec<(Vec<u8>, Vec<u8>)> {
    let in_range = |k: &Vec<u8>| *k >= op.start && (op.end.is_empty() || *k < op.end);
    let mut out: Vec<_> = model
        .iter()
        .filter(|(k, _)| in_range(k))
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    if op.reverse {
        out.reverse();
    }
    out
}

fn random_scan(rng: &mut ChaCha8Rng) -> ScanOp {
    let (mut a, mut b) = (key(rng), key(rng));
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }
    ScanOp {
        start: if rng.gen_bool(0.2) { Vec::new() } else { a },
        end: if rng.gen_bool(0.2) { Vec::new() } else { b },
        limit: rng.gen_range(1..8),
        reverse: rng.gen_bool(0.5),
    }
}

/// Checks one page against the model: a prefix of the range, and `more` honest.
fn check_page(model: &Model, op: &ScanOp, page: &ScanResult) {
    let want = model_range(model, op);
    let n = page.entries.len();
    assert!(n <= op.limit as usize, "page longer than its limit");
    assert_eq!(page.entries[..], want[..n], "scan {op:?}");
    if !page.more {
        assert_eq!(n, want.len(), "scan {op:?} said no more but stopped early");
    } else {
        assert!(!page.continuation.is_empty());
    }
}

/// Applies `op` to the model given the server's answer `got` (which says the sequence numbers
/// writes were given); returns the answer the model expects.
fn apply(model: &mut Model, op: &Op, got: &OpResult) -> OpResult {
    let written = match got {
        OpResult::Write { sequence } => *sequence,
        OpResult::Cas(c) if c.succeeded => c.sequence,
        _ => 0,
    };
    match op {
        Op::Get { key } => OpResult::Get(model.get(key).map(|(value, sequence)| Versioned {
            value: value.clone(),
            sequence: *sequence,
        })),
        Op::Put { key, value, .. } => {
            model.insert(key.clone(), (value.clone(), written));
            OpResult::Write { sequence: written }
        }
        Op::Delete { key } => {
            model.remove(key);
            OpResult::Write { sequence: written }
        }
        Op::Cas(cas) => {
            let current = model.get(&cas.key).cloned();
            let holds = match (&cas.expected, &current) {
                (Expected::Absent, None) => true,
                (Expected::Value(want), Some((value, _))) => want == value,
                (Expected::Sequence(want), Some((_, sequence))) => want == sequence,
                (Expected::Sequence(0), None) => true,
                _ => false,
            };
            if holds {
                match &cas.new {
                    Some(v) => model.insert(cas.key.clone(), (v.clone(), written)),
                    None => model.remove(&cas.key),
                };
                OpResult::Cas(CasResult {
                    succeeded: true,
                    sequence: written,
                    current: None,
                })
            } else {
                OpResult::Cas(CasResult {
                    succeeded: false,
                    sequence: current.as_ref().map_or(0, |(_, s)| *s),
                    current: current.map(|(v, _)| v),
                })
            }
        }
        Op::Scan(_) => unreachable!("scans are checked with check_page"),
        Op::PutEntity(_) | Op::UpdateColumns(_) | Op::GetColumns(_) | Op::Increment(_) => {
            unreachable!("column operations are modelled in columns.rs")
        }
    }
}

/// Compares a server result with the model's; write sequence numbers are checked separately
/// (they only have to grow).
fn same(got: &OpResult, want: &OpResult) -> bool {
    match (got, want) {
        (OpResult::Write { .. }, OpResult::Write { .. }) => true,
        (OpResult::Cas(g), OpResult::Cas(w)) if g.succeeded && w.succeeded => true,
        _ => got == want,
    }
}

fn random_op(rng: &mut ChaCha8Rng, model: &Model) -> Op {
    match rng.gen_range(0..10) {
        0..=2 => Op::Get { key: key(rng) },
        3..=5 => Op::Put {
            key: key(rng),
            value: value(rng),
            ttl_ms: 0,
        },
        6 => Op::Delete { key: key(rng) },
        _ => {
            let key = key(rng);
            let expected = match rng.gen_range(0..10) {
                0..=2 => Expected::Absent,
                3..=5 => Expected::Value(value(rng)),
                // The version the model holds now (it may change before the CAS runs, in a
                // batch), or an older one.
                _ => Expected::Sequence(match model.get(&key) {
                    Some((_, s)) if rng.gen_bool(0.7) => *s,
                    Some((_, s)) => s.saturating_sub(rng.gen_range(1..3)),
                    None => rng.gen_range(0..3),
                }),
            };
            Op::Cas(CasOp {
                key,
                expected,
                new: if rng.gen_bool(0.2) {
                    None
                } else {
                    Some(value(rng))
                },
                ttl_ms: 0,
            })
        }
    }
}

/// Sends `op` as its own RPC on `conn` and returns the result as an `OpResult`.
async fn direct(conn: &Connection, op: &Op) -> OpResult {
    match op {
        Op::Get { key } => OpResult::Get(conn.get_versioned(key).await.unwrap()),
        Op::Put { key, value, ttl_ms } => OpResult::Write {
            sequence: conn.put(key, value, *ttl_ms).await.unwrap(),
        },
        Op::Delete { key } => OpResult::Write {
            sequence: conn.delete(key).await.unwrap(),
        },
        Op::Cas(cas) => OpResult::Cas(conn.cas(cas).await.unwrap()),
        Op::Scan(scan) => OpResult::Scan(conn.scan(scan).await.unwrap()),
        Op::PutEntity(_) | Op::UpdateColumns(_) | Op::GetColumns(_) | Op::Increment(_) => {
            unreachable!("column operations are modelled in columns.rs")
        }
    }
}

async fn via_client(client: &Client, op: &Op) -> OpResult {
    match op {
        Op::Get { key } => OpResult::Get(client.get_versioned(key).await.unwrap()),
        Op::Put { key, value, .. } => OpResult::Write {
            sequence: client.put(key, value).await.unwrap(),
        },
        Op::Delete { key } => OpResult::Write {
            sequence: client.delete(key).await.unwrap(),
        },
        Op::Cas(cas) => OpResult::Cas(client.cas(cas.clone()).await.unwrap()),
        Op::Scan(scan) => OpResult::Scan(client.scan(scan).await.unwrap()),
        Op::PutEntity(_) | Op::UpdateColumns(_) | Op::GetColumns(_) | Op::Increment(_) => {
            unreachable!("column operations are modelled in columns.rs")
        }
    }
}

#[test]
fn random_operations_through_every_client_path_match_a_model() {
    let dir = test_dir("client-model");
    let server = Server::start(dir.path(), ServerOptions::default());
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    block_on(async {
        let ClientPaths {
            coalescing,
            plain,
            main_port,
        } = ClientPaths::connect(server.addr).await;
        let mut model = Model::new();
        // Per shard, the last sequence number seen: separate writes must increase it.
        let mut last_seq = vec![0u64; server.shards];
        for step in 0..1500 {
            let path = rng.gen_range(0..4);
            if rng.gen_range(0..12) == 0 {
                let scan = random_scan(&mut rng);
                let page = match path {
                    0 => coalescing.scan(&scan).await.unwrap(),
                    1 => plain.scan(&scan).await.unwrap(),
                    _ => main_port.scan(&scan).await.unwrap(),
                };
                check_page(&model, &scan, &page);
                let all = coalescing.scan_all(&scan, usize::MAX).await.unwrap();
                assert_eq!(
                    all,
                    model_range(&model, &scan),
                    "step {step}: scan_all {scan:?}"
                );
                continue;
            }
            if path == 3 {
                // A batch, possibly with the same key several times.
                let ops: Vec<Op> = (0..rng.gen_range(1..20))
                    .map(|_| random_op(&mut rng, &model))
                    .collect();
                let results = if rng.gen_bool(0.5) {
                    coalescing.batch(ops.clone()).await.unwrap()
                } else {
                    main_port.batch(&ops).await.unwrap()
                };
                assert_eq!(results.len(), ops.len());
                for (op, got) in ops.iter().zip(&results) {
                    let want = apply(&mut model, op, got);
                    assert!(
                        same(got, &want),
                        "step {step}: batch {op:?}: got {got:?}, want {want:?}"
                    );
                }
                continue;
            }
            let op = random_op(&mut rng, &model);
            let got = match path {
                0 => via_client(&coalescing, &op).await,
                1 => via_client(&plain, &op).await,
                _ => direct(&main_port, &op).await,
            };
            let want = apply(&mut model, &op, &got);
            assert!(
                same(&got, &want),
                "step {step}: {op:?}: got {got:?}, want {want:?}"
            );
            let sequence = match got {
                OpResult::Write { sequence } => Some(sequence),
                OpResult::Cas(CasResult {
                    succeeded: true,
                    sequence,
                    ..
                }) => Some(sequence),
                _ => None,
            };
            if let (Some(seq), Some(key)) = (sequence, op.key()) {
                let shard = coalescing.shard_of(key) as usize;
                assert!(
                    seq > last_seq[shard],
                    "step {step}: sequence {seq} did not grow on shard {shard}"
                );
                last_seq[shard] = seq;
            }
        }
        // The final state, read back through one full scan.
        let everything = ScanOp::default();
        assert_eq!(
            coalescing.scan_all(&everything, usize::MAX).await.unwrap(),
            model_range(&model, &everything)
        );
    });
}

#[test]
fn concurrent_single_operations_are_coalesced_into_batches() {
    let dir = test_dir("coalesce");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        let keys: Vec<Vec<u8>> = (0..500).map(|i| format!("c{i}").into_bytes()).collect();
        let writes = futures::future::join_all(keys.iter().map(|k| client.put(k, k))).await;
        assert!(writes.iter().all(Result::is_ok));
        let reads = futures::future::join_all(keys.iter().map(|k| client.get(k))).await;
        for (k, r) in keys.iter().zip(reads) {
            assert_eq!(r.unwrap().as_deref(), Some(&k[..]));
        }
        let (batches, ops) = client.coalesced_counts();
        assert_eq!(ops, 1000);
        // 1000 operations issued at once travel in far fewer calls than operations.
        assert!(
            batches * 4 <= ops,
            "{ops} operations took {batches} batch calls"
        );
        let stats = client.stats().await.unwrap();
        assert_eq!(counter_total(&stats, "put_ops_total"), 500);
        assert_eq!(counter_total(&stats, "get_ops_total"), 500);
        assert_eq!(counter_total(&stats, "batch_calls_total"), batches);
    });
}

/// Many small calls in flight on one connection: operations on one key, issued concurrently,
/// still apply in issue order (a read issued after a durable write sees it, although the write
/// waits for the WAL and the read would not), and every caller gets its own result.
#[test]
fn calls_in_flight_keep_each_keys_operations_in_issue_order() {
    let dir = test_dir("coalesce-order");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let options = ClientOptions {
            coalesce: true,
            limits: CoalesceLimits {
                batch_ops_max: 3,
                batch_calls_in_flight_max: 8,
                batch_ops_split_min: 1,
            },
            ..ClientOptions::default()
        };
        let client = Client::connect_with(TokioRuntime, server.addr, options)
            .await
            .unwrap();
        let keys: Vec<Vec<u8>> = (0..4).map(|i| format!("order{i}").into_bytes()).collect();
        // Round r: for every key, put value r then get it; one key also gets a delete.
        enum Want {
            Write,
            Get(Option<Vec<u8>>),
        }
        let mut ops: Vec<(usize, Op, Want)> = Vec::new();
        for round in 0..30u32 {
            for (k, key) in keys.iter().enumerate() {
                let value = format!("{k}-{round}").into_bytes();
                ops.push((
                    k,
                    Op::Put {
                        key: key.clone(),
                        value: value.clone(),
                        ttl_ms: 0,
                    },
                    Want::Write,
                ));
                if k == 3 && round % 3 == 0 {
                    ops.push((k, Op::Delete { key: key.clone() }, Want::Write));
                    ops.push((k, Op::Get { key: key.clone() }, Want::Get(None)));
                } else {
                    ops.push((k, Op::Get { key: key.clone() }, Want::Get(Some(value))));
                }
            }
        }
        let calls = ops.iter().map(|(_, op, _)| {
            let client = &client;
            async move {
                match op {
                    Op::Put { key, value, .. } => OpResult::Write {
                        sequence: client.put(key, value).await.unwrap(),
                    },
                    Op::Delete { key } => OpResult::Write {
                        sequence: client.delete(key).await.unwrap(),
                    },
                    Op::Get { key } => OpResult::Get(
                        client
                            .get(key)
                            .await
                            .unwrap()
                            .map(|value| Versioned { value, sequence: 0 }),
                    ),
                    _ => unreachable!(),
                }
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut last_sequence = vec![0u64; keys.len()];
        for (i, ((k, _, want), got)) in ops.iter().zip(&results).enumerate() {
            match (want, got) {
                (Want::Write, OpResult::Write { sequence }) => {
                    assert!(
                        *sequence > last_sequence[*k],
                        "operation {i}: write on key {k} got sequence {sequence} after {}",
                        last_sequence[*k]
                    );
                    last_sequence[*k] = *sequence;
                }
                (Want::Get(value), OpResult::Get(got)) => {
                    let got = got.as_ref().map(|v| &v.value);
                    assert_eq!(got, value.as_ref(), "operation {i}: get of key {k}");
                }
                (_, got) => panic!("operation {i}: unexpected {got:?}"),
            }
        }
        let (batches, sent) = client.coalesced_counts();
        assert_eq!(sent, ops.len() as u64);
        // The operations really travelled in many small calls.
        assert!(batches * 3 >= sent, "{sent} operations in {batches} calls");
    });
}

#[test]
fn ttl_entries_expire_and_long_ttls_stay() {
    let dir = test_dir("ttl");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        client
            .put_with_ttl(b"short", b"v", Duration::from_millis(1))
            .await
            .unwrap();
        client
            .put_with_ttl(b"long", b"v", Duration::from_secs(3600))
            .await
            .unwrap();
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        // 100 years is the longest TTL; longer ones are refused, typed.
        let century_ms = 100 * 365 * 24 * 3600 * 1000;
        conn.put(b"huge-ttl", b"v", century_ms).await.unwrap();
        let e = conn
            .put(b"too-long", b"v", century_ms + 1)
            .await
            .unwrap_err();
        assert_eq!(
            e.server_error().map(|e| e.code),
            Some(corekv_proto::ErrorCode::InvalidArgument)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(client.get(b"short").await.unwrap(), None);
        assert_eq!(
            client.get(b"long").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(
            conn.get(b"huge-ttl").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
        let all = client.scan_all(&ScanOp::default(), 100).await.unwrap();
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(keys, [&b"huge-ttl"[..], b"long"]);
        // CAS with a TTL: the new value expires too.
        let r = client
            .cas(CasOp {
                key: b"cas-ttl".to_vec(),
                expected: Expected::Absent,
                new: Some(b"x".to_vec()),
                ttl_ms: 1,
            })
            .await
            .unwrap();
        assert!(r.succeeded);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(client.get(b"cas-ttl").await.unwrap(), None);
    });
}

#[test]
fn topology_and_stats_describe_the_server() {
    let dir = test_dir("topology");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        let t = conn.topology().await.unwrap();
        assert_eq!(t.shard_count as usize, server.shards);
        assert_eq!(t.hash, corekv_proto::SHARD_HASH_NAME);
        for (i, s) in t.shards.iter().enumerate() {
            assert_eq!(s.id as usize, i);
            assert_eq!(s.host, "127.0.0.1");
            assert_eq!(s.port, server.shard_addr(i).port());
        }
        let stats = conn.stats().await.unwrap();
        assert_eq!(stats.len(), server.shards);
        for (i, s) in stats.iter().enumerate() {
            assert_eq!(s.id as usize, i);
            for name in [
                "calls_total",
                "ops_forwarded_out_total",
                "connections_open",
                "protocol_errors_total",
            ] {
                assert!(s.counter(name).is_some(), "shard {i} lacks {name}");
            }
        }
        // This connection is open on one shard.
        assert_eq!(counter_total(&stats, "connections_open"), 1);
    });
}
