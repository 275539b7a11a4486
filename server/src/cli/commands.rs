//! Running one `corekv-cli` command over a session's connection, bounded in time.

use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use corekv_proto::client::TokioRuntime;
use corekv_proto::{
    CasOp, Column, Connection, Error as ClientError, ErrorCode, Expected, GetColumnsOp,
    IncrementOp, PutEntityOp, ScanOp, UpdateColumnsOp,
};

use super::output::Printer;
use super::{
    ClusterCommand, Command, EXIT_CAS_FAILED, EXIT_NOT_FOUND, EXIT_NOT_SENT, EXIT_UNKNOWN, Failure,
    escape, usage,
};

/// Pause between tries while a cluster shard has no leader (an election).
const LEADER_PAUSE: Duration = Duration::from_millis(200);

/// One server's connection, opened on first use and kept (the shell runs many commands on it).
pub struct Session {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<Connection>,
}

impl Session {
    /// A session with `addr`, each connection attempt and each call bounded by `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Session {
        Session {
            addr,
            timeout,
            conn: None,
        }
    }

    async fn connection(&mut self) -> Result<&Connection, Failure> {
        if self.conn.is_none() {
            let connect = Connection::connect(TokioRuntime, self.addr);
            let conn = match tokio::time::timeout(self.timeout, connect).await {
                Ok(conn) => conn?,
                Err(_) => {
                    return Err(Failure::new(
                        EXIT_NOT_SENT,
                        format!(
                            "cannot connect to {} within {} ms",
                            self.addr,
                            self.timeout.as_millis()
                        ),
                    ));
                }
            };
            self.conn = Some(conn);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| Failure::new(EXIT_NOT_SENT, "no connection".to_string()))
    }

    /// Runs `command`, printing its result; the exit status, or the failure. A cluster
    /// node's `notLeader` (nothing was applied) sends the command again to the leader it names
    /// (kept for the session's next commands), or, during an election, again after a pause,
    /// within the timeout; not for `put --stdin`, whose input is read once.
    pub async fn execute(
        &mut self,
        command: &Command,
        printer: &mut Printer<'_>,
    ) -> Result<u8, Failure> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let result = self.run(command, printer).await;
            let Err(f) = &result else {
                return result;
            };
            if f.status == EXIT_UNKNOWN {
                // The connection may be broken: the next command opens a new one.
                self.conn = None;
            }
            let refusal = f.server.as_ref().filter(|e| e.code == ErrorCode::NotLeader);
            let Some(refusal) = refusal else {
                return result;
            };
            if matches!(command, Command::Put { stdin: true, .. })
                || tokio::time::Instant::now() >= deadline
            {
                return result;
            }
            let leader = refusal
                .leader
                .as_ref()
                .and_then(|l| l.address.as_deref())
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .filter(|a| *a != self.addr);
            match leader {
                Some(addr) => {
                    self.addr = addr;
                    self.conn = None;
                }
                None => tokio::time::sleep(LEADER_PAUSE).await,
            }
        }
    }

    async fn run(&mut self, command: &Command, p: &mut Printer<'_>) -> Result<u8, Failure> {
        let hex = p.hex;
        let decode = |what: &str, text: &str| decode_arg(hex, what, text);
        let timeout = self.timeout;
        match command {
            Command::Put {
                key,
                value,
                stdin,
                ttl_ms,
            } => {
                // Arguments are decoded before connecting: a typo costs no round trip.
                let key = decode("KEY", key)?;
                let value = match (value, stdin) {
                    (Some(v), false) => decode("VALUE", v)?,
                    _ => {
                        let mut buf = Vec::new();
                        std::io::stdin()
                            .read_to_end(&mut buf)
                            .map_err(|e| usage(format!("cannot read the value from stdin: {e}")))?;
                        buf
                    }
                };
                let conn = self.connection().await?;
                let sequence = timed(timeout, conn.put(&key, &value, *ttl_ms)).await?;
                p.written(sequence)?;
            }
            Command::Get { key, raw, sequence } => {
                let key = decode("KEY", key)?;
                let conn = self.connection().await?;
                let found = timed(timeout, conn.get_versioned(&key)).await?;
                match &found {
                    Some(v) if *raw => p.raw(&v.value)?,
                    other => p.got(other.as_ref(), *sequence)?,
                }
                if found.is_none() {
                    return Ok(EXIT_NOT_FOUND);
                }
            }
            Command::Delete { key } => {
                let key = decode("KEY", key)?;
                let conn = self.connection().await?;
                let sequence = timed(timeout, conn.delete(&key)).await?;
                p.written(sequence)?;
            }
            Command::Scan {
                start,
                end,
                limit,
                reverse,
            } => {
                let mut op = ScanOp {
                    start: decode("START", start)?,
                    end: decode("END", end)?,
                    limit: 1000,
                    reverse: *reverse,
                };
                let wanted = limit.unwrap_or(usize::MAX);
                let conn = self.connection().await?;
                let mut entries = Vec::new();
                let (mut more, mut continuation) = (false, Vec::new());
                while entries.len() < wanted {
                    op.limit = u32::try_from(wanted - entries.len())
                        .unwrap_or(u32::MAX)
                        .min(1000);
                    let page = timed(timeout, conn.scan(&op)).await?;
                    let room = wanted - entries.len();
                    let cut = page.entries.len() > room;
                    entries.extend(page.entries.into_iter().take(room));
                    more = page.more || cut;
                    continuation = match (cut, entries.last()) {
                        // Stopped inside a page: continue just past the last entry printed.
                        (true, Some((last, _))) if !op.reverse => [last.as_slice(), &[0]].concat(),
                        (true, Some((last, _))) => last.clone(),
                        _ => page.continuation,
                    };
                    if !page.more {
                        break;
                    }
                    op = op.resume(&continuation);
                }
                p.scanned(&entries, more, &continuation)?;
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
                    key: decode("KEY", key)?,
                    expected: match (expect, expect_sequence) {
                        (Some(v), _) => Expected::Value(decode("--expect", v)?),
                        (None, Some(sequence)) => Expected::Sequence(*sequence),
                        (None, None) => Expected::Absent,
                    },
                    new: new.as_deref().map(|v| decode("--new", v)).transpose()?,
                    ttl_ms: *ttl_ms,
                };
                let conn = self.connection().await?;
                let result = timed(timeout, conn.cas(&op)).await?;
                p.cas(&result)?;
                if !result.succeeded {
                    return Ok(EXIT_CAS_FAILED);
                }
            }
            Command::PutEntity {
                key,
                columns,
                ttl_ms,
            } => {
                let op = PutEntityOp {
                    key: decode("KEY", key)?,
                    columns: decode_columns(hex, columns)?,
                    ttl_ms: *ttl_ms,
                };
                let conn = self.connection().await?;
                p.written(timed(timeout, conn.put_entity(&op)).await?)?;
            }
            Command::UpdateColumns {
                key,
                set,
                remove,
                ttl_ms,
            } => {
                let op = UpdateColumnsOp {
                    key: decode("KEY", key)?,
                    set: decode_columns(hex, set)?,
                    remove: remove
                        .iter()
                        .map(|n| decode("--remove", n))
                        .collect::<Result<_, _>>()?,
                    ttl_ms: *ttl_ms,
                };
                let conn = self.connection().await?;
                p.written(timed(timeout, conn.update_columns(&op)).await?)?;
            }
            Command::GetColumns { key, names } => {
                let op = GetColumnsOp {
                    key: decode("KEY", key)?,
                    names: names
                        .iter()
                        .map(|n| decode("NAME", n))
                        .collect::<Result<_, _>>()?,
                };
                let conn = self.connection().await?;
                let found = timed(timeout, conn.get_columns(&op)).await?;
                p.columns(found.as_ref())?;
                if found.is_none() {
                    return Ok(EXIT_NOT_FOUND);
                }
            }
            Command::Increment {
                key,
                column,
                by,
                ttl_ms,
            } => {
                let op = IncrementOp {
                    key: decode("KEY", key)?,
                    column: column
                        .as_deref()
                        .map(|c| decode("--column", c))
                        .transpose()?
                        .unwrap_or_default(),
                    delta: *by,
                    ttl_ms: *ttl_ms,
                };
                let conn = self.connection().await?;
                let (value, sequence) = timed(timeout, conn.increment(&op)).await?;
                p.incremented(value, sequence)?;
            }
            Command::Stats => {
                let conn = self.connection().await?;
                p.stats(&timed(timeout, conn.stats()).await?)?;
            }
            Command::Info => {
                let conn = self.connection().await?;
                p.info(&timed(timeout, conn.server_info()).await?)?;
            }
            Command::Topology => {
                let conn = self.connection().await?;
                p.topology(&timed(timeout, conn.topology()).await?)?;
            }
            Command::Cluster(ClusterCommand::Status) => {
                let conn = self.connection().await?;
                let topology = timed(timeout, conn.topology()).await?;
                let rows = super::cluster::status(self.addr, &topology, timeout).await?;
                p.cluster_status(&rows)?;
            }
            Command::Cluster(ClusterCommand::TransferLeader { node, shard }) => {
                // Asked of the node reached; another than the leader answers `notLeader`
                // naming it, and `execute` asks again there.
                let conn = self.connection().await?;
                timed(timeout, conn.transfer_leader(*shard, *node)).await?;
                p.leader(*shard, *node)?;
            }
        }
        Ok(0)
    }
}

fn decode_arg(hex: bool, what: &str, text: &str) -> Result<Vec<u8>, Failure> {
    if hex {
        escape::from_hex(text)
    } else {
        escape::unescape(text)
    }
    .map_err(|e| usage(format!("{what}: {e}")))
}

/// `NAME=VALUE` arguments as columns (split at the first `=`, then each side decoded).
fn decode_columns(hex: bool, args: &[String]) -> Result<Vec<Column>, Failure> {
    args.iter()
        .map(|arg| {
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| usage(format!("column {arg:?} is not NAME=VALUE")))?;
            Ok((
                decode_arg(hex, "a column name", name)?,
                decode_arg(hex, "a column value", value)?,
            ))
        })
        .collect()
}

/// `call`'s result, or, past `timeout`, a failure whose outcome is unknown (the request was
/// sent).
async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Failure::new(
            EXIT_UNKNOWN,
            format!(
                "no answer within {} ms (the outcome is unknown: it may have been applied)",
                timeout.as_millis()
            ),
        )),
    }
}
