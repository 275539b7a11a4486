//! A Jepsen-style run against a real server: concurrent clients on a small set of registers
//! (get, put, compare-and-set), every operation recorded as invoke and completion events
//! ([`crate::history`]), faults injected on a schedule drawn from a printed seed (the
//! *nemesis*: `kill -9` and restart, SIGSTOP/SIGCONT), then the history checked for
//! linearizability per key ([`crate::linearizability`]).
//!
//! A client records `ok` when the server answered, `fail` when it refused the operation with a
//! typed error (nothing was changed), and `info` when the outcome is unknown (the connection
//! broke or the call timed out): the checker lets an `info` write take effect or not. After an
//! `info` the client reconnects as a new process (Jepsen's rule: a process has at most one
//! operation whose outcome is open).
//!
//! The target is a single server or a [`LocalCluster`] ([`Target`]). Against a cluster each
//! client talks to one node at a time and moves to a random one now and then; a `notLeader`
//! refusal is a `fail` (nothing was applied) and sends the client to the next node, and the
//! nemesis kills, restarts and pauses random nodes.
//!
//! Servers must be started and restarted by the thread that runs [`run_register`] (the test's
//! thread): a server dies with the thread that started it (`PR_SET_PDEATHSIG`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corekv_proto::client::TokioRuntime;
use corekv_proto::{CasOp, Client, Error, ErrorCode, Expected};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::LocalCluster;
use crate::history::{EventType, History, Op, Reply};
use crate::linearizability::{self, Report};
use crate::{Server, block_on};

/// What the nemesis acts on and the clients talk to.
pub trait Target {
    /// The client addresses, one per node.
    fn addrs(&self) -> Vec<SocketAddr>;
    /// `kill -9`s a node and starts it again; says what it did.
    fn kill_and_restart(&mut self, rng: &mut ChaCha8Rng) -> String;
    /// A running node's pid to pause, and its name.
    fn pause_target(&mut self, rng: &mut ChaCha8Rng) -> Option<(u32, String)>;
    /// Partitions the network; says how, or None when the target has no network to cut.
    fn partition(&mut self, _rng: &mut ChaCha8Rng) -> Option<String> {
        None
    }
    /// Heals every partition.
    fn heal(&mut self) {}
}

impl Target for Server {
    fn addrs(&self) -> Vec<SocketAddr> {
        vec![self.addr]
    }

    fn kill_and_restart(&mut self, _rng: &mut ChaCha8Rng) -> String {
        self.signal_and_wait(libc::SIGKILL);
        *self = self.restart();
        "kill -9, restart".to_string()
    }

    fn pause_target(&mut self, _rng: &mut ChaCha8Rng) -> Option<(u32, String)> {
        self.pid().map(|pid| (pid, "the server".to_string()))
    }
}

impl Target for LocalCluster {
    fn addrs(&self) -> Vec<SocketAddr> {
        LocalCluster::addrs(self)
    }

    fn kill_and_restart(&mut self, rng: &mut ChaCha8Rng) -> String {
        let id = rng.gen_range(1..=self.nodes.len() as u64);
        // Down for a while, so the others elect a leader without it (when it led).
        let down = Duration::from_millis(rng.gen_range(0..=1500));
        let node = self.node(id);
        node.kill9();
        std::thread::sleep(down);
        node.start();
        format!("kill -9 node {id}, restart after {down:?}")
    }

    fn pause_target(&mut self, rng: &mut ChaCha8Rng) -> Option<(u32, String)> {
        let id = rng.gen_range(1..=self.nodes.len() as u64);
        self.node(id).pid().map(|pid| (pid, format!("node {id}")))
    }

    fn partition(&mut self, rng: &mut ChaCha8Rng) -> Option<String> {
        let mut id = rng.gen_range(1..=self.nodes.len() as u64);
        let mut role = "";
        // Half the time the leader (if one is found quickly): the partition that matters.
        if rng.gen_bool(0.5)
            && let Some(leader) = block_on(self.leader(Duration::from_millis(500)))
        {
            id = leader;
            role = " (the leader)";
        }
        if rng.gen_bool(0.25) {
            self.partition_outbound(id);
            Some(format!("cut node {id}{role}'s outbound links"))
        } else {
            LocalCluster::partition(self, &[id]);
            Some(format!("isolate node {id}{role}"))
        }
    }

    fn heal(&mut self) {
        LocalCluster::heal(self);
    }
}

/// Faults the nemesis may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, then restart at once on the same data directory and address.
    Kill,
    /// SIGSTOP, a pause, SIGCONT.
    Pause,
    /// A network partition for a while, then healed (a cluster only): one node cut off from
    /// the others, both ways or only its outbound messages.
    Partition,
}

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Concurrent clients (each a thread with one operation in flight).
    pub clients: usize,
    /// Registers (keys) the clients share.
    pub keys: usize,
    /// How long clients run.
    pub duration: Duration,
    /// Seeds the clients' choices and the nemesis schedule.
    pub seed: u64,
    /// Faults to draw from (none: no nemesis).
    pub faults: Vec<Fault>,
    /// Time between faults, drawn uniformly from this range.
    pub fault_interval: (Duration, Duration),
    /// A call not answered within this is recorded `info`.
    pub op_timeout: Duration,
}

impl RunOptions {
    /// A short run: 8 clients on 5 keys for `duration`, kills and pauses every 1-3 s.
    pub fn short(seed: u64, duration: Duration) -> RunOptions {
        RunOptions {
            clients: 8,
            keys: 5,
            duration,
            seed,
            faults: vec![Fault::Kill, Fault::Pause],
            fault_interval: (Duration::from_secs(1), Duration::from_secs(3)),
            op_timeout: Duration::from_secs(1),
        }
    }
}

/// What a run did and what the checker found.
#[derive(Debug)]
pub struct RunReport {
    /// The seed the run drew from.
    pub seed: u64,
    /// Operations invoked.
    pub ops: u64,
    /// Completions `ok`, `fail`, `info`.
    pub ok: u64,
    /// See `ok`.
    pub fail: u64,
    /// See `ok`.
    pub info: u64,
    /// Faults injected, in order, with their time since the start.
    pub faults: Vec<(Duration, String)>,
    /// Wall-clock time of the run (clients and nemesis).
    pub elapsed: Duration,
    /// Time the checker took.
    pub check_time: Duration,
    /// The checker's verdict.
    pub check: Report,
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {}: {} operations ({} ok, {} fail, {} info) in {:.1?}, {} faults; checked in {:.1?}",
            self.seed,
            self.ops,
            self.ok,
            self.fail,
            self.info,
            self.elapsed,
            self.faults.len(),
            self.check_time
        )?;
        for (at, what) in &self.faults {
            writeln!(f, "  {at:>8.2?} {what}")?;
        }
        write!(f, "{}", self.check)
    }
}

/// Runs the register workload against `target` (restarting what the nemesis kills), writes
/// the history to `history_path` (JSON Lines, see [`crate::history`]) and checks it. Returns
/// the report and the target as it is at the end (running).
pub fn run_register<T: Target>(
    mut target: T,
    options: &RunOptions,
    history_path: &Path,
) -> (RunReport, T) {
    eprintln!(
        "jepsen register run: seed {} ({} clients, {} keys, {:?}, faults {:?})",
        options.seed, options.clients, options.keys, options.duration, options.faults
    );
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let next_process = Arc::new(AtomicU64::new(0));
    let next_value = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let addrs = target.addrs();
    let clients: Vec<_> = (0..options.clients)
        .map(|i| {
            let client = RegisterClient {
                addrs: addrs.clone(),
                node: i % addrs.len(),
                history: history.clone(),
                stop: Arc::clone(&stop),
                next_process: Arc::clone(&next_process),
                next_value: Arc::clone(&next_value),
                keys: options.keys,
                timeout: options.op_timeout,
                rng: ChaCha8Rng::seed_from_u64(options.seed.wrapping_add(1 + i as u64)),
            };
            std::thread::spawn(move || client.run())
        })
        .collect();
    let mut faults = Vec::new();
    let mut nemesis_rng = ChaCha8Rng::seed_from_u64(options.seed);
    let deadline = started + options.duration;
    while !options.faults.is_empty() {
        let (lo, hi) = options.fault_interval;
        let wait = nemesis_rng.gen_range(lo..=hi);
        if Instant::now() + wait >= deadline {
            break;
        }
        std::thread::sleep(wait);
        let fault = options.faults[nemesis_rng.gen_range(0..options.faults.len())];
        let at = started.elapsed();
        match fault {
            Fault::Kill => {
                let what = target.kill_and_restart(&mut nemesis_rng);
                faults.push((at, what));
            }
            Fault::Pause => {
                let pause = Duration::from_millis(nemesis_rng.gen_range(200..=1500));
                let (pid, name) = target
                    .pause_target(&mut nemesis_rng)
                    .expect("the target runs");
                let pid = pid as libc::pid_t;
                // SAFETY: kill has no memory-safety preconditions; the pid is our own running
                // child (not reaped), so it cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(pause);
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                faults.push((at, format!("SIGSTOP {name} for {pause:?}, SIGCONT")));
            }
            Fault::Partition => {
                let span = Duration::from_millis(nemesis_rng.gen_range(500..=3000));
                if let Some(what) = target.partition(&mut nemesis_rng) {
                    std::thread::sleep(span);
                    target.heal();
                    faults.push((at, format!("{what} for {span:?}, heal")));
                }
            }
        }
    }
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client thread panicked");
    }
    let elapsed = started.elapsed();
    let events = history.events();
    crate::history::write_jsonl(history_path, &events).expect("write the history file");
    let checked = Instant::now();
    let check = linearizability::check_events(&events).expect("the history is well formed");
    let check_time = checked.elapsed();
    let count = |kind: EventType| events.iter().filter(|e| e.kind == kind).count() as u64;
    let report = RunReport {
        seed: options.seed,
        ops: count(EventType::Invoke),
        ok: count(EventType::Ok),
        fail: count(EventType::Fail),
        info: count(EventType::Info),
        faults,
        elapsed,
        check_time,
        check,
    };
    (report, target)
}

/// One client: a process id, a connection, operations one at a time until told to stop.
struct RegisterClient {
    /// Every node's address; the client talks to `addrs[node]`.
    addrs: Vec<SocketAddr>,
    node: usize,
    history: History,
    stop: Arc<AtomicBool>,
    next_process: Arc<AtomicU64>,
    next_value: Arc<AtomicU64>,
    keys: usize,
    timeout: Duration,
    rng: ChaCha8Rng,
}

impl RegisterClient {
    fn run(mut self) {
        block_on(async move {
            let mut process = self.next_process.fetch_add(1, Ordering::Relaxed);
            // The last value this client saw per key: what its compare-and-sets expect.
            let mut seen: Vec<Option<u64>> = vec![None; self.keys];
            while !self.stop.load(Ordering::Relaxed) {
                let Some(client) = self.connect().await else {
                    break;
                };
                loop {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = self.rng.gen_range(0..self.keys);
                    let op = match self.rng.gen_range(0..4) {
                        0 | 1 => Op::Get,
                        2 => Op::Put(self.next_value.fetch_add(1, Ordering::Relaxed)),
                        _ => Op::Cas {
                            from: seen[k],
                            to: self.next_value.fetch_add(1, Ordering::Relaxed),
                        },
                    };
                    let key = format!("r{k}");
                    let call = self.history.invoke(process, &key, op);
                    let outcome =
                        tokio::time::timeout(self.timeout, apply(&client, &key, op)).await;
                    match outcome {
                        Ok(Ok(done)) => {
                            if let Some(v) = done.observed {
                                seen[k] = v;
                            }
                            self.history.ok(call, done.result);
                            // Against a cluster, move to a random node now and then, so
                            // every node serves operations (clients would otherwise gather
                            // on the leader, the only node that accepts everything).
                            if self.addrs.len() > 1 && self.rng.gen_bool(0.1) {
                                self.node = self.rng.gen_range(0..self.addrs.len());
                                break;
                            }
                        }
                        // A replicated write whose outcome the replica never learned.
                        Ok(Err(Error::Server(e))) if e.code == ErrorCode::OutcomeUnknown => {
                            self.history.info(call);
                            process = self.next_process.fetch_add(1, Ordering::Relaxed);
                            self.node = (self.node + 1) % self.addrs.len();
                            break;
                        }
                        // Not the leader: nothing applied; try the next node.
                        Ok(Err(Error::Server(e))) if e.code == ErrorCode::NotLeader => {
                            self.history.fail(call);
                            self.node = (self.node + 1) % self.addrs.len();
                            // During an election every node refuses: do not spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            break;
                        }
                        Ok(Err(Error::Server(_))) => self.history.fail(call),
                        // Unknown outcome: a new process on a new connection.
                        Ok(Err(_)) | Err(_) => {
                            self.history.info(call);
                            process = self.next_process.fetch_add(1, Ordering::Relaxed);
                            self.node = (self.node + 1) % self.addrs.len();
                            break;
                        }
                    }
                }
                // Dropped inside the runtime: its connections close their tasks here.
                drop(client);
            }
        });
    }

    /// Connects to the current node, moving on to the next one while it does not answer
    /// (restarting, killed); None once told to stop.
    async fn connect(&mut self) -> Option<Client> {
        while !self.stop.load(Ordering::Relaxed) {
            let connect = Client::connect(TokioRuntime, self.addrs[self.node]);
            if let Ok(Ok(client)) = tokio::time::timeout(self.timeout, connect).await {
                return Some(client);
            }
            self.node = (self.node + 1) % self.addrs.len();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// What an answered operation returned, and what it showed of the key's value.
struct Done {
    result: Reply,
    /// The value the operation read or wrote (Some(None): absent), if it tells one.
    observed: Option<Option<u64>>,
}

async fn apply(client: &Client, key: &str, op: Op) -> Result<Done, Error> {
    match op {
        Op::Get => {
            let value = client.get(key.as_bytes()).await?;
            let value = value.map(|v| decode(&v)).transpose()?;
            Ok(Done {
                result: Reply::Get(value),
                observed: Some(value),
            })
        }
        Op::Put(v) => {
            client.put(key.as_bytes(), v.to_string().as_bytes()).await?;
            Ok(Done {
                result: Reply::Put,
                observed: Some(Some(v)),
            })
        }
        Op::Cas { from, to } => {
            let expected = match from {
                Some(f) => Expected::Value(f.to_string().into_bytes()),
                None => Expected::Absent,
            };
            let r = client
                .cas(CasOp {
                    key: key.as_bytes().to_vec(),
                    expected,
                    new: Some(to.to_string().into_bytes()),
                    ttl_ms: 0,
                })
                .await?;
            let observed = if r.succeeded {
                Some(to)
            } else {
                r.current.as_deref().map(decode).transpose()?
            };
            Ok(Done {
                result: Reply::Cas {
                    applied: r.succeeded,
                },
                observed: Some(observed),
            })
        }
    }
}

/// A register value as stored: its decimal digits.
fn decode(bytes: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("not a register value: {bytes:?}")))
}
