//! Snapshot directories to remove, off the shard's thread.
//!
//! A failed stream's copy or a superseded checkpoint can hold a shard's worth of tables, and
//! unlinking them can take a while. Their owners let go of them in `Drop`, which cannot wait
//! for glommio's blocking thread, so they bury the directory here; the replica's tick, and
//! the next snapshot made, received or installed, hand what was buried to the blocking
//! thread. Directory names are never reused within a process, so a removal that comes later
//! changes nothing else; what is still buried when the replica goes is removed then.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub(super) struct Graveyard {
    dirs: RefCell<Vec<PathBuf>>,
}

impl Graveyard {
    /// Leaves `dir` for removal by the next [`Graveyard::empty_in_background`].
    pub(super) fn bury(&self, dir: PathBuf) {
        self.dirs.borrow_mut().push(dir);
    }

    /// The directories buried and not yet handed off.
    #[cfg(test)]
    pub(super) fn buried(&self) -> Vec<PathBuf> {
        self.dirs.borrow().clone()
    }

    /// Removes what was buried on the blocking thread, in a task of its own.
    pub(super) fn empty_in_background(&self) {
        let dirs = std::mem::take(&mut *self.dirs.borrow_mut());
        if !dirs.is_empty() {
            glommio::spawn_local(remove_dirs(dirs)).detach();
        }
    }

    /// Removes what was buried, and waits for it.
    #[cfg(test)]
    pub(super) async fn empty(&self) {
        let dirs = std::mem::take(&mut *self.dirs.borrow_mut());
        remove_dirs(dirs).await;
    }
}

impl Drop for Graveyard {
    fn drop(&mut self) {
        // The replica is going away (outside its executor, perhaps): remove them here.
        for dir in self.dirs.get_mut().drain(..) {
            remove_dir(&dir);
        }
    }
}

/// Removes snapshot directories on the executor's blocking thread (unlinking a received
/// snapshot's tables can take a while), so the shard's thread goes on meanwhile.
/// One hand-off per directory, so that the state file's writes queued behind on that thread
/// (a vote) wait for one removal at most.
pub(super) async fn remove_dirs(dirs: Vec<PathBuf>) {
    for dir in dirs {
        corekv_storage::io::blocking(move || remove_dir(&dir)).await;
    }
}

/// Removes a snapshot directory now (a missing one is fine; a failure is logged: the next
/// start removes it).
pub(super) fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
            "could not remove a snapshot directory (removed at the next start)"),
    }
}
