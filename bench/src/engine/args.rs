//! `corekv-bench engine` flags: db_bench's names and meanings (underscores included), so the
//! same command line can be given to both.

use std::path::PathBuf;

use clap::Args;
use corekv_storage::Durability;

/// The benchmarks `engine` knows, in db_bench's names.
pub const BENCHMARKS: &[&str] = &[
    "fillseq",
    "fillrandom",
    "overwrite",
    "readrandom",
    "readseq",
    "seekrandom",
    "flush",
    "waitforcompaction",
];

/// Most concurrent tasks.
pub const THREADS_MAX: usize = 4096;

/// db_bench-compatible micro-benchmarks of one storage engine (one shard), in-process.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Comma-separated benchmarks, run in order: fillseq, fillrandom, overwrite, readrandom,
    /// readseq, seekrandom; and as in db_bench, `flush` (the memtable to a table) and
    /// `waitforcompaction` (until flushes and compactions settle). Benchmarks starting with
    /// `fill` start from an empty database.
    #[arg(
        long = "benchmarks",
        default_value = "fillseq,fillrandom,overwrite,readrandom,readseq,seekrandom",
        value_delimiter = ','
    )]
    pub benchmarks: Vec<String>,

    /// Operations per task for writes; keys are drawn from [0, num).
    #[arg(long = "num", default_value_t = 1_000_000)]
    pub num: u64,

    /// Operations per task for reads; negative = --num.
    #[arg(long = "reads", default_value_t = -1, allow_negative_numbers = true)]
    pub reads: i64,

    /// Key size in bytes (at least 8: a big-endian key number, then '0' padding).
    #[arg(long = "key_size", default_value_t = 16)]
    pub key_size: usize,

    /// Value size in bytes.
    #[arg(long = "value_size", default_value_t = 100)]
    pub value_size: usize,

    /// Concurrent tasks, all on the one shard's executor (db_bench: threads). Each awaits its
    /// own writes, so with --sync=1 they group-commit.
    #[arg(long = "threads", default_value_t = 1)]
    pub threads: usize,

    /// 1: every write waits for its fdatasync (durability `sync`); 0: durability `none`
    /// (db_bench's default: the WAL is written, never synced per write).
    #[arg(long = "sync", default_value_t = 0)]
    pub sync: u8,

    /// Overrides --sync: `sync`, `none` or `periodic:MS`.
    #[arg(long = "durability")]
    pub durability: Option<Durability>,

    /// Database directory (default: a fresh directory under /var/tmp, removed afterwards).
    /// Must be on a real disk (O_DIRECT); never tmpfs.
    #[arg(long = "db")]
    pub db: Option<PathBuf>,

    /// Accepted for db_bench compatibility; corekv's WAL and memtable do not compress, so
    /// only `none` is meaningful.
    #[arg(long = "compression_type", default_value = "none")]
    pub compression_type: String,

    /// Accepted for db_bench compatibility (corekv always keeps its counters).
    #[arg(long = "statistics", default_value_t = 0)]
    pub statistics: u8,

    /// Seed of the key generators (task t uses seed + t).
    #[arg(long = "seed", default_value_t = 301)]
    pub seed: u64,

    /// Memtable bound in bytes (db_bench's `write_buffer_size`; `--memtable_size_bytes` is an
    /// alias). Default: the engine's default.
    #[arg(long = "write_buffer_size", alias = "memtable_size_bytes")]
    pub write_buffer_size: Option<usize>,

    /// Block cache in bytes (db_bench's `cache_size`). Default: the engine's default (corekv
    /// reads with O_DIRECT, so this cache is all there is between a read and the disk; RocksDB
    /// reads through the OS page cache unless `--use_direct_reads=true`).
    #[arg(long = "cache_size")]
    pub cache_size: Option<usize>,

    /// Accepted for db_bench compatibility: corekv always reads tables with O_DIRECT.
    #[arg(long = "use_direct_reads", default_value = "true")]
    pub use_direct_reads: String,

    /// Bloom filter bits per key. Default: the engine's default. (db_bench's default, -1,
    /// gives RocksDB no filter at all; corekv always has one.)
    #[arg(long = "bloom_bits")]
    pub bloom_bits: Option<u32>,

    /// WAL segment size. Default: the engine's default.
    #[arg(long = "wal_segment_size_bytes")]
    pub wal_segment_size_bytes: Option<usize>,

    /// Largest group-commit write. Default: the engine's default.
    #[arg(long = "wal_write_bytes_max")]
    pub wal_write_bytes_max: Option<usize>,

    /// With durability none: writers wait once this many bytes of WAL records are queued.
    /// Default: the engine's default.
    #[arg(long = "wal_pending_bytes_max")]
    pub wal_pending_bytes_max: Option<usize>,

    /// With durability sync: 1 writes the WAL through an O_DSYNC descriptor (write and flush
    /// in one operation), 0 writes then fdatasyncs. Default: the engine's default (1).
    #[arg(long = "wal_dsync")]
    pub wal_dsync: Option<u8>,

    /// glommio preempt timer of the engine's executor, µs: how long a busy task may run before
    /// `yield_if_needed` lets the WAL writer and the reactor in. Default: glommio's 100 ms.
    /// (With 1 ms, glommio 0.9 was seen to park with a write in flight and hang, here.)
    #[arg(long = "preempt_timer_us", default_value_t = 100_000)]
    pub preempt_timer_us: u64,

    /// Pin the engine's executor to this CPU (default: unpinned).
    #[arg(long = "cpu")]
    pub cpu: Option<usize>,
}

impl EngineArgs {
    /// The durability the flags ask for.
    pub fn durability(&self) -> Durability {
        self.durability.unwrap_or(if self.sync == 1 {
            Durability::Sync
        } else {
            Durability::None
        })
    }

    /// Reads per task.
    pub fn reads(&self) -> u64 {
        u64::try_from(self.reads).unwrap_or(self.num)
    }

    /// Checks the flags; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        for b in &self.benchmarks {
            if !BENCHMARKS.contains(&b.as_str()) {
                return Err(format!(
                    "--benchmarks: unknown benchmark {b:?}; known: {}",
                    BENCHMARKS.join(",")
                ));
            }
        }
        if self.key_size < 8 || self.key_size > 16 << 10 {
            return Err(format!("--key_size={} must be in 8..=16384", self.key_size));
        }
        if self.value_size > 8 << 20 {
            return Err(format!(
                "--value_size={} must be at most 8 MiB",
                self.value_size
            ));
        }
        if self.threads == 0 || self.threads > THREADS_MAX {
            return Err(format!(
                "--threads={} must be in 1..={THREADS_MAX}",
                self.threads
            ));
        }
        if self.num == 0 {
            return Err("--num must be at least 1".into());
        }
        if self.sync > 1 {
            return Err(format!("--sync={} must be 0 or 1", self.sync));
        }
        if !matches!(self.use_direct_reads.as_str(), "true" | "false" | "1" | "0") {
            return Err(format!(
                "--use_direct_reads={} must be true or false",
                self.use_direct_reads
            ));
        }
        if self.compression_type != "none" {
            eprintln!(
                "corekv-bench engine: --compression_type={} ignored: corekv's WAL and memtable \
                 do not compress",
                self.compression_type
            );
        }
        Ok(())
    }
}
