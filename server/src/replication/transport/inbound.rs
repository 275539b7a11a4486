//! The receiving side of peer connections: checks a connection's `Hello`, then hands each Raft
//! message and snapshot chunk to a [`PeerInbox`], closing the connection on anything it
//! refuses (see [`serve_peer`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use futures::future::{Either, select};
use glommio::net::{TcpListener, TcpStream};
use raft::eraftpb::Message;

use crate::replication::wire::{
    Hello, NodeInfo, PEER_PROTOCOL_VERSION, PeerFrame, SnapshotChunk, WireError, decode_frame,
    read_frame,
};

/// How long an inbound connection may take to send its `Hello` before it is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity an inbound connection's frame buffer keeps between frames, in bytes: a large
/// frame (a big append) grows it, and it shrinks back so an idle connection holds little.
pub const INBOUND_BUFFER_RETAIN_BYTES: usize = 1 << 20;
/// What an inbound connection must match: this node's cluster, its id, and its number of
/// shards (Raft groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// This cluster's id; a `Hello` with another is refused.
    pub cluster_id: u64,
    /// This node's Raft id: connections and messages must be addressed to it.
    pub node_id: u64,
    /// Shards of this node: a `Hello` for a shard at or over this is refused.
    pub shards: u32,
    /// Longest a connection that is streaming a snapshot may take to send its next frame
    /// whole before it is closed (and what it sent removed); other connections may idle (a
    /// follower's peers send it nothing while it leads nobody).
    pub snapshot_idle_timeout: Duration,
}

/// The default [`Expected::snapshot_idle_timeout`]: a sender waits up to 30 s for a write to
/// be taken, and a frame is at most a 1 MiB chunk, so a live stream sends each within this.
pub const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an inbound connection was closed by this node.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the first frame is not a hello")]
    NoHello,
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("protocol version {got}; this node speaks {PEER_PROTOCOL_VERSION}")]
    Version { got: u32 },
    #[error("cluster id {got:#x}; this node's cluster is {want:#x} (a node of another cluster)")]
    Cluster { got: u64, want: u64 },
    #[error("addressed to node {got}; this is node {want} (a stale address?)")]
    ToNode { got: u64, want: u64 },
    #[error("from node {0}, which cannot be a peer (0, or this node's own id)")]
    FromNode(u64),
    #[error("shard {got}; this node has {shards} shards")]
    Shard { got: u32, shards: u32 },
    #[error(
        "the peer runs {got} shards and this node {want}: every node of a cluster must run \
         the same `--shards`"
    )]
    ShardCount { got: u32, want: u32 },
    #[error("a second hello")]
    HelloAgain,
    #[error("a message from node {got} on node {hello}'s connection")]
    MessageFrom { got: u64, hello: u64 },
    #[error("a message to node {got}; this is node {want}")]
    MessageTo { got: u64, want: u64 },
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("snapshot: no whole frame within {0:?}")]
    SnapshotIdle(Duration),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Where an inbound connection's frames go. A closure `Fn(shard, message)` is an inbox that
/// takes messages and refuses snapshots.
pub trait PeerInbox {
    /// What the inbox keeps about one connection (a snapshot being received); dropped when
    /// the connection ends.
    type Connection: Default;

    /// A Raft message for `shard`, from the connection's node.
    fn deliver(&self, conn: &mut Self::Connection, shard: u32, message: Message);

    /// What node `from` tells about itself.
    fn node_info(&self, _from: u64, _info: NodeInfo) {}

    /// A piece of a snapshot for `shard` from node `from`; `Err` (why) closes the connection.
    fn snapshot_chunk(
        &self,
        conn: &mut Self::Connection,
        shard: u32,
        from: u64,
        chunk: SnapshotChunk,
    ) -> impl Future<Output = Result<(), String>>;
}

impl<F: Fn(u32, Message)> PeerInbox for F {
    type Connection = ();

    fn deliver(&self, _: &mut (), shard: u32, message: Message) {
        self(shard, message);
    }

    async fn snapshot_chunk(
        &self,
        _: &mut (),
        _: u32,
        _: u64,
        _: SnapshotChunk,
    ) -> Result<(), String> {
        Err("this node takes no snapshots".into())
    }
}

/// Serves one inbound peer connection until it closes: checks its `Hello` against
/// `expected`, then hands every Raft message and snapshot chunk to `inbox` with the
/// `Hello`'s shard. Closes
/// the connection (logging why) on anything it refuses: a `Hello` that does not match, a
/// message that does not come from the `Hello`'s node or is not addressed to this node (a
/// peer cannot speak for another), a malformed frame. A frame is checked whole before any of
/// its messages is delivered. Never writes on the connection.
pub async fn serve_peer(stream: TcpStream, expected: Expected, inbox: impl PeerInbox) {
    let mut stream = stream;
    if let Some(hello) = accept_hello(&mut stream, &expected).await {
        serve_after_hello(stream, hello, expected, inbox).await;
    }
}

/// Reads and checks an inbound connection's `Hello`; `None` (logged why) when the connection
/// closed or was refused. The caller then serves it with [`serve_after_hello`], on the shard
/// the `Hello` names.
pub async fn accept_hello(stream: &mut TcpStream, expected: &Expected) -> Option<Hello> {
    let result = read_hello(stream, expected).await;
    match result {
        Ok(hello) => hello,
        Err(e) => {
            log_end(stream.peer_addr().ok(), expected, Err(e));
            None
        }
    }
}

/// Serves a connection whose `Hello` [`accept_hello`] took: see [`serve_peer`].
pub async fn serve_after_hello(
    stream: TcpStream,
    hello: Hello,
    expected: Expected,
    inbox: impl PeerInbox,
) {
    let remote = stream.peer_addr().ok();
    let mut stream = stream;
    let result = read_messages(&mut stream, &hello, &expected, &inbox).await;
    log_end(remote, &expected, result);
}

fn log_end(remote: Option<SocketAddr>, expected: &Expected, result: Result<(), Refusal>) {
    match result {
        Ok(()) => {
            tracing::debug!(
                ?remote,
                node = expected.node_id,
                "peer connection closed by the peer"
            )
        }
        Err(Refusal::Wire(WireError::Io(e))) => {
            tracing::info!(?remote, node = expected.node_id, error = %e, "peer connection broke")
        }
        Err(e) => tracing::warn!(?remote, node = expected.node_id, error = %e,
            "closed a peer connection: it sent what this node refuses"),
    }
}

async fn read_hello(stream: &mut TcpStream, expected: &Expected) -> Result<Option<Hello>, Refusal> {
    // The `Hello` is one small frame read on its own (`read_frame` reads exactly one frame):
    // nothing of the next frames is buffered here when the connection moves to another shard.
    let mut buf = Vec::new();
    // A connection that never says who it is must not hold a task for ever.
    stream
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| WireError::Io(e.into()))?;
    let first = match read_frame(stream, &mut buf).await {
        Ok(Some(body)) => decode_frame(body)?,
        Ok(None) => return Ok(None),
        Err(WireError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(Refusal::HelloTimeout(HELLO_TIMEOUT));
        }
        Err(e) => return Err(e.into()),
    };
    let PeerFrame::Hello(hello) = first else {
        return Err(Refusal::NoHello);
    };
    check_hello(&hello, expected)?;
    stream
        .set_read_timeout(None)
        .map_err(|e| WireError::Io(e.into()))?;
    tracing::debug!(
        node = expected.node_id,
        from = hello.from_node,
        shard = hello.shard,
        "peer connection accepted"
    );
    Ok(Some(hello))
}

async fn read_messages(
    stream: &mut TcpStream,
    hello: &Hello,
    expected: &Expected,
    inbox: &impl PeerInbox,
) -> Result<(), Refusal> {
    let mut buf = Vec::new();
    let mut conn = Default::default();
    let mut streaming = false;
    loop {
        let frame = if streaming {
            // A stream that stops (or trickles) half way must not keep its files and a
            // receiving slot for ever: each frame has the idle timeout to arrive whole.
            let timeout = expected.snapshot_idle_timeout;
            let read = pin!(read_frame(stream, &mut buf));
            match select(read, pin!(glommio::timer::sleep(timeout))).await {
                Either::Left((frame, _)) => frame?,
                Either::Right(_) => return Err(Refusal::SnapshotIdle(timeout)),
            }
        } else {
            read_frame(stream, &mut buf).await?
        };
        let messages = match frame {
            None => return Ok(()),
            Some(body) => match decode_frame(body)? {
                PeerFrame::Hello(_) => return Err(Refusal::HelloAgain),
                PeerFrame::Messages(messages) => messages,
                PeerFrame::NodeInfo(info) => {
                    inbox.node_info(hello.from_node, info);
                    continue;
                }
                PeerFrame::SnapshotChunk(chunk) => {
                    inbox
                        .snapshot_chunk(&mut conn, hello.shard, hello.from_node, chunk)
                        .await
                        .map_err(Refusal::Snapshot)?;
                    streaming = true;
                    continue;
                }
            },
        };
        if buf.capacity() > INBOUND_BUFFER_RETAIN_BYTES {
            buf.clear();
            buf.shrink_to(INBOUND_BUFFER_RETAIN_BYTES);
        }
        for m in &messages {
            if m.from != hello.from_node {
                return Err(Refusal::MessageFrom {
                    got: m.from,
                    hello: hello.from_node,
                });
            }
            if m.to != expected.node_id {
                return Err(Refusal::MessageTo {
                    got: m.to,
                    want: expected.node_id,
                });
            }
        }
        for m in messages {
            inbox.deliver(&mut conn, hello.shard, m);
        }
    }
}

fn check_hello(hello: &Hello, expected: &Expected) -> Result<(), Refusal> {
    if hello.protocol_version != PEER_PROTOCOL_VERSION {
        return Err(Refusal::Version {
            got: hello.protocol_version,
        });
    }
    if hello.cluster_id != expected.cluster_id {
        return Err(Refusal::Cluster {
            got: hello.cluster_id,
            want: expected.cluster_id,
        });
    }
    if hello.to_node != expected.node_id {
        return Err(Refusal::ToNode {
            got: hello.to_node,
            want: expected.node_id,
        });
    }
    if hello.from_node == 0 || hello.from_node == expected.node_id {
        return Err(Refusal::FromNode(hello.from_node));
    }
    if hello.shard_count != expected.shards {
        return Err(Refusal::ShardCount {
            got: hello.shard_count,
            want: expected.shards,
        });
    }
    if hello.shard >= expected.shards {
        return Err(Refusal::Shard {
            got: hello.shard,
            shards: expected.shards,
        });
    }
    Ok(())
}

/// A listener for peer connections on `addr`, bound without `SO_REUSEPORT`: a second
/// listener on the same port (another process, or another shard of this one) fails to bind
/// instead of silently taking a share of the connections, each of which names its shard.
pub fn bind_peer_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    crate::net::listen_exclusive(addr)
}
