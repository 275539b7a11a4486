//! Applying committed entries to the engine and answering their proposers.

use std::rc::Rc;

use raft::eraftpb::{Entry, EntryType};

use super::settings::{count, record_latency};
use super::{ENTRY_TIME_BYTES, Inner, ProposeError};

/// Applies `entries` (committed, in order) through the group's [`super::ApplyFn`], marks each
/// applied and answers the proposal waiting for it, if any.
pub(super) async fn apply_entries(inner: &Rc<Inner>, entries: Vec<Entry>) -> Result<(), String> {
    for entry in entries {
        let index = entry.index;
        let answer = if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            let Some((time, _)) = entry.data.split_first_chunk::<ENTRY_TIME_BYTES>() else {
                return Err(format!(
                    "entry {index}: {} bytes, no time",
                    entry.data.len()
                ));
            };
            let engine = &inner.engine;
            engine
                .begin_entry(index, u64::from_le_bytes(*time))
                .map_err(|e| e.to_string())?;
            // A view of the entry's bytes, not a copy.
            let command = entry.data.slice(ENTRY_TIME_BYTES..);
            let answer = (inner.apply)(engine.clone(), command)
                .await
                .map_err(|e| format!("entry {index} could not be applied here: {e}"))?;
            engine.end_entry().map_err(|e| e.to_string())?;
            Some(answer)
        } else {
            // A new leader's empty entry, or a configuration change (not proposed yet).
            None
        };
        inner.applied.set(index);
        let waiter = inner.proposals.borrow_mut().remove(&index);
        if let Some((term, tx, proposed)) = waiter {
            let _ = tx.send(match answer {
                Some(answer) if entry.term == term => {
                    record_latency(&inner.commit_latency_us, proposed);
                    count(inner, |c| c.proposals_committed += 1);
                    Ok(answer)
                }
                _ => Err(ProposeError::Dropped),
            });
        }
    }
    Ok(())
}
