//! [`Replica`]: a shard's place in its Raft group, as the request path sees it. Writes become
//! entries (the request's operations, [`super::commands`]) and are answered with what applying
//! them gave; reads wait for a ReadIndex barrier (so they are linearizable) and then read the
//! shard's store.

use std::rc::{Rc, Weak};
use std::time::Duration;

use corekv_proto::{ErrorCode, Op, OpError, OpResult};
use futures::FutureExt;

use super::commands::{decode_ops, decode_results, encode_ops, encode_results};
use super::group::{ApplyFn, Group, GroupConfig, ProposeError};
use super::log_store::RaftLog;
use super::transport::{Expected, Transport, TransportConfig, bind_peer_listener, serve_peer};
use crate::config::ClusterConfig;
use crate::shard::Shard;

/// Entries kept in the Raft log behind what the engine's tables hold, for a follower that
/// lags (one that falls further behind needs a snapshot, which is not built yet).
const LOG_RETAIN_ENTRIES: u64 = 1 << 20;

/// A shard's replica of its Raft group.
pub struct Replica {
    /// The group.
    pub group: Group,
    /// This node's id.
    pub node_id: u64,
    _transport: Transport,
}

impl Replica {
    /// Executes operations this shard owns through the group.
    pub async fn execute(&self, shard: &Shard, ops: Vec<Op>) -> Vec<OpResult> {
        let count = ops.len();
        if !ops.iter().any(Op::is_write) {
            return match self.group.read_barrier().await {
                Ok(()) => shard.apply_local(ops).await,
                Err(e) => vec![OpResult::Error(self.refusal(&e)); count],
            };
        }
        match self.group.propose(encode_ops(&ops)).await {
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

    fn refusal(&self, e: &ProposeError) -> OpError {
        match e {
            ProposeError::NotLeader {
                leader: Some(leader),
            } => OpError::new(
                ErrorCode::NotLeader,
                format!(
                    "node {} is not this shard's leader; node {leader} is: retry there",
                    self.node_id
                ),
            ),
            ProposeError::NotLeader { leader: None } => OpError::new(
                ErrorCode::NotLeader,
                "this shard has no leader now (an election is under way): retry shortly",
            ),
            ProposeError::Dropped => OpError::new(
                ErrorCode::NotLeader,
                "the leader changed before this write committed; it was not applied: retry",
            ),
            ProposeError::Stopped => OpError::new(
                ErrorCode::Internal,
                "the replica stopped before the outcome was known: the write may or may not \
                 have been applied",
            ),
        }
    }
}

/// What the group does with a committed entry: decode its operations and apply them to the
/// shard's store, answering the results (the same on every replica).
pub fn apply_fn(shard: Weak<Shard>) -> ApplyFn {
    Rc::new(move |_engine, command| {
        let shard = shard.clone();
        async move {
            let results = match (shard.upgrade(), decode_ops(&command)) {
                (Some(shard), Ok(ops)) => shard.apply_local(ops).await,
                (None, _) => Vec::new(),
                (Some(_), Err(e)) => vec![OpResult::Error(OpError::new(
                    ErrorCode::Internal,
                    format!("a log entry does not decode: {e}"),
                ))],
            };
            encode_results(&results)
        }
        .boxed_local()
    })
}

/// Starts this shard's replica: opens its Raft log beside the engine, the transport to the
/// other nodes, the group, and (shard 0) the peer listener, then routes the shard's
/// operations through the group.
pub async fn start(
    shard: &Rc<Shard>,
    cluster: &ClusterConfig,
    options: &corekv_storage::Options,
) -> Result<(), String> {
    let engine = shard.store.engine().clone();
    let dir = engine.dir().to_path_buf();
    let log = RaftLog::open(&dir, options, &cluster.voters(), engine.flushed_log_index())
        .await
        .map_err(|e| format!("Raft log: {e}"))?;
    let shard_id = shard.id as u32;
    let transport = Transport::start(TransportConfig::new(
        cluster.node_id,
        shard_id,
        cluster.cluster_id(),
        cluster.peers(),
    ));
    // One tick per heartbeat; the election timeout in heartbeats (validated to be >= 3).
    let config = GroupConfig {
        node_id: cluster.node_id,
        shard: shard_id,
        voters: cluster.voters(),
        tick_interval: Duration::from_millis(cluster.heartbeat_interval_ms),
        election_ticks: (cluster.election_timeout_ms / cluster.heartbeat_interval_ms) as usize,
        heartbeat_ticks: 1,
        log_retain_entries: LOG_RETAIN_ENTRIES,
    };
    let group = Group::start(
        config,
        log,
        engine,
        apply_fn(Rc::downgrade(shard)),
        transport.sender(),
    )
    .map_err(|e| format!("Raft group: {e}"))?;
    let listener = bind_peer_listener(cluster.peer_listen)
        .map_err(|e| format!("cannot listen for peers on {}: {e}", cluster.peer_listen))?;
    let expected = Expected {
        cluster_id: cluster.cluster_id(),
        node_id: cluster.node_id,
        shards: shard.count as u32,
    };
    glommio::spawn_local(accept_peers(listener, expected, shard_id, group.clone())).detach();
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
            _transport: transport,
        })
        .map_err(|_| "the replica was started twice".to_string())
}

/// Accepts peer connections and hands their messages to the group of `shard` (the only
/// one a node has while clusters run one shard per node).
async fn accept_peers(
    listener: glommio::net::TcpListener,
    expected: Expected,
    shard: u32,
    group: Group,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let group = group.clone();
                glommio::spawn_local(async move {
                    serve_peer(stream, expected, move |to_shard, m| {
                        if to_shard == shard {
                            group.step(m);
                        }
                    })
                    .await;
                })
                .detach();
            }
            Err(e) => {
                if group.is_stopped() {
                    return;
                }
                tracing::warn!(error = %e, "accepting a peer connection failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
