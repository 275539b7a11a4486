//! Server configuration: command-line flags, an optional TOML file with the same settings, and
//! defaults that work on a laptop. Precedence: flag > file > default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use corekv_storage::{Durability, Options};
use serde::Deserialize;

pub mod cluster;

pub use cluster::ClusterConfig;

use crate::cpuset::CpuSet;
use crate::faults::FaultPlan;
use crate::io_properties::{IO_CONCURRENCY_MAX, IoProperties};

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "corekv-data";
/// Default main port; shard `i` also listens on `port + 1 + i`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7379";

/// `corekv-server`: a thread-per-core key-value storage server.
#[derive(Debug, Parser, Default)]
#[command(name = "corekv-server", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with the same settings as the flags (flag names with `_` for `-`, e.g.
    /// `data_dir = "/var/lib/corekv"`). Flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding the data: one `shard-N/` subdirectory per shard.
    /// [default: ./corekv-data]
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// Main address every shard accepts on (SO_REUSEPORT). Shard i also listens on port+1+i.
    /// [default: 127.0.0.1:7379]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,

    /// Number of shards, one per core, on the first N CPUs this process may use.
    /// [default: one per CPU this process may use]
    #[arg(long, value_name = "N", conflicts_with = "cores")]
    pub shards: Option<usize>,

    /// CPUs to run shards on, one shard per CPU, in kernel list syntax (e.g. `0-3,8`).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<CpuSet>,

    /// What an acknowledged write promises: `sync` (on stable storage before the reply),
    /// `periodic:MS` (WAL synced every MS milliseconds; survives a process crash, a power loss
    /// can lose the last MS), or `none` (no syncs while running). [default: sync]
    #[arg(long, value_name = "MODE")]
    pub durability: Option<Durability>,

    /// Serve Prometheus metrics on http://HOST:PORT/metrics (port 0: a free port, logged at
    /// start). [default: off]
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,

    /// Log format: `text` (human-readable) or `json`. [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. `info`, `debug`, `corekv_storage=debug,info`. [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Memory each shard registers with io_uring for disk I/O buffers (locked memory; as a
    /// non-root user keep shards x this under `ulimit -l`). [default: 4194304 (4 MiB)]
    #[arg(long, value_name = "BYTES")]
    pub io_memory_bytes: Option<usize>,

    /// Block cache of all shards together, split evenly between them. corekv reads its tables
    /// with O_DIRECT, so this cache is the only one between a read and the disk. [default: a
    /// quarter of the machine's physical memory]
    #[arg(long, value_name = "BYTES")]
    pub block_cache_bytes: Option<u64>,

    /// Disk I/O requests each shard submits to the kernel at once: the depth of its io_uring
    /// rings (8-1024). [default: `io_concurrency` from DATA_DIR/io-properties.toml, written by
    /// `corekv-tune disk`; 128 without that file]
    #[arg(long, value_name = "N")]
    pub io_concurrency: Option<u32>,

    /// Backpressure: a connection with this many operations in flight is not read until some
    /// complete. [default: 4096]
    #[arg(long, value_name = "N")]
    pub connection_inflight_ops_max: Option<usize>,

    /// Most open connections per shard; more are closed as soon as accepted. [default: 10000]
    #[arg(long, value_name = "N")]
    pub shard_connections_max: Option<usize>,

    /// Memory each shard lets large incoming messages (over 64 KiB) take while they arrive: a
    /// connection whose next message does not fit is not read until others finish. Bounds
    /// what slow senders of large messages can make the server hold. [default: 268435456
    /// (256 MiB)]
    #[arg(long, value_name = "BYTES")]
    pub frame_budget_bytes: Option<usize>,

    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish before their
    /// connections are closed anyway. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,

    /// Memory bound of each shard's memtable (the storage engine's
    /// `memtable_size_bytes_max`). [default: the engine's]
    #[arg(long, value_name = "BYTES")]
    pub memtable_size_bytes: Option<usize>,

    /// Size each WAL segment file is preallocated to (a multiple of 4096, at least 65536).
    /// [default: the engine's]
    #[arg(long, value_name = "BYTES")]
    pub wal_segment_size_bytes: Option<usize>,

    /// Let the kernel back this process's memory with transparent huge pages. Off by default
    /// (the server calls `prctl(PR_SET_THP_DISABLE)`, as Redis does): with them, the first
    /// touch of fresh memory zeroes 2 MiB at a time, which cost SET at pipeline 16 over a
    /// third of its throughput in docs/BENCHMARKS.md. Huge pages can help reads of a large
    /// memtable and block cache (fewer TLB misses); measure before turning them on.
    /// [default: false]
    #[arg(long, value_name = "BOOL")]
    pub transparent_huge_pages: Option<bool>,

    /// How long a shard keeps polling for network and disk completions after it runs out of
    /// work, before it sleeps in the kernel (Seastar's `--idle-poll-time-us`). Polling spends
    /// that CPU to spare the wake-up of a sleeping thread in every request round (see
    /// docs/BENCHMARKS.md); an idle server still sleeps. 0 sleeps at once (shared or
    /// overcommitted CPUs, laptops on battery); at most 100000. [default: 200]
    #[arg(long, value_name = "US")]
    pub idle_poll_us: Option<u64>,

    /// TESTS ONLY: make the storage engines fail disk operations as the plan says (see
    /// `corekv_server::faults` and docs/RELIABILITY.md). Not in the config file.
    #[arg(long, value_name = "PLAN", hide = true)]
    pub debug_fault_injection: Option<FaultPlan>,

    /// Tests only: dial these peers at these addresses (`ID=HOST:PORT,...`) instead of their
    /// `--initial-cluster` ones (a fault-injecting proxy on each link).
    #[arg(long, value_name = "LIST", hide = true)]
    pub debug_peer_dial: Option<String>,

    /// Cluster: this node's id (1 or more), one of `--initial-cluster`. With `--peer-listen`
    /// and `--initial-cluster`, every shard is a Raft group across the cluster's nodes.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<u64>,

    /// Cluster: where this node listens for its peers (its own `--initial-cluster` address).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_listen: Option<SocketAddr>,

    /// Cluster: every node, `ID=HOST:PORT,...` (peer addresses); the same on every node.
    #[arg(long, value_name = "LIST")]
    pub initial_cluster: Option<String>,

    /// Cluster: a follower that hears no leader for this long (randomised up to twice it)
    /// starts an election. [default: 1000]
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<u64>,

    /// Cluster: time between a leader's heartbeats. [default: 100]
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,

    /// Cluster: Raft log entries kept behind what the engine's tables hold, for a follower
    /// that lags; one further behind is sent a snapshot of the tables. [default: 10000]
    #[arg(long, value_name = "N")]
    pub log_retain_entries: Option<u64>,

    /// Cluster: at most this many MiB of Raft log entries are kept behind what the engine's
    /// tables hold, whatever `--log-retain-entries` says; the log's entries after the last
    /// compaction are also in memory. [default: 64]
    #[arg(long, value_name = "MIB")]
    pub log_retain_mib: Option<u64>,

    /// Cluster: a shard's leader holds at most this many MiB of writes proposed and not yet
    /// committed (a slow or unreachable majority); more are refused `overloaded`, retry
    /// later. From 1 to 1048576. [default: 64]
    #[arg(long, value_name = "MIB")]
    pub max_uncommitted_mib: Option<u64>,

    /// Cluster: how long a write (or a read's leadership check) waits for its outcome before
    /// the client is told `outcomeUnknown` (a partition, a lost leadership). [default: 5000]
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Cluster: the bandwidth, in MiB/s, that each shard's outgoing snapshot streams (to
    /// followers too far behind for the log) share; 0: no limit. [default: 100]
    #[arg(long, value_name = "MIB")]
    pub snapshot_send_mib_per_s: Option<u64>,

    /// Cluster: how a leader confirms it still leads before a read. `read-index` asks a
    /// majority for every batch of reads (a heartbeat round trip); `lease` answers reads
    /// without asking while a majority confirmed it within the last 90% of an election
    /// timeout (etcd's and TiKV's lease reads: correct while the nodes' clocks run at about
    /// the same rate). [default: read-index]
    #[arg(long, value_name = "MODE")]
    pub read_mode: Option<ReadMode>,

    /// Cluster: the IP address clients reach this node at, which followers give clients to
    /// send them to the leader (as etcd's `--advertise-client-urls`), with the node's own
    /// ports (each shard's). [default: the `--listen` host; when that is unspecified
    /// (0.0.0.0), the `--peer-listen` host]
    #[arg(long, value_name = "IP")]
    pub advertise_host: Option<std::net::IpAddr>,
}

/// The cluster settings a cluster-only `flag` sets; an error on a single node.
fn cluster_only<'c>(
    cluster: &'c mut Option<ClusterConfig>,
    flag: &str,
) -> Result<&'c mut ClusterConfig, ConfigError> {
    cluster
        .as_mut()
        .ok_or_else(|| ConfigError::Invalid(format!("`{flag}` needs a cluster")))
}

/// How a cluster leader confirms its leadership before answering a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReadMode {
    /// Raft's ReadIndex for every batch of reads.
    #[default]
    ReadIndex,
    /// A leader lease, renewed by each ReadIndex confirmation.
    Lease,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The TOML file: the same settings as [`Cli`], all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    shards: Option<usize>,
    cores: Option<String>,
    durability: Option<String>,
    metrics: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    io_memory_bytes: Option<usize>,
    block_cache_bytes: Option<u64>,
    io_concurrency: Option<u32>,
    connection_inflight_ops_max: Option<usize>,
    shard_connections_max: Option<usize>,
    frame_budget_bytes: Option<usize>,
    shutdown_grace_ms: Option<u64>,
    memtable_size_bytes: Option<usize>,
    wal_segment_size_bytes: Option<usize>,
    transparent_huge_pages: Option<bool>,
    idle_poll_us: Option<u64>,
}

/// Default `io_memory_bytes`.
pub const DEFAULT_IO_MEMORY_BYTES: usize = 4 << 20;
/// Smallest `io_memory_bytes` glommio accepts without failing.
pub const IO_MEMORY_BYTES_MIN: usize = 512 << 10;
/// Default `block_cache_bytes` as a fraction of physical memory: one quarter. The block cache
/// is the only cache in front of the disk (O_DIRECT reads), so it gets a real share of memory;
/// the rest stays for the memtables (up to 3 × 64 MiB per shard by default), connections and
/// the OS.
pub const DEFAULT_BLOCK_CACHE_MEMORY_DIVISOR: u64 = 4;
/// Smallest block cache per shard.
pub const BLOCK_CACHE_BYTES_PER_SHARD_MIN: u64 = 1 << 20;
/// Block cache per shard when physical memory cannot be read.
pub const FALLBACK_BLOCK_CACHE_BYTES_PER_SHARD: u64 = 256 << 20;

/// Physical memory of the machine, if the OS tells.
pub fn physical_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration values.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (pages > 0 && page_size > 0).then(|| pages as u64 * page_size as u64)
}

/// The block cache each of `shards` shards gets when `block_cache_bytes` is not set, on a
/// machine with `physical_memory` bytes (None: unknown).
pub fn default_block_cache_bytes_per_shard(physical_memory: Option<u64>, shards: usize) -> u64 {
    match physical_memory {
        Some(m) => (m / DEFAULT_BLOCK_CACHE_MEMORY_DIVISOR / shards.max(1) as u64)
            .max(BLOCK_CACHE_BYTES_PER_SHARD_MIN),
        None => FALLBACK_BLOCK_CACHE_BYTES_PER_SHARD,
    }
}

/// Default `connection_inflight_ops_max`.
pub const DEFAULT_CONNECTION_INFLIGHT_OPS_MAX: usize = 4096;
/// Default `shard_connections_max`.
pub const DEFAULT_SHARD_CONNECTIONS_MAX: usize = 10_000;
/// Default `frame_budget_bytes`: room for three of the largest messages at once.
pub const DEFAULT_FRAME_BUDGET_BYTES: usize = 256 << 20;
/// Default `idle_poll_us`: Seastar's default idle poll time.
pub const DEFAULT_IDLE_POLL_US: u64 = 200;
/// Largest `idle_poll_us`.
pub const IDLE_POLL_US_MAX: u64 = 100_000;

/// Default `shutdown_grace_ms`.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// A configuration error, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("config file {path:?}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
    /// A setting has a bad value.
    #[error("{0}")]
    Invalid(String),
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root data directory.
    pub data_dir: PathBuf,
    /// Main listen address.
    pub listen: SocketAddr,
    /// One shard per CPU in this set, shard `i` on the `i`-th CPU in ascending order.
    pub cores: CpuSet,
    /// WAL durability mode of every shard.
    pub durability: Durability,
    /// Prometheus endpoint, if any.
    pub metrics: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter directive.
    pub log_level: String,
    /// io_uring registered buffer memory per shard.
    pub io_memory_bytes: usize,
    /// Block cache of each shard (`block_cache_bytes` split evenly, or the default).
    pub block_cache_bytes_per_shard: u64,
    /// `io_concurrency` given as a flag or in the file; `None` leaves it to the data
    /// directory's io-properties ([`IoConcurrency::resolve`]).
    pub io_concurrency: Option<u32>,
    /// Per-connection in-flight operation bound.
    pub connection_inflight_ops_max: usize,
    /// Per-shard connection bound.
    pub shard_connections_max: usize,
    /// Per-shard budget of bytes for large messages in progress.
    pub frame_budget_bytes: usize,
    /// Shutdown grace period.
    pub shutdown_grace_ms: u64,
    /// Whether the process keeps transparent huge pages (see `corekv_server::hugepages`).
    pub transparent_huge_pages: bool,
    /// How long each shard's executor polls before it parks, in microseconds.
    pub idle_poll_us: u64,
    /// Storage engine options of every shard (durability included).
    pub storage: Options,
    /// Injected disk faults (tests only).
    pub fault_plan: Option<FaultPlan>,
    /// The cluster this node belongs to; None for a single node.
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// Resolves flags, the optional file and defaults. `allowed_cpus` is the set of CPUs this
    /// process may run on (see [`allowed_cpus`]).
    pub fn resolve(cli: Cli, allowed_cpus: &CpuSet) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let file_cores = file
            .cores
            .as_deref()
            .map(str::parse::<CpuSet>)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("config `cores`: {e}")))?;
        let file_durability = file
            .durability
            .as_deref()
            .map(str::parse::<Durability>)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("config `durability`: {e}")))?;

        // Flags win over the file; `--shards` and `--cores` given as flags override either one
        // from the file.
        let (shards, cores) = match (cli.shards, cli.cores) {
            (None, None) => (file.shards, file_cores),
            flags => flags,
        };
        let cores = match (shards, cores) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either `shards` or `cores`, not both".to_string(),
                ));
            }
            (None, Some(cores)) => {
                if cores.is_empty() {
                    return Err(ConfigError::Invalid("`cores` is empty".to_string()));
                }
                if let Some(cpu) = cores.iter().find(|&c| !allowed_cpus.contains(c)) {
                    return Err(ConfigError::Invalid(format!(
                        "`cores` names CPU {cpu}, but this process may only run on {allowed_cpus}"
                    )));
                }
                cores
            }
            (Some(n), None) => {
                if n == 0 || n > allowed_cpus.len() {
                    return Err(ConfigError::Invalid(format!(
                        "`shards` is {n}: it must be between 1 and the {} CPUs this process may \
                         use ({allowed_cpus}); corekv runs one shard per core",
                        allowed_cpus.len()
                    )));
                }
                allowed_cpus.iter().take(n).collect()
            }
            (None, None) => allowed_cpus.clone(),
        };
        if cores.is_empty() {
            return Err(ConfigError::Invalid(
                "no CPU is available to run a shard".to_string(),
            ));
        }
        let listen = match cli.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("default listen address: {e}")))?,
        };
        if usize::from(listen.port()) + cores.len() > usize::from(u16::MAX) {
            return Err(ConfigError::Invalid(format!(
                "listen port {} leaves no room for {} per-shard ports above it",
                listen.port(),
                cores.len()
            )));
        }
        let io_memory_bytes = cli
            .io_memory_bytes
            .or(file.io_memory_bytes)
            .unwrap_or(DEFAULT_IO_MEMORY_BYTES);
        if io_memory_bytes < IO_MEMORY_BYTES_MIN {
            return Err(ConfigError::Invalid(format!(
                "`io_memory_bytes` is {io_memory_bytes}: glommio needs at least \
                 {IO_MEMORY_BYTES_MIN} bytes per shard"
            )));
        }
        let block_cache_bytes_per_shard = match cli.block_cache_bytes.or(file.block_cache_bytes) {
            Some(total) => {
                let per_shard = total / cores.len() as u64;
                if per_shard < BLOCK_CACHE_BYTES_PER_SHARD_MIN {
                    return Err(ConfigError::Invalid(format!(
                        "`block_cache_bytes` is {total}: each of the {} shards needs at least \
                         {BLOCK_CACHE_BYTES_PER_SHARD_MIN} bytes",
                        cores.len()
                    )));
                }
                per_shard
            }
            None => default_block_cache_bytes_per_shard(physical_memory_bytes(), cores.len()),
        };
        let io_concurrency = cli.io_concurrency.or(file.io_concurrency);
        if let Some(n) = io_concurrency {
            check_io_concurrency(n).map_err(ConfigError::Invalid)?;
        }
        let connection_inflight_ops_max = cli
            .connection_inflight_ops_max
            .or(file.connection_inflight_ops_max)
            .unwrap_or(DEFAULT_CONNECTION_INFLIGHT_OPS_MAX);
        let shard_connections_max = cli
            .shard_connections_max
            .or(file.shard_connections_max)
            .unwrap_or(DEFAULT_SHARD_CONNECTIONS_MAX);
        let frame_budget_bytes = cli
            .frame_budget_bytes
            .or(file.frame_budget_bytes)
            .unwrap_or(DEFAULT_FRAME_BUDGET_BYTES);
        for (name, value) in [
            ("connection_inflight_ops_max", connection_inflight_ops_max),
            ("shard_connections_max", shard_connections_max),
            ("frame_budget_bytes", frame_budget_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("`{name}` must be at least 1")));
            }
        }
        let idle_poll_us = cli
            .idle_poll_us
            .or(file.idle_poll_us)
            .unwrap_or(DEFAULT_IDLE_POLL_US);
        if idle_poll_us > IDLE_POLL_US_MAX {
            return Err(ConfigError::Invalid(format!(
                "`idle_poll_us` is {idle_poll_us}: at most {IDLE_POLL_US_MAX} (0 sleeps at once)"
            )));
        }
        let durability = cli
            .durability
            .or(file_durability)
            .unwrap_or(Durability::Sync);
        let mut storage = Options {
            durability,
            block_cache_size_bytes: usize::try_from(block_cache_bytes_per_shard)
                .unwrap_or(usize::MAX),
            ..Options::default()
        };
        if let Some(bytes) = cli.memtable_size_bytes.or(file.memtable_size_bytes) {
            storage.memtable_size_bytes_max = bytes;
        }
        if let Some(bytes) = cli.wal_segment_size_bytes.or(file.wal_segment_size_bytes) {
            storage.wal_segment_size_bytes = bytes;
        }
        storage
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("storage settings: {e}")))?;
        let cluster = ClusterConfig::resolve(
            cli.node_id,
            cli.peer_listen,
            cli.initial_cluster.as_deref(),
            cli.election_timeout_ms,
            cli.heartbeat_interval_ms,
        )
        .map_err(ConfigError::Invalid)?;
        let cluster = match (cluster, cli.debug_peer_dial.as_deref()) {
            (Some(c), Some(list)) => {
                Some(c.with_dial_overrides(list).map_err(ConfigError::Invalid)?)
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "`--debug-peer-dial` needs a cluster".to_string(),
                ));
            }
            (c, None) => c,
        };
        let cluster = cluster.map(|c| c.with_client_listen(listen));
        let mut cluster = cluster;
        if let Some(n) = cli.log_retain_entries {
            cluster_only(&mut cluster, "--log-retain-entries")?.log_retain_entries = n;
        }
        if let Some(mib) = cli.log_retain_mib {
            cluster_only(&mut cluster, "--log-retain-mib")?.log_retain_mib = mib;
        }
        if let Some(mib) = cli.max_uncommitted_mib {
            // Below 1 MiB raft-rs refuses the setting (one message's size); past 1 TiB the
            // bytes would reach its "no limit" value.
            if !(1..=1 << 20).contains(&mib) {
                return Err(ConfigError::Invalid(format!(
                    "`--max-uncommitted-mib` {mib} must be at least 1 (one Raft message's size) \
                     and at most 1048576 (1 TiB)"
                )));
            }
            cluster_only(&mut cluster, "--max-uncommitted-mib")?.max_uncommitted_mib = mib;
        }
        if let Some(ms) = cli.request_timeout_ms {
            if ms == 0 {
                return Err(ConfigError::Invalid(
                    "`--request-timeout-ms` must be at least 1".to_string(),
                ));
            }
            cluster_only(&mut cluster, "--request-timeout-ms")?.request_timeout_ms = ms;
        }
        if let Some(mib) = cli.snapshot_send_mib_per_s {
            cluster_only(&mut cluster, "--snapshot-send-mib-per-s")?.snapshot_send_mib_per_s = mib;
        }
        if let Some(mode) = cli.read_mode {
            cluster_only(&mut cluster, "--read-mode")?.read_mode = mode;
        }
        if let Some(ip) = cli.advertise_host {
            if ip.is_unspecified() {
                return Err(ConfigError::Invalid(format!(
                    "`--advertise-host` {ip}: clients cannot reach an unspecified address"
                )));
            }
            let c = cluster_only(&mut cluster, "--advertise-host")?;
            c.client_address = SocketAddr::new(ip, listen.port()).to_string();
        }
        Ok(Config {
            cluster,
            storage,
            fault_plan: cli.debug_fault_injection,
            io_memory_bytes,
            block_cache_bytes_per_shard,
            io_concurrency,
            connection_inflight_ops_max,
            shard_connections_max,
            frame_budget_bytes,
            shutdown_grace_ms: cli
                .shutdown_grace_ms
                .or(file.shutdown_grace_ms)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
            transparent_huge_pages: cli
                .transparent_huge_pages
                .or(file.transparent_huge_pages)
                .unwrap_or(false),
            idle_poll_us,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            cores,
            durability,
            metrics: cli.metrics.or(file.metrics),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            log_level: cli
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
        })
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.cores.len()
    }

    /// The address shard `shard` listens on for shard-aware clients.
    pub fn shard_listen(&self, shard: usize) -> SocketAddr {
        let mut addr = self.listen;
        // `resolve` checked that every per-shard port fits in a u16.
        addr.set_port(self.listen.port() + 1 + shard as u16);
        addr
    }
}

/// Default io_uring ring depth without a setting or an io-properties file (glommio's default).
pub const DEFAULT_IO_CONCURRENCY: u32 = 128;
/// Smallest ring depth used: the rings also carry the shard's network operations and timers,
/// so a disk that wants fewer requests in flight still gets rings this deep.
pub const IO_CONCURRENCY_MIN: u32 = 8;

fn check_io_concurrency(n: u32) -> Result<(), String> {
    if !(IO_CONCURRENCY_MIN..=IO_CONCURRENCY_MAX).contains(&n) {
        return Err(format!(
            "`io_concurrency` is {n}: it must be between {IO_CONCURRENCY_MIN} and \
             {IO_CONCURRENCY_MAX}"
        ));
    }
    Ok(())
}

/// The I/O concurrency a shard runs with, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoConcurrency {
    /// Depth of each shard's io_uring rings.
    pub ring_depth: u32,
    /// Where the figure came from.
    pub source: IoConcurrencySource,
}

/// Where [`IoConcurrency`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoConcurrencySource {
    /// `--io-concurrency` or `io_concurrency` in the config file.
    Setting,
    /// The data directory's io-properties file (`corekv-tune disk`).
    IoProperties {
        /// The figure in the file, before raising it to [`IO_CONCURRENCY_MIN`].
        measured: u32,
    },
    /// Neither: [`DEFAULT_IO_CONCURRENCY`].
    Default,
}

impl IoConcurrency {
    /// Precedence: the setting, then the disk's measured `io_concurrency` (raised to
    /// [`IO_CONCURRENCY_MIN`]), then [`DEFAULT_IO_CONCURRENCY`].
    pub fn resolve(setting: Option<u32>, disk: Option<&IoProperties>) -> IoConcurrency {
        match (setting, disk) {
            (Some(n), _) => IoConcurrency {
                ring_depth: n,
                source: IoConcurrencySource::Setting,
            },
            (None, Some(p)) => IoConcurrency {
                ring_depth: p
                    .io_concurrency
                    .clamp(IO_CONCURRENCY_MIN, IO_CONCURRENCY_MAX),
                source: IoConcurrencySource::IoProperties {
                    measured: p.io_concurrency,
                },
            },
            (None, None) => IoConcurrency {
                ring_depth: DEFAULT_IO_CONCURRENCY,
                source: IoConcurrencySource::Default,
            },
        }
    }
}

impl std::fmt::Display for IoConcurrencySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoConcurrencySource::Setting => f.write_str("--io-concurrency setting"),
            IoConcurrencySource::IoProperties { measured } => {
                write!(f, "io-properties file (measured io_concurrency {measured})")
            }
            IoConcurrencySource::Default => f.write_str("default: no io-properties file"),
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The CPUs this process may run on (its affinity mask, which honours `taskset` and cgroups).
pub fn allowed_cpus() -> std::io::Result<CpuSet> {
    // SAFETY: `cpu_set_t` is a plain bitmask; all-zeroes is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` and we pass its exact size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` was filled by the kernel above and `cpu` < CPU_SETSIZE.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

#[cfg(test)]
mod tests;
