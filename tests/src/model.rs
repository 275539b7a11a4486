//! The acknowledged history of a crash test, and the check of a restarted server against it.
//!
//! The key space is split in two:
//!
//! - **Owned keys** (`o/<client>/<task>/<i>`): written by one task only, one operation at a
//!   time (puts, deletes, batches, compare-and-sets), so their order is known. Each key keeps
//!   the value last *known* (acknowledged, or read back after a restart) and the writes issued
//!   since whose outcome is *unknown* (the connection broke, or the server answered `io`).
//!   After a restart the key must hold the known value or one of those unknown writes; that
//!   value becomes the known one. A read while the server runs must return the same.
//! - **Shared keys** (`s/<i>`): every task compare-and-sets them concurrently. Every new value
//!   is a unique token, so each value has exactly one writer and the values a key held form a
//!   chain. After a restart the final value, followed back through the writers' `expected`
//!   values, must lead to the value the key had when the cycle began; every acknowledged
//!   successful CAS must be on that chain, no CAS that was refused or answered "mismatch"
//!   may be, and every value a read or a mismatch reported must be on it (it was durable).
//!
//! A violation is recorded with the key and the evidence; the test prints them with its seed.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What a write's reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it is durable.
    Acked,
    /// Refused with a typed error that guarantees nothing changed (`read_only`, `overloaded`,
    /// `shutting_down`).
    Refused,
    /// Unknown: the connection broke, or the server reported an I/O error (the record may have
    /// reached the disk before the failure). It may or may not be applied.
    Unknown,
}

/// A key's value: `None` = absent.
pub type Value = Option<Vec<u8>>;

#[derive(Debug, Default, Clone)]
struct OwnedKey {
    known: Value,
    /// Values of writes since `known` whose outcome is unknown.
    maybe: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CasStatus {
    Acked,
    Unknown,
    /// Answered "mismatch" or refused: it must not have applied.
    NotApplied,
}

#[derive(Debug, Default, Clone)]
struct SharedKey {
    /// The value when the cycle began (known).
    start: Value,
    /// token -> (expected value, status) of every CAS that tried to write it this cycle.
    writers: HashMap<Vec<u8>, (Value, CasStatus)>,
    /// Values reported durable this cycle (reads, mismatches).
    observed: Vec<Value>,
}

/// Totals over a whole test.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Writes (single operations, batch members, compare-and-sets) acknowledged.
    pub writes_acked: u64,
    /// Writes refused with a typed error.
    pub writes_refused: u64,
    /// Writes with an unknown outcome.
    pub writes_unknown: u64,
    /// Reads checked while the server ran.
    pub reads_checked: u64,
    /// Compare-and-sets answered "mismatch".
    pub cas_mismatches: u64,
    /// Key values checked after restarts.
    pub keys_verified: u64,
    /// Acknowledged writes whose survival a restart check covered.
    pub acked_writes_verified: u64,
    /// Unknown writes found applied after a restart.
    pub unknown_found_applied: u64,
    /// Violations found (must be 0).
    pub violations: u64,
}

/// The history of one test's key space.
#[derive(Debug, Default)]
pub struct Model {
    owned: BTreeMap<Vec<u8>, OwnedKey>,
    shared: BTreeMap<Vec<u8>, SharedKey>,
    /// Acknowledged writes since the last check.
    acked_since_check: u64,
    totals: Totals,
    violations: Vec<String>,
}

/// The name of owned key `i` of task `task` of client `client`.
pub fn owned_key(client: usize, task: usize, i: usize) -> Vec<u8> {
    format!("o/{client:02}/{task:02}/{i:04}").into_bytes()
}

/// The name of shared key `i`.
pub fn shared_key(i: usize) -> Vec<u8> {
    format!("s/{i:04}").into_bytes()
}

fn show(v: &Value) -> String {
    match v {
        None => "<absent>".to_string(),
        Some(v) => {
            let s = String::from_utf8_lossy(v);
            // Values carry padding; their identity is in the first bytes.
            match s.find('#') {
                Some(end) => format!("{:?}(+{}B)", &s[..end], v.len() - end),
                None => format!("{s:?}"),
            }
        }
    }
}

impl Model {
    /// A model of `clients` × `tasks` × `keys_per_task` owned keys and `shared_keys` shared
    /// keys, all absent.
    pub fn new(clients: usize, tasks: usize, keys_per_task: usize, shared_keys: usize) -> Model {
        let mut m = Model::default();
        for c in 0..clients {
            for t in 0..tasks {
                for i in 0..keys_per_task {
                    m.owned.insert(owned_key(c, t, i), OwnedKey::default());
                }
            }
        }
        for i in 0..shared_keys {
            m.shared.insert(shared_key(i), SharedKey::default());
        }
        m
    }

    /// Every key of the model, owned then shared.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.owned
            .keys()
            .chain(self.shared.keys())
            .cloned()
            .collect()
    }

    /// Whether `key` belongs to the model.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.owned.contains_key(key) || self.shared.contains_key(key)
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        let mut t = self.totals;
        t.violations = self.violations.len() as u64;
        t
    }

    /// Violations found so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    fn violation(&mut self, text: String) {
        self.violations.push(text);
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Acked => {
                self.totals.writes_acked += 1;
                self.acked_since_check += 1;
            }
            Outcome::Refused => self.totals.writes_refused += 1,
            Outcome::Unknown => self.totals.writes_unknown += 1,
        }
    }

    /// The value of an owned key that its (only) writer can rely on: None while writes of
    /// unknown outcome are pending.
    pub fn owned_certain(&self, key: &[u8]) -> Option<Value> {
        let k = self.owned.get(key)?;
        k.maybe.is_empty().then(|| k.known.clone())
    }

    /// Records a write (put: `Some`, delete: `None`) of an owned key.
    pub fn owned_write(&mut self, key: &[u8], value: Value, outcome: Outcome) {
        self.count(outcome);
        let k = self.owned.entry(key.to_vec()).or_default();
        match outcome {
            Outcome::Acked => {
                k.known = value;
                k.maybe.clear();
            }
            Outcome::Unknown => k.maybe.push(value),
            Outcome::Refused => {}
        }
    }

    /// Records a read of an owned key by its writer while the server ran.
    pub fn owned_read(&mut self, key: &[u8], got: &Value, context: &str) {
        self.totals.reads_checked += 1;
        let k = self.owned.get(key).cloned().unwrap_or_default();
        if *got != k.known && !k.maybe.contains(got) {
            self.violation(format!(
                "{context}: read of {} returned {} but the last acknowledged write left {} \
                 (unknown writes since: {})",
                String::from_utf8_lossy(key),
                show(got),
                show(&k.known),
                k.maybe.iter().map(show).collect::<Vec<_>>().join(", ")
            ));
        }
    }

    /// Records a compare-and-set of an owned key issued when the writer knew its value
    /// (`expected_ok`: whether `expected` was that value). `applied` is None when the
    /// outcome is unknown or refused.
    #[allow(clippy::too_many_arguments)]
    pub fn owned_cas(
        &mut self,
        key: &[u8],
        expected_ok: bool,
        new: Value,
        outcome: Outcome,
        applied: Option<bool>,
        current: &Value,
        context: &str,
    ) {
        match (outcome, applied) {
            (Outcome::Acked, Some(true)) => {
                if !expected_ok {
                    self.violation(format!(
                        "{context}: CAS on {} with a wrong expected value succeeded",
                        String::from_utf8_lossy(key)
                    ));
                }
                self.owned_write(key, new, Outcome::Acked);
            }
            (Outcome::Acked, Some(false)) => {
                self.totals.cas_mismatches += 1;
                let known = self.owned.get(key).map(|k| k.known.clone()).unwrap_or(None);
                if expected_ok {
                    self.violation(format!(
                        "{context}: CAS on {} expecting its acknowledged value {} failed, \
                         reporting {}",
                        String::from_utf8_lossy(key),
                        show(&known),
                        show(current)
                    ));
                } else if *current != known {
                    self.violation(format!(
                        "{context}: CAS mismatch on {} reported {} but the key holds {}",
                        String::from_utf8_lossy(key),
                        show(current),
                        show(&known)
                    ));
                }
            }
            (outcome, _) => self.owned_write(key, new, outcome),
        }
    }

    /// The value a shared key had at the start of the cycle.
    pub fn shared_start(&self, key: &[u8]) -> Value {
        self.shared.get(key).and_then(|k| k.start.clone())
    }

    /// Records a compare-and-set of a shared key: `expected` -> `token` (always a put of a
    /// fresh token). `applied`: Some(true) succeeded, Some(false) mismatch with `current`,
    /// None refused or unknown (see `outcome`).
    pub fn shared_cas(
        &mut self,
        key: &[u8],
        expected: Value,
        token: Vec<u8>,
        outcome: Outcome,
        applied: Option<bool>,
        current: Value,
    ) {
        let status = match (outcome, applied) {
            (Outcome::Acked, Some(true)) => {
                self.count(Outcome::Acked);
                CasStatus::Acked
            }
            (Outcome::Acked, Some(false)) => {
                self.totals.cas_mismatches += 1;
                CasStatus::NotApplied
            }
            (Outcome::Refused, _) => {
                self.count(Outcome::Refused);
                CasStatus::NotApplied
            }
            (_, _) => {
                self.count(Outcome::Unknown);
                CasStatus::Unknown
            }
        };
        let k = self.shared.entry(key.to_vec()).or_default();
        if applied == Some(false) {
            k.observed.push(current);
        }
        k.writers.insert(token, (expected, status));
    }

    /// Records a read of a shared key while the server ran.
    pub fn shared_read(&mut self, key: &[u8], got: Value) {
        self.totals.reads_checked += 1;
        self.shared
            .entry(key.to_vec())
            .or_default()
            .observed
            .push(got);
    }

    /// Checks the values read from a restarted server (`found[key]`, absent keys missing or
    /// None) against the history, then makes them the known state. `scanned` is what a full
    /// scan returned: it must hold exactly the present keys with the same values.
    pub fn check_restart(
        &mut self,
        found: &BTreeMap<Vec<u8>, Value>,
        scanned: &[(Vec<u8>, Vec<u8>)],
        context: &str,
    ) {
        let mut bad = Vec::new();
        for (key, k) in &mut self.owned {
            let got = found.get(key).cloned().flatten();
            if got != k.known && !k.maybe.contains(&got) {
                bad.push(format!(
                    "{context}: {} holds {} but the last acknowledged write left {} (unknown \
                     writes since: {})",
                    String::from_utf8_lossy(key),
                    show(&got),
                    show(&k.known),
                    k.maybe.iter().map(show).collect::<Vec<_>>().join(", ")
                ));
            } else if got != k.known {
                self.totals.unknown_found_applied += 1;
            }
            k.known = got;
            k.maybe.clear();
        }
        for (key, k) in &mut self.shared {
            let got = found.get(key).cloned().flatten();
            let name = String::from_utf8_lossy(key).to_string();
            match chain(&k.start, &got, &k.writers) {
                Err(why) => bad.push(format!("{context}: shared key {name}: {why}")),
                Ok(path) => {
                    for (token, (_, status)) in &k.writers {
                        let on = path.contains(token);
                        if *status == CasStatus::Acked && !on {
                            bad.push(format!(
                                "{context}: shared key {name}: acknowledged CAS to {} is lost \
                                 (the key holds {})",
                                show(&Some(token.clone())),
                                show(&got)
                            ));
                        }
                        if *status == CasStatus::Unknown && on {
                            self.totals.unknown_found_applied += 1;
                        }
                    }
                    for seen in &k.observed {
                        let on =
                            *seen == k.start || seen.as_ref().is_some_and(|t| path.contains(t));
                        if !on {
                            bad.push(format!(
                                "{context}: shared key {name}: {} was read while the server \
                                 ran but is not in the key's history up to {}",
                                show(seen),
                                show(&got)
                            ));
                        }
                    }
                }
            }
            k.start = got;
            k.writers.clear();
            k.observed.clear();
        }
        let present: BTreeMap<&Vec<u8>, &Vec<u8>> = found
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .collect();
        let scanned_map: BTreeMap<&Vec<u8>, &Vec<u8>> =
            scanned.iter().map(|(k, v)| (k, v)).collect();
        if scanned_map.len() != scanned.len() {
            bad.push(format!("{context}: a scan returned a key twice"));
        }
        for w in scanned.windows(2) {
            if w[0].0 >= w[1].0 {
                bad.push(format!("{context}: a scan returned keys out of order"));
                break;
            }
        }
        for (k, v) in &scanned_map {
            if !self.owned.contains_key(*k) && !self.shared.contains_key(*k) {
                bad.push(format!(
                    "{context}: a scan returned {}, a key nobody wrote",
                    String::from_utf8_lossy(k)
                ));
            } else if present.get(k) != Some(v) {
                bad.push(format!(
                    "{context}: a scan returned {} = {} but a read returned {}",
                    String::from_utf8_lossy(k),
                    show(&Some((*v).clone())),
                    show(&present.get(k).map(|v| (*v).clone()))
                ));
            }
        }
        for k in present.keys() {
            if !scanned_map.contains_key(k) {
                bad.push(format!(
                    "{context}: a scan missed {}, which a read found",
                    String::from_utf8_lossy(k)
                ));
            }
        }
        self.totals.keys_verified += (self.owned.len() + self.shared.len()) as u64;
        self.totals.acked_writes_verified += self.acked_since_check;
        self.acked_since_check = 0;
        for b in bad {
            self.violation(b);
        }
    }
}

/// Follows `end` back through the writers' expected values to `start`; returns the tokens on
/// the way, or why that is impossible.
fn chain(
    start: &Value,
    end: &Value,
    writers: &HashMap<Vec<u8>, (Value, CasStatus)>,
) -> Result<HashSet<Vec<u8>>, String> {
    let mut path = HashSet::new();
    let mut cur = end.clone();
    while cur != *start {
        let Some(token) = cur.clone() else {
            return Err(format!(
                "it is absent, but it held {} and no CAS deletes shared keys",
                show(start)
            ));
        };
        let Some((expected, status)) = writers.get(&token) else {
            return Err(format!(
                "it holds {}, which no CAS of this cycle wrote (the cycle began with {})",
                show(&cur),
                show(start)
            ));
        };
        if *status == CasStatus::NotApplied {
            return Err(format!(
                "it holds {}, written by a CAS that was answered \"mismatch\" or refused",
                show(&cur)
            ));
        }
        if !path.insert(token) {
            return Err("its history has a cycle".to_string());
        }
        cur = expected.clone();
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Some(s.as_bytes().to_vec())
    }

    fn found(pairs: &[(&[u8], Value)]) -> BTreeMap<Vec<u8>, Value> {
        pairs.iter().map(|(k, v)| (k.to_vec(), v.clone())).collect()
    }

    fn scan_of(f: &BTreeMap<Vec<u8>, Value>) -> Vec<(Vec<u8>, Vec<u8>)> {
        f.iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    #[test]
    fn owned_keys_accept_the_last_ack_or_an_unknown_write_and_nothing_else() {
        let k = owned_key(0, 0, 0);
        let mut m = Model::new(1, 1, 1, 0);
        m.owned_write(&k, v("a"), Outcome::Acked);
        m.owned_write(&k, v("b"), Outcome::Refused);
        m.owned_write(&k, v("c"), Outcome::Unknown);
        for (got, ok) in [
            (v("a"), true),
            (v("c"), true),
            (v("b"), false),
            (None, false),
        ] {
            let mut m2 = Model::new(1, 1, 1, 0);
            m2.owned_write(&k, v("a"), Outcome::Acked);
            m2.owned_write(&k, v("b"), Outcome::Refused);
            m2.owned_write(&k, v("c"), Outcome::Unknown);
            let f = found(&[(&k, got.clone())]);
            m2.check_restart(&f, &scan_of(&f), "t");
            assert_eq!(
                m2.violations().is_empty(),
                ok,
                "{got:?}: {:?}",
                m2.violations()
            );
        }
        // A delete that was acknowledged must stay deleted.
        m.owned_write(&k, None, Outcome::Acked);
        let f = found(&[(&k, v("a"))]);
        m.check_restart(&f, &scan_of(&f), "t");
        assert_eq!(m.violations().len(), 1);
    }

    #[test]
    fn shared_keys_follow_the_cas_chain() {
        let k = shared_key(0);
        let setup = || {
            let mut m = Model::new(0, 0, 0, 1);
            m.shared_cas(&k, None, b"t1".to_vec(), Outcome::Acked, Some(true), None);
            m.shared_cas(
                &k,
                None,
                b"x1".to_vec(),
                Outcome::Acked,
                Some(false),
                v("t1"),
            );
            m.shared_cas(&k, v("t1"), b"t2".to_vec(), Outcome::Unknown, None, None);
            m.shared_cas(&k, v("t2"), b"t3".to_vec(), Outcome::Unknown, None, None);
            m
        };
        for (end, ok) in [
            (v("t1"), true),
            (v("t2"), true),
            (v("t3"), true),
            (None, false),
            (v("x1"), false),
            (v("zz"), false),
        ] {
            let mut m = setup();
            let f = found(&[(&k, end.clone())]);
            m.check_restart(&f, &scan_of(&f), "t");
            assert_eq!(
                m.violations().is_empty(),
                ok,
                "{end:?}: {:?}",
                m.violations()
            );
        }
        // An observed value must be on the final chain.
        let mut m = setup();
        m.shared_read(&k, v("t2"));
        let f = found(&[(&k, v("t1"))]);
        m.check_restart(&f, &scan_of(&f), "t");
        assert_eq!(m.violations().len(), 1, "{:?}", m.violations());
        // The next cycle starts from what was found.
        let mut m = setup();
        let f = found(&[(&k, v("t3"))]);
        m.check_restart(&f, &scan_of(&f), "t");
        m.shared_cas(
            &k,
            v("t3"),
            b"t4".to_vec(),
            Outcome::Acked,
            Some(true),
            None,
        );
        let f = found(&[(&k, v("t4"))]);
        m.check_restart(&f, &scan_of(&f), "t");
        assert!(m.violations().is_empty(), "{:?}", m.violations());
        assert_eq!(m.totals().unknown_found_applied, 2);
    }

    #[test]
    fn scans_must_agree_with_reads_and_hold_only_known_keys() {
        let k = owned_key(0, 0, 0);
        let mut m = Model::new(1, 1, 1, 0);
        m.owned_write(&k, v("a"), Outcome::Acked);
        let f = found(&[(&k, v("a"))]);
        let mut scan = scan_of(&f);
        scan.push((b"zz-phantom".to_vec(), b"x".to_vec()));
        m.check_restart(&f, &scan, "t");
        assert_eq!(m.violations().len(), 1, "{:?}", m.violations());
        let mut m = Model::new(1, 1, 1, 0);
        m.owned_write(&k, v("a"), Outcome::Acked);
        m.check_restart(&f, &[], "t");
        assert_eq!(m.violations().len(), 1, "{:?}", m.violations());
    }

    #[test]
    fn owned_cas_outcomes_must_match_what_the_writer_knows() {
        let k = owned_key(0, 0, 0);
        let mut m = Model::new(1, 1, 1, 0);
        m.owned_write(&k, v("a"), Outcome::Acked);
        m.owned_cas(&k, true, v("b"), Outcome::Acked, Some(true), &None, "t");
        m.owned_cas(&k, false, v("c"), Outcome::Acked, Some(false), &v("b"), "t");
        assert!(m.violations().is_empty(), "{:?}", m.violations());
        m.owned_cas(&k, true, v("d"), Outcome::Acked, Some(false), &v("b"), "t");
        m.owned_cas(
            &k,
            false,
            v("e"),
            Outcome::Acked,
            Some(false),
            &v("zz"),
            "t",
        );
        m.owned_cas(&k, false, v("f"), Outcome::Acked, Some(true), &None, "t");
        assert_eq!(m.violations().len(), 3, "{:?}", m.violations());
    }
}
