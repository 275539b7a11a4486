//! YCSB's `latest` request distribution (`SkewedLatestGenerator`), used by workload D: the most
//! recently inserted records are the most popular.
//!
//! With `max` the highest acknowledged key number, the next key number is
//! `max - zipfian(max)`, the Zipfian (constant 0.99) over `0..max` growing with `max` as inserts
//! complete. As in YCSB, the result lies in `1..=max`: key number 0 is never chosen (once there
//! is more than one record).

use rand::Rng;

use super::zipfian::{ZIPFIAN_CONSTANT, Zipfian};

/// Per-thread `latest` chooser.
#[derive(Debug, Clone)]
pub struct SkewedLatest {
    zipfian: Zipfian,
}

impl SkewedLatest {
    /// A chooser for a table whose highest acknowledged key number is `max` (YCSB builds its
    /// Zipfian over `max` items at this point, which fixes its `eta`).
    pub fn new(max: u64) -> Self {
        SkewedLatest {
            zipfian: Zipfian::new(max.max(1), ZIPFIAN_CONSTANT),
        }
    }

    /// The next key number, given the highest acknowledged key number `max`.
    pub fn next<R: Rng + ?Sized>(&mut self, max: u64, rng: &mut R) -> u64 {
        if max == 0 {
            return 0;
        }
        max - self.zipfian.next_with_items(max, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ycsb::zipfian::zeta;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn newest_records_are_the_most_popular() {
        let max = 9_999;
        let mut latest = SkewedLatest::new(max);
        let mut rng = StdRng::seed_from_u64(3);
        let samples = 300_000;
        let mut counts = vec![0u64; max as usize + 1];
        for _ in 0..samples {
            let k = latest.next(max, &mut rng);
            assert!((1..=max).contains(&k), "key number {k} outside 1..={max}");
            counts[k as usize] += 1;
        }
        // The newest record gets 1/zeta(max) of the requests (Gray's method is exact there),
        // the next newest 1/(2^0.99 zeta(max)); tolerance 5% and 8% of those shares.
        let zetan = zeta(max, ZIPFIAN_CONSTANT);
        for (age, tolerance) in [(0u64, 0.05), (1, 0.08)] {
            let want = 1.0 / ((age + 1) as f64).powf(ZIPFIAN_CONSTANT) / zetan;
            let got = counts[(max - age) as usize] as f64 / f64::from(samples);
            assert!(
                (got - want).abs() / want < tolerance,
                "age {age}: share {got:.4}, theory {want:.4}"
            );
        }
        // Recency: the newest 10% of records take about zeta(1000)/zeta(9999) = 77% of the
        // requests, the oldest half about 7%.
        let newest: u64 = counts[(max as usize - 999)..].iter().sum();
        let oldest: u64 = counts[..(max as usize / 2)].iter().sum();
        let newest_share = newest as f64 / f64::from(samples);
        let oldest_share = oldest as f64 / f64::from(samples);
        assert!(
            (0.70..0.84).contains(&newest_share),
            "newest 10%: {newest_share}"
        );
        assert!(oldest_share < 0.12, "oldest half: {oldest_share}");
    }

    #[test]
    fn follows_the_growing_table() {
        // As inserts complete, the newest record's share must fall as 1/zeta(max): zeta is
        // extended as the table grows. A zeta stuck at the initial 1000 items would give it
        // 1/zeta(1000) = 13.3% instead of about 10%.
        let mut latest = SkewedLatest::new(1000);
        let mut rng = StdRng::seed_from_u64(5);
        let (mut newest_hits, mut expected) = (0u32, 0.0f64);
        let mut zetan = zeta(999, ZIPFIAN_CONSTANT);
        for max in 1000..41_000u64 {
            zetan += 1.0 / (max as f64).powf(ZIPFIAN_CONSTANT);
            expected += 1.0 / zetan;
            let k = latest.next(max, &mut rng);
            assert!((1..=max).contains(&k));
            if k == max {
                newest_hits += 1;
            }
        }
        let got = f64::from(newest_hits);
        assert!(
            (got - expected).abs() / expected < 0.06,
            "newest record chosen {got} times, expected {expected:.0}"
        );
    }

    #[test]
    fn single_record_table() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(SkewedLatest::new(0).next(0, &mut rng), 0);
        // Two records (0 and 1): YCSB's formula only ever picks the newest.
        assert_eq!(SkewedLatest::new(1).next(1, &mut rng), 1);
    }
}
