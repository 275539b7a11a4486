//! Raft messages between nodes over TCP: a shard's [`Transport`] sends its group's messages
//! to the other nodes, and [`serve_peer`] reads what another node sends.
//!
//! ## Connections
//! Each node dials one connection per (peer node, shard) and only ever writes on it; the
//! messages that peer sends back travel on the peer's own outbound connection. Neither side
//! ever has to choose between two connections dialled at once, and a connection's direction
//! says who speaks on it, so the reader can check that nobody speaks for someone else.
//! The bytes are the frames of [`super::wire`] (documented there): a `Hello` naming cluster,
//! sender, receiver and shard, then `Messages` frames.
//!
//! ## Sending never waits
//! [`Transport::send`] puts each message in its destination's bounded queue and returns; one
//! task per peer drains its queue onto the connection, taking everything queued as one batch.
//! A full queue drops the message (counted): Raft retransmits what is lost, so a slow or dead
//! peer costs a bounded amount of memory and never holds back the group or the other peers.
//! While disconnected, a peer's task retries with exponential backoff and keeps its queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{Either, select};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use raft::eraftpb::Message;

mod inbound;

pub use inbound::{
    Expected, HELLO_TIMEOUT, INBOUND_BUFFER_RETAIN_BYTES, PeerInbox, SNAPSHOT_IDLE_TIMEOUT,
    accept_hello, bind_peer_listener, serve_after_hello, serve_peer,
};

use super::group::SendFn;
use super::wire::{
    Hello, MessagesFrame, NodeInfo, PEER_PROTOCOL_VERSION, WireError, build_messages, encode_hello,
    encode_node_info,
};

/// Frames up to this size are copied into one buffer and written at once.
const SMALL_FRAME_BYTES: usize = 64 << 10;

/// Default [`TransportConfig::queue_messages_max`]: a few `Ready`s' worth of messages. A
/// healthy peer's queue is drained at every turn of the group's loop, so it rarely holds
/// more than one batch.
pub const DEFAULT_QUEUE_MESSAGES_MAX: usize = 4096;
/// Default [`TransportConfig::queue_bytes_max`]: appends carry entries, so the count alone
/// does not bound memory.
pub const DEFAULT_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Default [`TransportConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default [`TransportConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`TransportConfig::backoff_min`].
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Default [`TransportConfig::backoff_max`].
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a queued message is counted as besides its payloads, in bytes (its fixed fields and
/// the queue's slot); see [`queued_bytes`].
const MESSAGE_OVERHEAD_BYTES: usize = 128;
/// The same for each entry a message carries.
const ENTRY_OVERHEAD_BYTES: usize = 48;

/// Settings of one shard's transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's Raft id.
    pub node_id: u64,
    /// The shard whose group this transport carries.
    pub shard: u32,
    /// This node's number of shards, carried in every `Hello` (a node with another refuses).
    pub shard_count: u32,
    /// Carried in every `Hello`; a node of another cluster refuses the connection.
    pub cluster_id: u64,
    /// The other nodes: Raft id and peer address (where their peer listener is).
    pub peers: Vec<(u64, SocketAddr)>,
    /// Most messages queued for one peer; more are dropped.
    pub queue_messages_max: usize,
    /// Most payload bytes (entries, contexts, snapshot data, plus a fixed cost per message)
    /// queued for one peer; more are dropped. One message is always accepted into an empty
    /// queue, however large, or it could never be sent.
    pub queue_bytes_max: usize,
    /// Longest wait for a connection to be accepted.
    pub connect_timeout: Duration,
    /// Longest a write may wait for the peer to read (a peer that stops reading is treated
    /// as gone: the connection is closed and dialled again).
    pub write_timeout: Duration,
    /// First pause after a failed connection, doubled at each failure in a row.
    pub backoff_min: Duration,
    /// Longest pause between attempts. A connection that breaks sooner than this after it
    /// was made (a peer that refuses this node's `Hello`) counts as a failure too.
    pub backoff_max: Duration,
    /// This node's client address, told to every peer after the `Hello` (none: not told).
    pub client_address: Option<String>,
}

impl TransportConfig {
    /// The settings with the default limits and timings.
    pub fn new(
        node_id: u64,
        (shard, shard_count): (u32, u32),
        cluster_id: u64,
        peers: Vec<(u64, SocketAddr)>,
    ) -> TransportConfig {
        TransportConfig {
            node_id,
            shard,
            shard_count,
            cluster_id,
            peers,
            queue_messages_max: DEFAULT_QUEUE_MESSAGES_MAX,
            queue_bytes_max: DEFAULT_QUEUE_BYTES_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            client_address: None,
        }
    }
}

/// What a transport has done since it started (all peers together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages written to a connection.
    pub messages_sent: u64,
    /// Messages dropped because their peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they were addressed to a node this transport does not know.
    pub dropped_unknown_peer: u64,
    /// Messages dropped because even alone they do not fit in a frame.
    pub dropped_too_large: u64,
    /// Messages taken from a queue whose write failed (the connection broke under them).
    pub dropped_send_failed: u64,
    /// Connections made (TCP connected and `Hello` written).
    pub connects: u64,
    /// Attempts to connect that failed.
    pub connect_failures: u64,
    /// `Messages` frames written.
    pub frames_sent: u64,
    /// Bytes written, `Hello` frames included.
    pub bytes_sent: u64,
    /// Messages waiting in the queues now.
    pub messages_queued: u64,
}

#[derive(Default)]
struct Counters {
    messages_sent: Cell<u64>,
    dropped_queue_full: Cell<u64>,
    dropped_unknown_peer: Cell<u64>,
    dropped_too_large: Cell<u64>,
    dropped_send_failed: Cell<u64>,
    connects: Cell<u64>,
    connect_failures: Cell<u64>,
    frames_sent: Cell<u64>,
    bytes_sent: Cell<u64>,
}

fn add(counter: &Cell<u64>, n: u64) {
    counter.set(counter.get().wrapping_add(n));
}

/// One peer's outbound queue, shared by [`Transport::send`] (which fills it) and the peer's
/// sender task (which drains it).
struct PeerQueue {
    node_id: u64,
    addr: SocketAddr,
    messages: RefCell<VecDeque<Message>>,
    /// [`queued_bytes`] of what `messages` holds.
    bytes: Cell<usize>,
    /// The sender task, when it waits for messages.
    waker: RefCell<Option<Waker>>,
}

impl PeerQueue {
    /// Queues `m` unless that would pass a limit; false if it was dropped.
    fn push(&self, m: Message, messages_max: usize, bytes_max: usize) -> bool {
        let size = queued_bytes(&m);
        let mut messages = self.messages.borrow_mut();
        let full = messages.len() >= messages_max
            || (!messages.is_empty() && self.bytes.get().saturating_add(size) > bytes_max);
        if full {
            return false;
        }
        messages.push_back(m);
        self.bytes.set(self.bytes.get() + size);
        debug_assert!(messages.len() <= messages_max.max(1));
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
        true
    }

    /// Everything queued, oldest first.
    fn take_all(&self) -> Vec<Message> {
        self.bytes.set(0);
        Vec::from(std::mem::take(&mut *self.messages.borrow_mut()))
    }

    /// Resolves once the queue holds a message.
    fn non_empty(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.messages.borrow().is_empty() {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }
}

/// Bytes `m` is counted as in its queue: its payloads plus a fixed cost per message and
/// entry. Not exact (the frame adds a little), only proportional to what it holds.
fn queued_bytes(m: &Message) -> usize {
    let entries: usize = m
        .entries
        .iter()
        .map(|e| ENTRY_OVERHEAD_BYTES + e.data.len() + e.context.len())
        .sum();
    let snapshot = if m.has_snapshot() {
        m.get_snapshot().data.len()
    } else {
        0
    };
    MESSAGE_OVERHEAD_BYTES + m.context.len() + entries + snapshot
}

struct Shared {
    node_id: u64,
    shard: u32,
    queue_messages_max: usize,
    queue_bytes_max: usize,
    /// At most a handful of peers (a cluster's nodes): a scan beats hashing.
    peers: Vec<Rc<PeerQueue>>,
    counters: Rc<Counters>,
    /// Dropped with the transport: each peer task waits on the other end and stops.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Shared {
    fn send(&self, messages: Vec<Message>) {
        for m in messages {
            let Some(peer) = self.peers.iter().find(|p| p.node_id == m.to) else {
                add(&self.counters.dropped_unknown_peer, 1);
                tracing::debug!(
                    node = self.node_id,
                    shard = self.shard,
                    to = m.to,
                    "dropped a Raft message for a node that is not a peer"
                );
                continue;
            };
            if !peer.push(m, self.queue_messages_max, self.queue_bytes_max) {
                add(&self.counters.dropped_queue_full, 1);
            }
        }
    }
}

/// One shard's connections to the other nodes. Lives on the shard's executor (`!Send`);
/// dropping it stops its tasks and closes its connections.
pub struct Transport {
    shared: Rc<Shared>,
}

impl Transport {
    /// Starts one sender task per peer on the current executor. Peers with this node's id,
    /// or an id given twice, are left out (and logged).
    pub fn start(config: TransportConfig) -> Transport {
        let counters = Rc::new(Counters::default());
        let mut peers: Vec<Rc<PeerQueue>> = Vec::with_capacity(config.peers.len());
        let mut stops = Vec::with_capacity(config.peers.len());
        for &(node_id, addr) in &config.peers {
            if node_id == config.node_id
                || node_id == 0
                || peers.iter().any(|p| p.node_id == node_id)
            {
                tracing::warn!(node = config.node_id, shard = config.shard, peer = node_id, %addr,
                    "left a peer out of the transport: its id is this node's, 0, or repeated");
                continue;
            }
            let peer = Rc::new(PeerQueue {
                node_id,
                addr,
                messages: RefCell::default(),
                bytes: Cell::new(0),
                waker: RefCell::default(),
            });
            let (stop_tx, stop_rx) = oneshot::channel();
            let link = Link {
                peer: Rc::clone(&peer),
                counters: Rc::clone(&counters),
                hello_frame: {
                    let mut frames = encode_hello(&Hello {
                        protocol_version: PEER_PROTOCOL_VERSION,
                        cluster_id: config.cluster_id,
                        from_node: config.node_id,
                        to_node: node_id,
                        shard: config.shard,
                        shard_count: config.shard_count,
                    });
                    if let Some(client_address) = &config.client_address {
                        frames.extend(encode_node_info(&NodeInfo {
                            client_address: client_address.clone(),
                        }));
                    }
                    frames
                },
                node_id: config.node_id,
                shard: config.shard,
                connect_timeout: config.connect_timeout,
                write_timeout: config.write_timeout,
                backoff_min: config.backoff_min,
                backoff_max: config.backoff_max.max(config.backoff_min),
            };
            glommio::spawn_local(async move {
                let work = pin!(link.run());
                // The transport dropped its end: stop, whatever the link was waiting for.
                let _ = select(work, stop_rx).await;
            })
            .detach();
            peers.push(peer);
            stops.push(stop_tx);
        }
        Transport {
            shared: Rc::new(Shared {
                node_id: config.node_id,
                shard: config.shard,
                queue_messages_max: config.queue_messages_max,
                queue_bytes_max: config.queue_bytes_max,
                peers,
                counters,
                _stop: stops,
            }),
        }
    }

    /// Queues each message for its destination (`to`) and returns at once; a message for a
    /// node that is not a peer, or for a peer whose queue is full, is dropped and counted.
    pub fn send(&self, messages: Vec<Message>) {
        self.shared.send(messages);
    }

    /// [`Transport::send`] as the group takes it. Holds the transport weakly: once the
    /// transport is dropped, what it is given is discarded.
    pub fn sender(&self) -> SendFn {
        let shared: Weak<Shared> = Rc::downgrade(&self.shared);
        Rc::new(move |messages| {
            if let Some(shared) = shared.upgrade() {
                shared.send(messages);
            }
        })
    }

    /// Messages waiting for `node`, or `None` if it is not a peer.
    pub fn queued(&self, node: u64) -> Option<usize> {
        self.shared
            .peers
            .iter()
            .find(|p| p.node_id == node)
            .map(|p| p.messages.borrow().len())
    }

    /// The counters, all peers together.
    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        TransportStats {
            messages_sent: c.messages_sent.get(),
            dropped_queue_full: c.dropped_queue_full.get(),
            dropped_unknown_peer: c.dropped_unknown_peer.get(),
            dropped_too_large: c.dropped_too_large.get(),
            dropped_send_failed: c.dropped_send_failed.get(),
            connects: c.connects.get(),
            connect_failures: c.connect_failures.get(),
            frames_sent: c.frames_sent.get(),
            bytes_sent: c.bytes_sent.get(),
            messages_queued: self
                .shared
                .peers
                .iter()
                .map(|p| p.messages.borrow().len() as u64)
                .sum(),
        }
    }
}

/// What the log last said about a link, so that each change is logged once rather than at
/// every retry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Logged {
    Nothing,
    Up,
    Down,
    /// Connections are made but closed soon after (the peer refuses this node's `Hello`).
    Flapping,
}

/// One peer's sender task: its queue, and how to reach it.
struct Link {
    peer: Rc<PeerQueue>,
    counters: Rc<Counters>,
    /// The `Hello`, then the `NodeInfo` if any: what every connection starts with.
    hello_frame: Vec<u8>,
    node_id: u64,
    shard: u32,
    connect_timeout: Duration,
    write_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl Link {
    /// Connects, sends, and on any failure waits and connects again, forever (the caller
    /// stops it by dropping this future).
    async fn run(self) {
        let (node, shard, peer, addr) =
            (self.node_id, self.shard, self.peer.node_id, self.peer.addr);
        let mut backoff = self.backoff_min;
        let mut logged = Logged::Nothing;
        loop {
            match self.connect().await {
                Err(e) => {
                    add(&self.counters.connect_failures, 1);
                    if logged != Logged::Down {
                        tracing::warn!(node, shard, peer, %addr, error = %e,
                            "cannot connect to peer; retrying in the background");
                        logged = Logged::Down;
                    } else {
                        tracing::debug!(node, shard, peer, %addr, error = %e, "connect failed");
                    }
                }
                Ok(stream) => {
                    add(&self.counters.connects, 1);
                    if matches!(logged, Logged::Nothing | Logged::Down) {
                        tracing::info!(node, shard, peer, %addr, "connected to peer");
                        logged = Logged::Up;
                    }
                    let since = Instant::now();
                    let e = self.session(stream).await;
                    if since.elapsed() >= self.backoff_max {
                        // A connection that held: the next failure starts the backoff afresh.
                        tracing::warn!(node, shard, peer, %addr, error = %e,
                            "connection to peer lost; reconnecting");
                        logged = Logged::Down;
                        backoff = self.backoff_min;
                    } else if logged != Logged::Flapping {
                        tracing::warn!(node, shard, peer, %addr, error = %e,
                            "peer closed the connection soon after it was made (does it refuse \
                             this node? see its log); retrying with backoff");
                        logged = Logged::Flapping;
                    }
                }
            }
            glommio::timer::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(self.backoff_max);
        }
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(self.peer.addr, self.connect_timeout)
            .await
            .map_err(io::Error::from)?;
        // Raft's messages are small and latency-bound; batching is done above, per `Ready`.
        stream.set_nodelay(true).map_err(io::Error::from)?;
        stream
            .set_write_timeout(Some(self.write_timeout))
            .map_err(io::Error::from)?;
        Ok(stream)
    }

    /// Writes the `Hello`, then batches from the queue, until the connection fails; returns
    /// why it ended.
    async fn session(&self, stream: TcpStream) -> io::Error {
        let (mut reader, mut writer) = stream.split();
        if let Err(e) = writer.write_all(&self.hello_frame).await {
            return e;
        }
        add(&self.counters.bytes_sent, self.hello_frame.len() as u64);
        // The peer never writes on this connection: a read that returns is the peer closing
        // it (or breaking the protocol). Watching for that finds a restarted peer before a
        // batch is lost writing to the old connection.
        let mut closed = pin!(async move {
            let mut byte = [0u8; 1];
            match reader.read(&mut byte).await {
                Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed it"),
                Ok(_) => io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer wrote on a connection it only reads",
                ),
                Err(e) => e,
            }
        });
        let mut frames = Vec::new();
        let mut small = Vec::with_capacity(SMALL_FRAME_BYTES);
        loop {
            if let Either::Right((e, _)) =
                select(pin!(self.peer.non_empty()), closed.as_mut()).await
            {
                return e;
            }
            let batch = self.peer.take_all();
            frames.clear();
            let too_large = encode_batch(&batch, &mut frames);
            if too_large > 0 {
                add(&self.counters.dropped_too_large, too_large);
                tracing::error!(
                    node = self.node_id,
                    shard = self.shard,
                    peer = self.peer.node_id,
                    count = too_large,
                    "dropped Raft messages that do not fit in a peer frame"
                );
            }
            let sent = batch.len() as u64 - too_large;
            for frame in &frames {
                // Small frames (heartbeats, answers) go in one write, so one packet on this
                // no-delay socket; a large one as its head and its segment, never copied whole.
                let written = if frame.len() <= SMALL_FRAME_BYTES {
                    small.clear();
                    for part in frame.parts() {
                        small.extend_from_slice(part);
                    }
                    writer.write_all(&small).await
                } else {
                    let [head, segment] = frame.parts();
                    match writer.write_all(head).await {
                        Ok(()) => writer.write_all(segment).await,
                        Err(e) => Err(e),
                    }
                };
                if let Err(e) = written {
                    add(&self.counters.dropped_send_failed, sent);
                    return e;
                }
                add(&self.counters.frames_sent, 1);
                add(&self.counters.bytes_sent, frame.len() as u64);
            }
            if let Err(e) = writer.flush().await {
                add(&self.counters.dropped_send_failed, sent);
                return e;
            }
            add(&self.counters.messages_sent, sent);
        }
    }
}

/// Encodes `messages` as frames under the frame limit, in order: all in one frame when they
/// fit, else halves, recursively. Returns how many messages were dropped because even alone
/// they do not fit.
fn encode_batch(messages: &[Message], frames: &mut Vec<MessagesFrame>) -> u64 {
    if messages.is_empty() {
        return 0;
    }
    match build_messages(messages) {
        Ok(frame) => {
            frames.push(frame);
            0
        }
        Err(WireError::TooLarge { .. }) if messages.len() > 1 => {
            let (first, second) = messages.split_at(messages.len() / 2);
            encode_batch(first, frames) + encode_batch(second, frames)
        }
        Err(_) => messages.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use raft::eraftpb::{Entry, MessageType};

    use super::*;
    use crate::replication::wire::{PeerFrame, decode_frame};

    fn message(to: u64, entries: usize, data_bytes: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = to;
        m.from = 1;
        m.entries = (0..entries)
            .map(|i| Entry {
                index: i as u64 + 1,
                data: vec![7u8; data_bytes].into(),
                ..Entry::default()
            })
            .collect();
        m
    }

    #[test]
    fn a_batch_over_the_frame_limit_is_split_in_order() {
        // 80 messages of ~1 MiB: more than one 64 MiB frame.
        let batch: Vec<Message> = (0..80).map(|_| message(2, 1, 1 << 20)).collect();
        let mut frames = Vec::new();
        assert_eq!(encode_batch(&batch, &mut frames), 0);
        assert!(frames.len() >= 2);
        let mut decoded = Vec::new();
        for f in &frames {
            let bytes = f.parts().concat();
            match decode_frame(&bytes[super::super::wire::FRAME_PREFIX_BYTES..]).unwrap() {
                PeerFrame::Messages(m) => decoded.extend(m),
                other => panic!("not messages: {other:?}"),
            }
        }
        assert_eq!(decoded, batch);
    }

    #[test]
    fn a_message_over_the_frame_limit_alone_is_dropped() {
        let batch = vec![message(2, 0, 0), message(2, 1, 65 << 20), message(2, 0, 0)];
        let mut frames = Vec::new();
        assert_eq!(encode_batch(&batch, &mut frames), 1);
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn a_queue_is_bounded_by_messages_and_bytes() {
        let q = PeerQueue {
            node_id: 2,
            addr: "127.0.0.1:1".parse().unwrap(),
            messages: RefCell::default(),
            bytes: Cell::new(0),
            waker: RefCell::default(),
        };
        // One message always fits into an empty queue, however large.
        assert!(q.push(message(2, 1, 1000), 10, 100));
        assert!(!q.push(message(2, 0, 0), 10, 100));
        assert_eq!(q.take_all().len(), 1);
        for _ in 0..10 {
            assert!(q.push(message(2, 0, 0), 10, usize::MAX));
        }
        assert!(!q.push(message(2, 0, 0), 10, usize::MAX));
        assert_eq!(q.messages.borrow().len(), 10);
    }
}
