//! A 3-node cluster of real `corekv-server` processes on loopback (`--shards 1` each): writes go
//! through the leader (followers refuse with `notLeader`; a batch of puts is one store write on
//! every replica), a `kill -9` of the leader elects a new one and loses no acknowledged write, the
//! killed node restarts from its files and rejoins: once the other original node is killed too, the
//! two survivors (one of them the restarted node) still form a majority and serve every
//! acknowledged write. A leader cut off from the others by a partition (proxies on the peer links)
//! acknowledges nothing, the majority goes on, and after healing every node has every acknowledged
//! write and nothing else; past its bound of uncommitted writes it refuses more as `overloaded`. A
//! node down while the others flush and compact their logs past it catches up by a snapshot of the
//! leader's tables (and a write still pending on a deposed leader is answered, outcome unknown,
//! when such a snapshot replaces its log). Followers tell clients where the leader is, `topology`
//! lists the replicas, and the Rust client and the CLI follow the leader through a failover. With 2
//! shards per node, each shard is a group of its own: its own leader, failover and catching up (and
//! with `--read-mode lease`, leaders answer reads by their leases), and an operator moves a shard's
//! leadership with `corekv-cli cluster transfer-leader`.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use corekv_proto::client::{Client, Connection, TokioRuntime};
use corekv_proto::{Error as ClientError, ErrorCode, LeaderHint, Op, OpResult};
use corekv_tests::cluster::{LocalCluster, kv};
use corekv_tests::{block_on, test_dir};

/// Store writes each node's engine made so far.
async fn engine_writes(cluster: &LocalCluster) -> Vec<u64> {
    cluster.counters("writes_total").await
}

/// Puts `kv(i)` for every `i` through `client` while a failover may be under way: a put
/// succeeds (kept in `acked`) or its outcome is unknown (a connection lost, `outcomeUnknown`),
/// never anything else. Returns how many were unknown.
async fn put_through_failover(
    client: &Client,
    range: std::ops::Range<usize>,
    acked: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> usize {
    let mut failed = 0;
    for i in range {
        let (k, v) = kv(i);
        match client.put(&k, &v).await {
            Ok(_) => acked.push((k, v)),
            Err(ClientError::Rpc(_) | ClientError::Connect { .. }) => failed += 1,
            Err(ClientError::Server(e)) if e.code == ErrorCode::OutcomeUnknown => failed += 1,
            Err(e) => panic!("put {i} after the failover: {e}"),
        }
    }
    failed
}

/// Small memtables flush often, and the logs keep only 20 entries behind the flushed one: a
/// node that misses a few hundred writes of [`large_value`]s is behind every leader's log.
const SHORT_LOGS: &[&str] = &[
    "--log-retain-entries",
    "20",
    "--memtable-size-bytes",
    "32768",
];

/// The checkpoints made to send as snapshots that a node's shards still keep.
fn checkpoints_kept(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut kept = Vec::new();
    for shard in std::fs::read_dir(data_dir).unwrap().flatten() {
        let Ok(entries) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("raft-snapshot-out-")
            {
                kept.push(e.path());
            }
        }
    }
    kept
}

/// A value of about 1 KB, numbered `i`.
fn large_value(i: usize) -> Vec<u8> {
    format!("{i}-{}", "x".repeat(1000)).into_bytes()
}

#[test]
fn three_nodes_fail_over_without_losing_acknowledged_writes() {
    let dir = test_dir("cluster");
    let mut cluster = LocalCluster::start(dir.path(), 3, &[]);
    block_on(async {
        let mut written = Vec::new();
        let mut leader = 0;
        for i in 0..100 {
            let (k, v) = kv(i);
            leader = cluster.put_anywhere(&[], &k, &v).await;
            written.push((k, v));
        }
        cluster.check_all(leader, &written).await;

        // A batch of puts of distinct keys is one entry, and every replica applies it as one
        // store write, its puts numbered one after another.
        let applied = cluster.applied_everywhere(leader).await;
        let before: Vec<u64> = engine_writes(&cluster).await;
        let c = Connection::connect(TokioRuntime, cluster.nodes[leader as usize - 1].addr)
            .await
            .unwrap();
        let puts: Vec<Op> = (0..10)
            .map(|i| Op::Put {
                key: format!("batch{i}").into_bytes(),
                value: large_value(i),
                ttl_ms: 0,
            })
            .collect();
        let sequences: Vec<u64> = c
            .batch(&puts)
            .await
            .unwrap()
            .into_iter()
            .map(|r| match r {
                OpResult::Write { sequence } => sequence,
                other => panic!("a put of the batch answered {other:?}"),
            })
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[1] == w[0] + 1),
            "{sequences:?}"
        );
        assert!(cluster.applied_everywhere(leader).await > applied);
        let after = engine_writes(&cluster).await;
        for (node, (b, a)) in before.iter().zip(&after).enumerate() {
            assert_eq!(a - b, 1, "store writes of node {} for the batch", node + 1);
        }
        for op in puts {
            if let Op::Put { key, value, .. } = op {
                written.push((key, value));
            }
        }

        // kill -9 the leader: another node takes over with every acknowledged write.
        let first = leader;
        cluster.node(first).kill9();
        for i in 100..200 {
            let (k, v) = kv(i);
            leader = cluster.put_anywhere(&[], &k, &v).await;
            written.push((k, v));
        }
        assert_ne!(leader, first);
        cluster.check_all(leader, &written).await;

        // The killed node restarts from its files and catches up; then the current leader
        // dies too, and the restarted node with the third one must still serve everything.
        cluster.node(first).start();
        let second = leader;
        for i in 200..250 {
            let (k, v) = kv(i);
            cluster.put_anywhere(&[], &k, &v).await;
            written.push((k, v));
        }
        cluster.node(second).kill9();
        let (k, v) = (b"after".to_vec(), b"second failover".to_vec());
        leader = cluster.put_anywhere(&[], &k, &v).await;
        written.push((k, v));
        assert_ne!(leader, second);
        cluster.check_all(leader, &written).await;
    });
    cluster.stop();
}

#[test]
fn a_partitioned_leader_acknowledges_nothing_and_catches_up_after_healing() {
    let dir = test_dir("cluster-partition");
    // Followers answer reads from their own state (a planted bug, tests only), so the test can
    // look at each node's state; writes are the real thing.
    let mut cluster = LocalCluster::start(
        dir.path(),
        3,
        &[
            "--debug-fault-injection",
            "bug=follower-reads",
            "--max-uncommitted-mib",
            "1",
        ],
    );
    block_on(async {
        let mut written = Vec::new();
        let mut leader = 0;
        for i in 0..50 {
            let (k, v) = kv(i);
            leader = cluster.put_anywhere(&[], &k, &v).await;
            written.push((k, v));
        }

        // The leader alone on one side: it acknowledges nothing more. With it, large writes:
        // it holds at most 1 MiB it cannot commit (`--max-uncommitted-mib 1`: two of these) and
        // refuses the rest `overloaded` at once. Connections first (client ports are not cut),
        // so that the writes reach it well within the election timeout it then steps down
        // after; a connection each, since one connection's concurrent writes share a batch.
        let isolated = cluster.nodes[leader as usize - 1].addr;
        let c = Connection::connect(TokioRuntime, isolated).await.unwrap();
        let big = vec![b'b'; 400 << 10];
        let bigs: Vec<Vec<u8>> = (0..6).map(|i| format!("big{i}").into_bytes()).collect();
        let mut conns = Vec::new();
        for _ in &bigs {
            conns.push(Connection::connect(TokioRuntime, isolated).await.unwrap());
        }
        cluster.partition(&[leader]);
        let (minority, answers) = futures::join!(
            c.put(b"minority", b"lost", 0),
            futures::future::join_all(bigs.iter().zip(&conns).map(|(k, c)| c.put(k, &big, 0)))
        );
        match minority {
            Err(ClientError::Server(e))
                if matches!(e.code, ErrorCode::NotLeader | ErrorCode::OutcomeUnknown) => {}
            other => panic!("the isolated leader answered a write: {other:?}"),
        }
        let mut refused = Vec::new();
        let all_answers = format!("{answers:?}");
        for (k, answer) in bigs.iter().zip(answers) {
            match answer {
                Err(ClientError::Server(e)) if e.code == ErrorCode::Overloaded => {
                    refused.push(k.clone());
                }
                Err(ClientError::Server(e))
                    if matches!(e.code, ErrorCode::NotLeader | ErrorCode::OutcomeUnknown) => {}
                other => panic!("the isolated leader answered a write: {other:?}"),
            }
        }
        // Four when all six reached it before it stepped down (one election timeout).
        assert!(
            (1..=4).contains(&refused.len()),
            "{refused:?} {all_answers}"
        );

        // The majority elects another leader and goes on.
        let old = leader;
        for i in 50..100 {
            let (k, v) = kv(i);
            leader = cluster.put_anywhere(&[old], &k, &v).await;
            written.push((k, v));
        }
        assert_ne!(leader, old);

        // A client that knows only the cut-off node (which knows no leader now) reaches the
        // majority's leader through the replicas that node listed.
        let client = Client::connect(TokioRuntime, isolated).await.unwrap();
        client.put(b"via-minority", b"found").await.unwrap();
        written.push((b"via-minority".to_vec(), b"found".to_vec()));

        // Healed, the old leader catches up: every node ends with every acknowledged write.
        cluster.heal();
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &cluster.nodes {
            let c = Connection::connect(TokioRuntime, node.addr).await.unwrap();
            for (k, v) in &written {
                loop {
                    if c.get(k).await.unwrap().as_ref() == Some(v) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "node {} never got {}",
                        node.id,
                        String::from_utf8_lossy(k)
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // The write the isolated leader took was replaced by the majority's entries; the
            // ones it refused were never proposed.
            assert_eq!(c.get(b"minority").await.unwrap(), None, "node {}", node.id);
            for k in &refused {
                assert_eq!(c.get(k).await.unwrap(), None, "node {}", node.id);
            }
        }
    });
    cluster.stop();
}

#[test]
fn a_node_behind_the_compacted_log_catches_up_by_snapshot() {
    let dir = test_dir("cluster-snapshot");
    // Small memtables flush often, and the logs keep only 20 entries behind the flushed one:
    // a node down for a few hundred writes is behind every leader's log. Followers answer
    // reads from their own state (a planted bug, tests only) so the test can look at each.
    let mut cluster = LocalCluster::start(
        dir.path(),
        3,
        &[
            SHORT_LOGS,
            &["--debug-fault-injection", "bug=follower-reads"],
            // Slow enough that pacing shows (the snapshot is some hundreds of KiB).
            &["--snapshot-send-mib-per-s", "1"],
        ]
        .concat(),
    );
    block_on(async {
        let mut leader = 0;
        for i in 0..30 {
            leader = cluster.put_anywhere(&[], &kv(i).0, &large_value(i)).await;
        }
        let behind = if leader == 1 { 2 } else { 1 };
        cluster.node(behind).kill9();
        // Overwrites and deletes too: the snapshot must replace the node's state, not add to
        // it.
        for i in 0..400 {
            leader = cluster
                .put_anywhere(&[behind], &kv(i).0, &large_value(i + 1000))
                .await;
        }
        let c = Connection::connect(TokioRuntime, cluster.nodes[leader as usize - 1].addr)
            .await
            .unwrap();
        for i in 0..10 {
            c.delete(&kv(i).0).await.unwrap();
        }

        // The leader's log no longer holds what the node lacks: it catches up by snapshot.
        // Its first installation is cut short by a crash (tables linked, the engine's edit
        // not written); restarted, it finishes installing from the files it received.
        let plan = "--debug-fault-injection";
        cluster.node(behind).set_flag(
            plan,
            "bug=follower-reads,crash=checkpoint-before-manifest@0",
        );
        cluster.node(behind).start();
        assert!(
            cluster.node(behind).wait_exit(Duration::from_secs(60)),
            "node {behind} never reached the crash point inside a snapshot's installation"
        );
        cluster.node(behind).set_flag(plan, "bug=follower-reads");
        cluster.node(behind).start();
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = Connection::connect(TokioRuntime, cluster.nodes[behind as usize - 1].addr)
            .await
            .unwrap();
        for i in 0..400 {
            let want = (i >= 10).then(|| large_value(i + 1000));
            loop {
                if node.get(&kv(i).0).await.unwrap() == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {behind} never caught up on key {i}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let log = cluster.nodes[behind as usize - 1]
            .server
            .as_ref()
            .unwrap()
            .log();
        assert!(
            log.contains("finished installing a snapshot a restart interrupted"),
            "node {behind} did not finish the interrupted installation: {log}"
        );
        // The sender paced its stream.
        let paced: Vec<u64> = cluster
            .nodes
            .iter()
            .filter(|n| n.id != behind)
            .flat_map(|n| {
                n.server
                    .as_ref()
                    .map(|s| s.log())
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("snapshot sent"))
                    .filter_map(|l| l.split("paced_ms=").nth(1)?.split(' ').next()?.parse().ok())
                    .collect::<Vec<u64>>()
            })
            .collect();
        assert!(
            paced.iter().any(|&ms| ms > 0),
            "no snapshot sent, or none paced: {paced:?}"
        );
        // Once sent, the leader's checkpoint goes: its links would keep compacted tables.
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in cluster.nodes.iter().filter(|n| n.id != behind) {
            while !checkpoints_kept(&node.data_dir).is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "node {} keeps {:?}",
                    node.id,
                    checkpoints_kept(&node.data_dir)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        // It serves as a replica again: with the leader killed, it and the third node elect
        // one and keep every acknowledged write.
        cluster.node(leader).kill9();
        let after = cluster.put_anywhere(&[], b"after", b"snapshot").await;
        assert_ne!(after, leader);
        let c = Connection::connect(TokioRuntime, cluster.nodes[after as usize - 1].addr)
            .await
            .unwrap();
        for i in 0..400 {
            let want = (i >= 10).then(|| large_value(i + 1000));
            assert_eq!(c.get(&kv(i).0).await.unwrap(), want, "key {i}");
        }
    });
    cluster.stop();
}

#[test]
fn a_write_pending_on_a_deposed_leader_is_answered_when_a_snapshot_replaces_its_log() {
    let dir = test_dir("cluster-superseded");
    // The majority's logs soon start past the cut-off leader's (20 entries kept behind the
    // flushed one, small memtables), and a write waits a minute for its outcome: within the
    // test only the snapshot that replaces the old leader's log can answer it.
    let mut cluster = LocalCluster::start(
        dir.path(),
        3,
        &[SHORT_LOGS, &["--request-timeout-ms", "60000"]].concat(),
    );
    block_on(async {
        let mut leader = cluster.put_anywhere(&[], b"first", b"1").await;
        let mut attempts = 0;
        let answer = loop {
            // The leader, cut off, takes a write it can never commit (unless it stepped down
            // before the write reached it: then again).
            cluster.partition(&[leader]);
            let old = leader;
            let c = Connection::connect(TokioRuntime, cluster.nodes[old as usize - 1].addr)
                .await
                .unwrap();
            let pending =
                tokio::task::spawn_local(async move { c.put(b"pending", b"lost", 0).await });
            for i in 0..200 {
                leader = cluster
                    .put_anywhere(&[old], &kv(i).0, &large_value(i + 1000))
                    .await;
            }
            assert_ne!(leader, old);
            cluster.heal();
            let answer = tokio::time::timeout(Duration::from_secs(30), pending)
                .await
                .expect("the pending write was not answered when the snapshot replaced its log")
                .unwrap();
            attempts += 1;
            match answer {
                Err(ClientError::Server(e)) if e.code == ErrorCode::NotLeader && attempts < 3 => {}
                other => break other,
            }
        };
        match answer {
            Err(ClientError::Server(e))
                if e.code == ErrorCode::OutcomeUnknown && e.message.contains("snapshot") => {}
            other => panic!("the deposed leader's pending write: {other:?}"),
        }
        let c = Connection::connect(TokioRuntime, cluster.nodes[leader as usize - 1].addr)
            .await
            .unwrap();
        assert_eq!(c.get(b"pending").await.unwrap(), None);
    });
    cluster.stop();
}

#[test]
fn clients_are_sent_to_the_leader_and_follow_it_through_a_failover() {
    let dir = test_dir("cluster-redirect");
    let mut cluster = LocalCluster::start(dir.path(), 3, &[]);
    block_on(async {
        let leader = cluster.put_anywhere(&[], b"first", b"1").await;
        let follower = if leader == 1 { 2 } else { 1 };
        let addrs: Vec<std::net::SocketAddr> = cluster.nodes.iter().map(|n| n.addr).collect();
        let addr = |id: u64| addrs[id as usize - 1];
        // Hints and `topology` name the shard's own port on each node.
        let shard_addrs: Vec<std::net::SocketAddr> =
            cluster.nodes.iter().map(|n| n.shard_addrs[0]).collect();
        let shard_addr = |id: u64| shard_addrs[id as usize - 1];

        // A follower's refusal names the leader and its client address; its topology lists
        // the leader and every replica (each learns the others' addresses as they connect).
        let c = Connection::connect(TokioRuntime, addr(follower))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hint = match c.put(b"k", b"v", 0).await {
                Err(ClientError::Server(e)) if e.code == ErrorCode::NotLeader => e.leader,
                other => panic!("a follower took a write: {other:?}"),
            };
            let topology = c.topology().await.unwrap();
            let shard = &topology.shards[0];
            let listed: Vec<(u64, String)> = shard
                .replicas
                .iter()
                .map(|r| (r.node, format!("{}:{}", r.host, r.port)))
                .collect();
            let all: Vec<(u64, String)> =
                (1..=3).map(|id| (id, shard_addr(id).to_string())).collect();
            let want_hint = LeaderHint {
                node: leader,
                address: Some(shard_addr(leader).to_string()),
            };
            if hint.as_ref() == Some(&want_hint) && shard.leader == leader && listed == all {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hint {hint:?}, topology {shard:?}: never pointed at the leader {leader}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // The client, given a follower, writes through the leader and keeps going to it.
        let client = Client::connect(TokioRuntime, addr(follower)).await.unwrap();
        let mut acked = Vec::new();
        for i in 0..50 {
            let (k, v) = kv(i);
            client.put(&k, &v).await.unwrap();
            acked.push((k, v));
        }
        assert_eq!(client.shard_addr(0), Some(shard_addr(leader)));

        // The CLI too; and `cluster status` shows one leader and every replica caught up.
        let out = cluster.nodes[0]
            .server
            .as_ref()
            .unwrap()
            .cli_at(addr(follower), &["put", "cli-key", "cli-value"]);
        assert!(out.status.success(), "{out:?}");
        acked.push((b"cli-key".to_vec(), b"cli-value".to_vec()));
        let out = cluster.nodes[0]
            .server
            .as_ref()
            .unwrap()
            .cli_at(addr(follower), &["cluster", "status"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect())
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        let leaders: Vec<&Vec<&str>> = rows.iter().filter(|r| r[3] == "leader").collect();
        assert_eq!(leaders.len(), 1, "{text}");
        assert_eq!(leaders[0][1], leader.to_string(), "{text}");

        // The leader dies: a call in flight may fail (its outcome unknown), never succeed
        // falsely; the client finds the new leader and goes on.
        cluster.node(leader).kill9();
        let failed = put_through_failover(&client, 50..100, &mut acked).await;
        assert!(failed <= 2, "{failed} writes failed after the failover");
        let new_leader = cluster.put_anywhere(&[], b"after", b"failover").await;
        assert_ne!(new_leader, leader);
        // Reached through the node's main port (found by trying known nodes) or the shard's.
        let now = client.shard_addr(0).unwrap();
        assert!(
            now == shard_addr(new_leader) || now == addr(new_leader),
            "{now} is not new leader {new_leader}'s"
        );
        cluster.check_all(new_leader, &acked).await;
    });
    cluster.stop();
}

/// The `cluster status` rows the CLI prints through node `via`: (shard, node, role, applied,
/// lag) per replica.
fn cluster_status(cluster: &LocalCluster, via: u64) -> Vec<(u32, u64, String, u64, u64)> {
    let node = &cluster.nodes[via as usize - 1];
    let out = node
        .server
        .as_ref()
        .unwrap()
        .cli_at(node.addr, &["cluster", "status"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let num = |i: usize| f[i].parse::<u64>().unwrap_or(u64::MAX);
            (num(0) as u32, num(1), f[3].to_string(), num(6), num(7))
        })
        .collect()
}

#[test]
fn every_shard_of_a_node_is_its_own_group_and_each_fails_over() {
    let dir = test_dir("cluster-shards");
    // Lease reads: the reads below are answered by the leaders' leases.
    let mut cluster = LocalCluster::start_sharded(dir.path(), 3, 2, &["--read-mode", "lease"]);
    let shards = cluster.nodes[0].shard_addrs.len();
    block_on(async {
        cluster.put_anywhere(&[], b"first", b"1").await;
        let client = Client::connect(TokioRuntime, cluster.nodes[0].addr)
            .await
            .unwrap();
        assert_eq!(client.topology().shard_count as usize, shards);
        let mut acked = Vec::new();
        for i in 0..200 {
            let (k, v) = kv(i);
            client.put(&k, &v).await.unwrap();
            acked.push((k, v));
        }
        // Every shard has keys, a leader, and its replicas at that shard's own port on
        // each node, all learned through that shard's group.
        let deadline = Instant::now() + Duration::from_secs(20);
        let topology = loop {
            let c = Connection::connect(TokioRuntime, cluster.nodes[1].addr)
                .await
                .unwrap();
            let t = c.topology().await.unwrap();
            let complete = t.shards.iter().enumerate().all(|(i, s)| {
                s.leader != 0
                    && s.replicas
                        .iter()
                        .map(|r| (r.node, format!("{}:{}", r.host, r.port)))
                        .eq(cluster
                            .nodes
                            .iter()
                            .map(|n| (n.id, n.shard_addrs[i].to_string())))
            });
            if complete {
                break t;
            }
            assert!(Instant::now() < deadline, "topology never complete: {t:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for shard in 0..shards as u32 {
            assert!(
                acked.iter().any(|(k, _)| client.shard_of(k) == shard),
                "no key in shard {shard}"
            );
        }

        // An operator moves shard 1's leadership (the CLI, given the node that neither leads
        // nor takes over, finds the leader); writes and reads go on at the new leader.
        let (from, to) = (topology.shards[1].leader, topology.shards[1].leader % 3 + 1);
        let via = 6 - from - to;
        let server = cluster.nodes[0].server.as_ref().unwrap();
        let args = ["cluster", "transfer-leader", "--shard", "1"];
        let out = server.cli_at(
            cluster.nodes[via as usize - 1].addr,
            &[&args[..], &[&to.to_string()]].concat(),
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("1\t{to}\n"));
        let old = Connection::connect(
            TokioRuntime,
            cluster.nodes[from as usize - 1].shard_addrs[1],
        )
        .await
        .unwrap();
        match old.transfer_leader(1, from).await {
            Err(ClientError::Server(e)) if e.code == ErrorCode::NotLeader => {
                assert_eq!(e.leader.as_ref().map(|l| l.node), Some(to), "{e}")
            }
            other => panic!("the old leader took a transfer: {other:?}"),
        }
        let key = (300..)
            .map(kv)
            .find(|(k, _)| client.shard_of(k) == 1)
            .unwrap();
        client.put(&key.0, &key.1).await.unwrap();
        assert_eq!(client.get(&key.0).await.unwrap(), Some(key.1.clone()));
        acked.push(key);
        let out = server.cli_at(
            cluster.nodes[via as usize - 1].addr,
            &[&args[..], &["9"]].concat(),
        );
        assert!(!out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("node 9 holds no replica"));

        // kill -9 shard 0's leader: shard 0 elects another; every shard keeps serving.
        let victim = topology.shards[0].leader;
        cluster.node(victim).kill9();
        let failed = put_through_failover(&client, 200..300, &mut acked).await;
        assert!(
            failed <= 2 * shards,
            "{failed} writes failed after the failover"
        );
        for (k, v) in &acked {
            assert_eq!(
                client.get(k).await.unwrap().as_ref(),
                Some(v),
                "acknowledged write of {} lost",
                String::from_utf8_lossy(k)
            );
        }
        let mut by_lease = 0;
        for node in cluster.nodes.iter().filter(|n| n.server.is_some()) {
            let c = Connection::connect(TokioRuntime, node.addr).await.unwrap();
            for shard in c.stats().await.unwrap() {
                let count = shard
                    .counters
                    .iter()
                    .find(|(n, _)| n == "raft_reads_by_lease_total");
                by_lease += count.map_or(0, |(_, v)| *v);
            }
        }
        assert!(by_lease > 0, "no read was answered by a lease");

        // The killed node restarts, and every replica of every shard catches up: one leader
        // per shard, every replica applied as far as the others, no lag.
        cluster.node(victim).start();
        let survivor = if victim == 1 { 2 } else { 1 };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = cluster_status(&cluster, survivor);
            let settled = rows.len() == 3 * shards
                && (0..shards as u32).all(|s| {
                    let of: Vec<_> = rows.iter().filter(|r| r.0 == s).collect();
                    of.iter().filter(|r| r.2 == "leader").count() == 1
                        && of.iter().all(|r| r.4 == 0 && r.3 == of[0].3)
                });
            if settled {
                break;
            }
            assert!(Instant::now() < deadline, "never caught up: {rows:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    cluster.stop();
}
