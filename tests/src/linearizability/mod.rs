//! A linearizability checker for histories of per-key registers ([`crate::history`]).
//!
//! # What it decides
//!
//! Every key is a register holding a u64 or nothing (absent at the start). `get` returns the
//! value; `put(v)` sets it; `cas(from, to)` sets `to` if the register holds `from` (reply
//! `applied`) and otherwise changes nothing (reply not applied).
//!
//! A history is linearizable if each operation that ended `ok` can be given a point between
//! its call and its return so that, in the order of those points, every reply is the
//! register's answer. An operation of unknown outcome (`info`, or never ended) may take effect
//! at any point after its call, or never: it is optional, and when it takes effect its reply is
//! whatever the register gives. An unknown `get` constrains nothing and is not searched.
//!
//! Real time: operation `a` must precede `b` only if `a` returned strictly before `b` was
//! called. A return and a call at the same nanosecond count as concurrent: the check never
//! assumes an order the clock did not show.
//!
//! # How
//!
//! Linearizability is local (Herlihy & Wing): a history is linearizable if and only if each
//! key's sub-history is, so keys are checked one at a time (P-compositionality, as in
//! Porcupine). Per key, the search is Wing & Gong's with Lowe's just-in-time linearization,
//! as Porcupine implements it:
//!
//! - the calls and returns of the `ok` operations form one doubly linked list sorted by time;
//!   the operations whose calls come before the first return are the candidates to take
//!   effect next;
//! - a candidate that the register allows is linearized: it is lifted out of the list (call and
//!   return) and the search continues from the list's head; when the first entry left is a
//!   return, no candidate worked and the search backtracks (the last linearized operation goes
//!   back into the list and the next candidate after it is tried);
//! - a configuration (the set of operations linearized, the register value) that was fully
//!   explored without success is remembered and not explored again.
//!
//! Reductions, each keeping a linearization if one exists:
//!
//! - **Reads first.** A candidate read (a `get`, or a `cas` that did not apply) that the
//!   register allows now can be moved to the front of any linearization from here, since it
//!   changes nothing and nothing had to come before it. So it is the only operation tried, and
//!   if the search fails after it, it fails here too.
//! - **Unknown operations only where needed.** They are not in the list; they are tried after
//!   the list's candidates. A linearization stays valid when an unknown operation that changes
//!   nothing is removed; when a run of consecutive unknown operations followed by an `ok` put,
//!   or at the end, is removed; when the part of a run between two equal values, or before an
//!   unknown put, is removed; and when an `ok` read that the register allowed before a run is
//!   moved before it. So a run starts with at most one unknown put, never comes back to a
//!   value, and must be followed by an `ok` operation whose reply was illegal before the run
//!   and is legal after it. Of equal unknown operations (same function and arguments) the
//!   earliest called that is left is the one tried.
//! - **Unobserved values are one value.** Values that no `get` returns and no cas expects
//!   behave alike in every operation, so the search tracks them as one: writes of them are equal
//!   steps and lead to equal configurations (with unique written values, most are unobserved).
//! - **Fewer unknown operations used is better.** A remembered failure also stands for the
//!   configurations with the same `ok` operations, value and run and more unknown operations
//!   used: having fewer left cannot help.
//! - **Refute cheaply first.** When a key has unknown operations, a first search lets each be
//!   used any number of times. That accepts more histories, so its "not linearizable" is
//!   final; and with nothing to track about the unknown operations, refuting a long history
//!   with many of them stays cheap. Only if it finds a linearization does the exact search run.
//!
//! The search is bounded ([`Limits`]): a history it cannot decide in time gets
//! [`Verdict::Unknown`]. What makes it search more: many clients on one key at once (the
//! candidates multiply), few distinct values, many unknown operations, and a history that is
//! not linearizable (every way to reach the violation must be refuted). Unique written values
//! and clients spread over keys keep it cheap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::history::{self, Completion, Event, Op, Operation, Reply};

mod search;
#[cfg(test)]
mod tests;

use search::{Search, Unknowns};

/// The answer for a history or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The search ran out of its budget ([`Limits`]) before deciding.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "NOT linearizable",
            Verdict::Unknown => "unknown (search budget exhausted)",
        })
    }
}

/// How much searching a check may do before answering [`Verdict::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Configurations explored per key, both searches together (module doc). Each may be
    /// remembered, at up to about 200 bytes, until the key is done.
    pub steps_per_key_max: u64,
    /// Wall-clock time for the whole check.
    pub duration_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps_per_key_max: 2_000_000,
            duration_max: Duration::from_secs(60),
        }
    }
}

/// Where the search of a key got stuck: the deepest configuration it had to abandon. When the
/// key has unknown operations and the first, relaxed search refuted it (module doc), the
/// prefix may use an unknown operation more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// `ok` operations in the longest linearizable prefix found.
    pub ok_linearized: usize,
    /// Unknown operations that took effect in that prefix.
    pub unknown_linearized: usize,
    /// The register after the prefix (`None`: absent).
    pub value: Option<u64>,
    /// The prefix's last operations, in linearization order.
    pub prefix_tail: Vec<Operation>,
    /// The operations that could have taken effect next, none of which led anywhere, by call
    /// time.
    pub pending: Vec<Operation>,
    /// The pending operation that returned first: every later call must follow it.
    pub first_to_return: Option<Operation>,
}

/// The check of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The register.
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Operations that ended `ok`.
    pub ok_count: usize,
    /// Operations of unknown outcome.
    pub unknown_count: usize,
    /// Configurations the search explored.
    pub steps: u64,
    /// Where the search got stuck, unless the key is linearizable.
    pub stuck: Option<Stuck>,
}

/// The check of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `NotLinearizable` if any key is; else `Unknown` if any key is; else `Linearizable`.
    pub verdict: Verdict,
    /// One per key, by key.
    pub keys: Vec<KeyReport>,
    /// Operations that ended `ok`.
    pub ok_count: usize,
    /// Operations of unknown outcome.
    pub unknown_count: usize,
    /// How long the check took.
    pub elapsed: Duration,
}

impl Report {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }

    /// The keys that are not known to be linearizable.
    pub fn failures(&self) -> impl Iterator<Item = &KeyReport> {
        self.keys
            .iter()
            .filter(|k| k.verdict != Verdict::Linearizable)
    }
}

/// How many of the last linearized operations an explanation shows.
const PREFIX_TAIL_COUNT_MAX: usize = 8;

/// How many pending unknown operations an explanation shows (the latest called).
const PENDING_UNKNOWN_SHOWN_MAX: usize = 8;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |v: Verdict| self.keys.iter().filter(|k| k.verdict == v).count();
        writeln!(
            f,
            "{}: {} ok and {} unknown operations on {} keys ({} not linearizable, {} unknown), \
             checked in {:.1} ms",
            self.verdict,
            self.ok_count,
            self.unknown_count,
            self.keys.len(),
            count(Verdict::NotLinearizable),
            count(Verdict::Unknown),
            self.elapsed.as_secs_f64() * 1e3
        )?;
        for key in self.failures() {
            write!(f, "{key}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: {} ({} ok and {} unknown operations, {} search steps)",
            self.key, self.verdict, self.ok_count, self.unknown_count, self.steps
        )?;
        let Some(stuck) = &self.stuck else {
            return Ok(());
        };
        writeln!(
            f,
            "  longest linearizable prefix: {} of {} ok operations (with {} unknown ones); \
             the register is then {}",
            stuck.ok_linearized,
            self.ok_count,
            stuck.unknown_linearized,
            match stuck.value {
                Some(v) => v.to_string(),
                None => "absent".to_string(),
            }
        )?;
        if !stuck.prefix_tail.is_empty() {
            writeln!(f, "  the prefix ends with (in linearization order):")?;
            for op in &stuck.prefix_tail {
                writeln!(f, "      {op}")?;
            }
        }
        writeln!(
            f,
            "  no order of these operations continues it \
             (* returned first: later calls must follow it):"
        )?;
        // Unknown operations stay pending forever: show the latest called.
        let unknown_count = stuck
            .pending
            .iter()
            .filter(|op| op.completion == Completion::Unknown)
            .count();
        let unknown_hidden = unknown_count.saturating_sub(PENDING_UNKNOWN_SHOWN_MAX);
        if unknown_hidden > 0 {
            writeln!(
                f,
                "      ({unknown_hidden} unknown operations called earlier, not shown)"
            )?;
        }
        let mut unknown_seen = 0;
        for op in &stuck.pending {
            if op.completion == Completion::Unknown {
                unknown_seen += 1;
                if unknown_seen <= unknown_hidden {
                    continue;
                }
            }
            let mark = if stuck.first_to_return.as_ref() == Some(op) {
                "*"
            } else {
                " "
            };
            writeln!(f, "    {mark} {op}")?;
        }
        Ok(())
    }
}

/// Checks a history's operations ([`history::operations`]) with the default [`Limits`].
pub fn check(ops: &[Operation]) -> Report {
    check_with_limits(ops, &Limits::default())
}

/// Pairs `events` into operations and checks them.
pub fn check_events(events: &[Event]) -> Result<Report, String> {
    Ok(check(&history::operations(events)?))
}

/// Checks a history's operations, each key on its own, within `limits`.
pub fn check_with_limits(ops: &[Operation], limits: &Limits) -> Report {
    let started = Instant::now();
    // None: too far ahead to represent, so never reached.
    let deadline = started.checked_add(limits.duration_max);
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys: Vec<KeyReport> = by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, limits.steps_per_key_max, deadline))
        .collect();
    let any = |v: Verdict| keys.iter().any(|k| k.verdict == v);
    let verdict = if any(Verdict::NotLinearizable) {
        Verdict::NotLinearizable
    } else if any(Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    Report {
        verdict,
        ok_count: keys.iter().map(|k| k.ok_count).sum(),
        unknown_count: keys.iter().map(|k| k.unknown_count).sum(),
        keys,
        elapsed: started.elapsed(),
    }
}

fn check_key(
    key: &str,
    ops: &[&Operation],
    steps_max: u64,
    deadline: Option<Instant>,
) -> KeyReport {
    let (ok_ops, unknown): (Vec<&Operation>, Vec<&Operation>) = ops
        .iter()
        .partition(|op| matches!(op.completion, Completion::Ok { .. }));
    let unknown_count = unknown.len();
    // An unknown get, or cas of a value to itself, changes nothing and its reply is unknown:
    // nothing to check.
    let unknown_writes: Vec<&Operation> = unknown
        .into_iter()
        .filter(|op| match op.op {
            Op::Get => false,
            Op::Put(_) => true,
            Op::Cas { from, to } => from != Some(to),
        })
        .collect();
    let ok_count = ok_ops.len();
    let mut steps = 0;
    let report = |search: &Search, verdict: Verdict, steps: u64| KeyReport {
        key: key.to_string(),
        verdict,
        ok_count,
        unknown_count,
        steps,
        stuck: (verdict != Verdict::Linearizable).then(|| search.stuck()),
    };
    if !unknown_writes.is_empty() {
        let mut relaxed = Search::new(ok_ops.clone(), unknown_writes.clone(), Unknowns::Reusable);
        let verdict = relaxed.run(steps_max, deadline);
        if verdict != Verdict::Linearizable {
            return report(&relaxed, verdict, relaxed.steps);
        }
        steps = relaxed.steps;
    }
    let mut exact = Search::new(ok_ops, unknown_writes, Unknowns::Once);
    let verdict = exact.run(steps_max.saturating_sub(steps), deadline);
    report(&exact, verdict, steps + exact.steps)
}
