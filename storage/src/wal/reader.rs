//! Reading a segment back: the records it holds and, if it is damaged, where and how badly.
//!
//! The scan stops at the first position that does not hold the next valid record (in format
//! version 3, one checksummed with the segment's salt). Where the format allows gaps
//! ([`SegmentFormat`]), zeros from there to the next 4 KiB boundary followed by the next
//! record at that boundary are a gap between two overlapping writes (see `writer.rs`), and the
//! scan goes on there. Otherwise a stop is a clean end when nothing but zeros follows.
//! Otherwise it is damage, and the scan looks at the rest of the segment for valid records
//! whose `durable_index` reaches the damaged record: such a record proves the damaged one had
//! been made durable (so this is corruption, not a torn write that was never acknowledged).

use super::record::{self, Decoded};
use super::segment::HEADER_BLOCK_BYTES;

/// How a segment's records are laid out and checksummed, by its header's format version (see
/// `segment.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentFormat {
    /// Records follow one another, no gaps.
    V1,
    /// Zeros may run to the next block boundary where the next index starts.
    V2,
    /// As version 2, and every record's checksum is seeded with this salt. The only format
    /// the writer appends to.
    V3(u64),
}

impl SegmentFormat {
    /// The salt records of the segment are checksummed with, if any.
    pub(crate) fn salt(self) -> Option<u64> {
        match self {
            SegmentFormat::V3(salt) => Some(salt),
            SegmentFormat::V1 | SegmentFormat::V2 => None,
        }
    }
}

/// A record found by the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) index: u64,
    /// Offset of the frame in the segment.
    pub(crate) offset: u64,
    /// Payload position within the scanned bytes.
    pub(crate) payload_start: usize,
    pub(crate) payload_len: usize,
}

/// Where a segment stops being readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Offset of the first position that is not the next valid record.
    pub(crate) offset: u64,
    /// What is wrong there.
    pub(crate) detail: String,
    /// A later valid record says the record expected here was already durable.
    pub(crate) proven_durable: bool,
    /// Offset just past the last non-zero byte of the segment (what a cut must zero).
    pub(crate) nonzero_end: u64,
}

/// The result of scanning one segment.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) records: Vec<Found>,
    /// Offset just past the last good record (where the next record would go).
    pub(crate) end: u64,
    pub(crate) damage: Option<Damage>,
}

/// Scans the bytes of a segment (header block included) whose first record should have
/// index `first_index`, under its format's rule for gaps.
pub(crate) fn scan(data: &[u8], first_index: u64, format: SegmentFormat) -> Scan {
    let mut out = Scan {
        end: HEADER_BLOCK_BYTES,
        ..Scan::default()
    };
    let mut pos = HEADER_BLOCK_BYTES as usize;
    let mut expect = first_index;
    while pos < data.len() {
        match record::decode(&data[pos..], format.salt()) {
            Decoded::Record {
                index,
                payload,
                frame_len,
                ..
            } if index == expect => {
                out.records.push(Found {
                    index,
                    offset: pos as u64,
                    payload_start: pos + record::HEADER_BYTES,
                    payload_len: payload.len(),
                });
                pos += frame_len;
                expect += 1;
                out.end = pos as u64;
            }
            Decoded::End if gap_before_next(data, pos, expect, format) => {
                pos = pos.next_multiple_of(BLOCK);
            }
            Decoded::End => match data[pos..].iter().rposition(|&b| b != 0) {
                None => return out,
                Some(last) => {
                    let nonzero_end = (pos + last + 1) as u64;
                    out.damage = Some(damage(
                        data,
                        pos,
                        expect,
                        format,
                        "zeros where the next record should be, with data after them",
                        nonzero_end,
                    ));
                    return out;
                }
            },
            Decoded::Record { index, .. } => {
                let nonzero_end = nonzero_end(data, pos);
                let detail = if index < expect {
                    "a record with an index already seen (stale or misplaced data)"
                } else {
                    "a record index gap (a record is missing)"
                };
                out.damage = Some(damage(data, pos, expect, format, detail, nonzero_end));
                return out;
            }
            Decoded::Invalid(why) => {
                let nonzero_end = nonzero_end(data, pos);
                out.damage = Some(damage(data, pos, expect, format, why, nonzero_end));
                return out;
            }
        }
    }
    out
}

const BLOCK: usize = HEADER_BLOCK_BYTES as usize;

/// Whether `pos` (not on a block boundary) starts zeros up to the next boundary, where record
/// `expect` begins: the gap an overlapping write leaves. A record from a later write that
/// landed while the one before it did not has a higher index and stops the scan as a gap in
/// the indexes, and stale records never lie past the log's end (segments start zero-filled or
/// unwritten, and a cut rewrites the tail as zeros). What version 2 cannot tell is a frame
/// with index `expect` inside the payload of record `expect` itself, exposed at the boundary
/// when a torn write lost the record's first sectors; version 3's salt rules that out (a
/// client never sees it).
fn gap_before_next(data: &[u8], pos: usize, expect: u64, format: SegmentFormat) -> bool {
    if pos % BLOCK == 0 || format == SegmentFormat::V1 {
        return false;
    }
    let next = pos.next_multiple_of(BLOCK);
    next < data.len()
        && data[pos..next].iter().all(|&b| b == 0)
        && matches!(record::decode(&data[next..], format.salt()), Decoded::Record { index, .. } if index == expect)
}

fn nonzero_end(data: &[u8], from: usize) -> u64 {
    data[from..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(from, |last| from + last + 1) as u64
}

fn damage(
    data: &[u8],
    pos: usize,
    expect: u64,
    format: SegmentFormat,
    detail: &str,
    nonzero_end: u64,
) -> Damage {
    // Look for a later valid record that proves the record at `expect` was durable (in
    // version 3, salted: never a look-alike inside client data).
    let mut proven_durable = false;
    let mut p = pos + record::ALIGN_BYTES;
    while p + record::HEADER_BYTES <= data.len() {
        if let Decoded::Record {
            index,
            durable_index,
            ..
        } = record::decode(&data[p..], format.salt())
            && index > expect
            && durable_index >= expect
        {
            proven_durable = true;
            break;
        }
        p += record::ALIGN_BYTES;
    }
    Damage {
        offset: pos as u64,
        detail: format!("{detail} (expected record {expect})"),
        proven_durable,
        nonzero_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment image: header block of zeros (the scan skips it) then records.
    fn image(records: &[(u64, u64, &[u8])], size: usize) -> (Vec<u8>, Vec<usize>) {
        let mut data = vec![0u8; size];
        let mut pos = HEADER_BLOCK_BYTES as usize;
        let mut offsets = Vec::new();
        for &(index, durable, payload) in records {
            let len = record::frame_len(payload.len());
            record::encode(
                &mut data[pos..pos + len],
                index,
                durable,
                (payload, &[]),
                None,
            );
            offsets.push(pos);
            pos += len;
        }
        (data, offsets)
    }

    #[test]
    fn clean_segments_scan_to_their_end() {
        let (data, offsets) = image(&[(5, 0, b"a"), (6, 5, b"bb"), (7, 6, b"ccc")], 8192);
        let s = scan(&data, 5, SegmentFormat::V2);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.records[2].offset, offsets[2] as u64);
        assert_eq!(s.end, offsets[2] as u64 + 32);
        assert!(s.damage.is_none());
        // The wrong first index is damage at the first record.
        let s = scan(&data, 4, SegmentFormat::V2);
        assert_eq!(s.records.len(), 0);
        assert_eq!(s.damage.unwrap().offset, offsets[0] as u64);
    }

    #[test]
    fn a_torn_last_record_is_not_proven_durable() {
        let (mut data, offsets) = image(&[(1, 0, b"a"), (2, 1, b"b"), (3, 1, b"c")], 8192);
        data[offsets[2] + 24] ^= 1;
        let s = scan(&data, 1, SegmentFormat::V2);
        assert_eq!(s.records.len(), 2);
        let d = s.damage.unwrap();
        assert_eq!(d.offset, offsets[2] as u64);
        assert!(!d.proven_durable);
        assert_eq!(d.nonzero_end, offsets[2] as u64 + 25);
    }

    #[test]
    fn damage_before_a_record_that_vouches_for_it_is_proven() {
        // Record 3 says records up to 2 were durable: damage at 2 is corruption.
        let (mut data, offsets) = image(&[(1, 0, b"a"), (2, 1, b"b"), (3, 2, b"c")], 8192);
        data[offsets[1] + 24] ^= 1;
        let d = scan(&data, 1, SegmentFormat::V2).damage.unwrap();
        assert_eq!(d.offset, offsets[1] as u64);
        assert!(d.proven_durable);
        // Same bytes, but record 3 only vouches for 1: a torn group commit.
        let (mut data, offsets) = image(&[(1, 0, b"a"), (2, 1, b"b"), (3, 1, b"c")], 8192);
        data[offsets[1] + 24] ^= 1;
        assert!(
            !scan(&data, 1, SegmentFormat::V2)
                .damage
                .unwrap()
                .proven_durable
        );
        // A zeroed record followed by data is damage, not an end.
        let (mut data, offsets) = image(&[(1, 0, b"a"), (2, 1, b"b"), (3, 2, b"c")], 8192);
        data[offsets[1]..offsets[2]].fill(0);
        let d = scan(&data, 1, SegmentFormat::V2).damage.unwrap();
        assert_eq!(d.offset, offsets[1] as u64);
        assert!(d.proven_durable);
    }

    /// Writes frame `(index, durable, payload)` at `pos`; returns the position after it.
    fn put(data: &mut [u8], pos: usize, index: u64, durable: u64, payload: &[u8]) -> usize {
        put_with(data, pos, (index, durable), payload, None)
    }

    #[test]
    fn a_gap_to_the_next_block_before_the_next_record_is_skipped_where_the_format_allows_it() {
        let mut data = vec![0u8; 4 * BLOCK];
        let mut pos = put(&mut data, BLOCK, 1, 0, b"a");
        pos = put(&mut data, pos, 2, 0, b"b");
        let after_two = pos;
        let next = put(&mut data, 2 * BLOCK, 3, 2, b"c");
        let s = scan(&data, 1, SegmentFormat::V2);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.records[2].offset, 2 * BLOCK as u64);
        assert_eq!(s.end, next as u64);
        assert!(s.damage.is_none());
        // Version 1 has no gaps: the same bytes are damage where the gap starts.
        let s = scan(&data, 1, SegmentFormat::V1);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.damage.unwrap().offset, after_two as u64);
        // A gap that is not all zeros is damage.
        let mut dirty = data.clone();
        dirty[after_two + 100] = 1;
        let s = scan(&dirty, 1, SegmentFormat::V2);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.damage.unwrap().offset, after_two as u64);
    }

    #[test]
    fn a_later_write_that_landed_without_the_one_before_it_is_a_torn_tail() {
        // Records 3 and 4 were one write and 5 the next, started while the first was in
        // flight; the first never reached the disk.
        let mut data = vec![0u8; 4 * BLOCK];
        let mut pos = put(&mut data, BLOCK, 1, 0, b"a");
        pos = put(&mut data, pos, 2, 1, b"b");
        put(&mut data, 2 * BLOCK, 5, 2, b"e");
        let s = scan(&data, 1, SegmentFormat::V2);
        assert_eq!(s.records.len(), 2);
        let d = s.damage.unwrap();
        assert_eq!(d.offset, pos as u64);
        assert!(!d.proven_durable, "record 5 vouches only for 2: {d:?}");
        // The next record at the boundary but one whose index is not the next one: the same.
        let mut data = vec![0u8; 4 * BLOCK];
        let pos = put(&mut data, BLOCK, 1, 0, b"a");
        put(&mut data, 2 * BLOCK, 3, 1, b"c");
        let s = scan(&data, 1, SegmentFormat::V2);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.damage.unwrap().offset, pos as u64);
    }

    /// Like [`put`], in a segment whose records are salted if `salt` is given (version 3).
    fn put_with(
        data: &mut [u8],
        pos: usize,
        (index, durable): (u64, u64),
        payload: &[u8],
        salt: Option<u64>,
    ) -> usize {
        let len = record::frame_len(payload.len());
        record::encode(
            &mut data[pos..pos + len],
            index,
            durable,
            (payload, &[]),
            salt,
        );
        pos + len
    }

    #[test]
    fn in_version_3_only_records_salted_with_the_segments_salt_count() {
        const SALT: u64 = 0x0123_4567_89ab_cdef;
        let mut data = vec![0u8; 4 * BLOCK];
        put_with(&mut data, BLOCK, (1, 0), b"a", Some(SALT));
        let next = put_with(&mut data, 2 * BLOCK, (2, 1), b"b", Some(SALT));
        put_with(&mut data, next, (3, 1), b"c", Some(SALT));
        let s = scan(&data, 1, SegmentFormat::V3(SALT));
        assert_eq!(s.records.len(), 3);
        assert!(s.damage.is_none());
        // Another salt, or unsalted records: nothing reads.
        let s = scan(&data, 1, SegmentFormat::V3(SALT + 1));
        assert_eq!(s.records.len(), 0);
        assert_eq!(s.damage.unwrap().offset, BLOCK as u64);
        let (plain, _) = image(&[(1, 0, b"a"), (2, 1, b"b")], 2 * BLOCK);
        let s = scan(&plain, 1, SegmentFormat::V3(SALT));
        assert_eq!(s.records.len(), 0);
        assert!(!s.damage.unwrap().proven_durable);
    }

    #[test]
    fn frames_inside_a_torn_records_payload_are_not_records_in_version_3() {
        // Record 2 (never acknowledged) spans a block boundary; its payload, client data,
        // holds a valid unsalted frame "record 2" exactly at the boundary and, later, a frame
        // "record 5" vouching for 2. Power loss kept the write's second block and lost its
        // first, so record 2's start reads as zeros.
        let torn = |salt: Option<u64>| {
            let mut data = vec![0u8; 4 * BLOCK];
            let start = put_with(&mut data, BLOCK, (1, 0), b"a", salt);
            let boundary = 2 * BLOCK;
            let mut payload = vec![7u8; boundary - start - record::HEADER_BYTES + 128];
            let at = boundary - start - record::HEADER_BYTES;
            put_with(&mut payload, at, (2, 1), b"forged", None);
            put_with(&mut payload, at + 64, (5, 2), b"vouch", None);
            put_with(&mut data, start, (2, 1), &payload, salt);
            data[start..boundary].fill(0);
            (data, start)
        };
        // Version 2's rule replays the forged frame as record 2.
        let (data, _) = torn(None);
        let s = scan(&data, 1, SegmentFormat::V2);
        assert_eq!(s.records.len(), 2);
        let forged = s.records[1];
        assert_eq!(
            &data[forged.payload_start..forged.payload_start + forged.payload_len],
            b"forged"
        );
        // Version 3 ends the log at record 1: a torn tail (nothing acknowledged lost), not
        // corruption "proven" by the second forged frame.
        let (data, start) = torn(Some(0x5eed));
        let s = scan(&data, 1, SegmentFormat::V3(0x5eed));
        assert_eq!(s.records.len(), 1);
        let d = s.damage.unwrap();
        assert_eq!(d.offset, start as u64);
        assert!(!d.proven_durable);
        // Version 1 has no gap rule, but the vouching frame alone makes it "corruption".
        let (data, _) = torn(None);
        assert!(
            scan(&data, 1, SegmentFormat::V1)
                .damage
                .unwrap()
                .proven_durable
        );
    }
}
