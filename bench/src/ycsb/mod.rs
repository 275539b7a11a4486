//! The YCSB driver: YCSB's core workloads A–F with YCSB's own definitions, against corekv or a
//! peer (Redis, etcd) through the very same key choosers, records and measurement.
//!
//! Start with [`run`] (what `corekv-bench ycsb` does), then [`runner`] (threads, slots,
//! pacing), [`workload`] (the mixes), [`keys`] (key names and choosers), [`record`] (how a
//! record is stored) and [`backend`] (corekv, Redis, etcd, an in-process map).

pub mod args;
pub mod backend;
pub mod counter;
pub mod keys;
pub mod latest;
pub mod measure;
pub mod record;
pub mod report;
pub mod runner;
pub mod server;
pub mod workload;
pub mod zipfian;

use std::io::Write;
use std::time::Duration;

use self::args::{
    BackendArg, CONNECTIONS_MAX, INFLIGHT_MAX, PhaseArg, RECORDS_MAX, THREADS_MAX, YcsbArgs,
};
use self::backend::Backend;
use self::backend::corekv::CorekvBackend;
use self::backend::etcd::EtcdBackend;
use self::backend::memory::MemoryBackend;
use self::backend::redis::RedisBackend;
use self::record::{FIELD_COUNT_MAX, FIELD_LENGTH_MAX_BYTES};
use self::report::PhaseReport;
use self::runner::{Phase, PhaseSpec, run_phase};
use self::server::{InProcessOptions, InProcessServer};
use self::workload::Workload;
use crate::Error;
use crate::sys::{allowed_cpus, parse_cpu_list};

/// Redis's default address, used when `--backend redis` has no `--addr`.
pub const REDIS_DEFAULT_ADDR: &str = "127.0.0.1:6379";
/// etcd's default client address, used when `--backend etcd` has no `--addr`.
pub const ETCD_DEFAULT_ADDR: &str = "127.0.0.1:2379";
/// Run-phase operations when neither `--operations` nor `--duration` is given.
pub const OPERATIONS_DEFAULT: u64 = 100_000;

fn check_limits(args: &YcsbArgs) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidOption(m));
    if !(1..=THREADS_MAX).contains(&args.threads) {
        return bad(format!(
            "--threads {} outside 1..={THREADS_MAX}",
            args.threads
        ));
    }
    let connections = args.connections.unwrap_or(args.threads);
    if !(1..=CONNECTIONS_MAX).contains(&connections) {
        return bad(format!(
            "--connections {connections} outside 1..={CONNECTIONS_MAX}"
        ));
    }
    if !(1..=INFLIGHT_MAX).contains(&args.inflight) {
        return bad(format!(
            "--inflight {} outside 1..={INFLIGHT_MAX}",
            args.inflight
        ));
    }
    if !(1..=RECORDS_MAX).contains(&args.records) {
        return bad(format!(
            "--records {} outside 1..={RECORDS_MAX}",
            args.records
        ));
    }
    if !(1..=FIELD_COUNT_MAX).contains(&args.field_count) {
        return bad(format!(
            "--field-count {} outside 1..={FIELD_COUNT_MAX}",
            args.field_count
        ));
    }
    if args.value_size > FIELD_LENGTH_MAX_BYTES {
        return bad(format!(
            "--value-size {} above {FIELD_LENGTH_MAX_BYTES} bytes per field",
            args.value_size
        ));
    }
    if !(args.target.is_finite() && args.target >= 0.0) {
        return bad(format!(
            "--target {} must be 0 (unthrottled) or a positive rate",
            args.target
        ));
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            return bad(format!(
                "--duration {d} must be a positive number of seconds"
            ));
        }
    }
    let in_process = args.backend == BackendArg::Corekv && args.addr.is_none();
    if !in_process && (args.server_cores.is_some() || args.server_durability.is_some()) {
        return bad(
            "--server-cores and --server-durability only apply to the in-process corekv server \
             (--backend corekv without --addr)"
                .into(),
        );
    }
    if args.backend != BackendArg::Etcd && args.addr.as_deref().is_some_and(|a| a.contains(',')) {
        return bad("only --backend etcd takes several addresses in --addr".into());
    }
    if args.operations == Some(0) {
        return bad("--operations must be at least 1".into());
    }
    Ok(())
}

/// The phase specifications `args` asks for, in order.
pub fn phase_specs(
    args: &YcsbArgs,
    backend: &str,
    cpus: Vec<usize>,
) -> Result<Vec<PhaseSpec>, Error> {
    check_limits(args)?;
    let phases: &[Phase] = match args.phase {
        PhaseArg::Load => &[Phase::Load],
        PhaseArg::Run => &[Phase::Run],
        PhaseArg::Both => &[Phase::Load, Phase::Run],
    };
    let operations = match (args.operations, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(OPERATIONS_DEFAULT),
    };
    let connections = args.connections.unwrap_or(args.threads);
    let workload = Workload::core(args.workload);
    let specs = phases
        .iter()
        .map(|&phase| {
            let mut config = vec![
                ("Phase", phase.name().to_string()),
                ("Workload", format!("{:?}", args.workload).to_lowercase()),
                ("Backend", backend.to_string()),
                ("RecordCount", args.records.to_string()),
                ("FieldCount", args.field_count.to_string()),
                ("FieldLength(bytes)", args.value_size.to_string()),
                ("Threads", args.threads.to_string()),
                ("Connections", connections.to_string()),
                ("InflightPerConnection", args.inflight.to_string()),
            ];
            if phase == Phase::Run {
                config.push((
                    "OperationCount",
                    operations.map_or("unbounded".into(), |n| n.to_string()),
                ));
                if let Some(d) = args.duration {
                    config.push(("MaxExecutionTime(s)", d.to_string()));
                }
                config.push(("WriteAllFields", args.write_all_fields.to_string()));
            }
            if args.target > 0.0 {
                config.push(("Target(ops/sec)", args.target.to_string()));
                config.push(("LatencyFrom", "intended start".into()));
            } else {
                config.push(("LatencyFrom", "send".into()));
            }
            PhaseSpec {
                phase,
                workload: workload.clone(),
                records: args.records,
                operations,
                duration: args.duration.map(Duration::from_secs_f64),
                threads: args.threads,
                connections,
                inflight: args.inflight,
                target_ops_per_sec: (args.target > 0.0).then_some(args.target),
                field_count: args.field_count,
                field_length_bytes: args.value_size,
                write_all_fields: args.write_all_fields,
                cpus: cpus.clone(),
                progress: !args.quiet,
                seed: args.seed,
                config,
            }
        })
        .collect::<Vec<_>>();
    for s in &specs {
        s.validate()?;
    }
    Ok(specs)
}

/// Runs the phases `args` asks for, printing each phase's report on stdout in YCSB's format as
/// it finishes, and writes `--json` at the end. Returns the reports.
pub fn run(args: &YcsbArgs) -> Result<Vec<PhaseReport>, Error> {
    let cpus = match &args.cpus {
        Some(list) => parse_cpu_list(list)?,
        None => allowed_cpus()?,
    };
    match args.backend {
        BackendArg::Redis => {
            let addr = args
                .addr
                .clone()
                .unwrap_or_else(|| REDIS_DEFAULT_ADDR.into());
            drive(&RedisBackend::new(addr, args.field_count), args, cpus)
        }
        BackendArg::Etcd => {
            let backend = EtcdBackend::new(args.addr.as_deref().unwrap_or(ETCD_DEFAULT_ADDR))?;
            drive(&backend, args, cpus)
        }
        BackendArg::Memory => drive(&MemoryBackend::new(), args, cpus),
        BackendArg::Corekv => match &args.addr {
            Some(addr) => {
                let addr = corekv_proto::client::resolve(addr)
                    .map_err(|e| Error::InvalidOption(format!("--addr: {e}")))?;
                drive(&CorekvBackend::new(addr), args, cpus)
            }
            None => {
                let mut server = InProcessServer::start(&InProcessOptions {
                    cores: args.server_cores.clone(),
                    durability: args.server_durability.clone(),
                })?;
                eprintln!(
                    "corekv-bench: started an in-process corekv server: {} shard(s), listening on \
                     {}, data in {} (removed at exit), durability {}",
                    server.shard_count(),
                    server.addr(),
                    server
                        .data_dir()
                        .map_or(String::new(), |d| d.display().to_string()),
                    args.server_durability.as_deref().unwrap_or("sync"),
                );
                let outcome = drive(&CorekvBackend::new(server.addr()), args, cpus);
                let stopped = server.stop();
                let reports = outcome?;
                stopped?;
                Ok(reports)
            }
        },
    }
}

/// Runs the phases against `backend`.
pub fn drive<B: Backend>(
    backend: &B,
    args: &YcsbArgs,
    cpus: Vec<usize>,
) -> Result<Vec<PhaseReport>, Error> {
    let specs = phase_specs(args, backend.name(), cpus)?;
    let mut reports = Vec::with_capacity(specs.len());
    for spec in &specs {
        let report = run_phase(backend, spec)?;
        for e in &report.error_samples {
            eprintln!("corekv-bench: an operation failed: {e}");
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(report.to_ycsb_text().as_bytes());
        let _ = out.flush();
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "phases": reports.iter().map(PhaseReport::to_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| Error::Output {
            path: path.clone(),
            source,
        })?;
    }
    Ok(reports)
}
