//! The per-key search (see the parent module doc): Porcupine's linked list of call and
//! return entries, lift and unlift, a memo of failed configurations, backtracking.

use super::*;

/// How the search may use unknown operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unknowns {
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
pub(super) struct Search<'a> {
    ok_ops: Vec<&'a Operation>,
    ok_steps: Vec<OkStep>,
    /// Unknown puts and cas operations, by call time.
    unknown_ops: Vec<&'a Operation>,
    unknown_steps: Vec<UnknownStep>,
    /// The previous unknown operation with the same step: of those, only the earliest not yet
    /// used is tried (with `Unknowns::Reusable`, only the earliest).
    unknown_same_before: Vec<Option<usize>>,
    unknowns: Unknowns,
    /// The value that stands for every value no operation observes.
    unobserved: u64,

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
    /// Unknown operations linearized.
    unknown_used: usize,
    stack: Vec<Frame>,

    failed: HashMap<u64, Vec<Failed>, BuildHasherDefault<Prehashed>>,
    pub(super) steps: u64,
    deepest: Option<Snapshot>,
}

fn bit(words: &[u64], i: usize) -> bool {
    words[i / 64] & (1 << (i % 64)) != 0
}

fn flip(words: &mut [u64], i: usize) {
    words[i / 64] ^= 1 << (i % 64);
}

impl<'a> Search<'a> {
    pub(super) fn new(
        mut ok_ops: Vec<&'a Operation>,
        mut unknown_ops: Vec<&'a Operation>,
        unknowns: Unknowns,
    ) -> Search<'a> {
        // Stable: operations called at the same time keep the history's order.
        ok_ops.sort_by_key(|op| op.call_ns);
        unknown_ops.sort_by_key(|op| op.call_ns);
        // Values that no get returns and no cas expects are interchangeable: one stands for all,
        // so that writes of them are equal steps and lead to equal configurations.
        let mut observed: HashSet<u64> = HashSet::new();
        for op in ok_ops.iter().chain(&unknown_ops) {
            match (op.op, op.completion) {
                (Op::Cas { from: Some(v), .. }, _)
                | (
                    Op::Get,
                    Completion::Ok {
                        reply: Reply::Get(Some(v)),
                        ..
                    },
                ) => {
                    observed.insert(v);
                }
                _ => {}
            }
        }
        let unobserved = (0..=u64::MAX)
            .rev()
            .find(|v| !observed.contains(v))
            .unwrap_or(u64::MAX);
        let written = |v: u64| if observed.contains(&v) { v } else { unobserved };
        let ok_steps = ok_ops
            .iter()
            .map(|op| {
                let Completion::Ok { reply, .. } = op.completion else {
                    return OkStep::Mismatched;
                };
                match (op.op, reply) {
                    (Op::Get, Reply::Get(v)) => OkStep::Get(v),
                    (Op::Put(v), Reply::Put) => OkStep::Put(written(v)),
                    (Op::Cas { from, to }, Reply::Cas { applied }) => OkStep::Cas {
                        from,
                        to: written(to),
                        applied,
                    },
                    _ => OkStep::Mismatched,
                }
            })
            .collect();
        let unknown_steps = unknown_ops
            .iter()
            .map(|op| match op.op {
                Op::Put(v) => UnknownStep::Put(written(v)),
                Op::Cas { from, to } => UnknownStep::Cas {
                    from,
                    to: written(to),
                },
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
            unobserved,
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
            unknown_used: 0,
            stack: Vec::new(),
            failed: HashMap::default(),
            steps: 0,
            deepest: None,
        }
    }

    pub(super) fn run(&mut self, steps_max: u64, deadline: Option<Instant>) -> Verdict {
        let mut cursor = Cursor::Enter;
        let mut iterations: u64 = 0;
        loop {
            if self.ok_remaining == 0 {
                return Verdict::Linearizable;
            }
            iterations += 1;
            if self.steps >= steps_max
                || (iterations & 0xfff == 0 && deadline.is_some_and(|d| Instant::now() >= d))
            {
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
        self.unknown_used += 1;
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
                self.unknown_used -= 1;
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

    /// The register's value as the operations wrote it (`value` may be `unobserved`).
    fn value_written(&self) -> Option<u64> {
        if self.value != Some(self.unobserved) {
            return self.value;
        }
        let written = |op: &Operation| match op.op {
            Op::Get => None,
            Op::Put(v) | Op::Cas { to: v, .. } => Some(v),
        };
        self.stack.iter().rev().find_map(|f| match *f {
            Frame::Ok { op, .. } if !self.ok_steps[op as usize].is_read() => {
                written(self.ok_ops[op as usize])
            }
            Frame::Ok { .. } => None,
            Frame::Unknown { index, .. } => written(self.unknown_ops[index]),
        })
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
        snapshot.unknown_linearized = self.unknown_used;
        snapshot.value = self.value_written();
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

    pub(super) fn stuck(&self) -> Stuck {
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
