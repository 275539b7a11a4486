//! `corekv-cli`: talk to a corekv server from the shell, one command per invocation or in an
//! interactive shell (no command: [`shell`]).
//!
//! One connection to `--addr` (any of the server's ports: the server forwards each operation to
//! the shard that owns its key), over the Rust client on a tokio current-thread runtime.
//! Keys and values are binary-safe: see [`escape`] for the escaped form used by default and by
//! every line of output, or use `--hex`. `--output json` prints one JSON object per result
//! ([`output`]).
//!
//! Exit status: 0 success, 1 `get` of a missing key, 2 bad command line, 3 `cas` whose
//! expectation did not hold, 4 the server refused the operation (a typed error: not applied),
//! 5 not sent (cannot resolve or connect: certainly not applied), 6 sent but the outcome is
//! unknown (connection lost, no answer within `--timeout-ms`: a write may or may not have been
//! applied), 7 the operation completed but its result could not be written to stdout.

mod cluster;
mod commands;
pub mod escape;
pub mod output;
mod shell;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corekv_proto::{Error as ClientError, OpError};

use output::Format;

/// Exit status: `get` found no value.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit status: bad command line (also clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: a `cas` expectation did not hold.
pub const EXIT_CAS_FAILED: u8 = 3;
/// Exit status: the server refused the operation with a typed error; it was not applied.
pub const EXIT_SERVER_ERROR: u8 = 4;
/// Exit status: nothing was sent (the address did not resolve, or no connection could be
/// made): the operation was certainly not applied.
pub const EXIT_NOT_SENT: u8 = 5;
/// Exit status: the request was sent but no answer came (connection lost, timeout): a write
/// may or may not have been applied.
pub const EXIT_UNKNOWN: u8 = 6;
/// Exit status: the operation completed, but writing its result to stdout failed.
pub const EXIT_OUTPUT: u8 = 7;

/// Default `--timeout-ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Talk to a corekv server.
///
/// Keys and values are written with C-like escapes: `\\`, `\t`, `\n`, `\r`, `\0` and `\xHH`
/// stand for those bytes, other characters for their UTF-8 bytes (so `a\x00b` is 3 bytes);
/// output uses the same form, so any output can be pasted back. `--hex` switches input and
/// output to plain hex. Without a command, an interactive shell reads commands (one per line,
/// as in the one-shot form; `help` lists them, `quit` leaves).
///
/// Exit status: 0 ok, 1 key not found (`get`), 2 bad usage, 3 `cas` expectation not met,
/// 4 the server refused the operation (not applied), 5 not sent (cannot resolve or connect;
/// not applied), 6 sent but the outcome is unknown (connection lost or timeout; a write may
/// or may not have been applied), 7 the result could not be written to stdout.
#[derive(Debug, Parser)]
#[command(name = "corekv-cli", version)]
pub struct Args {
    /// Server address (the main port, or any shard's own port).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7379",
        global = true
    )]
    pub addr: String,

    /// Keys and values, in arguments and output, are hex instead of escaped text (and
    /// instead of base64 in JSON output).
    #[arg(long, global = true)]
    pub hex: bool,

    /// Output format: `human` lines, or one `json` object per result.
    #[arg(long, value_enum, default_value = "human", global = true)]
    pub output: Format,

    /// How long to wait for a connection, and then for each answer; past it a write's outcome
    /// is unknown (exit status 6).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_TIMEOUT_MS, global = true)]
    pub timeout_ms: u64,

    /// What to do; none opens the interactive shell.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `corekv-cli` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write VALUE under KEY. Prints `OK`.
    Put {
        /// The key.
        key: String,
        /// The value (omit it with --stdin).
        #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
        value: Option<String>,
        /// Read the value's raw bytes from standard input instead.
        #[arg(long)]
        stdin: bool,
        /// Expire the value after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        ttl_ms: u64,
    },
    /// Print the value of KEY (exit status 1 if it has none).
    Get {
        /// The key.
        key: String,
        /// Write the value's raw bytes, without escaping or a final newline.
        #[arg(long, conflicts_with = "sequence")]
        raw: bool,
        /// Print `SEQUENCE<TAB>VALUE`: the sequence number of the write that stored the value
        /// (what `cas --expect-sequence` takes) before the value.
        #[arg(long)]
        sequence: bool,
    },
    /// Remove KEY (succeeds whether or not it exists). Prints `OK`.
    Delete {
        /// The key.
        key: String,
    },
    /// Print the entries in [START, END), one `key<TAB>value` line each, in key order.
    /// An empty START or END ("") leaves that side open.
    Scan {
        /// Inclusive lower bound.
        start: String,
        /// Exclusive upper bound.
        end: String,
        /// Print at most N entries (default: all).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print in descending key order, from just below END.
        #[arg(long)]
        reverse: bool,
    },
    /// Compare-and-set: write (or delete) KEY only if it currently holds the expected value
    /// (or is absent, or holds the expected version). Prints `OK`; otherwise prints what KEY
    /// holds (nothing on stdout and `(absent)` on stderr if it holds nothing) and exits with
    /// status 3.
    Cas {
        /// The key.
        key: String,
        /// The value KEY must hold.
        #[arg(
            long,
            value_name = "VALUE",
            required_unless_present_any = ["expect_absent", "expect_sequence"],
            conflicts_with_all = ["expect_absent", "expect_sequence"]
        )]
        expect: Option<String>,
        /// KEY must have no value.
        #[arg(long, conflicts_with = "expect_sequence")]
        expect_absent: bool,
        /// KEY's value must be the one written with this sequence number (as `get --sequence`
        /// prints it).
        #[arg(long, value_name = "N")]
        expect_sequence: Option<u64>,
        /// The value to write.
        #[arg(
            long,
            value_name = "VALUE",
            required_unless_present = "delete",
            conflicts_with = "delete"
        )]
        new: Option<String>,
        /// Delete KEY instead of writing.
        #[arg(long)]
        delete: bool,
        /// Expire the new value after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        ttl_ms: u64,
    },
    /// Replace KEY's value with an entity of the columns NAME=VALUE (split at the first `=`;
    /// write `\x3d` for an `=` in a name). Prints `OK`.
    PutEntity {
        /// The key.
        key: String,
        /// The columns, `NAME=VALUE` each.
        #[arg(required = true, value_name = "NAME=VALUE")]
        columns: Vec<String>,
        /// Expire the entity after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        ttl_ms: u64,
    },
    /// Set the columns NAME=VALUE and remove the --remove columns of the entity under KEY,
    /// atomically (the others are unchanged; creates it if KEY has no value). Prints `OK`.
    UpdateColumns {
        /// The key.
        key: String,
        /// Columns to set, `NAME=VALUE` each.
        #[arg(value_name = "NAME=VALUE", required_unless_present = "remove")]
        set: Vec<String>,
        /// A column to remove (repeat for more).
        #[arg(long, value_name = "NAME")]
        remove: Vec<String>,
        /// Expire the entity after this many milliseconds from this write (0: never).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        ttl_ms: u64,
    },
    /// Print columns of the entity under KEY (all, or the NAMEs given), one `name<TAB>value`
    /// line each in name order (exit status 1 if KEY has no value).
    GetColumns {
        /// The key.
        key: String,
        /// Columns to print; none prints all.
        names: Vec<String>,
    },
    /// Add BY (default 1; negative subtracts) to the counter in KEY, or in one column of the
    /// entity under KEY, and print its new value.
    Increment {
        /// The key.
        key: String,
        /// The column holding the counter (default: KEY's whole value).
        #[arg(long, value_name = "NAME")]
        column: Option<String>,
        /// What to add.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1,
            allow_negative_numbers = true
        )]
        by: i64,
        /// Expire what is written after this many milliseconds (0: never).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        ttl_ms: u64,
    },
    /// Print every shard's counters, one `shard<TAB>name<TAB>value` line each.
    Stats,
    /// Print the shard count and hash, then one `shard<TAB>host:port` line per shard (in a
    /// cluster, followed by `leader N` and the replicas' `node=host:port`).
    Topology,
    /// Cluster commands.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print what the server is and every limit it enforces, one `name<TAB>value` line each
    /// (version, protocol_version, node_id, durability, shard_count, then the limits).
    Info,
}

/// What `corekv-cli cluster` does.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Ask every replica (found through the `topology` of --addr) for its Raft state and print,
    /// per shard, one line per replica: node, address, role, term, commit index, applied
    /// index, and lag (entries behind the highest commit index known).
    Status,
    /// Make NODE the leader of a shard's Raft group (before maintenance of the current
    /// leader's machine, or to place leaders): asks --addr, which names the shard's leader if
    /// it is not (then asked in turn), and waits until NODE leads (about two election timeouts
    /// at most).
    /// Writes sent meanwhile are refused with `notLeader` and retried by clients, as in a
    /// failover. Prints `shard<TAB>leader`.
    TransferLeader {
        /// The node to lead.
        node: u64,
        /// The shard whose group moves.
        #[arg(long, default_value_t = 0)]
        shard: u32,
    },
}

/// A failure with the exit status it maps to.
pub struct Failure {
    status: u8,
    message: String,
    /// The server's typed error, when it refused the operation.
    server: Option<OpError>,
}

impl Failure {
    fn new(status: u8, message: String) -> Failure {
        Failure {
            status,
            message,
            server: None,
        }
    }

    /// What a script can conclude about the operation.
    fn outcome(&self) -> &'static str {
        match self.status {
            EXIT_SERVER_ERROR => "refused",
            EXIT_NOT_SENT => "not_sent",
            EXIT_OUTPUT => "done",
            EXIT_USAGE => "usage",
            _ => "unknown",
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let status = match &e {
            ClientError::Server(_) => EXIT_SERVER_ERROR,
            ClientError::Connect { .. } | ClientError::Resolve { .. } => EXIT_NOT_SENT,
            ClientError::Rpc(_) | ClientError::Protocol(_) => EXIT_UNKNOWN,
        };
        let message = match status {
            EXIT_UNKNOWN => format!("{e} (the outcome is unknown: it may have been applied)"),
            _ => e.to_string(),
        };
        Failure {
            status,
            message,
            server: e.server_error().cloned(),
        }
    }
}

fn usage(message: String) -> Failure {
    Failure::new(EXIT_USAGE, message)
}

/// Parses the command line, runs the command (or the shell), returns the exit status.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corekv-cli: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_NOT_SENT);
        }
    };
    let local = tokio::task::LocalSet::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printer = output::Printer {
        hex: args.hex,
        format: args.output,
        out: &mut out,
    };
    let status = local.block_on(&runtime, async {
        let timeout = Duration::from_millis(args.timeout_ms.max(1));
        let addr = match corekv_proto::client::resolve(&args.addr) {
            Ok(addr) => addr,
            Err(e) => return printer.report(&Failure::from(e), "corekv-cli: "),
        };
        let mut session = commands::Session::new(addr, timeout);
        match &args.command {
            Some(command) => match session.execute(command, &mut printer).await {
                Ok(status) => status,
                Err(f) => printer.report(&f, "corekv-cli: "),
            },
            None => shell::run(&mut session, &mut printer).await,
        }
    });
    ExitCode::from(status)
}
