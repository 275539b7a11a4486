//! Fault injection for reliability tests: a plan, given on the command line, that each shard
//! turns into a storage [`FaultInjector`] so that a real server process sees disk errors
//! (EIO, ENOSPC, short and torn writes) at chosen points of its WAL, flushes, compactions and
//! manifest updates, or kills itself at a chosen step of a flush, a compaction or a snapshot's
//! installation. Never use it
//! outside tests: the server logs a warning when it is on.
//!
//! ## Syntax (`--debug-fault-injection PLAN`)
//!
//! Comma-separated items:
//!
//! - `seed=N`: drives the injector's random choices (which sectors a torn write keeps);
//!   shard `i` uses `N + i`. Default 0.
//! - `shard=N`: inject only into shard `N` (default: every shard).
//! - `OP=FAULT@N` or `OP=FAULT@N+`: the `N`-th (0-based, counted from the engine's open)
//!   operation of kind `OP` fails with `FAULT`, once, or (`+`) that one and every later one
//!   (a full disk, a dead device).
//!   `OP` is one of `create`, `open`, `write`, `read`, `sync`, `allocate`, `remove`,
//!   `rename`, `syncdir`; `FAULT` one of `eio`, `enospc`, `short` (a short write), `torn`
//!   (a torn write: a random subset of its sectors lands, then EIO).
//!   `OP/PART=...` counts only operations on files whose path contains `PART`: `.sst`
//!   (tables written by flushes and compactions), `MANIFEST` (manifest edits), `CURRENT`
//!   (the manifest pointer), `wal-` (WAL segments). On a cluster node the plan reaches the
//!   shard's Raft log too, whose segments are `raft-log/wal-*` (`OP/raft-log=...`).
//! - `crash=POINT@N`: the `N`-th (0-based) time the engine reaches `POINT`, the process kills
//!   itself with SIGKILL, right there (a real `kill -9` inside a flush or compaction).
//!   `POINT` is one of `flush-mid-table`, `flush-before-manifest`, `flush-before-wal-release`,
//!   `compaction-mid-output`, `compaction-before-manifest`,
//!   `compaction-before-inputs-deleted`, or, on a cluster node installing a Raft snapshot,
//!   `checkpoint-before-manifest` (see `corekv_storage::io::CrashPoint`). It logs
//!   `crash point POINT reached` first.
//!
//! - `bug=BUG`: a planted consistency bug, for checking that the verification harness
//!   (`tests/src/jepsen.rs`) catches one. `BUG` is `stale-reads` (gets read a snapshot
//!   refreshed every 100 ms, so they may miss acknowledged writes) or `early-ack` (writes are
//!   acknowledged before their WAL record is written, whatever `--durability` says, so a
//!   `kill -9` can lose acknowledged writes) or, on a cluster node, `follower-reads` (every
//!   replica answers reads from its own state, without the leader's ReadIndex barrier).
//!
//! Example: `seed=7,write=enospc@40+,sync/MANIFEST=eio@2,crash=flush-mid-table@3`.

use std::str::FromStr;

use corekv_storage::io::{CrashPoint, Fault, FaultInjector, FaultOp};

/// One rule of a [`FaultPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// Which operations it counts.
    pub op: FaultOp,
    /// How they fail.
    pub fault: Fault,
    /// The 0-based index of the first failing operation.
    pub nth: u64,
    /// Whether every later operation of the kind fails too.
    pub persistent: bool,
    /// Only operations on paths containing this count.
    pub path_part: Option<String>,
}

/// A planted consistency bug (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// Gets read a snapshot up to 100 ms old.
    StaleReads,
    /// Writes are acknowledged before their WAL record is written.
    EarlyAck,
    /// In a cluster, every replica answers reads from its own state, without asking the
    /// leader (no ReadIndex barrier): followers serve reads that may be behind.
    FollowerReads,
}

/// What to inject, into which shards. `Send`: each shard builds its own injector from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Base seed.
    pub seed: u64,
    /// Only this shard (None: all).
    pub shard: Option<usize>,
    /// The rules.
    pub rules: Vec<FaultRule>,
    /// Kill the process the `n`-th time the engine reaches this step.
    pub crash: Option<(CrashPoint, u64)>,
    /// A planted consistency bug.
    pub bug: Option<PlantedBug>,
}

/// The names of crash points in plans.
const CRASH_POINTS: [(&str, CrashPoint); 7] = [
    ("flush-mid-table", CrashPoint::FlushMidTable),
    ("flush-before-manifest", CrashPoint::FlushBeforeManifest),
    (
        "flush-before-wal-release",
        CrashPoint::FlushBeforeWalRelease,
    ),
    ("compaction-mid-output", CrashPoint::CompactionMidOutput),
    (
        "compaction-before-manifest",
        CrashPoint::CompactionBeforeManifest,
    ),
    (
        "compaction-before-inputs-deleted",
        CrashPoint::CompactionBeforeInputsDeleted,
    ),
    (
        "checkpoint-before-manifest",
        CrashPoint::CheckpointBeforeManifest,
    ),
];

/// The plan name of a crash point.
pub fn crash_point_name(point: CrashPoint) -> &'static str {
    CRASH_POINTS
        .iter()
        .find(|(_, p)| *p == point)
        .map_or("unknown", |(n, _)| n)
}

/// Kills this process at once (SIGKILL: no unwinding, no flush, no destructor), as
/// `kill -9` from outside would.
fn kill_self(point: CrashPoint) {
    tracing::error!(
        point = crash_point_name(point),
        "crash point {} reached: killing the process (--debug-fault-injection)",
        crash_point_name(point)
    );
    // SAFETY: getpid and kill have no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

impl FaultPlan {
    /// The injector for shard `shard`, or None when the plan leaves it alone.
    pub fn injector_for(&self, shard: usize) -> Option<FaultInjector> {
        if self.shard.is_some_and(|s| s != shard) {
            return None;
        }
        let inj = FaultInjector::new(self.seed.wrapping_add(shard as u64));
        for r in &self.rules {
            match (&r.path_part, r.persistent) {
                (None, true) => inj.fail_from(r.op, r.nth, r.fault),
                (None, false) => inj.fail_nth(r.op, r.nth, r.fault),
                (Some(part), true) => inj.fail_from_in(r.op, r.nth, r.fault, part),
                (Some(part), false) => inj.fail_nth_in(r.op, r.nth, r.fault, part),
            }
        }
        if let Some((point, n)) = self.crash {
            inj.crash_at_point(point, n);
            inj.on_crash_point(kill_self);
        }
        Some(inj)
    }
}

fn parse_op(s: &str) -> Option<FaultOp> {
    Some(match s {
        "create" => FaultOp::Create,
        "open" => FaultOp::Open,
        "write" => FaultOp::Write,
        "read" => FaultOp::Read,
        "sync" => FaultOp::Sync,
        "allocate" => FaultOp::Allocate,
        "remove" => FaultOp::Remove,
        "rename" => FaultOp::Rename,
        "syncdir" => FaultOp::SyncDir,
        _ => return None,
    })
}

fn parse_fault(s: &str) -> Option<Fault> {
    Some(match s {
        "eio" => Fault::Eio,
        "enospc" => Fault::Enospc,
        "short" => Fault::ShortWrite,
        "torn" => Fault::TornWrite,
        _ => return None,
    })
}

impl FromStr for FaultPlan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut plan = FaultPlan::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || {
                format!(
                    "fault plan item {item:?}: expected `seed=N`, `shard=N`, \
                     `OP[/PART]=FAULT@N[+]` (OP: create|open|write|read|sync|allocate|remove|\
                     rename|syncdir, FAULT: eio|enospc|short|torn) or `crash=POINT@N` (POINT: \
                     flush-mid-table|flush-before-manifest|flush-before-wal-release|\
                     compaction-mid-output|compaction-before-manifest|\
                     compaction-before-inputs-deleted) or `bug=BUG` (BUG: stale-reads|early-ack|follower-reads)"
                )
            };
            let (name, value) = item.split_once('=').ok_or_else(bad)?;
            match name {
                "seed" => plan.seed = value.parse().map_err(|_| bad())?,
                "shard" => plan.shard = Some(value.parse().map_err(|_| bad())?),
                "bug" => {
                    plan.bug = Some(match value {
                        "stale-reads" => PlantedBug::StaleReads,
                        "early-ack" => PlantedBug::EarlyAck,
                        "follower-reads" => PlantedBug::FollowerReads,
                        _ => return Err(bad()),
                    })
                }
                "crash" => {
                    let (point, at) = value.split_once('@').ok_or_else(bad)?;
                    let point = CRASH_POINTS
                        .iter()
                        .find(|(n, _)| *n == point)
                        .map(|(_, p)| *p)
                        .ok_or_else(bad)?;
                    plan.crash = Some((point, at.parse().map_err(|_| bad())?));
                }
                op => {
                    let (op, path_part) = match op.split_once('/') {
                        Some((_, "")) => return Err(bad()),
                        Some((op, part)) => (op, Some(part.to_string())),
                        None => (op, None),
                    };
                    let op = parse_op(op).ok_or_else(bad)?;
                    let (fault, at) = value.split_once('@').ok_or_else(bad)?;
                    let fault = parse_fault(fault).ok_or_else(bad)?;
                    let (at, persistent) = match at.strip_suffix('+') {
                        Some(at) => (at, true),
                        None => (at, false),
                    };
                    let nth = at.parse().map_err(|_| bad())?;
                    if matches!(fault, Fault::ShortWrite | Fault::TornWrite) && op != FaultOp::Write
                    {
                        return Err(format!(
                            "fault plan item {item:?}: short and torn faults apply to `write` only"
                        ));
                    }
                    plan.rules.push(FaultRule {
                        op,
                        fault,
                        nth,
                        persistent,
                        path_part,
                    });
                }
            }
        }
        if plan.rules.is_empty() && plan.crash.is_none() && plan.bug.is_none() {
            return Err(format!(
                "fault plan {s:?} has no `OP=FAULT@N` rule, no `crash=POINT@N` and no `bug=BUG`"
            ));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_bug_is_a_plan_of_its_own() {
        let p: FaultPlan = "bug=stale-reads".parse().unwrap();
        assert_eq!(p.bug, Some(PlantedBug::StaleReads));
        assert!(p.rules.is_empty());
        let p: FaultPlan = "bug=follower-reads".parse().unwrap();
        assert_eq!(p.bug, Some(PlantedBug::FollowerReads));
        let p: FaultPlan = "seed=3,bug=early-ack".parse().unwrap();
        assert_eq!(p.bug, Some(PlantedBug::EarlyAck));
        assert!("bug=lost-writes".parse::<FaultPlan>().is_err());
        assert!("seed=3".parse::<FaultPlan>().is_err());
    }

    #[test]
    fn plans_parse_and_build_per_shard_injectors() {
        let p: FaultPlan = "seed=7, shard=1, write=enospc@40+, sync=eio@3"
            .parse()
            .unwrap();
        assert_eq!(p.seed, 7);
        assert_eq!(p.shard, Some(1));
        assert_eq!(
            p.rules,
            [
                FaultRule {
                    op: FaultOp::Write,
                    fault: Fault::Enospc,
                    nth: 40,
                    persistent: true,
                    path_part: None,
                },
                FaultRule {
                    op: FaultOp::Sync,
                    fault: Fault::Eio,
                    nth: 3,
                    persistent: false,
                    path_part: None,
                },
            ]
        );
        assert!(p.injector_for(0).is_none());
        assert!(p.injector_for(1).is_some());
        let all: FaultPlan = "write=torn@0".parse().unwrap();
        assert!(all.injector_for(0).is_some() && all.injector_for(5).is_some());
    }

    #[test]
    fn plans_aim_at_files_and_crash_points() {
        let p: FaultPlan = "write/.sst=eio@2+,sync/MANIFEST=enospc@0,crash=compaction-mid-output@1"
            .parse()
            .unwrap();
        assert_eq!(p.rules[0].path_part.as_deref(), Some(".sst"));
        assert!(p.rules[0].persistent);
        assert_eq!(p.rules[1].path_part.as_deref(), Some("MANIFEST"));
        assert_eq!(p.crash, Some((CrashPoint::CompactionMidOutput, 1)));
        let only: FaultPlan = "crash=flush-mid-table@0".parse().unwrap();
        assert!(only.rules.is_empty() && only.injector_for(0).is_some());
        for (name, point) in CRASH_POINTS {
            assert_eq!(crash_point_name(point), name);
        }
        // Every point of flushes and compactions, and a snapshot's installation.
        assert_eq!(CRASH_POINTS.len(), CrashPoint::ALL.len() + 1);
    }

    #[test]
    fn bad_plans_say_what_is_expected() {
        for bad in [
            "",
            "seed=1",
            "write=eio",
            "write=eio@x",
            "write=melt@1",
            "fsync=eio@1",
            "sync=torn@1",
            "shard=a,write=eio@1",
            "write/=eio@1",
            "crash=flush@1",
            "crash=flush-mid-table",
        ] {
            let e = bad.parse::<FaultPlan>().unwrap_err();
            assert!(
                e.contains("expected") || e.contains("no `OP") || e.contains("only"),
                "{bad:?}: {e}"
            );
        }
    }
}
