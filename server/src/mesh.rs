//! Cross-shard messaging: bounded channels between every pair of shards, batched.
//!
//! Shard `i` reaches shard `j` over one glommio shared channel (`i → j`, bounded to
//! [`CHANNEL_ENVELOPES_MAX`] envelopes); `j` answers over `j → i`. Each channel item is an
//! *envelope*: a `Vec` of [`Message`]s. A message joins the outbox of its destination; the
//! first message into an empty outbox starts a flush task that yields once (so every task the
//! same poll made ready can add its messages), then sends everything queued as one envelope,
//! and repeats while messages keep coming. Many messages therefore cross per channel operation
//! and per wake-up of the other core.
//!
//! Bounds: each shard has at most [`REQUESTS_IN_FLIGHT_MAX`] requests outstanding towards
//! each other shard (a semaphore permit travels with each request and is returned with its
//! reply), so the outboxes, and the replies queued towards a shard, are bounded too.
//!
//! The receiving side executes each request in its own task (writes share the engine's group
//! commit) and queues the reply towards the requester.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use corekv_proto::{ErrorCode, Op, OpError, OpResult};
use futures::channel::oneshot;
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use glommio::sync::{Semaphore, StaticPermit};

use crate::counters::{self, Counters};

/// Capacity of each shard-to-shard channel, in envelopes.
pub const CHANNEL_ENVELOPES_MAX: usize = 1024;
/// Most requests one shard has outstanding towards one other shard.
pub const REQUESTS_IN_FLIGHT_MAX: u64 = 16 * 1024;

/// Work one shard asks another to do.
#[derive(Debug)]
pub enum Work {
    /// Execute these operations locally (their keys are owned by the receiver; a scan covers
    /// only the receiver's keys) and answer one result each.
    Ops(Vec<Op>),
    /// Report the receiver's counters.
    Stats,
    /// Report the receiver's counters and metrics (a Prometheus scrape).
    Metrics,
    /// In a cluster: report the receiver's leader and replicas (`topology`).
    Replicas,
    /// In a cluster: serve this peer connection, accepted for the receiver's Raft group by
    /// the shard that listens for peers.
    PeerConnection(crate::replication::replica::PeerConnection),
    /// In a cluster: make this node the leader of the receiver's group (`transferLeader`).
    TransferLeader(u64),
}

/// The answer to a [`Work`].
#[derive(Debug)]
pub enum WorkResult {
    /// One result per operation, in order.
    Ops(Vec<OpResult>),
    /// The receiver's counters.
    Stats(Vec<(&'static str, u64)>),
    /// The receiver's counters and metrics.
    Metrics(Box<crate::metrics::ShardSnapshot>),
    /// The receiver's leader (0: none known) and replicas.
    Replicas(u64, Vec<corekv_proto::ReplicaInfo>),
    /// The work is taken.
    Done,
    /// How a leader transfer ended.
    Transferred(Result<(), OpError>),
}

/// One message on a channel.
#[derive(Debug)]
pub enum Message {
    /// A request; the reply carries the same id.
    Request {
        /// Chosen by the requester, unique among its outstanding requests.
        id: u64,
        /// What to do.
        work: Work,
    },
    /// A reply to a request the destination sent.
    Reply {
        /// The request's id.
        id: u64,
        /// The outcome.
        result: WorkResult,
    },
}

/// A channel item: every message one flush had queued for one destination.
pub type Envelope = Vec<Message>;

/// The unconnected channel ends of one shard, made on the launching thread and moved into the
/// shard's executor.
pub struct MeshEnds {
    /// `senders[j]`: this shard → shard `j` (`None` for itself).
    senders: Vec<Option<SharedSender<Envelope>>>,
    /// `receivers[j]`: shard `j` → this shard (`None` for itself).
    receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Makes the channels of a full mesh of `shard_count` shards; element `i` goes to shard `i`.
pub fn build(shard_count: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shard_count)
        .map(|_| MeshEnds {
            senders: (0..shard_count).map(|_| None).collect(),
            receivers: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(CHANNEL_ENVELOPES_MAX);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

struct Peer {
    sender: ConnectedSender<Envelope>,
    outbox: RefCell<Vec<Message>>,
    flush_scheduled: Cell<bool>,
    permits: Rc<Semaphore>,
}

struct Pending {
    peer: usize,
    reply: oneshot::Sender<WorkResult>,
    _permit: StaticPermit,
}

/// This shard's side of the mesh.
pub struct Mesh {
    me: usize,
    peers: Vec<Option<Peer>>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, Pending>>,
    counters: Rc<Counters>,
}

/// A receiving end, drained by a task of the shard (`launch.rs`'s `receive_loop`).
pub type Inbound = (usize, ConnectedReceiver<Envelope>);

impl Mesh {
    /// Connects this shard's channel ends. Every shard must call this concurrently (each end
    /// waits for its peer). Returns the mesh and the receivers to drain.
    pub async fn connect(
        me: usize,
        ends: MeshEnds,
        counters: Rc<Counters>,
    ) -> (Rc<Mesh>, Vec<Inbound>) {
        let MeshEnds { senders, receivers } = ends;
        let senders = futures::future::join_all(senders.into_iter().map(|s| async move {
            match s {
                Some(s) => Some(s.connect().await),
                None => None,
            }
        }));
        let receivers =
            futures::future::join_all(receivers.into_iter().enumerate().map(|(j, r)| async move {
                match r {
                    Some(r) => Some((j, r.connect().await)),
                    None => None,
                }
            }));
        let (senders, receivers) = futures::join!(senders, receivers);
        let peers = senders
            .into_iter()
            .map(|s| {
                s.map(|sender| Peer {
                    sender,
                    outbox: RefCell::new(Vec::new()),
                    flush_scheduled: Cell::new(false),
                    permits: Rc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
                })
            })
            .collect();
        let mesh = Rc::new(Mesh {
            me,
            peers,
            next_id: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
            counters,
        });
        (mesh, receivers.into_iter().flatten().collect())
    }

    /// Sends `work` to shard `peer` and waits for its result. Fails (typed) only if that shard
    /// is gone.
    pub async fn request(self: &Rc<Self>, peer: usize, work: Work) -> Result<WorkResult, OpError> {
        let link = self.peer(peer)?;
        let permit = link
            .permits
            .acquire_static_permit(1)
            .await
            .map_err(|_| shard_gone(peer))?;
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let (reply, result) = oneshot::channel();
        let previous = self.pending.borrow_mut().insert(
            id,
            Pending {
                peer,
                reply,
                _permit: permit,
            },
        );
        debug_assert!(previous.is_none(), "request id {id} reused");
        self.push(peer, Message::Request { id, work });
        // If this future is dropped (the client went away), the entry stays until the reply
        // arrives and is then discarded: nothing leaks.
        result.await.map_err(|_| shard_gone(peer))
    }

    /// Queues a reply to shard `peer`'s request `id`.
    pub fn reply(self: &Rc<Self>, peer: usize, id: u64, result: WorkResult) {
        self.push(peer, Message::Reply { id, result });
    }

    /// Completes a request of ours with the reply shard `peer` sent.
    pub fn complete(&self, peer: usize, id: u64, result: WorkResult) {
        let pending = self.pending.borrow_mut().remove(&id);
        match pending {
            Some(p) => {
                debug_assert_eq!(p.peer, peer, "reply to request {id} from the wrong shard");
                // The requester may have given up; its permit is returned either way.
                let _ = p.reply.send(result);
            }
            None => tracing::error!(shard = self.me, peer, id, "reply to an unknown request"),
        }
    }

    /// Fails every request outstanding towards `peer` (its channel closed).
    pub fn fail_peer(&self, peer: usize) {
        let mut pending = self.pending.borrow_mut();
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.peer == peer)
            .map(|(&id, _)| id)
            .collect();
        // Dropping the entries drops their reply senders: the requesters see the shard gone.
        for id in ids {
            pending.remove(&id);
        }
        if let Some(Some(link)) = self.peers.get(peer) {
            link.permits.close();
        }
    }

    /// Requests outstanding towards other shards (for tests and shutdown checks).
    pub fn outstanding(&self) -> usize {
        self.pending.borrow().len()
    }

    fn peer(&self, peer: usize) -> Result<&Peer, OpError> {
        match self.peers.get(peer) {
            Some(Some(link)) => Ok(link),
            _ => Err(OpError::new(
                ErrorCode::Internal,
                format!("shard {} has no channel to shard {peer}", self.me),
            )),
        }
    }

    fn push(self: &Rc<Self>, peer: usize, message: Message) {
        let Ok(link) = self.peer(peer) else {
            tracing::error!(
                shard = self.me,
                peer,
                "message for a shard without a channel"
            );
            return;
        };
        link.outbox.borrow_mut().push(message);
        if !link.flush_scheduled.replace(true) {
            let me = Rc::clone(self);
            glommio::spawn_local(async move { me.flush(peer).await }).detach();
        }
    }

    /// Sends everything queued for `peer`, one envelope per round, until the outbox stays
    /// empty.
    async fn flush(self: Rc<Self>, peer: usize) {
        // Let every task made ready by the same wake-up queue its messages first.
        glommio::executor().yield_now().await;
        let Ok(link) = self.peer(peer) else {
            return;
        };
        loop {
            let envelope = link.outbox.take();
            if envelope.is_empty() {
                link.flush_scheduled.set(false);
                return;
            }
            counters::incr(&self.counters.cross_shard_batches_sent_total);
            counters::add(
                &self.counters.cross_shard_messages_sent_total,
                envelope.len() as u64,
            );
            if let Err(e) = link.sender.send(envelope).await {
                // The peer's executor is gone (it failed): fail what we asked of it.
                tracing::error!(shard = self.me, peer, error = %e, "cross-shard channel closed");
                self.fail_peer(peer);
                link.outbox.borrow_mut().clear();
                link.flush_scheduled.set(false);
                return;
            }
        }
    }
}

fn shard_gone(peer: usize) -> OpError {
    OpError::new(
        ErrorCode::Internal,
        format!(
            "shard {peer} stopped answering (its executor failed); the operation's outcome is \
             unknown: check the server log"
        ),
    )
}
