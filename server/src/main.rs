//! `corekv-server` entry point. Exit status: 0 after a clean stop (SIGINT/SIGTERM), 1 when the
//! server cannot start or a shard fails, 2 for a bad command line or configuration.

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
    if let Err(e) = corekv_server::logging::init(config.log_format, &config.log_level) {
        eprintln!("corekv-server: {e}");
        return ExitCode::from(2);
    }
    // Before the shards start, so before the allocator hands out much memory (why:
    // `hugepages`'s module doc).
    if !config.transparent_huge_pages
        && let Err(e) = corekv_server::hugepages::disable_transparent_huge_pages()
    {
        tracing::warn!(
            "could not turn transparent huge pages off for this process ({e}); \
             SETs may cost more CPU (the kernel zeroes 2 MiB on each first touch)"
        );
    }
    match corekv_server::launch::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
