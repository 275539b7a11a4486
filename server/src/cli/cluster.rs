//! `corekv-cli cluster status`: every replica's Raft state, gathered from the replicas
//! themselves (`topology` names them, each one's `stats` carry its `raft_*` figures).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use corekv_proto::client::TokioRuntime;
use corekv_proto::{Connection, ShardStats, Topology};

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
