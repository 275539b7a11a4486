//! `corekv-failover`: how long a 3-node cluster goes without acknowledging a write when its
//! leader is killed.
//!
//! ```sh
//! corekv-failover --kills 5 --dir /var/tmp/corekv-failover
//! ```
//!
//! Starts three `corekv-server` nodes on loopback (one shard each, spread over this machine's
//! CPUs: `CpuSet::for_local_node`; the servers' default election timeout and heartbeat
//! unless given), writes continuously from `--writers` tasks
//! through one Rust client (which follows the leader), and `--kills` times: finds the leader
//! (the node whose `raft_role` is leader), `kill -9`s it, waits until writes are acknowledged
//! again, restarts it, and lets the cluster settle. For each kill it prints the outage: from
//! the kill to the acknowledgement of the first write sent after it (what a client sees:
//! election, the client finding the new leader, and retrying; replies that were on their way
//! when the leader died do not count), and the median over the kills. With `--transfer` it
//! moves the leadership to the next node instead (`transferLeader`); its outage is the longest
//! time between two acknowledged writes from the move's start to 0.5 s after it finished.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use corekv_proto::client::GlommioRuntime;
use corekv_proto::{Client, Connection};
use corekv_server::config::allowed_cpus;
use glommio::{LocalExecutorBuilder, Placement};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kill a 3-node cluster's leader repeatedly under writes; report how long writes stop.
#[derive(Debug, Parser)]
#[command(name = "corekv-failover")]
struct Args {
    /// The server binary (default: `corekv-server` beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Data directories and logs of the nodes (emptied first; a real disk, not tmpfs).
    #[arg(long, default_value = "/var/tmp/corekv-failover")]
    dir: PathBuf,
    /// Leader kills (or moves, with `--transfer`).
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Concurrent writer tasks.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Time the cluster runs whole before each kill, in ms.
    #[arg(long, default_value_t = 3000)]
    settle_ms: u64,
    /// Node i (1..3) listens for clients on BASE + 10 i and for peers on BASE + 10 i + 5.
    #[arg(long, default_value_t = 7800)]
    port_base: u16,
    /// More flags for every node (repeat), e.g. `--server-arg=--election-timeout-ms=500`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Instead of killing the leader, hand its leadership to the next node (`transferLeader`,
    /// as `corekv-cli cluster transfer-leader` does before maintenance): the outage of a
    /// planned move.
    #[arg(long)]
    transfer: bool,
}

struct Node {
    id: u64,
    client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    /// One CPU, the nodes spread over this machine's (`CpuSet::for_local_node`).
    cores: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, server: &Path, cluster: &str, extra: &[String]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.with_extension("log"))?;
        let child = Command::new(server)
            .args(["--node-id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &self.client.to_string()])
            .args(["--peer-listen", &self.peer.to_string()])
            .args(["--initial-cluster", cluster])
            .args(["--cores", &self.cores])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", server.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

/// Waits until `addr` accepts a connection that answers `topology`.
async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = Connection::connect(GlommioRuntime, addr).await
            && c.topology().await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node at {addr} did not start within 30 s (see its log)");
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// The running node that says it leads (its `raft_role` is 2), if any.
async fn leader(nodes: &[Node]) -> Option<usize> {
    for (i, node) in nodes.iter().enumerate() {
        if node.child.is_none() {
            continue;
        }
        let Ok(c) = Connection::connect(GlommioRuntime, node.client).await else {
            continue;
        };
        let Ok(stats) = c.stats().await else {
            continue;
        };
        let role = stats
            .first()
            .and_then(|s| s.counters.iter().find(|(n, _)| n == "raft_role"))
            .map(|(_, v)| *v);
        if role == Some(2) {
            return Some(i);
        }
    }
    None
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let server = match &args.server {
        Some(s) => s.clone(),
        None => std::env::current_exe()?.with_file_name("corekv-server"),
    };
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let cpus = allowed_cpus().context("read this process's CPUs")?;
    let mut nodes: Vec<Node> = (1..=3u16)
        .map(|i| {
            let cores = cpus
                .for_local_node(usize::from(i - 1), 1)
                .context("this process may run on no CPU")?;
            Ok(Node {
                id: u64::from(i),
                client: addr(args.port_base + 10 * i),
                peer: addr(args.port_base + 10 * i + 5),
                dir: args.dir.join(format!("node{i}")),
                cores: cores.to_string(),
                child: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let cluster: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.peer))
        .collect();
    let cluster = cluster.join(",");
    for node in &mut nodes {
        node.start(&server, &cluster, &args.server_args)?;
    }
    let result = measure(&args, &server, &cluster, &mut nodes).await;
    for node in &mut nodes {
        node.terminate();
    }
    result
}

async fn measure(
    args: &Args,
    server: &Path,
    cluster: &str,
    nodes: &mut [Node],
) -> anyhow::Result<()> {
    for node in nodes.iter() {
        wait_ready(node.client).await?;
    }
    let client = Client::connect(GlommioRuntime, nodes[0].client).await?;
    // (sent, acknowledged) of every acknowledged write.
    let acks: Rc<RefCell<Vec<(Instant, Instant)>>> = Rc::default();
    let errors = Rc::new(Cell::new(0u64));
    let stop = Rc::new(Cell::new(false));
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let (client, acks, errors, stop) =
            (client.clone(), acks.clone(), errors.clone(), stop.clone());
        writers.push(glommio::spawn_local(async move {
            let mut i = 0u64;
            while !stop.get() {
                let key = format!("w{w}-{}", i % 10_000);
                i += 1;
                let sent = Instant::now();
                match client.put(key.as_bytes(), b"failover").await {
                    Ok(_) => acks.borrow_mut().push((sent, Instant::now())),
                    Err(_) => {
                        errors.set(errors.get() + 1);
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    let settle = Duration::from_millis(args.settle_ms);
    let mut outages = Vec::new();
    for k in 1..=args.kills {
        glommio::timer::sleep(settle).await;
        let Some(victim) = leader(nodes).await else {
            bail!("kill {k}: no node says it leads");
        };
        let kill_at = Instant::now();
        let to = nodes[(victim + 1) % nodes.len()].id;
        if args.transfer {
            let c = Connection::connect(GlommioRuntime, nodes[victim].client).await?;
            c.transfer_leader(0, to)
                .await
                .with_context(|| format!("move {k}: transfer to node {to}"))?;
        } else {
            nodes[victim].kill9()?;
        }
        let deadline = kill_at + Duration::from_secs(30);
        let first_after = loop {
            let first = acks
                .borrow()
                .iter()
                .rev()
                .take_while(|(_, acked)| *acked > kill_at)
                .filter(|(sent, _)| *sent > kill_at)
                .map(|(_, acked)| *acked)
                .min();
            if let Some(t) = first {
                break t;
            }
            if Instant::now() > deadline {
                bail!("kill {k}: no write acknowledged within 30 s of killing the leader");
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        };
        let mut outage = first_after - kill_at;
        if args.transfer {
            // Writes sent just after the request may still be taken by the old leader before
            // it stops taking them: the outage of a move is the longest time between two
            // acknowledgements from its start until half a second after it finished.
            let done = Instant::now();
            glommio::timer::sleep(Duration::from_millis(500)).await;
            let acks = acks.borrow();
            let times: Vec<Instant> = acks
                .iter()
                .map(|(_, acked)| *acked)
                .filter(|t| (kill_at..done + Duration::from_millis(500)).contains(t))
                .collect();
            outage = times
                .windows(2)
                .map(|w| w[1].saturating_duration_since(w[0]))
                .chain(times.first().map(|t| *t - kill_at))
                .max()
                .unwrap_or(outage);
        }
        let event = if args.transfer {
            format!(
                "move {k}: node {} (leader) handed over to node {to}",
                nodes[victim].id
            )
        } else {
            format!("kill {k}: node {} (leader) killed", nodes[victim].id)
        };
        let measure = if args.transfer {
            "the longest time without an acknowledged write was"
        } else {
            "the first write sent after it was acknowledged"
        };
        println!("{event}; {measure} {} ms", outage.as_millis());
        outages.push(outage);
        if !args.transfer {
            nodes[victim].start(server, cluster, &args.server_args)?;
            wait_ready(nodes[victim].client).await?;
        }
    }
    stop.set(true);
    for w in writers {
        w.await;
    }
    let n = acks.borrow().len();
    println!(
        "median outage {} ms over {} {} (max {} ms); {n} writes acknowledged, {} failed \
         (outcome unknown or refused, retried as new writes)",
        median(outages.clone()).as_millis(),
        outages.len(),
        if args.transfer { "moves" } else { "kills" },
        outages
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_millis(),
        errors.get()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || run(args))
        .map_err(|e| anyhow::anyhow!("cannot start the executor: {e}"))
        .and_then(|h| {
            h.join()
                .map_err(|e| anyhow::anyhow!("the executor failed: {e}"))
        });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) | Err(e) => {
            eprintln!("corekv-failover: {e:#}");
            ExitCode::FAILURE
        }
    }
}
