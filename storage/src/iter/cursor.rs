//! [`EngineIter`]: the engine's public iterator — a cursor over the live keys at one sequence
//! number that reads keys and values in place (from cached blocks and memtable chunks), with
//! no allocation per entry. [`crate::Engine::scan`] is built on it.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::user::VisibleIter;
use crate::backlog::{self, EngineBacklog};
use crate::error::Result;
use crate::snapshot::Snapshot;
use crate::version::Version;

/// A cursor over the live key-value pairs of an engine at one point in time, in one direction
/// (fixed when it is made by [`crate::Engine::iter`]).
///
/// * What it sees: the newest version of each key at or below its sequence number (the
///   snapshot's, or the latest acknowledged write's when it was made); tombstones and values
///   expired at the time it was made are skipped — exactly what [`crate::Engine::scan`]
///   returns.
/// * It may live across `.await`s while the engine keeps writing, flushing and compacting: it
///   registers a snapshot (writes keep the memtable versions it needs; compactions keep the
///   versions it needs) and **pins the version of the tables** it was made with, so their
///   files are not deleted until it is dropped. A long-lived iterator therefore holds disk
///   space (compacted-away tables) and memtables (flushed ones) — drop it when done.
/// * `key()` and `value()` borrow from the iterator: they are valid until the next move.
///
/// ```no_run
/// # async fn example(engine: &corekv_storage::Engine) -> corekv_storage::Result<u64> {
/// let mut bytes = 0;
/// let mut it = engine.iter(false, None)?;
/// it.seek_to_first().await?;
/// while it.valid() {
///     bytes += (it.key().len() + it.value().len()) as u64;
///     it.next().await?;
/// }
/// # Ok(bytes)
/// # }
/// ```
#[derive(Debug)]
pub struct EngineIter {
    it: VisibleIter,
    /// Keeps the versions the iterator reads from being dropped by writes and compactions.
    _snapshot: Snapshot,
    /// Keeps the tables (and their files) the iterator reads.
    _version: Rc<Version>,
    /// The engine's backlog: moves yield to the executor while background work is pending
    /// and the executor wants to preempt (see [`crate::backlog`]).
    backlog: Rc<EngineBacklog>,
}

impl EngineIter {
    pub(crate) fn new(
        it: VisibleIter,
        snapshot: Snapshot,
        version: Rc<Version>,
        backlog: Rc<EngineBacklog>,
    ) -> EngineIter {
        EngineIter {
            it,
            _snapshot: snapshot,
            _version: version,
            backlog,
        }
    }

    /// The sequence number the iterator reads at.
    pub fn seq(&self) -> crate::SeqNo {
        self._snapshot.seq()
    }

    /// Whether the iterator moves towards smaller keys.
    pub fn reverse(&self) -> bool {
        !self.it.forward()
    }

    /// Positions at the first live key (forward) or the last (reverse).
    pub async fn seek_to_first(&mut self) -> Result<()> {
        backlog::cooperate(&self.backlog).await;
        if self.it.forward() {
            self.it.seek_ge(&[]).await
        } else {
            self.it.seek_lt(None).await
        }
    }

    /// Forward: positions at the first live key `>= key`. Reverse: at the last live key
    /// `< key` (the exclusive end of a range, as in [`crate::ScanRange`]).
    pub async fn seek(&mut self, key: &[u8]) -> Result<()> {
        backlog::cooperate(&self.backlog).await;
        if self.it.forward() {
            self.it.seek_ge(key).await
        } else {
            self.it.seek_lt(Some(key)).await
        }
    }

    /// Whether the iterator is on a live key. False before the first seek and past the end.
    #[inline]
    pub fn valid(&self) -> bool {
        self.it.valid()
    }

    /// The current key (empty when not valid).
    #[inline]
    pub fn key(&self) -> &[u8] {
        if self.it.valid() { self.it.key() } else { &[] }
    }

    /// The current value (empty when not valid).
    #[inline]
    pub fn value(&self) -> &[u8] {
        if self.it.valid() {
            self.it.value()
        } else {
            &[]
        }
    }

    /// Moves to the next live key in the iterator's direction (a no-op when not valid).
    ///
    /// Going forward, a move that stays within the blocks the iterator already holds is done
    /// right here, synchronously, and the returned future is ready at once; only a move that
    /// reads a block boxes the asynchronous rest. (An `async fn` here would build a future of
    /// several hundred bytes per entry — the deepest path, through a block read — and copying
    /// it at each level of awaiting was ~10% of a warm `readseq`.) Reverse moves always take
    /// the boxed path.
    // Named like RocksDB's `Iterator::Next`; it cannot be `std::iter::Iterator::next` (the
    // items borrow the cursor, and the move may await a read).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Next<'_> {
        if !self.it.valid() {
            return Next(NextInner::Ready);
        }
        match self.it.next_fast() {
            // Background work pending and the executor wants the core: the move is done,
            // the returned future yields once first.
            Ok(()) => match self.backlog.check() {
                backlog::Cooperate::Go => Next(NextInner::Ready),
                c => Next(NextInner::Pending(Box::pin(async move {
                    c.run().await;
                    Ok(())
                }))),
            },
            Err(pending) => Next(NextInner::Pending(Box::pin(self.it.finish(pending)))),
        }
    }
}

/// The future of [`EngineIter::next`].
pub struct Next<'a>(NextInner<'a>);

enum NextInner<'a> {
    /// The move is done.
    Ready,
    /// The move reads a block (or yields to the executor first).
    Pending(Pin<Box<dyn Future<Output = Result<()>> + 'a>>),
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            NextInner::Ready => "Next(ready)",
            NextInner::Pending(_) => "Next(pending)",
        })
    }
}

impl Future for Next<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.0 {
            NextInner::Ready => Poll::Ready(Ok(())),
            NextInner::Pending(f) => f.as_mut().poll(cx),
        }
    }
}
