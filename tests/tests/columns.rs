//! Entities (columns) and counters through the Rust client and the wire: random operations
//! against a model that knows columns on its own (the server's encoding is only used to check
//! what a plain `get` returns), across a `kill -9` and restart; concurrent column updates of
//! one key and concurrent increments of one counter, which must lose nothing.
//! `COREKV_TEST_SEED=<seed>` replays the random run.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use corekv_proto::client::TokioRuntime;
use corekv_proto::entity;
use corekv_proto::{
    Client, ErrorCode, GetColumnsOp, IncrementOp, Op, OpResult, PutEntityOp, UpdateColumnsOp,
    Versioned, VersionedColumns,
};
use corekv_tests::{ClientPaths, Server, ServerOptions, block_on, test_dir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the model holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    Plain(Vec<u8>),
    Entity(BTreeMap<Vec<u8>, Vec<u8>>),
}

type Model = BTreeMap<Vec<u8>, Held>;

fn seed() -> u64 {
    let seed = std::env::var("COREKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    eprintln!("COREKV_TEST_SEED={seed}");
    seed
}

fn key(rng: &mut ChaCha8Rng) -> Vec<u8> {
    format!("e{:02}", rng.gen_range(0..24)).into_bytes()
}

/// Few column names, so updates of one entity touch the same columns; one is binary.
fn name(rng: &mut ChaCha8Rng) -> Vec<u8> {
    match rng.gen_range(0..7) {
        0 => vec![0xff, 0],
        n => format!("c{n}").into_bytes(),
    }
}

fn value(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = rng.gen_range(0..40);
    (0..len).map(|_| rng.r#gen()).collect()
}

/// Up to `max` columns with distinct names.
fn columns(rng: &mut ChaCha8Rng, min: usize, max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let n = rng.gen_range(min..=max);
    while out.len() < n {
        out.insert(name(rng), value(rng));
    }
    let mut out: Vec<_> = out.into_iter().collect();
    // Order on the wire does not matter.
    if rng.gen_bool(0.5) {
        out.reverse();
    }
    out
}

fn random_op(rng: &mut ChaCha8Rng) -> Op {
    let key = key(rng);
    match rng.gen_range(0..16) {
        0 => Op::Put {
            key,
            value: value(rng),
            ttl_ms: 0,
        },
        1 => Op::Delete { key },
        2 => Op::Get { key },
        3..=4 => Op::PutEntity(PutEntityOp {
            key,
            columns: columns(rng, 1, 4),
            ttl_ms: 0,
        }),
        5..=9 => {
            let set = columns(rng, 0, 3);
            let remove = (0..rng.gen_range(0..2))
                .map(|_| name(rng))
                .filter(|n| set.iter().all(|(s, _)| s != n))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            Op::UpdateColumns(UpdateColumnsOp {
                key,
                set,
                remove,
                ttl_ms: 0,
            })
        }
        10..=12 => Op::GetColumns(GetColumnsOp {
            key,
            names: if rng.gen_bool(0.5) {
                Vec::new()
            } else {
                vec![name(rng), name(rng)]
            },
        }),
        _ => Op::Increment(IncrementOp {
            key,
            column: if rng.gen_bool(0.7) {
                name(rng)
            } else {
                Vec::new()
            },
            delta: rng.gen_range(-1000..1000),
            ttl_ms: 0,
        }),
    }
}

fn wrong_type(got: &OpResult) -> bool {
    matches!(got, OpResult::Error(e) if e.code == ErrorCode::WrongType)
}

fn counter(bytes: Option<&Vec<u8>>) -> Option<i64> {
    match bytes {
        None => Some(0),
        Some(b) => std::str::from_utf8(b)
            .ok()
            .filter(|s| {
                *s == "0" || !(s.starts_with('0') || s.starts_with("-0") || s.starts_with('+'))
            })
            .and_then(|s| s.parse().ok()),
    }
}

/// Checks the server's answer `got` to `op` against the model, and applies `op` to the model.
/// Sequence numbers are not modelled (the plain-value model in `client_model.rs` checks them).
fn check_and_apply(model: &mut Model, op: &Op, got: &OpResult) {
    let ctx = || {
        format!(
            "{op:?}: got {got:?}, model {:?}",
            model.get(op.key().unwrap())
        )
    };
    match op {
        Op::Put { key, value, .. } => {
            assert!(matches!(got, OpResult::Write { .. }), "{}", ctx());
            model.insert(key.clone(), Held::Plain(value.clone()));
        }
        Op::Delete { key } => {
            assert!(matches!(got, OpResult::Write { .. }), "{}", ctx());
            model.remove(key);
        }
        Op::Get { key } => {
            let want = model.get(key).map(|h| match h {
                Held::Plain(v) => v.clone(),
                Held::Entity(c) => entity::encode(c),
            });
            let got_value = match got {
                OpResult::Get(v) => v.as_ref().map(|v: &Versioned| v.value.clone()),
                _ => panic!("{}", ctx()),
            };
            assert_eq!(got_value, want, "{}", ctx());
        }
        Op::PutEntity(p) => {
            assert!(matches!(got, OpResult::Write { .. }), "{}", ctx());
            model.insert(
                p.key.clone(),
                Held::Entity(p.columns.iter().cloned().collect()),
            );
        }
        Op::UpdateColumns(u) => {
            let mut columns = match model.get(&u.key) {
                Some(Held::Plain(_)) => {
                    assert!(wrong_type(got), "{}", ctx());
                    return;
                }
                Some(Held::Entity(c)) => c.clone(),
                None => BTreeMap::new(),
            };
            assert!(matches!(got, OpResult::Write { .. }), "{}", ctx());
            for n in &u.remove {
                columns.remove(n);
            }
            columns.extend(u.set.iter().cloned());
            if columns.is_empty() {
                model.remove(&u.key);
            } else {
                model.insert(u.key.clone(), Held::Entity(columns));
            }
        }
        Op::GetColumns(g) => match model.get(&g.key) {
            Some(Held::Plain(_)) => assert!(wrong_type(got), "{}", ctx()),
            None => assert_eq!(got, &OpResult::Columns(None), "{}", ctx()),
            Some(Held::Entity(c)) => {
                let want: Vec<_> = c
                    .iter()
                    .filter(|(n, _)| g.names.is_empty() || g.names.contains(n))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                match got {
                    OpResult::Columns(Some(VersionedColumns { columns, .. })) => {
                        assert_eq!(columns, &want, "{}", ctx())
                    }
                    _ => panic!("{}", ctx()),
                }
            }
        },
        Op::Increment(i) => {
            let held = model.get(&i.key).cloned();
            let old = match (&held, i.column.is_empty()) {
                (None, _) => Some(0),
                (Some(Held::Plain(v)), true) => counter(Some(v)),
                (Some(Held::Entity(c)), true) => counter(Some(&entity::encode(c))),
                (Some(Held::Plain(_)), false) => None,
                (Some(Held::Entity(c)), false) => counter(c.get(&i.column)),
            };
            let Some(old) = old else {
                assert!(wrong_type(got), "{}", ctx());
                return;
            };
            let Some(new) = old.checked_add(i.delta) else {
                assert!(
                    matches!(got, OpResult::Error(e) if e.code == ErrorCode::InvalidArgument),
                    "{}",
                    ctx()
                );
                return;
            };
            match got {
                OpResult::Increment { value, .. } => assert_eq!(*value, new, "{}", ctx()),
                _ => panic!("{}", ctx()),
            }
            let text = new.to_string().into_bytes();
            if i.column.is_empty() {
                model.insert(i.key.clone(), Held::Plain(text));
            } else {
                let mut c = match held {
                    Some(Held::Entity(c)) => c,
                    _ => BTreeMap::new(),
                };
                c.insert(i.column.clone(), text);
                model.insert(i.key.clone(), Held::Entity(c));
            }
        }
        Op::Cas(_) | Op::Scan(_) => unreachable!("not generated"),
    }
}

/// Sends `op` through its own method of the client (coalesced or not).
async fn via_client(client: &Client, op: &Op) -> OpResult {
    let answer = match op.clone() {
        Op::Put { key, value, .. } => client
            .put(&key, &value)
            .await
            .map(|sequence| OpResult::Write { sequence }),
        Op::Delete { key } => client
            .delete(&key)
            .await
            .map(|sequence| OpResult::Write { sequence }),
        Op::Get { key } => client.get_versioned(&key).await.map(OpResult::Get),
        Op::PutEntity(p) => client
            .put_entity(p)
            .await
            .map(|sequence| OpResult::Write { sequence }),
        Op::UpdateColumns(u) => client
            .update_columns(u)
            .await
            .map(|sequence| OpResult::Write { sequence }),
        Op::GetColumns(g) => client
            .get_columns(&g.key, g.names)
            .await
            .map(OpResult::Columns),
        Op::Increment(i) => client
            .increment(i)
            .await
            .map(|(value, sequence)| OpResult::Increment { value, sequence }),
        Op::Cas(_) | Op::Scan(_) => unreachable!("not generated"),
    };
    match answer {
        Ok(r) => r,
        Err(corekv_proto::Error::Server(e)) => OpResult::Error(e),
        Err(e) => panic!("{op:?}: {e}"),
    }
}

/// Every key of the model read back, plainly and as columns.
async fn check_all(client: &Client, model: &Model) {
    for i in 0..24 {
        let key = format!("e{i:02}").into_bytes();
        for op in [
            Op::Get { key: key.clone() },
            Op::GetColumns(GetColumnsOp {
                key: key.clone(),
                names: Vec::new(),
            }),
        ] {
            let got = via_client(client, &op).await;
            check_and_apply(&mut model.clone(), &op, &got);
        }
    }
}

#[test]
fn column_operations_match_a_model_through_a_crash() {
    let dir = test_dir("columns-model");
    let mut server = Server::start(dir.path(), ServerOptions::default());
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let mut model = Model::new();
    for _ in 0..2 {
        block_on(async {
            let ClientPaths {
                coalescing,
                plain,
                main_port,
            } = ClientPaths::connect(server.addr).await;
            check_all(&coalescing, &model).await;
            for _ in 0..700 {
                if rng.gen_range(0..6) == 0 {
                    // A batch: the same key may come several times, applied in list order.
                    let ops: Vec<Op> = (0..rng.gen_range(1..12))
                        .map(|_| random_op(&mut rng))
                        .collect();
                    let results = main_port.batch(&ops).await.unwrap();
                    for (op, got) in ops.iter().zip(&results) {
                        check_and_apply(&mut model, op, got);
                    }
                    continue;
                }
                let op = random_op(&mut rng);
                let client = if rng.gen_bool(0.5) {
                    &coalescing
                } else {
                    &plain
                };
                let got = via_client(client, &op).await;
                check_and_apply(&mut model, &op, &got);
            }
            check_all(&coalescing, &model).await;
        });
        // Every write above was acknowledged in `sync` mode: it must survive kill -9.
        server.kill9();
        server = server.restart();
    }
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        check_all(&client, &model).await;
    });
}

#[test]
fn concurrent_column_updates_of_one_key_lose_nothing() {
    let dir = test_dir("columns-concurrent");
    let server = Server::start(dir.path(), ServerOptions::default());
    const WRITERS: usize = 16;
    const ROUNDS: usize = 40;
    block_on(async {
        // Each writer its own connection, so that the updates really race on the server.
        let mut clients = Vec::new();
        for _ in 0..WRITERS {
            clients.push(Client::connect(TokioRuntime, server.addr).await.unwrap());
        }
        let key = b"hot".to_vec();
        let writers = clients.iter().enumerate().map(|(w, client)| {
            let key = key.clone();
            async move {
                for round in 0..ROUNDS {
                    client
                        .update_columns(UpdateColumnsOp {
                            key: key.clone(),
                            set: vec![(
                                format!("w{w:02}").into_bytes(),
                                format!("{round}").into_bytes(),
                            )],
                            remove: Vec::new(),
                            ttl_ms: 0,
                        })
                        .await
                        .unwrap();
                }
            }
        });
        futures::future::join_all(writers).await;
        let got = clients[0]
            .get_columns(&key, Vec::new())
            .await
            .unwrap()
            .unwrap();
        let want: Vec<_> = (0..WRITERS)
            .map(|w| {
                (
                    format!("w{w:02}").into_bytes(),
                    format!("{}", ROUNDS - 1).into_bytes(),
                )
            })
            .collect();
        assert_eq!(got.columns, want, "an update of another column was lost");
    });
}

#[test]
fn concurrent_increments_sum_exactly() {
    let dir = test_dir("counters");
    let server = Server::start(dir.path(), ServerOptions::default());
    const WRITERS: usize = 12;
    const ROUNDS: i64 = 50;
    block_on(async {
        let mut clients = Vec::new();
        for _ in 0..WRITERS {
            clients.push(Client::connect(TokioRuntime, server.addr).await.unwrap());
        }
        // Every increment by 1 of one counter answers a different value: 1..=N, each once.
        let writers = clients.iter().map(|client| async move {
            let mut seen = Vec::new();
            for _ in 0..ROUNDS {
                seen.push(incr(client, b"", 1).await.0);
            }
            seen
        });
        let mut seen: Vec<i64> = futures::future::join_all(writers)
            .await
            .into_iter()
            .flatten()
            .collect();
        seen.sort_unstable();
        let n = WRITERS as i64 * ROUNDS;
        assert_eq!(seen, (1..=n).collect::<Vec<_>>());
        assert_eq!(
            clients[0].get(b"counter").await.unwrap(),
            Some(n.to_string().into_bytes())
        );
        // Columns of an entity, with positive and negative deltas: the sum is exact.
        clients[0].delete(b"counter").await.unwrap();
        let writers = clients.iter().enumerate().map(|(w, client)| async move {
            let mut sum = 0;
            for r in 0..ROUNDS {
                let delta = (w as i64 * 7 + r * 13) % 41 - 20;
                incr(client, if r % 2 == 0 { b"a" } else { b"b" }, delta).await;
                sum += delta;
            }
            sum
        });
        let sum: i64 = futures::future::join_all(writers).await.into_iter().sum();
        let got = clients[0]
            .get_columns(b"counter", Vec::new())
            .await
            .unwrap()
            .unwrap();
        let total: i64 = got
            .columns
            .iter()
            .map(|(_, v)| std::str::from_utf8(v).unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(total, sum);
        assert_eq!(got.columns.len(), 2);
    });
}

/// The code of the typed error `r` must be.
fn code<T: std::fmt::Debug>(r: Result<T, corekv_proto::Error>) -> ErrorCode {
    match r {
        Err(corekv_proto::Error::Server(e)) => e.code,
        other => panic!("expected a typed error, got {other:?}"),
    }
}

/// Adds `delta` to column `column` (or the whole value) of the key `counter`.
async fn incr(client: &Client, column: &[u8], delta: i64) -> (i64, u64) {
    client
        .increment(IncrementOp {
            key: b"counter".to_vec(),
            column: column.to_vec(),
            delta,
            ttl_ms: 0,
        })
        .await
        .unwrap()
}

#[test]
fn column_operations_refuse_what_they_cannot_apply_with_typed_errors() {
    let dir = test_dir("columns-errors");
    let server = Server::start(dir.path(), ServerOptions::default());
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        client.put(b"plain", b"hello").await.unwrap();
        let update =
            |key: &[u8], set: Vec<(Vec<u8>, Vec<u8>)>, remove: Vec<Vec<u8>>| UpdateColumnsOp {
                key: key.to_vec(),
                set,
                remove,
                ttl_ms: 0,
            };
        let col = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(
            code(
                client
                    .update_columns(update(b"plain", vec![col("a", "1")], vec![]))
                    .await
            ),
            ErrorCode::WrongType
        );
        assert_eq!(
            code(client.get_columns(b"plain", Vec::new()).await),
            ErrorCode::WrongType
        );
        let inc = |key: &[u8], column: &str, delta: i64| IncrementOp {
            key: key.to_vec(),
            column: column.as_bytes().to_vec(),
            delta,
            ttl_ms: 0,
        };
        assert_eq!(
            code(client.increment(inc(b"plain", "", 1)).await),
            ErrorCode::WrongType
        );
        assert_eq!(
            code(client.increment(inc(b"plain", "a", 1)).await),
            ErrorCode::WrongType
        );
        // Refused operations changed nothing.
        assert_eq!(client.get(b"plain").await.unwrap(), Some(b"hello".to_vec()));
        // Overflow is refused and leaves the counter as it was.
        client
            .put(b"big", i64::MAX.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(
            code(client.increment(inc(b"big", "", 1)).await),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            client.increment(inc(b"big", "", -1)).await.unwrap().0,
            i64::MAX - 1
        );
        // A column named twice, or set and removed at once; an entity with no column.
        assert_eq!(
            code(
                client
                    .update_columns(update(b"e", vec![col("a", "1"), col("a", "2")], vec![]))
                    .await
            ),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(
                client
                    .update_columns(update(b"e", vec![col("a", "1")], vec![b"a".to_vec()]))
                    .await
            ),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(
                client
                    .put_entity(PutEntityOp {
                        key: b"e".to_vec(),
                        columns: Vec::new(),
                        ttl_ms: 0
                    })
                    .await
            ),
            ErrorCode::InvalidArgument
        );
        // An entity over the value limit, counted in its encoding.
        let limit = client.server_info().await.unwrap().limits.value_bytes_max as usize;
        let big = vec![b'x'; limit - 8];
        assert_eq!(
            code(
                client
                    .put_entity(PutEntityOp {
                        key: b"e".to_vec(),
                        columns: vec![(b"a".to_vec(), big)],
                        ttl_ms: 0
                    })
                    .await
            ),
            ErrorCode::ValueTooLarge
        );
        assert_eq!(client.get(b"e").await.unwrap(), None);
        // Removing the last column deletes the key.
        client
            .update_columns(update(b"e", vec![col("a", "1")], vec![]))
            .await
            .unwrap();
        client
            .update_columns(update(b"e", vec![], vec![b"a".to_vec()]))
            .await
            .unwrap();
        assert_eq!(client.get(b"e").await.unwrap(), None);
        // An entity with a TTL expires as a value does.
        client
            .put_entity(PutEntityOp {
                key: b"t".to_vec(),
                columns: vec![col("a", "1")],
                ttl_ms: 50,
            })
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
        assert_eq!(client.get_columns(b"t", Vec::new()).await.unwrap(), None);
    });
}
