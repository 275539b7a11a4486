//! A pipelined RESP connection for one single-threaded executor: any number of local tasks
//! issue commands at once; their bytes are appended to one output buffer that a writer task
//! sends in as few `send`s as possible, and a reader task hands replies back in order (Redis
//! answers a connection's commands in the order they arrived).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::channel::oneshot;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::{Task, spawn_local};

use super::resp::{Reply, parse_reply};

/// Initial size of the reply buffer; it grows when one reply is larger.
const READ_BUFFER_BYTES: usize = 256 << 10;

struct Waiting {
    expected: usize,
    replies: Vec<Reply>,
    tx: oneshot::Sender<Result<Vec<Reply>, String>>,
}

#[derive(Default)]
struct Shared {
    out: Vec<u8>,
    pending: VecDeque<Waiting>,
    writer: Option<Waker>,
    failure: Option<String>,
}

impl Shared {
    /// Marks the connection dead and fails everything in flight.
    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason.clone());
        }
        for w in self.pending.drain(..) {
            let _ = w.tx.send(Err(reason.clone()));
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// One pipelined connection.
pub struct Pipeline {
    shared: Rc<RefCell<Shared>>,
    // Dropping the pipeline cancels its tasks (and closes the socket).
    _reader: Task<()>,
    _writer: Task<()>,
}

impl Pipeline {
    /// Starts the reader and writer tasks on the current executor.
    pub fn new<S>(stream: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let (r, w) = stream.split();
        let shared = Rc::new(RefCell::new(Shared::default()));
        Pipeline {
            _reader: spawn_local(read_loop(r, shared.clone())),
            _writer: spawn_local(write_loop(w, shared.clone())),
            shared,
        }
    }

    /// Sends the commands `encode` appends (which produce `replies` replies) and waits for
    /// their replies.
    pub async fn call(
        &self,
        replies: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<Reply>, String> {
        assert!(replies > 0, "a call must expect at least one reply");
        let rx = {
            let mut s = self.shared.borrow_mut();
            if let Some(f) = &s.failure {
                return Err(f.clone());
            }
            encode(&mut s.out);
            let (tx, rx) = oneshot::channel();
            s.pending.push_back(Waiting {
                expected: replies,
                replies: Vec::with_capacity(replies),
                tx,
            });
            if let Some(w) = s.writer.take() {
                w.wake();
            }
            rx
        };
        match rx.await {
            Ok(result) => result,
            Err(_) => Err("connection closed".into()),
        }
    }

    /// Why the connection failed, once it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.borrow().failure.clone()
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, shared: Rc<RefCell<Shared>>) {
    let mut buf = Vec::new();
    loop {
        futures::future::poll_fn(|cx| {
            let mut s = shared.borrow_mut();
            if !s.out.is_empty() || s.failure.is_some() {
                Poll::Ready(())
            } else {
                s.writer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        {
            let mut s = shared.borrow_mut();
            if s.failure.is_some() {
                return;
            }
            std::mem::swap(&mut s.out, &mut buf);
        }
        if let Err(e) = w.write_all(&buf).await {
            shared
                .borrow_mut()
                .fail(format!("sending to the server failed: {e}"));
            return;
        }
        buf.clear();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut r: R, shared: Rc<RefCell<Shared>>) {
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let (mut start, mut filled) = (0usize, 0usize);
    loop {
        // Hand out every complete reply in the buffer.
        loop {
            match parse_reply(&buf[start..filled]) {
                Ok(Some((reply, used))) => {
                    start += used;
                    let mut s = shared.borrow_mut();
                    let Some(front) = s.pending.front_mut() else {
                        s.fail("the server sent a reply nobody asked for".into());
                        return;
                    };
                    front.replies.push(reply);
                    if front.replies.len() == front.expected {
                        if let Some(done) = s.pending.pop_front() {
                            let _ = done.tx.send(Ok(done.replies));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    shared
                        .borrow_mut()
                        .fail(format!("the server broke the RESP protocol: {}", e.0));
                    return;
                }
            }
        }
        // Make room: move the partial reply to the front, grow if it fills the buffer.
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match r.read(&mut buf[filled..]).await {
            Ok(0) => {
                shared
                    .borrow_mut()
                    .fail("the server closed the connection".into());
                return;
            }
            Ok(n) => filled += n,
            Err(e) => {
                shared
                    .borrow_mut()
                    .fail(format!("receiving from the server failed: {e}"));
                return;
            }
        }
    }
}
