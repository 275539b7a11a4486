//! `corekv-cli`: talk to a corekv server from the shell.
//!
//! One connection to `--addr` (any of the server's ports: the server forwards each operation to
//! the shard that owns its key), over the Rust client on a tokio current-thread runtime.
//! Keys and values are binary-safe: see [`escape`] for the escaped form used by default and by
//! every line of output, or use `--hex`.
//!
//! Exit status: 0 success, 1 `get` of a missing key, 2 bad command line, 3 `cas` whose
//! expectation did not hold, 4 the server refused the operation (a typed error, printed),
//! 5 connection or protocol failure.

pub mod escape;

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corekv_proto::client::TokioRuntime;
use corekv_proto::{CasOp, Connection, Error as ClientError, Expected, ScanOp};

/// Exit status: `get` found no value.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit status: bad command line (also clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: a `cas` expectation did not hold.
pub const EXIT_CAS_FAILED: u8 = 3;
/// Exit status: the server answered with a typed error.
pub const EXIT_SERVER_ERROR: u8 = 4;
/// Exit status: could not talk to the server.
pub const EXIT_CONNECTION: u8 = 5;

/// Talk to a corekv server.
///
/// Keys and values are written with C-like escapes: `\\`, `\t`, `\n`, `\r`, `\0` and `\xHH`
/// stand for those bytes, other characters for their UTF-8 bytes (so `a\x00b` is 3 bytes);
/// output uses the same form, so any output can be pasted back. `--hex` switches input and
/// output to plain hex.
///
/// Exit status: 0 ok, 1 key not found (`get`), 2 bad usage, 3 `cas` expectation not met,
/// 4 the server refused the operation, 5 cannot reach the server.
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

    /// Keys and values, in arguments and output, are hex instead of escaped text.
    #[arg(long, global = true)]
    pub hex: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    /// (or is absent). Prints `OK`; otherwise prints what KEY holds (`(absent)` if nothing) and
    /// exits with status 3.
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
    /// Print every shard's counters, one `shard<TAB>name<TAB>value` line each.
    Stats,
    /// Print the shard count and hash, then one `shard<TAB>host:port` line per shard.
    Topology,
    /// Print what the server is and every limit it enforces, one `name<TAB>value` line each
    /// (version, protocol_version, node_id, durability, shard_count, then the limits).
    Info,
}

/// A failure with the exit status it maps to.
struct Failure {
    status: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let status = match e {
            ClientError::Server(_) => EXIT_SERVER_ERROR,
            _ => EXIT_CONNECTION,
        };
        Failure {
            status,
            message: e.to_string(),
        }
    }
}

fn usage(message: String) -> Failure {
    Failure {
        status: EXIT_USAGE,
        message,
    }
}

/// Parses the command line, runs the command, returns the exit status.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corekv-cli: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_CONNECTION);
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(&args)) {
        Ok(status) => ExitCode::from(status),
        Err(f) => {
            eprintln!("corekv-cli: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

struct Codec {
    hex: bool,
}

impl Codec {
    fn decode(&self, what: &str, text: &str) -> Result<Vec<u8>, Failure> {
        if self.hex {
            escape::from_hex(text)
        } else {
            escape::unescape(text)
        }
        .map_err(|e| usage(format!("{what}: {e}")))
    }

    fn encode(&self, bytes: &[u8]) -> String {
        if self.hex {
            escape::to_hex(bytes)
        } else {
            escape::escape(bytes)
        }
    }
}

fn print(out: &mut impl Write, line: std::fmt::Arguments<'_>) -> Result<(), Failure> {
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| Failure {
            status: EXIT_CONNECTION,
            message: format!("cannot write to stdout: {e}"),
        })
}

async fn run(args: &Args) -> Result<u8, Failure> {
    let codec = Codec { hex: args.hex };
    let addr = corekv_proto::client::resolve(&args.addr).map_err(|e| usage(e.to_string()))?;
    // Decode arguments before connecting, so that a typo costs no round trip.
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &args.command {
        Command::Put {
            key,
            value,
            stdin,
            ttl_ms,
        } => {
            let key = codec.decode("KEY", key)?;
            let value = match (value, stdin) {
                (Some(v), false) => codec.decode("VALUE", v)?,
                _ => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| usage(format!("cannot read the value from stdin: {e}")))?;
                    buf
                }
            };
            let conn = Connection::connect(TokioRuntime, addr).await?;
            conn.put(&key, &value, *ttl_ms).await?;
            print(&mut out, format_args!("OK"))?;
        }
        Command::Get { key, raw, sequence } => {
            let key = codec.decode("KEY", key)?;
            let conn = Connection::connect(TokioRuntime, addr).await?;
            match conn.get_versioned(&key).await? {
                Some(v) if *raw => out.write_all(&v.value).map_err(|e| Failure {
                    status: EXIT_CONNECTION,
                    message: format!("cannot write to stdout: {e}"),
                })?,
                Some(v) if *sequence => print(
                    &mut out,
                    format_args!("{}\t{}", v.sequence, codec.encode(&v.value)),
                )?,
                Some(v) => print(&mut out, format_args!("{}", codec.encode(&v.value)))?,
                None => {
                    eprintln!("(not found)");
                    return Ok(EXIT_NOT_FOUND);
                }
            }
        }
        Command::Delete { key } => {
            let key = codec.decode("KEY", key)?;
            let conn = Connection::connect(TokioRuntime, addr).await?;
            conn.delete(&key).await?;
            print(&mut out, format_args!("OK"))?;
        }
        Command::Scan {
            start,
            end,
            limit,
            reverse,
        } => {
            let mut op = ScanOp {
                start: codec.decode("START", start)?,
                end: codec.decode("END", end)?,
                limit: 1000,
                reverse: *reverse,
            };
            let wanted = limit.unwrap_or(usize::MAX);
            let conn = Connection::connect(TokioRuntime, addr).await?;
            let mut printed = 0usize;
            while printed < wanted {
                op.limit = u32::try_from(wanted - printed)
                    .unwrap_or(u32::MAX)
                    .min(1000);
                let page = conn.scan(&op).await?;
                for (k, v) in page.entries.iter().take(wanted - printed) {
                    print(
                        &mut out,
                        format_args!("{}\t{}", codec.encode(k), codec.encode(v)),
                    )?;
                    printed += 1;
                }
                if !page.more {
                    break;
                }
                op = op.resume(&page.continuation);
            }
        }
        Command::Cas {
            key,
            expect,
            expect_absent: _,
            expect_sequence,
            new,
            delete: _,
            ttl_ms,
        } => {
            let op = CasOp {
                key: codec.decode("KEY", key)?,
                expected: match (expect, expect_sequence) {
                    (Some(v), _) => Expected::Value(codec.decode("--expect", v)?),
                    (None, Some(sequence)) => Expected::Sequence(*sequence),
                    (None, None) => Expected::Absent,
                },
                new: new
                    .as_deref()
                    .map(|v| codec.decode("--new", v))
                    .transpose()?,
                ttl_ms: *ttl_ms,
            };
            let conn = Connection::connect(TokioRuntime, addr).await?;
            let result = conn.cas(&op).await?;
            if result.succeeded {
                print(&mut out, format_args!("OK"))?;
            } else {
                match result.current {
                    Some(v) => print(&mut out, format_args!("{}", codec.encode(&v)))?,
                    None => print(&mut out, format_args!("(absent)"))?,
                }
                return Ok(EXIT_CAS_FAILED);
            }
        }
        Command::Stats => {
            let conn = Connection::connect(TokioRuntime, addr).await?;
            for shard in conn.stats().await? {
                for (name, value) in &shard.counters {
                    print(&mut out, format_args!("{}\t{name}\t{value}", shard.id))?;
                }
            }
        }
        Command::Info => {
            let conn = Connection::connect(TokioRuntime, addr).await?;
            let i = conn.server_info().await?;
            let l = &i.limits;
            let lines: [(&str, &dyn std::fmt::Display); 16] = [
                ("version", &i.version),
                ("protocol_version", &i.protocol_version),
                ("node_id", &i.node_id),
                ("durability", &i.durability),
                ("shard_count", &i.shard_count),
                ("key_bytes_max", &l.key_bytes_max),
                ("value_bytes_max", &l.value_bytes_max),
                ("batch_ops_max", &l.batch_ops_max),
                ("batch_bytes_max", &l.batch_bytes_max),
                ("reply_bytes_max", &l.reply_bytes_max),
                ("scan_limit_default", &l.scan_limit_default),
                ("scan_limit_max", &l.scan_limit_max),
                ("scan_page_bytes_max", &l.scan_page_bytes_max),
                ("ttl_ms_max", &l.ttl_ms_max),
                ("frame_bytes_max", &l.frame_bytes_max),
                (
                    "connection_inflight_ops_max",
                    &l.connection_inflight_ops_max,
                ),
            ];
            for (name, value) in lines {
                print(&mut out, format_args!("{name}\t{value}"))?;
            }
        }
        Command::Topology => {
            let conn = Connection::connect(TokioRuntime, addr).await?;
            let t = conn.topology().await?;
            print(
                &mut out,
                format_args!("shards {} hash {}", t.shard_count, t.hash),
            )?;
            for s in &t.shards {
                print(&mut out, format_args!("{}\t{}:{}", s.id, s.host, s.port))?;
            }
        }
    }
    Ok(0)
}
