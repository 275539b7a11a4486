//! Three replicas of one Raft group in one process (one glommio executor, messages handed
//! over in memory, each replica with its own log and engine on disk): a leader is elected,
//! proposals are applied on every replica alike, the leader stops and a new one takes over
//! without losing an acknowledged write, the old leader restarts from its files and catches
//! up. The TCP transport and the server's use of groups are tested separately.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_server::replication::group::{ApplyFn, Group, GroupConfig, ProposeError, SendFn};
use corekv_server::replication::log_store::RaftLog;
use corekv_storage::{Change, Engine, OpenHooks, Options, ScanRange};
use futures::FutureExt;
use glommio::{LocalExecutorBuilder, Placement};
use raft::StateRole;

const VOTERS: [u64; 3] = [1, 2, 3];

/// The in-memory network: which replicas run, and their groups.
#[derive(Default)]
struct Net {
    groups: HashMap<u64, Group>,
    down: HashSet<u64>,
}

fn options() -> Options {
    Options {
        // Small: the replicas flush while the test runs, so the restart replays from a
        // flushed point rather than from the start of the log.
        memtable_size_bytes_max: 4096,
        wal_segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

/// Commands: `i<key>` adds 1 to the counter `key` and answers the new value; `p<key>=<value>`
/// puts. Applied through the engine like the server's commands are.
fn apply_fn() -> ApplyFn {
    Rc::new(|engine: Engine, command: Vec<u8>| {
        async move {
            match command.split_first() {
                Some((b'i', key)) => {
                    let (n, _) = engine
                        .read_modify_write(key, |current| {
                            let n: i64 = current
                                .map(|(v, _)| std::str::from_utf8(v).unwrap().parse().unwrap())
                                .unwrap_or(0)
                                + 1;
                            let value = Cow::Owned(n.to_string().into_bytes());
                            (Change::Put { value, ttl: None }, n)
                        })
                        .await
                        .unwrap();
                    Ok(n.to_string().into_bytes())
                }
                Some((b'p', rest)) => {
                    let eq = rest.iter().position(|&b| b == b'=').unwrap();
                    engine.put(&rest[..eq], &rest[eq + 1..]).await.unwrap();
                    Ok(b"ok".to_vec())
                }
                _ => panic!("unknown command"),
            }
        }
        .boxed_local()
    })
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

struct Replica {
    engine: Engine,
    log: RaftLog,
    group: Group,
}

async fn start(net: &Rc<RefCell<Net>>, dir: &Path, id: u64) -> Replica {
    let shard_dir = dir.join(format!("node{id}"));
    let engine = loop {
        match Engine::open_applying(&shard_dir, options(), OpenHooks::default()).await {
            Err(corekv_storage::Error::Locked { .. }) => {
                glommio::timer::sleep(Duration::from_millis(5)).await
            }
            other => break other.unwrap(),
        }
    };
    let log = RaftLog::open(&shard_dir, &options(), &VOTERS, engine.flushed_log_index())
        .await
        .unwrap();
    let config = GroupConfig {
        node_id: id,
        shard: 0,
        voters: VOTERS.to_vec(),
        tick_interval: Duration::from_millis(10),
        election_ticks: 10,
        heartbeat_ticks: 2,
        log_retain_entries: 100_000,
        request_timeout: Duration::from_secs(10),
    };
    let group = Group::start(
        config,
        log.clone(),
        engine.clone(),
        apply_fn(),
        send_fn(net, id),
    )
    .unwrap();
    net.borrow_mut().groups.insert(id, group.clone());
    net.borrow_mut().down.remove(&id);
    Replica { engine, log, group }
}

/// Stops a replica's group and closes its files, as a kill would leave them (everything
/// acknowledged is durable already); its directory is free for a restart afterwards.
async fn stop(replica: Replica) {
    let Replica { engine, log, group } = replica;
    group.stop();
    wait_for("the group to stop", || group.is_stopped().then_some(())).await;
    log.close().await.unwrap();
    engine.close().await.unwrap();
    // The files stay locked until the last handle goes.
    drop(group);
    drop(log);
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

async fn leader(replicas: &HashMap<u64, Replica>) -> u64 {
    wait_for("a leader", || {
        replicas
            .iter()
            .find(|(_, r)| r.group.status().role == StateRole::Leader)
            .map(|(id, _)| *id)
    })
    .await
}

async fn contents(e: &Engine) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let range = ScanRange {
        start: Vec::new(),
        end: None,
        limit: 100_000,
        reverse: false,
    };
    let mut out = Vec::new();
    for (k, v) in e.scan(&range, None).await.unwrap().entries {
        let (_, seq) = e.get_versioned(&k).await.unwrap().unwrap();
        out.push((k, v, seq));
    }
    out
}

fn test_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("raft-group-")
        .tempdir_in(base)
        .unwrap()
}

#[test]
fn three_replicas_elect_replicate_fail_over_and_catch_up() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(|| async {
            let dir = test_dir();
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
            stop(replicas.remove(&first).unwrap()).await;
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
                stop(r).await;
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
