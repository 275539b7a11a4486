//! `corekv-bench` entry point: one subcommand per benchmark.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// corekv's benchmark driver. Figures and how to reproduce them: docs/BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "corekv-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// YCSB core workloads A–F against corekv or Redis, printed in YCSB's format.
    Ycsb(corekv_bench::ycsb::args::YcsbArgs),
    /// db_bench's engine micro-benchmarks against one storage engine, in db_bench's format.
    Engine(corekv_bench::engine::EngineArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Ycsb(args) => ycsb(&args),
        Command::Engine(args) => match corekv_bench::engine::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("corekv-bench engine: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn ycsb(args: &corekv_bench::ycsb::args::YcsbArgs) -> ExitCode {
    match corekv_bench::ycsb::run(args) {
        Ok(reports) => {
            let errors: Vec<_> = reports.iter().flat_map(|r| r.errors.iter()).collect();
            if errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                for e in errors {
                    eprintln!("corekv-bench ycsb: a connection failed: {e}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("corekv-bench ycsb: {e}");
            ExitCode::from(2)
        }
    }
}
