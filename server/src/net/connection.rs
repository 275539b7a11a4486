//! One client connection: a capnp-rpc session on a glommio `TcpStream`, with backpressure.
//!
//! The stream is split; the read half goes through a [`FrameReader`] (one buffer, and the
//! shard's budget for large frames in progress), the write half through a
//! [`MessageWriter`] (each reply in one `send`), both
//! into a two-party `VatNetwork` whose bootstrap capability is this shard's
//! [`crate::service::CoreKvService`].
//!
//! Backpressure: while `connection_inflight_ops_max` operations are in flight the reader does
//! not read the socket ([`ConnState`]). (A message already buffered is still dispatched, so
//! the bound is the limit plus one read buffer.)
//!
//! Stopping: when the shard stops, the reader stops reading the socket, but what the server
//! has already read is still served: every complete request left in the read buffer is
//! dispatched and answered `shuttingDown` without being applied. Once the RPC layer asks the
//! reader for bytes it will not get ("starved": nothing read is left undispatched) and no
//! operation is in flight (at most the shutdown grace period), the connection disconnects,
//! which writes every queued reply, then closes lingering: it sends FIN and reads and
//! discards what the client still sends until the client closes too ([`LINGER`] at most).
//! Closing a socket with unread bytes would send RST instead, and a client's kernel may
//! discard replies it has received but not yet handed over. So every request the server read
//! gets its reply; one it did not read (sent after, or cut off in the middle) is not applied.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use corekv_proto::corekv_capnp::core_kv;
use corekv_proto::io::MessageWriter;
use futures::future::{Either, select};
use futures::io::AsyncRead;

use crate::counters;
use crate::metrics::io::{CountingReader, CountingWriter};
use crate::net::conn_state::ConnState;
use crate::net::frames::FrameReader;
use crate::service::CoreKvService;
use crate::shard::Shard;

/// How long a connection the server closes keeps reading (and discarding) what the client
/// still sends, waiting for the client to close its side, before it closes anyway.
pub const LINGER: Duration = Duration::from_secs(1);

/// Read and write buffer of each connection. Small, so that thousands of idle connections
/// cost little (two of these each).
pub const CONNECTION_BUFFER_BYTES: usize = 16 << 10;

/// The most bytes of one reply sent in one write: a reply is gathered whole (up to this) and
/// sent with one `send`, not one per segment (see [`MessageWriter`]).
pub const REPLY_GATHER_BYTES_MAX: usize = 1 << 20;

/// A reader shared by the RPC layer and the connection's task, which reads what is left after
/// the RPC layer is gone (the lingering close).
struct SharedReader<R>(Rc<RefCell<R>>);

impl<R: AsyncRead + Unpin> AsyncRead for SharedReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

/// Serves one accepted connection until the client leaves, a protocol failure, or the shard
/// stops. Never panics: every failure ends only this connection.
pub async fn serve(shard: Rc<Shard>, stream: glommio::net::TcpStream, grace: Duration) {
    let counters = Rc::clone(&shard.counters);
    counters::incr(&counters.connections_open);
    let peer = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(shard = shard.id, ?peer, error = %e, "cannot set TCP_NODELAY");
    }
    let conn = Rc::new(ConnState::new(
        shard.limits.connection_inflight_ops_max,
        Rc::clone(&counters),
    ));
    let fd = stream.as_raw_fd();
    let (read_half, write_half) = futures::io::AsyncReadExt::split(stream);
    let read_half = Rc::new(RefCell::new(read_half));
    let reader = FrameReader::new(
        CountingReader::new(
            SharedReader(Rc::clone(&read_half)),
            Rc::clone(&shard.metrics),
        ),
        Rc::clone(&conn),
        Rc::clone(&shard.frame_budget),
        shard.limits.frame_bytes_max,
        CONNECTION_BUFFER_BYTES,
    );
    let writer = MessageWriter::new(
        CountingWriter::new(write_half, Rc::clone(&shard.metrics)),
        CONNECTION_BUFFER_BYTES,
        REPLY_GATHER_BYTES_MAX,
    );
    let mut options = capnp::message::ReaderOptions::new();
    options.traversal_limit_in_words(Some(shard.limits.frame_bytes_max / 8));
    let network = twoparty::VatNetwork::new(reader, writer, Side::Server, options);
    let service: core_kv::Client =
        capnp_rpc::new_client(CoreKvService::new(Rc::clone(&shard), Rc::clone(&conn)));
    let rpc = RpcSystem::new(Box::new(network), Some(service.client));
    let disconnector = rpc.get_disconnector();
    let drain = async {
        shard.stopping.wait().await;
        conn.start_closing();
        let idle = conn.settled();
        let timeout = glommio::timer::sleep(grace);
        futures::pin_mut!(idle, timeout);
        if let Either::Right(_) = select(idle, timeout).await {
            tracing::warn!(
                shard = shard.id,
                ?peer,
                inflight_ops = conn.inflight_ops(),
                "closing a connection whose requests did not finish within the shutdown grace period"
            );
        }
        // Writes every reply already queued, then closes.
        let _ = disconnector.await;
        futures::future::pending::<()>().await;
    };
    futures::pin_mut!(drain);
    if let Either::Left((Err(e), _)) = select(rpc, drain).await {
        if e.kind != capnp::ErrorKind::Disconnected {
            counters::incr(&counters.protocol_errors_total);
            tracing::debug!(shard = shard.id, ?peer, error = %e, "closed a connection after a protocol failure");
        }
    }
    if conn.is_closing() {
        // The RPC layer (and its share of the reader) is gone.
        match Rc::try_unwrap(read_half) {
            Ok(read_half) => linger(fd, read_half.into_inner()).await,
            Err(_) => tracing::warn!(
                shard = shard.id,
                ?peer,
                "closing a connection without lingering: its reader is still shared"
            ),
        }
    }
    counters::decr(&counters.connections_open);
}

/// Closes the sending side of socket `fd` (FIN after the replies already written), then reads
/// and discards from `read_half` until the client closes its side, an error, or [`LINGER`].
async fn linger<R: AsyncRead + Unpin>(fd: std::os::fd::RawFd, mut read_half: R) {
    // SAFETY: `fd` is the connection's socket, kept open by `read_half` (both halves share the
    // stream, which closes it only when dropped); shutdown touches no memory.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    let discard = async {
        let mut scratch = vec![0u8; CONNECTION_BUFFER_BYTES];
        while let Ok(n) = futures::io::AsyncReadExt::read(&mut read_half, &mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let timeout = glommio::timer::sleep(LINGER);
    futures::pin_mut!(discard, timeout);
    select(discard, timeout).await;
}
