//! `corekv-cli cluster status`: every replica's Raft state, gathered from the replicas
//! themselves (`topology` names them, each one's `stats` carry its `raft_*` figures).
//! `corekv-cli cluster transfer-leader`: asks a shard's leader to hand over.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use corekv_proto::client::TokioRuntime;
use corekv_proto::{Connection, ErrorCode, ShardStats, Topology};

use super::output::{ReplicaRow, ReplicaState};
use super::{Failure, usage};

/// One row per replica of every shard of `topology` (read from `reached`), each replica
/// asked within `timeout`.
pub async fn status(
    reached: SocketAddr,
    topology: &Topology,
    timeout: Duration,
) -> Result<Vec<ReplicaRow>, Failure> {
    if topology.shards.iter().all(|s| s.replicas.is_empty()) {
        return Err(usage(format!(
            "{reached} is a single node, not a cluster node"
        )));
    }
    let mut rows = Vec::new();
    for shard in &topology.shards {
        let first = rows.len();
        for r in &shard.replicas {
            let addr = replica_addr(reached, &r.host, r.port);
            let state = match addr {
                Some(addr) => ask(addr, shard.id, timeout).await,
                None => None,
            };
            rows.push(ReplicaRow {
                shard: shard.id,
                node: r.node,
                address: addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
                state,
            });
        }
        // Lag: entries behind the highest commit index any replica reported.
        let commit_max = rows[first..]
            .iter()
            .filter_map(|r| r.state.as_ref().map(|s| s.commit))
            .max()
            .unwrap_or(0);
        for row in &mut rows[first..] {
            if let Some(s) = &mut row.state {
                s.lag = commit_max.saturating_sub(s.applied);
            }
        }
    }
    Ok(rows)
}

/// Makes node `to` the leader of shard `shard`: asks the leader that `topology` (read from
/// `reached`) names, and once more the one its `notLeader` names if the leader changed.
pub async fn transfer_leader(
    reached: SocketAddr,
    topology: &Topology,
    shard: u32,
    to: u64,
) -> Result<(), corekv_proto::Error> {
    let info = topology.shards.get(shard as usize).ok_or_else(|| {
        corekv_proto::Error::Protocol(format!("{reached} lists no shard {shard}"))
    })?;
    let address_of = |node: u64| {
        info.replicas
            .iter()
            .find(|r| r.node == node)
            .and_then(|r| replica_addr(reached, &r.host, r.port))
    };
    // No leader known (an election): ask the node reached, which answers `notLeader`.
    let mut addr = address_of(info.leader).unwrap_or(reached);
    for _ in 0..2 {
        let conn = Connection::connect(TokioRuntime, addr).await?;
        match conn.transfer_leader(shard, to).await {
            Err(corekv_proto::Error::Server(e)) if e.code == ErrorCode::NotLeader => {
                let next = e
                    .leader
                    .as_ref()
                    .and_then(|l| l.address.as_deref()?.parse::<SocketAddr>().ok())
                    .and_then(|a| replica_addr(reached, &a.ip().to_string(), a.port()));
                match next {
                    Some(next) if next != addr => addr = next,
                    _ => return Err(corekv_proto::Error::Server(e)),
                }
            }
            other => return other,
        }
    }
    Err(corekv_proto::Error::Protocol(format!(
        "shard {shard}'s leader kept changing while asked to transfer: retry"
    )))
}

/// A replica's address: its advertised host, or the host we reached when it advertises all
/// interfaces; None when the answering node has not learned it.
fn replica_addr(reached: SocketAddr, host: &str, port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = host.parse().ok()?;
    Some(if ip.is_unspecified() {
        SocketAddr::new(reached.ip(), port)
    } else {
        SocketAddr::new(ip, port)
    })
}

/// Shard `shard`'s Raft state at `addr`; None if it does not answer in time.
async fn ask(addr: SocketAddr, shard: u32, timeout: Duration) -> Option<ReplicaState> {
    let stats = tokio::time::timeout(timeout, async {
        let conn = Connection::connect(TokioRuntime, addr).await.ok()?;
        conn.stats().await.ok()
    })
    .await
    .ok()??;
    state_of(&stats, shard)
}

fn state_of(stats: &[ShardStats], shard: u32) -> Option<ReplicaState> {
    let s = stats.iter().find(|s| s.id == shard)?;
    let get = |name: &str| s.counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    Some(ReplicaState {
        role: match get("raft_role")? {
            0 => "follower",
            1 => "candidate",
            2 => "leader",
            _ => "pre-candidate",
        },
        term: get("raft_term")?,
        commit: get("raft_commit_index")?,
        applied: get("raft_applied_index")?,
        lag: 0,
    })
}
