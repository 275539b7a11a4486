//! Choosing the next compaction.
//!
//! * Level 0 is compacted (all its tables, with the overlapping level-1 tables) once it holds
//!   `l0_compaction_trigger_files` tables: level-0 tables overlap, so every point read checks
//!   each of them.
//! * Level targets are dynamic (RocksDB's `level_compaction_dynamic_level_bytes`): the last
//!   level's target is its actual size, each level above targets `level_size_ratio` times less,
//!   and levels whose target would fall below `level1_size_bytes_max` stay empty. The first
//!   non-empty target is the *base level*, where level 0 is compacted to. So however much data
//!   there is, about `1 - 1/ratio` of it sits in the last level, and space amplification stays
//!   near `1 + 1/(ratio - 1)` (plus level 0 and the memtables).
//! * Level `n >= 1` is compacted once it holds more than its target: one table at a time,
//!   taken round-robin by key, merged with the overlapping tables of level `n+1`.
//! * A table whose entries are mostly tombstones is compacted down even when its level is under
//!   target, so deleted ranges give their space back.
//! * The highest score (size / target) wins. A table with nothing to merge with below is moved
//!   down by a manifest edit alone (a trivial move: nothing is rewritten).

use std::cell::RefCell;
use std::rc::Rc;

use crate::version::{TableFile, Version};

/// The shape of the tree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelTargets {
    pub levels_max: usize,
    pub l0_compaction_trigger_files: usize,
    pub level1_size_bytes_max: u64,
    pub level_size_ratio: u64,
}

/// One engine's compaction picker: the shape of its tree and, per level, where round-robin
/// compaction goes on next.
#[derive(Debug)]
pub(crate) struct Picker {
    targets: LevelTargets,
    cursor: RefCell<Vec<Vec<u8>>>,
}

impl Picker {
    pub(crate) fn new(targets: LevelTargets) -> Picker {
        Picker {
            cursor: RefCell::new(vec![Vec::new(); targets.levels_max]),
            targets,
        }
    }

    /// The next compaction of `v`, moving the round-robin position past it.
    pub(crate) fn next(&self, v: &Version) -> Option<Plan> {
        pick(v, &self.targets, &mut self.cursor.borrow_mut())
    }

    /// Whether a compaction of `v` is due (the round-robin position stays).
    pub(crate) fn is_due(&self, v: &Version) -> bool {
        let mut cursor = self.cursor.borrow().clone();
        pick(v, &self.targets, &mut cursor).is_some()
    }

    /// See [`pending_compaction_bytes`].
    pub(crate) fn pending_bytes(&self, v: &Version) -> u64 {
        pending_compaction_bytes(v, &self.targets)
    }
}

/// Targets computed from the current shape of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    /// The level level 0 compacts into.
    pub base_level: usize,
    /// `target[l]` for l >= 1; 0 for levels above the base level (they should be empty).
    pub target: Vec<u64>,
}

impl LevelTargets {
    /// The dynamic targets for `v` (see the module doc).
    pub(crate) fn compute(&self, v: &Version) -> Targets {
        let last = self.levels_max - 1;
        let mut target = vec![0u64; self.levels_max];
        let largest = (1..self.levels_max)
            .map(|l| v.level_bytes(l))
            .max()
            .unwrap_or(0);
        let mut cur = largest.max(self.level1_size_bytes_max);
        target[last] = cur;
        let mut base_level = last;
        for l in (1..last).rev() {
            cur /= self.level_size_ratio.max(2);
            if cur < self.level1_size_bytes_max {
                break;
            }
            target[l] = cur;
            base_level = l;
        }
        Targets { base_level, target }
    }
}

/// How far level `l` is over its target (>= 1 means it needs compaction).
fn level_score(v: &Version, tg: &Targets, l: usize) -> f64 {
    let bytes = v.level_bytes(l);
    if bytes == 0 {
        return 0.0;
    }
    if tg.target[l] == 0 {
        // Above the base level: everything there should move down.
        return 1000.0;
    }
    bytes as f64 / tg.target[l] as f64
}

/// One compaction to run.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The level read from.
    pub level: usize,
    /// The level written to (`level + 1`, or the base level for level 0).
    pub output_level: usize,
    /// Tables of `level`.
    pub inputs: Vec<Rc<TableFile>>,
    /// Overlapping tables of `output_level`.
    pub next_inputs: Vec<Rc<TableFile>>,
    /// No deeper level holds any key of the range: tombstones can go.
    pub bottommost: bool,
    /// Move `inputs[0]` down without rewriting it.
    pub trivial_move: bool,
    /// Why it was picked (for logs).
    pub reason: &'static str,
}

impl Plan {
    /// Every input table.
    pub(crate) fn all_inputs(&self) -> impl Iterator<Item = &Rc<TableFile>> {
        self.inputs.iter().chain(&self.next_inputs)
    }

    /// Bytes of all inputs.
    pub(crate) fn input_bytes(&self) -> u64 {
        self.all_inputs().map(|t| t.size_bytes()).sum()
    }
}

fn key_range(tables: &[Rc<TableFile>]) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = tables.iter().map(|t| t.smallest()).min()?;
    let hi = tables.iter().map(|t| t.largest()).max()?;
    Some((lo.to_vec(), hi.to_vec()))
}

/// Whether a table is worth compacting for its tombstones alone.
fn tombstone_heavy(t: &TableFile) -> bool {
    t.meta.entries >= 16 && t.meta.tombstones * 2 >= t.meta.entries
}

/// Picks the next compaction, if any level needs one. `cursor[l]` is the largest key of the
/// last table picked from level `l` (round-robin).
pub(crate) fn pick(v: &Version, t: &LevelTargets, cursor: &mut [Vec<u8>]) -> Option<Plan> {
    let last = t.levels_max - 1;
    if v.levels.iter().flatten().any(|f| f.compacting.get()) {
        return None;
    }
    let tg = t.compute(v);
    let mut best: Option<(f64, usize, &'static str)> = None;
    let l0 = v.levels[0].len();
    if l0 >= t.l0_compaction_trigger_files.max(1) {
        best = Some((
            l0 as f64 / t.l0_compaction_trigger_files.max(1) as f64,
            0,
            "level-0 files",
        ));
    }
    for l in 1..last {
        let score = level_score(v, &tg, l);
        if score >= 1.0 && best.is_none_or(|(b, _, _)| score > b) {
            best = Some((score, l, "level size"));
        }
    }
    if best.is_none() {
        // Tombstone-heavy tables that are not yet at the bottom.
        if v.levels[0].iter().any(|f| tombstone_heavy(f)) {
            best = Some((1.0, 0, "tombstones"));
        }
    }
    if best.is_none() {
        for l in 1..last {
            if v.levels[l].iter().any(|f| tombstone_heavy(f)) {
                best = Some((1.0, l, "tombstones"));
                break;
            }
        }
    }
    let (_, level, reason) = best?;
    let inputs: Vec<Rc<TableFile>> = if level == 0 {
        v.levels[0].clone()
    } else {
        let files = &v.levels[level];
        let candidates: Vec<&Rc<TableFile>> = if reason == "tombstones" {
            files.iter().filter(|f| tombstone_heavy(f)).collect()
        } else {
            files.iter().collect()
        };
        let after = &cursor[level];
        let f = candidates
            .iter()
            .find(|f| f.smallest() > after.as_slice())
            .or_else(|| candidates.first())?;
        cursor[level] = f.largest().to_vec();
        vec![(*f).clone()]
    };
    let (lo, hi) = key_range(&inputs)?;
    // Level 0 goes to the base level, or higher if a level above it still holds data (left
    // from when the base was higher): newer data must never land below older data.
    let output_level = if level == 0 {
        (1..tg.base_level)
            .find(|&l| !v.levels[l].is_empty())
            .unwrap_or(tg.base_level)
    } else {
        level + 1
    };
    let next_inputs = v.overlapping(output_level, &lo, &hi);
    let (lo, hi) = key_range(&[inputs.clone(), next_inputs.clone()].concat())?;
    let bottommost =
        (output_level + 1..t.levels_max).all(|l| v.overlapping(l, &lo, &hi).is_empty());
    let trivial_move =
        next_inputs.is_empty() && inputs.len() == 1 && !(bottommost && reason == "tombstones");
    Some(Plan {
        level,
        output_level,
        inputs,
        next_inputs,
        bottommost,
        trivial_move,
        reason,
    })
}

/// Bytes that compactions still have to rewrite to bring every level under its target (an
/// estimate, like RocksDB's `estimated_pending_compaction_bytes`).
pub(crate) fn pending_compaction_bytes(v: &Version, t: &LevelTargets) -> u64 {
    let tg = t.compute(v);
    let mut pending = 0;
    if v.levels[0].len() >= t.l0_compaction_trigger_files.max(1) {
        pending += v.level_bytes(0) + v.level_bytes(tg.base_level);
    }
    for l in 1..t.levels_max - 1 {
        let excess = v.level_bytes(l).saturating_sub(tg.target[l]);
        if excess > 0 {
            // Each byte pushed down is rewritten with about `ratio` bytes of the next level.
            pending += excess.saturating_mul(t.level_size_ratio + 1);
        }
    }
    pending
}
