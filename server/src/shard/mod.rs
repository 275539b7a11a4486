//! One shard: the owner of a slice of the keyspace, its storage, its counters, and the routing
//! of every operation its connections receive.
//!
//! An operation whose key this shard owns runs on the local [`Store`]; one owned by shard `j`
//! goes to `j` over the [`Mesh`] (all of a call's operations for `j` in one message); a scan
//! asks every shard and merges ([`scan`]). Everything here runs on the shard's own executor.

mod columns;
pub mod limits;
pub mod local;
pub mod scan;

use std::rc::Rc;

use corekv_proto::{
    ErrorCode, Op, OpError, OpResult, ServerInfo, ShardStats, Topology, shard_for_key,
};

use crate::control::Latch;
use crate::counters::{self, Counters};
use crate::mesh::{Mesh, Work, WorkResult};
use crate::metrics::{ShardMetrics, ShardSnapshot};
use crate::net::frames::FrameBudget;
use crate::store::Store;
pub use limits::Limits;

/// One shard's state, shared (`Rc`) by its tasks.
pub struct Shard {
    /// This shard's id, `0..count`.
    pub id: usize,
    /// Number of shards.
    pub count: usize,
    /// The shard's storage.
    pub store: Store,
    /// Channels to the other shards.
    pub mesh: Rc<Mesh>,
    /// The shard's counters.
    pub counters: Rc<Counters>,
    /// Latency histograms, per-kind errors and byte counts for Prometheus (`metrics/`).
    pub metrics: Rc<ShardMetrics>,
    /// Request limits.
    pub limits: Limits,
    /// What `topology` answers.
    pub topology: Topology,
    /// What `serverInfo` answers.
    pub info: ServerInfo,
    /// Set when the shard starts stopping: listeners close, connections drain.
    pub stopping: Latch,
    /// Detached tasks running operations (writes whose caller may be gone, requests from
    /// other shards); the store is closed only once this is 0.
    pub work_in_flight: Rc<std::cell::Cell<u64>>,
    /// Bytes of large incoming frames in progress, shared by the shard's connections.
    pub frame_budget: Rc<FrameBudget>,
    /// In a cluster: this shard's replica of its Raft group, through which every operation
    /// on its keys goes (set once at start).
    pub replica: std::cell::OnceCell<crate::replication::replica::Replica>,
}

impl Shard {
    /// The shard that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        shard_for_key(key, self.count as u32) as usize
    }

    /// Executes one operation received from a client, wherever its key lives.
    pub async fn execute_one(self: &Rc<Self>, op: Op) -> OpResult {
        if let Err(e) = self.limits.check_op(&op) {
            return self.error(e);
        }
        let owner = match op.key() {
            Some(key) => self.owner(key),
            None => {
                let Op::Scan(scan) = op else {
                    return self.error(OpError::new(ErrorCode::Internal, "keyless operation"));
                };
                return self.count_error(scan::scan(self, scan).await);
            }
        };
        if owner == self.id {
            return self.count_error(self.execute_local_one(&op).await);
        }
        counters::incr(&self.counters.ops_forwarded_out_total);
        let result = match self.mesh.request(owner, Work::Ops(vec![op])).await {
            Ok(WorkResult::Ops(mut results)) if results.len() == 1 => results
                .pop()
                .unwrap_or_else(|| OpResult::Error(mismatched_reply())),
            Ok(_) => OpResult::Error(mismatched_reply()),
            Err(e) => OpResult::Error(e),
        };
        self.count_error(result)
    }

    /// Executes many operations received from a client: checked, split by owner, every
    /// owner's share at once (one message per other shard). `result[i]` answers `ops[i]`.
    pub async fn execute(self: &Rc<Self>, ops: Vec<Op>) -> Vec<OpResult> {
        let n = ops.len();
        let mut results: Vec<Option<OpResult>> = (0..n).map(|_| None).collect();
        // Per owner: the operations' positions and the operations.
        let mut by_owner: Vec<(Vec<usize>, Vec<Op>)> =
            (0..self.count).map(|_| (Vec::new(), Vec::new())).collect();
        let mut scans = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            if let Err(e) = self.limits.check_op(&op) {
                results[i] = Some(OpResult::Error(e));
                continue;
            }
            match (op.key().map(|k| self.owner(k)), op) {
                (_, Op::Scan(scan)) => scans.push((i, scan)),
                (Some(owner), op) => {
                    by_owner[owner].0.push(i);
                    by_owner[owner].1.push(op);
                }
                (None, _) => {
                    results[i] = Some(OpResult::Error(OpError::new(
                        ErrorCode::Internal,
                        "keyless operation",
                    )));
                }
            }
        }
        let groups = by_owner
            .into_iter()
            .enumerate()
            .filter(|(_, (idx, _))| !idx.is_empty())
            .map(|(owner, (idx, ops))| async move {
                let len = ops.len();
                let results = if owner == self.id {
                    self.execute_local(ops).await
                } else {
                    counters::add(&self.counters.ops_forwarded_out_total, len as u64);
                    match self.mesh.request(owner, Work::Ops(ops)).await {
                        Ok(WorkResult::Ops(r)) if r.len() == len => r,
                        Ok(_) => vec![OpResult::Error(mismatched_reply()); len],
                        Err(e) => vec![OpResult::Error(e); len],
                    }
                };
                (idx, results)
            });
        let scans = scans
            .into_iter()
            .map(|(i, op)| async move { (i, scan::scan(self, op).await) });
        let (groups, scans) = futures::join!(
            futures::future::join_all(groups),
            futures::future::join_all(scans)
        );
        for (idx, group) in groups {
            for (i, r) in idx.into_iter().zip(group) {
                results[i] = Some(r);
            }
        }
        for (i, r) in scans {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| {
                self.count_error(r.unwrap_or_else(|| {
                    OpResult::Error(OpError::new(ErrorCode::Internal, "operation lost"))
                }))
            })
            .collect()
    }

    /// Serves a request another shard sent.
    pub async fn serve_forwarded(&self, work: Work) -> WorkResult {
        match work {
            Work::Ops(ops) => {
                counters::add(&self.counters.ops_forwarded_in_total, ops.len() as u64);
                WorkResult::Ops(self.execute_local(ops).await)
            }
            Work::Stats => WorkResult::Stats(self.counter_list()),
            Work::Metrics => WorkResult::Metrics(Box::new(self.metrics_snapshot())),
            Work::Replicas => {
                let (leader, replicas) = self.replicas();
                WorkResult::Replicas(leader, replicas)
            }
            Work::PeerConnection(conn) => {
                crate::replication::replica::adopt_peer_connection(self, conn);
                WorkResult::Done
            }
            Work::TransferLeader(to) => {
                WorkResult::Transferred(self.transfer_leader_here(to).await)
            }
        }
    }

    /// Makes node `to` the leader of shard `shard`'s group (`transferLeader`), asking that
    /// shard of this node.
    pub async fn transfer_leader(&self, shard: u32, to: u64) -> Result<(), OpError> {
        let j = shard as usize;
        if j >= self.topology.shards.len() {
            return Err(OpError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "no shard {shard}: this node has shards 0 to {}",
                    self.topology.shards.len() - 1
                ),
            ));
        }
        if j == self.id {
            return self.transfer_leader_here(to).await;
        }
        match self.mesh.request(j, Work::TransferLeader(to)).await {
            Ok(WorkResult::Transferred(r)) => r,
            Ok(_) => Err(mismatched_reply()),
            Err(_) => Err(OpError::new(
                ErrorCode::ShuttingDown,
                format!("shard {shard} did not answer: the server is stopping"),
            )),
        }
    }

    async fn transfer_leader_here(&self, to: u64) -> Result<(), OpError> {
        match self.replica.get() {
            Some(replica) => replica.transfer_leader(to).await,
            None => Err(OpError::new(
                ErrorCode::InvalidArgument,
                "this is a single node, not a cluster node: it has no leader to move",
            )),
        }
    }

    /// This shard's leader (0: none known) and replicas; none on a single node.
    fn replicas(&self) -> (u64, Vec<corekv_proto::ReplicaInfo>) {
        match self.replica.get() {
            Some(replica) => (replica.group.status().leader, replica.members.replicas()),
            None => (0, Vec::new()),
        }
    }

    /// What `topology` answers: the shards' ports and, in a cluster, each shard's leader and
    /// replicas, asked of the shards themselves.
    pub async fn topology(&self) -> corekv_proto::Topology {
        let mut topology = self.topology.clone();
        if self.replica.get().is_none() {
            return topology;
        }
        for (j, info) in topology.shards.iter_mut().enumerate() {
            let (leader, replicas) = if j == self.id {
                self.replicas()
            } else {
                match self.mesh.request(j, Work::Replicas).await {
                    Ok(WorkResult::Replicas(leader, replicas)) => (leader, replicas),
                    // A shard that does not answer (stopping) is listed without its replicas.
                    _ => (0, Vec::new()),
                }
            };
            info.leader = leader;
            info.replicas = replicas;
        }
        topology
    }

    /// This shard's part of a Prometheus scrape.
    pub fn metrics_snapshot(&self) -> ShardSnapshot {
        let server = self.server_counters();
        ShardSnapshot {
            shard: self.id,
            server,
            storage: self.store.counters(),
            metrics: self.metrics.snapshot(),
        }
    }

    /// Every shard's part of a Prometheus scrape, in shard order (a shard that does not answer
    /// is left out).
    pub async fn gather_metrics(self: &Rc<Self>) -> Vec<ShardSnapshot> {
        let all = futures::future::join_all((0..self.count).map(|j| async move {
            if j == self.id {
                return Some(self.metrics_snapshot());
            }
            match self.mesh.request(j, Work::Metrics).await {
                Ok(WorkResult::Metrics(s)) => Some(*s),
                Ok(_) | Err(_) => None,
            }
        }));
        all.await.into_iter().flatten().collect()
    }

    /// The server's counters of this shard, gauges included.
    fn server_counters(&self) -> Vec<(&'static str, u64)> {
        let mut list = self.counters.list();
        list.push(("work_in_flight", self.work_in_flight.get()));
        list.push((
            "frame_budget_bytes_in_use",
            self.frame_budget.in_use_bytes() as u64,
        ));
        list.push((
            "frame_budget_waits_total",
            self.frame_budget.waits_total.get(),
        ));
        if let Some(replica) = self.replica.get() {
            list.extend(replica.counters());
        }
        list
    }

    /// This shard's counters followed by its storage's.
    pub fn counter_list(&self) -> Vec<(&'static str, u64)> {
        let mut list = self.server_counters();
        list.extend(self.store.counters());
        list
    }

    /// Counters of every shard, in shard order.
    pub async fn gather_stats(self: &Rc<Self>) -> Vec<ShardStats> {
        let all = futures::future::join_all((0..self.count).map(|j| async move {
            let list = if j == self.id {
                self.counter_list()
            } else {
                match self.mesh.request(j, Work::Stats).await {
                    Ok(WorkResult::Stats(list)) => list,
                    Ok(_) | Err(_) => Vec::new(),
                }
            };
            ShardStats {
                id: j as u32,
                counters: list.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
            }
        }));
        all.await
    }

    fn error(&self, e: OpError) -> OpResult {
        counters::incr(&self.counters.op_errors_total);
        OpResult::Error(e)
    }

    fn count_error(&self, r: OpResult) -> OpResult {
        if matches!(r, OpResult::Error(_)) {
            counters::incr(&self.counters.op_errors_total);
        }
        r
    }
}

fn mismatched_reply() -> OpError {
    OpError::new(
        ErrorCode::Internal,
        "another shard answered with the wrong number or kind of results",
    )
}
