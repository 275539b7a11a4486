//! `corekv-bench ycsb` command-line flags.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::workload::WorkloadName;

/// Most client threads.
pub const THREADS_MAX: usize = 1024;
/// Most connections over all threads.
pub const CONNECTIONS_MAX: usize = 65_536;
/// Most operations in flight per connection.
pub const INFLIGHT_MAX: usize = 65_536;
/// Most records (key numbers are hashed into 63 bits; 2^40 is far beyond any disk here).
pub const RECORDS_MAX: u64 = 1 << 40;

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    /// Insert the records.
    Load,
    /// Run the workload's mix against records already loaded.
    Run,
    /// Load, then run.
    Both,
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// corekv through its Rust client (without --addr: a server started in-process).
    Corekv,
    /// Redis over RESP (default address 127.0.0.1:6379).
    Redis,
    /// etcd v3 over gRPC (default address 127.0.0.1:2379); --addr may list several members,
    /// comma-separated, which connections use round-robin.
    Etcd,
    /// An in-process map: measures the driver's own ceiling, no network.
    Memory,
}

/// YCSB core workloads A–F against a server.
#[derive(Debug, Clone, Args)]
pub struct YcsbArgs {
    /// Workload: a (50/50 read/update), b (95/5 read/update), c (read only), d (95/5
    /// read/insert, latest), e (95/5 scan/insert), f (50/50 read/read-modify-write).
    #[arg(long, value_enum, default_value = "a")]
    pub workload: WorkloadName,

    /// Phases to run.
    #[arg(long, value_enum, default_value = "both")]
    pub phase: PhaseArg,

    /// Records in the table (YCSB recordcount).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,

    /// Operations in the run phase, over all threads (YCSB operationcount); default 100000
    /// unless --duration is given.
    #[arg(long)]
    pub operations: Option<u64>,

    /// Client threads, each pinned to a CPU.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Connections over all threads (default: one per thread).
    #[arg(long)]
    pub connections: Option<usize>,

    /// Operations in flight per connection (pipelining depth).
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,

    /// Target operations per second over all threads; 0 = as fast as possible. With a target,
    /// latencies count from each operation's intended start time.
    #[arg(long, default_value_t = 0.0)]
    pub target: f64,

    /// Stop the run phase after this many seconds (YCSB maxexecutiontime).
    #[arg(long)]
    pub duration: Option<f64>,

    /// Database to drive.
    #[arg(long, value_enum, default_value = "corekv")]
    pub backend: BackendArg,

    /// Server address HOST:PORT. corekv without it: start a server in-process on a temporary
    /// directory. etcd: one or more members' client addresses, HOST:PORT,HOST:PORT,...
    #[arg(long)]
    pub addr: Option<String>,

    /// In-process corekv server only (no --addr): CPUs for its shards, one shard each
    /// (default: every CPU this process may use).
    #[arg(long, value_name = "LIST")]
    pub server_cores: Option<String>,

    /// In-process corekv server only: `sync` (default), `periodic:MS` or `none`.
    #[arg(long, value_name = "MODE")]
    pub server_durability: Option<String>,

    /// Bytes per field (YCSB fieldlength).
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,

    /// Fields per record (YCSB fieldcount).
    #[arg(long, default_value_t = 10)]
    pub field_count: usize,

    /// Updates write every field (YCSB writeallfields=true) instead of one.
    #[arg(long)]
    pub write_all_fields: bool,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// CPUs for the client threads, e.g. 0-3 or 1,3 (default: all this process may use).
    #[arg(long)]
    pub cpus: Option<String>,

    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Parser)]
#[command(name = "corekv-bench ycsb", no_binary_name = true)]
struct Standalone {
    #[command(flatten)]
    args: YcsbArgs,
}

impl YcsbArgs {
    /// Parses flags given without the program name, e.g. `["--workload", "e"]`.
    pub fn parse_flags<I, T>(flags: I) -> Result<YcsbArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Standalone as clap::Parser>::try_parse_from(flags).map(|s| s.args)
    }
}
