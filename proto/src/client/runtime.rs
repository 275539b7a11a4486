//! The two things the client needs from an async runtime: open a TCP connection and run a
//! `!Send` task on the current thread.
//!
//! capnp-rpc is single-threaded (`Rc` inside), so its connection task must run on the thread
//! that uses the client: a glommio executor, or a tokio current-thread runtime inside a
//! `tokio::task::LocalSet`. Implement [`Runtime`] to use another executor.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed future that stays on its thread.
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;
/// The read half of a connection.
pub type BoxReader = Box<dyn futures::io::AsyncRead + Unpin + 'static>;
/// The write half of a connection.
pub type BoxWriter = Box<dyn futures::io::AsyncWrite + Unpin + 'static>;

/// An executor the client can run on.
pub trait Runtime: Clone + 'static {
    /// Opens a TCP connection (with `TCP_NODELAY`) and returns its two halves.
    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<std::io::Result<(BoxReader, BoxWriter)>>;
    /// Runs `future` to completion in the background on the current thread.
    fn spawn(&self, future: LocalBoxFuture<()>);
    /// Resolves after `duration`.
    fn sleep(&self, duration: std::time::Duration) -> LocalBoxFuture<()>;
}

/// Runs the client on the current glommio executor.
#[cfg(feature = "glommio")]
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioRuntime;

#[cfg(feature = "glommio")]
impl Runtime for GlommioRuntime {
    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<std::io::Result<(BoxReader, BoxWriter)>> {
        Box::pin(async move {
            let stream = glommio::net::TcpStream::connect(addr)
                .await
                .map_err(std::io::Error::from)?;
            stream.set_nodelay(true).map_err(std::io::Error::from)?;
            let (r, w) = futures::io::AsyncReadExt::split(stream);
            Ok((Box::new(r) as BoxReader, Box::new(w) as BoxWriter))
        })
    }

    fn spawn(&self, future: LocalBoxFuture<()>) {
        glommio::spawn_local(future).detach();
    }

    fn sleep(&self, duration: std::time::Duration) -> LocalBoxFuture<()> {
        Box::pin(glommio::timer::sleep(duration))
    }
}

/// Runs the client on a tokio current-thread runtime. Every call must happen inside a
/// `tokio::task::LocalSet` (the client spawns `!Send` tasks with `spawn_local`).
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

#[cfg(feature = "tokio")]
impl Runtime for TokioRuntime {
    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<std::io::Result<(BoxReader, BoxWriter)>> {
        use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (r, w) = stream.into_split();
            Ok((
                Box::new(r.compat()) as BoxReader,
                Box::new(w.compat_write()) as BoxWriter,
            ))
        })
    }

    fn spawn(&self, future: LocalBoxFuture<()>) {
        drop(tokio::task::spawn_local(future));
    }

    fn sleep(&self, duration: std::time::Duration) -> LocalBoxFuture<()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Yields once to the executor, so that other ready tasks run before this one continues.
/// Works on any executor: it wakes itself and returns `Pending` once.
pub(crate) fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

pub(crate) struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
