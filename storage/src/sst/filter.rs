//! A split-block bloom filter: the filter is an array of 64-byte (one cache line) blocks; a key
//! picks one block from its hash and sets one bit in each of the block's eight 64-bit words, so
//! a lookup touches one cache line. This is the Parquet/Impala design with 64-bit words.
//!
//! ```text
//! filter block payload (before the block trailer):
//! +------------------+------------------+-----------------------------------------------+
//! | num_blocks u32 LE| bits_per_key u32 | block[0] ... block[num_blocks-1]              |
//! +------------------+------------------+-----------------------------------------------+
//! block = 8 × u64 LE words (64 bytes). For a key with 64-bit hash h:
//!   block index = ((h >> 32) * num_blocks) >> 32
//!   word i gets bit ((low32(h) * SALT[i]) mod 2^32) >> 26, for i in 0..8
//! ```
//!
//! `num_blocks = ceil(keys × bits_per_key / 512)`. With the default 10 bits per key the
//! false-positive rate is about 1% ([`expected_fpr`] computes it for any setting).

/// Bytes in one filter block (a cache line).
pub const FILTER_BLOCK_BYTES: usize = 64;
const HEADER_BYTES: usize = 8;
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;

#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The 64-bit hash filters use (a multiply-fold hash in the style of wyhash). Computed once
/// per point read and reused for every table's filter.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h = P0 ^ (key.len() as u64).wrapping_mul(P1);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = mum(h ^ w, P1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = mum(h ^ u64::from_le_bytes(b) ^ P0, P1);
    }
    mum(h, P0 ^ key.len() as u64)
}

#[inline]
pub(crate) fn block_index(h: u64, num_blocks: usize) -> usize {
    (((h >> 32) * num_blocks as u64) >> 32) as usize
}

#[inline]
pub(crate) fn bit(h: u64, i: usize) -> u64 {
    1u64 << ((h as u32).wrapping_mul(SALT[i]) >> 26)
}

/// Builds a filter from key hashes.
#[derive(Debug)]
pub struct FilterBuilder {
    bits_per_key: u32,
    hashes: Vec<u64>,
}

impl FilterBuilder {
    pub fn new(bits_per_key: u32) -> Self {
        FilterBuilder {
            bits_per_key,
            hashes: Vec::new(),
        }
    }

    /// Adds a key (call once per distinct user key).
    pub fn add_key(&mut self, key: &[u8]) {
        self.hashes.push(key_hash(key));
    }

    /// Appends the encoded filter to `out`.
    pub fn finish_into(&self, out: &mut Vec<u8>) {
        let bits = self.hashes.len() as u64 * u64::from(self.bits_per_key);
        let num_blocks = bits.div_ceil(8 * FILTER_BLOCK_BYTES as u64).max(1) as usize;
        let mut words = vec![0u64; num_blocks * 8];
        for &h in &self.hashes {
            let b = block_index(h, num_blocks);
            for i in 0..8 {
                words[b * 8 + i] |= bit(h, i);
            }
        }
        out.extend_from_slice(&(num_blocks as u32).to_le_bytes());
        out.extend_from_slice(&self.bits_per_key.to_le_bytes());
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// A decoded filter, held in memory (pinned) for the life of its table.
#[derive(Debug, Clone)]
pub struct Filter {
    words: Box<[u64]>,
    num_blocks: usize,
}

impl Filter {
    /// Decodes a filter block payload; a description of the problem if malformed.
    pub fn decode(payload: &[u8]) -> Result<Filter, String> {
        if payload.len() < HEADER_BYTES {
            return Err("filter shorter than its header".into());
        }
        let num_blocks =
            u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
        let body = &payload[HEADER_BYTES..];
        if num_blocks == 0 || body.len() != num_blocks * FILTER_BLOCK_BYTES {
            return Err(format!(
                "filter claims {num_blocks} blocks but has {} bytes",
                body.len()
            ));
        }
        let words = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(Filter { words, num_blocks })
    }

    /// False if the key with hash `h` is certainly absent.
    #[inline]
    pub fn may_contain(&self, h: u64) -> bool {
        let b = block_index(h, self.num_blocks) * 8;
        let block = &self.words[b..b + 8];
        let mut all = true;
        for (i, w) in block.iter().enumerate() {
            all &= w & bit(h, i) != 0;
        }
        all
    }

    /// Memory held, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// The expected false-positive rate of a filter with `bits_per_key`: keys land in blocks by a
/// Poisson law with mean `512 / bits_per_key`, and a block holding `j` keys answers "maybe"
/// for an absent key with probability `(1 - (63/64)^j)^8`.
pub fn expected_fpr(bits_per_key: u32) -> f64 {
    let lambda = 8.0 * FILTER_BLOCK_BYTES as f64 / f64::from(bits_per_key.max(1));
    let mut p_j = (-lambda).exp();
    let mut total = 0.0;
    for j in 0..2000 {
        if j > 0 {
            p_j *= lambda / f64::from(j);
        }
        let one_word = 1.0 - (63.0f64 / 64.0).powi(j);
        total += p_j * one_word.powi(8);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(keys: impl Iterator<Item = Vec<u8>>, bits: u32) -> Filter {
        let mut b = FilterBuilder::new(bits);
        for k in keys {
            b.add_key(&k);
        }
        let mut out = Vec::new();
        b.finish_into(&mut out);
        Filter::decode(&out).unwrap()
    }

    #[test]
    fn no_false_negatives() {
        let f = build((0..10_000u32).map(|i| format!("key{i}").into_bytes()), 10);
        for i in 0..10_000u32 {
            assert!(f.may_contain(key_hash(format!("key{i}").as_bytes())));
        }
    }

    #[test]
    fn measured_false_positive_rate_is_near_the_configured_one() {
        let n = 100_000u32;
        for bits in [6u32, 10, 16] {
            let f = build((0..n).map(|i| i.to_be_bytes().to_vec()), bits);
            // Absent keys: a different key space (8-byte keys).
            let probes = 200_000u64;
            let fp = (0..probes)
                .filter(|i| f.may_contain(key_hash(&(i + (1 << 40)).to_be_bytes())))
                .count();
            let measured = fp as f64 / probes as f64;
            let expected = expected_fpr(bits);
            assert!(
                measured < expected * 1.3 + 0.0005 && measured > expected * 0.7 - 0.0005,
                "bits/key {bits}: measured {measured:.5}, expected {expected:.5}"
            );
            assert_eq!(
                f.size_bytes(),
                (n as usize * bits as usize).div_ceil(512) * 64
            );
        }
        let ten = expected_fpr(10);
        assert!(ten > 0.005 && ten < 0.015, "{ten}");
    }

    #[test]
    fn malformed_filters_are_rejected() {
        assert!(Filter::decode(&[]).is_err());
        assert!(Filter::decode(&[1, 0, 0, 0, 10, 0, 0, 0]).is_err());
        assert!(Filter::decode(&[0, 0, 0, 0, 10, 0, 0, 0]).is_err());
        let mut ok = vec![1, 0, 0, 0, 10, 0, 0, 0];
        ok.extend_from_slice(&[0; 64]);
        assert!(Filter::decode(&ok).is_ok());
    }
}
