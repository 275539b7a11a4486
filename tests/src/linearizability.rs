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
//! - **Fewer unknown operations used is better.** A remembered failure also stands for the
//!   configurations with the same `ok` operations, value and run and more unknown operations
//!   used: having fewer left cannot help.
//! - **Refute cheaply first.** When a key has unknown operations, a first search lets each be
//!   used any number of times. That accepts more histories, so its "not linearizable" is
//!   final; and with nothing to track about the unknown operations, refuting a long history
//!   with many of them stays cheap. Only if it finds a linearization does the exact search run.
//!
//! The search is bounded ([`Limits`]): a history it cannot decide in time gets
//! [`Verdict::Unknown`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::history::{self, Completion, Event, Op, Operation, Reply};

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
    /// Configurations explored per key. Each remembered failure costs about 100 bytes.
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
             checked in {:.3} s",
            self.verdict,
            self.ok_count,
            self.unknown_count,
            self.keys.len(),
            count(Verdict::NotLinearizable),
            count(Verdict::Unknown),
            self.elapsed.as_secs_f64()
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
        let value = match stuck.value {
            Some(v) => v.to_string(),
            None => "absent".to_string(),
        };
        writeln!(
            f,
            "  longest linearizable prefix: {} of {} ok operations (with {} unknown ones); \
             the register is then {value}",
            stuck.ok_linearized, self.ok_count, stuck.unknown_linearized
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
    let deadline = started
        .checked_add(limits.duration_max)
        .unwrap_or(started + Duration::from_secs(86_400 * 365));
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

fn check_key(key: &str, ops: &[&Operation], steps_max: u64, deadline: Instant) -> KeyReport {
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

/// How the search may use unknown operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unknowns {
    /// Each at most once: the history's meaning.
    Once,
    /// Each any number of times: a relaxation that accepts more histories, and is much
    /// cheaper to refute (the unknown operations used drop out of the configuration).
    Reusable,
}

/// An `ok` operation as the search applies it.
#[derive(Debug, Clone, Copy)]
enum OkStep {
    Get(Option<u64>),
    Put(u64),
    Cas {
        from: Option<u64>,
        to: u64,
        applied: bool,
    },
    /// A reply that does not answer its operation: never legal.
    Mismatched,
}

/// An unknown put or cas as the search applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum UnknownStep {
    Put(u64),
    Cas { from: Option<u64>, to: u64 },
}

impl OkStep {
    /// The register after it, if its reply is legal with the register at `value`.
    fn apply(self, value: Option<u64>) -> Option<Option<u64>> {
        match self {
            OkStep::Get(v) => (v == value).then_some(value),
            OkStep::Put(v) => Some(Some(v)),
            OkStep::Cas {
                from,
                to,
                applied: true,
            } => (value == from).then_some(Some(to)),
            OkStep::Cas {
                from,
                applied: false,
                ..
            } => (value != from).then_some(value),
            OkStep::Mismatched => None,
        }
    }

    /// Whether it leaves the register as it is (when legal).
    fn is_read(self) -> bool {
        matches!(self, OkStep::Get(_) | OkStep::Cas { applied: false, .. })
    }
}

/// Whether the last operations linearized are unknown ones (a run), and the value before them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Outside,
    From(Option<u64>),
}

/// What became of an operation tried next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tried {
    Linearized,
    /// The register or the canonical form does not allow it here.
    Illegal,
    /// Allowed, but it leads to a configuration known to fail.
    KnownFailure,
}

/// Where the search resumes within the current configuration.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// A configuration just reached: first look for a read that can go next.
    Enter,
    /// At this list entry: its call is the next candidate, or it is the first return.
    List(u32),
    /// At this unknown operation (index into `unknown_ops`); those called after `bound` (the
    /// first return's time) are not candidates.
    Unknown { index: usize, bound: u64 },
    /// The current configuration has failed.
    Backtrack,
}

/// A linearized operation and what it replaced, to undo it.
#[derive(Debug, Clone, Copy)]
enum Frame {
    Ok {
        op: u32,
        value: Option<u64>,
        run: Run,
        ok_max: Option<u32>,
    },
    Unknown {
        index: usize,
        value: Option<u64>,
        run: Run,
        bound: u64,
    },
}

/// A configuration explored without success. `ok_words` are the words of the linearized set
/// from the first that is not full to the last that is not empty: the rest follows.
#[derive(Debug)]
struct Failed {
    ok_start_word: u32,
    ok_words: Box<[u64]>,
    value: Option<u64>,
    run: Run,
    unknown_linearized: Box<[u64]>,
}

/// A hasher for keys that are already hashes.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0, u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// FxHash's step: cheap, and good enough for bit sets.
fn mix(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// The deepest abandoned configuration, in operation indexes.
#[derive(Debug, Default)]
struct Snapshot {
    ok_linearized: usize,
    unknown_linearized: usize,
    value: Option<u64>,
    /// (is ok, index) of the prefix's last operations.
    prefix_tail: Vec<(bool, usize)>,
    pending_ok: Vec<u32>,
    pending_unknown: Vec<usize>,
    first_to_return: Option<u32>,
}

const HEAD: u32 = 0;

/// The search over one key's operations.
struct Search<'a> {
    ok_ops: Vec<&'a Operation>,
    ok_steps: Vec<OkStep>,
    /// Unknown puts and cases, by call time.
    unknown_ops: Vec<&'a Operation>,
    unknown_steps: Vec<UnknownStep>,
    /// The previous unknown operation with the same step: only the earliest one not linearized
    /// of each step is tried.
    unknown_same_before: Vec<Option<usize>>,
    unknowns: Unknowns,

    // The list: entry 0 is the head, the last entry the tail (time u64::MAX, never lifted).
    next: Vec<u32>,
    prev: Vec<u32>,
    entry_op: Vec<u32>,
    entry_is_call: Vec<bool>,
    entry_time_ns: Vec<u64>,
    call_entry: Vec<u32>,
    return_entry: Vec<u32>,

    // The current configuration.
    ok_linearized: Vec<u64>,
    unknown_linearized: Vec<u64>,
    ok_remaining: usize,
    /// The highest `ok` operation index linearized.
    ok_max: Option<u32>,
    value: Option<u64>,
    run: Run,
    stack: Vec<Frame>,

    failed: HashMap<u64, Vec<Failed>, BuildHasherDefault<Prehashed>>,
    steps: u64,
    deepest: Option<Snapshot>,
}

fn bit(words: &[u64], i: usize) -> bool {
    words[i / 64] & (1 << (i % 64)) != 0
}

fn flip(words: &mut [u64], i: usize) {
    words[i / 64] ^= 1 << (i % 64);
}

impl<'a> Search<'a> {
    fn new(
        mut ok_ops: Vec<&'a Operation>,
        mut unknown_ops: Vec<&'a Operation>,
        unknowns: Unknowns,
    ) -> Search<'a> {
        // Stable: operations called at the same time keep the history's order.
        ok_ops.sort_by_key(|op| op.call_ns);
        unknown_ops.sort_by_key(|op| op.call_ns);
        let ok_steps = ok_ops
            .iter()
            .map(|op| match (op.op, op.completion) {
                (
                    Op::Get,
                    Completion::Ok {
                        reply: Reply::Get(v),
                        ..
                    },
                ) => OkStep::Get(v),
                (
                    Op::Put(v),
                    Completion::Ok {
                        reply: Reply::Put, ..
                    },
                ) => OkStep::Put(v),
                (
                    Op::Cas { from, to },
                    Completion::Ok {
                        reply: Reply::Cas { applied },
                        ..
                    },
                ) => OkStep::Cas { from, to, applied },
                _ => OkStep::Mismatched,
            })
            .collect();
        let unknown_steps = unknown_ops
            .iter()
            .map(|op| match op.op {
                Op::Put(v) => UnknownStep::Put(v),
                Op::Cas { from, to } => UnknownStep::Cas { from, to },
                // Filtered out by the caller: it would change nothing.
                Op::Get => UnknownStep::Cas { from: None, to: 0 },
            })
            .collect::<Vec<_>>();
        let mut last_with_step: HashMap<UnknownStep, usize> = HashMap::new();
        let unknown_same_before = unknown_steps
            .iter()
            .enumerate()
            .map(|(i, &step)| last_with_step.insert(step, i))
            .collect();

        // (time, 0 = call / 1 = return, op): calls before returns at equal times, so that
        // touching operations are concurrent.
        let mut sorted: Vec<(u64, u8, u32)> = Vec::with_capacity(ok_ops.len() * 2);
        for (i, op) in ok_ops.iter().enumerate() {
            let return_ns = match op.completion {
                Completion::Ok { return_ns, .. } => return_ns.max(op.call_ns),
                Completion::Unknown => u64::MAX,
            };
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            sorted.push((op.call_ns, 0, i));
            sorted.push((return_ns, 1, i));
        }
        sorted.sort_unstable();
        let entry_count = sorted.len() + 2;
        let tail = u32::try_from(entry_count - 1).unwrap_or(u32::MAX);
        let mut entry_op = vec![u32::MAX; entry_count];
        let mut entry_is_call = vec![false; entry_count];
        let mut entry_time_ns = vec![0; entry_count];
        let mut call_entry = vec![0; ok_ops.len()];
        let mut return_entry = vec![0; ok_ops.len()];
        entry_time_ns[entry_count - 1] = u64::MAX;
        for (k, &(time_ns, kind, op)) in sorted.iter().enumerate() {
            let e = k + 1;
            entry_op[e] = op;
            entry_is_call[e] = kind == 0;
            entry_time_ns[e] = time_ns;
            let e = u32::try_from(e).unwrap_or(u32::MAX);
            if kind == 0 {
                call_entry[op as usize] = e;
            } else {
                return_entry[op as usize] = e;
            }
        }
        let next = (1..=tail).chain([tail]).collect();
        let prev = [HEAD].into_iter().chain(0..tail).collect();

        Search {
            ok_remaining: ok_ops.len(),
            ok_linearized: vec![0; ok_ops.len().div_ceil(64)],
            unknown_linearized: vec![0; unknown_ops.len().div_ceil(64)],
            ok_ops,
            ok_steps,
            unknown_ops,
            unknown_steps,
            unknown_same_before,
            unknowns,
            next,
            prev,
            entry_op,
            entry_is_call,
            entry_time_ns,
            call_entry,
            return_entry,
            ok_max: None,
            value: None,
            run: Run::Outside,
            stack: Vec::new(),
            failed: HashMap::default(),
            steps: 0,
            deepest: None,
        }
    }

    fn run(&mut self, steps_max: u64, deadline: Instant) -> Verdict {
        let mut cursor = Cursor::Enter;
        let mut iterations: u64 = 0;
        loop {
            if self.ok_remaining == 0 {
                return Verdict::Linearizable;
            }
            iterations += 1;
            if self.steps >= steps_max || (iterations & 0xfff == 0 && Instant::now() >= deadline) {
                self.snapshot_if_deepest();
                return Verdict::Unknown;
            }
            cursor = match cursor {
                Cursor::Enter => match self.passing_read() {
                    Some(op) => match self.try_ok(op) {
                        Tried::Linearized => Cursor::Enter,
                        // The read could go first in any continuation from here (module doc):
                        // if the configuration after it fails, so does this one.
                        Tried::Illegal | Tried::KnownFailure => Cursor::Backtrack,
                    },
                    None => Cursor::List(self.next[HEAD as usize]),
                },
                Cursor::List(e) => {
                    let e = e as usize;
                    let op = self.entry_op[e];
                    if !self.entry_is_call[e] {
                        Cursor::Unknown {
                            index: 0,
                            bound: self.entry_time_ns[e],
                        }
                    } else if !self.ok_steps[op as usize].is_read()
                        && self.try_ok(op) == Tried::Linearized
                    {
                        Cursor::Enter
                    } else {
                        // A read cannot pass here: `Enter` found none that does.
                        Cursor::List(self.next[e])
                    }
                }
                Cursor::Unknown { index, bound } => {
                    if index >= self.unknown_ops.len() || self.unknown_ops[index].call_ns > bound {
                        Cursor::Backtrack
                    } else if self.try_unknown(index, bound) == Tried::Linearized {
                        Cursor::Enter
                    } else {
                        Cursor::Unknown {
                            index: index + 1,
                            bound,
                        }
                    }
                }
                Cursor::Backtrack => match self.backtrack() {
                    Some(cursor) => cursor,
                    None => return Verdict::NotLinearizable,
                },
            };
        }
    }

    /// A candidate read that may go next, if any.
    fn passing_read(&self) -> Option<u32> {
        let mut e = self.next[HEAD as usize] as usize;
        while self.entry_is_call[e] {
            let op = self.entry_op[e];
            let step = self.ok_steps[op as usize];
            if step.is_read() && self.allowed(step).is_some() {
                return Some(op);
            }
            e = self.next[e] as usize;
        }
        None
    }

    /// The register after `ok` step `step` if it may go next: its reply is legal now and, after
    /// a run of unknown operations, it needs that run (its reply was not legal before it).
    fn allowed(&self, step: OkStep) -> Option<Option<u64>> {
        let new_value = step.apply(self.value)?;
        match self.run {
            Run::From(before) if step.apply(before).is_some() => None,
            _ => Some(new_value),
        }
    }

    fn lift(&mut self, op: u32) {
        for e in [self.call_entry[op as usize], self.return_entry[op as usize]] {
            let (p, n) = (self.prev[e as usize], self.next[e as usize]);
            self.next[p as usize] = n;
            self.prev[n as usize] = p;
        }
    }

    /// Undoes the last `lift`, which was of `op`.
    fn unlift(&mut self, op: u32) {
        for e in [self.return_entry[op as usize], self.call_entry[op as usize]] {
            let (p, n) = (self.prev[e as usize], self.next[e as usize]);
            self.next[p as usize] = e;
            self.prev[n as usize] = e;
        }
    }

    /// Linearizes `ok` operation `op` next if the register and the canonical form allow it and
    /// the configuration it leads to is not known to fail.
    fn try_ok(&mut self, op: u32) -> Tried {
        let value = self.value;
        let Some(new_value) = self.allowed(self.ok_steps[op as usize]) else {
            return Tried::Illegal;
        };
        flip(&mut self.ok_linearized, op as usize);
        self.lift(op);
        self.ok_remaining -= 1;
        let ok_max = self.ok_max;
        self.ok_max = Some(ok_max.map_or(op, |m| m.max(op)));
        if self.ok_remaining > 0 && self.is_known_failure(new_value, Run::Outside) {
            self.ok_max = ok_max;
            self.ok_remaining += 1;
            self.unlift(op);
            flip(&mut self.ok_linearized, op as usize);
            return Tried::KnownFailure;
        }
        self.stack.push(Frame::Ok {
            op,
            value,
            run: self.run,
            ok_max,
        });
        self.value = new_value;
        self.run = Run::Outside;
        self.steps += 1;
        Tried::Linearized
    }

    /// Linearizes unknown operation `index` next if it changes the register, the canonical
    /// form allows it, and the configuration it leads to is not known to fail.
    fn try_unknown(&mut self, index: usize, bound: u64) -> Tried {
        let earlier_same = self.unknown_same_before[index];
        let tried_instead = match self.unknowns {
            Unknowns::Once => {
                bit(&self.unknown_linearized, index)
                    || earlier_same.is_some_and(|i| !bit(&self.unknown_linearized, i))
            }
            Unknowns::Reusable => earlier_same.is_some(),
        };
        if tried_instead {
            return Tried::Illegal;
        }
        let value = self.value;
        let new_value = match self.unknown_steps[index] {
            UnknownStep::Put(v) => (self.run == Run::Outside).then_some(Some(v)),
            UnknownStep::Cas { from, to } => (value == from).then_some(Some(to)),
        };
        let Some(new_value) = new_value else {
            return Tried::Illegal;
        };
        if self.run_has_held(new_value) {
            return Tried::Illegal;
        }
        let run = match self.run {
            Run::Outside => Run::From(value),
            run => run,
        };
        let once = self.unknowns == Unknowns::Once;
        if once {
            flip(&mut self.unknown_linearized, index);
        }
        if self.is_known_failure(new_value, run) {
            if once {
                flip(&mut self.unknown_linearized, index);
            }
            return Tried::KnownFailure;
        }
        self.stack.push(Frame::Unknown {
            index,
            value,
            run: self.run,
            bound,
        });
        self.value = new_value;
        self.run = run;
        self.steps += 1;
        Tried::Linearized
    }

    /// Whether the register held `value` now or since the current run of unknown operations
    /// began: such a run could skip the operations in between, so they are not needed.
    fn run_has_held(&self, value: Option<u64>) -> bool {
        self.value == value
            || self
                .stack
                .iter()
                .rev()
                .map_while(|f| match *f {
                    Frame::Unknown { value, .. } => Some(value),
                    Frame::Ok { .. } => None,
                })
                .any(|held| held == value)
    }

    /// Remembers the current configuration as failed and undoes the last linearization; the
    /// cursor to continue from, or `None` if the search is over.
    fn backtrack(&mut self) -> Option<Cursor> {
        self.snapshot_if_deepest();
        let frame = *self.stack.last()?;
        self.remember_failure();
        self.stack.pop();
        match frame {
            Frame::Ok {
                op,
                value,
                run,
                ok_max,
            } => {
                self.unlift(op);
                flip(&mut self.ok_linearized, op as usize);
                self.ok_remaining += 1;
                self.ok_max = ok_max;
                self.value = value;
                self.run = run;
                if self.ok_steps[op as usize].is_read() {
                    // It was the only operation tried here (`Cursor::Enter`).
                    Some(Cursor::Backtrack)
                } else {
                    Some(Cursor::List(
                        self.next[self.call_entry[op as usize] as usize],
                    ))
                }
            }
            Frame::Unknown {
                index,
                value,
                run,
                bound,
            } => {
                if self.unknowns == Unknowns::Once {
                    flip(&mut self.unknown_linearized, index);
                }
                self.value = value;
                self.run = run;
                Some(Cursor::Unknown {
                    index: index + 1,
                    bound,
                })
            }
        }
    }

    /// The linearized `ok` set in canonical short form: (first word, words). Every operation
    /// before the first still in the list is linearized; none after `ok_max` is.
    fn ok_key(&self) -> (u32, &[u64]) {
        let first_left = self.entry_op[self.next[HEAD as usize] as usize] as usize;
        let start = first_left / 64;
        let end = self.ok_max.map_or(0, |m| m as usize / 64 + 1).max(start);
        (
            u32::try_from(start).unwrap_or(u32::MAX),
            &self.ok_linearized[start..end],
        )
    }

    fn key_hash(start: u32, words: &[u64], value: Option<u64>) -> u64 {
        let mut hash = mix(0, u64::from(start));
        for &w in words {
            hash = mix(hash, w);
        }
        match value {
            Some(v) => mix(mix(hash, 1), v),
            None => mix(hash, 0),
        }
    }

    /// Whether the current set of linearized operations with `value` and `run` is known to
    /// fail: a failed configuration with the same `ok` set, value and run, and no more unknown
    /// operations linearized.
    fn is_known_failure(&self, value: Option<u64>, run: Run) -> bool {
        let (start, words) = self.ok_key();
        let Some(bucket) = self.failed.get(&Self::key_hash(start, words, value)) else {
            return false;
        };
        bucket.iter().any(|f| {
            f.value == value
                && f.run == run
                && f.ok_start_word == start
                && *f.ok_words == *words
                && f.unknown_linearized
                    .iter()
                    .zip(&self.unknown_linearized)
                    .all(|(failed, now)| failed & !now == 0)
        })
    }

    fn remember_failure(&mut self) {
        let (start, words) = self.ok_key();
        let hash = Self::key_hash(start, words, self.value);
        let failed = Failed {
            ok_start_word: start,
            ok_words: words.into(),
            value: self.value,
            run: self.run,
            // Trailing empty words are implied (see `is_known_failure`).
            unknown_linearized: match self.unknown_linearized.iter().rposition(|&w| w != 0) {
                Some(last) => self.unknown_linearized[..=last].into(),
                None => Box::default(),
            },
        };
        self.failed.entry(hash).or_default().push(failed);
    }

    fn snapshot_if_deepest(&mut self) {
        let ok_linearized = self.ok_ops.len() - self.ok_remaining;
        if self
            .deepest
            .as_ref()
            .is_some_and(|d| d.ok_linearized >= ok_linearized)
        {
            return;
        }
        let mut snapshot = self.deepest.take().unwrap_or_default();
        snapshot.ok_linearized = ok_linearized;
        snapshot.unknown_linearized = self
            .stack
            .iter()
            .filter(|f| matches!(f, Frame::Unknown { .. }))
            .count();
        snapshot.value = self.value;
        snapshot.prefix_tail.clear();
        let tail_start = self.stack.len().saturating_sub(PREFIX_TAIL_COUNT_MAX);
        snapshot
            .prefix_tail
            .extend(self.stack[tail_start..].iter().map(|f| match *f {
                Frame::Ok { op, .. } => (true, op as usize),
                Frame::Unknown { index, .. } => (false, index),
            }));
        snapshot.pending_ok.clear();
        snapshot.first_to_return = None;
        let mut e = self.next[HEAD as usize] as usize;
        let mut bound = u64::MAX;
        while self.entry_op[e] != u32::MAX {
            if !self.entry_is_call[e] {
                snapshot.first_to_return = Some(self.entry_op[e]);
                bound = self.entry_time_ns[e];
                break;
            }
            snapshot.pending_ok.push(self.entry_op[e]);
            e = self.next[e] as usize;
        }
        snapshot.pending_unknown.clear();
        snapshot
            .pending_unknown
            .extend((0..self.unknown_ops.len()).filter(|&i| {
                self.unknown_ops[i].call_ns <= bound && !bit(&self.unknown_linearized, i)
            }));
        self.deepest = Some(snapshot);
    }

    fn stuck(&self) -> Stuck {
        let Some(d) = &self.deepest else {
            return Stuck {
                ok_linearized: 0,
                unknown_linearized: 0,
                value: None,
                prefix_tail: Vec::new(),
                pending: Vec::new(),
                first_to_return: None,
            };
        };
        let op = |(is_ok, i): (bool, usize)| {
            if is_ok {
                self.ok_ops[i].clone()
            } else {
                self.unknown_ops[i].clone()
            }
        };
        let mut pending: Vec<Operation> = d
            .pending_ok
            .iter()
            .map(|&i| op((true, i as usize)))
            .chain(d.pending_unknown.iter().map(|&i| op((false, i))))
            .collect();
        pending.sort_by_key(|op| op.call_ns);
        Stuck {
            ok_linearized: d.ok_linearized,
            unknown_linearized: d.unknown_linearized,
            value: d.value,
            prefix_tail: d.prefix_tail.iter().map(|&r| op(r)).collect(),
            pending,
            first_to_return: d.first_to_return.map(|i| op((true, i as usize))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventValue;

    fn ok(process: u64, call_ns: u64, return_ns: u64, op: Op, reply: Reply) -> Operation {
        Operation {
            process,
            key: "k".to_string(),
            op,
            call_ns,
            completion: Completion::Ok { reply, return_ns },
        }
    }

    fn put(process: u64, call_ns: u64, return_ns: u64, v: u64) -> Operation {
        ok(process, call_ns, return_ns, Op::Put(v), Reply::Put)
    }

    fn get(process: u64, call_ns: u64, return_ns: u64, v: Option<u64>) -> Operation {
        ok(process, call_ns, return_ns, Op::Get, Reply::Get(v))
    }

    fn cas(
        process: u64,
        call_ns: u64,
        return_ns: u64,
        (from, to): (Option<u64>, u64),
        applied: bool,
    ) -> Operation {
        ok(
            process,
            call_ns,
            return_ns,
            Op::Cas { from, to },
            Reply::Cas { applied },
        )
    }

    fn unknown(process: u64, call_ns: u64, op: Op) -> Operation {
        Operation {
            process,
            key: "k".to_string(),
            op,
            call_ns,
            completion: Completion::Unknown,
        }
    }

    fn verdict(ops: &[Operation]) -> Verdict {
        let report = check(ops);
        assert_eq!(report.keys.len(), 1);
        report.verdict
    }

    fn assert_rejected(ops: &[Operation]) -> Report {
        let report = check(ops);
        assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
        report
    }

    fn assert_accepted(ops: &[Operation]) {
        let report = check(ops);
        assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    }

    #[test]
    fn rejects_a_stale_read() {
        let report = assert_rejected(&[put(1, 0, 10, 1), get(2, 20, 30, None)]);
        let text = report.to_string();
        assert!(text.contains("key \"k\": NOT linearizable"), "{text}");
        assert!(text.contains("process 2 get -> absent"), "{text}");
        let stuck = report.keys[0].stuck.as_ref().unwrap();
        assert_eq!(stuck.ok_linearized, 1);
        assert_eq!(stuck.value, Some(1));
        assert_eq!(stuck.pending, vec![get(2, 20, 30, None)]);
    }

    #[test]
    fn rejects_a_lost_write() {
        assert_rejected(&[put(1, 0, 10, 1), put(1, 20, 30, 2), get(2, 40, 50, Some(1))]);
    }

    #[test]
    fn rejects_a_cas_applied_twice() {
        assert_rejected(&[
            put(1, 0, 10, 0),
            cas(2, 20, 40, (Some(0), 1), true),
            cas(3, 25, 45, (Some(0), 2), true),
        ]);
        // Either one alone is fine.
        assert_accepted(&[
            put(1, 0, 10, 0),
            cas(2, 20, 40, (Some(0), 1), true),
            cas(3, 25, 45, (Some(0), 2), false),
        ]);
    }

    #[test]
    fn rejects_a_read_of_a_value_never_written() {
        assert_rejected(&[put(1, 0, 10, 1), get(2, 5, 20, Some(7))]);
        assert_rejected(&[get(2, 5, 20, Some(0))]);
    }

    #[test]
    fn rejects_a_cas_not_applied_when_it_should_have() {
        assert_rejected(&[put(1, 0, 10, 3), cas(2, 20, 30, (Some(3), 4), false)]);
        assert_rejected(&[cas(2, 20, 30, (None, 4), false)]);
        assert_accepted(&[cas(2, 20, 30, (None, 4), true), get(1, 31, 32, Some(4))]);
    }

    #[test]
    fn rejects_a_read_going_back_in_time() {
        let writes = [put(1, 0, 10, 1), put(2, 0, 10, 2)];
        let mut ops = writes.to_vec();
        ops.extend([get(3, 20, 30, Some(2)), get(3, 40, 50, Some(1))]);
        assert_rejected(&ops);
        // Each read alone is fine: the writes were concurrent.
        let mut ops = writes.to_vec();
        ops.extend([get(3, 20, 30, Some(1)), get(4, 40, 50, Some(1))]);
        assert_accepted(&ops);
    }

    #[test]
    fn mit_quiz_examples() {
        // 6.824 2017 quiz 2, section VII, as in Porcupine's tests (absent for 0).
        assert_accepted(&[
            put(0, 0, 100, 100),
            get(1, 25, 75, Some(100)),
            get(2, 30, 60, None),
        ]);
        assert_rejected(&[
            put(0, 0, 100, 200),
            get(1, 10, 30, Some(200)),
            get(2, 40, 90, None),
        ]);
    }

    #[test]
    fn accepts_a_concurrent_put_and_get_seeing_either_value() {
        for seen in [1, 2] {
            assert_accepted(&[
                put(1, 0, 10, 1),
                put(1, 20, 40, 2),
                get(2, 25, 35, Some(seen)),
            ]);
        }
        assert_rejected(&[put(1, 0, 10, 1), put(1, 20, 40, 2), get(2, 25, 35, None)]);
    }

    #[test]
    fn touching_operations_are_concurrent() {
        // The put returned at 10, the get was called at 10: either order is allowed.
        assert_accepted(&[put(1, 0, 10, 1), get(2, 10, 20, None)]);
        assert_rejected(&[put(1, 0, 10, 1), get(2, 11, 20, None)]);
    }

    #[test]
    fn accepts_an_unknown_put_seen_later() {
        assert_accepted(&[
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Put(2)),
            get(3, 100, 110, Some(2)),
            get(3, 120, 130, Some(2)),
        ]);
        // Once seen, it stays: the register cannot go back to 1.
        assert_rejected(&[
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Put(2)),
            get(3, 100, 110, Some(2)),
            get(3, 120, 130, Some(1)),
        ]);
        // It cannot take effect before its call.
        assert_rejected(&[
            put(1, 0, 10, 1),
            get(3, 12, 15, Some(2)),
            unknown(2, 20, Op::Put(2)),
        ]);
    }

    #[test]
    fn accepts_an_unknown_put_never_seen() {
        assert_accepted(&[
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Put(2)),
            get(3, 100, 110, Some(1)),
            put(4, 120, 130, 3),
            get(3, 140, 150, Some(3)),
        ]);
        // It may take effect late: after reads that did not see it.
        assert_accepted(&[
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Put(2)),
            get(3, 100, 110, Some(1)),
            get(3, 200, 210, Some(2)),
        ]);
    }

    #[test]
    fn accepts_unknown_cas() {
        let start = [
            put(1, 0, 10, 1),
            unknown(
                2,
                20,
                Op::Cas {
                    from: Some(1),
                    to: 5,
                },
            ),
        ];
        for seen in [1, 5] {
            let mut ops = start.to_vec();
            ops.push(get(3, 30, 40, Some(seen)));
            assert_accepted(&ops);
        }
        // A cas that cannot apply cannot explain a read of its value.
        assert_rejected(&[
            put(1, 0, 10, 1),
            unknown(
                2,
                20,
                Op::Cas {
                    from: Some(9),
                    to: 5,
                },
            ),
            get(3, 30, 40, Some(5)),
        ]);
        // A chain of unknown operations: a put, then a cas that depends on it.
        assert_accepted(&[
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Put(7)),
            unknown(
                3,
                21,
                Op::Cas {
                    from: Some(7),
                    to: 8,
                },
            ),
            get(4, 30, 40, Some(8)),
        ]);
        // The same chain where the put of 7 came after the read.
        assert_rejected(&[
            put(1, 0, 10, 1),
            unknown(
                3,
                21,
                Op::Cas {
                    from: Some(7),
                    to: 8,
                },
            ),
            get(4, 30, 40, Some(8)),
            unknown(2, 50, Op::Put(7)),
        ]);
    }

    #[test]
    fn an_unknown_operation_takes_effect_at_most_once() {
        // Read 5 twice with a put of 1 between: the one unknown put of 5 cannot explain both.
        // (The first, relaxed search accepts this; the exact one must not.)
        let ops = [
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Put(5)),
            get(3, 30, 40, Some(5)),
            put(1, 50, 60, 1),
            get(3, 70, 80, Some(5)),
        ];
        let report = assert_rejected(&ops);
        let stuck = report.keys[0].stuck.as_ref().unwrap();
        assert_eq!(stuck.ok_linearized, 3, "{report}");
        // A second unknown put of 5 can.
        let mut ops = ops.to_vec();
        ops.push(unknown(4, 21, Op::Put(5)));
        assert_accepted(&ops);
    }

    #[test]
    fn an_unknown_put_can_explain_a_cas_that_did_not_apply() {
        assert_accepted(&[
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Put(2)),
            cas(3, 30, 40, (Some(1), 3), false),
        ]);
        assert_rejected(&[
            put(1, 0, 10, 1),
            unknown(2, 20, Op::Get),
            cas(3, 30, 40, (Some(1), 3), false),
        ]);
    }

    #[test]
    fn accepts_an_etcd_style_history() {
        // Five clients on one key with overlapping reads, writes and cas, in the shape of the
        // Jepsen etcd histories Porcupine is tested on: cas that do not apply, writes that time
        // out (each client then continues as a new process).
        let ops = [
            get(4, 0, 5, None),
            put(1, 10, 40, 1),
            cas(2, 12, 50, (Some(2), 4), true),
            cas(3, 13, 55, (Some(1), 2), true),
            cas(0, 14, 45, (Some(1), 4), false),
            put(4, 60, 70, 0),
            put(1, 72, 80, 2),
            get(0, 82, 90, Some(2)),
            cas(2, 92, 100, (Some(0), 2), false),
            cas(3, 93, 105, (Some(2), 3), true),
            get(4, 106, 110, Some(3)),
            unknown(1, 111, Op::Put(3)),
            put(0, 112, 130, 2),
            put(2, 113, 125, 0),
            cas(3, 131, 140, (Some(0), 4), false),
            cas(4, 132, 141, (Some(3), 4), true),
            unknown(6, 142, Op::Put(1)),
            unknown(
                5,
                143,
                Op::Cas {
                    from: Some(4),
                    to: 0,
                },
            ),
            put(0, 144, 150, 3),
            get(2, 151, 160, Some(3)),
            get(3, 152, 161, Some(1)),
            cas(4, 162, 170, (Some(1), 0), true),
            get(0, 171, 180, Some(0)),
        ];
        assert_accepted(&ops);
        // The same with the last read seeing the overwritten 3.
        let mut bad = ops.to_vec();
        bad[22] = get(0, 171, 180, Some(3));
        assert_rejected(&bad);
    }

    #[test]
    fn keys_are_independent() {
        let mut a = put(1, 0, 10, 1);
        a.key = "a".to_string();
        let mut b = get(2, 20, 30, Some(1));
        b.key = "b".to_string();
        let report = check(&[a.clone(), b]);
        assert_eq!(report.verdict, Verdict::NotLinearizable);
        assert_eq!(report.keys[0].verdict, Verdict::Linearizable);
        assert_eq!(report.keys[1].verdict, Verdict::NotLinearizable);
        let mut b = get(2, 20, 30, Some(1));
        b.key = "a".to_string();
        assert_eq!(verdict(&[a, b]), Verdict::Linearizable);
    }

    #[test]
    fn exhausted_budget_is_unknown() {
        // Twelve concurrent writes and reads that no order explains (a read of 99): the search
        // must try many orders.
        let mut ops: Vec<Operation> = (0..12).map(|p| put(p, 0, 100, p)).collect();
        ops.extend((12..20).map(|p| get(p, 1, 100, Some(p - 12))));
        ops.push(get(20, 2, 100, Some(99)));
        let limits = Limits {
            steps_per_key_max: 100,
            duration_max: Duration::from_secs(60),
        };
        let report = check_with_limits(&ops, &limits);
        assert_eq!(report.verdict, Verdict::Unknown, "{report}");
        assert!(
            report
                .to_string()
                .contains("unknown (search budget exhausted)")
        );
        assert_eq!(check(&ops).verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn an_explanation_shows_the_latest_unknown_operations() {
        let mut ops: Vec<Operation> = (0..20).map(|p| unknown(p, p, Op::Put(100 + p))).collect();
        ops.extend([put(30, 30, 40, 1), get(31, 50, 60, Some(7))]);
        let report = assert_rejected(&ops);
        let stuck = report.keys[0].stuck.as_ref().unwrap();
        assert_eq!(stuck.pending.len(), 21, "{report}");
        let text = report.to_string();
        assert!(
            text.contains("(12 unknown operations called earlier, not shown)"),
            "{text}"
        );
        assert!(text.contains("process 19 put(119) -> unknown"), "{text}");
        assert!(!text.contains("process 11 put(111)"), "{text}");
        assert!(text.contains("* process 31 get -> 7"), "{text}");
    }

    #[test]
    fn check_events_pairs_then_checks() {
        let events = [
            Event::invoke(1, "k", Op::Put(1), 0),
            Event::ok(1, "k", Op::Put(1), Reply::Put, 10),
            Event::invoke(2, "k", Op::Get, 20),
            Event::ok(2, "k", Op::Get, Reply::Get(None), 30),
        ];
        let report = check_events(&events).unwrap();
        assert_eq!(report.verdict, Verdict::NotLinearizable);
        assert!(check_events(&events[1..]).is_err());
    }

    /// Whether some order of `ops` is a linearization: tries every order that real time allows,
    /// each unknown operation taking effect at any point or never. Exponential: a few ops only.
    fn brute_force(ops: &[Operation], value: Option<u64>) -> bool {
        if ops.iter().all(|o| o.completion == Completion::Unknown) {
            return true;
        }
        let return_ns = |o: &Operation| match o.completion {
            Completion::Ok { return_ns, .. } => return_ns,
            Completion::Unknown => u64::MAX,
        };
        (0..ops.len()).any(|i| {
            let o = &ops[i];
            if ops.iter().any(|p| return_ns(p) < o.call_ns) {
                return false;
            }
            let rest: Vec<Operation> = ops
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, p)| p.clone())
                .collect();
            let after = match (o.op, o.completion) {
                (Op::Get, Completion::Ok { reply, .. }) => {
                    (reply == Reply::Get(value)).then_some(value)
                }
                (Op::Put(v), _) => Some(Some(v)),
                (Op::Cas { from, to }, Completion::Ok { reply, .. }) => {
                    let applied = value == from;
                    (reply == Reply::Cas { applied }).then_some(if applied {
                        Some(to)
                    } else {
                        value
                    })
                }
                (Op::Cas { from, to }, Completion::Unknown) => {
                    Some(if value == from { Some(to) } else { value })
                }
                (Op::Get, Completion::Unknown) => Some(value),
            };
            let never = o.completion == Completion::Unknown && brute_force(&rest, value);
            never || after.is_some_and(|v| brute_force(&rest, v))
        })
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = Rng(5);
        let mut verdicts = [0; 2];
        for case in 0..20_000 {
            let count = 1 + rng.below(7);
            let ops: Vec<Operation> = (0..count)
                .map(|p| {
                    let call_ns = rng.below(20);
                    let return_ns = call_ns + rng.below(8);
                    let v = rng.below(3);
                    let maybe = |rng: &mut Rng| (rng.below(4) != 0).then(|| rng.below(3));
                    let (op, reply) = match rng.below(3) {
                        0 => (Op::Get, Reply::Get(maybe(&mut rng))),
                        1 => (Op::Put(v), Reply::Put),
                        _ => {
                            let from = maybe(&mut rng);
                            let applied = rng.below(2) == 0;
                            (Op::Cas { from, to: v }, Reply::Cas { applied })
                        }
                    };
                    if rng.below(5) == 0 {
                        unknown(p, call_ns, op)
                    } else {
                        ok(p, call_ns, return_ns, op, reply)
                    }
                })
                .collect();
            let expected = brute_force(&ops, None);
            verdicts[usize::from(expected)] += 1;
            let report = check(&ops);
            let want = if expected {
                Verdict::Linearizable
            } else {
                Verdict::NotLinearizable
            };
            assert_eq!(report.verdict, want, "case {case}: {ops:#?}\n{report}");
        }
        println!(
            "brute force: {} not linearizable, {} linearizable",
            verdicts[0], verdicts[1]
        );
        assert!(verdicts.iter().all(|&n| n > 2_000), "{verdicts:?}");
    }

    /// SplitMix64: a seeded generator, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// What a simulated history looks like.
    struct Shape {
        clients: u64,
        keys: u64,
        ops: u64,
        /// Per mille of operations that end `info` (half of them take effect).
        unknown_per_mille: u64,
        /// Per mille that end `fail` (none takes effect).
        fail_per_mille: u64,
        /// Values are drawn from 0..values: small domains make cas and reads ambiguous.
        values: u64,
    }

    /// A history of a real linearizable register per key: each operation takes effect at a
    /// random point inside its span (an unknown one possibly later, or never), and its reply is
    /// the register's at that point.
    fn simulate(seed: u64, shape: &Shape) -> Vec<Event> {
        struct Planned {
            process: u64,
            key: String,
            op: Op,
            call_ns: u64,
            end_ns: u64,
            /// 0 ok, 1 fail, 2 info, 3 no end.
            end: u8,
            effect_ns: Option<u64>,
            reply: Option<Reply>,
        }
        let mut rng = Rng(seed);
        let mut planned: Vec<Planned> = Vec::new();
        let mut next_process = shape.clients;
        for client in 0..shape.clients {
            let mut process = client;
            let mut t = rng.below(1_000);
            let count = shape.ops / shape.clients;
            for i in 0..count {
                let call_ns = t + rng.below(20_000);
                let span_ns = 1 + rng.below(100_000);
                let end_ns = call_ns + span_ns;
                t = end_ns;
                let value = rng.below(shape.values);
                let op = match rng.below(10) {
                    0..=3 => Op::Get,
                    4..=6 => Op::Put(value),
                    _ => Op::Cas {
                        from: (rng.below(5) != 0).then(|| rng.below(shape.values)),
                        to: value,
                    },
                };
                let r = rng.below(1_000);
                let end = if r < shape.unknown_per_mille {
                    if i + 1 == count && rng.below(2) == 0 {
                        3
                    } else {
                        2
                    }
                } else if r < shape.unknown_per_mille + shape.fail_per_mille {
                    1
                } else {
                    0
                };
                let effect_ns = match end {
                    0 => Some(call_ns + rng.below(span_ns + 1)),
                    1 => None,
                    // An unknown operation may take effect after its info, or never.
                    _ => (rng.below(2) == 0).then(|| call_ns + rng.below(span_ns * 2)),
                };
                planned.push(Planned {
                    process,
                    key: format!("key{}", rng.below(shape.keys)),
                    op,
                    call_ns,
                    end_ns,
                    end,
                    effect_ns,
                    reply: None,
                });
                if end >= 2 {
                    process = next_process;
                    next_process += 1;
                }
            }
        }
        let mut order: Vec<usize> = (0..planned.len())
            .filter(|&i| planned[i].effect_ns.is_some())
            .collect();
        order.sort_by_key(|&i| planned[i].effect_ns);
        let mut registers: HashMap<String, Option<u64>> = HashMap::new();
        for i in order {
            let p = &mut planned[i];
            let register = registers.entry(p.key.clone()).or_default();
            p.reply = Some(match p.op {
                Op::Get => Reply::Get(*register),
                Op::Put(v) => {
                    *register = Some(v);
                    Reply::Put
                }
                Op::Cas { from, to } => {
                    let applied = *register == from;
                    if applied {
                        *register = Some(to);
                    }
                    Reply::Cas { applied }
                }
            });
        }
        // (time, ends before invokes at equal times, event)
        let mut events: Vec<(u64, u8, Event)> = Vec::new();
        for p in &planned {
            events.push((
                p.call_ns,
                1,
                Event::invoke(p.process, &p.key, p.op, p.call_ns),
            ));
            let end = match (p.end, p.reply) {
                (0, Some(reply)) => Event::ok(p.process, &p.key, p.op, reply, p.end_ns),
                (1, _) => Event::fail(p.process, &p.key, p.op, p.end_ns),
                (2, _) => Event::info(p.process, &p.key, p.op, p.end_ns),
                _ => continue,
            };
            events.push((p.end_ns, 0, end));
        }
        events.sort_by_key(|(t, kind, _)| (*t, *kind));
        events.into_iter().map(|(_, _, e)| e).collect()
    }

    const SHAPE_10K: Shape = Shape {
        clients: 10,
        keys: 5,
        ops: 10_000,
        unknown_per_mille: 10,
        fail_per_mille: 10,
        values: 5,
    };

    #[test]
    fn accepts_a_sequential_history_of_10k_operations() {
        let shape = Shape {
            clients: 1,
            keys: 1,
            ops: 10_000,
            unknown_per_mille: 0,
            fail_per_mille: 0,
            values: 100,
        };
        let events = simulate(7, &shape);
        let report = check_events(&events).unwrap();
        assert!(report.is_linearizable(), "{report}");
        assert_eq!(report.ok_count, 10_000);
    }

    #[test]
    fn random_concurrent_history_of_10k_operations() {
        for seed in [1, 2, 3] {
            let events = simulate(seed, &SHAPE_10K);
            let report = check_events(&events).unwrap();
            println!("seed {seed}: {report}");
            let steps: Vec<u64> = report.keys.iter().map(|k| k.steps).collect();
            println!("  steps per key: {steps:?}");
            assert!(report.is_linearizable(), "seed {seed}: {report}");
            assert!(report.unknown_count > 50, "seed {seed}: {report}");

            // One read in the middle sees a value nobody wrote.
            let mut bad = events.clone();
            let middle = bad.len() / 2;
            let read = bad[middle..]
                .iter_mut()
                .find(|e| e.kind == history::EventType::Ok && e.f == history::Function::Get)
                .unwrap();
            read.value = EventValue::Register(Some(1_000_000));
            let key = read.key.clone();
            let report = check_events(&bad).unwrap();
            assert_eq!(
                report.verdict,
                Verdict::NotLinearizable,
                "seed {seed}: {report}"
            );
            let failed: Vec<&str> = report.failures().map(|k| k.key.as_str()).collect();
            assert_eq!(failed, [key.as_str()]);
            assert!(report.to_string().contains("get -> 1000000"), "{report}");
        }
    }

    #[test]
    fn random_history_with_ten_clients_on_one_key() {
        let shape = Shape {
            keys: 1,
            ops: 3_000,
            unknown_per_mille: 20,
            ..SHAPE_10K
        };
        for seed in [11, 12] {
            let report = check_events(&simulate(seed, &shape)).unwrap();
            println!("seed {seed}: {report}  steps {}", report.keys[0].steps);
            assert!(report.is_linearizable(), "seed {seed}: {report}");
        }
    }

    #[test]
    fn timing_of_the_10k_operation_check() {
        let events = simulate(42, &SHAPE_10K);
        let ops = history::operations(&events).unwrap();
        let started = Instant::now();
        let report = check(&ops);
        let elapsed = started.elapsed();
        assert!(report.is_linearizable(), "{report}");
        println!(
            "10k-operation check ({} ok, {} unknown, 10 clients, 5 keys): {:.1} ms",
            report.ok_count,
            report.unknown_count,
            elapsed.as_secs_f64() * 1e3
        );
    }
}
