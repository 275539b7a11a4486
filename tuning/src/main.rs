//! `corekv-tune` entry point.

use std::path::Path;
use std::process::ExitCode;

use corekv_tune::topology::Topology;

fn main() -> ExitCode {
    match Topology::read(Path::new("/sys")) {
        Ok(t) => {
            println!(
                "{} online CPUs, {} physical cores, SMT {}, {} NUMA nodes",
                t.cpus.len(),
                t.physical_cores(),
                if t.smt_active() { "on" } else { "off" },
                t.nodes.len().max(1)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corekv-tune: {e}");
            ExitCode::FAILURE
        }
    }
}
