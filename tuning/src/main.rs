//! `corekv-tune` entry point: parses the command line and runs one subcommand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corekv_tune::disk;
use corekv_tune::flamegraph::{self, CallGraph, FlameOptions, Target};
use corekv_tune::host::Host;
use corekv_tune::inspect::{self, Report};
use corekv_tune::plan::{self, NumaPolicy, PlanInput};
use corekv_tune::topology::Topology;
use corekv_tune::{Error, Result};

/// corekv-tune: inspect the machine, plan shard placement, measure the disk, profile the server.
#[derive(Debug, Parser)]
#[command(name = "corekv-tune", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report CPUs, NUMA nodes, SMT, governor, huge pages, limits, the data disk and NIC
    /// interrupts, with recommendations (and the command for each).
    Inspect {
        /// Data directory whose disk to inspect (need not exist yet). [default: the server's,
        /// ./corekv-data, unless --root is given]
        #[arg(long, value_name = "PATH")]
        dir: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read `proc/` and `sys/` under this directory instead of `/` (tests, saved copies).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Measure the disk under a directory with io_uring + O_DIRECT and write
    /// DIR/io-properties.toml for the server (takes about 10 × --seconds).
    Disk {
        /// Directory on the disk to measure (normally the data directory; must exist).
        #[arg(long, value_name = "PATH")]
        dir: PathBuf,
        /// Size of the test file; fio's limits.sh uses 1 GiB. Needs this much free space.
        #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
        file_size_bytes: u64,
        /// Length of each timed test in seconds (the depth sweep runs a quarter of it per depth).
        #[arg(long, value_name = "SECS", default_value_t = 8.0)]
        seconds: f64,
        /// Skip the queue-depth sweep (2, 4, 8, 16, 64).
        #[arg(long)]
        no_sweep: bool,
        /// Run only these tests (comma-separated); io-properties is written only when all run.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "seq-write,randread,fdatasync"
        )]
        tests: Vec<disk::Test>,
        /// Do not write DIR/io-properties.toml.
        #[arg(long)]
        no_save: bool,
        /// Print JSON instead of key=value lines.
        #[arg(long)]
        json: bool,
    },
    /// Record a CPU flame graph (SVG) of a running process, of a command, or of an existing
    /// perf.data, with `perf record -e cpu-clock` (no hardware counters needed).
    Flamegraph {
        /// Process to record (e.g. `$(pgrep -n corekv-server)`), for --seconds.
        #[arg(long, value_name = "PID", conflicts_with = "perf_data")]
        pid: Option<u32>,
        /// How long to record --pid.
        #[arg(long, value_name = "SECS", default_value_t = 10.0)]
        seconds: f64,
        /// Render this existing recording instead of recording.
        #[arg(long, value_name = "FILE")]
        perf_data: Option<PathBuf>,
        /// Where to write the SVG.
        #[arg(long, value_name = "FILE", default_value = "corekv-flamegraph.svg")]
        output: PathBuf,
        /// Samples per second.
        #[arg(long, value_name = "HZ", default_value_t = 999)]
        frequency_hz: u32,
        /// Stack unwinding: `dwarf` (complete stacks without frame pointers) or `fp`.
        #[arg(long, value_enum, default_value_t = CallGraph::Dwarf)]
        call_graph: CallGraph,
        /// Keep the perf.data recording at this path (default: a temporary file, removed).
        #[arg(long, value_name = "FILE")]
        keep_data: Option<PathBuf>,
        /// Title of the flame graph.
        #[arg(long, default_value = "corekv CPU flame graph (perf cpu-clock)")]
        title: String,
        /// A command to run and record until it exits: `-- prog args...`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print a shard placement as the exact `corekv-server` command line.
    Plan {
        /// Data directory (put in the command; its disk's NUMA node is used by `--numa disk`).
        #[arg(long, value_name = "PATH")]
        dir: Option<PathBuf>,
        /// NUMA nodes to use: `all`, or only the data `disk`'s node.
        #[arg(long, value_enum, default_value_t = NumaPolicy::All)]
        numa: NumaPolicy,
        /// At most this many shards.
        #[arg(long, value_name = "N")]
        max_shards: Option<usize>,
        /// Print JSON instead of commented shell.
        #[arg(long)]
        json: bool,
        /// Read `proc/` and `sys/` under this directory instead of `/`.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

/// Makes `dir` absolute and symlink-free on the live machine, even if it does not exist yet
/// (the nearest existing ancestor is resolved). Under a synthetic root it must be absolute.
fn data_dir(root: &Path, dir: &Path) -> Result<PathBuf> {
    if root != Path::new("/") {
        if !dir.is_absolute() {
            return Err(Error::Invalid(format!(
                "--dir {dir:?} must be absolute with --root"
            )));
        }
        return Ok(dir.to_path_buf());
    }
    let abs = std::path::absolute(dir).map_err(|e| Error::io("resolve", dir, e))?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return Ok(out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(abs),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(format!("JSON output: {e}")))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect {
            dir,
            json: as_json,
            root,
        } => {
            let host = Host::at(&root);
            let dir = dir.or_else(|| {
                (root == Path::new("/"))
                    .then(|| PathBuf::from(corekv_server::config::DEFAULT_DATA_DIR))
            });
            let dir = dir.map(|d| data_dir(&root, &d)).transpose()?;
            let report = Report::read(&host, dir.as_deref())?;
            if as_json {
                println!("{}", json(&report)?);
            } else {
                print!("{}", inspect::render::render(&report));
            }
        }
        Command::Plan {
            dir,
            numa,
            max_shards,
            json: as_json,
            root,
        } => {
            let host = Host::at(&root);
            let dir = dir.map(|d| data_dir(&root, &d)).transpose()?;
            let topology = Topology::read(&host.sys_root())?;
            let nic = inspect::NicInterrupts::read(&host)?;
            let disk_node = match &dir {
                Some(d) => inspect::DataDevice::read(&host, d)?
                    .disks
                    .iter()
                    .find_map(|d| d.numa_node),
                None => None,
            };
            let p = plan::plan(
                &topology,
                &PlanInput {
                    nic: Some(&nic),
                    disk_node,
                    numa,
                    max_shards,
                    data_dir: dir.as_deref(),
                },
            )?;
            if as_json {
                println!("{}", json(&p)?);
            } else {
                print!("{}", plan::render(&p));
            }
        }
        Command::Flamegraph {
            pid,
            seconds,
            perf_data,
            output,
            frequency_hz,
            call_graph,
            keep_data,
            title,
            command,
        } => {
            let target = match (pid, perf_data, command.is_empty()) {
                (Some(pid), None, true) => Target::Pid { pid, seconds },
                (None, Some(data), true) => Target::PerfData(data),
                (None, None, false) => Target::Command(command),
                _ => {
                    return Err(Error::Invalid(
                        "give exactly one of --pid PID, --perf-data FILE, or -- COMMAND"
                            .to_string(),
                    ));
                }
            };
            let opts = FlameOptions {
                frequency_hz,
                call_graph,
                title,
            };
            let samples = flamegraph::flamegraph(&target, &opts, &output, keep_data.as_deref())?;
            eprintln!("corekv-tune: {samples} samples → {}", output.display());
        }
        Command::Disk {
            dir,
            file_size_bytes,
            seconds,
            no_sweep,
            tests,
            no_save,
            json: as_json,
        } => {
            let dir = std::fs::canonicalize(&dir).map_err(|e| Error::Io {
                op: "open directory",
                path: dir.clone(),
                source: e,
                hint: "; create it first (the probe measures the disk it is on)".to_string(),
            })?;
            // The device name is informative; a machine whose /sys we cannot read still gets
            // its disk measured.
            let device = inspect::DataDevice::read(&Host::live(), &dir)
                .ok()
                .and_then(|d| d.disks.first().map(|d| d.name.clone()).or(d.device))
                .unwrap_or_default();
            let opts = disk::ProbeOptions {
                file_size_bytes,
                seconds_per_test: seconds,
                sweep: !no_sweep,
                tests,
            };
            let report = disk::measure(&dir, &opts, device)?;
            if as_json {
                println!("{}", json(&report)?);
            } else {
                print!("{}", disk::render(&report));
            }
            match (&report.properties, no_save) {
                (_, true) => {}
                (Some(p), false) => {
                    let path = p.store(&dir).map_err(|e| Error::Invalid(e.to_string()))?;
                    eprintln!("corekv-tune: wrote {}", path.display());
                }
                (None, false) => eprintln!(
                    "corekv-tune: io-properties not written: it needs every test (seq-write, randread, fdatasync)"
                ),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corekv-tune: {e}");
            ExitCode::FAILURE
        }
    }
}
