//! An in-process corekv server, for `corekv-bench ycsb --backend corekv` without `--addr`: one
//! command shows corekv working end to end on a fresh machine.
//!
//! The server runs on its own threads (`corekv_server::launch::serve`: one pinned glommio
//! executor per shard) over a fresh data directory under `$COREKV_BENCH_DIR` (default
//! `/var/tmp`, which is a real disk on usual systems: the WAL uses O_DIRECT, which tmpfs does
//! not support), listening on free loopback ports. It is stopped cleanly, and the directory
//! removed, when the [`InProcessServer`] is stopped or dropped. The driver's CPU figures
//! (`getrusage(RUSAGE_THREAD)` of the client threads) exclude the server's threads.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corekv_server::config::{Cli, Config, allowed_cpus};
use corekv_server::control::Control;

use crate::Error;

/// How long the server may take to open its shards and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at finding `shards + 1` consecutive free ports.
const PORT_ATTEMPTS: usize = 50;

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct InProcessOptions {
    /// CPUs for the shards, one shard each (`corekv-server --cores`); default: every CPU this
    /// process may use.
    pub cores: Option<String>,
    /// `corekv-server --durability` (`sync`, `periodic:MS`, `none`); default `sync`.
    pub durability: Option<String>,
}

/// A running in-process server.
pub struct InProcessServer {
    addr: SocketAddr,
    shard_count: usize,
    control: Arc<Control>,
    thread: Option<JoinHandle<Result<(), corekv_server::Error>>>,
    dir: Option<tempfile::TempDir>,
}

fn free_consecutive_ports(count: usize) -> Option<u16> {
    for _ in 0..PORT_ATTEMPTS {
        let base = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        if usize::from(base) + count > usize::from(u16::MAX) {
            continue;
        }
        let all_free =
            (0..count as u16).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return Some(base);
        }
    }
    None
}

impl InProcessServer {
    /// Starts a server and waits until every shard listens.
    pub fn start(options: &InProcessOptions) -> Result<InProcessServer, Error> {
        let base: PathBuf = std::env::var_os("COREKV_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        let dir = tempfile::Builder::new()
            .prefix("corekv-bench-")
            .tempdir_in(&base)
            .map_err(|source| Error::Output {
                path: base.clone(),
                source,
            })?;
        let cpus = allowed_cpus().map_err(|source| Error::Os {
            call: "sched_getaffinity",
            source,
        })?;
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            Error::InvalidOption(format!("in-process server {what}: {e}"))
        };
        let cores = options
            .cores
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| bad("--server-cores", &e))?;
        let durability = options
            .durability
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| bad("--server-durability", &e))?;
        let shards = match &cores {
            Some(set) => corekv_server::cpuset::CpuSet::len(set),
            None => cpus.len(),
        };
        let port = free_consecutive_ports(shards + 1).ok_or_else(|| {
            Error::Server("no free loopback ports; pass --addr to use a running server".into())
        })?;
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let cli = Cli {
            data_dir: Some(dir.path().to_path_buf()),
            listen: Some(listen),
            cores,
            durability,
            log_level: Some("warn".into()),
            ..Cli::default()
        };
        let config = Config::resolve(cli, &cpus).map_err(|e| bad("configuration", &e))?;
        let shard_count = config.shard_count();
        let ports: Vec<SocketAddr> = std::iter::once(listen)
            .chain((0..shard_count).map(|i| config.shard_listen(i)))
            .collect();
        // Its warnings and errors on stderr (ignored if a subscriber is already installed).
        let _ = corekv_server::logging::init(config.log_format, &config.log_level);
        let control = Arc::new(Control::new(shard_count));
        let thread = {
            let control = Arc::clone(&control);
            std::thread::Builder::new()
                .name("corekv-server".into())
                .spawn(move || corekv_server::launch::serve(config, control))
                .map_err(|source| Error::Os {
                    call: "spawn the server thread",
                    source,
                })?
        };
        let mut server = InProcessServer {
            addr: listen,
            shard_count,
            control,
            thread: Some(thread),
            dir: Some(dir),
        };
        let give_up = Instant::now() + START_TIMEOUT;
        loop {
            if ports.iter().all(|p| TcpStream::connect(p).is_ok()) {
                return Ok(server);
            }
            let ended = server.thread.as_ref().is_some_and(JoinHandle::is_finished);
            if ended || Instant::now() > give_up {
                let outcome = server.stop();
                return Err(Error::Server(format!(
                    "it did not start: {}",
                    match outcome {
                        Err(e) => e.to_string(),
                        Ok(()) => format!("not listening after {START_TIMEOUT:?}"),
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its main address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its shard count.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Its data directory.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// Stops it cleanly (in-flight requests finish, stores close) and removes its directory.
    pub fn stop(&mut self) -> Result<(), Error> {
        self.control.request_stop();
        let outcome = match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(Error::Server(e.to_string())),
            Some(Err(_)) => Err(Error::Server("a thread panicked".into())),
        };
        self.dir.take();
        outcome
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
