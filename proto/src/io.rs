//! [`MessageWriter`]: the write side of a capnp-rpc connection, sending each message in one
//! write.
//!
//! capnp-rpc writes a message in pieces (the first word of its segment table, the rest of the
//! table, then each segment: one `write` each) and flushes after every message. Behind a `BufWriter`, a message larger than the buffer
//! leaves in several writes: a `send` system call each, and on loopback each `send` also runs
//! the receiving side's TCP path and wakes the reader. A 32-operation reply of 1 KB values
//! took three sends. This writer keeps everything written until the flush (up to a bound) and
//! sends it in one write. Its buffer grows for a large message and is kept for the next one up
//! to four times its idle size (so a connection answering 30 KB replies does not grow it
//! afresh each time); a larger one is freed at the flush, so that thousands of idle
//! connections stay cheap.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::io::AsyncWrite;

/// A buffer up to this many times its idle size is kept after a flush.
const RETAINED_FACTOR: usize = 4;

/// Gathers writes until a flush; see the module doc.
pub struct MessageWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed to `inner`.
    sent: usize,
    /// The capacity `buf` starts with and goes back to when it grew past
    /// `RETAINED_FACTOR` times this.
    idle_capacity: usize,
    /// The most bytes gathered: a write that would take `buf` past this sends what is gathered
    /// first, and a write at least this large goes straight to `inner` (a huge message is not
    /// copied whole).
    gather_max: usize,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// Wraps `inner`, with a buffer of `idle_capacity` bytes (kept up to `RETAINED_FACTOR`
    /// times that between messages) gathering at most `gather_max` (at least
    /// `idle_capacity`).
    pub fn new(inner: W, idle_capacity: usize, gather_max: usize) -> Self {
        assert!(idle_capacity >= 1 && gather_max >= idle_capacity);
        MessageWriter {
            inner,
            buf: Vec::with_capacity(idle_capacity),
            sent: 0,
            idle_capacity,
            gather_max,
        }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Hands every gathered byte to `inner`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..])) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the connection took no more bytes",
                    )));
                }
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// After a flush: frees a buffer grown past what is kept (a fresh one, nothing copied).
    fn trim(&mut self) {
        debug_assert!(self.buf.is_empty());
        if self.buf.capacity() > RETAINED_FACTOR * self.idle_capacity {
            self.buf = Vec::with_capacity(self.idle_capacity);
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for MessageWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.buf.len() + data.len() > me.gather_max {
            ready!(me.poll_send(cx))?;
        }
        if data.len() >= me.gather_max {
            return Pin::new(&mut me.inner).poll_write(cx, data);
        }
        let needed = me.buf.len() + data.len();
        if needed > me.buf.capacity() {
            // Doubling, but never past the bound.
            let grown = needed.max(2 * me.buf.capacity()).min(me.gather_max);
            me.buf.reserve_exact(grown - me.buf.len());
        }
        me.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_send(cx))?;
        me.trim();
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_send(cx))?;
        me.trim();
        Pin::new(&mut me.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::AsyncWriteExt;

    /// Records every write it is given; takes at most `take` bytes per write and answers
    /// `Pending` (waking at once) before every other write when `stall` is set.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
        bytes: Vec<u8>,
        take: Option<usize>,
        stall: bool,
        stalled: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.stall && !self.stalled {
                self.stalled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.stalled = false;
            let n = self.take.map_or(data.len(), |t| t.min(data.len()));
            self.writes.push(n);
            self.bytes.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A message of several segments, as capnp-rpc writes it: the first word of its segment
    /// table, the rest of it, then each segment (one write each). Also returns the whole
    /// message's bytes.
    fn capnp_message_parts(values: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut message = capnp::message::Builder::new(
            capnp::message::HeapAllocator::new().first_segment_words(64),
        );
        let mut list = message
            .init_root::<capnp::any_pointer::Builder>()
            .initn_as::<capnp::data_list::Builder>(values as u32);
        for i in 0..values {
            list.set(i as u32, &vec![i as u8; 1000]);
        }
        let segments = message.get_segments_for_output();
        assert!(segments.len() > 1);
        let mut table = Vec::new();
        table.extend_from_slice(&(segments.len() as u32 - 1).to_le_bytes());
        for s in segments.iter() {
            table.extend_from_slice(&(s.len() as u32 / 8).to_le_bytes());
        }
        if table.len() % 8 != 0 {
            table.extend_from_slice(&[0; 4]);
        }
        let rest = table.split_off(8);
        let mut parts = vec![table, rest];
        parts.extend(segments.iter().map(|s| s.to_vec()));
        (parts, capnp::serialize::write_message_to_words(&message))
    }

    #[test]
    fn a_message_written_in_parts_leaves_in_one_write_at_the_flush() {
        let (parts, message) = capnp_message_parts(32);
        assert_eq!(parts.concat(), message);
        let mut w = MessageWriter::new(Recorder::default(), 16 << 10, 1 << 20);
        block_on(async {
            for part in &parts {
                w.write_all(part).await.unwrap();
            }
            assert!(
                w.get_ref().writes.is_empty(),
                "nothing leaves before the flush"
            );
            w.flush().await.unwrap();
        });
        assert_eq!(w.get_ref().writes, [message.len()]);
        assert_eq!(w.get_ref().bytes, message);
        // A 33 KB message's buffer is kept for the next one; a larger one is freed.
        assert!(w.buf.capacity() <= 4 * (16 << 10));
        let (parts, big) = capnp_message_parts(100);
        block_on(async {
            for part in &parts {
                w.write_all(part).await.unwrap();
            }
            w.flush().await.unwrap();
        });
        assert_eq!(w.get_ref().writes, [message.len(), big.len()]);
        assert_eq!(w.buf.capacity(), 16 << 10);
    }

    #[test]
    fn at_most_gather_max_is_gathered_and_a_larger_write_goes_straight_through() {
        let mut w = MessageWriter::new(Recorder::default(), 100, 4000);
        let data: Vec<u8> = (0..15_000u32).map(|i| (i % 251) as u8).collect();
        block_on(async {
            for chunk in data[..9000].chunks(300) {
                w.write_all(chunk).await.unwrap();
                assert!(w.buf.capacity() <= 4000, "the buffer grew past the bound");
            }
            // 300-byte writes gather into sends of 3900 (the next would pass 4000).
            assert_eq!(w.get_ref().writes, [3900, 3900]);
            // A write over the bound sends what is gathered, then goes out as it is.
            w.write_all(&data[9000..]).await.unwrap();
            assert_eq!(w.get_ref().writes, [3900, 3900, 1200, 6000]);
            w.flush().await.unwrap();
        });
        assert_eq!(w.get_ref().bytes, data);
        assert_eq!(w.get_ref().writes, [3900, 3900, 1200, 6000]);
    }

    #[test]
    fn a_connection_that_takes_no_bytes_fails_the_flush() {
        struct Full;
        impl AsyncWrite for Full {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(0))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut w = MessageWriter::new(Full, 100, 1000);
        block_on(async {
            w.write_all(b"some bytes").await.unwrap();
            let e = w.flush().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        });
    }

    #[test]
    fn partial_and_pending_writes_deliver_every_byte_in_order() {
        let recorder = Recorder {
            take: Some(777),
            stall: true,
            ..Recorder::default()
        };
        let mut w = MessageWriter::new(recorder, 100, 4000);
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        block_on(async {
            for chunk in data[..9000].chunks(300) {
                w.write_all(chunk).await.unwrap();
            }
            w.write_all(&data[9000..15_000]).await.unwrap();
            w.write_all(&data[15_000..]).await.unwrap();
            w.close().await.unwrap();
        });
        assert_eq!(w.get_ref().bytes, data);
    }
}
