//! `corekv-server` entry point.

use std::process::ExitCode;

use clap::Parser;
use corekv_server::config::{Cli, Config, allowed_cpus};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match allowed_cpus()
        .map_err(|e| format!("cannot read this process's CPU affinity: {e}"))
        .and_then(|cpus| Config::resolve(cli, &cpus).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("corekv-server: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "corekv-server: would run {} shards on CPUs {} with data in {:?}, listening on {}",
        config.shard_count(),
        config.cores,
        config.data_dir,
        config.listen
    );
    eprintln!("corekv-server: serving is not implemented yet");
    ExitCode::FAILURE
}
