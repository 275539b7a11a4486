//! A connection's read side: one buffer, Cap'n Proto frame boundaries, and the shard's budget
//! of bytes for frames in progress.
//!
//! The RPC layer reads a frame's segment table and then allocates the whole frame it announces
//! (up to `frame_bytes_max`) before the bytes arrive: a client announcing large frames and
//! sending them slowly would make the server hold that memory for each such connection. So
//! [`FrameReader`] looks at every frame's segment table before handing the table up, and a
//! frame larger than [`FRAME_BUDGET_EXEMPT_BYTES`] first takes its size from the shard's
//! [`FrameBudget`] (all of it, if larger than the budget): while the budget is spent, the
//! connections waiting for it are not read. The frame gives its share back once its last byte
//! has been handed up. Small frames (every ordinary request) need no budget, so clients with
//! ordinary requests are served whatever large frames wait.
//!
//! The same reader pauses the socket while the connection has too many operations in flight,
//! or is closing (see [`super::connection`]); it still hands up what it already read.
//!
//! A frame (Cap'n Proto's standard stream framing, all little-endian u32):
//!
//! ```text
//! +-----------------+----------------+-----+------------------+-----------+----------+
//! | segments - 1    | segment 0 size | ... | segment n-1 size | [padding] | segments |
//! +-----------------+----------------+-----+------------------+-----------+----------+
//!   sizes in 8-byte words; the table is padded to a multiple of 8 bytes
//! ```

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::io::AsyncRead;

use super::conn_state::ConnState;

/// Frames of at most this many bytes need no budget.
pub const FRAME_BUDGET_EXEMPT_BYTES: usize = 64 << 10;

/// Segment tables longer than this are not parsed: the frame is handed up as it is and the
/// RPC layer refuses it (it allows at most 511 segments).
const SEGMENTS_MAX: usize = 511;

/// The shard's budget of bytes for large frames in progress, shared by its connections and
/// granted in the order they asked.
pub struct FrameBudget {
    capacity_bytes: usize,
    available_bytes: Cell<usize>,
    /// Connections waiting, oldest first: (ticket, waker).
    waiting: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: Cell<u64>,
    /// Times a frame had to wait for budget.
    pub waits_total: Cell<u64>,
}

impl FrameBudget {
    /// A budget of `capacity_bytes` (at least 1).
    pub fn new(capacity_bytes: usize) -> Rc<FrameBudget> {
        assert!(capacity_bytes >= 1);
        Rc::new(FrameBudget {
            capacity_bytes,
            available_bytes: Cell::new(capacity_bytes),
            waiting: RefCell::new(VecDeque::new()),
            next_ticket: Cell::new(1),
            waits_total: Cell::new(0),
        })
    }

    /// Bytes granted now.
    pub fn in_use_bytes(&self) -> usize {
        self.capacity_bytes - self.available_bytes.get()
    }

    fn ticket(&self) -> u64 {
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        t
    }

    /// Grants `bytes` (at most the capacity) to `ticket` if it is free and nobody asked before
    /// it; otherwise queues `ticket` (once) and returns `None`.
    fn try_take(&self, ticket: u64, bytes: usize, cx: &Context<'_>) -> Option<usize> {
        let bytes = bytes.min(self.capacity_bytes);
        let mut waiting = self.waiting.borrow_mut();
        let first = waiting.front().is_none_or(|(t, _)| *t == ticket);
        if first && self.available_bytes.get() >= bytes {
            if waiting.front().is_some_and(|(t, _)| *t == ticket) {
                waiting.pop_front();
            }
            self.available_bytes.set(self.available_bytes.get() - bytes);
            // The next in line may fit in what is left.
            if let Some((_, w)) = waiting.front() {
                w.wake_by_ref();
            }
            return Some(bytes);
        }
        match waiting.iter_mut().find(|(t, _)| *t == ticket) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => {
                self.waits_total.set(self.waits_total.get() + 1);
                waiting.push_back((ticket, cx.waker().clone()));
            }
        }
        None
    }

    fn give_back(&self, bytes: usize) {
        self.available_bytes.set(self.available_bytes.get() + bytes);
        debug_assert!(self.available_bytes.get() <= self.capacity_bytes);
        if let Some((_, w)) = self.waiting.borrow().front() {
            w.wake_by_ref();
        }
    }

    fn leave(&self, ticket: u64) {
        let mut waiting = self.waiting.borrow_mut();
        let was_first = waiting.front().is_some_and(|(t, _)| *t == ticket);
        waiting.retain(|(t, _)| *t != ticket);
        if was_first && let Some((_, w)) = waiting.front() {
            w.wake_by_ref();
        }
    }
}

/// Reads a connection's socket through one buffer, handing up whole frames' segment tables
/// only once their frame has its budget.
pub struct FrameReader<R> {
    inner: R,
    gate: Rc<ConnState>,
    budget: Rc<FrameBudget>,
    /// Frames announcing more are handed up without budget: the RPC layer refuses them
    /// before allocating.
    frame_bytes_max: usize,
    ticket: u64,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes of the current frame not yet handed up; 0 at a frame boundary.
    frame_left: usize,
    /// Budget held by the current frame.
    held_bytes: usize,
}

impl<R> FrameReader<R> {
    /// A reader of `inner` with a buffer of `buffer_bytes`, gated by `gate`, drawing on
    /// `budget` for frames of up to `frame_bytes_max`.
    pub fn new(
        inner: R,
        gate: Rc<ConnState>,
        budget: Rc<FrameBudget>,
        frame_bytes_max: usize,
        buffer_bytes: usize,
    ) -> FrameReader<R> {
        // A segment table of SEGMENTS_MAX entries must fit.
        assert!(buffer_bytes >= 8 + 4 * SEGMENTS_MAX);
        let ticket = budget.ticket();
        FrameReader {
            inner,
            gate,
            budget,
            frame_bytes_max,
            ticket,
            buf: vec![0; buffer_bytes].into_boxed_slice(),
            start: 0,
            end: 0,
            frame_left: 0,
            held_bytes: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The size of the frame starting the buffer, if its whole segment table is buffered:
    /// `Some(None)` for a table too long to parse.
    fn next_frame_bytes(&self) -> Option<Option<usize>> {
        let b = self.buffered();
        let word = |i: usize| -> Option<usize> {
            let bytes = b.get(4 * i..4 * i + 4)?;
            Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        };
        let segments = word(0)?.saturating_add(1);
        if segments > SEGMENTS_MAX {
            return Some(None);
        }
        // The count and the sizes, padded to whole words.
        let table_bytes = (4 + 4 * segments).next_multiple_of(8);
        if b.len() < table_bytes {
            return None;
        }
        let mut total = table_bytes;
        for i in 1..=segments {
            total = total.saturating_add(word(i)?.saturating_mul(8));
        }
        Some(Some(total))
    }

    fn release(&mut self) {
        if self.held_bytes > 0 {
            self.budget.give_back(self.held_bytes);
            self.held_bytes = 0;
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from the socket into the free end of the buffer (moving what is buffered to the
    /// front first if it sits at the end), unless the gate is shut.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.gate.may_read(cx) {
            return Poll::Pending;
        }
        if self.start > 0 && (self.start == self.end || self.end == self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let (end, buf) = (self.end, &mut self.buf);
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf[end..]))?;
        self.end += n;
        Poll::Ready(Ok(n))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Whatever this poll waits for, closing the connection must be able to wake it.
        this.gate.keep_reader_waker(cx);
        while this.frame_left == 0 {
            match this.next_frame_bytes() {
                // Small frames need no budget; oversized ones are refused by the RPC layer
                // (and must not hold the budget while they are).
                Some(Some(total))
                    if total <= FRAME_BUDGET_EXEMPT_BYTES || total > this.frame_bytes_max =>
                {
                    this.frame_left = total;
                }
                Some(Some(total)) => {
                    if this.gate.is_closing() {
                        // A large frame's bytes are not buffered yet and will not be read:
                        // hand up nothing more, and wait for no budget.
                        this.budget.leave(this.ticket);
                        this.gate.starve();
                        return Poll::Pending;
                    }
                    match this.budget.try_take(this.ticket, total, cx) {
                        Some(granted) => {
                            this.held_bytes = granted;
                            this.frame_left = total;
                        }
                        None => return Poll::Pending,
                    }
                }
                // Handed up as it is; the RPC layer refuses it.
                Some(None) => this.frame_left = usize::MAX,
                None => {
                    // The table is incomplete: read more (into the buffer).
                    if std::task::ready!(this.fill(cx))? == 0 {
                        // End of stream: hand up what is left; the RPC layer sees it end.
                        this.frame_left = usize::MAX;
                        break;
                    }
                }
            }
        }
        let want = out.len().min(this.frame_left);
        let n = if this.start < this.end {
            let n = want.min(this.end - this.start);
            out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
            this.start += n;
            n
        } else if want >= this.buf.len() {
            // A large read of the frame's body: straight into `out`, no copy.
            if !this.gate.may_read(cx) {
                return Poll::Pending;
            }
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut out[..want]))?
        } else {
            if std::task::ready!(this.fill(cx))? == 0 {
                return Poll::Ready(Ok(0));
            }
            let n = want.min(this.end - this.start);
            out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
            this.start += n;
            n
        };
        if this.frame_left != usize::MAX {
            this.frame_left -= n;
            if this.frame_left == 0 {
                this.release();
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl<R> Drop for FrameReader<R> {
    fn drop(&mut self) {
        self.release();
        self.budget.leave(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use futures::FutureExt;
    use futures::io::AsyncReadExt;

    /// A frame of one segment of `words` words, with its body.
    fn frame(words: u32, fill: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&words.to_le_bytes());
        f.extend(std::iter::repeat_n(fill, 8 * words as usize));
        f
    }

    fn reader(
        bytes: Vec<u8>,
        budget: &Rc<FrameBudget>,
    ) -> FrameReader<futures::io::Cursor<Vec<u8>>> {
        let gate = Rc::new(ConnState::new(16, Rc::new(Counters::default())));
        FrameReader::new(
            futures::io::Cursor::new(bytes),
            gate,
            Rc::clone(budget),
            80 << 20,
            4096,
        )
    }

    fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 100];
        loop {
            match r.read(&mut chunk).now_or_never()? {
                Ok(0) => return Some(out),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn frames_pass_through_unchanged() {
        let budget = FrameBudget::new(1 << 20);
        let mut bytes = frame(3, 1);
        bytes.extend(frame(20_000, 2));
        bytes.extend(frame(0, 3));
        let mut r = reader(bytes.clone(), &budget);
        assert_eq!(read_all(&mut r).unwrap(), bytes);
        assert_eq!(budget.in_use_bytes(), 0, "every frame gave its budget back");
    }

    #[test]
    fn a_large_frame_waits_for_budget_and_small_ones_do_not() {
        let budget = FrameBudget::new(200_000);
        // Another connection holds most of the budget.
        let holder = 8 * 20_000 + 8;
        let mut first = reader(frame(20_000, 1), &budget);
        let mut head = [0u8; 8];
        first.read_exact(&mut head).now_or_never().unwrap().unwrap();
        assert_eq!(budget.in_use_bytes(), holder);

        let mut small = reader(frame(100, 2), &budget);
        assert_eq!(read_all(&mut small).unwrap(), frame(100, 2));

        let mut large = reader(frame(10_000, 3), &budget);
        let mut buf = [0u8; 8];
        assert!(
            large.read(&mut buf).now_or_never().is_none(),
            "no budget yet"
        );
        assert_eq!(budget.waits_total.get(), 1);
        // The first frame is read to its end: its budget comes back.
        assert!(read_all(&mut first).is_some());
        assert_eq!(read_all(&mut large).unwrap(), frame(10_000, 3));
        assert_eq!(budget.in_use_bytes(), 0);
    }

    #[test]
    fn a_frame_over_the_frame_limit_takes_no_budget() {
        let budget = FrameBudget::new(100_000);
        let mut header = Vec::new();
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut r = reader(header, &budget);
        let mut head = [0u8; 8];
        r.read_exact(&mut head).now_or_never().unwrap().unwrap();
        assert_eq!(
            budget.in_use_bytes(),
            0,
            "the RPC layer refuses it; nothing is held"
        );
        let mut other = reader(frame(10_000, 1), &budget);
        assert_eq!(read_all(&mut other).unwrap(), frame(10_000, 1));
    }

    #[test]
    fn a_frame_larger_than_the_budget_takes_all_of_it() {
        let budget = FrameBudget::new(100_000);
        let mut r = reader(frame(50_000, 7), &budget);
        let mut head = [0u8; 8];
        r.read_exact(&mut head).now_or_never().unwrap().unwrap();
        assert_eq!(budget.in_use_bytes(), 100_000);
        drop(r);
        assert_eq!(
            budget.in_use_bytes(),
            0,
            "a dropped reader gives its budget back"
        );
    }
}
