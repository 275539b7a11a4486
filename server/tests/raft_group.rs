//! Three replicas of one Raft group in one process (one glommio executor, messages handed
//! over in memory, each replica with its own log and engine on disk): a leader is elected,
//! proposals are applied on every replica alike, the leader stops and a new one takes over
//! without losing an acknowledged write, the old leader restarts from its files and catches
//! up; only the leader fills its block cache with the tables it writes. A follower
//! acknowledges only what its log made durable. A leader transfer
//! hands over and ends the old leader's lease reads from its start. With lease reads, a
//! leader answers reads without asking a majority while its lease runs, and never once
//! another leader could have been elected; a replica that just started votes for no one
//! during its first election timeout. A leader refuses proposals past its bound of
//! uncommitted entries, and commits the rest. The TCP transport and the server's use of groups are
//! tested separately.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use common::{
    Replica, VOTERS, contents, find_leader, run, start_replica_with, stop_replica, test_dir,
    wait_for,
};
use corekv_server::replication::group::{Group, GroupConfig, ProposeError, SendFn};
use corekv_storage::io::{Fault, FaultInjector, FaultOp};
use raft::eraftpb::{Message, MessageType};
use raft::{GetEntriesContext, StateRole, Storage};

/// The in-memory network: which replicas run, and their groups.
#[derive(Default)]
struct Net {
    groups: HashMap<u64, Group>,
    down: HashSet<u64>,
    /// Replicas whose every message is dropped, both ways (a partition).
    cut: HashSet<u64>,
    /// `MsgAppend` messages delivered, by sender, with or without entries.
    appends: HashMap<u64, usize>,
    /// Whether heartbeats and their answers are dropped.
    no_heartbeats: bool,
}

fn send_fn(net: &Rc<RefCell<Net>>, from: u64) -> SendFn {
    let net = Rc::downgrade(net);
    Rc::new(move |messages| {
        let Some(net) = net.upgrade() else { return };
        let mut net = net.borrow_mut();
        for m in messages {
            if net.down.contains(&from)
                || net.down.contains(&m.to)
                || net.cut.contains(&from)
                || net.cut.contains(&m.to)
            {
                continue;
            }
            let heartbeat = matches!(
                m.get_msg_type(),
                MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
            );
            if heartbeat && net.no_heartbeats {
                continue;
            }
            if m.get_msg_type() == MessageType::MsgAppend {
                *net.appends.entry(from).or_default() += 1;
            }
            if let Some(g) = net.groups.get(&m.to) {
                g.step(m);
            }
        }
    })
}

async fn start(net: &Rc<RefCell<Net>>, dir: &Path, id: u64) -> Replica {
    start_with(net, dir, id, |_| {}).await
}

async fn start_with(
    net: &Rc<RefCell<Net>>,
    dir: &Path,
    id: u64,
    adjust: impl FnOnce(&mut GroupConfig),
) -> Replica {
    let replica = common::start_replica_with(dir, id, send_fn(net, id), adjust).await;
    net.borrow_mut().groups.insert(id, replica.group.clone());
    net.borrow_mut().down.remove(&id);
    replica
}

/// Starts every voter, each adjusted by `adjust`.
async fn start_all(
    net: &Rc<RefCell<Net>>,
    dir: &Path,
    adjust: impl Fn(&mut GroupConfig),
) -> HashMap<u64, Replica> {
    let mut replicas = HashMap::new();
    for id in VOTERS {
        replicas.insert(id, start_with(net, dir, id, &adjust).await);
    }
    replicas
}

/// Cuts every replica off the network and stops it.
async fn stop_all(net: &Rc<RefCell<Net>>, replicas: HashMap<u64, Replica>) {
    net.borrow_mut().groups.clear();
    for (_, r) in replicas {
        stop_replica(r).await;
    }
}

async fn wait_applied(replicas: &HashMap<u64, Replica>, commit: u64) {
    let groups: Vec<&Group> = replicas.values().map(|r| &r.group).collect();
    common::wait_applied(&groups, commit).await;
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
            let replica = start(&net, dir.path(), id).await;
            // Nothing ran between the group's start and here: it has not followed or led yet.
            assert!(
                !replica.engine.block_cache_fill(),
                "a starting replica fills"
            );
            replicas.insert(id, replica);
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
        // The leader counted its work: 250 proposals answered, many entries per append and
        // per message (the 50 concurrent ones shared them), and their commit latencies.
        let counts = replicas[&first].group.counts();
        assert_eq!(counts.proposals_committed, 250, "{counts:?}");
        assert!(counts.log_appended_entries >= 250, "{counts:?}");
        assert!(
            counts.log_appended_entries > counts.log_appends,
            "{counts:?}"
        );
        assert!(
            counts.append_message_entries > counts.append_messages && counts.append_messages > 0,
            "{counts:?}"
        );
        let (p50, p99) = replicas[&first].group.commit_latency_us();
        assert!(
            0 < p50 && p50 <= p99,
            "commit latency p50 {p50} us, p99 {p99} us"
        );
        // Every replica timed its log's syncs, the followers' included.
        for (id, r) in &replicas {
            let (p50, p99) = r.group.log_sync_latency_us();
            assert!(
                0 < p50 && p50 <= p99,
                "node {id}: log sync latency p50 {p50} us, p99 {p99} us"
            );
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
        wait_applied(&replicas, commit).await;
        assert!(
            replicas.values().all(|r| r.engine.flushed_log_index() > 0),
            "every replica must have flushed some entries"
        );
        // Only the leader, which serves the reads, fills its block cache with the tables it
        // writes; the restarted replica and the other follower do not, the new leader does.
        wait_for("each replica's block cache fill to follow its role", || {
            replicas
                .values()
                .all(|r| {
                    r.engine.block_cache_fill() == (r.group.status().role == StateRole::Leader)
                })
                .then_some(())
        })
        .await;
        assert!(replicas[&second].engine.block_cache_fill());
        let reference = contents(&replicas[&second].engine).await;
        assert_eq!(reference.len(), 100 + 2);
        for (id, r) in &replicas {
            assert_eq!(
                contents(&r.engine).await,
                reference,
                "replica {id} differs from the leader's state"
            );
        }
        stop_all(&net, replicas).await;
    });
}

#[test]
fn a_commit_reaches_followers_with_the_next_append_or_heartbeat() {
    run(|| async {
        let dir = test_dir("raft-group-");
        let net = Rc::new(RefCell::new(Net::default()));
        let replicas = start_all(&net, dir.path(), |_| {}).await;
        let first = leader(&replicas).await;
        replicas[&first]
            .group
            .propose(b"pa=0".to_vec())
            .await
            .unwrap();
        wait_applied(&replicas, replicas[&first].group.status().commit).await;

        // One proposal at a time: each costs one append per follower. The commit index
        // travels on the next one, not in an empty append of its own, which would double the
        // messages, and the wakeups, of a round. (Heartbeats, whose answers from a follower
        // not yet caught up bring an append too, are held off meanwhile; the appends keep
        // the leader's quorum and the followers' election timers.)
        net.borrow_mut().no_heartbeats = true;
        // A heartbeat answer sent before that may still wait in the leader's queue and bring
        // an append; it is handled before this proposal's answer.
        replicas[&first]
            .group
            .propose(b"pa=warm".to_vec())
            .await
            .unwrap();
        net.borrow_mut().appends.clear();
        const PROPOSALS: usize = 20;
        for i in 0..PROPOSALS {
            let put = format!("pa={i}").into_bytes();
            assert_eq!(replicas[&first].group.propose(put).await.unwrap(), b"ok");
        }
        let sent = net.borrow().appends.get(&first).copied().unwrap_or(0);
        assert_eq!(sent, 2 * PROPOSALS, "appends for {PROPOSALS} proposals");
        // So the followers come to know every commit but the last (one may not have taken
        // in the last append yet)...
        let commit = replicas[&first].group.status().commit;
        wait_for("the followers to know the commit before the last", || {
            replicas
                .values()
                .all(|r| r.group.status().commit >= commit - 1)
                .then_some(())
        })
        .await;
        for (id, r) in &replicas {
            if *id != first {
                assert_eq!(r.group.status().commit, commit - 1, "replica {id}");
            }
        }
        // ...which the next heartbeat brings.
        net.borrow_mut().no_heartbeats = false;
        wait_applied(&replicas, commit).await;
        let reference = contents(&replicas[&first].engine).await;
        for (id, r) in &replicas {
            assert_eq!(contents(&r.engine).await, reference, "replica {id} differs");
        }
        stop_all(&net, replicas).await;
    });
}

#[test]
fn a_follower_acknowledges_only_what_its_log_made_durable() {
    run(|| async {
        let dir = test_dir("raft-group-");
        let net = Rc::new(RefCell::new(Net::default()));
        let short = |c: &mut GroupConfig| c.request_timeout = Duration::from_secs(2);
        let mut replicas = HashMap::new();
        let mut faults = HashMap::new();
        for id in VOTERS {
            let f = FaultInjector::new(id);
            let r = common::start_replica_faulty(
                dir.path(),
                id,
                send_fn(&net, id),
                short,
                Some(f.clone()),
            )
            .await;
            net.borrow_mut().groups.insert(id, r.group.clone());
            replicas.insert(id, r);
            faults.insert(id, f);
        }
        let first = leader(&replicas).await;
        // Many proposals in flight at once (their appends may overlap).
        let proposals: Vec<_> = (0..20)
            .map(|i| {
                replicas[&first]
                    .group
                    .propose(format!("pa={i}").into_bytes())
            })
            .collect();
        for answer in futures::future::join_all(proposals).await {
            assert_eq!(answer.unwrap(), b"ok");
        }
        let commit = replicas[&first].group.status().commit;
        wait_applied(&replicas, commit).await;

        // Neither follower's log can write any more: a follower that acknowledged an append
        // before its write was durable would let the leader commit it.
        for id in VOTERS.into_iter().filter(|&id| id != first) {
            faults[&id].fail_all(FaultOp::Write, Fault::Eio);
        }
        let answer = replicas[&first].group.propose(b"pb=lost".to_vec()).await;
        assert!(
            answer.is_err(),
            "committed without a durable copy on a follower: {answer:?}"
        );
        assert_eq!(replicas[&first].group.status().commit, commit);
        // A replica whose log failed takes no further part.
        for id in VOTERS.into_iter().filter(|&id| id != first) {
            let g = &replicas[&id].group;
            wait_for("the follower to stop", || g.is_stopped().then_some(())).await;
        }
        net.borrow_mut().groups.clear();
        for (id, r) in replicas {
            r.group.stop();
            wait_for("the group to stop", || r.group.is_stopped().then_some(())).await;
            // The followers' logs fail to close too: they cannot sync.
            let closed = r.log.close().await;
            assert_eq!(closed.is_ok(), id == first, "{closed:?}");
            r.engine.close().await.unwrap();
        }
    });
}

#[test]
fn the_log_keeps_at_most_its_bytes_behind_the_flushed_state() {
    const KEEP_BYTES: u64 = 8 << 10;
    run(|| async {
        let dir = test_dir("raft-group-");
        let net = Rc::new(RefCell::new(Net::default()));
        // The count would keep every entry: the bytes decide.
        let replicas = start_all(&net, dir.path(), |c| {
            c.log_retain_entries = 1_000_000;
            c.log_retain_bytes = KEEP_BYTES;
        })
        .await;
        let first = leader(&replicas).await;
        let value = "v".repeat(1000);
        for i in 0..60 {
            let put = format!("pk{i:03}={value}").into_bytes();
            assert_eq!(replicas[&first].group.propose(put).await.unwrap(), b"ok");
        }
        // Each replica's engine flushed (4 KiB memtables); behind what it flushed, its log
        // keeps entries of at most KEEP_BYTES, and not much less (entries of ~1 KiB).
        for (id, r) in &replicas {
            let kept = wait_for("the log compacted by its bytes", || {
                let flushed = r.engine.flushed_log_index();
                let (first_kept, _) = r.log.bounds();
                if flushed < 20 || first_kept == 1 {
                    return None;
                }
                let entries = r
                    .log
                    .entries(
                        first_kept,
                        flushed + 1,
                        None,
                        GetEntriesContext::empty(false),
                    )
                    .unwrap();
                let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
                (bytes <= KEEP_BYTES).then_some(entries.len())
            })
            .await;
            assert!((5..=8).contains(&kept), "replica {id} kept {kept} entries");
        }
        // Compacted, the replicas still agree, and the leader still takes writes.
        assert_eq!(
            replicas[&first]
                .group
                .propose(b"pz=1".to_vec())
                .await
                .unwrap(),
            b"ok"
        );
        let commit = replicas[&first].group.status().commit;
        wait_applied(&replicas, commit).await;
        let reference = contents(&replicas[&first].engine).await;
        assert_eq!(reference.len(), 61);
        for (id, r) in &replicas {
            assert_eq!(contents(&r.engine).await, reference, "replica {id} differs");
        }
        stop_all(&net, replicas).await;
    });
}

/// Ticks of 10 ms, an election timeout of 10 ticks: the lease is 81 ms.
fn with_lease(c: &mut GroupConfig) {
    c.lease = Some(c.safe_lease());
}

#[test]
fn a_lease_answers_reads_without_asking_and_ends_before_another_leader_commits() {
    run(|| async {
        let dir = test_dir("raft-lease-");
        let net = Rc::new(RefCell::new(Net::default()));
        let mut replicas = start_all(&net, dir.path(), with_lease).await;
        let first = leader(&replicas).await;
        let old = replicas[&first].group.clone();
        assert_eq!(old.propose(b"pk=v1".to_vec()).await.unwrap(), b"ok");

        // Back-to-back barriers: once a ReadIndex confirmed the lease, the next ones are
        // answered without asking (a stall of the test longer than the lease asks again).
        old.read_barrier().await.unwrap();
        let by_lease = old.counts().lease_reads;
        for _ in 0..20 {
            old.read_barrier().await.unwrap();
        }
        let (by_lease_after, asked) = (old.counts().lease_reads, old.counts().read_index_requests);
        assert!(
            by_lease_after > by_lease,
            "no read was answered by the lease ({asked} ReadIndex requests)"
        );

        // The leader is cut off. The others elect a new leader, which commits a write: the
        // old leader must not answer a read any more (it would miss that write).
        net.borrow_mut().cut.insert(first);
        let cut_off = replicas.remove(&first).unwrap();
        let others = replicas;
        let second = leader(&others).await;
        assert_ne!(second, first);
        let new = others[&second].group.clone();
        assert_eq!(new.propose(b"pk=v2".to_vec()).await.unwrap(), b"ok");
        match old.read_barrier().await {
            Err(ProposeError::NotLeader { .. } | ProposeError::TimedOut) => {}
            other => {
                panic!("the old leader answered a read after another leader committed: {other:?}")
            }
        }
        stop_replica(cut_off).await;
        for r in others.into_values() {
            stop_replica(r).await;
        }
    });
}

#[test]
fn a_leader_transfer_hands_over_and_ends_the_old_leaders_lease_at_once() {
    run(|| async {
        let dir = test_dir("raft-transfer-");
        let net = Rc::new(RefCell::new(Net::default()));
        let replicas = start_all(&net, dir.path(), with_lease).await;
        let first = leader(&replicas).await;
        let old = replicas[&first].group.clone();
        assert_eq!(old.propose(b"ptk=v1".to_vec()).await.unwrap(), b"ok");
        old.read_barrier().await.unwrap();
        let to = VOTERS.into_iter().find(|&id| id != first).unwrap();

        // `to` is cut off: the transfer cannot finish, but from its start the voters may
        // elect `to` without waiting out the lease, so no read is answered by it any more
        // (the other follower confirms them instead).
        net.borrow_mut().cut.insert(to);
        let pending = glommio::spawn_local({
            let old = old.clone();
            async move { old.transfer_leader(to).await }
        });
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        let by_lease = old.counts().lease_reads;
        for _ in 0..5 {
            old.read_barrier().await.unwrap();
        }
        assert_eq!(
            old.counts().lease_reads,
            by_lease,
            "a lease read during a transfer"
        );
        // Writes meanwhile are refused, as during an election.
        assert_eq!(
            old.propose(b"ptk=v0".to_vec()).await,
            Err(ProposeError::NotLeader { leader: None })
        );
        assert_eq!(pending.await, Err(ProposeError::TimedOut));
        assert_eq!(old.status().leader, first, "the transfer was given up");

        // An order to campaign from a replica that is not the leader is refused.
        let other = VOTERS
            .into_iter()
            .find(|&id| id != first && id != to)
            .unwrap();
        let bystander = replicas[&other].group.clone();
        let term = bystander.status().term;
        let mut order = Message::default();
        order.set_msg_type(MessageType::MsgTimeoutNow);
        (order.from, order.to, order.term) = (to, other, term);
        bystander.step(order);
        glommio::timer::sleep(std::time::Duration::from_millis(30)).await;
        let s = bystander.status();
        assert_eq!((s.role, s.term), (StateRole::Follower, term), "{s:?}");

        // Reachable again, `to` takes over once it follows `first` again (asked until then);
        // the old leader refuses reads and names the new one.
        net.borrow_mut().cut.remove(&to);
        let new = replicas[&to].group.clone();
        let deadline = std::time::Instant::now() + common::DEADLINE;
        while let Err(e) = old.transfer_leader(to).await {
            assert!(
                matches!(e, ProposeError::TimedOut) && std::time::Instant::now() < deadline,
                "transfer to {to}: {e:?}"
            );
        }
        wait_for("the new leader", || {
            (new.status().role == StateRole::Leader).then_some(())
        })
        .await;
        assert_eq!(new.propose(b"ptk=v2".to_vec()).await.unwrap(), b"ok");
        match old.read_barrier().await {
            Err(ProposeError::NotLeader { leader }) => assert_eq!(leader, Some(to)),
            other => panic!("the old leader answered a read after handing over: {other:?}"),
        }
        assert_eq!(
            replicas[&first].group.transfer_leader(first).await,
            Err(ProposeError::NotLeader { leader: Some(to) })
        );
        stop_all(&net, replicas).await;
    });
}

#[test]
fn with_leases_a_replica_votes_for_no_one_during_its_first_election_timeout() {
    run(|| async {
        let dir = test_dir("raft-lease-vote-");
        let sent: Rc<RefCell<Vec<Message>>> = Rc::default();
        let capture = |sent: &Rc<RefCell<Vec<Message>>>| -> SendFn {
            let sent = Rc::clone(sent);
            Rc::new(move |messages| sent.borrow_mut().extend(messages))
        };
        // Election timeouts of 1 s: the vote request below comes well within the first.
        let slow = |c: &mut GroupConfig| c.election_ticks = 100;
        let leased = start_replica_with(dir.path(), 1, capture(&sent), |c| {
            slow(c);
            with_lease(c);
        })
        .await;
        let plain = start_replica_with(dir.path(), 2, capture(&sent), slow).await;
        let vote = |to: u64| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgRequestVote);
            m.from = 3;
            m.to = to;
            m.term = 5;
            m
        };
        leased.group.step(vote(1));
        plain.group.step(vote(2));
        // Without leases the vote is granted at once (raft-rs knows no leader yet).
        wait_for("the vote of the replica without leases", || {
            sent.borrow()
                .iter()
                .any(|m| m.from == 2 && m.get_msg_type() == MessageType::MsgRequestVoteResponse)
                .then_some(())
        })
        .await;
        assert!(
            !sent.borrow().iter().any(|m| m.from == 1),
            "the replica with leases voted in its first election timeout: {:?}",
            sent.borrow()
        );
        assert_eq!(plain.group.status().term, 5);
        assert!(
            leased.group.status().term < 5,
            "{:?}",
            leased.group.status()
        );
        stop_replica(leased).await;
        stop_replica(plain).await;
    });
}

#[test]
fn a_leader_refuses_proposals_past_its_uncommitted_bound_and_commits_the_rest() {
    run(|| async {
        let dir = test_dir("raft-group-");
        let net = Rc::new(RefCell::new(Net::default()));
        // At most 1 MiB proposed and not committed; an election timeout (1 s) long enough
        // that the leader keeps leading while its followers hear nothing (the cut lasts a few
        // turns of the loop: a stall over 1 s would elect another leader).
        let bounded = |c: &mut GroupConfig| {
            c.max_uncommitted_bytes = 1 << 20;
            c.election_ticks = 100;
        };
        let replicas = start_all(&net, dir.path(), bounded).await;
        let first = leader(&replicas).await;
        let group = replicas[&first].group.clone();
        assert_eq!(group.propose(b"pwarm=up".to_vec()).await.unwrap(), b"ok");
        // No majority: nothing commits, so the leader's uncommitted entries only grow.
        let followers: Vec<u64> = VOTERS.into_iter().filter(|&id| id != first).collect();
        net.borrow_mut().cut.extend(followers.iter().copied());
        // Six proposals of ~300 KiB in order: three fit under 1 MiB, the rest do not.
        let value = "v".repeat(300 << 10);
        let refused = Rc::new(RefCell::new(Vec::new()));
        let proposals: Vec<_> = (0..6)
            .map(|i| {
                let (group, refused) = (group.clone(), refused.clone());
                let command = format!("pk{i}={value}").into_bytes();
                glommio::spawn_local(async move {
                    let answer = group.propose(command).await;
                    if answer.is_err() {
                        refused.borrow_mut().push((i, answer.clone()));
                    }
                    answer
                })
            })
            .collect();
        wait_for("three refusals", || {
            (refused.borrow().len() == 3).then_some(())
        })
        .await;
        assert_eq!(
            *refused.borrow(),
            [3, 4, 5].map(|i| (i, Err(ProposeError::Overloaded))),
            "refused past the bound, and only those"
        );
        // The majority is back: what was taken commits, and the bound is free again.
        net.borrow_mut().cut.clear();
        for (i, p) in proposals.into_iter().enumerate() {
            let answer = p.await;
            if i < 3 {
                assert_eq!(answer.unwrap(), b"ok", "proposal {i}");
            }
        }
        assert_eq!(group.propose(b"pafter=ok".to_vec()).await.unwrap(), b"ok");
        let commit = group.status().commit;
        wait_applied(&replicas, commit).await;
        for (id, r) in &replicas {
            let keys: Vec<Vec<u8>> = contents(&r.engine)
                .await
                .into_iter()
                .map(|(k, _, _)| k)
                .collect();
            let want: Vec<&[u8]> = vec![b"after", b"k0", b"k1", b"k2", b"warm"];
            assert_eq!(
                keys, want,
                "replica {id}: refused proposals were not applied"
            );
        }
        stop_all(&net, replicas).await;
    });
}
