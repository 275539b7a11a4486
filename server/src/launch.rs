//! Starting and stopping the server.
//!
//! The launching thread opens and locks the data directory, blocks SIGINT/SIGTERM (a signal
//! thread waits for them with `sigwait`), builds the cross-shard channels and starts one
//! glommio executor per CPU. Each shard connects its channels, opens its store, binds its
//! listeners and reports in; once all have, the server logs that it is ready.
//!
//! Stopping (a signal, or a shard failing): every shard closes its listeners, lets each
//! connection finish what is in flight (bounded by the grace period), then reports itself
//! drained. A drained shard sends no more cross-shard requests, but keeps answering the others
//! until they are all drained; then it closes its store (which makes the WAL durable) and its
//! executor ends. The process exits 0 after a clean stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corekv_proto::{PROTOCOL_VERSION, SHARD_HASH_NAME, ServerInfo, ShardInfo, Topology};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{ClusterConfig, Config, IoConcurrency};
use crate::control::{Control, Latch, poll_until};
use crate::counters::Counters;
use crate::datadir::DataDir;
use crate::error::Error;
use crate::faults::FaultPlan;
use crate::io_properties::IoProperties;
use crate::mesh::{self, Envelope, Mesh, MeshEnds, Message};
use crate::metrics::{self, ShardMetrics};
use crate::net;
use crate::net::frames::FrameBudget;
use crate::replication;
use crate::service::WorkGuard;
use crate::shard::{Limits, Shard};
use crate::store::{Options, Store};

/// How often a shard's reactor re-checks its channel connections while the mesh forms.
const MESH_CONNECT_TICK: Duration = Duration::from_millis(2);

/// Extra time, beyond the grace period, that a shard waits for the others to drain before it
/// closes its store anyway.
const DRAIN_WAIT_EXTRA: Duration = Duration::from_secs(5);

/// What a shard reports once it serves (or fails to start).
enum Boot {
    Ready { shard: usize, line: String },
    Failed { shard: usize },
}

/// Everything one shard needs, moved into its executor thread.
struct ShardBoot {
    id: usize,
    cpu: usize,
    dir: PathBuf,
    main_addr: SocketAddr,
    own_addr: SocketAddr,
    ends: MeshEnds,
    control: Arc<Control>,
    boot: mpsc::Sender<Boot>,
    limits: Limits,
    storage: Options,
    /// Injected disk faults (tests only).
    faults: Option<FaultPlan>,
    topology: Topology,
    info: ServerInfo,
    grace: Duration,
    /// Where to serve Prometheus metrics (shard 0 only).
    metrics_addr: Option<SocketAddr>,
    /// Depth of the executor's io_uring rings (reported in the counters).
    io_ring_depth: u32,
    /// The cluster this node belongs to (None: a single node).
    cluster: Option<ClusterConfig>,
}

/// How long a start waits for a port in use to be released before it refuses to start.
///
/// After `kill -9`, the kernel closes the dead process's listening sockets only once it has torn
/// down its io_uring rings, which happens after the process has exited and been reaped (about
/// 5-10 ms were seen on the development machine): a supervisor that restarts at once would
/// otherwise find the ports still in use. A port that a live server holds stays in use; it is
/// refused once this has passed.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Checks that every `(shard, address)` can be listened on now (no live socket listens there),
/// waiting up to [`PORT_RELEASE_WAIT`] for one in use.
fn wait_for_ports(ports: &[(usize, SocketAddr)]) -> Result<(), Error> {
    let deadline = Instant::now() + PORT_RELEASE_WAIT;
    let mut said = false;
    for &(shard, addr) in ports {
        loop {
            match net::listen_socket(addr, false) {
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    if !said {
                        tracing::info!(
                            "{addr} is in use; waiting up to {PORT_RELEASE_WAIT:?} for the \
                             sockets of a previous process to be released"
                        );
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(source) => {
                    return Err(Error::Bind {
                        shard,
                        addr,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Runs the server until it is stopped (SIGINT or SIGTERM, or a shard failing). `Ok` after a
/// clean stop.
pub fn run(config: Config) -> Result<(), Error> {
    let control = Arc::new(Control::new(config.shard_count()));
    spawn_signal_thread(Arc::clone(&control))?;
    serve(config, control)
}

/// Runs the server until `control` is asked to stop ([`Control::request_stop`]) or a shard
/// fails; handles no signals. For programs that embed a server (the benchmark driver starts
/// one in-process); `control` must be made for `config.shard_count()` shards.
pub fn serve(config: Config, control: Arc<Control>) -> Result<(), Error> {
    raise_limits();
    let count = config.shard_count();
    let data = DataDir::open(&config.data_dir, count)?;
    data.check_cluster(
        config
            .cluster
            .as_ref()
            .map(ClusterConfig::identity)
            .as_deref(),
    )?;
    // The shards listen on the main port with SO_REUSEPORT (each accepts its share), which
    // would also let a second server on the same port silently take part of the connections.
    // A bind without SO_REUSEPORT fails if a live socket listens on a port: refuse to start
    // then, naming it. Every port is probed, after a short wait for a previous process's
    // listeners to be released (see `wait_for_ports`).
    let mut ports = vec![(0, config.listen)];
    ports.extend((0..count).map(|i| (i, config.shard_listen(i))));
    ports.extend(config.metrics.map(|addr| (0, addr)));
    ports.extend(config.cluster.as_ref().map(|c| (0, c.peer_listen)));
    wait_for_ports(&ports)?;
    let io = resolve_io(&config, &data)?;
    install_panic_hook(Arc::clone(&control));

    let (topology, limits, info) = describe(&config);
    let storage = config.storage.clone();
    if let Some(plan) = &config.fault_plan {
        tracing::warn!(
            ?plan,
            "FAULT INJECTION IS ON: storage operations will fail on purpose (tests only)"
        );
    }
    let grace = Duration::from_millis(config.shutdown_grace_ms);

    let (boot_tx, boot_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(count);
    for ((id, cpu), ends) in config.cores.iter().enumerate().zip(mesh::build(count)) {
        let boot = ShardBoot {
            id,
            cpu,
            dir: data.shard_dir(id),
            main_addr: config.listen,
            own_addr: config.shard_listen(id),
            ends,
            control: Arc::clone(&control),
            boot: boot_tx.clone(),
            limits: limits.clone(),
            storage: storage.clone(),
            faults: config.fault_plan.clone(),
            topology: topology.clone(),
            info: info.clone(),
            grace,
            metrics_addr: if id == 0 { config.metrics } else { None },
            io_ring_depth: io.ring_depth,
            cluster: config.cluster.clone(),
        };
        match spawn_shard(&config, &io, boot) {
            Ok(h) => handles.push((id, h)),
            Err(e) => {
                control.request_stop();
                // The shards already started see this one's channel ends dropped and stop.
                for (_, h) in handles {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    drop(boot_tx);
    let all_ready = wait_ready(&boot_rx, count, &control);
    if all_ready {
        tracing::info!(
            "corekv-server ready: {count} shards on CPUs {}, listening on {} (shard ports {}-{}), \
             data in {}, durability {}",
            config.cores,
            config.listen,
            config.shard_listen(0).port(),
            config.shard_listen(count - 1).port(),
            data.root().display(),
            config.durability,
        );
    }
    let first_error = join_shards(handles, &control);
    drop(data);
    match first_error {
        None if all_ready => {
            tracing::info!("corekv-server stopped cleanly");
            Ok(())
        }
        None => Err(Error::Shard {
            shard: 0,
            detail: "the server stopped before every shard was ready".to_string(),
        }),
        Some(e) => Err(e),
    }
}

/// The I/O concurrency to run with: the configured one, or what `corekv-tune disk` measured and
/// wrote into the data directory (a damaged file stops the start: it would otherwise be
/// silently ignored).
fn resolve_io(config: &Config, data: &DataDir) -> Result<IoConcurrency, Error> {
    let disk = IoProperties::load(data.root())?;
    match &disk {
        Some(p) => tracing::info!(
            device = %p.device,
            io_concurrency = p.io_concurrency,
            "io-properties: the data disk was measured by corekv-tune disk"
        ),
        None => tracing::info!(
            "no io-properties in the data directory; `corekv-tune disk --dir {}` measures the disk",
            data.root().display()
        ),
    }
    let io = IoConcurrency::resolve(config.io_concurrency, disk.as_ref());
    tracing::info!(
        io_ring_depth = io.ring_depth,
        "I/O concurrency: io_uring rings {} deep per shard (from the {})",
        io.ring_depth,
        io.source
    );
    tracing::info!(
        block_cache_bytes_per_shard = config.block_cache_bytes_per_shard,
        "block cache: {} MiB per shard (--block-cache-bytes; default a quarter of physical \
         memory split between the shards)",
        config.block_cache_bytes_per_shard >> 20
    );
    Ok(io)
}

/// What the server tells clients about itself: its topology, its limits and its info.
fn describe(config: &Config) -> (Topology, Limits, ServerInfo) {
    let count = config.shard_count();
    let topology = Topology {
        shard_count: count as u32,
        hash: SHARD_HASH_NAME.to_string(),
        shards: (0..count)
            .map(|i| ShardInfo {
                id: i as u32,
                host: config.listen.ip().to_string(),
                port: config.shard_listen(i).port(),
                leader: 0,
                replicas: Vec::new(),
            })
            .collect(),
    };
    let limits = Limits {
        connection_inflight_ops_max: config.connection_inflight_ops_max,
        shard_connections_max: config.shard_connections_max,
        frame_budget_bytes: config.frame_budget_bytes,
        ..Limits::default()
    };
    let info = ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        node_id: 0,
        durability: config.durability.to_string(),
        shard_count: count as u32,
        limits: limits.describe(),
    };
    (topology, limits, info)
}

/// Starts shard `boot.id`'s executor thread on its CPU.
fn spawn_shard(
    config: &Config,
    io: &IoConcurrency,
    boot: ShardBoot,
) -> Result<glommio::ExecutorJoinHandle<Result<(), Error>>, Error> {
    let (id, cpu) = (boot.id, boot.cpu);
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("shard-{id}"))
        .io_memory(config.io_memory_bytes)
        .ring_depth(io.ring_depth as usize)
        .spin_before_park(Duration::from_micros(config.idle_poll_us))
        .spawn(move || run_shard(boot))
        .map_err(|e| {
            tracing::error!(shard = id, cpu, error = %e, "cannot start the shard's executor");
            Error::Shard {
                shard: id,
                detail: format!("cannot start its executor on CPU {cpu}: {e}"),
            }
        })
}

/// Waits until all `count` shards report ready (true), or one fails to start (false, and the
/// others are asked to stop).
fn wait_ready(boot_rx: &mpsc::Receiver<Boot>, count: usize, control: &Control) -> bool {
    let mut ready = 0;
    while ready < count {
        match boot_rx.recv() {
            Ok(Boot::Ready { shard, line }) => {
                tracing::info!(shard, "{line}");
                ready += 1;
            }
            Ok(Boot::Failed { shard }) => {
                tracing::error!(shard, "shard failed to start; stopping the others");
                control.request_stop();
                return false;
            }
            Err(_) => return false,
        }
    }
    true
}

/// Waits for every shard's thread to end; the first failure, if any (the others are asked to
/// stop when one fails).
fn join_shards(
    handles: Vec<(usize, glommio::ExecutorJoinHandle<Result<(), Error>>)>,
    control: &Control,
) -> Option<Error> {
    let mut first_error = None;
    for (id, handle) in handles {
        let outcome = match handle.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::Shard {
                shard: id,
                detail: format!("its executor stopped abnormally: {e}"),
            }),
        };
        if let Err(e) = outcome {
            tracing::error!(shard = id, error = %e, "shard failed");
            control.request_stop();
            first_error.get_or_insert(e);
        }
    }
    first_error
}

/// One shard, from channel set-up to closed store.
async fn run_shard(boot: ShardBoot) -> Result<(), Error> {
    let ShardBoot {
        id,
        cpu,
        dir,
        main_addr,
        own_addr,
        ends,
        control,
        boot,
        limits,
        storage,
        faults,
        topology,
        info,
        grace,
        metrics_addr,
        io_ring_depth,
        cluster,
    } = boot;
    let planted_bug = faults.as_ref().and_then(|plan| plan.bug);
    // One injector per shard: its engine's files and, on a cluster node, its Raft log's.
    let injector = faults.as_ref().and_then(|plan| plan.injector_for(id));
    let counters = Rc::new(Counters::default());
    counters.io_ring_depth.set(u64::from(io_ring_depth));
    let (mesh, inbound) = connect_mesh(id, ends, Rc::clone(&counters)).await;
    let started = async {
        let store = Store::open(
            &dir,
            storage.clone(),
            injector.clone(),
            planted_bug,
            cluster.is_some(),
        )
        .await
        .map_err(|source| Error::Storage { shard: id, source })?;
        let listeners = net::bind(id, main_addr, own_addr)?;
        let metrics_listener = match metrics_addr {
            Some(addr) => Some(net::listen_exclusive(addr).map_err(|source| Error::Bind {
                shard: id,
                addr,
                source,
            })?),
            None => None,
        };
        let metrics = ShardMetrics::new().map_err(|e| Error::Shard {
            shard: id,
            detail: format!("cannot create its latency histograms: {e}"),
        })?;
        Ok::<_, Error>((store, listeners, metrics_listener, metrics))
    }
    .await;
    let (store, (main_listener, own_listener), metrics_listener, metrics) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = boot.send(Boot::Failed { shard: id });
            control.mark_drained();
            return Err(e);
        }
    };
    let frame_budget = FrameBudget::new(limits.frame_budget_bytes);
    let shard = Rc::new(Shard {
        id,
        count: topology.shard_count as usize,
        store,
        mesh,
        counters,
        metrics: Rc::new(metrics),
        limits,
        topology,
        info,
        stopping: Latch::default(),
        work_in_flight: Rc::default(),
        frame_budget,
        replica: std::cell::OnceCell::new(),
    });
    for (peer, receiver) in inbound {
        glommio::spawn_local(receive_loop(Rc::clone(&shard), peer, receiver)).detach();
    }
    if let Some(cluster) = &cluster
        && let Err(detail) =
            replication::replica::start(&shard, cluster, &storage, injector, planted_bug).await
    {
        let _ = boot.send(Boot::Failed { shard: id });
        control.mark_drained();
        return Err(Error::Shard { shard: id, detail });
    }
    let accept_main =
        glommio::spawn_local(net::accept_loop(Rc::clone(&shard), main_listener, grace));
    let accept_own = glommio::spawn_local(net::accept_loop(Rc::clone(&shard), own_listener, grace));
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(
                shard = id,
                "serving Prometheus metrics on http://{addr}/metrics"
            );
        }
        glommio::spawn_local(metrics::http::serve(Rc::clone(&shard), listener)).detach();
    }
    let _ = boot.send(Boot::Ready {
        shard: id,
        line: format!(
            "shard {id} on CPU {cpu}: data in {}, listening on {main_addr} and {own_addr}",
            dir.display()
        ),
    });

    poll_until(|| control.stop_requested(), None).await;
    stop_shard(&shard, &control, grace, accept_main, accept_own).await
}

/// Stops a serving shard (see the module doc): closes its listeners, waits for its
/// connections and work to drain, for the other shards to drain, then closes its store.
async fn stop_shard(
    shard: &Rc<Shard>,
    control: &Control,
    grace: Duration,
    accept_main: glommio::Task<()>,
    accept_own: glommio::Task<()>,
) -> Result<(), Error> {
    let id = shard.id;
    tracing::info!(
        shard = id,
        "stopping: no new connections; finishing requests in flight"
    );
    shard.stopping.set();
    accept_main.await;
    accept_own.await;
    let drain_deadline = Instant::now() + grace + DRAIN_WAIT_EXTRA;
    let idle = || shard.counters.connections_open.get() == 0 && shard.work_in_flight.get() == 0;
    if !poll_until(idle, Some(drain_deadline)).await {
        tracing::warn!(shard = id, "connections still open after the grace period");
    }
    control.mark_drained();
    if !poll_until(
        || control.all_drained(),
        Some(drain_deadline + DRAIN_WAIT_EXTRA),
    )
    .await
    {
        tracing::warn!(
            shard = id,
            "other shards did not drain; closing storage anyway"
        );
    }
    poll_until(
        || shard.work_in_flight.get() == 0,
        Some(drain_deadline + DRAIN_WAIT_EXTRA),
    )
    .await;
    if let Some(replica) = shard.replica.get() {
        // Nothing more is applied; what was acknowledged is in the log already.
        replica.group.stop();
        poll_until(
            || replica.group.is_stopped(),
            Some(Instant::now() + DRAIN_WAIT_EXTRA),
        )
        .await;
        if let Err(e) = replica.group.close_log().await {
            tracing::warn!(shard = id, error = %e, "closing the Raft log failed");
        }
    }
    shard
        .store
        .close()
        .await
        .map_err(|source| Error::Storage { shard: id, source })?;
    tracing::info!(shard = id, "stopped: storage closed");
    Ok(())
}

/// The receiving end of another shard's channel to this one.
type Receiver = glommio::channels::shared_channel::ConnectedReceiver<Envelope>;

/// Connects this shard's ends of the cross-shard channels.
async fn connect_mesh(
    id: usize,
    ends: MeshEnds,
    counters: Rc<Counters>,
) -> (Rc<Mesh>, Vec<(usize, Receiver)>) {
    // glommio does not wake a parked executor when the peer end of a shared channel
    // connects; it only re-checks pending connections each time its reactor loop runs. A
    // ticking timer keeps the loop running until every channel is connected (without it,
    // a shard that parked first could wait forever).
    let connect = Mesh::connect(id, ends, Rc::clone(&counters));
    let ticker = async {
        loop {
            glommio::timer::sleep(MESH_CONNECT_TICK).await;
        }
    };
    futures::pin_mut!(connect, ticker);
    match futures::future::select(connect, ticker).await {
        futures::future::Either::Left((connected, _)) => connected,
        futures::future::Either::Right(((), _)) => unreachable!("the ticker never ends"),
    }
}

/// Serves what shard `peer` sends this shard until its channel closes.
async fn receive_loop(shard: Rc<Shard>, peer: usize, receiver: Receiver) {
    while let Some(envelope) = receiver.recv().await {
        for message in envelope {
            match message {
                Message::Request { id, work } => {
                    // Operations count as work in flight (shutdown waits for them); a stats
                    // request does not, so that stats report an idle shard as idle.
                    let guard = matches!(work, mesh::Work::Ops(_))
                        .then(|| WorkGuard::new(&shard.work_in_flight));
                    let shard = Rc::clone(&shard);
                    glommio::spawn_local(async move {
                        let result = shard.serve_forwarded(work).await;
                        shard.mesh.reply(peer, id, result);
                        drop(guard);
                    })
                    .detach();
                }
                Message::Reply { id, result } => shard.mesh.complete(peer, id, result),
            }
        }
    }
    shard.mesh.fail_peer(peer);
}

/// Raises the soft limits on open files (one per connection) and locked memory (glommio's
/// registered I/O buffers) to the hard limits.
fn raise_limits() {
    for (resource, name) in [
        (libc::RLIMIT_NOFILE, "open files"),
        (libc::RLIMIT_MEMLOCK, "locked memory"),
    ] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable rlimit struct.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            continue;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: `raised` is a valid rlimit struct; raising a soft limit up to the hard
            // limit is always permitted.
            if unsafe { libc::setrlimit(resource, &raised) } != 0 {
                tracing::warn!("cannot raise the {name} limit to {}", limit.rlim_max);
            }
        }
    }
}

/// A panic anywhere stops the whole server (a shard whose executor died cannot answer the
/// others), after logging it.
fn install_panic_hook(control: Arc<Control>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("?"), "panic: {info}");
        control.request_stop();
        default(info);
    }));
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value to initialise with sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; SIGINT and SIGTERM are valid signal numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Blocks SIGINT and SIGTERM in this thread (every thread started afterwards inherits the
/// mask) and starts a thread that waits for them: the first asks for a clean stop, a second
/// exits at once with status 130.
fn spawn_signal_thread(control: Arc<Control>) -> Result<(), Error> {
    let set = signal_set();
    // SAFETY: `set` is a valid sigset_t; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(Error::Shard {
            shard: 0,
            detail: format!(
                "cannot block SIGINT/SIGTERM: {}",
                std::io::Error::from_raw_os_error(rc)
            ),
        });
    }
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            let set = signal_set();
            let mut stops = 0;
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: `set` and `signal` are valid for the call; the signals in `set` are
                // blocked in every thread, so sigwait is the only consumer.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                let name = if signal == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                stops += 1;
                if stops == 1 {
                    tracing::info!(
                        "{name} received: stopping cleanly (send it again to exit at once)"
                    );
                    control.request_stop();
                } else {
                    tracing::warn!("{name} received again: exiting without a clean stop");
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| Error::Shard {
            shard: 0,
            detail: format!("cannot start the signal thread: {e}"),
        })?;
    Ok(())
}
