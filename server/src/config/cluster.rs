//! Cluster settings: which node this is, where it listens for peers, and the nodes of the
//! cluster (etcd's flag names: `--node-id`, `--peer-listen`, `--initial-cluster`).

use std::net::SocketAddr;

/// Default `--election-timeout-ms`: a follower that hears no leader for this long (randomised
/// up to twice as long) campaigns.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Default `--heartbeat-interval-ms`.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Default `--log-retain-entries`: entries a replica keeps in its Raft log behind what its
/// engine's tables hold, for a follower that lags (etcd keeps 5000); a follower further
/// behind gets a snapshot.
pub const DEFAULT_LOG_RETAIN_ENTRIES: u64 = 10_000;
/// Default `--log-retain-mib`: at most this many MiB of entries are kept behind what the
/// engine's tables hold, whatever their count (TiKV keeps 72 MiB per region): entries carry
/// whole batches, and 10,000 of them can weigh gigabytes, all in memory.
pub const DEFAULT_LOG_RETAIN_MIB: u64 = 64;
/// Default `--max-uncommitted-mib`: a shard's leader holds at most this many MiB of entries
/// proposed and not yet committed; past it writes are refused `overloaded`, so a slow or
/// unreachable majority bounds the leader's memory.
pub const DEFAULT_MAX_UNCOMMITTED_MIB: u64 = 64;
/// Default `--request-timeout-ms`: how long a replicated write or read barrier waits for its
/// outcome before answering `outcomeUnknown` (a partition, a lost leadership).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Default `--snapshot-send-mib-per-s`: the bandwidth a shard's outgoing snapshot streams
/// share (TiKV's `snap-io-max-bytes-per-sec` default), so that catching a follower up leaves
/// the disk and network to the shard's traffic.
pub const DEFAULT_SNAPSHOT_SEND_MIB_PER_S: u64 = 100;
/// Most nodes in a cluster.
pub const NODES_MAX: usize = 7;

/// A replicated server's cluster settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id (1..).
    pub node_id: u64,
    /// Where this node listens for its peers.
    pub peer_listen: SocketAddr,
    /// Every node of the cluster (this one included): id and peer address, by id.
    pub members: Vec<(u64, SocketAddr)>,
    /// See [`DEFAULT_ELECTION_TIMEOUT_MS`].
    pub election_timeout_ms: u64,
    /// Time between a leader's heartbeats.
    pub heartbeat_interval_ms: u64,
    /// See [`DEFAULT_LOG_RETAIN_ENTRIES`].
    pub log_retain_entries: u64,
    /// See [`DEFAULT_LOG_RETAIN_MIB`].
    pub log_retain_mib: u64,
    /// See [`DEFAULT_MAX_UNCOMMITTED_MIB`].
    pub max_uncommitted_mib: u64,
    /// See [`DEFAULT_REQUEST_TIMEOUT_MS`].
    pub request_timeout_ms: u64,
    /// See [`DEFAULT_SNAPSHOT_SEND_MIB_PER_S`]; 0: no limit.
    pub snapshot_send_mib_per_s: u64,
    /// How a leader confirms its leadership before a read (`--read-mode`).
    pub read_mode: super::ReadMode,
    /// Where clients reach this node (`host:port`), told to the peers so that a follower can
    /// send clients to the leader: `--advertise-host` with the client port, else the client
    /// listen address, or,
    /// when that is unspecified (`0.0.0.0`), the peer address's host with the client port.
    pub client_address: String,
    /// Tests only (`--debug-peer-dial`): where to dial some peers instead of their
    /// `--initial-cluster` address, so a test's proxy can sit on each link.
    pub dial_overrides: Vec<(u64, SocketAddr)>,
}

impl ClusterConfig {
    /// Checks and assembles the cluster flags: all of `node_id`, `peer_listen` and
    /// `initial_cluster` (`ID=HOST:PORT,...`), or none of them (a single node).
    pub fn resolve(
        node_id: Option<u64>,
        peer_listen: Option<SocketAddr>,
        initial_cluster: Option<&str>,
        election_timeout_ms: Option<u64>,
        heartbeat_interval_ms: Option<u64>,
    ) -> Result<Option<ClusterConfig>, String> {
        let (node_id, peer_listen, initial_cluster) = match (node_id, peer_listen, initial_cluster)
        {
            (None, None, None) => {
                if election_timeout_ms.is_some() || heartbeat_interval_ms.is_some() {
                    return Err(
                        "`--election-timeout-ms` and `--heartbeat-interval-ms` need a \
                                cluster (`--node-id`, `--peer-listen`, `--initial-cluster`)"
                            .into(),
                    );
                }
                return Ok(None);
            }
            (Some(id), Some(peer), Some(cluster)) => (id, peer, cluster),
            _ => {
                return Err(
                    "a cluster node needs all of `--node-id`, `--peer-listen` and \
                     `--initial-cluster` (none of them runs a single node)"
                        .into(),
                );
            }
        };
        let members = parse_members(initial_cluster)?;
        match members.iter().find(|(id, _)| *id == node_id) {
            None => {
                return Err(format!(
                    "`--node-id` {node_id} is not in `--initial-cluster` {initial_cluster}"
                ));
            }
            Some((_, addr)) if *addr != peer_listen => {
                return Err(format!(
                    "`--initial-cluster` gives node {node_id} the peer address {addr}, but \
                     `--peer-listen` is {peer_listen}: they must be the same"
                ));
            }
            Some(_) => {}
        }
        let election_timeout_ms = election_timeout_ms.unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS);
        let heartbeat_interval_ms = heartbeat_interval_ms.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
        if heartbeat_interval_ms == 0 || election_timeout_ms < 3 * heartbeat_interval_ms {
            return Err(format!(
                "`--election-timeout-ms` ({election_timeout_ms}) must be at least 3 times \
                 `--heartbeat-interval-ms` ({heartbeat_interval_ms}), which must be at least 1"
            ));
        }
        Ok(Some(ClusterConfig {
            node_id,
            peer_listen,
            members,
            election_timeout_ms,
            heartbeat_interval_ms,
            log_retain_entries: DEFAULT_LOG_RETAIN_ENTRIES,
            log_retain_mib: DEFAULT_LOG_RETAIN_MIB,
            max_uncommitted_mib: DEFAULT_MAX_UNCOMMITTED_MIB,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            snapshot_send_mib_per_s: DEFAULT_SNAPSHOT_SEND_MIB_PER_S,
            read_mode: super::ReadMode::default(),
            client_address: String::new(),
            dial_overrides: Vec::new(),
        }))
    }

    /// Sets the address clients reach this node at, from its client `listen` address.
    pub fn with_client_listen(mut self, listen: SocketAddr) -> ClusterConfig {
        let mut addr = listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(self.peer_listen.ip());
        }
        self.client_address = addr.to_string();
        self
    }

    /// Sets the test-only dial overrides from `ID=HOST:PORT,...`.
    pub fn with_dial_overrides(mut self, list: &str) -> Result<ClusterConfig, String> {
        let overrides = parse_members(list)?;
        if let Some((id, _)) = overrides
            .iter()
            .find(|(id, _)| *id == self.node_id || !self.members.iter().any(|(m, _)| m == id))
        {
            return Err(format!(
                "`--debug-peer-dial` names node {id}, which is this node or not in the cluster"
            ));
        }
        self.dial_overrides = overrides;
        Ok(self)
    }

    /// The node ids of the cluster.
    pub fn voters(&self) -> Vec<u64> {
        self.members.iter().map(|(id, _)| *id).collect()
    }

    /// The other nodes: id and the address to dial.
    pub fn peers(&self) -> Vec<(u64, SocketAddr)> {
        self.members
            .iter()
            .filter(|(id, _)| *id != self.node_id)
            .map(|&(id, addr)| {
                let dial = self.dial_overrides.iter().find(|(o, _)| *o == id);
                (id, dial.map_or(addr, |&(_, a)| a))
            })
            .collect()
    }

    /// How the data directory records the cluster: a restart with other settings is refused.
    pub fn identity(&self) -> String {
        format!(
            "node-id={}\ninitial-cluster={}\n",
            self.node_id,
            self.members_text()
        )
    }

    /// The members as `ID=HOST:PORT,...`, sorted by id: the same text on every node.
    fn members_text(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect();
        members.join(",")
    }

    /// A number every node of this cluster derives alike, carried in peer handshakes so a
    /// node of another cluster is refused.
    pub fn cluster_id(&self) -> u64 {
        // FNV-1a: stable across builds and platforms.
        self.members_text()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

/// Parses `ID=HOST:PORT,...`: ids from 1, no id or address twice, sorted by id.
fn parse_members(s: &str) -> Result<Vec<(u64, SocketAddr)>, String> {
    let mut members = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            return Err(format!(
                "`--initial-cluster` entry `{part}`: expected ID=HOST:PORT"
            ));
        };
        let id: u64 = id.trim().parse().ok().filter(|&id| id > 0).ok_or_else(|| {
            format!("`--initial-cluster` entry `{part}`: the id must be 1 or more")
        })?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|e| format!("`--initial-cluster` entry `{part}`: {e}"))?;
        if members.iter().any(|&(i, a)| i == id || a == addr) {
            return Err(format!(
                "`--initial-cluster` names node {id} or address {addr} twice"
            ));
        }
        members.push((id, addr));
    }
    if members.is_empty() || members.len() > NODES_MAX {
        return Err(format!(
            "`--initial-cluster` lists {} nodes: between 1 and {NODES_MAX}",
            members.len()
        ));
    }
    members.sort_unstable();
    Ok(members)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cluster_flags_are_all_or_none_and_consistent() {
        assert_eq!(
            ClusterConfig::resolve(None, None, None, None, None),
            Ok(None)
        );
        let cluster = "2=127.0.0.1:8479, 1=127.0.0.1:7479,3=127.0.0.1:9479";
        let c = ClusterConfig::resolve(
            Some(1),
            Some(addr("127.0.0.1:7479")),
            Some(cluster),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.voters(), vec![1, 2, 3]);
        assert_eq!(c.peers().len(), 2);
        assert_eq!(c.election_timeout_ms, DEFAULT_ELECTION_TIMEOUT_MS);
        let other = ClusterConfig::resolve(
            Some(2),
            Some(addr("127.0.0.1:8479")),
            Some(cluster),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.cluster_id(),
            other.cluster_id(),
            "every node derives the same id"
        );

        let bad = [
            ClusterConfig::resolve(Some(1), None, Some(cluster), None, None),
            ClusterConfig::resolve(None, None, None, Some(1000), None),
            ClusterConfig::resolve(
                Some(4),
                Some(addr("127.0.0.1:7479")),
                Some(cluster),
                None,
                None,
            ),
            ClusterConfig::resolve(
                Some(1),
                Some(addr("127.0.0.1:7000")),
                Some(cluster),
                None,
                None,
            ),
            ClusterConfig::resolve(
                Some(1),
                Some(addr("127.0.0.1:7479")),
                Some("1=127.0.0.1:7479,1=127.0.0.1:8479"),
                None,
                None,
            ),
            ClusterConfig::resolve(
                Some(1),
                Some(addr("127.0.0.1:7479")),
                Some("0=127.0.0.1:7479"),
                None,
                None,
            ),
            ClusterConfig::resolve(
                Some(1),
                Some(addr("127.0.0.1:7479")),
                Some("1=nowhere"),
                None,
                None,
            ),
            ClusterConfig::resolve(
                Some(1),
                Some(addr("127.0.0.1:7479")),
                Some(cluster),
                Some(100),
                Some(50),
            ),
        ];
        for (i, r) in bad.iter().enumerate() {
            assert!(r.is_err(), "case {i} should be refused: {r:?}");
        }
    }
}
