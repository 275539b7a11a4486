//! The few etcd v3 protobuf messages the driver uses, written and read by hand.
//!
//! corekv never decodes protobuf received from the network with a protobuf library (a past
//! RUSTSEC advisory against rust-protobuf's decoder), so there is no generated code here: the
//! two requests are written byte by byte, and the answers are read by a small walk of their
//! fields that checks every length against the bytes that are left and refuses anything else
//! (it borrows from the message and allocates nothing).
//!
//! Wire format (proto3): a message is a sequence of fields, each a varint *tag*
//! `field_number << 3 | wire_type` followed by its value:
//!
//! ```text
//! wire type 0  varint            1 to 10 bytes, 7 bits each, least significant group first
//! wire type 1  64-bit            8 bytes, little-endian
//! wire type 2  length-delimited  varint length, then that many bytes (bytes, strings, messages)
//! wire type 5  32-bit            4 bytes, little-endian
//! (3 and 4 are the deprecated groups, which etcd does not use: refused)
//! ```
//!
//! The messages, from etcd 3.4's `etcdserver/etcdserverpb/rpc.proto` and
//! `mvcc/mvccpb/kv.proto` (fields the driver neither sets nor reads are left out):
//!
//! ```text
//! PutRequest    { bytes key = 1; bytes value = 2; }
//!               0x0a len(key) key  0x12 len(value) value
//! RangeRequest  { bytes key = 1; bytes range_end = 2; int64 limit = 3; }
//!               0x0a len(key) key  [0x12 len(range_end) range_end]  [0x18 varint(limit)]
//! PutResponse   { ResponseHeader header = 1; KeyValue prev_kv = 2; }
//! RangeResponse { ResponseHeader header = 1; repeated KeyValue kvs = 2; bool more = 3;
//!                 int64 count = 4; }
//! KeyValue      { bytes key = 1; int64 create_revision = 2; int64 mod_revision = 3;
//!                 int64 version = 4; bytes value = 5; int64 lease = 6; }
//! ```
//!
//! Fields left at their default (empty bytes, zero) are not written, as proto3 does.

use std::fmt;

/// Tag of `bytes key = 1` (field 1, wire type 2).
const TAG_KEY: u8 = 1 << 3 | 2;
/// Tag of `PutRequest.value = 2` and `RangeRequest.range_end = 2` (field 2, wire type 2).
const TAG_FIELD2_BYTES: u8 = 2 << 3 | 2;
/// Tag of `RangeRequest.limit = 3` (field 3, wire type 0).
const TAG_LIMIT: u8 = 3 << 3;
/// Longest varint: 64 bits in groups of 7.
const VARINT_BYTES_MAX: usize = 10;
/// Highest field number protobuf allows (2^29 - 1).
const FIELD_NUMBER_MAX: u64 = (1 << 29) - 1;

/// An answer that is not a well-formed message of the expected type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedMessage {
    /// Which message was being read (`RangeResponse`, `KeyValue`, ...).
    pub message: &'static str,
    /// What is wrong.
    pub reason: &'static str,
    /// Byte offset in the whole answer where it was found.
    pub offset: usize,
}

impl fmt::Display for MalformedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed {}: {} at byte {}",
            self.message, self.reason, self.offset
        )
    }
}

impl std::error::Error for MalformedMessage {}

/// Appends `value` as a varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length-delimited field: `tag`, the length of `bytes`, `bytes`.
fn put_bytes_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends `PutRequest { key, value }`.
pub fn encode_put_request(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    if !key.is_empty() {
        put_bytes_field(out, TAG_KEY, key);
    }
    if !value.is_empty() {
        put_bytes_field(out, TAG_FIELD2_BYTES, value);
    }
}

/// Appends `RangeRequest { key, range_end, limit }`. etcd reads `[key, range_end)`; an empty
/// `range_end` reads `key` alone, `"\0"` every key from `key` on; `limit` 0 means no limit.
pub fn encode_range_request(out: &mut Vec<u8>, key: &[u8], range_end: &[u8], limit: u64) {
    if !key.is_empty() {
        put_bytes_field(out, TAG_KEY, key);
    }
    if !range_end.is_empty() {
        put_bytes_field(out, TAG_FIELD2_BYTES, range_end);
    }
    // int64 on the wire; a count past i64::MAX means "all", which i64::MAX says as well.
    let limit = limit.min(i64::MAX as u64);
    if limit != 0 {
        out.push(TAG_LIMIT);
        put_varint(out, limit);
    }
}

/// One field's value, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

/// The fields of one message, in order. `base` is the message's offset in the whole answer,
/// so errors point into it. After an error the walk ends.
struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
    base: usize,
    message: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], base: usize, message: &'static str) -> Self {
        Fields {
            buf,
            at: 0,
            base,
            message,
        }
    }

    fn malformed(&mut self, reason: &'static str, at: usize) -> MalformedMessage {
        // Nothing after an error is read.
        self.at = self.buf.len();
        MalformedMessage {
            message: self.message,
            reason,
            offset: self.base + at,
        }
    }

    fn varint(&mut self) -> Result<u64, MalformedMessage> {
        let start = self.at;
        let mut value = 0u64;
        for i in 0..VARINT_BYTES_MAX {
            let Some(&b) = self.buf.get(self.at) else {
                return Err(self.malformed("truncated varint", start));
            };
            self.at += 1;
            // The tenth byte holds bit 63 only.
            if i == VARINT_BYTES_MAX - 1 && b > 1 {
                return Err(self.malformed("varint longer than 64 bits", start));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        // Unreachable: the tenth byte either ends the varint or is refused above.
        Err(self.malformed("varint longer than 64 bits", start))
    }

    fn take(
        &mut self,
        n: usize,
        reason: &'static str,
        from: usize,
    ) -> Result<&'a [u8], MalformedMessage> {
        let buf = self.buf;
        match self.at.checked_add(n).and_then(|end| buf.get(self.at..end)) {
            Some(bytes) => {
                self.at += n;
                Ok(bytes)
            }
            None => Err(self.malformed(reason, from)),
        }
    }

    /// The next field: its number, its value and the offset of its value in the message.
    fn next_field(&mut self) -> Option<Result<(u64, Value<'a>, usize), MalformedMessage>> {
        if self.at >= self.buf.len() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u64, Value<'a>, usize), MalformedMessage> {
        let field_start = self.at;
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > FIELD_NUMBER_MAX {
            return Err(self.malformed("field number outside 1..2^29", field_start));
        }
        let value_start = self.at;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8, "truncated 64-bit field", field_start)?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| self.malformed("length beyond the message", field_start))?;
                Value::Bytes(self.take(len, "length beyond the message", field_start)?)
            }
            5 => {
                self.take(4, "truncated 32-bit field", field_start)?;
                Value::Fixed32
            }
            3 | 4 => return Err(self.malformed("group field (not used by etcd)", field_start)),
            _ => return Err(self.malformed("unknown wire type", field_start)),
        };
        let value_offset = if let Value::Bytes(b) = value {
            self.at - b.len()
        } else {
            value_start
        };
        Ok((number, value, value_offset))
    }
}

/// A key and its value from a `RangeResponse`, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyValue<'a> {
    /// `KeyValue.key`.
    pub key: &'a [u8],
    /// `KeyValue.value`.
    pub value: &'a [u8],
}

/// What a `RangeResponse` says besides its key-values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeSummary {
    /// Key-values in the answer (`kvs`).
    pub kvs: usize,
    /// Keys in the requested range (`count`), which may exceed `kvs` when a limit applied.
    pub count: i64,
    /// Whether more keys than returned are in the range (`more`).
    pub more: bool,
}

fn read_key_value(bytes: &[u8], base: usize) -> Result<KeyValue<'_>, MalformedMessage> {
    let mut fields = Fields::new(bytes, base, "KeyValue");
    let mut kv = KeyValue {
        key: &[],
        value: &[],
    };
    while let Some(field) = fields.next_field() {
        let (number, value, at) = field?;
        match (number, value) {
            // A field repeated in one message: the last one counts (protobuf's rule).
            (1, Value::Bytes(b)) => kv.key = b,
            (5, Value::Bytes(b)) => kv.value = b,
            (1 | 5, _) => return Err(fields.malformed("key or value not length-delimited", at)),
            (2..=4 | 6, Value::Varint(_)) => {}
            (2..=4 | 6, _) => return Err(fields.malformed("revision or lease not a varint", at)),
            // Fields a later etcd may add.
            _ => {}
        }
    }
    Ok(kv)
}

/// Reads a `RangeResponse`, handing each key-value to `each` in order.
pub fn read_range_response<'a>(
    message: &'a [u8],
    mut each: impl FnMut(KeyValue<'a>),
) -> Result<RangeSummary, MalformedMessage> {
    let mut fields = Fields::new(message, 0, "RangeResponse");
    let mut summary = RangeSummary::default();
    while let Some(field) = fields.next_field() {
        let (number, value, at) = field?;
        match (number, value) {
            (1, Value::Bytes(_)) => {}
            (2, Value::Bytes(b)) => {
                each(read_key_value(b, at)?);
                summary.kvs += 1;
            }
            (3, Value::Varint(v)) => summary.more = v != 0,
            // int64: a negative count arrives as its two's complement.
            (4, Value::Varint(v)) => summary.count = v as i64,
            (1..=4, _) => return Err(fields.malformed("field of the wrong wire type", at)),
            _ => {}
        }
    }
    Ok(summary)
}

/// Checks that `message` is a well-formed `PutResponse`.
pub fn check_put_response(message: &[u8]) -> Result<(), MalformedMessage> {
    let mut fields = Fields::new(message, 0, "PutResponse");
    while let Some(field) = fields.next_field() {
        let (number, value, at) = field?;
        match (number, value) {
            (1, Value::Bytes(_)) => {}
            (2, Value::Bytes(b)) => {
                read_key_value(b, at)?;
            }
            (1 | 2, _) => return Err(fields.malformed("field of the wrong wire type", at)),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_request_matches_hand_computed_bytes() {
        let mut out = Vec::new();
        encode_put_request(&mut out, b"user1", b"abc");
        assert_eq!(out, b"\x0a\x05user1\x12\x03abc");
        // A 300-byte value: its length is the two-byte varint 0xac 0x02.
        let value = vec![b'v'; 300];
        out.clear();
        encode_put_request(&mut out, b"k", &value);
        assert_eq!(&out[..5], b"\x0a\x01k\x12\xac");
        assert_eq!(out[5], 0x02);
        assert_eq!(&out[6..], &value[..]);
        // Empty fields are left out, as proto3 does.
        out.clear();
        encode_put_request(&mut out, b"k", b"");
        assert_eq!(out, b"\x0a\x01k");
    }

    #[test]
    fn range_request_matches_hand_computed_bytes() {
        let mut out = Vec::new();
        encode_range_request(&mut out, b"user1", b"", 0);
        assert_eq!(out, b"\x0a\x05user1");
        out.clear();
        encode_range_request(&mut out, b"user1", b"\0", 100);
        assert_eq!(out, b"\x0a\x05user1\x12\x01\x00\x18\x64");
        out.clear();
        encode_range_request(&mut out, b"a", b"\0", 150);
        assert_eq!(out, b"\x0a\x01a\x12\x01\x00\x18\x96\x01");
        // A limit beyond int64 is sent as i64::MAX: nine bytes of 0xff then 0x7f.
        out.clear();
        encode_range_request(&mut out, b"a", b"", u64::MAX);
        assert_eq!(&out[..4], b"\x0a\x01a\x18");
        assert_eq!(&out[4..], b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f");
    }

    /// A RangeResponse as etcd writes it: a header, two key-values, count 2.
    fn sample_range_response() -> Vec<u8> {
        let header = b"\x08\x01\x10\x02\x18\x2a\x20\x03"; // ids 1, 2, revision 42, term 3
        let mut kv1 = Vec::new();
        put_bytes_field(&mut kv1, 0x0a, b"user1");
        kv1.extend_from_slice(b"\x10\x05\x18\x07\x20\x01"); // revisions, version
        put_bytes_field(&mut kv1, 0x2a, b"record-1");
        let mut kv2 = Vec::new();
        put_bytes_field(&mut kv2, 0x0a, b"user2");
        put_bytes_field(&mut kv2, 0x2a, b"");
        kv2.extend_from_slice(b"\x30\x00"); // lease 0
        let mut msg = Vec::new();
        put_bytes_field(&mut msg, 0x0a, header);
        put_bytes_field(&mut msg, 0x12, &kv1);
        put_bytes_field(&mut msg, 0x12, &kv2);
        msg.extend_from_slice(b"\x20\x02");
        msg
    }

    #[test]
    fn range_response_yields_its_key_values() {
        let msg = sample_range_response();
        let mut seen = Vec::new();
        let summary = read_range_response(&msg, |kv| seen.push(kv)).unwrap();
        assert_eq!(
            summary,
            RangeSummary {
                kvs: 2,
                count: 2,
                more: false
            }
        );
        assert_eq!(
            seen,
            vec![
                KeyValue {
                    key: b"user1",
                    value: b"record-1"
                },
                KeyValue {
                    key: b"user2",
                    value: b""
                },
            ]
        );
        // An empty answer (no key found) is an empty message.
        assert_eq!(
            read_range_response(b"", |_| panic!("no key-values")).unwrap(),
            RangeSummary::default()
        );
        // more = true, a negative count as ten bytes, and a field a later etcd may add.
        let tail = b"\x18\x01\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\xa0\x06\x05";
        let s = read_range_response(tail, |_| {}).unwrap();
        assert!(s.more);
        assert_eq!(s.count, -1);
    }

    #[test]
    fn every_truncation_of_a_range_response_is_refused() {
        let msg = sample_range_response();
        // Cutting at a field boundary leaves a shorter valid message; every other cut must be
        // refused, and none may panic.
        let boundaries = {
            let mut b = vec![0];
            let mut f = Fields::new(&msg, 0, "RangeResponse");
            while let Some(field) = f.next_field() {
                field.unwrap();
                b.push(f.at);
            }
            b
        };
        for cut in 0..msg.len() {
            let result = read_range_response(&msg[..cut], |_| {});
            assert_eq!(
                result.is_ok(),
                boundaries.contains(&cut),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_their_offset() {
        let cases: &[(&[u8], &str, usize)] = &[
            (b"\x12\x05ab", "length beyond the message", 0),
            (
                b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                "length beyond the message",
                0,
            ),
            (b"\x20\x80", "truncated varint", 1),
            (
                b"\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02",
                "varint longer than 64 bits",
                1,
            ),
            (
                b"\x20\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                "varint longer than 64 bits",
                1,
            ),
            (b"\x00\x01", "field number outside 1..2^29", 0),
            (b"\x13", "group field (not used by etcd)", 0),
            (b"\x0e", "unknown wire type", 0),
            (b"\x09\x01\x02", "truncated 64-bit field", 0),
            (b"\x0d\x01", "truncated 32-bit field", 0),
            (b"\x10\x01", "field of the wrong wire type", 1),
            (b"\x22\x00", "field of the wrong wire type", 2),
            // kvs whose KeyValue has a key that overruns it: offset inside the nested message.
            (b"\x12\x03\x0a\x05a", "length beyond the message", 2),
            (b"\x12\x02\x2a\x01", "length beyond the message", 2),
            (b"\x12\x02\x10\x8a", "truncated varint", 3),
            (
                b"\x12\x02\x0a\x00\x10\x01",
                "field of the wrong wire type",
                5,
            ),
            (b"\x12\x02\x28\x01", "key or value not length-delimited", 3),
        ];
        for &(bytes, reason, offset) in cases {
            let err = read_range_response(bytes, |_| {}).unwrap_err();
            assert_eq!((err.reason, err.offset), (reason, offset), "{bytes:02x?}");
        }
        assert!(check_put_response(b"\x0a\x02\x08\x01").is_ok());
        assert!(check_put_response(b"").is_ok());
        assert!(check_put_response(b"\x0a\x05\x08").is_err());
        assert!(check_put_response(b"\x08\x01").is_err());
    }
}
