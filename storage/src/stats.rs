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
    /// Atomic batches (`write`) acknowledged.
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
    /// Writes rejected by a size limit or a bad argument.
    rejected_invalid_total,
    /// Writes rejected because the memtable was at `memtable_size_bytes_max`.
    rejected_memtable_full_total,
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
}
