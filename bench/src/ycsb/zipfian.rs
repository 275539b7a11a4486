//! YCSB's Zipfian generators, with YCSB's exact definitions so that corekv's figures can be put
//! beside published YCSB results.
//!
//! - [`Zipfian`]: Gray et al., "Quickly Generating Billion-Record Synthetic Databases" (SIGMOD
//!   1994), as in YCSB's `ZipfianGenerator`: item 0 is the most popular.
//! - [`ScrambledZipfian`]: YCSB's `ScrambledZipfianGenerator`: a Zipfian over a huge item space
//!   (10^10 items, its zeta precomputed) hashed with FNV-1a 64 onto `0..items`, so the popular
//!   items are spread over the key space instead of clustered at its start.

use rand::Rng;

/// YCSB's default Zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// Item count of the Zipfian behind [`ScrambledZipfian`] (YCSB's `ITEM_COUNT`).
const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;
/// zeta(10^10, 0.99), as precomputed in YCSB's `ScrambledZipfianGenerator.ZETAN`.
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// zeta(n, theta) = sum over i in 1..=n of 1 / i^theta.
pub fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// Zipfian over `0..items`, item 0 most popular.
#[derive(Debug, Clone)]
pub struct Zipfian {
    /// Item count at construction: YCSB's `eta` keeps using it after the count grows.
    items: u64,
    /// Item count `zetan` was summed up to (YCSB's `countforzeta`).
    items_for_zeta: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    zeta2: f64,
    eta: f64,
}

impl Zipfian {
    /// A Zipfian over `0..items` with constant `theta` (0 < theta < 1). Computes zeta(items), which
    /// is linear in `items`.
    pub fn new(items: u64, theta: f64) -> Self {
        Self::with_zetan(items, theta, zeta(items, theta))
    }

    /// As [`Zipfian::new`], with zeta(items, theta) already known.
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Self {
        assert!(items >= 1, "a Zipfian needs at least one item");
        assert!(
            theta > 0.0 && theta < 1.0,
            "Zipfian constant must be in (0, 1)"
        );
        let zeta2 = zeta(2.min(items), theta);
        Zipfian {
            items,
            items_for_zeta: items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            zeta2,
            eta: Self::eta(items, theta, zeta2, zetan),
        }
    }

    fn eta(items: u64, theta: f64, zeta2: f64, zetan: f64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
    }

    /// Number of items.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The next item, in `0..items`.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.r#gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let v = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.items - 1)
    }

    /// The next item in `0..items`, for an item count that may have grown since the last call
    /// (YCSB's `ZipfianGenerator.nextLong(itemcount)`, used by the `latest` distribution).
    ///
    /// When `items` grew, zeta is extended incrementally (cost linear in the growth only) and
    /// `eta` recomputed; as in YCSB, `eta` keeps the item count given at construction. A count
    /// smaller than before keeps the larger zeta, as YCSB does (`allowitemcountdecrease=false`).
    pub fn next_with_items<R: Rng + ?Sized>(&mut self, items: u64, rng: &mut R) -> u64 {
        assert!(items >= 1, "a Zipfian needs at least one item");
        if items > self.items_for_zeta {
            self.zetan += ((self.items_for_zeta + 1)..=items)
                .map(|i| 1.0 / (i as f64).powf(self.theta))
                .sum::<f64>();
            self.items_for_zeta = items;
            self.eta = Self::eta(self.items, self.theta, self.zeta2, self.zetan);
        }
        let u: f64 = rng.r#gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(items - 1);
        }
        let v = (items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(items - 1)
    }
}

/// YCSB's 64-bit FNV hash of a `long`, as in `Utils.fnvhash64`: FNV-1a over the 8 bytes,
/// least significant first, then the absolute value as a Java `long`.
pub fn ycsb_fnvhash64(mut val: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..8 {
        h ^= val & 0xff;
        val >>= 8;
        h = h.wrapping_mul(1_099_511_628_211);
    }
    // Java's Math.abs(Long.MIN_VALUE) is Long.MIN_VALUE; `% items` then sees it as negative.
    // We keep the magnitude instead: the one affected input in 2^64 changes nothing measurable.
    (h as i64).unsigned_abs()
}

/// YCSB's scrambled Zipfian over `0..items`.
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    items: u64,
    inner: Zipfian,
}

impl ScrambledZipfian {
    /// A scrambled Zipfian over `0..items` with YCSB's constant 0.99.
    pub fn new(items: u64) -> Self {
        assert!(items >= 1, "a Zipfian needs at least one item");
        ScrambledZipfian {
            items,
            inner: Zipfian::with_zetan(SCRAMBLED_ITEM_COUNT, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }

    /// The next item, in `0..items`.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        ycsb_fnvhash64(self.inner.next(rng)) % self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn zipfian_head_matches_theory() {
        let items = 1000;
        let z = Zipfian::new(items, ZIPFIAN_CONSTANT);
        let mut rng = StdRng::seed_from_u64(7);
        let samples = 400_000;
        let mut counts = vec![0u64; items as usize];
        for _ in 0..samples {
            counts[z.next(&mut rng) as usize] += 1;
        }
        let zetan = zeta(items, ZIPFIAN_CONSTANT);
        let theory = |i: usize| 1.0 / ((i + 1) as f64).powf(ZIPFIAN_CONSTANT) / zetan;
        // Gray's method is exact for items 0 and 1 (within sampling noise) ...
        for (i, tolerance) in [(0usize, 0.03), (1, 0.05)] {
            let got = counts[i] as f64 / samples as f64;
            assert!(
                (got - theory(i)).abs() / theory(i) < tolerance,
                "item {i}: frequency {got:.4}, theory {:.4}",
                theory(i)
            );
        }
        // ... and approximates the rest: the CDF stays within 5% of the true Zipfian's.
        for rank in [10usize, 50, 100, 500] {
            let got = counts[..rank].iter().sum::<u64>() as f64 / samples as f64;
            let want: f64 = (0..rank).map(theory).sum();
            assert!(
                (got - want).abs() / want < 0.05,
                "CDF at {rank}: {got:.4}, theory {want:.4}"
            );
        }
        // Monotone head, long tail: the top 10% of items take well over half the requests.
        assert!(counts[0] > counts[1] && counts[1] > counts[2]);
        let top: u64 = counts[..100].iter().sum();
        assert!(
            top as f64 / samples as f64 > 0.6,
            "top 10% share {}",
            top as f64 / samples as f64
        );
    }

    #[test]
    fn scrambled_zipfian_stays_in_range_and_is_skewed() {
        let items = 10_000;
        let z = ScrambledZipfian::new(items);
        let mut rng = StdRng::seed_from_u64(11);
        let mut counts = vec![0u32; items as usize];
        let samples = 200_000;
        for _ in 0..samples {
            counts[z.next(&mut rng) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // The most popular key gets about 1/zeta(1e10) = 3.8% of requests.
        let head = f64::from(counts[0]) / f64::from(samples);
        assert!((0.03..0.05).contains(&head), "hottest key share {head}");
        let touched = counts.iter().filter(|&&c| c > 0).count();
        assert!(touched > 3000, "only {touched} distinct keys touched");
    }

    #[test]
    fn fnvhash64_is_fnv1a_over_little_endian_bytes() {
        // YCSB hashes the long's 8 bytes low byte first with FNV-1a, then takes |h| as a long.
        for v in [0u64, 1, 42, 0xdead_beef, u64::MAX, 1 << 63] {
            let h = corekv_proto::shard::fnv1a64(&v.to_le_bytes());
            assert_eq!(ycsb_fnvhash64(v), (h as i64).unsigned_abs(), "value {v}");
        }
        assert!(ycsb_fnvhash64(0) < 1 << 63);
    }
}
