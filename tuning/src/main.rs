//! `corekv-tune` entry point: parses the command line and runs one subcommand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
