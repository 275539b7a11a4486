//! Byte counting for client connections: wrappers around a connection's read and write halves
//! that add what passes through to the shard's [`ShardMetrics`].

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

use super::ShardMetrics;

/// Counts bytes read into `metrics`' `network_bytes_received_total`.
pub struct CountingReader<R> {
    inner: R,
    metrics: Rc<ShardMetrics>,
}

impl<R> CountingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, metrics: Rc<ShardMetrics>) -> Self {
        CountingReader { inner, metrics }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.metrics.add_bytes_received(n);
        }
        r
    }
}

/// Counts bytes written into `metrics`' `network_bytes_sent_total`.
pub struct CountingWriter<W> {
    inner: W,
    metrics: Rc<ShardMetrics>,
}

impl<W> CountingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, metrics: Rc<ShardMetrics>) -> Self {
        CountingWriter { inner, metrics }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.metrics.add_bytes_sent(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn bytes_are_counted_both_ways() {
        let m = Rc::new(ShardMetrics::new().unwrap());
        let mut r = CountingReader::new(&b"hello"[..], Rc::clone(&m));
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).now_or_never().unwrap().unwrap(), 5);
        let mut w = CountingWriter::new(Vec::new(), Rc::clone(&m));
        w.write_all(b"abc").now_or_never().unwrap().unwrap();
        let s = m.snapshot();
        assert_eq!(
            (s.network_bytes_received_total, s.network_bytes_sent_total),
            (5, 3)
        );
    }
}
