//! Entities (a value of named columns) and counters: their byte encodings, which are part of
//! the wire contract because a plain `get` of such a key returns these bytes.
//!
//! ## Entity encoding (little-endian)
//!
//! ```text
//! +-----------------+--------------+----------------------------------------------------+
//! | magic "\xFFENT" | count u32    | count x ( name_len u32 | name | value_len u32 | value ) |
//! +-----------------+--------------+----------------------------------------------------+
//! ```
//!
//! Columns are in strictly ascending name order (bytes compared as unsigned, shorter first on a
//! common prefix), names are non-empty, and the encoding ends exactly after the last column.
//! Bytes that do not follow all of this are not an entity: a column operation on them answers
//! `wrongType`. An entity has at least one column: removing the last one deletes the key.
//!
//! ## Counter encoding
//!
//! A counter (a key's whole value, or one column) is a signed 64-bit integer in ASCII decimal,
//! as Redis's `INCR` keeps it: an optional `-`, then digits without leading zeros ("0", "-12",
//! "9223372036854775807"). An absent counter counts as 0.

use std::collections::BTreeMap;

/// The first bytes of every encoded entity.
pub const ENTITY_MAGIC: &[u8; 4] = b"\xFFENT";

/// Bytes of an entity's header (magic and column count).
const HEADER_BYTES: usize = 8;

/// Bytes each column adds besides its name and value (the two lengths).
pub const COLUMN_OVERHEAD_BYTES: usize = 8;

/// An entity: columns by name.
pub type Columns = BTreeMap<Vec<u8>, Vec<u8>>;

/// Bytes of the encoding of an entity with these columns.
pub fn encoded_len<'a>(columns: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    HEADER_BYTES
        + columns
            .into_iter()
            .map(|(n, v)| COLUMN_OVERHEAD_BYTES + n.len() + v.len())
            .sum::<usize>()
}

/// Encodes `columns` (each name non-empty: an empty name is the caller's bug).
pub fn encode(columns: &Columns) -> Vec<u8> {
    encode_sorted(columns.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// Encodes columns given in strictly ascending name order.
pub fn encode_sorted<'a>(columns: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(columns.clone()));
    out.extend_from_slice(ENTITY_MAGIC);
    out.extend_from_slice(&[0; 4]);
    let mut count = 0u32;
    for (name, value) in columns {
        assert!(!name.is_empty(), "an entity column needs a name");
        put_len(&mut out, name.len());
        out.extend_from_slice(name);
        put_len(&mut out, value.len());
        out.extend_from_slice(value);
        count += 1;
    }
    out[4..8].copy_from_slice(&count.to_le_bytes());
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

/// The columns of an encoded entity, in name order, borrowing from `bytes`; `None` when the
/// bytes are not an entity (see the module doc).
pub fn decode(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let rest = bytes.strip_prefix(ENTITY_MAGIC.as_slice())?;
    let (count, mut rest) = take_u32(rest)?;
    // Every column takes at least 9 bytes: a count beyond that is damage, not a reason to
    // reserve memory.
    if count as usize > rest.len() / (COLUMN_OVERHEAD_BYTES + 1) {
        return None;
    }
    let mut columns: Vec<(&[u8], &[u8])> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (name, after) = take_bytes(rest)?;
        let (value, after) = take_bytes(after)?;
        if name.is_empty() || columns.last().is_some_and(|(prev, _)| *prev >= name) {
            return None;
        }
        columns.push((name, value));
        rest = after;
    }
    rest.is_empty().then_some(columns)
}

/// The columns of an encoded entity as an owned map; `None` when the bytes are not an entity.
pub fn decode_owned(bytes: &[u8]) -> Option<Columns> {
    Some(
        decode(bytes)?
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect(),
    )
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

fn take_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take_u32(bytes)?;
    rest.split_at_checked(len as usize)
}

/// Whether `name` is a valid column name.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
}

/// The value of an encoded counter; `None` when the bytes are not one (see the module doc).
pub fn decode_counter(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The encoding of counter value `value`.
pub fn encode_counter(value: i64) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(pairs: &[(&str, &str)]) -> Columns {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn entities_round_trip_and_have_the_documented_layout() {
        let c = columns(&[("b", "2"), ("a", ""), ("field10", "x")]);
        let bytes = encode(&c);
        assert_eq!(
            bytes.len(),
            encoded_len(c.iter().map(|(n, v)| (&n[..], &v[..])))
        );
        assert_eq!(&bytes[..8], b"\xFFENT\x03\x00\x00\x00");
        // The first column is "a" (ascending), with an empty value.
        assert_eq!(&bytes[8..17], b"\x01\x00\x00\x00a\x00\x00\x00\x00");
        assert_eq!(decode_owned(&bytes), Some(c));
        assert_eq!(decode_owned(&encode(&Columns::new())), Some(Columns::new()));
    }

    #[test]
    fn bytes_that_break_any_rule_are_not_an_entity() {
        let good = encode(&columns(&[("a", "1"), ("b", "2")]));
        assert!(decode(&good).is_some());
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(b""), None);
        // Trailing bytes, a truncation anywhere, a count too large.
        assert_eq!(decode(&[good.as_slice(), b"x"].concat()), None);
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut more = good.clone();
        more[4] = 200;
        assert_eq!(decode(&more), None);
        // Names out of order, repeated or empty.
        let swapped = encode_unchecked(&[(b"b", b"2"), (b"a", b"1")]);
        assert_eq!(decode(&swapped), None);
        assert_eq!(
            decode(&encode_unchecked(&[(b"a", b"1"), (b"a", b"2")])),
            None
        );
        assert_eq!(decode(&encode_unchecked(&[(b"", b"1")])), None);
    }

    fn encode_unchecked(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = ENTITY_MAGIC.to_vec();
        out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (n, v) in pairs {
            put_len(&mut out, n.len());
            out.extend_from_slice(n);
            put_len(&mut out, v.len());
            out.extend_from_slice(v);
        }
        out
    }

    #[test]
    fn counters_are_canonical_decimal_i64() {
        for v in [0, 1, -1, 42, -12, i64::MAX, i64::MIN] {
            assert_eq!(decode_counter(&encode_counter(v)), Some(v));
        }
        assert_eq!(encode_counter(-12), b"-12");
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"-0",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
            b"abc",
        ] {
            assert_eq!(decode_counter(bad), None, "{bad:?}");
        }
    }
}
