//! A cluster node whose disk fails: a follower whose Raft log can write nothing more stops
//! taking part (logged; it applies nothing more and refuses reads and writes as `notLeader`)
//! while the others go on, and restarted on a good disk it catches up and counts again.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use corekv_proto::client::{Connection, TokioRuntime};
use corekv_proto::{Error as ClientError, ErrorCode};
use corekv_tests::cluster::{LocalCluster, kv};
use corekv_tests::{block_on, test_dir};

#[test]
fn a_replica_whose_log_cannot_write_stops_and_catches_up_on_a_good_disk() {
    let dir = test_dir("cluster-log-fault");
    let mut cluster = LocalCluster::start(dir.path(), 3, &[]);
    block_on(async {
        let mut written = Vec::new();
        let mut leader = 0;
        for i in 0..20 {
            let (k, v) = kv(i);
            leader = cluster.put_anywhere(&[], &k, &v).await;
            written.push((k, v));
        }
        // A follower restarts on a disk where its Raft log can write nothing more.
        let bad = (1..=3).find(|&n| n != leader).unwrap();
        cluster.node(bad).kill9();
        cluster
            .node(bad)
            .set_flag("--debug-fault-injection", "write/raft-log=eio@0+");
        cluster.node(bad).start();
        for i in 20..60 {
            let (k, v) = kv(i);
            leader = cluster.put_anywhere(&[bad], &k, &v).await;
            written.push((k, v));
        }
        cluster.check_all(leader, &written).await;
        // Its group stopped on the failed write, says why, and applied none of the writes
        // made since.
        let deadline = Instant::now() + Duration::from_secs(30);
        let log = loop {
            let log = cluster.nodes[bad as usize - 1]
                .server
                .as_ref()
                .unwrap()
                .log();
            if log.contains("the Raft group stopped on an error") {
                break log;
            }
            assert!(Instant::now() < deadline, "node {bad} went on:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(log.contains("Input/output error"), "{log}");
        let applied = cluster.counters("raft_applied_index").await;
        assert!(
            applied[bad as usize - 1] < applied[leader as usize - 1],
            "{applied:?}"
        );
        // A write sent there is refused as not its to take: nothing was proposed.
        let c = Connection::connect(TokioRuntime, cluster.nodes[bad as usize - 1].addr)
            .await
            .unwrap();
        match c.put(b"to-the-stopped-replica", b"x", 0).await {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::NotLeader, "{e:?}");
                assert_ne!(e.leader.as_ref().map(|l| l.node), Some(bad), "{e:?}");
            }
            other => panic!("the stopped replica answered a write: {other:?}"),
        }

        // On a good disk again it catches up with every acknowledged write.
        cluster.node(bad).kill9();
        cluster.node(bad).remove_flag("--debug-fault-injection");
        cluster.node(bad).start();
        cluster.applied_everywhere(leader).await;
        cluster.node(leader).kill9();
        let (k, v) = (b"after".to_vec(), b"the repaired node votes".to_vec());
        let survivor = cluster.put_anywhere(&[], &k, &v).await;
        written.push((k, v));
        cluster.check_all(survivor, &written).await;
    });
    cluster.stop();
}
