//! CPU lists in the kernel's own syntax (`0-3,8,10-11`), as used by `--cores`, `/sys` and
//! `taskset`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The largest CPU id accepted; guards against a typo turning into a huge allocation.
pub const CPU_ID_MAX: usize = 4095;

/// An ordered set of CPU ids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuSet(BTreeSet<usize>);

impl CpuSet {
    /// The CPU ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    /// How many CPUs are in the set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// The CPUs for node `index` (from 0) of several started on this machine, each with
    /// `shards` shards: the `shards` CPUs of this set after the earlier nodes' ones, wrapping
    /// around, so the nodes share the CPUs evenly (with `--shards` alone every node would pin
    /// its shards to the same first CPUs). `None` when the set has fewer than `shards`.
    pub fn for_local_node(&self, index: usize, shards: usize) -> Option<CpuSet> {
        let cpus: Vec<usize> = self.iter().collect();
        if shards == 0 || shards > cpus.len() {
            return None;
        }
        let first = index * shards;
        Some(
            (first..first + shards)
                .map(|i| cpus[i % cpus.len()])
                .collect(),
        )
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

/// A CPU list that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU list {text:?}: {reason} (expected e.g. `0-3,8,10-11`)")]
pub struct CpuSetError {
    text: String,
    reason: String,
}

impl FromStr for CpuSet {
    type Err = CpuSetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CpuSetError {
            text: text.to_string(),
            reason,
        };
        let mut set = BTreeSet::new();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(CpuSet(set));
        }
        for part in trimmed.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo, hi),
                None => (part, part),
            };
            let parse = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| err(format!("{s:?} is not a CPU number")))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(err(format!("range {lo}-{hi} is backwards")));
            }
            if hi > CPU_ID_MAX {
                return Err(err(format!("CPU {hi} is above the maximum {CPU_ID_MAX}")));
            }
            set.extend(lo..=hi);
        }
        Ok(CpuSet(set))
    }
}

impl fmt::Display for CpuSet {
    /// Prints the shortest kernel-style list, e.g. `0-3,8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_syntax() {
        let s: CpuSet = "0-3,8,10-11".parse().unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(s.to_string(), "0-3,8,10-11");
        assert_eq!("5".parse::<CpuSet>().unwrap().to_string(), "5");
        assert_eq!(" 1 , 0 \n".parse::<CpuSet>().unwrap().to_string(), "0-1");
        assert!("".parse::<CpuSet>().unwrap().is_empty());
    }

    #[test]
    fn local_nodes_share_the_cpus_evenly() {
        let node = |set: &str, index, shards| {
            let set: CpuSet = set.parse().unwrap();
            set.for_local_node(index, shards).map(|s| s.to_string())
        };
        let two: Vec<_> = (0..3).map(|i| node("0-1", i, 1).unwrap()).collect();
        assert_eq!(two, ["0", "1", "0"]);
        let four: Vec<_> = (0..3).map(|i| node("0-3", i, 2).unwrap()).collect();
        assert_eq!(four, ["0-1", "2-3", "0-1"]);
        // Three shards over four CPUs: each node's are distinct, wrapping around.
        let wrap: Vec<_> = (0..3).map(|i| node("0-3", i, 3).unwrap()).collect();
        assert_eq!(wrap, ["0-2", "0-1,3", "0,2-3"]);
        // The set's own CPUs, not 0..n (a process under `taskset`).
        assert_eq!(node("2,5", 1, 1).as_deref(), Some("5"));
        assert_eq!(node("0-1", 0, 3), None);
        assert_eq!(node("0-1", 0, 0), None);
    }

    #[test]
    fn rejects_bad_lists_with_the_reason() {
        for (bad, why) in [
            ("3-1", "backwards"),
            ("a", "not a CPU number"),
            ("0-", "not a CPU number"),
            ("1,,2", "not a CPU number"),
            ("0-99999", "above the maximum"),
        ] {
            let e = bad.parse::<CpuSet>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
