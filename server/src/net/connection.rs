//! One client connection: a capnp-rpc session on a glommio `TcpStream`, with backpressure.
//!
//! The stream is split; the read half goes through a [`FrameReader`] (one buffer, and the
//! shard's budget for large frames in progress), the write half through a `BufWriter`, both
//! into a two-party `VatNetwork` whose bootstrap capability is this shard's
//! [`crate::service::CoreKvService`].
//!
//! Backpressure: every call registers its operations in the connection's [`ConnState`] until
//! it is answered. While `connection_inflight_ops_max` operations are in flight the reader
//! returns `Pending` without touching the socket, so a client that pipelines without limit
//! fills its own socket buffers instead of the server's memory; reading resumes as replies go
//! out. (A message already buffered is still dispatched, so the bound is the limit plus one
//! read buffer.)
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

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use corekv_proto::corekv_capnp::core_kv;
use futures::future::{Either, select};
use futures::io::{AsyncRead, BufWriter};

use crate::counters::{self, Counters};
use crate::metrics::io::{CountingReader, CountingWriter};
use crate::net::frames::FrameReader;
use crate::net::order::KeyOrder;
use crate::service::CoreKvService;
use crate::shard::Shard;

/// How long a connection the server closes keeps reading (and discarding) what the client
/// still sends, waiting for the client to close its side, before it closes anyway.
pub const LINGER: Duration = Duration::from_secs(1);

/// Read and write buffer of each connection. Small, so that thousands of idle connections
/// cost little (two of these each).
pub const CONNECTION_BUFFER_BYTES: usize = 16 << 10;

/// The in-flight accounting of one connection.
pub struct ConnState {
    inflight_ops: Cell<usize>,
    inflight_ops_max: usize,
    reader_waker: RefCell<Option<Waker>>,
    idle_waker: RefCell<Option<Waker>>,
    closing: Cell<bool>,
    /// Closing, and the RPC layer has asked for bytes beyond what was read: every request the
    /// server read has been dispatched.
    starved: Cell<bool>,
    throttled: Cell<bool>,
    counters: Rc<Counters>,
    /// The order in which calls that touch the same key take effect.
    pub order: Rc<KeyOrder>,
}

impl ConnState {
    /// A connection allowed `inflight_ops_max` operations in flight.
    pub fn new(inflight_ops_max: usize, counters: Rc<Counters>) -> ConnState {
        assert!(inflight_ops_max >= 1);
        ConnState {
            inflight_ops: Cell::new(0),
            inflight_ops_max,
            reader_waker: RefCell::new(None),
            idle_waker: RefCell::new(None),
            closing: Cell::new(false),
            starved: Cell::new(false),
            throttled: Cell::new(false),
            counters,
            order: Rc::new(KeyOrder::default()),
        }
    }

    /// Registers a call of `ops` operations until the guard drops.
    pub fn begin(self: &Rc<Self>, ops: usize) -> InflightGuard {
        self.inflight_ops.set(self.inflight_ops.get() + ops);
        InflightGuard {
            conn: Rc::clone(self),
            ops,
        }
    }

    /// Operations in flight now.
    pub fn inflight_ops(&self) -> usize {
        self.inflight_ops.get()
    }

    fn end(&self, ops: usize) {
        debug_assert!(self.inflight_ops.get() >= ops);
        let now = self.inflight_ops.get().saturating_sub(ops);
        self.inflight_ops.set(now);
        if now < self.inflight_ops_max && self.throttled.get() {
            wake(&self.reader_waker);
        }
        if now == 0 {
            wake(&self.idle_waker);
        }
    }

    /// Stops reading new requests from the socket; what was read is still served.
    pub fn start_closing(&self) {
        self.closing.set(true);
        // The reader may be waiting for the socket: poll it again, so that it stops there.
        wake(&self.reader_waker);
    }

    /// Whether the connection is closing: a request dispatched now gets `shuttingDown`.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Resolves when nothing is in flight.
    pub fn idle(&self) -> impl Future<Output = ()> + '_ {
        self.idle_when(false)
    }

    /// Resolves, once closing, when every request read from the socket has been dispatched
    /// and answered.
    pub fn drained(&self) -> impl Future<Output = ()> + '_ {
        self.idle_when(true)
    }

    /// Resolves, once closing, when every request read from the socket has started and been
    /// answered. capnp-rpc starts a call it has read only when its own task set next runs (it
    /// queues the call's future there), so after [`ConnState::drained`] the RPC system gets a
    /// few turns ([`SETTLE_TURNS`]) to start what it read; a call that starts meanwhile is
    /// waited for in turn.
    pub async fn settled(&self) {
        'wait: loop {
            self.drained().await;
            for _ in 0..SETTLE_TURNS {
                yield_once().await;
                if self.inflight_ops.get() > 0 {
                    continue 'wait;
                }
            }
            return;
        }
    }

    /// Whether the connection's socket may be read now. If not, the reader is woken when it
    /// may: when operations complete below the limit. A closing connection is never read
    /// again, and a reader that asks while closing has handed up everything it read.
    pub fn may_read(&self, cx: &Context<'_>) -> bool {
        // Kept while reading too: closing must be able to wake a reader waiting for the socket.
        keep_waker(&self.reader_waker, cx);
        if self.closing.get() {
            self.starve();
            return false;
        }
        if self.inflight_ops.get() >= self.inflight_ops_max {
            if !self.throttled.replace(true) {
                counters::incr(&self.counters.reads_throttled_total);
            }
            return false;
        }
        self.throttled.set(false);
        true
    }

    /// Records that the reader, while closing, has handed up every request it read.
    pub fn starve(&self) {
        if !self.starved.replace(true) {
            wake(&self.idle_waker);
        }
    }

    fn idle_when(&self, starved: bool) -> impl Future<Output = ()> + '_ {
        futures::future::poll_fn(move |cx| {
            if self.inflight_ops.get() == 0 && (!starved || self.starved.get()) {
                Poll::Ready(())
            } else {
                *self.idle_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Turns the RPC system gets, once a closing connection looks drained, to start the calls it
/// has read (its task set polls at most 32 futures a turn; a connection holds at most
/// `connection_inflight_ops_max` calls plus one read buffer).
const SETTLE_TURNS: usize = 16;

/// Returns `Pending` once, waking itself: the task runs again after the executor's other work,
/// and the RPC system (polled before the drain in the same task) gets a turn.
async fn yield_once() {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

fn wake(waker: &RefCell<Option<Waker>>) {
    if let Some(w) = waker.borrow_mut().take() {
        w.wake();
    }
}

/// Keeps `cx`'s waker in `slot` (cloned only when it changed).
fn keep_waker(slot: &RefCell<Option<Waker>>, cx: &Context<'_>) {
    let mut slot = slot.borrow_mut();
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// Holds a call's operations in the connection's in-flight count.
pub struct InflightGuard {
    conn: Rc<ConnState>,
    ops: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.conn.end(self.ops);
    }
}

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
        CONNECTION_BUFFER_BYTES,
    );
    let writer = BufWriter::with_capacity(
        CONNECTION_BUFFER_BYTES,
        CountingWriter::new(write_half, Rc::clone(&shard.metrics)),
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
        if let Ok(read_half) = Rc::try_unwrap(read_half) {
            linger(fd, read_half.into_inner()).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::frames::FrameBudget;
    use futures::FutureExt;
    use futures::io::AsyncReadExt;

    #[test]
    fn the_reader_pauses_at_the_limit_and_resumes_below_it() {
        let counters = Rc::new(Counters::default());
        let state = Rc::new(ConnState::new(2, Rc::clone(&counters)));
        // One frame of 1000 words: more than the reader's 4 KiB buffer holds.
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend_from_slice(&1000u32.to_le_bytes());
        bytes.extend(std::iter::repeat_n(7u8, 8000));
        let budget = FrameBudget::new(1 << 20);
        let mut reader = FrameReader::new(&bytes[..], Rc::clone(&state), budget, 4096);
        let mut buf = vec![0u8; 3000];
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 3000);
        let a = state.begin(1);
        let b = state.begin(1);
        // What is buffered is still handed up; the socket is not read.
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 1096);
        assert!(reader.read(&mut buf).now_or_never().is_none());
        assert!(reader.read(&mut buf).now_or_never().is_none());
        // One throttling episode, however often it is polled.
        assert_eq!(counters.reads_throttled_total.get(), 1);
        drop(a);
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 3000);
        drop(b);
        assert!(state.idle().now_or_never().is_some());
        state.start_closing();
        assert!(
            state.drained().now_or_never().is_none(),
            "the reader has not asked for more yet"
        );
        // What was read is still handed up (the rest of the frame); then nothing more.
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 912);
        assert!(state.drained().now_or_never().is_none());
        assert!(reader.read(&mut buf).now_or_never().is_none());
        assert!(state.drained().now_or_never().is_some());
    }
}
