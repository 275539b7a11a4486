//! YCSB's core workloads A–F (`workloads/workload[a-f]` in YCSB), their operation mix, and the
//! operation chooser (YCSB's `DiscreteGenerator`).
//!
//! | workload | mix | request keys | notes |
//! |---|---|---|---|
//! | A | 50% read, 50% update | zipfian | update-heavy |
//! | B | 95% read, 5% update | zipfian | read-mostly |
//! | C | 100% read | zipfian | read-only |
//! | D | 95% read, 5% insert | latest | read latest |
//! | E | 95% scan, 5% insert | zipfian (scan start) | scan length uniform in 1..=100 |
//! | F | 50% read, 50% read-modify-write | zipfian | |
//!
//! All read every field of a record (`readallfields=true`); updates and read-modify-writes
//! write one field (`writeallfields=false`) unless `--write-all-fields` is given.

use clap::ValueEnum;
use rand::Rng;

use super::keys::RequestDistribution;

/// A workload's name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadName {
    /// 50/50 read/update.
    A,
    /// 95/5 read/update.
    B,
    /// Read only.
    C,
    /// 95/5 read/insert, latest records most popular.
    D,
    /// 95/5 scan/insert, scans of 1..=100 records.
    E,
    /// 50/50 read/read-modify-write.
    F,
}

/// The kinds of transaction a workload issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// Read all fields of one record.
    Read,
    /// Write one field (or all) of an existing record.
    Update,
    /// Write a new record with all fields.
    Insert,
    /// Read a run of consecutive records starting at a chosen key.
    Scan,
    /// Read a record, then update it.
    ReadModifyWrite,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
    ];

    /// YCSB's measurement name (`[READ]`, `[READ-MODIFY-WRITE]`, ...).
    pub fn ycsb_name(self) -> &'static str {
        match self {
            OpKind::Read => "READ",
            OpKind::Update => "UPDATE",
            OpKind::Insert => "INSERT",
            OpKind::Scan => "SCAN",
            OpKind::ReadModifyWrite => "READ-MODIFY-WRITE",
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A workload's definition: YCSB's properties for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Which one.
    pub name: WorkloadName,
    /// `(proportion, kind)` pairs with a positive proportion, in YCSB's order.
    pub mix: Vec<(f64, OpKind)>,
    /// YCSB's `requestdistribution`.
    pub distribution: RequestDistribution,
    /// YCSB's `minscanlength` (scans only).
    pub scan_length_min: u64,
    /// YCSB's `maxscanlength`; scan lengths are uniform in `min..=max`.
    pub scan_length_max: u64,
}

impl Workload {
    /// YCSB's definition of workload `name`.
    pub fn core(name: WorkloadName) -> Self {
        use OpKind::*;
        let (mix, distribution) = match name {
            WorkloadName::A => (
                vec![(0.5, Read), (0.5, Update)],
                RequestDistribution::Zipfian,
            ),
            WorkloadName::B => (
                vec![(0.95, Read), (0.05, Update)],
                RequestDistribution::Zipfian,
            ),
            WorkloadName::C => (vec![(1.0, Read)], RequestDistribution::Zipfian),
            WorkloadName::D => (
                vec![(0.95, Read), (0.05, Insert)],
                RequestDistribution::Latest,
            ),
            WorkloadName::E => (
                vec![(0.05, Insert), (0.95, Scan)],
                RequestDistribution::Zipfian,
            ),
            WorkloadName::F => (
                vec![(0.5, Read), (0.5, ReadModifyWrite)],
                RequestDistribution::Zipfian,
            ),
        };
        Workload {
            name,
            mix,
            distribution,
            scan_length_min: 1,
            scan_length_max: 100,
        }
    }

    /// The share of operations that are inserts (YCSB's `insertproportion`).
    pub fn insert_proportion(&self) -> f64 {
        self.mix
            .iter()
            .filter(|(_, k)| *k == OpKind::Insert)
            .map(|(p, _)| p)
            .sum()
    }

    /// The operation chooser for this workload.
    pub fn chooser(&self) -> OperationChooser {
        OperationChooser::new(&self.mix)
    }

    /// A scan length, uniform in `scan_length_min..=scan_length_max`.
    pub fn scan_length<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        rng.gen_range(self.scan_length_min..=self.scan_length_max)
    }
}

/// Picks the next operation kind with the workload's proportions (YCSB's `DiscreteGenerator`:
/// weights normalised by their sum, one uniform draw walked over them).
#[derive(Debug, Clone)]
pub struct OperationChooser {
    /// Cumulative normalised weights; the last is 1.
    cumulative: Vec<(f64, OpKind)>,
}

impl OperationChooser {
    /// A chooser over `(weight, kind)` pairs; weights need not sum to 1.
    pub fn new(mix: &[(f64, OpKind)]) -> Self {
        let total: f64 = mix.iter().map(|(w, _)| w).sum();
        assert!(total > 0.0, "a workload needs at least one operation");
        let mut sum = 0.0;
        let mut cumulative: Vec<(f64, OpKind)> = mix
            .iter()
            .filter(|(w, _)| *w > 0.0)
            .map(|&(w, k)| {
                sum += w / total;
                (sum, k)
            })
            .collect();
        if let Some(last) = cumulative.last_mut() {
            last.0 = 1.0;
        }
        OperationChooser { cumulative }
    }

    /// The next kind.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> OpKind {
        let u: f64 = rng.r#gen();
        for &(c, kind) in &self.cumulative {
            if u < c {
                return kind;
            }
        }
        self.cumulative[self.cumulative.len() - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Draws `n` operations and returns each kind's share.
    fn shares(w: &Workload, n: u32, seed: u64) -> [f64; 5] {
        let chooser = w.chooser();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = [0u32; 5];
        for _ in 0..n {
            counts[chooser.next(&mut rng).index()] += 1;
        }
        counts.map(|c| f64::from(c) / f64::from(n))
    }

    #[test]
    fn proportions_match_ycsb_definitions() {
        use OpKind::*;
        let n = 200_000;
        // Binomial standard deviation at p = 0.5 and n = 2e5 is 0.0011; 0.005 is > 4 sigma.
        let tolerance = 0.005;
        let expected: [(WorkloadName, &[(OpKind, f64)]); 6] = [
            (WorkloadName::A, &[(Read, 0.5), (Update, 0.5)]),
            (WorkloadName::B, &[(Read, 0.95), (Update, 0.05)]),
            (WorkloadName::C, &[(Read, 1.0)]),
            (WorkloadName::D, &[(Read, 0.95), (Insert, 0.05)]),
            (WorkloadName::E, &[(Scan, 0.95), (Insert, 0.05)]),
            (WorkloadName::F, &[(Read, 0.5), (ReadModifyWrite, 0.5)]),
        ];
        for (seed, (name, want)) in expected.iter().enumerate() {
            let got = shares(&Workload::core(*name), n, seed as u64);
            for kind in OpKind::ALL {
                let w = want
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map_or(0.0, |(_, p)| *p);
                assert!(
                    (got[kind.index()] - w).abs() < tolerance,
                    "workload {name:?} {kind:?}: share {} want {w}",
                    got[kind.index()]
                );
            }
        }
    }

    #[test]
    fn distributions_match_ycsb_definitions() {
        for name in [
            WorkloadName::A,
            WorkloadName::B,
            WorkloadName::C,
            WorkloadName::E,
            WorkloadName::F,
        ] {
            assert_eq!(
                Workload::core(name).distribution,
                RequestDistribution::Zipfian
            );
        }
        assert_eq!(
            Workload::core(WorkloadName::D).distribution,
            RequestDistribution::Latest
        );
        assert_eq!(Workload::core(WorkloadName::D).insert_proportion(), 0.05);
        assert_eq!(Workload::core(WorkloadName::A).insert_proportion(), 0.0);
    }

    #[test]
    fn scan_lengths_are_uniform_in_1_to_100() {
        let w = Workload::core(WorkloadName::E);
        let mut rng = StdRng::seed_from_u64(4);
        let n = 500_000;
        let mut counts = [0u32; 101];
        for _ in 0..n {
            let len = w.scan_length(&mut rng);
            assert!((1..=100).contains(&len), "scan length {len}");
            counts[len as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        // Each length expects 5000 draws (sd 70); every one within 6%, i.e. > 4 sigma.
        for (len, &c) in counts.iter().enumerate().skip(1) {
            assert!((f64::from(c) - 5000.0).abs() < 300.0, "length {len}: {c}");
        }
        // And the mean is 50.5.
        let mean: f64 = counts
            .iter()
            .enumerate()
            .map(|(l, &c)| l as f64 * f64::from(c))
            .sum::<f64>()
            / f64::from(n);
        assert!((mean - 50.5).abs() < 0.2, "mean {mean}");
    }
}
