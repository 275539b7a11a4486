//! Key names and key choosers, as YCSB's `CoreWorkload` builds them.
//!
//! - Key names: `"user" + decimal(fnvhash64(keynum))`, YCSB's `buildKeyName` with
//!   `insertorder=hashed` (its default: `orderedinserts=false`) and `zeropadding=1`. Inserting
//!   key numbers 0, 1, 2, ... therefore writes keys in a scattered order.
//! - Request keys: a scrambled Zipfian (workloads A, B, C, E, F) over the loaded records plus
//!   room for twice the expected inserts, or `latest` (workload D); a chosen key number that is
//!   not yet acknowledged by the insert counter is drawn again (YCSB's `nextKeynum`).

use std::io::Write;

use rand::Rng;

use super::counter::AcknowledgedCounter;
use super::latest::SkewedLatest;
use super::zipfian::{ScrambledZipfian, ycsb_fnvhash64};

/// Writes the key of record `keynum` into `out` (cleared first).
pub fn key_name(keynum: u64, out: &mut Vec<u8>) {
    out.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "user{}", ycsb_fnvhash64(keynum));
}

/// How request keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDistribution {
    /// YCSB's `zipfian`: a scrambled Zipfian with constant 0.99.
    Zipfian,
    /// YCSB's `latest`: recently inserted records are the most popular.
    Latest,
}

/// One thread's request-key chooser.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Scrambled Zipfian over `0..items`.
    Zipfian(ScrambledZipfian),
    /// Skewed towards the newest acknowledged record.
    Latest(SkewedLatest),
}

/// Draws before giving up on finding an acknowledged key number (a guard against a
/// misconfigured key space; with YCSB's sizing a draw is rejected far less than half the time).
const MAX_DRAWS: u32 = 1_000_000;

impl KeyChooser {
    /// A chooser for `records` loaded records and `expected_inserts` inserts to come (YCSB sizes
    /// the Zipfian's key space as `records + 2 * expected_inserts + 1` so the popular keys stay
    /// the same as the table grows).
    pub fn new(distribution: RequestDistribution, records: u64, expected_inserts: u64) -> Self {
        match distribution {
            RequestDistribution::Zipfian => {
                KeyChooser::Zipfian(ScrambledZipfian::new(records + 2 * expected_inserts + 1))
            }
            RequestDistribution::Latest => {
                KeyChooser::Latest(SkewedLatest::new(records.saturating_sub(1)))
            }
        }
    }

    /// The next key number; always below `inserted.acknowledged_below()`.
    pub fn next<R: Rng + ?Sized>(&mut self, inserted: &AcknowledgedCounter, rng: &mut R) -> u64 {
        let below = inserted.acknowledged_below();
        assert!(below >= 1, "no record is loaded");
        match self {
            KeyChooser::Zipfian(z) => {
                for _ in 0..MAX_DRAWS {
                    let k = z.next(rng);
                    if k < below {
                        return k;
                    }
                }
                // Only reachable when almost all of the key space is not yet inserted.
                rng.gen_range(0..below)
            }
            KeyChooser::Latest(l) => l.next(below - 1, rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn key_names_are_ycsb_hashed_decimal() {
        let mut k = Vec::new();
        key_name(0, &mut k);
        // fnvhash64(0) = |FNV-1a over eight zero bytes| as a Java long.
        let h = corekv_proto::shard::fnv1a64(&[0u8; 8]);
        assert_eq!(k, format!("user{}", (h as i64).unsigned_abs()).into_bytes());
        key_name(1, &mut k);
        let h1 = corekv_proto::shard::fnv1a64(&1u64.to_le_bytes());
        assert_eq!(
            k,
            format!("user{}", (h1 as i64).unsigned_abs()).into_bytes()
        );
        // Distinct numbers give distinct keys (no collision in the first 10^5).
        let mut seen = std::collections::HashSet::new();
        for n in 0..100_000 {
            key_name(n, &mut k);
            assert!(seen.insert(k.clone()), "collision at {n}");
        }
    }

    #[test]
    fn zipfian_requests_never_target_unacknowledged_records() {
        let records = 1000;
        let counter = AcknowledgedCounter::new(records);
        // Key space sized for 500 inserts: 2001 items, over half not yet inserted.
        let mut chooser = KeyChooser::new(RequestDistribution::Zipfian, records, 500);
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..20_000 {
            assert!(chooser.next(&counter, &mut rng) < records);
        }
        // After 200 acknowledged inserts, the new records become reachable.
        for _ in 0..200 {
            let v = counter.next();
            counter.acknowledge(v).unwrap();
        }
        let reached_new = (0..50_000)
            .map(|_| chooser.next(&counter, &mut rng))
            .inspect(|&k| assert!(k < records + 200))
            .filter(|&k| k >= records)
            .count();
        assert!(reached_new > 0, "new records are never requested");
    }

    #[test]
    fn latest_requests_follow_the_acknowledged_limit() {
        let records = 100;
        let counter = AcknowledgedCounter::new(records);
        let mut chooser = KeyChooser::new(RequestDistribution::Latest, records, 0);
        let mut rng = StdRng::seed_from_u64(2);
        let v = counter.next(); // in flight, not acknowledged
        for _ in 0..1000 {
            assert!(chooser.next(&counter, &mut rng) < records);
        }
        counter.acknowledge(v).unwrap();
        let hits = (0..1000)
            .filter(|_| chooser.next(&counter, &mut rng) == v)
            .count();
        // The newest record gets 1/zeta(100) = 19% of requests.
        assert!(hits > 120, "newest record chosen {hits} times in 1000");
    }
}
