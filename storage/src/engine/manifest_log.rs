//! [`ManifestLog`]: the engine's manifest (the log of version edits) and what it says.

use std::cell::RefCell;

use glommio::sync::{Permit, Semaphore};

use crate::SeqNo;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, ManifestState, VersionEdit};

pub(super) struct ManifestLog {
    /// The log; taken out while an edit is appended, None once closed.
    file: RefCell<Option<Manifest>>,
    /// What the log says: the metadata of the live tables.
    state: RefCell<ManifestState>,
    /// Serialises edits: flushes and compactions run concurrently, and each edit must be
    /// checked against, and installed after, the one before it.
    lock: Semaphore,
    levels_max: usize,
}

impl ManifestLog {
    pub(super) fn new(file: Manifest, state: ManifestState, levels_max: usize) -> ManifestLog {
        ManifestLog {
            file: RefCell::new(Some(file)),
            state: RefCell::new(state),
            lock: Semaphore::new(1),
            levels_max,
        }
    }

    /// Waits for the right to append the next edit; hold it until the edit's version is
    /// installed.
    pub(super) async fn lock(&self) -> Result<Permit<'_>> {
        self.lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::InvalidArgument(format!("manifest lock: {e}")))
    }

    /// Checks `edit` against the live tables and appends it; durable when this returns.
    /// `next_file_number` names a new manifest file if the log rolls over. The caller holds
    /// [`ManifestLog::lock`].
    pub(super) async fn append(
        &self,
        edit: &VersionEdit,
        next_file_number: impl FnOnce() -> u64,
    ) -> Result<()> {
        let mut next_state = self.state.borrow().clone();
        next_state
            .apply(edit, self.levels_max)
            .map_err(|d| Error::InvalidArgument(format!("bad version edit: {d}")))?;
        let mut file = self.file.borrow_mut().take().ok_or(Error::Closed)?;
        let r = file.append(edit, &next_state, next_file_number).await;
        *self.file.borrow_mut() = Some(file);
        r?;
        *self.state.borrow_mut() = next_state;
        Ok(())
    }

    /// The last external-log entry whose writes are all in tables (0 = none).
    pub(super) fn applied_index(&self) -> u64 {
        self.state.borrow().applied_index
    }

    /// The last sequence number handed out before the writes now in tables: every write at or
    /// below it is in a table (some may since have been compacted away).
    pub(super) fn flushed_seq(&self) -> SeqNo {
        self.state.borrow().flushed_seq
    }

    /// The time of that entry (0 = none).
    pub(super) fn applied_time_ms(&self) -> u64 {
        self.state.borrow().applied_time_ms
    }

    /// Edits written since the engine opened (0 once closed).
    pub(super) fn edits_written(&self) -> u64 {
        self.file
            .borrow()
            .as_ref()
            .map_or(0, Manifest::edits_written)
    }

    /// Closes the log; later appends fail with [`Error::Closed`].
    pub(super) async fn close(&self) -> Result<()> {
        let file = self.file.borrow_mut().take();
        match file {
            Some(f) => f.close().await,
            None => Ok(()),
        }
    }
}
