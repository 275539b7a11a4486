//! Engine counters. [`Stats::counters`] lists them as `(name, value)` pairs with stable
//! snake_case names that carry their unit (`_total` = a counter since open, `_bytes`, `_ms`),
//! so the server can export them without knowing each field.

macro_rules! stats_struct {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// A point-in-time copy of one engine's counters and gauges.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Stats {
            /// Every counter as `(stable name, value)`, in declaration order.
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

stats_struct! {
    /// Write calls acknowledged (put, put_with_ttl, delete, write, applied compare_and_set).
    writes_total,
    /// Individual operations acknowledged (a batch of n counts n).
    write_ops_total,
    /// Key + value bytes acknowledged.
    write_payload_bytes_total,
    /// `write` calls acknowledged (atomic batches, of one write or many; the server writes
    /// every put and delete this way).
    batches_total,
    /// compare_and_set calls that wrote.
    cas_applied_total,
    /// compare_and_set calls that found a different value and wrote nothing.
    cas_mismatch_total,
    /// Point reads (get, get_at).
    gets_total,
    /// Scans.
    scans_total,
    /// Entries returned by scans.
    scan_entries_total,
    /// Iterators made (`Engine::iter`; scans make one each too, not counted here).
    iterators_total,
    /// Writes rejected by a size limit or a bad argument.
    rejected_invalid_total,
    /// Writes rejected because the engine is read-only after an I/O failure.
    rejected_read_only_total,
    /// Writes that failed with an I/O error (never acknowledged).
    failed_io_total,
    /// 1 when an I/O failure made the engine read-only.
    read_only,
    /// Highest sequence number handed out.
    seq_last,
    /// Highest sequence number readers see (acknowledged writes).
    seq_visible,
    /// Live snapshot handles.
    snapshots_live,
    /// Approximate memtable memory.
    memtable_bytes,
    /// The configured memtable bound.
    memtable_bytes_max,
    /// Distinct keys in the memtable (including tombstones).
    memtable_keys,
    /// Versions in the memtable.
    memtable_versions,
    /// 1 in `sync` durability mode.
    durability_sync,
    /// The fsync interval in `periodic` mode, 0 otherwise.
    durability_periodic_interval_ms,
    /// 1 in `none` durability mode (acknowledged writes may be lost on any crash).
    durability_none,
    /// Records appended to the WAL.
    wal_records_total,
    /// Bytes handed to WAL writes (whole 4 KiB blocks, the rewritten tail block included).
    wal_write_bytes_total,
    /// WAL writes (one per group commit).
    wal_writes_total,
    /// WAL fdatasync calls.
    wal_syncs_total,
    /// Group commit sizes: WAL writes that carried exactly 1 record.
    wal_group_records_1_total,
    /// ... 2-3 records.
    wal_group_records_2_3_total,
    /// ... 4-7 records.
    wal_group_records_4_7_total,
    /// ... 8-15 records.
    wal_group_records_8_15_total,
    /// ... 16-31 records.
    wal_group_records_16_31_total,
    /// ... 32 or more records.
    wal_group_records_32_plus_total,
    /// Most records carried by one WAL write.
    wal_group_records_max,
    /// WAL writes started while another was in flight (`sync` mode).
    wal_writes_overlapped_total,
    /// Zero bytes the WAL left before such writes so that each starts on a fresh block.
    wal_gap_bytes_total,
    /// WAL writes or syncs that failed.
    wal_io_errors_total,
    /// WAL segment files created.
    wal_segments_created_total,
    /// WAL segment files deleted.
    wal_segments_deleted_total,
    /// WAL segment files present.
    wal_segments_live,
    /// Bytes of WAL segment files present (preallocated size).
    wal_segments_bytes,
    /// Records replayed by the last open.
    recovery_records_replayed,
    /// Torn tails cut off by the last open (0 or 1).
    recovery_torn_tails_cut,
    /// Bytes of torn tail cut off by the last open (from the torn record to the last non-zero
    /// byte).
    recovery_torn_bytes_cut,
    /// Segments dropped by `skip-to-last-good` recovery at the last open.
    recovery_segments_dropped,
    /// Damaged records that `skip-to-last-good` recovery skipped over at the last open (0 or 1:
    /// everything after the first is dropped unread).
    recovery_corruptions_skipped,
    /// Immutable memtables waiting for (or in) their flush.
    memtables_immutable,
    /// Passes over a full active memtable to drop the versions no reader needs any more
    /// (sparing or delaying its flush).
    memtable_prunes_total,
    /// Memtable bytes those passes freed.
    memtable_pruned_bytes_total,
    /// Microseconds those passes took (the shard runs nothing else meanwhile).
    memtable_prune_us_total,
    /// Memtable flushes finished (each writes one level-0 table).
    flushes_total,
    /// Bytes of level-0 tables written by flushes.
    flush_bytes_written_total,
    /// Flushes that stopped filling the block cache with their blocks
    /// (`Options::block_cache_fill_on_table_write`) because another memtable was waiting
    /// behind them: writes were outrunning the flush.
    flush_cache_fill_stops_total,
    /// Compactions finished (trivial moves excluded).
    compactions_total,
    /// Compactions that moved a table down without rewriting it.
    compaction_trivial_moves_total,
    /// Bytes of tables read by compactions.
    compaction_bytes_read_total,
    /// Bytes of tables written by compactions.
    compaction_bytes_written_total,
    /// Versions dropped by compactions (shadowed, deleted or expired, no snapshot needs them).
    compaction_versions_dropped_total,
    /// Obsolete tables (replaced by a compaction or a snapshot install, or a new table a
    /// snapshot install overtook) the unlink task deleted on the blocking thread once no
    /// version held them. Removals while the engine closes, and failed ones, are not counted.
    tables_deleted_total,
    /// Estimated bytes compactions still have to rewrite.
    compaction_pending_bytes,
    /// 1 while a flush or compaction waits (the foreground then yields at preemption points).
    background_pending,
    /// How close the background backlog is to the bounds that stall writes, in thousandths.
    background_backlog_permille,
    /// Scheduler shares this engine asks for its background queue (`background_shares` when
    /// idle, up to 1000 with the backlog).
    background_shares,
    /// Writes that had to wait (active memtable full with the immutable queue at its bound, or
    /// too many level-0 tables, or too many pending compaction bytes).
    write_stalls_total,
    /// Time writes spent stalled, in microseconds.
    write_stall_us_total,
    /// Stalls because the immutable memtable queue was full.
    write_stalls_memtables_total,
    /// Stalls because level 0 held `l0_stop_writes_files` tables.
    write_stalls_l0_total,
    /// Stalls because of pending compaction bytes.
    write_stalls_pending_compaction_total,
    /// Background (flush or compaction) failures; the engine refuses writes after one.
    background_errors_total,
    /// Block cache lookups that found the block.
    block_cache_hits_total,
    /// Block cache lookups that missed (a disk read followed).
    block_cache_misses_total,
    /// Blocks evicted from the cache.
    block_cache_evictions_total,
    /// Bytes of data blocks in the cache.
    block_cache_data_bytes,
    /// Bytes of pinned index and filter blocks charged to the cache.
    block_cache_pinned_bytes,
    /// The cache budget.
    block_cache_capacity_bytes,
    /// Point reads that a table's bloom filter answered "absent" (no block read).
    bloom_useful_total,
    /// Filter "maybe" answers where the table had the key.
    bloom_true_positive_total,
    /// Filter "maybe" answers where the table had no visible version (false positives).
    bloom_false_positive_total,
    /// Point reads answered by a memtable.
    gets_memtable_hits_total,
    /// Live SSTables.
    tables_live,
    /// Bytes of live SSTables.
    tables_bytes,
    /// Tables in level 0.
    level0_files,
    /// Bytes in level 0.
    level0_bytes,
    /// Tables in level 1.
    level1_files,
    /// Bytes in level 1.
    level1_bytes,
    /// Tables in level 2.
    level2_files,
    /// Bytes in level 2.
    level2_bytes,
    /// Tables in level 3.
    level3_files,
    /// Bytes in level 3.
    level3_bytes,
    /// Tables in level 4.
    level4_files,
    /// Bytes in level 4.
    level4_bytes,
    /// Tables in level 5.
    level5_files,
    /// Bytes in level 5.
    level5_bytes,
    /// Tables in level 6 and deeper.
    level6_files,
    /// Bytes in level 6 and deeper.
    level6_bytes,
    /// Manifest edits written since open.
    manifest_edits_total,
    /// Torn manifest tails cut off by the last open (0 or 1).
    manifest_torn_tails_cut,
}

impl Stats {
    /// `(tables, bytes)` per level, level 6 counting every deeper level too.
    pub fn levels(&self) -> [(u64, u64); 7] {
        [
            (self.level0_files, self.level0_bytes),
            (self.level1_files, self.level1_bytes),
            (self.level2_files, self.level2_bytes),
            (self.level3_files, self.level3_bytes),
            (self.level4_files, self.level4_bytes),
            (self.level5_files, self.level5_bytes),
            (self.level6_files, self.level6_bytes),
        ]
    }

    /// Sets the per-level `(tables, bytes)` that [`Stats::levels`] reads back.
    pub(crate) fn set_levels(&mut self, levels: [(u64, u64); 7]) {
        [
            (self.level0_files, self.level0_bytes),
            (self.level1_files, self.level1_bytes),
            (self.level2_files, self.level2_bytes),
            (self.level3_files, self.level3_bytes),
            (self.level4_files, self.level4_bytes),
            (self.level5_files, self.level5_bytes),
            (self.level6_files, self.level6_bytes),
        ] = levels;
    }

    /// Copies the WAL's counters, its recovery report included.
    pub(crate) fn record_wal(&mut self, w: &crate::wal::WalStats) {
        self.wal_records_total = w.records_total;
        self.wal_write_bytes_total = w.write_bytes_total;
        self.wal_writes_total = w.writes_total;
        self.wal_syncs_total = w.syncs_total;
        self.wal_group_records_1_total = w.group_records[0];
        self.wal_group_records_2_3_total = w.group_records[1];
        self.wal_group_records_4_7_total = w.group_records[2];
        self.wal_group_records_8_15_total = w.group_records[3];
        self.wal_group_records_16_31_total = w.group_records[4];
        self.wal_group_records_32_plus_total = w.group_records[5];
        self.wal_group_records_max = w.group_records_max;
        self.wal_writes_overlapped_total = w.writes_overlapped_total;
        self.wal_gap_bytes_total = w.gap_bytes_total;
        self.wal_segments_created_total = w.segments_created_total;
        self.wal_segments_deleted_total = w.segments_deleted_total;
        self.wal_segments_live = w.segments_live;
        self.wal_segments_bytes = w.segments_bytes;
        self.wal_io_errors_total = w.io_errors_total;
        self.recovery_records_replayed = w.recovery.records_replayed;
        self.recovery_torn_tails_cut = w.recovery.torn_tails_cut;
        self.recovery_torn_bytes_cut = w.recovery.torn_bytes_cut;
        self.recovery_segments_dropped = w.recovery.segments_dropped;
        self.recovery_corruptions_skipped = w.recovery.corruptions_skipped;
    }

    /// Copies the block cache's counters.
    pub(crate) fn record_cache(&mut self, c: &crate::cache::CacheCounters) {
        self.block_cache_hits_total = c.hits;
        self.block_cache_misses_total = c.misses;
        self.block_cache_evictions_total = c.evictions;
        self.block_cache_data_bytes = c.used_bytes;
        self.block_cache_pinned_bytes = c.pinned_bytes;
        self.block_cache_capacity_bytes = c.capacity_bytes;
    }
}
