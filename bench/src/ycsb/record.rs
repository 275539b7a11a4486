//! A YCSB record (`fieldcount` fields named `field0`, `field1`, ..., each `fieldlength` bytes)
//! and how it is stored.
//!
//! The driver hands records to backends in this layout (version 1):
//!
//! ```text
//! +---------+---------------+------------------------------------------------------------+
//! | u8 = 1  | u8 field count| field count × ( u8 name length | name | u32 LE value length |
//! | version |               |                 value )                                    |
//! +---------+---------------+------------------------------------------------------------+
//! ```
//!
//! Ten fields of 100 bytes make a 1,112-byte record (2 + 10 × (1 + 6 + 4 + 100)). Field names
//! are kept, as Redis keeps them in its hash and YCSB's RocksDB binding in its serialised row.
//! A backend that stores a record as one value updates a field by read-merge-write (the
//! in-memory backend, as YCSB's RocksDB binding does).
//!
//! **corekv**: one record is one entity, a column per field (`backend::corekv`); an update of
//! one field is one `updateColumns` call, applied atomically in the server.
//!
//! **Redis**: one record is one hash (`HSET key field0 v0 ... field9 v9`), as in YCSB's Redis
//! binding; see `backend::redis`.
//!
//! **etcd**: one record is one value in this layout; an update of one field reads it, merges
//! the field and puts the whole record back, as YCSB's etcd binding does; see `backend::etcd`.
//!
//! Field values are printable ASCII drawn from a per-thread pool of random bytes (YCSB fills
//! them with random printable characters too), so they do not compress much.

use std::sync::OnceLock;

use rand::Rng;

/// Version byte of the record layout above.
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// Most fields a record may have (the count is one byte).
pub const FIELD_COUNT_MAX: usize = 255;
/// Largest field value accepted (1 MiB), so a record stays well below corekv's 8 MiB value limit.
pub const FIELD_LENGTH_MAX_BYTES: usize = 1 << 20;

/// YCSB's `fieldnameprefix` + index: `field0`, `field1`, ...
pub fn field_name(index: usize) -> &'static [u8] {
    static NAMES: OnceLock<Vec<Box<[u8]>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..FIELD_COUNT_MAX)
            .map(|i| format!("field{i}").into_bytes().into_boxed_slice())
            .collect()
    });
    &names[index]
}

/// A record value that does not follow the layout above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedRecord {
    /// What is wrong.
    pub reason: &'static str,
    /// Byte offset where the problem was found.
    pub offset: usize,
}

/// Appends the encoding of a record whose field `i` is `value(i)` to `out`.
pub fn encode_record<'a>(
    out: &mut Vec<u8>,
    field_count: usize,
    mut value: impl FnMut(usize) -> &'a [u8],
) {
    assert!(field_count <= FIELD_COUNT_MAX, "too many fields");
    out.push(RECORD_FORMAT_VERSION);
    out.push(field_count as u8);
    for i in 0..field_count {
        let name = field_name(i);
        let v = value(i);
        assert!(v.len() <= FIELD_LENGTH_MAX_BYTES, "field value too long");
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
}

/// One field of a decoded record, borrowed from it: `(name, value)`.
pub type Field<'a> = (&'a [u8], &'a [u8]);

/// The fields of an encoded record, borrowed from it, in stored order.
pub fn decode_record(bytes: &[u8]) -> Result<Vec<Field<'_>>, MalformedRecord> {
    let bad = |reason, offset| Err(MalformedRecord { reason, offset });
    if bytes.len() < 2 {
        return bad("shorter than its 2-byte header", 0);
    }
    if bytes[0] != RECORD_FORMAT_VERSION {
        return bad("unknown record format version", 0);
    }
    let count = usize::from(bytes[1]);
    let mut fields = Vec::with_capacity(count);
    let mut at = 2;
    for _ in 0..count {
        let Some(&name_len) = bytes.get(at) else {
            return bad("truncated before a field name length", at);
        };
        let name_end = at + 1 + usize::from(name_len);
        let Some(name) = bytes.get(at + 1..name_end) else {
            return bad("truncated field name", at);
        };
        let Some(len_bytes) = bytes.get(name_end..name_end + 4) else {
            return bad("truncated field value length", name_end);
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(len_bytes);
        let value_start = name_end + 4;
        let value_end = value_start + u32::from_le_bytes(len) as usize;
        let Some(value) = bytes.get(value_start..value_end) else {
            return bad("truncated field value", value_start);
        };
        fields.push((name, value));
        at = value_end;
    }
    if at != bytes.len() {
        return bad("bytes after the last field", at);
    }
    Ok(fields)
}

/// Appends to `out` the record `current` with field `index` set to `value` (a field the record
/// lacks is added at the end).
pub fn merge_field(
    current: &[u8],
    index: usize,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), MalformedRecord> {
    let fields = decode_record(current)?;
    let name = field_name(index);
    let replaced = fields.iter().any(|(n, _)| *n == name);
    let count = fields.len() + usize::from(!replaced);
    if count > FIELD_COUNT_MAX {
        return Err(MalformedRecord {
            reason: "a record already has the most fields allowed",
            offset: 1,
        });
    }
    out.push(RECORD_FORMAT_VERSION);
    out.push(count as u8);
    let mut put = |n: &[u8], v: &[u8]| {
        out.push(n.len() as u8);
        out.extend_from_slice(n);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    };
    for (n, v) in &fields {
        put(n, if *n == name { value } else { v });
    }
    if !replaced {
        put(name, value);
    }
    Ok(())
}

/// Bytes of random printable ASCII per thread; field values are windows into it.
const POOL_BYTES: usize = 1 << 20;

/// A per-thread source of field values.
#[derive(Debug, Clone)]
pub struct ValuePool {
    pool: Vec<u8>,
    field_length_bytes: usize,
}

impl ValuePool {
    /// A pool for fields of `field_length_bytes` (at most [`FIELD_LENGTH_MAX_BYTES`]).
    pub fn new<R: Rng + ?Sized>(field_length_bytes: usize, rng: &mut R) -> Self {
        assert!(field_length_bytes <= FIELD_LENGTH_MAX_BYTES);
        let mut pool = vec![0u8; POOL_BYTES + field_length_bytes];
        rng.fill_bytes(&mut pool);
        // Onto the 95 printable characters ' '..='~' (the slight bias of `% 95` is harmless).
        for b in &mut pool {
            *b = b' ' + *b % 95;
        }
        ValuePool {
            pool,
            field_length_bytes,
        }
    }

    /// Length of every field value.
    pub fn field_length_bytes(&self) -> usize {
        self.field_length_bytes
    }

    /// A fresh field value.
    pub fn field<R: Rng + ?Sized>(&self, rng: &mut R) -> &[u8] {
        let start = rng.gen_range(0..POOL_BYTES);
        &self.pool[start..start + self.field_length_bytes]
    }

    /// Appends a whole new record of `field_count` fields to `out`.
    pub fn encode_new_record<R: Rng + ?Sized>(
        &self,
        field_count: usize,
        rng: &mut R,
        out: &mut Vec<u8>,
    ) {
        encode_record(out, field_count, |_| self.field(rng));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn layout_matches_the_documented_diagram() {
        let mut out = Vec::new();
        encode_record(&mut out, 2, |i| if i == 0 { b"ab" } else { b"" });
        let want: &[u8] = b"\x01\x02\x06field0\x02\x00\x00\x00ab\x06field1\x00\x00\x00\x00";
        assert_eq!(out, want);
        let mut rng = StdRng::seed_from_u64(1);
        let pool = ValuePool::new(100, &mut rng);
        out.clear();
        pool.encode_new_record(10, &mut rng, &mut out);
        assert_eq!(out.len(), 1112, "10 x 100 B record size");
        let fields = decode_record(&out).unwrap();
        assert_eq!(fields.len(), 10);
        for (i, (name, value)) in fields.iter().enumerate() {
            assert_eq!(*name, field_name(i));
            assert_eq!(value.len(), 100);
            assert!(value.iter().all(|b| (b' '..=b'~').contains(b)));
        }
    }

    #[test]
    fn merge_replaces_one_field_and_keeps_the_rest() {
        let mut rec = Vec::new();
        encode_record(&mut rec, 3, |i| [&b"x"[..], b"yy", b"zzz"][i]);
        let mut merged = Vec::new();
        merge_field(&rec, 1, b"NEW", &mut merged).unwrap();
        let fields = decode_record(&merged).unwrap();
        assert_eq!(
            fields,
            vec![
                (&b"field0"[..], &b"x"[..]),
                (b"field1", b"NEW"),
                (b"field2", b"zzz")
            ]
        );
        merged.clear();
        merge_field(&rec, 7, b"q", &mut merged).unwrap();
        assert_eq!(decode_record(&merged).unwrap().len(), 4);
    }

    #[test]
    fn malformed_records_are_reported_with_their_offset() {
        let mut rec = Vec::new();
        encode_record(&mut rec, 2, |_| b"abcd");
        for cut in 0..rec.len() {
            assert!(
                decode_record(&rec[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut extra = rec.clone();
        extra.push(0);
        assert_eq!(decode_record(&extra).unwrap_err().offset, rec.len());
        let mut wrong_version = rec.clone();
        wrong_version[0] = 9;
        assert_eq!(
            decode_record(&wrong_version).unwrap_err().reason,
            "unknown record format version"
        );
    }
}
