//! A local cluster of real `corekv-server` processes on loopback (one shard each unless asked
//! for more, the nodes' shards spread over the CPUs as `local-cluster.sh` does), for the
//! replication and Jepsen tests: start, `kill -9`, restart, pause, partitions (a
//! [`Proxy`] on each direction of each peer link), and finding the leader.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corekv_proto::client::{Connection, TokioRuntime};
use corekv_proto::{Error, ErrorCode};

use crate::proxy::{Mode, Proxy};
use crate::{Server, ServerOptions, free_ports};

/// One node: its addresses, data directory, options, and the process when it runs.
pub struct Node {
    /// Node id (1..).
    pub id: u64,
    /// Client address.
    pub addr: SocketAddr,
    /// Each shard's own client address.
    pub shard_addrs: Vec<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    options: ServerOptions,
    /// The running process (None while killed).
    pub server: Option<Server>,
}

/// A cluster of `n` nodes. Its processes die with the thread that started them.
pub struct LocalCluster {
    /// The nodes, `nodes[i]` has id `i + 1`.
    pub nodes: Vec<Node>,
    /// ((from, to), the proxy `from` dials to reach `to`), for every ordered pair.
    links: Vec<((u64, u64), Proxy)>,
}

impl LocalCluster {
    /// Starts `n` nodes with data directories in `dir`; `extra_args` go to every node.
    pub fn start(dir: &Path, n: u64, extra_args: &[&str]) -> LocalCluster {
        LocalCluster::start_sharded(dir, n, 1, extra_args)
    }

    /// [`LocalCluster::start`] with `shards` shards per node (at most the CPUs there are).
    pub fn start_sharded(dir: &Path, n: u64, shards: usize, extra_args: &[&str]) -> LocalCluster {
        let options = ServerOptions::shards(shards);
        let shards = options.shards;
        // The nodes' shards spread over the CPUs, as `local-cluster.sh` places them.
        let cpus = corekv_server::config::allowed_cpus().expect("this process's CPUs");
        // Per node: client port, one port per shard, peer port.
        let per_node = shards as u16 + 2;
        let base = free_ports(per_node as usize * n as usize);
        let port = |id: u64, k: u16| base + per_node * (id as u16 - 1) + k;
        let peer_port = |id: u64| port(id, per_node - 1);
        let cluster: Vec<String> = (1..=n)
            .map(|id| format!("{id}=127.0.0.1:{}", peer_port(id)))
            .collect();
        let cluster = cluster.join(",");
        let peer_addr = |id: u64| SocketAddr::from(([127, 0, 0, 1], peer_port(id)));
        let mut links = Vec::new();
        for from in 1..=n {
            for to in (1..=n).filter(|&to| to != from) {
                links.push(((from, to), Proxy::start(peer_addr(to))));
            }
        }
        let mut nodes: Vec<Node> = (1..=n)
            .map(|id| {
                let peer = format!("127.0.0.1:{}", peer_port(id));
                let dial: Vec<String> = links
                    .iter()
                    .filter(|((from, _), _)| *from == id)
                    .map(|((_, to), proxy)| format!("{to}={}", proxy.addr))
                    .collect();
                let mut options = options.clone();
                options.cores = Some(
                    cpus.for_local_node(id as usize - 1, shards)
                        .expect("as many CPUs as shards")
                        .to_string(),
                );
                let options = options
                    .args(&[
                        "--node-id",
                        &id.to_string(),
                        "--peer-listen",
                        &peer,
                        "--initial-cluster",
                        &cluster,
                        "--election-timeout-ms",
                        "600",
                        "--heartbeat-interval-ms",
                        "100",
                        "--debug-peer-dial",
                        &dial.join(","),
                    ])
                    .args(extra_args);
                Node {
                    id,
                    addr: SocketAddr::from(([127, 0, 0, 1], port(id, 0))),
                    shard_addrs: (0..shards as u16)
                        .map(|i| SocketAddr::from(([127, 0, 0, 1], port(id, 1 + i))))
                        .collect(),
                    data_dir: dir.join(format!("node{id}")),
                    options,
                    server: None,
                }
            })
            .collect();
        for node in &mut nodes {
            node.start();
        }
        LocalCluster { nodes, links }
    }

    /// Cuts every link between `side` and the other nodes, both ways (messages vanish; the
    /// connections stay open).
    pub fn partition(&self, side: &[u64]) {
        for ((from, to), proxy) in &self.links {
            if side.contains(from) != side.contains(to) {
                proxy.set(Mode::Blackhole);
            }
        }
    }

    /// Cuts the links from `from` to every other node only (its messages vanish; it still
    /// hears the others).
    pub fn partition_outbound(&self, from: u64) {
        for ((f, _), proxy) in &self.links {
            if *f == from {
                proxy.set(Mode::Blackhole);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for (_, proxy) in &self.links {
            proxy.set(Mode::Pass);
        }
    }

    /// The node with id `id`.
    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// Every node's client address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The id of the node that accepts a read now (the leader), waiting up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for node in self.nodes.iter().filter(|n| n.server.is_some()) {
                let Ok(c) = Connection::connect(TokioRuntime, node.addr).await else {
                    continue;
                };
                match c.get(b"leader-probe").await {
                    Ok(_) => return Some(node.id),
                    Err(Error::Server(e)) if e.code == ErrorCode::NotLeader => {}
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Stops every running node (SIGTERM).
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut s) = node.server.take() {
                s.terminate();
            }
        }
    }
}

impl Node {
    /// Starts (or restarts) the node on its data directory and addresses.
    pub fn start(&mut self) {
        assert!(self.server.is_none(), "node {} runs already", self.id);
        self.server = Some(Server::start_at(
            self.addr,
            &self.data_dir,
            self.options.clone(),
        ));
    }

    /// Sets flag `flag` to `value` for this node's later starts (replacing the value it had).
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        let args = &mut self.options.extra_args;
        match args.iter().position(|a| a == flag) {
            Some(at) if at + 1 < args.len() => args[at + 1] = value.to_string(),
            _ => args.extend([flag.to_string(), value.to_string()]),
        }
    }

    /// Drops flag `flag` and its value from this node's later starts.
    pub fn remove_flag(&mut self, flag: &str) {
        let args = &mut self.options.extra_args;
        if let Some(at) = args.iter().position(|a| a == flag) {
            args.drain(at..(at + 2).min(args.len()));
        }
    }

    /// Waits until the process exits by itself (a crash point), at most `timeout`; true if it
    /// did. The node is then down.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let exited = self.server.as_mut().is_none_or(|s| s.exited().is_some());
            if exited {
                self.server = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `kill -9`, waiting until the process is gone.
    pub fn kill9(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal_and_wait(libc::SIGKILL);
        }
    }

    /// The running process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(Server::pid)
    }
}

/// Writing and checking through the cluster.
impl LocalCluster {
    /// Puts `key` on the node that accepts it, trying every running node but `skip` until one
    /// does (the leader); returns its id. Panics after a generous deadline.
    pub async fn put_anywhere(&self, skip: &[u64], key: &[u8], value: &[u8]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for node in self
                .nodes
                .iter()
                .filter(|n| n.server.is_some() && !skip.contains(&n.id))
            {
                let Ok(c) = Connection::connect(TokioRuntime, node.addr).await else {
                    continue;
                };
                match c.put(key, value, 0).await {
                    Ok(_) => return node.id,
                    Err(Error::Server(e)) if e.code == ErrorCode::NotLeader => {}
                    Err(e) => panic!("put on node {}: {e}", node.id),
                }
            }
            assert!(Instant::now() < deadline, "no node accepted a write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The counter `name` of every node's only shard, in node order.
    pub async fn counters(&self, name: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let c = Connection::connect(TokioRuntime, node.addr).await.unwrap();
            let stats = c.stats().await.unwrap();
            out.push(stats[0].counter(name).unwrap());
        }
        out
    }

    /// Waits until every node applied what `leader` applied; returns that index.
    pub async fn applied_everywhere(&self, leader: u64) -> u64 {
        let target = self.counters("raft_applied_index").await[leader as usize - 1];
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .counters("raft_applied_index")
            .await
            .iter()
            .any(|&a| a < target)
        {
            assert!(
                Instant::now() < deadline,
                "nodes never applied index {target}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        target
    }

    /// Reads every key through the leader; followers refuse reads (they are linearizable).
    pub async fn check_all(&self, leader: u64, written: &[(Vec<u8>, Vec<u8>)]) {
        let node = &self.nodes[leader as usize - 1];
        let c = Connection::connect(TokioRuntime, node.addr).await.unwrap();
        for (k, v) in written {
            assert_eq!(
                c.get(k).await.unwrap().as_ref(),
                Some(v),
                "acknowledged write of {} lost",
                String::from_utf8_lossy(k)
            );
        }
        for other in self
            .nodes
            .iter()
            .filter(|n| n.id != leader && n.server.is_some())
        {
            let c = Connection::connect(TokioRuntime, other.addr).await.unwrap();
            match c.get(&written[0].0).await {
                Err(Error::Server(e)) => assert_eq!(e.code, ErrorCode::NotLeader, "{e:?}"),
                other => panic!("a follower answered a read: {other:?}"),
            }
        }
    }
}

/// The key and value numbered `i`.
pub fn kv(i: usize) -> (Vec<u8>, Vec<u8>) {
    (
        format!("k{i:04}").into_bytes(),
        format!("v{i}").into_bytes(),
    )
}
