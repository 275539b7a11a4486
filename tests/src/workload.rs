//! Concurrent clients for crash tests: each client is a thread with its own shard-aware
//! [`Client`] and several tasks issuing puts, deletes, batches, compare-and-sets and reads on
//! the keys of a [`Model`], recording every outcome in it.
//!
//! A task stops at the first broken connection (the server is gone: nothing more can be
//! acknowledged) or when told to. Every choice comes from a seeded RNG, so a seed replays
//! the same operations (not the same interleaving, which the scheduler decides).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use corekv_proto::client::TokioRuntime;
use corekv_proto::{CasOp, CasResult, Client, Error, ErrorCode, Op, OpResult};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::block_on;
use crate::model::{Model, Outcome, Value, owned_key, shared_key};

/// The shape of a workload.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Client threads.
    pub clients: usize,
    /// Tasks per client (operations in flight per client).
    pub tasks: usize,
    /// Keys each task owns.
    pub keys_per_task: usize,
    /// Keys every task compare-and-sets.
    pub shared_keys: usize,
    /// Largest value written (values are 16 bytes to this, most of them small).
    pub value_bytes_max: usize,
}

impl Shape {
    /// An empty model of this shape.
    pub fn model(&self) -> Model {
        Model::new(
            self.clients,
            self.tasks,
            self.keys_per_task,
            self.shared_keys,
        )
    }
}

/// What a running workload shares with the test.
#[derive(Debug, Default)]
pub struct Progress {
    /// Operations answered (any answer).
    pub ops_done: AtomicU64,
    /// Typed errors `io` received.
    pub io_errors: AtomicU64,
    /// Typed errors `read_only` received.
    pub read_only_errors: AtomicU64,
    /// Tell the tasks to stop.
    pub stop: AtomicBool,
}

/// Errors a correct server never sends for this workload's (valid) operations.
#[derive(Debug)]
pub struct Unexpected(pub String);

/// How the server answered one write.
fn classify(e: &Error, progress: &Progress) -> Result<Outcome, Unexpected> {
    match e {
        Error::Server(op) => classify_code(op.code, &op.message, progress),
        // The call's fate is unknown: the connection broke.
        Error::Rpc(_) | Error::Connect { .. } => Ok(Outcome::Unknown),
        other => Err(Unexpected(format!("unexpected client error: {other}"))),
    }
}

fn classify_code(
    code: ErrorCode,
    message: &str,
    progress: &Progress,
) -> Result<Outcome, Unexpected> {
    match code {
        ErrorCode::Io => {
            progress.io_errors.fetch_add(1, Ordering::Relaxed);
            Ok(Outcome::Unknown)
        }
        ErrorCode::ReadOnly => {
            progress.read_only_errors.fetch_add(1, Ordering::Relaxed);
            Ok(Outcome::Refused)
        }
        ErrorCode::Overloaded | ErrorCode::ShuttingDown => Ok(Outcome::Refused),
        other => Err(Unexpected(format!(
            "unexpected typed error {other}: {message}"
        ))),
    }
}

fn broken(e: &Error) -> bool {
    matches!(e, Error::Rpc(_) | Error::Connect { .. })
}

/// A fresh value: its identity, `#`, then padding.
fn value(rng: &mut ChaCha8Rng, shape: &Shape, tag: &str) -> Vec<u8> {
    let mut v = format!("{tag}#").into_bytes();
    let len = if rng.gen_bool(0.1) {
        rng.gen_range(16..=shape.value_bytes_max.max(16))
    } else {
        rng.gen_range(16..=64.min(shape.value_bytes_max).max(16))
    };
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

/// Runs the workload against `addr` until `progress.stop` is set or the server goes away.
/// Returns the first unexpected error any task saw.
pub fn run(
    addr: SocketAddr,
    shape: Shape,
    seed: u64,
    cycle: u64,
    model: &Arc<Mutex<Model>>,
    progress: &Arc<Progress>,
) -> Result<(), Unexpected> {
    let threads: Vec<_> = (0..shape.clients)
        .map(|c| {
            let (model, progress) = (Arc::clone(model), Arc::clone(progress));
            std::thread::spawn(move || {
                block_on(async move {
                    let client = match Client::connect(TokioRuntime, addr).await {
                        Ok(c) => c,
                        // The server died before this client got going.
                        Err(e) if broken(&e) => return Ok(()),
                        Err(e) => return Err(Unexpected(format!("connect: {e}"))),
                    };
                    let tasks = (0..shape.tasks).map(|t| {
                        let rng = ChaCha8Rng::seed_from_u64(
                            seed ^ cycle.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                                ^ ((c as u64) << 40)
                                ^ ((t as u64) << 20),
                        );
                        let task = Task {
                            client: client.clone(),
                            shape,
                            c,
                            t,
                            cycle,
                            rng,
                            n: 0,
                            model: Arc::clone(&model),
                            progress: Arc::clone(&progress),
                        };
                        task.run()
                    });
                    futures::future::join_all(tasks)
                        .await
                        .into_iter()
                        .collect::<Result<Vec<()>, Unexpected>>()
                        .map(drop)
                })
            })
        })
        .collect();
    let mut first = Ok(());
    for t in threads {
        let r = t.join().expect("a client thread panicked");
        if first.is_ok() {
            first = r;
        }
    }
    first
}

struct Task {
    client: Client,
    shape: Shape,
    c: usize,
    t: usize,
    cycle: u64,
    rng: ChaCha8Rng,
    n: u64,
    model: Arc<Mutex<Model>>,
    progress: Arc<Progress>,
}

/// Whether the task goes on.
type Step = Result<bool, Unexpected>;

impl Task {
    async fn run(mut self) -> Result<(), Unexpected> {
        while !self.progress.stop.load(Ordering::SeqCst) {
            let go_on = match self.rng.gen_range(0..100) {
                0..=34 => self.put().await?,
                35..=44 => self.delete().await?,
                45..=59 => self.batch().await?,
                60..=69 => self.owned_cas().await?,
                70..=84 => self.shared_cas().await?,
                _ => self.read().await?,
            };
            self.progress.ops_done.fetch_add(1, Ordering::SeqCst);
            if !go_on {
                break;
            }
        }
        Ok(())
    }

    fn context(&self) -> String {
        format!("cycle {} client {} task {}", self.cycle, self.c, self.t)
    }

    fn tag(&mut self) -> String {
        self.n += 1;
        format!("c{}.{}.{}.{}", self.cycle, self.c, self.t, self.n)
    }

    fn my_key(&mut self) -> Vec<u8> {
        let i = self.rng.gen_range(0..self.shape.keys_per_task);
        owned_key(self.c, self.t, i)
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().expect("model lock")
    }

    async fn put(&mut self) -> Step {
        let key = self.my_key();
        let tag = self.tag();
        let v = value(&mut self.rng, &self.shape, &tag);
        let r = self.client.put(&key, &v).await;
        self.record_write(&key, Some(v), r.map(drop))
    }

    async fn delete(&mut self) -> Step {
        let key = self.my_key();
        let r = self.client.delete(&key).await;
        self.record_write(&key, None, r.map(drop))
    }

    fn record_write(&mut self, key: &[u8], v: Value, r: Result<(), Error>) -> Step {
        let outcome = match &r {
            Ok(()) => Outcome::Acked,
            Err(e) => classify(e, &self.progress)?,
        };
        self.model().owned_write(key, v, outcome);
        Ok(!matches!(&r, Err(e) if broken(e)))
    }

    async fn batch(&mut self) -> Step {
        // Distinct owned keys (a batch is independent operations; distinct keys keep each
        // one's order obvious), with reads of some of them after their write.
        let n = self
            .rng
            .gen_range(2..=6.min(self.shape.keys_per_task).max(2));
        let mut keys: Vec<Vec<u8>> = Vec::new();
        while keys.len() < n.min(self.shape.keys_per_task) {
            let k = self.my_key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let mut ops = Vec::new();
        let mut values = Vec::new();
        for k in &keys {
            if self.rng.gen_bool(0.8) {
                let tag = self.tag();
                let v = value(&mut self.rng, &self.shape, &tag);
                ops.push(Op::Put {
                    key: k.clone(),
                    value: v.clone(),
                    ttl_ms: 0,
                });
                values.push(Some(v));
            } else {
                ops.push(Op::Delete { key: k.clone() });
                values.push(None);
            }
        }
        let r = self.client.batch(ops).await;
        let ctx = self.context();
        match r {
            Ok(results) => {
                let mut m = self.model();
                for ((k, v), res) in keys.iter().zip(values).zip(results) {
                    let outcome = match res {
                        OpResult::Write { .. } => Outcome::Acked,
                        OpResult::Error(e) => classify_code(e.code, &e.message, &self.progress)?,
                        other => {
                            return Err(Unexpected(format!(
                                "{ctx}: batch write answered {other:?}"
                            )));
                        }
                    };
                    m.owned_write(k, v, outcome);
                }
                Ok(true)
            }
            Err(e) => {
                let outcome = classify(&e, &self.progress)?;
                let mut m = self.model();
                for (k, v) in keys.iter().zip(values) {
                    m.owned_write(k, v, outcome);
                }
                Ok(!broken(&e))
            }
        }
    }

    async fn owned_cas(&mut self) -> Step {
        let key = self.my_key();
        let Some(known) = self.model().owned_certain(&key) else {
            // A write of unknown outcome is pending: the expected value is not known.
            return self.read_key(key).await;
        };
        let expected_ok = self.rng.gen_bool(0.8);
        let expected = if expected_ok {
            known
        } else {
            Some(format!("never-written-{}", self.tag()).into_bytes())
        };
        let new = if self.rng.gen_bool(0.8) {
            let tag = self.tag();
            Some(value(&mut self.rng, &self.shape, &tag))
        } else {
            None
        };
        let r = self
            .client
            .cas(CasOp {
                key: key.clone(),
                expected: expected.clone().into(),
                new: new.clone(),
                ttl_ms: 0,
            })
            .await;
        let ctx = self.context();
        let (outcome, applied, current, go_on) = self.cas_outcome(r)?;
        self.model()
            .owned_cas(&key, expected_ok, new, outcome, applied, &current, &ctx);
        Ok(go_on)
    }

    async fn shared_cas(&mut self) -> Step {
        let key = shared_key(self.rng.gen_range(0..self.shape.shared_keys));
        // Expect what a read says now (it may change before the CAS: then it mismatches).
        let expected = match self.client.get(&key).await {
            Ok(v) => {
                self.model().shared_read(&key, v.clone());
                v
            }
            Err(e) => {
                classify(&e, &self.progress)?;
                return Ok(!broken(&e));
            }
        };
        let tag = format!("s{}", self.tag());
        let token = value(&mut self.rng, &self.shape, &tag);
        let r = self
            .client
            .cas(CasOp {
                key: key.clone(),
                expected: expected.clone().into(),
                new: Some(token.clone()),
                ttl_ms: 0,
            })
            .await;
        let (outcome, applied, current, go_on) = self.cas_outcome(r)?;
        self.model()
            .shared_cas(&key, expected, token, outcome, applied, current);
        Ok(go_on)
    }

    #[allow(clippy::type_complexity)]
    fn cas_outcome(
        &self,
        r: Result<CasResult, Error>,
    ) -> Result<(Outcome, Option<bool>, Value, bool), Unexpected> {
        Ok(match r {
            Ok(c) => (Outcome::Acked, Some(c.succeeded), c.current, true),
            Err(e) => (classify(&e, &self.progress)?, None, None, !broken(&e)),
        })
    }

    async fn read(&mut self) -> Step {
        let key = self.my_key();
        self.read_key(key).await
    }

    async fn read_key(&mut self, key: Vec<u8>) -> Step {
        let ctx = self.context();
        match self.client.get(&key).await {
            Ok(v) => {
                self.model().owned_read(&key, &v, &ctx);
                Ok(true)
            }
            Err(e) => {
                // Reads never refuse; an I/O error reading is a failure of its own.
                if let Error::Server(op) = &e {
                    return Err(Unexpected(format!("{ctx}: read refused: {op}")));
                }
                Ok(!broken(&e))
            }
        }
    }
}
