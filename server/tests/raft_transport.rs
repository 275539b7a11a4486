//! The Raft transport over real loopback TCP: three replicas of one group in one process
//! (one glommio executor, each replica with its own files, `Transport` and peer listener)
//! replicate through it; a node that is down does not hold back the others and catches up
//! once it starts; an inbound connection that breaks the rules is closed with nothing
//! delivered, and one that stops half way through a snapshot is closed; a peer that cannot be
//! reached costs a bounded queue, which is sent once it can.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use common::{
    DEADLINE, Replica, VOTERS, contents, find_leader, run, start_replica, stop_replica, test_dir,
    wait_for,
};
use corekv_server::replication::group::Group;
use corekv_server::replication::log_store::RaftLog;
use corekv_server::replication::transport::{
    Expected, PeerInbox, SNAPSHOT_IDLE_TIMEOUT, Transport, TransportConfig, bind_peer_listener,
    serve_peer,
};
use corekv_server::replication::wire::{
    Hello, PEER_PROTOCOL_VERSION, SnapshotChunk, encode_hello, encode_messages,
    encode_snapshot_chunk,
};
use corekv_storage::Engine;
use futures::channel::oneshot;
use futures::future::{Either, select};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use raft::eraftpb::{Message, MessageType};

const CLUSTER_ID: u64 = 0x5eed;

fn transport_config(id: u64, peers: &HashMap<u64, SocketAddr>) -> TransportConfig {
    let peers = peers
        .iter()
        .filter(|(n, _)| **n != id)
        .map(|(n, a)| (*n, *a))
        .collect();
    TransportConfig {
        connect_timeout: Duration::from_secs(1),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..TransportConfig::new(id, (0, 1), CLUSTER_ID, peers)
    }
}

/// A node: a replica of shard 0's group, its transport, and its listener's accept loop.
struct Node {
    engine: Engine,
    log: RaftLog,
    group: Group,
    transport: Transport,
    stop_accept: oneshot::Sender<()>,
}

async fn start_node(
    dir: &Path,
    id: u64,
    listener: TcpListener,
    addrs: &HashMap<u64, SocketAddr>,
) -> Node {
    let transport = Transport::start(transport_config(id, addrs));
    let Replica { engine, log, group } = start_replica(dir, id, transport.sender()).await;
    let (stop_accept, stop) = oneshot::channel();
    let expected = Expected {
        cluster_id: CLUSTER_ID,
        node_id: id,
        shards: 1,
        snapshot_idle_timeout: SNAPSHOT_IDLE_TIMEOUT,
    };
    let g = group.clone();
    glommio::spawn_local(accept_loop(listener, expected, stop, move |shard, m| {
        assert_eq!(shard, 0);
        g.step(m)
    }))
    .detach();
    Node {
        engine,
        log,
        group,
        transport,
        stop_accept,
    }
}

async fn stop_node(node: Node) {
    let Node {
        engine,
        log,
        group,
        transport,
        stop_accept,
    } = node;
    drop(transport);
    drop(stop_accept);
    stop_replica(Replica { engine, log, group }).await;
}

/// Accepts peer connections until `stop` fires, serving each with `deliver`.
async fn accept_loop(
    listener: TcpListener,
    expected: Expected,
    mut stop: oneshot::Receiver<()>,
    deliver: impl Fn(u32, Message) + Clone + 'static,
) {
    loop {
        let accepted = match select(pin!(listener.accept()), &mut stop).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => return,
        };
        let stream = accepted.unwrap();
        glommio::spawn_local(serve_peer(stream, expected, deliver.clone())).detach();
    }
}

/// `fut`'s output, or a failed test after [`DEADLINE`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match select(pin!(fut), pin!(glommio::timer::sleep(DEADLINE))).await {
        Either::Left((t, _)) => t,
        Either::Right(_) => panic!("timed out waiting for {what}"),
    }
}

async fn leader(nodes: &HashMap<u64, Node>) -> u64 {
    wait_for("a leader", || {
        find_leader(nodes.iter().map(|(id, n)| (id, &n.group)))
    })
    .await
}

/// Proposes `count` puts through `leader`, keys `prefix000...`; each must succeed.
async fn propose_puts(leader: &Node, prefix: &str, count: usize) {
    for i in 0..count {
        let put = format!("p{prefix}{i:03}=v{i}").into_bytes();
        let answer = within("a proposal", leader.group.propose(put)).await;
        assert_eq!(answer.unwrap(), b"ok");
    }
}

async fn wait_applied(nodes: &HashMap<u64, Node>, commit: u64) {
    let groups: Vec<&Group> = nodes.values().map(|n| &n.group).collect();
    common::wait_applied(&groups, commit).await;
}

async fn assert_same_contents(nodes: &HashMap<u64, Node>, reference: u64, keys: usize) {
    let expected = contents(&nodes[&reference].engine).await;
    assert_eq!(expected.len(), keys);
    for (id, n) in nodes {
        assert_eq!(
            contents(&n.engine).await,
            expected,
            "replica {id} differs from replica {reference}"
        );
    }
}

fn loopback_listener() -> TcpListener {
    bind_peer_listener("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A loopback port held closed for a peer that is down: bound, so neither another test's
/// listener nor an outgoing connection's ephemeral port can take it (a port freed instead
/// could be, and dialing it would then reach something else or connect to itself), but not
/// listening, so every connection to it is refused.
struct ClosedPort(socket2::Socket);

impl ClosedPort {
    fn new() -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        Self(socket)
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap().as_socket().unwrap()
    }

    /// The peer comes up: the same socket starts listening, so the port is never free.
    fn listen(self) -> TcpListener {
        self.0.listen(128).unwrap();
        corekv_server::net::into_glommio(self.0.into())
    }
}

#[test]
fn three_nodes_replicate_over_tcp() {
    run(|| async {
        let dir = test_dir("raft-transport-");
        let listeners: Vec<(u64, TcpListener)> =
            VOTERS.iter().map(|&id| (id, loopback_listener())).collect();
        let addrs: HashMap<u64, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        let mut nodes = HashMap::new();
        for (id, listener) in listeners {
            nodes.insert(id, start_node(dir.path(), id, listener, &addrs).await);
        }
        let first = leader(&nodes).await;
        propose_puts(&nodes[&first], "k", 100).await;
        let commit = nodes[&first].group.status().commit;
        wait_applied(&nodes, commit).await;
        assert_same_contents(&nodes, first, 100).await;

        for (id, n) in &nodes {
            let stats = n.transport.stats();
            assert!(stats.messages_sent > 0, "node {id}: {stats:?}");
            assert!(stats.frames_sent > 0 && stats.bytes_sent > 0, "{stats:?}");
            assert_eq!(
                stats.connects, 2,
                "node {id}: one connection per peer: {stats:?}"
            );
            assert_eq!(stats.dropped_unknown_peer, 0, "{stats:?}");
            assert_eq!(stats.dropped_queue_full, 0, "{stats:?}");
        }
        for (_, n) in nodes {
            stop_node(n).await;
        }
    });
}

#[test]
fn a_node_that_is_down_holds_nobody_back_and_catches_up() {
    run(|| async {
        let dir = test_dir("raft-transport-");
        let mut listeners: HashMap<u64, TcpListener> =
            [1, 2].iter().map(|&id| (id, loopback_listener())).collect();
        // Node 3 is down: its port refuses connections until it starts.
        let down = ClosedPort::new();
        let mut addrs: HashMap<u64, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        addrs.insert(3, down.addr());
        let mut nodes = HashMap::new();
        for id in [1, 2] {
            let listener = listeners.remove(&id).unwrap();
            nodes.insert(id, start_node(dir.path(), id, listener, &addrs).await);
        }
        let first = leader(&nodes).await;
        propose_puts(&nodes[&first], "a", 50).await;
        let commit = nodes[&first].group.status().commit;
        wait_applied(&nodes, commit).await;
        // Both keep trying node 3, with backoff, in the background.
        wait_for("repeated connection failures to node 3", || {
            nodes
                .values()
                .all(|n| n.transport.stats().connect_failures >= 3)
                .then_some(())
        })
        .await;
        propose_puts(&nodes[&first], "b", 50).await;

        // Node 3 starts on the address the others dial.
        nodes.insert(3, start_node(dir.path(), 3, down.listen(), &addrs).await);
        let commit = nodes[&first].group.status().commit;
        wait_applied(&nodes, commit).await;
        assert_same_contents(&nodes, first, 100).await;
        // And it takes part from now on.
        let leader_now = leader(&nodes).await;
        propose_puts(&nodes[&leader_now], "c", 10).await;
        let commit = nodes[&leader_now].group.status().commit;
        wait_applied(&nodes, commit).await;
        assert_same_contents(&nodes, leader_now, 110).await;
        for (_, n) in nodes {
            stop_node(n).await;
        }
    });
}

/// A `Hello` from a node of 2 shards.
fn hello(cluster_id: u64, from_node: u64, to_node: u64, shard: u32) -> Hello {
    Hello {
        protocol_version: PEER_PROTOCOL_VERSION,
        cluster_id,
        from_node,
        to_node,
        shard,
        shard_count: 2,
    }
}

fn heartbeat(from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = 1;
    m
}

fn messages_frame(messages: &[Message]) -> Vec<u8> {
    encode_messages(messages).unwrap()
}

#[test]
fn serve_peer_closes_connections_that_break_the_rules() {
    run(|| async {
        // This is node 1 of cluster CLUSTER_ID with 2 shards; node 2 connects for shard 1.
        let expected = Expected {
            cluster_id: CLUSTER_ID,
            node_id: 1,
            shards: 2,
            snapshot_idle_timeout: SNAPSHOT_IDLE_TIMEOUT,
        };
        let good = encode_hello(&hello(CLUSTER_ID, 2, 1, 1));
        let old_version = encode_hello(&Hello {
            protocol_version: PEER_PROTOCOL_VERSION + 1,
            ..hello(CLUSTER_ID, 2, 1, 1)
        });
        // (what is sent, messages delivered before the connection is closed)
        let cases: Vec<(&str, Vec<Vec<u8>>, usize)> = vec![
            (
                "wrong cluster id",
                vec![encode_hello(&hello(CLUSTER_ID + 1, 2, 1, 1))],
                0,
            ),
            (
                "wrong to_node",
                vec![encode_hello(&hello(CLUSTER_ID, 2, 3, 1))],
                0,
            ),
            (
                "shard out of range",
                vec![encode_hello(&hello(CLUSTER_ID, 2, 1, 2))],
                0,
            ),
            (
                "another shard count",
                vec![encode_hello(&Hello {
                    shard_count: 3,
                    ..hello(CLUSTER_ID, 2, 1, 1)
                })],
                0,
            ),
            ("other protocol version", vec![old_version], 0),
            (
                "from node 0",
                vec![encode_hello(&hello(CLUSTER_ID, 0, 1, 1))],
                0,
            ),
            (
                "from this node",
                vec![encode_hello(&hello(CLUSTER_ID, 1, 1, 1))],
                0,
            ),
            (
                "messages before hello",
                vec![messages_frame(&[heartbeat(2, 1)])],
                0,
            ),
            (
                "a message from another node",
                vec![
                    good.clone(),
                    messages_frame(&[heartbeat(2, 1), heartbeat(3, 1)]),
                ],
                0,
            ),
            (
                "a message to another node",
                vec![good.clone(), messages_frame(&[heartbeat(2, 3)])],
                0,
            ),
            (
                "a second hello",
                vec![
                    good.clone(),
                    messages_frame(&[heartbeat(2, 1)]),
                    good.clone(),
                ],
                1,
            ),
        ];
        let listener = loopback_listener();
        let addr = listener.local_addr().unwrap();
        let delivered: Rc<RefCell<Vec<(u32, Message)>>> = Rc::default();
        let d = Rc::clone(&delivered);
        let (_stop, stop) = oneshot::channel();
        glommio::spawn_local(accept_loop(listener, expected, stop, move |shard, m| {
            d.borrow_mut().push((shard, m))
        }))
        .detach();

        for (what, frames, delivers) in cases {
            delivered.borrow_mut().clear();
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for f in &frames {
                stream.write_all(f).await.unwrap();
            }
            // The server reads exactly the frames sent, so it closes with nothing unread: a
            // clean end of stream, not a reset.
            let mut byte = [0u8; 1];
            let n = within(what, stream.read(&mut byte)).await;
            assert_eq!(n.unwrap(), 0, "{what}: the connection must be closed");
            let got = delivered.borrow();
            assert_eq!(got.len(), delivers, "{what}: delivered {got:?}");
            assert!(
                got.iter()
                    .all(|(shard, m)| *shard == 1 && m.from == 2 && m.to == 1)
            );
        }

        // A connection that keeps the rules has its messages delivered with the hello's shard.
        delivered.borrow_mut().clear();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&good).await.unwrap();
        let batch = [heartbeat(2, 1), heartbeat(2, 1), heartbeat(2, 1)];
        stream.write_all(&messages_frame(&batch)).await.unwrap();
        stream
            .write_all(&messages_frame(&batch[..1]))
            .await
            .unwrap();
        wait_for("four messages", || {
            (delivered.borrow().len() == 4).then_some(())
        })
        .await;
        assert!(
            delivered
                .borrow()
                .iter()
                .all(|(shard, m)| *shard == 1 && *m == batch[0])
        );
    });
}

/// An inbox that counts what it is given and takes every snapshot chunk.
#[derive(Clone, Default)]
struct Counting {
    messages: Rc<Cell<usize>>,
    chunks: Rc<Cell<usize>>,
}

impl PeerInbox for Counting {
    type Connection = ();

    fn deliver(&self, _: &mut (), _: u32, _: Message) {
        self.messages.set(self.messages.get() + 1);
    }

    async fn snapshot_chunk(
        &self,
        _: &mut (),
        _: u32,
        _: u64,
        _: SnapshotChunk,
    ) -> Result<(), String> {
        self.chunks.set(self.chunks.get() + 1);
        Ok(())
    }
}

#[test]
fn a_snapshot_stream_that_goes_silent_or_trickles_is_closed_and_other_connections_may_idle() {
    run(|| async {
        let idle = Duration::from_millis(300);
        let expected = Expected {
            cluster_id: CLUSTER_ID,
            node_id: 1,
            shards: 2,
            snapshot_idle_timeout: idle,
        };
        let listener = loopback_listener();
        let addr = listener.local_addr().unwrap();
        let inbox = Counting::default();
        let served = inbox.clone();
        glommio::spawn_local(async move {
            loop {
                let stream = listener.accept().await.unwrap();
                glommio::spawn_local(serve_peer(stream, expected, served.clone())).detach();
            }
        })
        .detach();
        let good = encode_hello(&hello(CLUSTER_ID, 2, 1, 1));

        // A connection of Raft messages that idles well past the timeout stays open.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(&good).await.unwrap();
        plain
            .write_all(&messages_frame(&[heartbeat(2, 1)]))
            .await
            .unwrap();

        // A snapshot stream that stops after its first chunk is closed (its files removed).
        let mut snapshot = TcpStream::connect(addr).await.unwrap();
        snapshot.write_all(&good).await.unwrap();
        let chunk = encode_snapshot_chunk(&SnapshotChunk {
            index: 5,
            term: 1,
            file: "000001.sst".into(),
            offset: 0,
            data: vec![7; 100],
            last: false,
            crc32c: 0,
        })
        .unwrap();
        snapshot.write_all(&chunk).await.unwrap();
        let mut byte = [0u8; 1];
        let n = within(
            "the silent snapshot stream to be closed",
            snapshot.read(&mut byte),
        )
        .await;
        assert_eq!(n.unwrap(), 0, "the silent snapshot stream must be closed");
        assert_eq!(inbox.chunks.get(), 1);

        // One that trickles its next frame, a byte at a time (each read well inside the
        // timeout), is closed too: each frame must arrive whole in time.
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        trickle.write_all(&good).await.unwrap();
        trickle.write_all(&chunk).await.unwrap();
        let mut closed = false;
        for byte in chunk.iter().take(50) {
            glommio::timer::sleep(idle / 3).await;
            if trickle.write_all(std::slice::from_ref(byte)).await.is_err() {
                closed = true;
                break;
            }
        }
        assert!(closed, "a trickling snapshot stream must be closed");
        assert_eq!(inbox.chunks.get(), 2);

        glommio::timer::sleep(idle * 3).await;
        plain
            .write_all(&messages_frame(&[heartbeat(2, 1)]))
            .await
            .unwrap();
        wait_for("both messages of the idle connection", || {
            (inbox.messages.get() == 2).then_some(())
        })
        .await;
    });
}

#[test]
fn an_unreachable_peer_costs_a_bounded_queue_then_gets_it() {
    run(|| async {
        // An address nobody listens on (yet).
        let down = ClosedPort::new();
        let addr = down.addr();
        let transport = Transport::start(TransportConfig {
            queue_messages_max: 100,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            ..TransportConfig::new(1, (0, 1), CLUSTER_ID, vec![(2, addr)])
        });
        let send = transport.sender();
        for _ in 0..100 {
            send((0..100).map(|_| heartbeat(1, 2)).collect());
            // Unknown peers are dropped too.
            send(vec![heartbeat(1, 9)]);
            assert!(transport.queued(2).unwrap() <= 100);
        }
        let stats = transport.stats();
        assert_eq!(transport.queued(2), Some(100));
        assert_eq!(stats.messages_queued, 100);
        assert_eq!(stats.dropped_queue_full, 100 * 100 - 100, "{stats:?}");
        assert_eq!(stats.dropped_unknown_peer, 100, "{stats:?}");
        assert_eq!(transport.queued(9), None);
        wait_for("repeated connection failures", || {
            (transport.stats().connect_failures >= 3).then_some(())
        })
        .await;
        assert_eq!(transport.stats().messages_sent, 0);

        // The peer comes up: what stayed queued is sent.
        let expected = Expected {
            cluster_id: CLUSTER_ID,
            node_id: 2,
            shards: 1,
            snapshot_idle_timeout: SNAPSHOT_IDLE_TIMEOUT,
        };
        let received = Rc::new(Cell::new(0usize));
        let r = Rc::clone(&received);
        let (_stop, stop) = oneshot::channel();
        glommio::spawn_local(accept_loop(down.listen(), expected, stop, move |_, _| {
            r.set(r.get() + 1)
        }))
        .detach();
        wait_for("the queued messages", || {
            (received.get() == 100).then_some(())
        })
        .await;
        let stats = transport.stats();
        assert_eq!(stats.messages_sent, 100, "{stats:?}");
        assert_eq!(stats.messages_queued, 0, "{stats:?}");
        assert_eq!(stats.connects, 1, "{stats:?}");

        // Dropping the transport stops its task and closes the connection.
        drop(transport);
        send(vec![heartbeat(1, 2)]);
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(received.get(), 100);
    });
}

#[test]
fn a_peer_that_refuses_the_hello_is_retried_with_backoff() {
    run(|| async {
        // The listener belongs to another cluster: it closes each connection after the hello.
        let listener = loopback_listener();
        let addr = listener.local_addr().unwrap();
        let expected = Expected {
            cluster_id: CLUSTER_ID + 1,
            node_id: 2,
            shards: 1,
            snapshot_idle_timeout: SNAPSHOT_IDLE_TIMEOUT,
        };
        let received = Rc::new(Cell::new(0usize));
        let r = Rc::clone(&received);
        let (_stop, stop) = oneshot::channel();
        glommio::spawn_local(accept_loop(listener, expected, stop, move |_, _| {
            r.set(r.get() + 1)
        }))
        .detach();
        let transport = Transport::start(TransportConfig {
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            ..TransportConfig::new(1, (0, 1), CLUSTER_ID, vec![(2, addr)])
        });
        wait_for("repeated connections", || {
            transport.send(vec![heartbeat(1, 2)]);
            (transport.stats().connects >= 3).then_some(())
        })
        .await;
        assert_eq!(
            received.get(),
            0,
            "nothing may be delivered from another cluster"
        );
        assert!(
            transport.queued(2).unwrap()
                <= TransportConfig::new(1, (0, 1), 0, vec![]).queue_messages_max
        );
    });
}
