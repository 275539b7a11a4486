//! [`Group`]: one shard's Raft group on this node — a raft-rs `RawNode` over the shard's
//! [`RaftLog`], driven by one task on the shard's executor, applying committed entries to
//! the shard's [`Engine`] (opened with `Engine::open_applying`).
//!
//! ## The loop
//! Everything that touches the `RawNode` arrives as an [`Event`] on one channel (peer
//! messages, proposals, read barriers, ticks), so the node is only used between awaits of
//! one task. Each turn takes every queued event, then handles one `Ready` as raft-rs asks.
//! Usually (see [`persist`]) it sends the leader's messages, queues the entries in the log's
//! WAL without waiting, applies the committed entries it carries, and goes on: the messages
//! that wait for durability (a follower's acknowledgements) go out once the WAL synced the
//! entries, so appends overlap and proposals that arrive meanwhile are sent at once. A turn
//! with a new term or vote, a snapshot or a conflicting suffix first waits for what is
//! queued, then appends and waits, records the hard state, sends, `advance`s and applies what
//! that commits.
//!
//! ## Entries
//! A normal entry's data is `time_ms u64 LE | command`: the proposer's clock, which every
//! replica uses to judge the command's TTLs, then a command that the [`ApplyFn`] applies to
//! the engine and answers (its answer is deterministic: every replica computes the same one,
//! and the proposer's waiter gets it). Empty entries (a new leader's) write nothing.
//!
//! ## Outcomes of a proposal
//! `Ok(answer)` once applied here; [`ProposeError::NotLeader`] (nothing proposed);
//! [`ProposeError::Dropped`] when another leader's entry took its index (definitely not
//! applied); [`ProposeError::Superseded`] when a snapshot from another leader replaced the
//! log past it (outcome unknown); [`ProposeError::TimedOut`] after the request timeout and
//! [`ProposeError::Stopped`] when the group stopped first (outcome unknown);
//! [`ProposeError::Closed`] when it had stopped before the proposal reached it (not proposed);
//! [`ProposeError::Overloaded`] when the leader already holds its bound of uncommitted entries
//! (not proposed).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use corekv_storage::Engine;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use raft::eraftpb::{EntryType, Message, MessageType};
use raft::{Config, RawNode, ReadOnlyOption, StateRole};

mod apply;
mod persist;
mod reads;
mod settings;
mod transfer;

use apply::apply_entries;
use reads::{answer_reads, barrier, record_read_states, settle_reads};
pub use settings::{GroupConfig, GroupCounts, ProposeError};
use settings::{count, count_append, latency_histogram, quantiles, record_latency};

use super::log_store::RaftLog;
use super::snapshot::Snapshots;

/// Applies one command to the engine (inside the entry's `begin_entry`/`end_entry`) and
/// returns its answer. Must be deterministic: every replica applies the same commands to
/// the same state. `Err` when this replica could not apply it (its storage failed): the
/// entry is not marked applied and the group stops, so the replica never goes on from a
/// state the others do not have.
pub type ApplyFn = Rc<dyn Fn(Engine, Bytes) -> LocalBoxFuture<'static, Result<Vec<u8>, String>>>;

/// Bytes at the start of an entry's data: the proposer's time (ms, little-endian).
pub const ENTRY_TIME_BYTES: usize = 8;

/// Sends messages to peers (best effort: Raft retries what is lost).
pub type SendFn = Rc<dyn Fn(Vec<Message>)>;

enum Event {
    Message(Box<Message>),
    /// A `MsgSnapshot` whose files arrived whole (see [`super::snapshot`]).
    Snapshot(Box<Message>, PathBuf),
    /// Whether sending a snapshot to a peer succeeded.
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// An entry's data: room for its time, then the command.
    Propose(Vec<u8>, Waiter),
    ReadBarrier(ReadWaiter),
    /// Hand the leadership to this node (answered once asked of raft-rs).
    TransferLeader(u64, ReadWaiter),
    /// The appends of the turns up to this `Ready` number are durable, and their messages
    /// sent (see [`persist`]); an error when the log failed.
    Persisted(Result<u64, String>),
    Tick,
    Stop,
}

type Waiter = oneshot::Sender<Result<Vec<u8>, ProposeError>>;
type ReadWaiter = oneshot::Sender<Result<(), ProposeError>>;

struct Inner {
    config: GroupConfig,
    node: RefCell<RawNode<RaftLog>>,
    log: RaftLog,
    engine: Engine,
    apply: ApplyFn,
    send: SendFn,
    events: mpsc::UnboundedSender<Event>,
    /// Proposals by entry index: (term the entry was proposed in, waiter, when proposed).
    proposals: RefCell<BTreeMap<u64, (u64, Waiter, Instant)>>,
    /// Read barriers asked of Raft, by context number, with when they were asked.
    reads: RefCell<HashMap<u64, (ReadWaiter, Instant)>>,
    /// Read barriers confirmed at an index, waiting for it to be applied.
    reads_at: RefCell<Vec<(u64, ReadWaiter)>>,
    /// Read barriers asked of a new leader before it committed an entry of its term (raft-rs
    /// drops ReadIndex requests until then): asked once it has.
    reads_waiting_commit: RefCell<Vec<ReadWaiter>>,
    /// The term the barriers in `reads` were asked in: a leader that lost its leadership and
    /// won it back in between dropped them.
    reads_term: Cell<u64>,
    next_read: Cell<u64>,
    /// Lease reads: (term, until when) this leader may answer reads without asking.
    lease: Cell<Option<(u64, Instant)>>,
    /// A term in which this leader started a leader transfer: it reads no lease in it.
    lease_off_term: Cell<u64>,
    /// When the group started: with lease reads it votes for no one during its first
    /// election timeout (it may have confirmed a leader's lease just before a restart).
    started: Instant,
    /// What the group counts about its work.
    counts: Cell<GroupCounts>,
    /// Microseconds from a proposal to its answer on this leader (committed and applied).
    commit_latency_us: RefCell<hdrhistogram::Histogram<u64>>,
    /// From queueing a turn's entries in the log to their being durable, in µs.
    log_sync_latency_us: RefCell<hdrhistogram::Histogram<u64>>,
    applied: Cell<u64>,
    stopped: Cell<bool>,
    /// Makes, sends and installs snapshots (none: a group that cannot, as in tests).
    snapshots: RefCell<Option<Rc<Snapshots>>>,
    /// Turns whose appends are not known durable yet, in order.
    persisting: RefCell<persist::Queue>,
}

/// A handle to a running group. Cheap to clone.
#[derive(Clone)]
pub struct Group {
    inner: Rc<Inner>,
}

/// What a group reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    /// Leader, follower, candidate.
    pub role: StateRole,
    /// The leader this replica knows of (0 = none).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Last entry applied to the engine.
    pub applied: u64,
    /// (first, last) entry in the log.
    pub log_bounds: (u64, u64),
}

impl Group {
    /// Starts the group of `engine` (opened applying an external log) over `log`, and its
    /// loop and ticker tasks on the current executor.
    pub fn start(
        config: GroupConfig,
        log: RaftLog,
        engine: Engine,
        apply: ApplyFn,
        send: SendFn,
    ) -> Result<Group, raft::Error> {
        let applied = engine.flushed_log_index();
        let raft_config = Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: config.max_uncommitted_bytes,
            // Proposals taken in one turn go to each follower in one append message.
            batch_append: true,
            // A follower learns a commit from the next append or heartbeat, not from an empty
            // append of its own: one round of messages (and wakeups) per write instead of two.
            // Followers serve no reads, so applying a round later costs nothing.
            skip_bcast_commit: true,
            ..Config::default()
        };
        let logger = super::slog_bridge::logger(config.node_id, config.shard);
        let node = RawNode::new(&raft_config, log.clone(), &logger)?;
        // A replica starts as a follower (see `handle_ready`): what it flushes while it
        // replays its log or hears no leader does not fill the cache.
        engine.set_block_cache_fill(false);
        let (events, rx) = mpsc::unbounded();
        let inner = Rc::new(Inner {
            node: RefCell::new(node),
            log,
            engine,
            apply,
            send,
            events,
            proposals: RefCell::default(),
            reads: RefCell::default(),
            reads_at: RefCell::default(),
            reads_waiting_commit: RefCell::default(),
            reads_term: Cell::new(0),
            next_read: Cell::new(1),
            lease: Cell::new(None),
            lease_off_term: Cell::new(0),
            started: Instant::now(),
            counts: Cell::default(),
            commit_latency_us: RefCell::new(latency_histogram()?),
            log_sync_latency_us: RefCell::new(latency_histogram()?),
            applied: Cell::new(applied),
            stopped: Cell::new(false),
            snapshots: RefCell::new(None),
            persisting: RefCell::default(),
            config,
        });
        glommio::spawn_local(run(inner.clone(), rx)).detach();
        glommio::spawn_local(tick(Rc::downgrade(&inner))).detach();
        Ok(Group { inner })
    }

    /// Hands a message from a peer to the group.
    pub fn step(&self, message: Message) {
        let _ = self
            .inner
            .events
            .unbounded_send(Event::Message(Box::new(message)));
    }

    /// Hands a `MsgSnapshot` whose files have arrived (and are kept by the group's
    /// [`Snapshots`]) to the group.
    pub fn step_snapshot(&self, message: Message, dir: PathBuf) {
        let _ = self
            .inner
            .events
            .unbounded_send(Event::Snapshot(Box::new(message), dir));
    }

    /// Tells raft-rs whether the snapshot sent to `to` got there.
    pub fn report_snapshot(&self, to: u64, ok: bool) {
        let _ = self
            .inner
            .events
            .unbounded_send(Event::SnapshotSent { to, ok });
    }

    /// Lets the group make, send and install snapshots through `snapshots`. Call right after
    /// [`Group::start`], before the first await.
    pub fn set_snapshots(&self, snapshots: Rc<Snapshots>) {
        *self.inner.snapshots.borrow_mut() = Some(snapshots);
    }

    /// Proposes `command`; resolves once it is applied here (with its answer) or cannot be.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, ProposeError> {
        let mut data = vec![0; ENTRY_TIME_BYTES];
        data.extend_from_slice(&command);
        self.propose_entry(data).await
    }

    /// [`Group::propose`] of `data[ENTRY_TIME_BYTES..]`: the first [`ENTRY_TIME_BYTES`] are
    /// room for the entry's time, so the command is not copied once more to make an entry.
    pub async fn propose_entry(&self, data: Vec<u8>) -> Result<Vec<u8>, ProposeError> {
        assert!(
            data.len() >= ENTRY_TIME_BYTES,
            "an entry begins with its time"
        );
        self.ask(|tx| Event::Propose(data, tx)).await
    }

    /// Sends the loop the event `make` builds around a waiter and waits for its answer (at
    /// most the request timeout).
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ProposeError>>) -> Event,
    ) -> Result<T, ProposeError> {
        let (tx, rx) = oneshot::channel();
        if self.inner.events.unbounded_send(make(tx)).is_err() {
            return Err(ProposeError::Closed);
        }
        let timer = glommio::timer::Timer::new(self.inner.config.request_timeout);
        match futures::future::select(rx, timer).await {
            futures::future::Either::Left((answer, _)) => {
                answer.unwrap_or(Err(ProposeError::Stopped))
            }
            futures::future::Either::Right(_) => Err(ProposeError::TimedOut),
        }
    }

    /// Closes the log once the group has stopped.
    pub async fn close_log(&self) -> Result<(), super::log_store::LogError> {
        self.inner.log.close().await
    }

    /// Resolves once this replica is known to be the leader and has applied everything
    /// committed before the call (ReadIndex): a read of the engine after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        self.ask(Event::ReadBarrier).await
    }

    /// The shard (and group) number.
    pub fn shard(&self) -> u32 {
        self.inner.config.shard
    }

    /// What the group has counted since it started.
    pub fn counts(&self) -> GroupCounts {
        self.inner.counts.get()
    }

    /// The median and 99th percentile of the time from a proposal to its answer on this
    /// replica while leader (committed by a majority and applied), in microseconds; zeros
    /// before the first.
    pub fn commit_latency_us(&self) -> (u64, u64) {
        quantiles(&self.inner.commit_latency_us)
    }

    /// The median and 99th percentile of the time from queueing a turn's entries in this
    /// replica's log to their being durable, in microseconds; zeros before the first. On a
    /// follower, most of what its leader's commit waits for.
    pub fn log_sync_latency_us(&self) -> (u64, u64) {
        quantiles(&self.inner.log_sync_latency_us)
    }

    /// The group's current state.
    pub fn status(&self) -> GroupStatus {
        let node = self.inner.node.borrow();
        GroupStatus {
            role: node.raft.state,
            leader: node.raft.leader_id,
            term: node.raft.term,
            commit: node.raft.raft_log.committed,
            applied: self.inner.applied.get(),
            log_bounds: self.inner.log.bounds(),
        }
    }

    /// Stops the loop; waiters get [`ProposeError::Stopped`]. The engine and log stay open
    /// (the caller closes them).
    pub fn stop(&self) {
        let _ = self.inner.events.unbounded_send(Event::Stop);
    }

    /// Whether the loop has stopped.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.get()
    }
}

async fn tick(inner: std::rc::Weak<Inner>) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) if !inner.stopped.get() => inner.config.tick_interval,
            _ => return,
        };
        glommio::timer::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.events.unbounded_send(Event::Tick).is_err() {
            return;
        }
    }
}

async fn run(inner: Rc<Inner>, mut rx: mpsc::UnboundedReceiver<Event>) {
    let r = run_loop(&inner, &mut rx).await;
    if let Err(e) = &r {
        tracing::error!(node = inner.config.node_id, shard = inner.config.shard, error = %e,
            "the Raft group stopped on an error; this replica no longer takes part");
    }
    inner.stopped.set(true);
    rx.close();
    fail_waiters(&inner, ProposeError::Stopped);
    while let Ok(event) = rx.try_recv() {
        answer_stopped(event);
    }
}

fn answer_stopped(event: Event) {
    match event {
        Event::Propose(_, tx) => {
            let _ = tx.send(Err(ProposeError::Closed));
        }
        Event::ReadBarrier(tx) | Event::TransferLeader(_, tx) => {
            let _ = tx.send(Err(ProposeError::Closed));
        }
        _ => {}
    }
}

fn fail_waiters(inner: &Inner, error: ProposeError) {
    for (_, (_, tx, _)) in std::mem::take(&mut *inner.proposals.borrow_mut()) {
        let _ = tx.send(Err(error.clone()));
    }
    for (_, (tx, _)) in std::mem::take(&mut *inner.reads.borrow_mut()) {
        let _ = tx.send(Err(error.clone()));
    }
    for (_, tx) in std::mem::take(&mut *inner.reads_at.borrow_mut()) {
        let _ = tx.send(Err(error.clone()));
    }
    for tx in std::mem::take(&mut *inner.reads_waiting_commit.borrow_mut()) {
        let _ = tx.send(Err(error.clone()));
    }
}

async fn run_loop(
    inner: &Rc<Inner>,
    rx: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<(), String> {
    loop {
        let Some(first) = rx.next().await else {
            return Ok(());
        };
        let mut event = Some(first);
        while let Some(e) = event {
            if !handle(inner, e)? {
                return Ok(());
            }
            event = rx.try_recv().ok();
        }
        handle_ready(inner).await?;
    }
}

/// Feeds one event to the node; false on `Stop`.
fn handle(inner: &Inner, event: Event) -> Result<bool, String> {
    let mut node = inner.node.borrow_mut();
    match event {
        Event::Tick => {
            node.tick();
            if let Some(snapshots) = inner.snapshots.borrow().as_ref() {
                snapshots.remove_left_dirs();
            }
        }
        Event::Message(m)
            if m.get_msg_type() == MessageType::MsgTimeoutNow && m.from != node.raft.leader_id =>
        {
            // A transfer's order to campaign from a leader this replica no longer (or does
            // not yet) follow: the transfer times out and may be asked again.
            tracing::debug!(
                from = m.from,
                "refused an order to campaign from a non-leader"
            );
        }
        Event::Message(m) if !acceptable_from_peer(&m) => {
            tracing::warn!(from = m.from, msg_type = ?m.get_msg_type(),
                "refused a peer message of a type peers never send, or carrying a \
                 configuration-change entry");
        }
        Event::Snapshot(m, dir) => {
            let meta = m.get_snapshot().get_metadata();
            let (index, term) = (meta.index, meta.term);
            if let Err(e) = node.step(*m) {
                tracing::debug!(error = %e, "snapshot message not taken");
            }
            // Taken, it waits in raft-rs until the next `Ready` installs it; refused (entries
            // this replica holds, a deposed leader's), its files go now (this copy's only:
            // another leader's may have the same index and term).
            let taken = node
                .raft
                .raft_log
                .unstable
                .snapshot
                .as_ref()
                .is_some_and(|s| (s.get_metadata().index, s.get_metadata().term) == (index, term));
            if !taken && let Some(snapshots) = inner.snapshots.borrow().as_ref() {
                snapshots.discard(&dir);
            }
        }
        Event::SnapshotSent { to, ok } => {
            let status = if ok {
                raft::SnapshotStatus::Finish
            } else {
                raft::SnapshotStatus::Failure
            };
            node.report_snapshot(to, status);
        }
        Event::Message(m)
            if inner.config.lease.is_some()
                && matches!(
                    m.get_msg_type(),
                    MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                )
                && inner.started.elapsed() < inner.config.election_timeout() =>
        {
            // Before a restart this replica may have confirmed a leader's lease; raft-rs,
            // knowing no leader now, would vote at once and let another leader be elected
            // while that lease runs.
            tracing::debug!(from = m.from, "no vote during the first election timeout");
        }
        Event::Message(m) => {
            // A message from a stale term or an unknown peer is refused by raft-rs; that is
            // not this replica's failure.
            if let Err(e) = node.step(*m) {
                tracing::debug!(error = %e, "Raft message not taken");
            }
        }
        Event::Propose(command, tx) => {
            if node.raft.state != StateRole::Leader {
                let leader = (node.raft.leader_id != 0).then_some(node.raft.leader_id);
                let _ = tx.send(Err(ProposeError::NotLeader { leader }));
                return Ok(true);
            }
            if node.raft.lead_transferee.is_some() {
                // raft-rs drops proposals while it hands over. No leader to name: the
                // transferee leads only once elected, and naming it (or this replica) sends
                // clients back and forth; "retry shortly" finds the new one in a few ms.
                let _ = tx.send(Err(ProposeError::NotLeader { leader: None }));
                return Ok(true);
            }
            let mut data = command;
            data[..ENTRY_TIME_BYTES]
                .copy_from_slice(&corekv_storage::Clock::system().now_ms().to_le_bytes());
            let before = node.raft.raft_log.last_index();
            match node.propose(Vec::new(), data) {
                Ok(()) => {
                    let index = node.raft.raft_log.last_index();
                    assert_eq!(index, before + 1, "one proposal, one entry");
                    inner
                        .proposals
                        .borrow_mut()
                        .insert(index, (node.raft.term, tx, Instant::now()));
                }
                Err(_) => {
                    // raft-rs refuses a leader's proposal only past `max_uncommitted_size`
                    // (not leading and handing over were answered above).
                    let _ = tx.send(Err(ProposeError::Overloaded));
                }
            }
        }
        Event::Persisted(Err(error)) => {
            return Err(format!("the Raft log failed: {error}"));
        }
        Event::Persisted(Ok(number)) => node.on_persist_ready(number),
        Event::ReadBarrier(tx) => barrier(inner, &mut node, tx),
        Event::TransferLeader(to, tx) => transfer::start(inner, &mut node, to, tx),
        Event::Stop => return Ok(false),
    }
    Ok(true)
}

/// Whether a peer may send `m`: only what raft-rs replicas send each other in this cluster
/// (appends, heartbeats, votes, a transfer's order to campaign, and their answers). Refused
/// before raft-rs sees them: proposals and leader transfers (a follower refuses them instead
/// of forwarding), ReadIndex requests (only a leader asks, of itself), local-only types, and
/// configuration changes, which are never proposed (raft-rs decodes their data as protobuf,
/// which must never be fed bytes from the network). A snapshot comes only on its own
/// connection, after its files ([`Event::Snapshot`]).
fn acceptable_from_peer(m: &Message) -> bool {
    use MessageType::*;
    matches!(
        m.get_msg_type(),
        MsgAppend
            | MsgAppendResponse
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgTimeoutNow
    ) && m
        .entries
        .iter()
        .all(|e| e.get_entry_type() == EntryType::EntryNormal)
}

async fn handle_ready(inner: &Rc<Inner>) -> Result<(), String> {
    let (mut ready, leading) = {
        let mut node = inner.node.borrow_mut();
        if !node.has_ready() {
            return Ok(());
        }
        let leading = node.raft.state == StateRole::Leader;
        (node.ready(), leading)
    };
    send(inner, ready.take_messages());
    if let Some(ss) = ready.ss() {
        // Only the leader serves reads: tables written while this replica follows do not
        // take memory (and its page faults) in the block cache. Reads after a failover warm
        // the new leader's cache from disk.
        inner
            .engine
            .set_block_cache_fill(ss.raft_state == StateRole::Leader);
    }
    if persist::can_defer(inner, &ready) {
        persist::defer(inner, &mut ready)?;
        // raft-rs hands only entries this replica holds durably as committed.
        let committed = ready.take_committed_entries();
        record_read_states(inner, ready.take_read_states());
        inner.node.borrow_mut().advance_append_async(ready);
        if !committed.is_empty() {
            // Glommio submits queued I/O only when it polls, between task-queue slices: a
            // short sleep lets the append's write start before the apply, not after it.
            glommio::timer::sleep(std::time::Duration::from_micros(1)).await;
        }
        apply_entries(inner, committed).await?;
        inner.node.borrow_mut().advance_apply();
    } else {
        persist::drain(inner).await?;
        if !ready.snapshot().is_empty() {
            let meta = ready.snapshot().get_metadata();
            let (index, term) = (meta.index, meta.term);
            let snapshots = inner.snapshots.borrow().clone();
            let Some(snapshots) = snapshots else {
                return Err("Raft accepted a snapshot, and this group takes none".into());
            };
            snapshots.install(index, term).await?;
            inner.applied.set(index);
            // Proposals of this replica's leadership that the snapshot covers are never applied
            // one by one here: their outcome is in the snapshot, unknown to this replica.
            let covered = {
                let mut proposals = inner.proposals.borrow_mut();
                let rest = proposals.split_off(&(index + 1));
                std::mem::replace(&mut *proposals, rest)
            };
            for (_, (_, tx, _)) in covered {
                let _ = tx.send(Err(ProposeError::Superseded));
            }
        }
        // A leader answers clients for what it applies, before its next append; a follower
        // answers only its leader, whose commit waits for the append's acknowledgement: it
        // appends and acknowledges first, and applies after.
        let committed = ready.take_committed_entries();
        let committed = if leading {
            apply_entries(inner, committed).await?;
            Vec::new()
        } else {
            committed
        };
        let entries = ready.take_entries();
        count_append(inner, entries.len());
        let queued = (!entries.is_empty()).then(Instant::now);
        inner.log.append(entries).await.map_err(|e| e.to_string())?;
        if let Some(queued) = queued {
            record_latency(&inner.log_sync_latency_us, queued);
        }
        if let Some(hs) = ready.hs() {
            inner
                .log
                .set_hard_state(hs)
                .await
                .map_err(|e| e.to_string())?;
        }
        send(inner, ready.take_persisted_messages());
        apply_entries(inner, committed).await?;
        record_read_states(inner, ready.take_read_states());
        let mut light = inner.node.borrow_mut().advance(ready);
        if let Some(commit) = light.commit_index() {
            inner.log.set_commit(commit);
        }
        send(inner, light.take_messages());
        apply_entries(inner, light.take_committed_entries()).await?;
        inner.node.borrow_mut().advance_apply();
    }
    answer_reads(inner);
    settle_reads(inner);
    if inner.log.take_snapshot_wanted() {
        let snapshots = inner.snapshots.borrow().clone();
        if let Some(snapshots) = snapshots {
            // A checkpoint that cannot be made (a full disk) must not stop the group: the
            // follower waits, and raft-rs asks again.
            if let Err(e) = snapshots.prepare().await {
                tracing::warn!(error = %e, "could not make a checkpoint for a snapshot");
            }
        }
    }
    compact(inner);
    Ok(())
}

/// Sends messages to peers; a `MsgSnapshot` goes with its files on a connection of its own.
fn send(inner: &Inner, messages: Vec<Message>) {
    for m in &messages {
        if m.get_msg_type() == MessageType::MsgAppend && !m.entries.is_empty() {
            let n = m.entries.len() as u64;
            count(inner, |c| {
                c.append_messages += 1;
                c.append_message_entries += n;
            });
        }
    }
    let snapshots = inner.snapshots.borrow().clone();
    let Some(snapshots) = snapshots else {
        (inner.send)(messages);
        return;
    };
    let (snaps, rest): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .partition(|m| m.get_msg_type() == MessageType::MsgSnapshot);
    (inner.send)(rest);
    for m in snaps {
        snapshots.send(m);
    }
}

/// Drops log entries the engine's tables hold, keeping behind them, for followers that lag,
/// at most `log_retain_entries` entries and `log_retain_bytes`: with many writes per entry
/// the count alone would keep gigabytes in memory.
fn compact(inner: &Inner) {
    let flushed = inner.engine.flushed_log_index();
    let mut upto = inner.log.compaction_point(
        flushed,
        inner.config.log_retain_entries,
        inner.config.log_retain_bytes,
    );
    // A snapshot being sent needs the entries after it.
    let pinned = inner
        .snapshots
        .borrow()
        .as_ref()
        .and_then(|s| s.pinned_index());
    if let Some(pinned) = pinned {
        upto = upto.min(pinned);
    }
    inner.log.compact(upto);
}
