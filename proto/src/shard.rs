//! Key → shard routing: the stable function every client and the server agree on.
//!
//! ```text
//! shard(key, n) = jump(fmix64(fnv1a64(key)), n)        name: "fnv1a64-fmix64-jump-v1"
//!
//! fnv1a64(key):  h = 0xcbf29ce484222325
//!                for each byte b of key: h = (h XOR b) * 0x100000001b3     (mod 2^64)
//! fmix64(h):     h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33;
//!                h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33                       (mod 2^64)
//! jump(k, n):    Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014):
//!                b = -1; j = 0
//!                while j < n: b = j; k = k * 2862933555777941757 + 1 (mod 2^64)
//!                             j = floor((b + 1) * (2^31 / ((k >> 33) + 1)))   (IEEE-754 doubles)
//!                return b
//! ```
//!
//! FNV-1a is a few lines in any language; `fmix64` (MurmurHash3's finaliser) spreads the last
//! bytes of similar keys (`user1`, `user2`) over all 64 bits; jump hash maps the result to
//! `0..n` so that growing from `n` to `n + 1` shards moves only `1/(n+1)` of the keys, which
//! keeps a future online reshard cheap. Test vectors: `proto/testdata/shard_vectors.txt`.

/// The name the server reports in `Topology.hash`. Changing the function means a new name.
pub const SHARD_HASH_NAME: &str = "fnv1a64-fmix64-jump-v1";

/// The largest shard count the routing function supports (jump hash returns an `i32`).
pub const MAX_SHARDS: u32 = 1 << 16;

/// 64-bit FNV-1a of `bytes`.
#[inline]
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
#[inline]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Jump consistent hash of `key` into `0..buckets`. `buckets` must be at least 1.
#[inline]
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    assert!(
        buckets >= 1,
        "jump_consistent_hash needs at least one bucket"
    );
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    debug_assert!((0..i64::from(buckets)).contains(&b));
    b as u32
}

/// The shard that owns `key` when the server runs `shard_count` shards.
///
/// # Panics
/// If `shard_count` is 0 or above [`MAX_SHARDS`]; the server validates its shard count at start.
#[inline]
pub fn shard_for_key(key: &[u8], shard_count: u32) -> u32 {
    assert!(
        (1..=MAX_SHARDS).contains(&shard_count),
        "shard count {shard_count} outside 1..={MAX_SHARDS}"
    );
    jump_consistent_hash(fmix64(fnv1a64(key)), shard_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `proto/testdata/shard_vectors.txt`: `hex_key fnv1a64 fmix64 shard@1 shard@2 ...`.
    fn vectors() -> Vec<(Vec<u8>, u64, u64, Vec<u32>)> {
        let text = include_str!("../testdata/shard_vectors.txt");
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let key_hex = fields.next().unwrap();
            let key = if key_hex == "-" {
                Vec::new()
            } else {
                (0..key_hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
                    .collect()
            };
            let fnv =
                u64::from_str_radix(fields.next().unwrap().trim_start_matches("0x"), 16).unwrap();
            let fmix =
                u64::from_str_radix(fields.next().unwrap().trim_start_matches("0x"), 16).unwrap();
            let shards = fields.map(|f| f.parse().unwrap()).collect();
            out.push((key, fnv, fmix, shards));
        }
        out
    }

    #[test]
    fn matches_published_vectors() {
        let vectors = vectors();
        assert!(vectors.len() >= 10, "test vector file is too short");
        for (key, fnv, fmix, shards) in vectors {
            assert_eq!(fnv1a64(&key), fnv, "fnv1a64 of {key:?}");
            assert_eq!(fmix64(fnv), fmix, "fmix64 of {key:?}");
            for (i, &want) in shards.iter().enumerate() {
                let n = [1u32, 2, 3, 4, 8, 16, 64, 1000][i];
                assert_eq!(
                    shard_for_key(&key, n),
                    want,
                    "shard of {key:?} with {n} shards"
                );
            }
        }
    }

    #[test]
    fn fnv1a64_known_answers() {
        // Published FNV-1a 64 test values (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_known_answers() {
        // Values from the reference implementation in the paper's C++ code (also used by
        // Guava's Hashing.consistentHash tests).
        assert_eq!(jump_consistent_hash(0, 1), 0);
        assert_eq!(jump_consistent_hash(1, 1), 0);
        for key in 0..1000u64 {
            assert!(jump_consistent_hash(key, 7) < 7);
        }
    }

    #[test]
    fn spreads_similar_keys_evenly() {
        for shards in [2u32, 3, 8] {
            let mut counts = vec![0u32; shards as usize];
            let n = 120_000u32;
            for i in 0..n {
                counts[shard_for_key(format!("user{i}").as_bytes(), shards) as usize] += 1;
            }
            let expected = f64::from(n) / f64::from(shards);
            for (s, &c) in counts.iter().enumerate() {
                let dev = (f64::from(c) - expected).abs() / expected;
                assert!(
                    dev < 0.03,
                    "shard {s} of {shards} got {c}, expected about {expected}"
                );
            }
        }
    }

    #[test]
    fn growing_by_one_shard_moves_few_keys() {
        let n = 50_000;
        let moved = (0..n)
            .filter(|i| {
                let k = format!("k{i}");
                shard_for_key(k.as_bytes(), 4) != shard_for_key(k.as_bytes(), 5)
            })
            .count();
        // Ideal is 1/5 of the keys; an allocation-free modulo hash would move about 4/5.
        let share = moved as f64 / f64::from(n);
        assert!((0.17..0.23).contains(&share), "moved share {share}");
        // And every moved key moved to the new shard.
        for i in 0..n {
            let k = format!("k{i}");
            let (a, b) = (
                shard_for_key(k.as_bytes(), 4),
                shard_for_key(k.as_bytes(), 5),
            );
            assert!(a == b || b == 4);
        }
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn zero_shards_is_refused() {
        shard_for_key(b"k", 0);
    }
}
