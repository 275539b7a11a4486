//! Applying committed entries to the engine and answering their proposers; the group's
//! counters and latency histograms.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use raft::eraftpb::{Entry, EntryType};

use super::settings::LATENCY_US_MAX;
use super::{ENTRY_TIME_BYTES, GroupCounts, Inner, ProposeError};

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

/// Counts an append of `n` entries (none: no append).
pub(super) fn count_append(inner: &Inner, n: usize) {
    if n > 0 {
        count(inner, |c| {
            c.log_appends += 1;
            c.log_appended_entries += n as u64;
        });
    }
}

pub(super) fn count(inner: &Inner, f: impl FnOnce(&mut GroupCounts)) {
    let mut c = inner.counts.get();
    f(&mut c);
    inner.counts.set(c);
}

pub(super) fn latency_histogram() -> Result<hdrhistogram::Histogram<u64>, raft::Error> {
    hdrhistogram::Histogram::new_with_bounds(1, LATENCY_US_MAX, 2)
        .map_err(|e| raft::Error::ConfigInvalid(e.to_string()))
}

/// Records the time since `since` (at least 1 µs, at most the histogram's bound).
pub(super) fn record_latency(h: &RefCell<hdrhistogram::Histogram<u64>>, since: Instant) {
    let us = (since.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
    h.borrow_mut().saturating_record(us);
}

/// Median and 99th percentile; zeros when nothing was recorded.
pub(super) fn quantiles(h: &RefCell<hdrhistogram::Histogram<u64>>) -> (u64, u64) {
    let h = h.borrow();
    if h.is_empty() {
        return (0, 0);
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}
