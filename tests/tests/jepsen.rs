//! Jepsen-style verification (see `corekv_tests::jepsen`) of the single-node server and of a
//! 3-node cluster: register histories recorded by concurrent clients while a nemesis kills and
//! pauses servers, checked for linearizability; and the same harness shown to catch planted
//! bugs.
//!
//! Short runs here. `COREKV_JEPSEN_SECS=<s>` runs the nemesis test longer, and
//! `COREKV_JEPSEN_SEED=<seed>` replays a run's choices (the interleaving is the scheduler's).
//! A failing run keeps its history (JSON Lines) and prints its path; `cargo run -p
//! corekv-tests --example check-history -- FILE` checks a history file again
//! (docs/RELIABILITY.md).

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use corekv_tests::cluster::LocalCluster;
use corekv_tests::jepsen::{self, Fault, RunOptions, RunReport, Target};
use corekv_tests::linearizability::Verdict;
use corekv_tests::{Server, ServerOptions, test_dir};

fn seed() -> u64 {
    std::env::var("COREKV_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Where a history is kept when the run fails: outside the test's temporary directory.
fn kept_history(name: &str, seed: u64) -> PathBuf {
    std::env::temp_dir().join(format!("corekv-jepsen-{name}-{seed}.jsonl"))
}

/// Runs `options` against the target `start` builds in a fresh directory; the history goes
/// to a file that is removed unless `keep` says the verdict is unexpected.
fn run_on<T: Target>(
    name: &str,
    options: &RunOptions,
    keep: impl Fn(&RunReport) -> bool,
    start: impl FnOnce(&Path) -> T,
) -> RunReport {
    let dir = test_dir(name);
    let target = start(dir.path());
    let history = dir.path().join("history.jsonl");
    // The target's processes are killed when it is dropped, here.
    let (report, _target) = jepsen::run_register(target, options, &history);
    eprintln!("{report}");
    if keep(&report) {
        let kept = kept_history(name, options.seed);
        std::fs::copy(&history, &kept).expect("keep the history");
        eprintln!("history kept in {}", kept.display());
    }
    report
}

/// [`run_on`] a single-node server started with `extra_args`.
fn run(
    name: &str,
    extra_args: &[&str],
    options: &RunOptions,
    keep: impl Fn(&RunReport) -> bool,
) -> RunReport {
    run_on(name, options, keep, |dir| {
        Server::start(dir, ServerOptions::shards(1).args(extra_args))
    })
}

/// [`run_on`] a 3-node cluster whose nodes get `extra_args`.
fn run_cluster(
    name: &str,
    extra_args: &[&str],
    options: &RunOptions,
    keep: impl Fn(&RunReport) -> bool,
) -> RunReport {
    run_on(name, options, keep, |dir| {
        LocalCluster::start(dir, 3, extra_args)
    })
}

fn seconds(default: u64) -> Duration {
    let secs = std::env::var("COREKV_JEPSEN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

fn is_linearizable(r: &RunReport) -> bool {
    r.check.verdict == Verdict::Linearizable
}

/// A run that passed: linearizable, with faults injected and enough operations answered.
fn assert_linearizable_under_faults(report: &RunReport, options: &RunOptions) {
    assert!(
        is_linearizable(report),
        "seed {}: not linearizable\n{report}",
        options.seed
    );
    assert!(
        !report.faults.is_empty(),
        "the nemesis injected no fault:\n{report}"
    );
    assert!(report.ok >= 200, "too few operations answered:\n{report}");
}

#[test]
fn register_histories_are_linearizable_through_kills_and_pauses() {
    let options = RunOptions::short(seed(), seconds(30));
    let report = run("jepsen-register", &[], &options, |r| !is_linearizable(r));
    assert_linearizable_under_faults(&report, &options);
}

#[test]
fn the_harness_catches_reads_of_a_stale_snapshot() {
    let options = RunOptions {
        faults: Vec::new(),
        ..RunOptions::short(seed(), Duration::from_secs(5))
    };
    let report = run(
        "jepsen-stale-reads",
        &["--debug-fault-injection", "bug=stale-reads"],
        &options,
        is_linearizable,
    );
    assert_eq!(
        report.check.verdict,
        Verdict::NotLinearizable,
        "a server answering gets from a 100 ms old snapshot passed:\n{report}"
    );
}

#[test]
fn the_harness_catches_acknowledgements_before_the_wal_write() {
    let options = RunOptions {
        faults: vec![Fault::Kill],
        fault_interval: (Duration::from_millis(300), Duration::from_millis(800)),
        ..RunOptions::short(seed(), Duration::from_secs(10))
    };
    let report = run(
        "jepsen-early-ack",
        &["--debug-fault-injection", "bug=early-ack"],
        &options,
        is_linearizable,
    );
    assert_eq!(
        report.check.verdict,
        Verdict::NotLinearizable,
        "a server acknowledging writes before writing them passed {} kills:\n{report}",
        report.faults.len()
    );
}

#[test]
fn cluster_register_histories_are_linearizable_through_kills_pauses_and_partitions() {
    let options = RunOptions {
        faults: vec![Fault::Kill, Fault::Pause, Fault::Partition],
        ..RunOptions::short(seed(), seconds(30))
    };
    let report = run_cluster("jepsen-cluster", &[], &options, |r| !is_linearizable(r));
    assert_linearizable_under_faults(&report, &options);
}

#[test]
fn cluster_histories_with_lease_reads_are_linearizable_through_kills_pauses_and_partitions() {
    let options = RunOptions {
        faults: vec![Fault::Kill, Fault::Pause, Fault::Partition],
        ..RunOptions::short(seed(), seconds(20))
    };
    let report = run_cluster(
        "jepsen-cluster-lease",
        &["--read-mode", "lease"],
        &options,
        |r| !is_linearizable(r),
    );
    assert_linearizable_under_faults(&report, &options);
}

#[test]
fn the_harness_catches_reads_from_a_follower_state() {
    // A partitioned follower falls behind and, with the planted bug, goes on answering reads
    // from its own state while the majority takes writes; a paused one does the same for a
    // moment when it resumes.
    let options = RunOptions {
        faults: vec![Fault::Partition, Fault::Pause],
        fault_interval: (Duration::from_millis(300), Duration::from_millis(800)),
        ..RunOptions::short(seed(), Duration::from_secs(10))
    };
    let report = run_cluster(
        "jepsen-follower-reads",
        &["--debug-fault-injection", "bug=follower-reads"],
        &options,
        is_linearizable,
    );
    assert_eq!(
        report.check.verdict,
        Verdict::NotLinearizable,
        "a cluster answering reads from any replica's state passed:\n{report}"
    );
}
