//! Three replicas of one Raft group in one process (one glommio executor, messages handed
//! over in memory, each replica with its own log and engine on disk): a leader is elected,
//! proposals are applied on every replica alike, the leader stops and a new one takes over
//! without losing an acknowledged write, the old leader restarts from its files and catches
//! up. The TCP transport and the server's use of groups are tested separately.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use common::{
    Replica, VOTERS, contents, find_leader, run, start_replica, stop_replica, test_dir, wait_for,
};
use corekv_server::replication::group::{Group, ProposeError, SendFn};

/// The in-memory network: which replicas run, and their groups.
#[derive(Default)]
struct Net {
    groups: HashMap<u64, Group>,
    down: HashSet<u64>,
}

fn send_fn(net: &Rc<RefCell<Net>>, from: u64) -> SendFn {
    let net = Rc::downgrade(net);
    Rc::new(move |messages| {
        let Some(net) = net.upgrade() else { return };
        let net = net.borrow();
        for m in messages {
            if net.down.contains(&from) || net.down.contains(&m.to) {
                continue;
            }
            if let Some(g) = net.groups.get(&m.to) {
                g.step(m);
            }
        }
    })
}

async fn start(net: &Rc<RefCell<Net>>, dir: &Path, id: u64) -> Replica {
    let replica = start_replica(dir, id, send_fn(net, id)).await;
    net.borrow_mut().groups.insert(id, replica.group.clone());
    net.borrow_mut().down.remove(&id);
    replica
}

async fn leader(replicas: &HashMap<u64, Replica>) -> u64 {
    wait_for("a leader", || {
        find_leader(replicas.iter().map(|(id, r)| (id, &r.group)))
    })
    .await
}

#[test]
fn three_replicas_elect_replicate_fail_over_and_catch_up() {
    run(|| async {
        let dir = test_dir("raft-group-");
        let net = Rc::new(RefCell::new(Net::default()));
        let mut replicas = HashMap::new();
        for id in VOTERS {
            replicas.insert(id, start(&net, dir.path(), id).await);
        }
        let first = leader(&replicas).await;

        // Proposals through the leader; a follower refuses and names the leader.
        let follower = VOTERS.into_iter().find(|&id| id != first).unwrap();
        assert_eq!(
            replicas[&follower].group.propose(b"ic".to_vec()).await,
            Err(ProposeError::NotLeader {
                leader: Some(first)
            })
        );
        let mut increments = 0;
        for i in 0..100 {
            let answer = replicas[&first]
                .group
                .propose(b"ic".to_vec())
                .await
                .unwrap();
            increments += 1;
            assert_eq!(answer, increments.to_string().into_bytes());
            let put = format!("pk{i:03}=v{i}").into_bytes();
            assert_eq!(replicas[&first].group.propose(put).await.unwrap(), b"ok");
        }
        // Many proposals at once share appends.
        let concurrent: Vec<_> = (0..50)
            .map(|_| replicas[&first].group.propose(b"id".to_vec()))
            .collect();
        for r in futures::future::join_all(concurrent).await {
            r.unwrap();
        }
        replicas[&first].group.read_barrier().await.unwrap();
        assert_eq!(
            replicas[&first].engine.get(b"c").await.unwrap(),
            Some(b"100".to_vec())
        );
        assert!(matches!(
            replicas[&follower].group.read_barrier().await,
            Err(ProposeError::NotLeader { .. })
        ));

        // The leader stops (as if killed: cut off, loop stopped, files closed).
        net.borrow_mut().down.insert(first);
        net.borrow_mut().groups.remove(&first);
        stop_replica(replicas.remove(&first).unwrap()).await;
        let second = leader(&replicas).await;
        assert_ne!(second, first);
        for _ in 0..100 {
            replicas[&second]
                .group
                .propose(b"ic".to_vec())
                .await
                .unwrap();
            increments += 1;
        }
        replicas[&second].group.read_barrier().await.unwrap();
        assert_eq!(
            replicas[&second].engine.get(b"c").await.unwrap(),
            Some(increments.to_string().into_bytes()),
            "an acknowledged increment was lost in the failover"
        );

        // The old leader restarts from its files and catches up.
        replicas.insert(first, start(&net, dir.path(), first).await);
        let commit = replicas[&second].group.status().commit;
        wait_for("the restarted replica to catch up", || {
            replicas
                .values()
                .all(|r| r.group.status().applied >= commit)
                .then_some(())
        })
        .await;
        assert!(
            replicas.values().all(|r| r.engine.flushed_log_index() > 0),
            "every replica must have flushed some entries"
        );
        let reference = contents(&replicas[&second].engine).await;
        assert_eq!(reference.len(), 100 + 2);
        for (id, r) in &replicas {
            assert_eq!(
                contents(&r.engine).await,
                reference,
                "replica {id} differs from the leader's state"
            );
        }
        net.borrow_mut().groups.clear();
        for (_, r) in replicas {
            stop_replica(r).await;
        }
    });
}
