//! The engine's counters: its own, and each component's report.

use super::*;

impl Engine {
    /// A copy of the engine's counters.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let mut s = *inner.stats.borrow();
        {
            let state = inner.state.borrow();
            state.report(&mut s);
            s.compaction_pending_bytes = inner.picker.pending_bytes(state.version());
        }
        let b = &inner.backlog;
        s.background_pending = u64::from(b.pending());
        s.background_backlog_permille = b.backlog().permille();
        s.background_shares = b.shares() as u64;
        s.record_cache(&inner.cache.counters());
        s.manifest_edits_total = inner.manifest.edits_written();
        s.snapshots_live = inner.snapshots.count() as u64;
        s.tables_deleted_total = inner.io.unlinks_removed();
        s.read_only = u64::from(inner.log.failure().is_some() || inner.workers.has_failed());
        s.record_wal(&inner.log.stats());
        s
    }
}
