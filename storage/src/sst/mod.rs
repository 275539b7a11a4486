//! SSTables: immutable sorted files of versioned entries, format version 1.
//!
//! ## File layout
//!
//! Every block starts at a byte offset the block index records; uncompressed data blocks are
//! padded so that each starts on a 4 KiB page and (unless one entry is larger than a block)
//! fills exactly one page, so a point read is one aligned O_DIRECT read of one page.
//! Compressed blocks are packed back to back and read with the enclosing aligned range.
//!
//! ```text
//! offset 0                                                        file size (multiple of 4 KiB)
//! +--------------+--------------+-----+--------+-------+-------+---------+----------------+
//! | data block 0 | data block 1 | ... | filter | index | props | padding | footer (128 B) |
//! +--------------+--------------+-----+--------+-------+-------+---------+----------------+
//!                                                                         ^ last 128 bytes
//! ```
//!
//! * data blocks: [`block`] format, entries sorted by (user key ascending, sequence number
//!   descending); each entry's value starts with its tag (see [`EntryKind`]).
//! * filter: a split-block bloom filter over the user keys ([`filter`]).
//! * index: a [`block`] whose entry `i` maps the last user key of data block `i` to that
//!   block's handle (offset u64, size u32, little-endian).
//! * props: a [`block`] with the table's smallest and largest user keys.
//! * footer: fixed-size plain-old-data ([`footer::Footer`]), checksummed, with the magic
//!   number and the format version.
//!
//! On disk every block (data, filter, index, props) is followed by a 5-byte trailer:
//!
//! ```text
//! +------------------------------+-------------+-------------------------------------+
//! | payload (maybe zstd)         | compression | crc32c(payload ‖ compression), u32 LE|
//! +------------------------------+-------------+-------------------------------------+
//!                                  u8: 0 none, 1 zstd
//! ```
//!
//! The checksum is verified on every read from disk; a mismatch is
//! [`crate::Error::Corruption`] with the file and the block's offset.

pub mod block;
pub mod builder;
pub mod filter;
pub mod footer;
pub mod reader;
#[cfg(test)]
mod table_tests;

use crate::SeqNo;
use crate::error::Error;

/// Format version written in every footer; readers refuse other versions.
pub const SST_FORMAT_VERSION: u32 = 1;

/// Largest sequence number an entry can carry (the tag keeps 8 bits for the kind).
pub const SEQ_MAX: SeqNo = (1 << 56) - 1;

/// Largest key plus value of one entry ([`crate::Options::validate`] keeps the key and value
/// limits within it): a data block holds at least one entry, so this bounds blocks too.
pub const ENTRY_BYTES_MAX: usize = 64 << 20;

/// Largest data block, uncompressed: one entry of [`ENTRY_BYTES_MAX`] with its encoding, or
/// a block of at most `block_size_bytes` (1 MiB at most). A reader refuses a compressed block
/// that claims more before it allocates for it.
pub const DATA_BLOCK_BYTES_MAX: usize = ENTRY_BYTES_MAX + (2 << 20);

/// Size of a block trailer: compression byte + crc32c.
pub const BLOCK_TRAILER_BYTES: usize = 5;

/// What an entry is. Stored in the low 8 bits of its tag (`seq << 8 | kind`), a little-endian
/// u64 at the start of a data block entry's value.
///
/// ```text
/// put:            | tag u64 (kind 1) | value ...            |
/// delete:         | tag u64 (kind 2) |
/// put with TTL:   | tag u64 (kind 3) | expires_at_ms u64 LE | value ... |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A value, never expiring.
    Put = 1,
    /// A tombstone.
    Delete = 2,
    /// A value with an absolute expiry time (Unix milliseconds).
    PutTtl = 3,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<EntryKind> {
        match b {
            1 => Some(EntryKind::Put),
            2 => Some(EntryKind::Delete),
            3 => Some(EntryKind::PutTtl),
            _ => None,
        }
    }
}

/// Block compression, chosen per level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Blocks stored as they are (and page-aligned).
    #[default]
    None,
    /// zstd at the given level (1..=19); a block is stored compressed only when that saves at
    /// least 1/8 of its size.
    Zstd(i32),
}

impl Compression {
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd(_) => 1,
        }
    }
}

/// One version of one key, borrowed from a block or a memtable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The user key.
    pub key: &'a [u8],
    /// The write's sequence number.
    pub seq: SeqNo,
    /// Put, delete or put with TTL.
    pub kind: EntryKind,
    /// Absolute expiry in Unix milliseconds; 0 = never (always 0 unless `PutTtl`).
    pub expires_at_ms: u64,
    /// The value (empty for a delete).
    pub value: &'a [u8],
}

impl EntryRef<'_> {
    /// Whether this version reads as absent at `now_ms` (a tombstone, or an expired value).
    pub fn is_absent_at(&self, now_ms: u64) -> bool {
        match self.kind {
            EntryKind::Delete => true,
            EntryKind::Put => false,
            EntryKind::PutTtl => now_ms >= self.expires_at_ms,
        }
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Entry {
        Entry {
            key: self.key.to_vec(),
            seq: self.seq,
            kind: self.kind,
            expires_at_ms: self.expires_at_ms,
            value: self.value.to_vec(),
        }
    }
}

/// An owned version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user key.
    pub key: Vec<u8>,
    /// The write's sequence number.
    pub seq: SeqNo,
    /// Put, delete or put with TTL.
    pub kind: EntryKind,
    /// Absolute expiry in Unix milliseconds; 0 = never.
    pub expires_at_ms: u64,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
}

impl Entry {
    /// A borrowed view.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            key: &self.key,
            seq: self.seq,
            kind: self.kind,
            expires_at_ms: self.expires_at_ms,
            value: &self.value,
        }
    }
}

/// Encodes a data entry's value part (tag, optional expiry, value) into `out`.
pub fn encode_data_value(e: &EntryRef<'_>, out: &mut Vec<u8>) {
    debug_assert!(e.seq <= SEQ_MAX);
    out.extend_from_slice(&((e.seq << 8) | e.kind as u64).to_le_bytes());
    if e.kind == EntryKind::PutTtl {
        out.extend_from_slice(&e.expires_at_ms.to_le_bytes());
    }
    if e.kind != EntryKind::Delete {
        out.extend_from_slice(e.value);
    }
}

/// Length of [`encode_data_value`]'s output.
pub fn data_value_len(e: &EntryRef<'_>) -> usize {
    8 + if e.kind == EntryKind::PutTtl { 8 } else { 0 }
        + if e.kind == EntryKind::Delete {
            0
        } else {
            e.value.len()
        }
}

/// Decodes a data entry's value part; None if malformed.
pub fn decode_data_value<'a>(key: &'a [u8], raw: &'a [u8]) -> Option<EntryRef<'a>> {
    let tag = u64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
    let kind = EntryKind::from_u8((tag & 0xff) as u8)?;
    let seq = tag >> 8;
    let (expires_at_ms, value) = match kind {
        EntryKind::Put => (0, &raw[8..]),
        EntryKind::Delete => {
            if raw.len() != 8 {
                return None;
            }
            (0, &raw[8..8])
        }
        EntryKind::PutTtl => (
            u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?),
            &raw[16..],
        ),
    };
    Some(EntryRef {
        key,
        seq,
        kind,
        expires_at_ms,
        value,
    })
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length of `v` as a LEB128 varint.
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads a LEB128 varint at `*pos`, advancing it; None if truncated or longer than 10 bytes.
#[inline]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// A block's position in its file: offset and on-disk size (payload + trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockHandle {
    /// Byte offset of the block in the file.
    pub offset: u64,
    /// Bytes on disk, trailer included.
    pub size: u32,
}

impl BlockHandle {
    pub const ENCODED_BYTES: usize = 12;

    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<BlockHandle> {
        if b.len() != 12 {
            return None;
        }
        Some(BlockHandle {
            offset: u64::from_le_bytes(b[..8].try_into().ok()?),
            size: u32::from_le_bytes(b[8..].try_into().ok()?),
        })
    }
}

/// Builds a corruption error for `file` at `offset`.
pub fn corruption(file: &std::path::Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::Corruption {
        file: file.to_path_buf(),
        offset,
        detail: detail.into(),
    }
}

/// Checks a block's trailer and returns (payload, compression code), or a description of
/// what is wrong.
pub fn check_trailer(raw: &[u8]) -> std::result::Result<(&[u8], u8), String> {
    if raw.len() < BLOCK_TRAILER_BYTES {
        return Err(format!("block of {} bytes has no trailer", raw.len()));
    }
    let body = raw.len() - 4;
    let stored = u32::from_le_bytes([raw[body], raw[body + 1], raw[body + 2], raw[body + 3]]);
    let actual = crc32c::crc32c(&raw[..body]);
    if stored != actual {
        return Err(format!(
            "block checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    Ok((&raw[..body - 1], raw[body - 1]))
}

/// Appends the trailer (compression code + crc32c) to a block payload.
pub fn append_trailer(out: &mut Vec<u8>, payload_start: usize, compression: u8) {
    out.push(compression);
    let crc = crc32c::crc32c(&out[payload_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_truncation() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            1 << 20,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
            let mut pos = 0;
            assert_eq!(get_varint(&b[..b.len() - 1], &mut pos), None);
        }
    }

    #[test]
    fn data_values_round_trip_every_kind() {
        for (kind, exp, val) in [
            (EntryKind::Put, 0, &b"value"[..]),
            (EntryKind::Put, 0, &b""[..]),
            (EntryKind::Delete, 0, &b""[..]),
            (EntryKind::PutTtl, 123_456, &b"v"[..]),
        ] {
            let e = EntryRef {
                key: b"k",
                seq: SEQ_MAX - 3,
                kind,
                expires_at_ms: exp,
                value: val,
            };
            let mut out = Vec::new();
            encode_data_value(&e, &mut out);
            assert_eq!(out.len(), data_value_len(&e));
            assert_eq!(decode_data_value(b"k", &out), Some(e));
        }
        // Unknown kind, truncated tag, a delete with trailing bytes.
        assert_eq!(decode_data_value(b"k", &[9, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_data_value(b"k", &[1, 0, 0]), None);
        assert_eq!(decode_data_value(b"k", &[2, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn trailers_detect_any_flipped_bit() {
        let mut b = b"payload bytes".to_vec();
        append_trailer(&mut b, 0, 0);
        assert_eq!(check_trailer(&b).unwrap(), (&b"payload bytes"[..], 0));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(check_trailer(&c).is_err(), "flip at {i} not detected");
        }
    }
}
