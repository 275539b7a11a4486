//! The WAL record frame.
//!
//! Records are packed one after another after the segment header, each starting at a multiple
//! of 8 bytes, and may cross 4 KiB block boundaries. All integers little-endian.
//!
//! ```text
//! 0            4            8                    16                   24
//! +------------+------------+--------------------+--------------------+-----------------+---------+
//! | length     | crc32c     | index              | durable_index      | payload         | zeros   |
//! | u32, >= 1  | u32        | u64                | u64                | `length` bytes  | to 8 B  |
//! +------------+------------+--------------------+--------------------+-----------------+---------+
//! ```
//!
//! - `length`: payload bytes. A frame whose `length` reads 0 marks the end of the written log
//!   (segments are preallocated with zeros), so payloads are never empty.
//! - `crc32c`: CRC-32C (Castagnoli) of `length`, `index`, `durable_index` and the payload (bytes
//!   0..4 and 8..24+length), so a damaged length is caught too. In format version 3 (see
//!   `segment.rs`) the CRC is seeded with the segment's random salt (its 8 bytes first), so no
//!   look-alike frame inside client data ever reads as a record.
//! - `index`: the record's position in the log, dense from the first record ever written (1):
//!   the "sequence number" of the frame and, later, the Raft log index. The engine's own
//!   sequence numbers live in its payload (see `crate::engine`).
//! - `durable_index`: when the record was written, every record up to this index was already
//!   known durable (`fdatasync`ed). Recovery uses it to tell a torn tail (the damaged record was
//!   never acknowledged as durable) from corruption (a later record proves it was).

/// Bytes of the frame header.
pub(crate) const HEADER_BYTES: usize = 24;
/// Records start at multiples of this.
pub(crate) const ALIGN_BYTES: usize = 8;
/// Largest payload a frame can carry.
pub(crate) const PAYLOAD_BYTES_MAX: usize = u32::MAX as usize - HEADER_BYTES - ALIGN_BYTES;

/// Bytes a record with `payload_len` bytes of payload takes in the log.
pub(crate) fn frame_len(payload_len: usize) -> usize {
    (HEADER_BYTES + payload_len).next_multiple_of(ALIGN_BYTES)
}

fn crc(frame: &[u8], payload_len: usize, salt: Option<u64>) -> u32 {
    let c = match salt {
        None => crc32c::crc32c(&frame[0..4]),
        Some(salt) => crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), &frame[0..4]),
    };
    crc32c::crc32c_append(c, &frame[8..HEADER_BYTES + payload_len])
}

/// Writes one frame into `dst`, which must be exactly `frame_len` of the payload's length
/// bytes; the payload is `head` then `body`; its checksum seeded with the segment's `salt` if
/// it has one.
pub(crate) fn encode(
    dst: &mut [u8],
    index: u64,
    durable_index: u64,
    (head, body): (&[u8], &[u8]),
    salt: Option<u64>,
) {
    let len = head.len() + body.len();
    debug_assert_eq!(dst.len(), frame_len(len));
    debug_assert!(len > 0 && len <= PAYLOAD_BYTES_MAX);
    debug_assert!(durable_index < index);
    dst[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    dst[8..16].copy_from_slice(&index.to_le_bytes());
    dst[16..24].copy_from_slice(&durable_index.to_le_bytes());
    let (h, rest) = dst[HEADER_BYTES..].split_at_mut(head.len());
    h.copy_from_slice(head);
    let (b, padding) = rest.split_at_mut(body.len());
    b.copy_from_slice(body);
    padding.fill(0);
    let c = crc(dst, len, salt);
    dst[4..8].copy_from_slice(&c.to_le_bytes());
}

/// What the bytes at a record position hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A valid frame.
    Record {
        index: u64,
        durable_index: u64,
        payload: &'a [u8],
        /// Bytes the frame takes, padding included (the padding may lie past the end of a
        /// file cut short).
        frame_len: usize,
    },
    /// A zero length: the end of the written log, if nothing else follows.
    End,
    /// Not a valid frame; the text says why.
    Invalid(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the frame at the start of `buf` (which runs to the end of the readable data), in a
/// segment with `salt` if it has one.
pub(crate) fn decode(buf: &[u8], salt: Option<u64>) -> Decoded<'_> {
    if buf.len() < 4 {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("truncated frame header")
        };
    }
    let len = u32_at(buf, 0) as usize;
    if len == 0 {
        return Decoded::End;
    }
    if buf.len() < HEADER_BYTES {
        return Decoded::Invalid("truncated frame header");
    }
    if len > PAYLOAD_BYTES_MAX || HEADER_BYTES + len > buf.len() {
        return Decoded::Invalid("frame length runs past the end of the segment");
    }
    if crc(buf, len, salt) != u32_at(buf, 4) {
        return Decoded::Invalid("checksum mismatch");
    }
    let index = u64_at(buf, 8);
    let durable_index = u64_at(buf, 16);
    if durable_index >= index {
        return Decoded::Invalid("durable_index is not below index");
    }
    Decoded::Record {
        index,
        durable_index,
        payload: &buf[HEADER_BYTES..HEADER_BYTES + len],
        frame_len: frame_len(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(index: u64, durable: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0xAA; frame_len(payload.len())];
        encode(&mut v, index, durable, (payload, &[]), None);
        v
    }

    #[test]
    fn a_payload_in_two_parts_is_the_frame_of_their_concatenation() {
        let payload: Vec<u8> = (0..100u8).collect();
        for split in [0, 1, 13, 99, 100] {
            let (head, body) = payload.split_at(split);
            let mut f = vec![0xAA; frame_len(payload.len())];
            encode(&mut f, 5, 4, (head, body), None);
            assert_eq!(f, frame(5, 4, &payload), "split at {split}");
        }
    }

    #[test]
    fn round_trips_and_pads_to_8_bytes() {
        for len in [1, 7, 8, 9, 100] {
            let payload: Vec<u8> = (0..len as u8).collect();
            let f = frame(42, 41, &payload);
            assert_eq!(f.len() % 8, 0);
            assert_eq!(
                decode(&f, None),
                Decoded::Record {
                    index: 42,
                    durable_index: 41,
                    payload: &payload,
                    frame_len: f.len()
                }
            );
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let f = frame(7, 3, b"hello world");
        for byte in 0..HEADER_BYTES + 11 {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&g, None), Decoded::Record { .. }),
                    "flip of byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeros_end_the_log_and_truncation_is_invalid() {
        assert_eq!(decode(&[0; 64], None), Decoded::End);
        assert_eq!(decode(&[0; 2], None), Decoded::End);
        let f = frame(1, 0, b"payload");
        for cut in 1..HEADER_BYTES + 7 {
            assert!(
                matches!(decode(&f[..cut], None), Decoded::Invalid(_)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_salted_frame_reads_only_with_its_salt() {
        let mut f = vec![0; frame_len(5)];
        encode(&mut f, 9, 8, (b"hello", &[]), Some(0x5eed));
        assert!(matches!(
            decode(&f, Some(0x5eed)),
            Decoded::Record { index: 9, .. }
        ));
        assert_eq!(decode(&f, None), Decoded::Invalid("checksum mismatch"));
        assert_eq!(
            decode(&f, Some(0x5eee)),
            Decoded::Invalid("checksum mismatch")
        );
        let plain = frame(9, 8, b"hello");
        assert_eq!(
            decode(&plain, Some(0x5eed)),
            Decoded::Invalid("checksum mismatch")
        );
    }
}
