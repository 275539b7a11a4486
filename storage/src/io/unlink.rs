//! Obsolete table files removed off the shard's thread. `unlink` is a blocking system call
//! that glommio's io_uring does not offer, and the last link's removal of a closed file is
//! where the file system frees its blocks; a compaction or a snapshot install makes several
//! tables obsolete at once. The last holder of an obsolete table queues its path with its open
//! file ([`Io::remove_soon`]); the engine's unlink task ([`Io::serve_unlinks`]) closes each file
//! (on the shard's thread: cheap while the file still has its name), then hands each unlink
//! to the blocking thread. A file some reader still has open (an iterator) is unlinked
//! open, so its blocks are freed where that reader closes it. Without a serving task (the
//! engine closed, or not yet started) a removal runs in place.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{File, Io};
use crate::error::Result;
use crate::io::FaultInjector;
use crate::signal::Signal;

/// The queue shared by every clone of one engine's [`Io`].
#[derive(Debug, Default)]
pub(crate) struct Unlinks {
    /// Paths to remove, each with a handle to its open file, if any.
    queue: RefCell<Vec<(PathBuf, Option<Rc<File>>)>>,
    /// A task drains the queue.
    serving: Cell<bool>,
    /// The task is asked to stop once the queue is empty.
    stopping: Cell<bool>,
    /// Files taken from the queue and not yet removed (being closed, or unlinked on the
    /// blocking thread).
    in_flight: Cell<usize>,
    /// Wakes the task: a path was queued, or stop.
    signal: Signal,
    /// Files removed by the task (`tables_deleted_total`).
    removed: Cell<u64>,
}

impl Io {
    /// Removes `path` now or, while the unlink task serves, on the blocking thread soon, after
    /// closing `file` if nothing else holds it. An error is returned only for a removal made
    /// in place; the task logs its own.
    pub(crate) fn remove_soon(&self, path: &Path, file: Option<Rc<File>>) -> Result<()> {
        let u = &self.unlinks;
        if !u.serving.get() {
            drop(file);
            return self.remove(path);
        }
        u.queue.borrow_mut().push((path.to_path_buf(), file));
        u.signal.notify();
        Ok(())
    }

    /// Whether removals are queued or running.
    pub(crate) fn unlinks_pending(&self) -> bool {
        let u = &self.unlinks;
        !u.queue.borrow().is_empty() || u.in_flight.get() > 0
    }

    /// Files the unlink task has removed.
    pub(crate) fn unlinks_removed(&self) -> u64 {
        self.unlinks.removed.get()
    }

    /// Asks the unlink task to stop once the queue is empty.
    pub(crate) fn stop_unlinks(&self) {
        self.unlinks.stopping.set(true);
        self.unlinks.signal.notify();
    }

    /// The unlink task: removes queued files on the blocking thread, one hand-off each,
    /// calling `after_batch` after each batch taken from the queue, until
    /// [`Io::stop_unlinks`] and an empty queue. Later removals run in place.
    pub(crate) async fn serve_unlinks(&self, after_batch: impl Fn()) {
        let u = &self.unlinks;
        if u.stopping.get() {
            return;
        }
        u.serving.set(true);
        loop {
            let seen = u.signal.generation();
            let batch = std::mem::take(&mut *u.queue.borrow_mut());
            if batch.is_empty() {
                if u.stopping.get() {
                    break;
                }
                u.signal.changed(seen).await;
                continue;
            }
            u.in_flight.set(batch.len());
            // A crash test's `settle` waits for the closes and the unlinks.
            let _running = self.faults.as_ref().map(FaultInjector::in_flight);
            let mut paths = Vec::with_capacity(batch.len());
            for (path, file) in batch {
                // Closed first, so that the unlink below is the last reference and frees the
                // blocks there, not in the close.
                if let Some(Ok(file)) = file.map(Rc::try_unwrap)
                    && let Err(e) = file.close().await
                {
                    tracing::warn!(error = %e, "could not close an obsolete table");
                }
                paths.push(path);
            }
            // One hand-off per file: a Raft state write queued behind on the blocking thread
            // (a vote) waits for one unlink at most, as behind the snapshot graveyard's. Each
            // is checked when it runs, not when queued: after a simulated crash nothing is
            // removed.
            for path in paths {
                match self.remove_off_thread(&path).await {
                    Ok(()) => u.removed.set(u.removed.get() + 1),
                    // The file stays; the next open deletes unreferenced tables.
                    Err(e) => tracing::warn!(error = %e, "could not delete an obsolete table"),
                }
            }
            u.in_flight.set(0);
            after_batch();
        }
        u.serving.set(false);
    }
}
