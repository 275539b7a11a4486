//! One client connection: a capnp-rpc session on a glommio `TcpStream`, with backpressure.
//!
//! The stream is split; the read half goes through [`ThrottledReader`] and a `BufReader`, the
//! write half through a `BufWriter`, both into a two-party `VatNetwork` whose bootstrap
//! capability is this shard's [`crate::service::CoreKvService`].
//!
//! Backpressure: every call registers its operations in the connection's [`ConnState`] until
//! it is answered. While `connection_inflight_ops_max` operations are in flight the reader
//! returns `Pending` without touching the socket, so a client that pipelines without limit
//! fills its own socket buffers instead of the server's memory; reading resumes as replies go
//! out. (A message already buffered is still dispatched, so the bound is the limit plus one
//! read buffer.)
//!
//! Stopping: when the shard stops, the reader stops reading, the connection waits for its
//! in-flight operations (at most the shutdown grace period), then disconnects, which writes
//! every queued reply before closing the socket.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use corekv_proto::corekv_capnp::core_kv;
use futures::future::{Either, select};
use futures::io::{AsyncRead, BufReader, BufWriter};

use crate::counters::{self, Counters};
use crate::metrics::io::{CountingReader, CountingWriter};
use crate::net::order::KeyOrder;
use crate::service::CoreKvService;
use crate::shard::Shard;

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
        if now < self.inflight_ops_max {
            if let Some(w) = self.reader_waker.borrow_mut().take() {
                w.wake();
            }
        }
        if now == 0 {
            if let Some(w) = self.idle_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Stops reading new requests.
    pub fn start_closing(&self) {
        self.closing.set(true);
    }

    /// Resolves when nothing is in flight.
    pub fn idle(&self) -> impl Future<Output = ()> + '_ {
        futures::future::poll_fn(move |cx| {
            if self.inflight_ops.get() == 0 {
                Poll::Ready(())
            } else {
                *self.idle_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
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

/// The read half of a connection, paused while the connection has too much in flight or is
/// closing.
pub struct ThrottledReader<R> {
    inner: R,
    state: Rc<ConnState>,
}

impl<R: AsyncRead + Unpin> AsyncRead for ThrottledReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let state = &self.state;
        if state.closing.get() {
            *state.reader_waker.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if state.inflight_ops.get() >= state.inflight_ops_max {
            if !state.throttled.replace(true) {
                counters::incr(&state.counters.reads_throttled_total);
            }
            *state.reader_waker.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        state.throttled.set(false);
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
    let (read_half, write_half) = futures::io::AsyncReadExt::split(stream);
    let reader = BufReader::with_capacity(
        CONNECTION_BUFFER_BYTES,
        ThrottledReader {
            inner: CountingReader::new(read_half, Rc::clone(&shard.metrics)),
            state: Rc::clone(&conn),
        },
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
        let idle = conn.idle();
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
    counters::decr(&counters.connections_open);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::io::AsyncReadExt;

    #[test]
    fn the_reader_pauses_at_the_limit_and_resumes_below_it() {
        let counters = Rc::new(Counters::default());
        let state = Rc::new(ConnState::new(2, Rc::clone(&counters)));
        let mut reader = ThrottledReader {
            inner: &b"abcdef"[..],
            state: Rc::clone(&state),
        };
        let mut buf = [0u8; 2];
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 2);
        let a = state.begin(1);
        let b = state.begin(1);
        assert!(reader.read(&mut buf).now_or_never().is_none());
        assert!(reader.read(&mut buf).now_or_never().is_none());
        // One throttling episode, however often it is polled.
        assert_eq!(counters.reads_throttled_total.get(), 1);
        drop(a);
        assert_eq!(reader.read(&mut buf).now_or_never().unwrap().unwrap(), 2);
        drop(b);
        assert!(state.idle().now_or_never().is_some());
        state.start_closing();
        assert!(reader.read(&mut buf).now_or_never().is_none());
    }
}
