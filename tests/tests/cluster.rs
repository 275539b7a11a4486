//! A 3-node cluster of real `corekv-server` processes on loopback (`--shards 1` each): writes
//! go through the leader (followers refuse with `notLeader`), a `kill -9` of the leader elects
//! a new one and loses no acknowledged write, the killed node restarts from its files and
//! rejoins: once the other original node is killed too, the two survivors (one of them the
//! restarted node) still form a majority and serve every acknowledged write.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corekv_proto::Error as ClientError;
use corekv_proto::ErrorCode;
use corekv_proto::client::{Connection, TokioRuntime};
use corekv_tests::{Server, ServerOptions, block_on, free_ports, test_dir};

const NODES: u64 = 3;

struct Node {
    id: u64,
    addr: SocketAddr,
    data_dir: std::path::PathBuf,
    options: ServerOptions,
    server: Option<Server>,
}

fn cluster_nodes(dir: &std::path::Path) -> Vec<Node> {
    // Per node: main port, shard port, peer port.
    let base = free_ports(3 * NODES as usize);
    let peer = |id: u64| format!("127.0.0.1:{}", base + 3 * (id as u16 - 1) + 2);
    let cluster: Vec<String> = (1..=NODES).map(|id| format!("{id}={}", peer(id))).collect();
    let cluster = cluster.join(",");
    (1..=NODES)
        .map(|id| {
            let options = ServerOptions::shards(1).args(&[
                "--node-id",
                &id.to_string(),
                "--peer-listen",
                &peer(id),
                "--initial-cluster",
                &cluster,
                "--election-timeout-ms",
                "600",
                "--heartbeat-interval-ms",
                "100",
            ]);
            Node {
                id,
                addr: format!("127.0.0.1:{}", base + 3 * (id as u16 - 1))
                    .parse()
                    .unwrap(),
                data_dir: dir.join(format!("node{id}")),
                options,
                server: None,
            }
        })
        .collect()
}

fn start(node: &mut Node) {
    node.server = Some(Server::start_at(
        node.addr,
        &node.data_dir,
        node.options.clone(),
    ));
}

/// Puts `key` on the node that accepts it, trying every running node until one does (the
/// leader); returns its id. Panics after a generous deadline.
async fn put_anywhere(nodes: &[Node], key: &[u8], value: &[u8]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in nodes.iter().filter(|n| n.server.is_some()) {
            let Ok(c) = Connection::connect(TokioRuntime, node.addr).await else {
                continue;
            };
            match c.put(key, value, 0).await {
                Ok(_) => return node.id,
                Err(ClientError::Server(e)) if e.code == ErrorCode::NotLeader => {}
                Err(e) => panic!("put on node {}: {e}", node.id),
            }
        }
        assert!(Instant::now() < deadline, "no node accepted a write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every key through the leader (a follower refuses reads too: they are linearizable).
async fn check_all(nodes: &[Node], leader: u64, written: &[(Vec<u8>, Vec<u8>)]) {
    let node = nodes.iter().find(|n| n.id == leader).unwrap();
    let c = Connection::connect(TokioRuntime, node.addr).await.unwrap();
    for (k, v) in written {
        assert_eq!(
            c.get(k).await.unwrap().as_ref(),
            Some(v),
            "acknowledged write of {} lost",
            String::from_utf8_lossy(k)
        );
    }
    for other in nodes
        .iter()
        .filter(|n| n.id != leader && n.server.is_some())
    {
        let c = Connection::connect(TokioRuntime, other.addr).await.unwrap();
        match c.get(&written[0].0).await {
            Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::NotLeader, "{e:?}"),
            other => panic!("a follower answered a read: {other:?}"),
        }
    }
}

#[test]
fn three_nodes_fail_over_without_losing_acknowledged_writes() {
    let dir = test_dir("cluster");
    let mut nodes = cluster_nodes(dir.path());
    for node in &mut nodes {
        start(node);
    }
    block_on(async {
        let mut written = Vec::new();
        let mut leader = 0;
        for i in 0..100 {
            let (k, v) = (
                format!("k{i:04}").into_bytes(),
                format!("v{i}").into_bytes(),
            );
            leader = put_anywhere(&nodes, &k, &v).await;
            written.push((k, v));
        }
        check_all(&nodes, leader, &written).await;

        // kill -9 the leader: another node takes over with every acknowledged write.
        let first = leader;
        nodes[first as usize - 1].server.as_mut().unwrap().kill9();
        nodes[first as usize - 1].server = None;
        for i in 100..200 {
            let (k, v) = (
                format!("k{i:04}").into_bytes(),
                format!("v{i}").into_bytes(),
            );
            leader = put_anywhere(&nodes, &k, &v).await;
            written.push((k, v));
        }
        assert_ne!(leader, first);
        check_all(&nodes, leader, &written).await;

        // The killed node restarts from its files and catches up; then the current leader
        // dies too, and the restarted node with the third one must still serve everything.
        start(&mut nodes[first as usize - 1]);
        let second = leader;
        for i in 200..250 {
            let (k, v) = (
                format!("k{i:04}").into_bytes(),
                format!("v{i}").into_bytes(),
            );
            put_anywhere(&nodes, &k, &v).await;
            written.push((k, v));
        }
        nodes[second as usize - 1].server.as_mut().unwrap().kill9();
        nodes[second as usize - 1].server = None;
        let (k, v) = (b"after".to_vec(), b"second failover".to_vec());
        leader = put_anywhere(&nodes, &k, &v).await;
        written.push((k, v));
        assert_ne!(leader, second);
        check_all(&nodes, leader, &written).await;
    });
    for node in &mut nodes {
        if let Some(mut s) = node.server.take() {
            s.terminate();
        }
    }
}
