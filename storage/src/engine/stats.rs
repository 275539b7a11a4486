//! The engine's counters, gathered from its components.

use super::*;

impl Engine {
    /// A copy of the engine's counters.
    pub fn stats(&self) -> Stats {
        let mut s = *self.inner.stats.borrow();
        let st = self.inner.state.borrow();
        s.seq_last = st.last_seq;
        s.seq_visible = st.visible_seq;
        {
            let mem = st.mem.borrow();
            s.memtable_bytes = mem.bytes() as u64;
            s.memtable_keys = mem.keys() as u64;
            s.memtable_versions = mem.versions() as u64;
        }
        s.memtables_immutable = st.imm.len() as u64;
        let v = &st.version;
        let mut per_level = [(0u64, 0u64); 7];
        for (l, files) in v.levels.iter().enumerate() {
            let slot = &mut per_level[l.min(6)];
            slot.0 += files.len() as u64;
            slot.1 += v.level_bytes(l);
        }
        s.set_levels(per_level);
        s.tables_live = per_level.iter().map(|p| p.0).sum();
        s.tables_bytes = per_level.iter().map(|p| p.1).sum();
        s.compaction_pending_bytes = picker::pending_compaction_bytes(v, &self.inner.targets);
        let b = &self.inner.backlog;
        s.background_pending = u64::from(b.pending());
        s.background_backlog_permille = b.backlog().permille();
        s.background_shares = b.shares() as u64;
        let c = self.inner.cache.counters();
        s.block_cache_hits_total = c.hits;
        s.block_cache_misses_total = c.misses;
        s.block_cache_evictions_total = c.evictions;
        s.block_cache_data_bytes = c.used_bytes;
        s.block_cache_pinned_bytes = c.pinned_bytes;
        s.block_cache_capacity_bytes = c.capacity_bytes;
        if let Some(m) = self.inner.manifest.borrow().as_ref() {
            s.manifest_edits_total = m.edits_written();
        }
        s.snapshots_live = self.inner.snapshots.count() as u64;
        let w = self.inner.wal.stats();
        s.read_only =
            u64::from(self.inner.wal.failure().is_some() || self.inner.bg_error.borrow().is_some());
        s.wal_records_total = w.records_total;
        s.wal_write_bytes_total = w.write_bytes_total;
        s.wal_writes_total = w.writes_total;
        s.wal_syncs_total = w.syncs_total;
        s.wal_group_records_1_total = w.group_records[0];
        s.wal_group_records_2_3_total = w.group_records[1];
        s.wal_group_records_4_7_total = w.group_records[2];
        s.wal_group_records_8_15_total = w.group_records[3];
        s.wal_group_records_16_31_total = w.group_records[4];
        s.wal_group_records_32_plus_total = w.group_records[5];
        s.wal_group_records_max = w.group_records_max;
        s.wal_segments_created_total = w.segments_created_total;
        s.wal_segments_deleted_total = w.segments_deleted_total;
        s.wal_segments_live = w.segments_live;
        s.wal_segments_bytes = w.segments_bytes;
        s.wal_io_errors_total = w.io_errors_total;
        s.recovery_records_replayed = w.recovery.records_replayed;
        s.recovery_torn_tails_cut = w.recovery.torn_tails_cut;
        s.recovery_torn_bytes_cut = w.recovery.torn_bytes_cut;
        s.recovery_segments_dropped = w.recovery.segments_dropped;
        s.recovery_corruptions_skipped = w.recovery.corruptions_skipped;
        s
    }

    /// The engine's WAL (read-only access for inspection and tests).
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }
}
