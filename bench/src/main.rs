//! `corekv-bench` entry point: one subcommand per benchmark.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// corekv's benchmark driver. Figures and how to reproduce them: docs/BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "corekv-bench", version)]
struct Cli {
    /// Keep transparent huge pages for this process. Off by default, as in `corekv-server`:
    /// the allocator asks for them, and the kernel then zeroes 2 MiB at each first touch of
    /// fresh memory (the engine's memtables and flushes touch fresh memory all the time; the
    /// peers' allocators do not ask for huge pages).
    #[arg(long, global = true)]
    transparent_huge_pages: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// YCSB core workloads A–F against corekv, Redis or etcd, printed in YCSB's format.
    ///
    /// etcd (`--backend etcd --addr HOST:PORT[,HOST:PORT...]`): etcd's v3 gRPC API (KV Put and
    /// Range over HTTP/2), as etcd's own benchmark tool. A record is one value; an update of one
    /// field reads the record and puts it back whole, as YCSB's etcd binding does; a scan is a
    /// Range from the start key with limit = count. Connections go to the listed members
    /// round-robin (followers forward writes to the leader). docs/BENCHMARKS.md has the commands.
    Ycsb(corekv_bench::ycsb::args::YcsbArgs),
    /// db_bench's engine micro-benchmarks against one storage engine, in db_bench's format.
    Engine(corekv_bench::engine::EngineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the engine or the driver allocates much (memory already backed by huge pages
    // stays so).
    if !cli.transparent_huge_pages
        && let Err(e) = corekv_server::hugepages::disable_transparent_huge_pages()
    {
        eprintln!("corekv-bench: could not turn transparent huge pages off ({e}); going on");
    }
    match cli.command {
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
