//! The crash loop: concurrent clients doing puts, deletes, batches and
//! compare-and-sets on a known key space while the server is `kill -9`ed at random moments,
//! restarted, and checked key by key against the acknowledged history (see
//! `corekv_tests::model`), cycle after cycle on one data directory; then a clean stop.
//!
//! Short runs here; `COREKV_CRASH_CYCLES=<n>` or `COREKV_CRASH_MINUTES=<m>` run longer, and
//! `COREKV_CRASH_SEED=<seed>` replays a run's schedule (docs/RELIABILITY.md).

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_tests::crash::{self, CrashLoop};
use corekv_tests::workload::Shape;
use corekv_tests::{cpus, test_dir};

fn shape() -> Shape {
    Shape {
        clients: 2,
        tasks: 6,
        keys_per_task: 24,
        shared_keys: 8,
        value_bytes_max: 600,
    }
}

/// Server flags for an LSM tree that flushes and compacts all the time: 16 KiB memtables,
/// small WAL segments.
fn tiny_lsm_args() -> Vec<String> {
    [
        "--memtable-size-bytes",
        "16384",
        "--wal-segment-size-bytes",
        "65536",
    ]
    .map(String::from)
    .to_vec()
}

fn check(report: &crash::Report) {
    assert_eq!(report.totals.violations, 0);
    assert!(report.kills >= report.cycles && report.cycles > 0);
    assert!(
        report.totals.writes_acked > 100 * report.cycles,
        "too few acknowledged writes to mean anything: {report}"
    );
    assert!(report.totals.cas_mismatches > 0, "{report}");
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_two_shards() {
    let dir = test_dir("crash-loop-2");
    let report = CrashLoop {
        name: "sync-2-shards".to_string(),
        shards: 2.min(cpus()),
        durability: "sync".to_string(),
        // Small WAL segments: kills also land in segment roll-overs.
        server_args: vec!["--wal-segment-size-bytes".into(), "65536".into()],
        shape: shape(),
        cycles: 8,
        ops_before_kill: 100..1500,
        fault_cycle_share: 0.0,
        crash_point_every: 0,
    }
    .run(dir.path(), crash::seed());
    check(&report);
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_one_shard() {
    let dir = test_dir("crash-loop-1");
    let report = CrashLoop {
        name: "sync-1-shard".to_string(),
        shards: 1,
        durability: "sync".to_string(),
        server_args: Vec::new(),
        shape: shape(),
        cycles: 5,
        ops_before_kill: 100..1500,
        fault_cycle_share: 0.0,
        crash_point_every: 0,
    }
    .run(dir.path(), crash::seed());
    check(&report);
}

/// Tiny memtables: flushes and compactions all the time. Every other cycle the server kills
/// itself at the next crash point of a flush or compaction in turn (mid-table, before the
/// manifest edit, before releasing the WAL or deleting inputs); the others are killed at
/// random moments, with background work often under way. Stats and logs show both happened.
#[test]
fn kill_9_during_flushes_and_compactions_loses_nothing_acknowledged() {
    let dir = test_dir("crash-loop-lsm");
    let report = CrashLoop {
        name: "sync-tiny-memtables".to_string(),
        shards: 2.min(cpus()),
        durability: "sync".to_string(),
        server_args: tiny_lsm_args(),
        shape: shape(),
        cycles: 12,
        ops_before_kill: 300..2000,
        fault_cycle_share: 0.0,
        crash_point_every: 2,
    }
    .run(dir.path(), crash::seed());
    check(&report);
    assert_eq!(report.crash_plans, report.cycles / 2, "{report}");
    assert!(report.flushes > 0, "no flush happened: {report}");
    assert!(report.compactions > 0, "no compaction happened: {report}");
    // Every armed crash point was reached, flushes and compactions in turn (three of each in
    // the default 12 cycles).
    assert_eq!(
        report.kills_in_flush + report.kills_in_compaction,
        report.crash_plans,
        "{report}"
    );
    assert_eq!(
        report.kills_in_flush,
        report.crash_plans.div_ceil(2),
        "{report}"
    );
    // Kills mid-table and before a manifest edit leave tables no version refers to, which the
    // restart removed.
    assert!(report.orphans_removed > 0, "{report}");
}
