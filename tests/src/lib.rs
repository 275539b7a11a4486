//! `corekv-tests`: a harness for end-to-end tests that start real corekv processes.
//!
//! The binaries are the ones `cargo build --workspace --bins --examples` (run by `tests/run.sh`)
//! puts next to the test executables (`target/<profile>/corekv-server`, ...). Every process a
//! test starts is killed when its handle drops (and, for servers, when the test process dies
//! without unwinding: `PR_SET_PDEATHSIG`), and every data directory lives on disk (under
//! the system temp directory or `COREKV_TEST_DIR`, never tmpfs: O_DIRECT needs a real
//! filesystem) and is removed afterwards.
//!
//! [`Server`] starts a server on free loopback ports with small buffers and waits until it
//! logs that it is ready; [`block_on`] runs client code on a tokio current-thread runtime.
//!
//! Crash testing: [`model`] (the acknowledged history and its check), [`workload`]
//! (concurrent clients recording into it), [`crash`] (the kill -9 / restart / verify loop),
//! [`fs`] (a small real filesystem that can fill up).
//!
//! Verification (Jepsen's method): [`history`] (recorded operations, JSON Lines),
//! [`linearizability`] (the checker), [`jepsen`] (clients, nemesis, run and check).

// This crate is test code through and through: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod crash;
pub mod fs;
pub mod history;
pub mod jepsen;
pub mod linearizability;
pub mod model;
pub mod proxy;
pub mod workload;

/// How long a server may take to start or stop before a test gives up. Generous: tests must not
/// depend on speed, only on the server eventually getting there.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// Path of a workspace binary built alongside this test executable.
///
/// # Panics
/// If the binary has not been built: `bash tests/run.sh` builds every binary before testing
/// (plain `cargo test` does not build other packages' binaries).
pub fn bin_path(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/; binaries in target/<profile>/.
    let exe = std::env::current_exe().expect("path of the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{path:?} is not built: run `bash tests/run.sh`, or `cargo build --workspace --bins` first"
    );
    path
}

/// Path of an example binary of the workspace (`target/<profile>/examples/<name>`).
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{path:?} is not built: run `bash tests/run.sh`, or `cargo build --workspace --examples` first"
    );
    path
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A directory on disk for one test's data, removed when dropped.
pub fn test_dir(tag: &str) -> tempfile::TempDir {
    let base = std::env::var_os("COREKV_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("corekv-tests"));
    std::fs::create_dir_all(&base).expect("create the test base directory");
    tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir_in(base)
        .expect("create a test directory")
}

/// Runs a binary to completion with `args`, returning its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin_path(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// Runs `future` on a fresh tokio current-thread runtime, inside a `LocalSet` (the corekv
/// client is single-threaded).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--shards`.
    pub shards: usize,
    /// `--cores`, given instead of `--shards` (as many CPUs as `shards`).
    pub cores: Option<String>,
    /// `--durability`.
    pub durability: String,
    /// More flags.
    pub extra_args: Vec<String>,
    /// Pass `--data-dir` as a path relative to the server's working directory (its parent),
    /// as the README's quick start does.
    pub relative_data_dir: bool,
    /// Where the server's log goes (default: next to the data directory); a test whose data
    /// directory fills up keeps its log elsewhere.
    pub log_dir: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            shards: 2.min(cpus()),
            cores: None,
            durability: "sync".to_string(),
            extra_args: Vec::new(),
            relative_data_dir: false,
            log_dir: None,
        }
    }
}

impl ServerOptions {
    /// Default options with `shards` shards (capped at the CPUs this machine has).
    pub fn shards(shards: usize) -> ServerOptions {
        ServerOptions {
            shards: shards.min(cpus()),
            ..ServerOptions::default()
        }
    }

    /// Adds flags.
    pub fn args(mut self, args: &[&str]) -> ServerOptions {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib << 10
}

/// CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A running `corekv-server`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    /// Main address.
    pub addr: SocketAddr,
    /// Number of shards.
    pub shards: usize,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where its stderr goes.
    pub log_path: PathBuf,
    options: ServerOptions,
}

static PORT_SEED: AtomicU64 = AtomicU64::new(0);

/// The first of the kernel's ephemeral ports (`ip_local_port_range`, usually 32768): any
/// outgoing connection may take one, so a test's listening ports stay below it.
pub fn ephemeral_ports_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
}

/// A pseudo-random base port whose `count` consecutive ports are free now, from 20000 up to
/// the kernel's ephemeral range (`ip_local_port_range`, usually from 32768): a port in that
/// range can be handed to any outgoing connection (a client's, a peer's) between this check
/// and the server's bind, and a cluster node, whose peers know its ports, cannot move.
pub fn free_ports(count: usize) -> u16 {
    let ephemeral_low = ephemeral_ports_low();
    let span = if ephemeral_low >= 21_000 + count as u32 {
        ephemeral_low - 20_000 - count as u32
    } else {
        40_000
    };
    loop {
        let seed = PORT_SEED.fetch_add(1, Ordering::Relaxed)
            ^ u64::from(std::process::id()).rotate_left(17)
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64));
        // splitmix64 step: spreads consecutive seeds.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let base = 20_000 + (z % u64::from(span)) as u16;
        let all_free =
            (0..count as u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
}

impl Server {
    /// Starts a server on a fresh data directory inside `dir`.
    pub fn start(dir: &Path, options: ServerOptions) -> Server {
        Server::start_with_data(&dir.join("data"), options)
    }

    /// Starts a server on `data_dir` (created if missing), retrying on other ports if the
    /// chosen ones were taken meanwhile.
    pub fn start_with_data(data_dir: &Path, options: ServerOptions) -> Server {
        for _attempt in 0..10 {
            match Server::try_start(data_dir, &options) {
                Ok(server) => return server,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("corekv-server did not start:\n{log}"),
            }
        }
        panic!("could not find free ports for corekv-server in 10 attempts");
    }

    /// Like [`Server::start_with_data`], but a server that exits before it is ready (for a
    /// reason other than a taken port) is `Err(its log)`.
    pub fn try_start_retrying(data_dir: &Path, options: &ServerOptions) -> Result<Server, String> {
        for _attempt in 0..10 {
            match Server::try_start(data_dir, options) {
                Err(log) if log.contains("Address already in use") => continue,
                other => return other,
            }
        }
        panic!("could not find free ports for corekv-server in 10 attempts");
    }

    /// Starts a server and waits until it is ready; `Err(log)` if it exits first.
    pub fn try_start(data_dir: &Path, options: &ServerOptions) -> Result<Server, String> {
        let port = free_ports(options.shards + 1);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Server::try_start_at(addr, data_dir, options)
    }

    /// Starts a server listening on `addr` (its shards on the ports after it) and waits until
    /// it is ready; `Err(log)` if it exits first.
    pub fn try_start_at(
        addr: SocketAddr,
        data_dir: &Path,
        options: &ServerOptions,
    ) -> Result<Server, String> {
        let port = addr.port();
        let log_path = match &options.log_dir {
            Some(dir) => dir.join(format!(
                "{}.{port}.log",
                data_dir
                    .file_name()
                    .map_or("server".into(), |n| n.to_string_lossy())
            )),
            None => data_dir.with_extension(format!("{port}.log")),
        };
        let log = std::fs::File::create(&log_path).expect("create the server log");
        let mut cmd = Command::new(bin_path("corekv-server"));
        if options.relative_data_dir {
            let parent = data_dir.parent().expect("the data directory has a parent");
            std::fs::create_dir_all(parent).expect("create the data directory's parent");
            cmd.current_dir(parent)
                .arg("--data-dir")
                .arg(data_dir.file_name().expect("the data directory has a name"));
        } else {
            cmd.arg("--data-dir").arg(data_dir);
        }
        match &options.cores {
            Some(cores) => {
                let set: corekv_server::cpuset::CpuSet = cores.parse().expect("a CPU list");
                assert_eq!(
                    set.len(),
                    options.shards,
                    "`cores` {cores} for {} shards",
                    options.shards
                );
                cmd.arg("--cores").arg(cores)
            }
            None => cmd.arg("--shards").arg(options.shards.to_string()),
        };
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--durability")
            .arg(&options.durability)
            // Small registered-memory buffers: tests run many servers under `ulimit -l`.
            .arg("--io-memory-bytes")
            .arg((1 << 20).to_string())
            .arg("--shutdown-grace-ms")
            .arg("5000")
            .args(&options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // If the test process dies without unwinding (killed, aborted), its servers die too:
        // the kernel kills the child when the thread that started it exits.
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl,
        // which is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn corekv-server");
        let mut server = Server {
            child: Some(child),
            addr,
            shards: options.shards,
            data_dir: data_dir.to_path_buf(),
            log_path,
            options: options.clone(),
        };
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if server.log().contains("corekv-server ready") {
                return Ok(server);
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                server.child = None;
                return Err(format!("exited with {status}:\n{}", server.log()));
            }
            assert!(
                Instant::now() < deadline,
                "corekv-server not ready after {PROCESS_DEADLINE:?}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again (same data directory, same options, same address) after it
    /// stopped, as a supervisor restarts a crashed server: at once, on the ports it had. The old
    /// connections may still linger (`TIME_WAIT`); the restart must not wait for them.
    pub fn restart(&self) -> Server {
        self.restart_at_same_address(self.options.clone())
    }

    /// Starts the server again on the same data directory and address with other options.
    pub fn restart_with(&self, options: ServerOptions) -> Server {
        self.restart_at_same_address(options)
    }

    fn restart_at_same_address(&self, options: ServerOptions) -> Server {
        assert!(self.child.is_none(), "the server is still running");
        Server::start_at(self.addr, &self.data_dir, options)
    }

    /// Starts a server on `data_dir` listening on `addr`, as [`Server::try_start_at`];
    /// panics with its log if it does not start.
    pub fn start_at(addr: SocketAddr, data_dir: &Path, options: ServerOptions) -> Server {
        match Server::try_start_at(addr, data_dir, &options) {
            Ok(server) => server,
            Err(log) => panic!("corekv-server did not start on {addr}:\n{log}"),
        }
    }

    /// Shard `i`'s own address.
    pub fn shard_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.addr.port() + 1 + i as u16)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, if the server has exited by itself (it is then no longer running).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()?
            .try_wait()
            .expect("wait for corekv-server")?;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet
        // reaped, so it cannot have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "corekv-server did not exit within {PROCESS_DEADLINE:?} of signal {signal}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM: a clean stop. Returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    /// Runs `corekv-cli --addr <main address> args...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_at(self.addr, args)
    }

    /// Runs `corekv-cli --addr <addr> args...`.
    pub fn cli_at(&self, addr: SocketAddr, args: &[&str]) -> Output {
        let mut all = vec!["--addr".to_string(), addr.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run("corekv-cli", &all)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// The three ways a test reaches a server from Rust: the shard-aware client coalescing single
/// operations, the same without coalescing, and one plain connection to the main port (whose
/// shard forwards what it does not own).
pub struct ClientPaths {
    /// Shard-aware, coalescing.
    pub coalescing: corekv_proto::Client,
    /// Shard-aware, one call per operation.
    pub plain: corekv_proto::Client,
    /// One connection to the main port.
    pub main_port: corekv_proto::Connection,
}

impl ClientPaths {
    /// Connects all three to `addr` (on a tokio current-thread runtime, as [`block_on`] runs).
    pub async fn connect(addr: SocketAddr) -> ClientPaths {
        use corekv_proto::client::TokioRuntime;
        let plain_options = corekv_proto::ClientOptions {
            coalesce: false,
            ..corekv_proto::ClientOptions::default()
        };
        ClientPaths {
            coalescing: corekv_proto::Client::connect(TokioRuntime, addr)
                .await
                .expect("connect a coalescing client"),
            plain: corekv_proto::Client::connect_with(TokioRuntime, addr, plain_options)
                .await
                .expect("connect a plain client"),
            main_port: corekv_proto::Connection::connect(TokioRuntime, addr)
                .await
                .expect("connect to the main port"),
        }
    }
}
