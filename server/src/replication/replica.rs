//! [`Replica`]: a shard's place in its Raft group, as the request path sees it. Writes become
//! entries (the request's operations, [`super::commands`]) and are answered with what applying
//! them gave; reads wait for a ReadIndex barrier (so they are linearizable) and then read the
//! shard's store.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use corekv_proto::{ErrorCode, LeaderHint, Op, OpError, OpResult, ReplicaInfo, Topology};
use futures::FutureExt;
use raft::StateRole;
use raft::eraftpb::{Message, MessageType};

use super::commands::{decode_ops, decode_results, encode_ops, encode_results};
use super::group::{ApplyFn, Group, GroupConfig, ProposeError};
use super::log_store::RaftLog;
use super::snapshot::{Incoming, RECEIVING_MAX, Snapshots, remove_dir};
use super::transport::{
    Expected, PeerInbox, Transport, TransportConfig, bind_peer_listener, serve_peer,
};
use super::wire::{NodeInfo, PEER_FRAME_BYTES_MAX, SnapshotChunk};
use crate::config::ClusterConfig;
use crate::faults::PlantedBug;
use crate::shard::Shard;

/// How long a write or read waits for its outcome before it is answered `outcomeUnknown`
/// (a write: it may still be applied) or `notLeader` (a read: it had no effect).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest command one entry carries: a peer frame holds at least one whole entry.
const ENTRY_BYTES_MAX: usize = PEER_FRAME_BYTES_MAX - (1 << 20);

/// A shard's replica of its Raft group.
pub struct Replica {
    /// The group.
    pub group: Group,
    /// This node's id.
    pub node_id: u64,
    /// Its snapshots, both ways.
    pub snapshots: Rc<Snapshots>,
    /// The cluster's nodes, as this one knows them.
    pub members: Rc<Members>,
    /// The `follower-reads` planted bug (tests only): reads skip the ReadIndex barrier.
    follower_reads: bool,
    transport: Transport,
}

/// The cluster's nodes as this node knows them: their ids, and the client addresses they
/// told it (each peer tells its own when it connects).
pub struct Members {
    voters: Vec<u64>,
    addresses: RefCell<BTreeMap<u64, SocketAddr>>,
}

impl Members {
    /// The members of `cluster`; this node's own address is known from the start.
    pub fn new(cluster: &ClusterConfig) -> Members {
        let members = Members {
            voters: cluster.voters(),
            addresses: RefCell::default(),
        };
        members.learn(cluster.node_id, &cluster.client_address);
        members
    }

    /// Node `node` says clients reach it at `address`. Ignored (logged) unless it is a member
    /// and the address is `ip:port`.
    pub fn learn(&self, node: u64, address: &str) {
        match address.parse::<SocketAddr>() {
            Ok(addr) if self.voters.contains(&node) => {
                let old = self.addresses.borrow_mut().insert(node, addr);
                if old != Some(addr) {
                    tracing::debug!(node, %addr, "learned a node's client address");
                }
            }
            _ => tracing::warn!(node, address, "ignored a peer's client address"),
        }
    }

    /// Where clients reach `node`, if known.
    pub fn address(&self, node: u64) -> Option<SocketAddr> {
        self.addresses.borrow().get(&node).copied()
    }

    /// Every member, with its client address when known (an empty host otherwise).
    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        self.voters
            .iter()
            .map(|&node| {
                let addr = self.address(node);
                ReplicaInfo {
                    node,
                    host: addr.map(|a| a.ip().to_string()).unwrap_or_default(),
                    port: addr.map_or(0, |a| a.port()),
                }
            })
            .collect()
    }
}

impl Replica {
    /// Executes operations this shard owns through the group.
    pub async fn execute(&self, shard: &Shard, ops: Vec<Op>) -> Vec<OpResult> {
        let count = ops.len();
        if !ops.iter().any(Op::is_write) {
            if self.follower_reads {
                return shard.apply_local(ops).await;
            }
            return match self.group.read_barrier().await {
                Ok(()) => shard.apply_local(ops).await,
                // A read that got no confirmation had no effect: as if refused.
                Err(ProposeError::TimedOut) => vec![
                    OpResult::Error(self.not_leader(
                        "this replica could not confirm its leadership in time (a partition \
                         or an election): retry",
                        None,
                    ));
                    count
                ],
                Err(e) => vec![OpResult::Error(self.refusal(&e)); count],
            };
        }
        let command = encode_ops(&ops);
        if command.len() > ENTRY_BYTES_MAX {
            let e = OpError {
                code: ErrorCode::BatchTooLarge,
                message: format!(
                    "the operations take {} bytes as a replicated entry, over the {} a \
                     cluster replicates in one: split the batch",
                    command.len(),
                    ENTRY_BYTES_MAX
                ),
                limit: ENTRY_BYTES_MAX as u64,
                actual: command.len() as u64,
                leader: None,
            };
            return vec![OpResult::Error(e); count];
        }
        match self.group.propose(command).await {
            Ok(answer) => match decode_results(&answer) {
                Ok(results) if results.len() == count => results,
                _ => vec![
                    OpResult::Error(OpError::new(
                        ErrorCode::Internal,
                        "the entry was applied but its answer does not decode",
                    ));
                    count
                ],
            },
            Err(e) => vec![OpResult::Error(self.refusal(&e)); count],
        }
    }

    /// `base` (the node's static topology) with this shard's leader and replicas.
    pub fn topology(&self, base: &Topology) -> Topology {
        let mut t = base.clone();
        let status = self.group.status();
        if let Some(info) = t.shards.get_mut(self.group.shard() as usize) {
            info.leader = status.leader;
            info.replicas = self.members.replicas();
        }
        t
    }

    /// The replica's figures, for `stats` and the metrics (`raft_*`, `peer_*`).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let status = self.group.status();
        let role = match status.role {
            StateRole::Follower => 0,
            StateRole::Candidate => 1,
            StateRole::Leader => 2,
            StateRole::PreCandidate => 3,
        };
        let snapshots = self.snapshots.stats();
        let transport = self.transport.stats();
        vec![
            ("raft_node_id", self.node_id),
            ("raft_role", role),
            ("raft_leader_id", status.leader),
            ("raft_term", status.term),
            ("raft_commit_index", status.commit),
            ("raft_applied_index", status.applied),
            ("raft_log_first_index", status.log_bounds.0),
            ("raft_log_last_index", status.log_bounds.1),
            ("raft_snapshots_made_total", snapshots.made),
            ("raft_snapshots_sent_total", snapshots.sent),
            ("raft_snapshot_send_failures_total", snapshots.send_failures),
            ("raft_snapshots_received_total", snapshots.received),
            ("raft_snapshots_installed_total", snapshots.installed),
            ("peer_messages_sent_total", transport.messages_sent),
            (
                "peer_messages_dropped_total",
                transport.dropped_queue_full
                    + transport.dropped_unknown_peer
                    + transport.dropped_too_large
                    + transport.dropped_send_failed,
            ),
            ("peer_connects_total", transport.connects),
            ("peer_connect_failures_total", transport.connect_failures),
            ("peer_bytes_sent_total", transport.bytes_sent),
        ]
    }

    /// `notLeader` with where the leader is, when this replica knows.
    fn not_leader(&self, message: impl Into<String>, leader: Option<u64>) -> OpError {
        let leader = leader
            .or_else(|| Some(self.group.status().leader))
            .filter(|&l| l != 0 && l != self.node_id);
        OpError {
            leader: leader.map(|node| LeaderHint {
                node,
                address: self.members.address(node).map(|a| a.to_string()),
            }),
            ..OpError::new(ErrorCode::NotLeader, message)
        }
    }

    fn refusal(&self, e: &ProposeError) -> OpError {
        match e {
            ProposeError::NotLeader {
                leader: Some(leader),
            } => self.not_leader(
                format!(
                    "node {} is not this shard's leader; node {leader} is: retry there",
                    self.node_id
                ),
                Some(*leader),
            ),
            ProposeError::NotLeader { leader: None } => OpError::new(
                ErrorCode::NotLeader,
                "this shard has no leader now (an election is under way): retry shortly",
            ),
            ProposeError::Dropped => self.not_leader(
                "the leader changed before this write committed; it was not applied: retry",
                None,
            ),
            ProposeError::TimedOut => OpError::new(
                ErrorCode::OutcomeUnknown,
                "the write got no outcome in time (a partition or an election): it may or may \
                 not be applied; read the key to find out",
            ),
            ProposeError::Stopped => OpError::new(
                ErrorCode::OutcomeUnknown,
                "the replica stopped before the outcome was known: the write may or may not \
                 have been applied",
            ),
        }
    }
}

/// What the group does with a committed entry: decode its operations and apply them to the
/// shard's store, answering the results (the same on every replica). An error that comes
/// from this replica rather than from the operation (the disk failed, the shard is gone)
/// stops the group instead of becoming an answer: the entry would count as applied here
/// while its writes are missing.
pub fn apply_fn(shard: Weak<Shard>) -> ApplyFn {
    Rc::new(move |_engine, command| {
        let shard = shard.clone();
        async move {
            let shard = shard.upgrade().ok_or("the shard has stopped")?;
            let results = match decode_ops(&command) {
                Ok(ops) => shard.apply_entry(&ops).await,
                // Every replica decodes the same bytes alike: a deterministic answer.
                Err(e) => vec![OpResult::Error(OpError::new(
                    ErrorCode::InvalidArgument,
                    format!("a log entry does not decode: {e}"),
                ))],
            };
            if let Some(e) = results.iter().find_map(|r| match r {
                OpResult::Error(e) if !deterministic(e.code) => Some(e),
                _ => None,
            }) {
                return Err(format!("{:?}: {}", e.code, e.message));
            }
            Ok(encode_results(&results))
        }
        .boxed_local()
    })
}

/// Whether an error answer depends only on the operation and the replicated state, so every
/// replica gives it alike.
fn deterministic(code: ErrorCode) -> bool {
    match code {
        ErrorCode::EmptyKey
        | ErrorCode::KeyTooLarge
        | ErrorCode::ValueTooLarge
        | ErrorCode::BatchTooLarge
        | ErrorCode::InvalidArgument
        | ErrorCode::WrongType => true,
        ErrorCode::Internal
        | ErrorCode::Io
        | ErrorCode::ReadOnly
        | ErrorCode::Overloaded
        | ErrorCode::ShuttingDown
        | ErrorCode::Corruption
        | ErrorCode::NotLeader
        | ErrorCode::OutcomeUnknown => false,
    }
}

/// Starts this shard's replica: opens its Raft log beside the engine, the transport to the
/// other nodes, the group, and (shard 0) the peer listener, then routes the shard's
/// operations through the group.
pub async fn start(
    shard: &Rc<Shard>,
    cluster: &ClusterConfig,
    options: &corekv_storage::Options,
    bug: Option<PlantedBug>,
) -> Result<(), String> {
    let engine = shard.store.engine().clone();
    let dir = engine.dir().to_path_buf();
    let log = RaftLog::open(&dir, options, &cluster.voters(), engine.flushed_log_index())
        .await
        .map_err(|e| format!("Raft log: {e}"))?;
    let shard_id = shard.id as u32;
    let snapshots = Snapshots::new(
        &dir,
        engine.clone(),
        log.clone(),
        cluster.node_id,
        shard_id,
        cluster.cluster_id(),
        cluster.peers(),
    );
    snapshots.recover().await?;
    let members = Rc::new(Members::new(cluster));
    let transport = Transport::start(TransportConfig {
        client_address: Some(cluster.client_address.clone()),
        ..TransportConfig::new(
            cluster.node_id,
            shard_id,
            cluster.cluster_id(),
            cluster.peers(),
        )
    });
    // One tick per heartbeat; the election timeout in heartbeats (validated to be >= 3).
    let config = GroupConfig {
        node_id: cluster.node_id,
        shard: shard_id,
        voters: cluster.voters(),
        tick_interval: Duration::from_millis(cluster.heartbeat_interval_ms),
        election_ticks: (cluster.election_timeout_ms / cluster.heartbeat_interval_ms) as usize,
        heartbeat_ticks: 1,
        log_retain_entries: cluster.log_retain_entries,
        request_timeout: REQUEST_TIMEOUT,
    };
    let group = Group::start(
        config,
        log,
        engine,
        apply_fn(Rc::downgrade(shard)),
        transport.sender(),
    )
    .map_err(|e| format!("Raft group: {e}"))?;
    group.set_snapshots(snapshots.clone());
    snapshots.set_group(group.clone());
    let listener = bind_peer_listener(cluster.peer_listen)
        .map_err(|e| format!("cannot listen for peers on {}: {e}", cluster.peer_listen))?;
    let expected = Expected {
        cluster_id: cluster.cluster_id(),
        node_id: cluster.node_id,
        shards: shard.count as u32,
    };
    let inbox = ReplicaInbox {
        shard: shard_id,
        group: group.clone(),
        snapshots: snapshots.clone(),
        members: members.clone(),
    };
    glommio::spawn_local(accept_peers(listener, expected, inbox)).detach();
    tracing::info!(
        node = cluster.node_id,
        shard = shard_id,
        peer_listen = %cluster.peer_listen,
        "replica started"
    );
    shard
        .replica
        .set(Replica {
            group,
            node_id: cluster.node_id,
            snapshots,
            members,
            follower_reads: bug == Some(PlantedBug::FollowerReads),
            transport,
        })
        .map_err(|_| "the replica was started twice".to_string())
}

/// Accepts peer connections and hands what they carry to `inbox`, the replica of the only
/// shard a node has while clusters run one shard per node.
async fn accept_peers(
    listener: glommio::net::TcpListener,
    expected: Expected,
    inbox: ReplicaInbox,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let inbox = inbox.clone();
                glommio::spawn_local(serve_peer(stream, expected, inbox)).detach();
            }
            Err(e) => {
                if inbox.group.is_stopped() {
                    return;
                }
                tracing::warn!(error = %e, "accepting a peer connection failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The inbox of a replica's peer connections: Raft messages to the group, snapshot chunks
/// to the replica's [`Snapshots`].
#[derive(Clone)]
pub struct ReplicaInbox {
    /// The shard whose group this node's listener serves.
    pub shard: u32,
    /// Its group.
    pub group: Group,
    /// Its snapshots.
    pub snapshots: Rc<Snapshots>,
    /// The cluster's nodes, as this one knows them.
    pub members: Rc<Members>,
}

impl PeerInbox for ReplicaInbox {
    type Connection = Option<Incoming>;

    fn node_info(&self, from: u64, info: NodeInfo) {
        self.members.learn(from, &info.client_address);
    }

    fn deliver(&self, conn: &mut Option<Incoming>, shard: u32, message: Message) {
        if shard != self.shard {
            return;
        }
        if message.get_msg_type() != MessageType::MsgSnapshot {
            self.group.step(message);
            return;
        }
        let meta = message.get_snapshot().get_metadata();
        match conn.as_mut() {
            Some(incoming)
                if incoming.complete
                    && (incoming.index, incoming.term) == (meta.index, meta.term) =>
            {
                incoming.handed_over = true;
                let mut received = self.snapshots.received.borrow_mut();
                received.push((incoming.index, incoming.term, incoming.dir.clone()));
                // Keep the newest few: Raft takes at most one of them.
                while received.len() > RECEIVING_MAX as usize {
                    let (_, _, d) = received.remove(0);
                    remove_dir(&d);
                }
                drop(received);
                self.group.step_snapshot(message);
            }
            _ => tracing::warn!(
                shard,
                from = message.from,
                index = meta.index,
                "refused a snapshot message whose files did not arrive before it"
            ),
        }
    }

    async fn snapshot_chunk(
        &self,
        conn: &mut Option<Incoming>,
        shard: u32,
        from: u64,
        chunk: SnapshotChunk,
    ) -> Result<(), String> {
        if shard != self.shard {
            return Err(format!("a snapshot for shard {shard}"));
        }
        self.snapshots.chunk(conn, from, chunk).await
    }
}
