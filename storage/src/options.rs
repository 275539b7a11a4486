//! Engine options, with limits that every write is checked against at the boundary.

use crate::error::{Error, Limit, Result};

/// What an acknowledged write promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A write is acknowledged only after the WAL block holding it has been written and
    /// `fdatasync`ed: it survives a process crash and a power loss. Concurrent writers share
    /// one `fdatasync` (group commit).
    Sync,
    /// A write is acknowledged once written to the WAL file; the WAL is `fdatasync`ed at least
    /// every `interval_ms`. Survives a process crash (`kill -9`); a power loss can lose up to the
    /// last `interval_ms` of acknowledged writes.
    Periodic {
        /// Milliseconds between background `fdatasync`s; at least 1.
        interval_ms: u64,
    },
    /// A write is acknowledged once it is in the memtable; the WAL is written in the background
    /// and synced only when a segment fills up and at `close`. A crash can lose any
    /// acknowledged write that was not yet synced (a process crash: not yet written).
    None,
}

impl std::str::FromStr for Durability {
    type Err = Error;

    /// Parses `sync`, `none` or `periodic:MS` (for example `periodic:100`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sync" => Ok(Durability::Sync),
            "none" => Ok(Durability::None),
            _ => {
                let ms = s
                    .strip_prefix("periodic:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|&ms| ms >= 1)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "durability {s:?}: expected `sync`, `none` or `periodic:MS` with MS >= 1"
                        ))
                    })?;
                Ok(Durability::Periodic { interval_ms: ms })
            }
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Sync => f.write_str("sync"),
            Durability::Periodic { interval_ms } => write!(f, "periodic:{interval_ms}"),
            Durability::None => f.write_str("none"),
        }
    }
}

/// What recovery does when it finds a damaged WAL record (modelled on RocksDB's
/// `WALRecoveryMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalRecoveryMode {
    /// Default. A torn or zero-filled tail of the last segment (a crash during a write that was
    /// never acknowledged as durable) is logged, counted and cut off. Damage anywhere else,
    /// including a damaged record that a later record proves was once durable, fails `open`
    /// with [`Error::Corruption`] naming the file and offset.
    #[default]
    TolerateTornTail,
    /// Replay up to the last good record before the first damage, wherever it is, and drop
    /// everything after it (the rest of that segment is zeroed, later segments are deleted).
    /// Acknowledged writes after the damage are lost: use this only to get a damaged engine
    /// running again when no better copy exists. What was dropped is logged and counted.
    SkipToLastGood,
    /// Any damage, even a torn tail, fails `open` with [`Error::Corruption`].
    AbsoluteConsistency,
}

impl std::str::FromStr for WalRecoveryMode {
    type Err = Error;

    /// Parses `tolerate-torn-tail`, `skip-to-last-good` or `absolute-consistency`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tolerate-torn-tail" => Ok(WalRecoveryMode::TolerateTornTail),
            "skip-to-last-good" => Ok(WalRecoveryMode::SkipToLastGood),
            "absolute-consistency" => Ok(WalRecoveryMode::AbsoluteConsistency),
            _ => Err(Error::InvalidArgument(format!(
                "wal recovery mode {s:?}: expected `tolerate-torn-tail`, `skip-to-last-good` \
                 or `absolute-consistency`"
            ))),
        }
    }
}

impl std::fmt::Display for WalRecoveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WalRecoveryMode::TolerateTornTail => "tolerate-torn-tail",
            WalRecoveryMode::SkipToLastGood => "skip-to-last-good",
            WalRecoveryMode::AbsoluteConsistency => "absolute-consistency",
        })
    }
}

/// The WAL's block size: every write is a whole number of these, at an offset that is a
/// multiple of it (O_DIRECT).
pub const WAL_BLOCK_SIZE_BYTES: usize = 4096;

/// Options for one engine instance (one shard).
#[derive(Debug, Clone)]
pub struct Options {
    /// What an acknowledged write promises. Default: [`Durability::Sync`].
    pub durability: Durability,
    /// Largest key accepted. Default 16 KiB.
    pub key_size_bytes_max: usize,
    /// Largest value accepted. Default 8 MiB.
    pub value_size_bytes_max: usize,
    /// Largest atomic write (sum of key and value bytes of a batch). Default 64 MiB.
    pub batch_size_bytes_max: usize,
    /// Bound on the active memtable's memory (keys, values and per-entry overhead). A write
    /// that would cross it first turns the memtable immutable and starts a new one; the
    /// immutable one is flushed to a level-0 SSTable in the background. Default 64 MiB.
    pub memtable_size_bytes_max: usize,
    /// Most immutable memtables waiting for their flush. When the active memtable is full and
    /// this many wait, writes stall (counted in `write_stalls_total`) until a flush finishes.
    /// Memory for memtables is bounded by `(1 + this) × memtable_size_bytes_max`. Default 2.
    pub memtables_immutable_max: usize,
    /// Target size of an SSTable data block on disk. A multiple of 4 KiB keeps blocks
    /// page-aligned (one O_DIRECT read each); smaller sizes (for tests) pack blocks. 256 B to
    /// 1 MiB. Default 4 KiB.
    pub block_size_bytes: usize,
    /// Bloom filter bits per key (1..=32; about 1% false positives at 10). Default 10.
    pub bloom_bits_per_key: u32,
    /// Block cache budget: decoded data blocks plus every open table's index and filter
    /// (pinned). corekv reads with O_DIRECT, so this cache is the only one between a read and
    /// the disk (there is no OS page cache behind it). Default 256 MiB per engine (per shard):
    /// enough for the blocks, indexes and filters of about 1.5 M entries of 16-byte keys and
    /// 100-byte values; size it to the hot data. `corekv-server` sets it from `--block-cache-bytes`
    /// (default: a quarter of physical memory split between the shards).
    pub block_cache_size_bytes: usize,
    /// Put the data blocks of tables written by flushes and compactions into the block cache
    /// as they are written (they are in memory then; no read). With O_DIRECT no page cache
    /// keeps freshly written data warm, so without this every first read of a flushed or
    /// compacted block is a disk read (RocksDB's `prepopulate_block_cache`, extended to
    /// compaction outputs). The blocks go through the CLOCK like any other, so with data much
    /// larger than the cache they only displace blocks that are not being read. Default true.
    pub block_cache_fill_on_table_write: bool,
    /// Block compression for each level (index = level); levels past the end use the last
    /// entry; empty = no compression anywhere. Default empty.
    pub compression_per_level: Vec<crate::sst::Compression>,
    /// Compaction output tables are cut once they reach this size (at a key boundary).
    /// Default 32 MiB.
    pub target_file_size_bytes: usize,
    /// Target size of level 1; level `n` targets this × `level_size_ratio^(n-1)`. Default
    /// 256 MiB.
    pub level1_size_bytes_max: u64,
    /// Growth factor between level targets (2..=100). Default 10.
    pub level_size_ratio: u64,
    /// Number of levels, level 0 included (2..=16). Default 7.
    pub levels_max: usize,
    /// Level-0 tables that trigger a level-0 compaction. Default 4.
    pub l0_compaction_trigger_files: usize,
    /// Level-0 tables at which writes stall until compaction catches up (counted in
    /// `write_stalls_total`). Default 20.
    pub l0_stop_writes_files: usize,
    /// Estimated bytes compaction still has to rewrite at which writes stall. Default 64 GiB.
    pub pending_compaction_bytes_stop: u64,
    /// The manifest log is rewritten as one snapshot once it grows past this. Default 64 MiB.
    pub manifest_size_bytes_max: u64,
    /// Scheduler shares of the background (flush and compaction) task queue while nothing
    /// waits; foreground tasks have glommio's default of 1000. The shares rise with the
    /// backlog (waiting memtables, level 0 past its trigger, pending compaction bytes) up to
    /// 1000 at the bounds that stall writes (see `crate::backlog`). Default 250.
    pub background_shares: usize,
    /// While a flush or compaction is pending, engine calls let the executor poll for I/O and
    /// run the background queue at least this often, even if the foreground never waits
    /// (0 = off: only at the executor's own preemption points, glommio's default 100 ms).
    /// Default 1000 µs.
    pub background_poll_interval_us: u64,
    /// Size of each WAL segment file, allocated and zero-filled before use; the WAL rolls over
    /// to a new segment when the next record does not fit. A multiple of 4 KiB, at least
    /// 64 KiB. A record larger than a segment gets a segment of its own, sized to fit.
    /// Default 16 MiB: opening a fresh engine writes one segment of zeros and prepares a spare
    /// one in the background, so this is also what a new shard writes at first start.
    pub wal_segment_size_bytes: usize,
    /// Largest single WAL write (one group commit); more pending records wait for the next
    /// write. A multiple of 4 KiB, at least 4 KiB. Default 1 MiB.
    pub wal_write_bytes_max: usize,
    /// In `none` durability mode, writes are acknowledged before the WAL is written; once more
    /// than this many bytes of records wait to be written, writers wait for the WAL (so
    /// memory stays bounded). Default 64 MiB.
    pub wal_pending_bytes_max: usize,
    /// In `sync` durability mode, write WAL blocks through an `O_DSYNC` descriptor (write and
    /// device flush in one operation) instead of a write followed by `fdatasync` (two trips
    /// through the ring). Same durability either way. Default true.
    pub wal_dsync_writes: bool,
    /// What recovery does with a damaged WAL. Default [`WalRecoveryMode::TolerateTornTail`].
    pub wal_recovery_mode: WalRecoveryMode,
    /// Most entries one scan returns; a larger `ScanRange::limit` is clamped to it and the page
    /// says `more`. Default 100 000.
    pub scan_entries_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            key_size_bytes_max: 16 << 10,
            value_size_bytes_max: 8 << 20,
            batch_size_bytes_max: 64 << 20,
            memtable_size_bytes_max: 64 << 20,
            memtables_immutable_max: 2,
            block_size_bytes: 4096,
            bloom_bits_per_key: 10,
            block_cache_size_bytes: 256 << 20,
            block_cache_fill_on_table_write: true,
            compression_per_level: Vec::new(),
            target_file_size_bytes: 32 << 20,
            level1_size_bytes_max: 256 << 20,
            level_size_ratio: 10,
            levels_max: 7,
            l0_compaction_trigger_files: 4,
            l0_stop_writes_files: 20,
            pending_compaction_bytes_stop: 64 << 30,
            manifest_size_bytes_max: 64 << 20,
            background_shares: 250,
            background_poll_interval_us: 1000,
            wal_segment_size_bytes: 16 << 20,
            wal_write_bytes_max: 1 << 20,
            wal_pending_bytes_max: 64 << 20,
            wal_dsync_writes: true,
            wal_recovery_mode: WalRecoveryMode::TolerateTornTail,
            scan_entries_max: 100_000,
        }
    }
}

impl Options {
    /// Compression of tables written to `level`.
    pub fn compression_for_level(&self, level: usize) -> crate::sst::Compression {
        self.compression_per_level
            .get(level)
            .or(self.compression_per_level.last())
            .copied()
            .unwrap_or_default()
    }

    /// Checks that the options make sense together; `Engine::open` calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if self.key_size_bytes_max == 0 || self.key_size_bytes_max > u32::MAX as usize {
            return bad(format!(
                "key_size_bytes_max = {} must be in 1..=4 GiB",
                self.key_size_bytes_max
            ));
        }
        if self.value_size_bytes_max > u32::MAX as usize {
            return bad(format!(
                "value_size_bytes_max = {} must be at most 4 GiB",
                self.value_size_bytes_max
            ));
        }
        if self
            .key_size_bytes_max
            .saturating_add(self.value_size_bytes_max)
            > crate::sst::ENTRY_BYTES_MAX
        {
            return bad(format!(
                "key_size_bytes_max + value_size_bytes_max = {} must be at most {} (an entry \
                 must fit in one table block)",
                self.key_size_bytes_max
                    .saturating_add(self.value_size_bytes_max),
                crate::sst::ENTRY_BYTES_MAX
            ));
        }
        if self.batch_size_bytes_max == 0 || self.batch_size_bytes_max > u32::MAX as usize {
            return bad(format!(
                "batch_size_bytes_max = {} must be in 1..=4 GiB",
                self.batch_size_bytes_max
            ));
        }
        if self.memtable_size_bytes_max < 4096 {
            return bad(format!(
                "memtable_size_bytes_max = {} must be at least 4096",
                self.memtable_size_bytes_max
            ));
        }
        if self.wal_segment_size_bytes < 64 << 10
            || self.wal_segment_size_bytes % WAL_BLOCK_SIZE_BYTES != 0
        {
            return bad(format!(
                "wal_segment_size_bytes = {} must be a multiple of 4096 and at least 65536",
                self.wal_segment_size_bytes
            ));
        }
        if self.wal_write_bytes_max < WAL_BLOCK_SIZE_BYTES
            || self.wal_write_bytes_max % WAL_BLOCK_SIZE_BYTES != 0
        {
            return bad(format!(
                "wal_write_bytes_max = {} must be a multiple of 4096 and at least 4096",
                self.wal_write_bytes_max
            ));
        }
        if self.wal_pending_bytes_max < self.wal_write_bytes_max {
            return bad(format!(
                "wal_pending_bytes_max = {} must be at least wal_write_bytes_max = {}",
                self.wal_pending_bytes_max, self.wal_write_bytes_max
            ));
        }
        if self.scan_entries_max == 0 {
            return bad("scan_entries_max must be at least 1".to_string());
        }
        if self.memtables_immutable_max == 0 || self.memtables_immutable_max > 64 {
            return bad(format!(
                "memtables_immutable_max = {} must be in 1..=64",
                self.memtables_immutable_max
            ));
        }
        if !(256..=1 << 20).contains(&self.block_size_bytes) {
            return bad(format!(
                "block_size_bytes = {} must be in 256..=1048576",
                self.block_size_bytes
            ));
        }
        if !(1..=32).contains(&self.bloom_bits_per_key) {
            return bad(format!(
                "bloom_bits_per_key = {} must be in 1..=32",
                self.bloom_bits_per_key
            ));
        }
        if !(2..=16).contains(&self.levels_max) {
            return bad(format!(
                "levels_max = {} must be in 2..=16",
                self.levels_max
            ));
        }
        if !(2..=100).contains(&self.level_size_ratio) {
            return bad(format!(
                "level_size_ratio = {} must be in 2..=100",
                self.level_size_ratio
            ));
        }
        if self.target_file_size_bytes < 4096 || self.level1_size_bytes_max < 4096 {
            return bad(format!(
                "target_file_size_bytes = {} and level1_size_bytes_max = {} must be at least 4096",
                self.target_file_size_bytes, self.level1_size_bytes_max
            ));
        }
        if self.l0_compaction_trigger_files == 0
            || self.l0_stop_writes_files <= self.l0_compaction_trigger_files
        {
            return bad(format!(
                "need 1 <= l0_compaction_trigger_files ({}) < l0_stop_writes_files ({})",
                self.l0_compaction_trigger_files, self.l0_stop_writes_files
            ));
        }
        if self.manifest_size_bytes_max < 64 << 10 {
            return bad(format!(
                "manifest_size_bytes_max = {} must be at least 65536",
                self.manifest_size_bytes_max
            ));
        }
        if !(1..=1000).contains(&self.background_shares) {
            return bad(format!(
                "background_shares = {} must be in 1..=1000",
                self.background_shares
            ));
        }
        if self.background_poll_interval_us > 1_000_000 {
            return bad(format!(
                "background_poll_interval_us = {} must be at most 1000000 (0 = off)",
                self.background_poll_interval_us
            ));
        }
        for c in &self.compression_per_level {
            if let crate::sst::Compression::Zstd(l) = c
                && !(1..=19).contains(l)
            {
                return bad(format!("zstd level {l} must be in 1..=19"));
            }
        }
        Ok(())
    }

    /// Checks a key against the limits.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        check(Limit::KeySize, key.len(), self.key_size_bytes_max)
    }

    /// Checks a value against the limits.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        check(Limit::ValueSize, value.len(), self.value_size_bytes_max)
    }

    /// Checks the total payload of one atomic write.
    pub fn check_batch_bytes(&self, bytes: usize) -> Result<()> {
        check(Limit::BatchSize, bytes, self.batch_size_bytes_max)
    }
}

fn check(limit: Limit, actual: usize, max: usize) -> Result<()> {
    if actual > max {
        return Err(Error::LimitExceeded {
            limit,
            actual: actual as u64,
            max: max as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_and_prints_round_trip() {
        for text in ["sync", "none", "periodic:1", "periodic:250"] {
            let d: Durability = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(
            "periodic:5".parse::<Durability>().unwrap(),
            Durability::Periodic { interval_ms: 5 }
        );
    }

    #[test]
    fn durability_rejects_bad_text_with_a_helpful_message() {
        for bad in [
            "",
            "SYNC",
            "periodic",
            "periodic:",
            "periodic:0",
            "periodic:-3",
            "periodic:x",
        ] {
            let err = bad.parse::<Durability>().unwrap_err();
            assert!(err.to_string().contains("periodic:MS"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn recovery_mode_parses_and_prints_round_trip() {
        for text in [
            "tolerate-torn-tail",
            "skip-to-last-good",
            "absolute-consistency",
        ] {
            let m: WalRecoveryMode = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
        }
        assert!("skip".parse::<WalRecoveryMode>().is_err());
    }

    #[test]
    fn defaults_are_valid_and_bad_sizes_are_rejected() {
        Options::default().validate().unwrap();
        for bad in [
            Options {
                wal_segment_size_bytes: 65536 + 512,
                ..Options::default()
            },
            Options {
                wal_segment_size_bytes: 4096,
                ..Options::default()
            },
            Options {
                wal_write_bytes_max: 100,
                ..Options::default()
            },
            Options {
                key_size_bytes_max: 0,
                ..Options::default()
            },
            Options {
                memtable_size_bytes_max: 10,
                ..Options::default()
            },
            Options {
                scan_entries_max: 0,
                ..Options::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_are_enforced_at_their_boundary() {
        let o = Options {
            key_size_bytes_max: 4,
            value_size_bytes_max: 8,
            ..Options::default()
        };
        assert!(matches!(o.check_key(b""), Err(Error::EmptyKey)));
        o.check_key(b"abcd").unwrap();
        match o.check_key(b"abcde") {
            Err(Error::LimitExceeded {
                limit: Limit::KeySize,
                actual: 5,
                max: 4,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        o.check_value(b"").unwrap();
        o.check_value(&[0; 8]).unwrap();
        let err = o.check_value(&[0; 9]).unwrap_err();
        assert!(err.to_string().contains("value_size_bytes_max"), "{err}");
    }
}
