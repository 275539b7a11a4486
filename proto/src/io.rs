//! [`MessageWriter`]: the write side of a capnp-rpc connection, sending each message in one
//! write.
//!
//! capnp-rpc writes a message as its segment table and then each segment, one `write` each,
//! and flushes after every message. Behind a `BufWriter`, a message larger than the buffer
//! leaves in several writes: a `send` system call each, and on loopback each `send` also runs
//! the receiving side's TCP path and wakes the reader. A 32-operation reply of 1 KB values
//! took three sends. This writer keeps everything written until the flush (up to a bound) and
//! sends it in one write; after the flush its buffer shrinks back, so that thousands of idle
//! connections stay cheap.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::io::AsyncWrite;

/// Gathers writes until a flush; see the module doc.
pub struct MessageWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed to `inner`.
    sent: usize,
    /// The capacity `buf` keeps between messages.
    idle_capacity: usize,
    /// The most bytes gathered: a write that would take `buf` past this sends what is gathered
    /// first, and a write at least this large goes straight to `inner` (a huge message is not
    /// copied whole).
    gather_max: usize,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// Wraps `inner`, keeping `idle_capacity` bytes of buffer between messages and gathering
    /// at most `gather_max` (at least `idle_capacity`).
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
        if self.buf.capacity() > self.idle_capacity {
            self.buf.shrink_to(self.idle_capacity);
        }
        Poll::Ready(Ok(()))
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
        me.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_send(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_send(cx))?;
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

    /// A message of several segments, as capnp-rpc writes it: its segment table, then each
    /// segment (one write each). Also returns the whole message's bytes.
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
        let mut parts = vec![table];
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
        // The buffer is back to its idle size.
        assert!(w.buf.capacity() <= 16 << 10);
    }

    #[test]
    fn at_most_gather_max_is_gathered_and_a_larger_write_goes_straight_through() {
        let mut w = MessageWriter::new(Recorder::default(), 100, 4000);
        let data: Vec<u8> = (0..15_000u32).map(|i| (i % 251) as u8).collect();
        block_on(async {
            for chunk in data[..9000].chunks(300) {
                w.write_all(chunk).await.unwrap();
            }
            w.write_all(&data[9000..]).await.unwrap();
            w.flush().await.unwrap();
        });
        assert_eq!(w.get_ref().bytes, data);
        // 300-byte writes gather into sends of 3900 (the next would pass 4000); the 6000-byte
        // write is sent as it is.
        assert_eq!(w.get_ref().writes, [3900, 3900, 1200, 6000]);
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
