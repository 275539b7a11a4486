//! `corekv-bench` entry point.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    eprintln!("corekv-bench: no benchmark is implemented yet (see docs/BENCHMARKS.md)");
    ExitCode::FAILURE
}
