//! What the in-process Raft tests share: opening a replica's files and group, the commands
//! its engine applies, waiting, and reading an engine's whole state.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_server::replication::group::{ApplyFn, Group, GroupConfig, SendFn};
use corekv_server::replication::log_store::RaftLog;
use corekv_storage::io::FaultInjector;
use corekv_storage::{Change, Engine, OpenHooks, Options, ScanRange};
use futures::FutureExt;
use glommio::{LocalExecutorBuilder, Placement};
use raft::StateRole;

/// The voters of every test group.
pub const VOTERS: [u64; 3] = [1, 2, 3];
/// How long a test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Small memtables: the replicas flush while a test runs, so a restart replays from a
/// flushed point rather than from the start of the log.
pub fn options() -> Options {
    Options {
        memtable_size_bytes_max: 4096,
        wal_segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

/// Commands: `i<key>` adds 1 to the counter `key` and answers the new value; `p<key>=<value>`
/// puts and answers `ok`. Applied through the engine like the server's commands are.
pub fn apply_fn() -> ApplyFn {
    Rc::new(|engine: Engine, command: bytes::Bytes| {
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

/// A replica's files and group.
pub struct Replica {
    pub engine: Engine,
    pub log: RaftLog,
    pub group: Group,
}

/// Opens replica `id`'s engine and log under `dir` (waiting for a stopped predecessor's
/// handles to let go of them) and starts its group, sending through `send`.
pub async fn start_replica(dir: &Path, id: u64, send: SendFn) -> Replica {
    start_replica_with(dir, id, send, |_| {}).await
}

/// [`start_replica`] with the group's settings changed by `adjust` first.
pub async fn start_replica_with(
    dir: &Path,
    id: u64,
    send: SendFn,
    adjust: impl FnOnce(&mut GroupConfig),
) -> Replica {
    start_replica_faulty(dir, id, send, adjust, None).await
}

/// [`start_replica_with`] with the log's file operations going through `log_faults`.
pub async fn start_replica_faulty(
    dir: &Path,
    id: u64,
    send: SendFn,
    adjust: impl FnOnce(&mut GroupConfig),
    log_faults: Option<FaultInjector>,
) -> Replica {
    let shard_dir = dir.join(format!("node{id}"));
    let engine = loop {
        match Engine::open_applying(&shard_dir, options(), OpenHooks::default()).await {
            Err(corekv_storage::Error::Locked { .. }) => {
                glommio::timer::sleep(Duration::from_millis(5)).await
            }
            other => break other.unwrap(),
        }
    };
    let log = RaftLog::open_with_faults(
        &shard_dir,
        &options(),
        &VOTERS,
        engine.flushed_log_index(),
        log_faults,
    )
    .await
    .unwrap();
    let mut config = GroupConfig {
        node_id: id,
        shard: 0,
        voters: VOTERS.to_vec(),
        tick_interval: Duration::from_millis(10),
        election_ticks: 10,
        heartbeat_ticks: 2,
        log_retain_entries: 100_000,
        log_retain_bytes: 1 << 30,
        max_uncommitted_bytes: 64 << 20,
        request_timeout: Duration::from_secs(10),
        lease: None,
    };
    adjust(&mut config);
    let group = Group::start(config, log.clone(), engine.clone(), apply_fn(), send).unwrap();
    Replica { engine, log, group }
}

/// Stops a replica's group and closes its files, as a kill would leave them (everything
/// acknowledged is durable already); its directory is free for a restart once the caller's
/// other handles to the group are gone.
pub async fn stop_replica(replica: Replica) {
    let Replica { engine, log, group } = replica;
    group.stop();
    wait_for("the group to stop", || group.is_stopped().then_some(())).await;
    log.close().await.unwrap();
    engine.close().await.unwrap();
}

/// Waits until `f` gives something; a failed test after [`DEADLINE`].
/// Waits until every one of `groups` applied `commit`.
pub async fn wait_applied(groups: &[&Group], commit: u64) {
    wait_for("every replica to apply the commands", || {
        groups
            .iter()
            .all(|g| g.status().applied >= commit)
            .then_some(())
    })
    .await;
}

pub async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// The id of the replica that leads now, if one does.
pub fn find_leader<'a>(groups: impl IntoIterator<Item = (&'a u64, &'a Group)>) -> Option<u64> {
    groups
        .into_iter()
        .find(|(_, g)| g.status().role == StateRole::Leader)
        .map(|(id, _)| *id)
}

/// Everything live in `e`, with the sequence number that wrote it.
pub async fn contents(e: &Engine) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
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

/// A fresh directory on the target's disk (never tmpfs: O_DIRECT).
pub fn test_dir(prefix: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap()
}

/// Runs `f` on a fresh glommio executor, with `RUST_LOG` logs.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}
