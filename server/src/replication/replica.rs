//! [`Replica`]: a shard's place in its Raft group, as the request path sees it. Writes become
//! entries (the request's operations, [`super::commands`]) and are answered with what applying
//! them gave; reads wait for a ReadIndex barrier (so they are linearizable) and then read the
//! shard's store.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use corekv_proto::{ErrorCode, LeaderHint, Op, OpError, OpResult, ReplicaInfo};
use futures::FutureExt;
use glommio::net::TcpStream;
use raft::StateRole;
use raft::eraftpb::{Message, MessageType};

use super::commands::{
    decode_ops, decode_plain_writes, decode_results, encode_ops_after, encode_results, undecodable,
};
use super::group::{ApplyFn, ENTRY_TIME_BYTES, Group, GroupConfig, ProposeError};
use super::log_store::RaftLog;
use super::snapshot::{Incoming, Snapshots};
use super::transport::{
    Expected, PeerInbox, SNAPSHOT_IDLE_TIMEOUT, Transport, TransportConfig, accept_hello,
    bind_peer_listener, serve_after_hello,
};
use super::wire::{Hello, NodeInfo, PEER_FRAME_BYTES_MAX, SnapshotChunk};
use crate::config::{ClusterConfig, ReadMode};
use crate::faults::PlantedBug;
use crate::mesh::Work;
use crate::shard::Shard;
use crate::store::{BatchOp, EncodedBatch};

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
    /// What this node's inbound peer connections must match.
    expected: Expected,
    /// Where this shard's inbound peer connections deliver.
    inbox: ReplicaInbox,
}

/// The cluster's nodes as this node knows them: their ids, and the client addresses they
/// told it (each peer tells its own when it connects).
pub struct Members {
    voters: Vec<u64>,
    addresses: RefCell<BTreeMap<u64, SocketAddr>>,
}

impl Members {
    /// The members of `cluster`; this node's own `client_address` is known from the start.
    pub fn new(cluster: &ClusterConfig, client_address: &str) -> Members {
        let members = Members {
            voters: cluster.voters(),
            addresses: RefCell::default(),
        };
        members.learn(cluster.node_id, client_address);
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
                // Nothing to be unsure of for a read: this replica serves no more.
                Err(ProposeError::Stopped) => {
                    vec![OpResult::Error(self.refusal(&ProposeError::Closed)); count]
                }
                Err(e) => vec![OpResult::Error(self.refusal(&e)); count],
            };
        }
        self.propose_command(encode_ops_after(ENTRY_TIME_BYTES, &ops), count)
            .await
    }

    /// Proposes `command` (after room for the entry's time; `count` operations, writes among
    /// them) as one entry, and answers what applying it answered.
    pub async fn propose_command(&self, command: Vec<u8>, count: usize) -> Vec<OpResult> {
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
        match self.group.propose_entry(command).await {
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

    /// Makes node `to` the group's leader; this replica must lead it (see
    /// [`Group::transfer_leader`]).
    pub async fn transfer_leader(&self, to: u64) -> Result<(), OpError> {
        let shard = self.group.shard();
        if !self.members.voters.contains(&to) {
            return Err(OpError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "node {to} holds no replica of shard {shard}; its replicas are nodes {:?}",
                    self.members.voters
                ),
            ));
        }
        match self.group.transfer_leader(to).await {
            Ok(()) => Ok(()),
            Err(ProposeError::TimedOut) => Err(OpError::new(
                ErrorCode::Overloaded,
                format!(
                    "node {to} did not take over shard {shard} within two election timeouts \
                     (behind, unreachable, stopped, or not following this leader yet): the \
                     transfer is given up, though it may still complete; see `cluster status` \
                     and retry"
                ),
            )),
            Err(ProposeError::Stopped | ProposeError::Closed) => Err(OpError::new(
                ErrorCode::ShuttingDown,
                "the replica stopped before the transfer finished",
            )),
            Err(e) => Err(self.refusal(&e)),
        }
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
        let counts = self.group.counts();
        let (commit_p50, commit_p99) = self.group.commit_latency_us();
        let (sync_p50, sync_p99) = self.group.log_sync_latency_us();
        vec![
            ("raft_node_id", self.node_id),
            ("raft_role", role),
            ("raft_leader_id", status.leader),
            ("raft_term", status.term),
            ("raft_commit_index", status.commit),
            ("raft_applied_index", status.applied),
            ("raft_log_first_index", status.log_bounds.0),
            ("raft_log_last_index", status.log_bounds.1),
            ("raft_reads_by_lease_total", counts.lease_reads),
            ("raft_read_index_requests_total", counts.read_index_requests),
            ("raft_log_appends_total", counts.log_appends),
            (
                "raft_log_appended_entries_total",
                counts.log_appended_entries,
            ),
            ("raft_append_messages_total", counts.append_messages),
            (
                "raft_append_message_entries_total",
                counts.append_message_entries,
            ),
            ("raft_proposals_committed_total", counts.proposals_committed),
            ("raft_commit_latency_p50_us", commit_p50),
            ("raft_commit_latency_p99_us", commit_p99),
            ("raft_log_sync_latency_p50_us", sync_p50),
            ("raft_log_sync_latency_p99_us", sync_p99),
            ("raft_snapshots_made_total", snapshots.made),
            ("raft_snapshots_sent_total", snapshots.sent),
            ("raft_snapshot_send_failures_total", snapshots.send_failures),
            ("raft_snapshot_send_paced_ms_total", snapshots.send_paced_ms),
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
            ProposeError::Superseded => OpError::new(
                ErrorCode::OutcomeUnknown,
                "this replica lost its leadership, and a snapshot from the new leader replaced \
                 its log past the write: it may or may not have been applied; read the key to \
                 find out",
            ),
            ProposeError::Stopped => OpError::new(
                ErrorCode::OutcomeUnknown,
                "the replica stopped before the outcome was known: the write may or may not \
                 have been applied",
            ),
            ProposeError::Overloaded => OpError::new(
                ErrorCode::Overloaded,
                "this shard's leader holds its bound of writes not yet committed \
                 (`--max-uncommitted-mib`: a majority of its replicas is slow or unreachable); \
                 the write was not applied: retry later",
            ),
            ProposeError::Closed => self.not_leader(
                "this replica has stopped (its storage failed, or the node is stopping) and \
                 took nothing: ask the leader",
                None,
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
            let results = match decode_plain_writes(&command) {
                // Puts and deletes go from the entry's bytes into one store write; if the
                // engine refuses that write as a whole, they are applied one at a time.
                Some(Ok(batch)) => match shard.apply_entry_encoded(batch).await {
                    Some(results) => results,
                    None => shard.apply_entry_each(&ops_of(batch)).await,
                },
                Some(Err(why)) => undecodable(&why),
                None => match decode_ops(&command) {
                    Ok(ops) => shard.apply_entry(&ops).await,
                    Err(e) => undecodable(&e.to_string()),
                },
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

/// A plain-writes command's operations as [`Op`]s, to apply one at a time.
fn ops_of(batch: EncodedBatch<'_>) -> Vec<Op> {
    batch
        .ops()
        .map(|op| match op {
            BatchOp::Put { key, value, ttl_ms } => Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
                // A TTL is never 0 here: `decode_plain_writes` refuses one out of range.
                ttl_ms: ttl_ms.unwrap_or(0),
            },
            BatchOp::Delete { key } => Op::Delete { key: key.to_vec() },
        })
        .collect()
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
    faults: Option<corekv_storage::io::FaultInjector>,
    bug: Option<PlantedBug>,
) -> Result<(), String> {
    let engine = shard.store.engine().clone();
    let dir = engine.dir().to_path_buf();
    let log = RaftLog::open_with_faults(
        &dir,
        options,
        &cluster.voters(),
        engine.flushed_log_index(),
        faults,
    )
    .await
    .map_err(|e| format!("Raft log: {e}"))?;
    let (shard_id, shard_count) = (shard.id as u32, shard.count as u32);
    let snapshots = Snapshots::new(
        &dir,
        engine.clone(),
        log.clone(),
        cluster.node_id,
        (shard_id, shard_count),
        cluster.cluster_id(),
        cluster.peers(),
    );
    snapshots.set_send_rate(cluster.snapshot_send_mib_per_s.saturating_mul(1 << 20));
    snapshots.recover().await?;
    let client_address = shard_client_address(cluster, shard);
    let members = Rc::new(Members::new(cluster, &client_address));
    let transport = Transport::start(TransportConfig {
        client_address: Some(client_address),
        ..TransportConfig::new(
            cluster.node_id,
            (shard_id, shard_count),
            cluster.cluster_id(),
            cluster.peers(),
        )
    });
    // One tick per heartbeat; the election timeout in heartbeats (validated to be >= 3).
    let mut config = GroupConfig {
        node_id: cluster.node_id,
        shard: shard_id,
        voters: cluster.voters(),
        tick_interval: Duration::from_millis(cluster.heartbeat_interval_ms),
        election_ticks: (cluster.election_timeout_ms / cluster.heartbeat_interval_ms) as usize,
        heartbeat_ticks: 1,
        log_retain_entries: cluster.log_retain_entries,
        log_retain_bytes: cluster.log_retain_mib.saturating_mul(1 << 20),
        max_uncommitted_bytes: cluster.max_uncommitted_mib.saturating_mul(1 << 20),
        request_timeout: Duration::from_millis(cluster.request_timeout_ms),
        lease: None,
    };
    if cluster.read_mode == ReadMode::Lease {
        config.lease = Some(config.safe_lease());
    }
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
    let expected = Expected {
        cluster_id: cluster.cluster_id(),
        node_id: cluster.node_id,
        shards: shard_count,
        snapshot_idle_timeout: SNAPSHOT_IDLE_TIMEOUT,
    };
    let inbox = ReplicaInbox {
        shard: shard_id,
        group: group.clone(),
        snapshots: snapshots.clone(),
        members: members.clone(),
    };
    shard
        .replica
        .set(Replica {
            group,
            node_id: cluster.node_id,
            snapshots,
            members,
            follower_reads: bug == Some(PlantedBug::FollowerReads),
            transport,
            expected,
            inbox,
        })
        .map_err(|_| "the replica was started twice".to_string())?;
    // One peer listener per node, on shard 0: each connection's `Hello` names its shard, and
    // a connection for another shard moves to that shard's executor.
    if shard_id == 0 {
        let listener = bind_peer_listener(cluster.peer_listen)
            .map_err(|e| format!("cannot listen for peers on {}: {e}", cluster.peer_listen))?;
        glommio::spawn_local(accept_peers(listener, expected, Rc::downgrade(shard))).detach();
    }
    tracing::info!(
        node = cluster.node_id,
        shard = shard_id,
        peer_listen = %cluster.peer_listen,
        "replica started"
    );
    Ok(())
}

/// Where clients reach this node's shard `shard`: the node's client host with the shard's
/// own port, so a client sent to a shard's leader needs no hop to another shard there.
fn shard_client_address(cluster: &ClusterConfig, shard: &Shard) -> String {
    let port = shard.topology.shards.get(shard.id).map(|s| s.port);
    match (cluster.client_address.parse::<SocketAddr>(), port) {
        (Ok(mut addr), Some(port)) => {
            addr.set_port(port);
            addr.to_string()
        }
        _ => cluster.client_address.clone(),
    }
}

/// Accepts peer connections (shard 0) and serves each on the shard its `Hello` names.
async fn accept_peers(listener: glommio::net::TcpListener, expected: Expected, shard: Weak<Shard>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(route_peer(stream, expected, shard.clone())).detach();
            }
            Err(e) => {
                let stopped = shard
                    .upgrade()
                    .is_none_or(|s| s.replica.get().is_none_or(|r| r.group.is_stopped()));
                if stopped {
                    return;
                }
                tracing::warn!(error = %e, "accepting a peer connection failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads an inbound peer connection's `Hello`, then serves it here or moves it to the
/// shard it names (a dropped connection is dialled again by the peer).
async fn route_peer(mut stream: TcpStream, expected: Expected, shard: Weak<Shard>) {
    let Some(hello) = accept_hello(&mut stream, &expected).await else {
        return;
    };
    let Some(shard) = shard.upgrade() else {
        return;
    };
    if hello.shard as usize == shard.id {
        if let Some(replica) = shard.replica.get() {
            let inbox = replica.inbox.clone();
            drop(shard);
            serve_after_hello(stream, hello, expected, inbox).await;
        }
        return;
    }
    // SAFETY: the descriptor belongs to `stream`, which is alive for this call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let fd = match borrowed.try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(shard = hello.shard, error = %e,
                "could not hand a peer connection to its shard");
            return;
        }
    };
    // Nothing of the connection is buffered in `stream` (its `Hello` was read alone), and no
    // operation on it is pending: the duplicate carries the connection whole.
    drop(stream);
    let to = hello.shard as usize;
    if let Err(e) = shard
        .mesh
        .request(to, Work::PeerConnection(PeerConnection { fd, hello }))
        .await
    {
        tracing::debug!(shard = to, error = %e.message, "a peer connection's shard is gone");
    }
}

/// A peer connection whose `Hello` another shard read, handed to the shard it names.
#[derive(Debug)]
pub struct PeerConnection {
    fd: OwnedFd,
    hello: Hello,
}

/// Serves a peer connection shard 0 accepted for this shard (see [`route_peer`]).
pub fn adopt_peer_connection(shard: &Shard, conn: PeerConnection) {
    let Some(replica) = shard.replica.get() else {
        // This shard's replica is still starting: the peer dials again.
        tracing::debug!(
            shard = shard.id,
            "closed a peer connection that came before the replica started"
        );
        return;
    };
    // SAFETY: `conn.fd` is an open, connected TCP socket this call owns, given up to the
    // stream (which closes it).
    let stream = unsafe { TcpStream::from_raw_fd(conn.fd.into_raw_fd()) };
    glommio::spawn_local(serve_after_hello(
        stream,
        conn.hello,
        replica.expected,
        replica.inbox.clone(),
    ))
    .detach();
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
                // Kept until Raft refuses it (the group discards it then) or it is installed.
                self.snapshots.received.borrow_mut().push((
                    incoming.index,
                    incoming.term,
                    incoming.dir.clone(),
                ));
                self.group.step_snapshot(message, incoming.dir.clone());
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
