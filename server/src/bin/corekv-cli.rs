//! `corekv-cli`: put, get, delete, scan, cas, stats, topology and info from the shell, one per
//! invocation or in an interactive shell.
//! Everything is in `corekv_server::cli`; `corekv-cli --help` explains the commands, the
//! escaping of binary keys and values, and the exit statuses.

fn main() -> std::process::ExitCode {
    corekv_server::cli::main()
}
