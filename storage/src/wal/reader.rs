//! Reading a segment back: the records it holds and, if it is damaged, where and how badly.
//!
//! The scan stops at the first position that does not hold the next valid record. That is a
//! clean end when nothing but zeros follows. Otherwise it is damage, and the scan looks at the
//! rest of the segment for valid records whose `durable_index` reaches the damaged record: such
//! a record proves the damaged one had been made durable (so this is corruption, not a torn
//! write that was never acknowledged).

use super::record::{self, Decoded};
use super::segment::HEADER_BLOCK_BYTES;

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
/// index `first_index`.
pub(crate) fn scan(data: &[u8], first_index: u64) -> Scan {
    let mut out = Scan {
        end: HEADER_BLOCK_BYTES,
        ..Scan::default()
    };
    let mut pos = HEADER_BLOCK_BYTES as usize;
    let mut expect = first_index;
    while pos < data.len() {
        match record::decode(&data[pos..]) {
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
            Decoded::End => match data[pos..].iter().rposition(|&b| b != 0) {
                None => return out,
                Some(last) => {
                    let nonzero_end = (pos + last + 1) as u64;
                    out.damage = Some(damage(
                        data,
                        pos,
                        expect,
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
                out.damage = Some(damage(data, pos, expect, detail, nonzero_end));
                return out;
            }
            Decoded::Invalid(why) => {
                let nonzero_end = nonzero_end(data, pos);
                out.damage = Some(damage(data, pos, expect, why, nonzero_end));
                return out;
            }
        }
    }
    out
}

fn nonzero_end(data: &[u8], from: usize) -> u64 {
    data[from..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(from, |last| from + last + 1) as u64
}

fn damage(data: &[u8], pos: usize, expect: u64, detail: &str, nonzero_end: u64) -> Damage {
    // Look for a later valid record that proves the record at `expect` was durable.
    let mut proven_durable = false;
    let mut p = pos + record::ALIGN_BYTES;
    while p + record::HEADER_BYTES <= data.len() {
        if let Decoded::Record {
            index,
            durable_index,
            ..
        } = record::decode(&data[p..])
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
            record::encode(&mut data[pos..pos + len], index, durable, payload);
            offsets.push(pos);
            pos += len;
        }
        (data, offsets)
    }

    #[test]
    fn clean_segments_scan_to_their_end() {
        let (data, offsets) = image(&[(5, 0, b"a"), (6, 5, b"bb"), (7, 6, b"ccc")], 8192);
        let s = scan(&data, 5);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.records[2].offset, offsets[2] as u64);
        assert_eq!(s.end, offsets[2] as u64 + 32);
        assert!(s.damage.is_none());
        // The wrong first index is damage at the first record.
        let s = scan(&data, 4);
        assert_eq!(s.records.len(), 0);
        assert_eq!(s.damage.unwrap().offset, offsets[0] as u64);
    }

    #[test]
    fn a_torn_last_record_is_not_proven_durable() {
        let (mut data, offsets) = image(&[(1, 0, b"a"), (2, 1, b"b"), (3, 1, b"c")], 8192);
        data[offsets[2] + 24] ^= 1;
        let s = scan(&data, 1);
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
        let d = scan(&data, 1).damage.unwrap();
        assert_eq!(d.offset, offsets[1] as u64);
        assert!(d.proven_durable);
        // Same bytes, but record 3 only vouches for 1: a torn group commit.
        let (mut data, offsets) = image(&[(1, 0, b"a"), (2, 1, b"b"), (3, 1, b"c")], 8192);
        data[offsets[1] + 24] ^= 1;
        assert!(!scan(&data, 1).damage.unwrap().proven_durable);
        // A zeroed record followed by data is damage, not an end.
        let (mut data, offsets) = image(&[(1, 0, b"a"), (2, 1, b"b"), (3, 2, b"c")], 8192);
        data[offsets[1]..offsets[2]].fill(0);
        let d = scan(&data, 1).damage.unwrap();
        assert_eq!(d.offset, offsets[1] as u64);
        assert!(d.proven_durable);
    }
}
