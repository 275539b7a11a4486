//! [`WriteBatch`]: puts and deletes applied atomically, and the WAL record payload a write
//! becomes: a header, then the batch's operations as they are (the batch's buffer reserves the
//! header's bytes, so it is handed to the WAL without being copied or re-encoded).
//!
//! ## WAL record payload (one per acknowledged write call, little-endian)
//!
//! ```text
//! 0        1          4          8                16                   24
//! +--------+----------+----------+----------------+--------------------+----------------+
//! | kind=1 | reserved | op_count | first_seq      | write_time_unix_ms | operations ... |
//! | u8     | 3 x 0    | u32      | u64            | u64                |                |
//! +--------+----------+----------+----------------+--------------------+----------------+
//! ```
//!
//! Operation `i` has sequence number `first_seq + i`; a TTL of `ttl_ms` expires at
//! `write_time_unix_ms + ttl_ms`, so replay restores the same absolute expiry. The WAL frame
//! around the payload is described in [`crate::wal::record`].
//!
//! ## Operation encoding
//!
//! ```text
//! put:          +------+-----------+-----+-------------+-------+
//!               | 0x01 | key_len   | key | value_len   | value |
//!               | u8   | u32       |     | u32         |       |
//!               +------+-----------+-----+-------------+-------+
//! put with ttl: | 0x03 | key_len   | key | value_len   | value | ttl_ms (u64, >= 1) |
//! delete:       | 0x02 | key_len   | key |
//! ```

use std::time::Duration;

use crate::SeqNo;
use crate::error::{Error, Result};

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_PUT_TTL: u8 = 3;

/// Largest TTL accepted: 100 years, in milliseconds.
pub const TTL_MS_MAX: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Payload kind of a write-batch record.
const RECORD_KIND_BATCH: u8 = 1;

/// Bytes of [`RecordHeader`], reserved at the front of a batch's buffer.
pub(crate) const RESERVED_HEADER_BYTES: usize = 24;

/// The header of a WAL record payload (layout in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// Operations in the record.
    pub(crate) ops: u32,
    /// Sequence number of the first operation.
    pub(crate) first_seq: SeqNo,
    /// Wall-clock time of the write, Unix milliseconds (TTLs count from it).
    pub(crate) write_time_ms: u64,
}

impl RecordHeader {
    /// Bytes of the header.
    pub(crate) const BYTES: usize = RESERVED_HEADER_BYTES;

    fn encode(&self) -> [u8; Self::BYTES] {
        let mut h = [0u8; Self::BYTES];
        h[0] = RECORD_KIND_BATCH;
        h[4..8].copy_from_slice(&self.ops.to_le_bytes());
        h[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        h[16..24].copy_from_slice(&self.write_time_ms.to_le_bytes());
        h
    }

    /// The header of `payload` and the encoded operations after it; None when the payload is
    /// shorter than a header or of an unknown kind.
    pub(crate) fn decode(payload: &[u8]) -> Option<(RecordHeader, &[u8])> {
        let (h, ops) = payload.split_at_checked(Self::BYTES)?;
        if h[0] != RECORD_KIND_BATCH {
            return None;
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let header = RecordHeader {
            ops: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            first_seq: u64_at(8),
            write_time_ms: u64_at(16),
        };
        Some((header, ops))
    }
}

/// Encoding bytes of one operation besides its key and value: the kind byte, the two lengths,
/// a TTL.
const OP_OVERHEAD_BYTES_MAX: usize = 1 + 4 + 4 + 8;

/// An atomic group of puts and deletes: [`crate::Engine::write`] applies all of them or none.
/// Later operations on the same key win over earlier ones.
#[derive(Default, Clone, Debug)]
pub struct WriteBatch {
    /// `RESERVED_HEADER_BYTES` reserved bytes (once anything is added), then the operations.
    rep: Vec<u8>,
    tally: Tally,
}

/// What a batch's operations add up to, kept alike by a [`WriteBatch`] as it is filled and by
/// an [`EncodedBatch`] as it is parsed.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Tally {
    /// Operations.
    pub(crate) count: u32,
    /// Sum of key and value bytes (what `batch_size_bytes_max` limits).
    pub(crate) payload_bytes: usize,
    /// The first TTL that cannot be encoded (zero or above [`TTL_MS_MAX`]); reported by the
    /// write.
    pub(crate) bad_ttl: Option<Duration>,
}

impl Tally {
    fn add(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.count = self.count.saturating_add(1);
        let bytes = key.len() + value.map_or(0, <[u8]>::len);
        self.payload_bytes = self.payload_bytes.saturating_add(bytes);
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch whose buffer already holds `ops` operations carrying `payload_bytes`
    /// key and value bytes in all (each with a TTL at most), so that filling it never
    /// reallocates. A large batch built with [`WriteBatch::new`] grows by doubling: a copy of
    /// everything added so far per doubling, and for big batches a fresh allocation each time
    /// (memory the kernel has to zero on first touch).
    pub fn with_capacity(ops: usize, payload_bytes: usize) -> Self {
        let bytes = RESERVED_HEADER_BYTES
            .saturating_add(ops.saturating_mul(OP_OVERHEAD_BYTES_MAX))
            .saturating_add(payload_bytes);
        WriteBatch {
            rep: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Adds a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.push(OP_PUT, key, Some(value), None);
        self
    }

    /// Adds a put whose value expires `ttl` after the batch is written (rounded up to a
    /// millisecond; at least 1 ms, at most [`TTL_MS_MAX`]).
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl: Duration) -> &mut Self {
        match ttl_ms(ttl) {
            Some(ms) => self.push(OP_PUT_TTL, key, Some(value), Some(ms)),
            None => {
                self.tally.bad_ttl.get_or_insert(ttl);
                // Keep counting so len() reflects what the caller added.
                self.push(OP_PUT, key, Some(value), None);
            }
        }
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.push(OP_DELETE, key, None, None);
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.tally.count as usize
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.tally.count == 0
    }

    /// Removes every operation, keeping the allocation.
    pub fn clear(&mut self) {
        self.rep.truncate(RESERVED_HEADER_BYTES.min(self.rep.len()));
        self.tally = Tally::default();
    }

    /// Sum of key and value bytes (what `batch_size_bytes_max` limits).
    pub fn payload_bytes(&self) -> usize {
        self.tally.payload_bytes
    }

    /// The batch's encoded operations (format in the module doc) after `head`, in the batch's
    /// own buffer: the bytes an [`EncodedBatch`] reads, framed without a copy (the buffer's
    /// reserved front takes `head`). Refused, like a write, when a TTL was out of range.
    pub fn into_framed(self, head: [u8; FRAME_HEAD_BYTES]) -> Result<Vec<u8>> {
        if let Some(ttl) = self.tally.bad_ttl {
            return Err(bad_ttl_error(ttl));
        }
        Ok(self.with_front(head))
    }

    /// The buffer with `front` in its reserved bytes.
    fn with_front(mut self, front: [u8; RESERVED_HEADER_BYTES]) -> Vec<u8> {
        if self.rep.len() < RESERVED_HEADER_BYTES {
            self.rep.resize(RESERVED_HEADER_BYTES, 0);
        }
        self.rep[..RESERVED_HEADER_BYTES].copy_from_slice(&front);
        self.rep
    }

    fn push(&mut self, op: u8, key: &[u8], value: Option<&[u8]>, ttl_ms: Option<u64>) {
        if self.rep.is_empty() {
            let len = OP_OVERHEAD_BYTES_MAX + key.len() + value.map_or(0, <[u8]>::len);
            self.rep.reserve(RESERVED_HEADER_BYTES + len);
            self.rep.resize(RESERVED_HEADER_BYTES, 0);
        }
        self.rep.push(op);
        // Lengths above u32::MAX cannot pass the limits (validated <= 4 GiB); saturate so the
        // encoding stays well-formed and the limit check reports the real size.
        self.rep
            .extend_from_slice(&len_u32(key.len()).to_le_bytes());
        self.rep.extend_from_slice(key);
        if let Some(value) = value {
            self.rep
                .extend_from_slice(&len_u32(value.len()).to_le_bytes());
            self.rep.extend_from_slice(value);
        }
        if let Some(ms) = ttl_ms {
            self.rep.extend_from_slice(&ms.to_le_bytes());
        }
        self.tally.add(key, value);
    }
}

/// What the write path reads of a batch, owned ([`WriteBatch`]) or borrowed
/// ([`EncodedBatch`]).
pub(crate) trait Writes {
    /// The encoded operations (format in the module doc).
    fn rep(&self) -> &[u8];
    /// What the operations add up to.
    fn tally(&self) -> Tally;
    /// The WAL record payload: `header`, then the operations.
    fn into_record(self, header: RecordHeader) -> Vec<u8>;

    /// Bytes of the WAL record payload this batch becomes.
    fn record_bytes(&self) -> usize {
        RESERVED_HEADER_BYTES + self.rep().len()
    }
}

impl Writes for WriteBatch {
    fn rep(&self) -> &[u8] {
        self.rep.get(RESERVED_HEADER_BYTES..).unwrap_or(&[])
    }

    fn tally(&self) -> Tally {
        self.tally
    }

    /// The batch's buffer with `header` written into its reserved front bytes.
    fn into_record(self, header: RecordHeader) -> Vec<u8> {
        debug_assert_eq!(header.ops, self.tally.count);
        self.with_front(header.encode())
    }
}

/// Bytes [`WriteBatch::into_framed`] puts before the operations: the room a batch keeps for
/// its WAL record header.
pub const FRAME_HEAD_BYTES: usize = RESERVED_HEADER_BYTES;

/// Operations encoded as a [`WriteBatch`] encodes them (module doc), borrowed from where they
/// arrived (a replicated log entry built by [`WriteBatch::into_framed`]):
/// [`crate::Engine::write_encoded`] writes them to the memtable straight from there.
#[derive(Debug, Clone, Copy)]
pub struct EncodedBatch<'a> {
    rep: &'a [u8],
    tally: Tally,
}

impl<'a> EncodedBatch<'a> {
    /// `ops` once checked to be a whole number of well-formed operations; an
    /// `InvalidArgument` error naming the offset of the first bad one otherwise. A TTL out of
    /// range is not an encoding error: the write refuses it, as it refuses a [`WriteBatch`]'s.
    pub fn parse(ops: &'a [u8]) -> Result<Self> {
        let mut tally = Tally::default();
        for op in BatchIter::new(ops) {
            let op = op.map_err(|offset| {
                Error::InvalidArgument(format!("malformed batch at byte {offset}"))
            })?;
            match op {
                BatchOp::Put { key, value, ttl_ms } => {
                    tally.add(key, Some(value));
                    if let Some(ms) = ttl_ms.filter(|ms| !(1..=TTL_MS_MAX).contains(ms)) {
                        tally.bad_ttl.get_or_insert(Duration::from_millis(ms));
                    }
                }
                BatchOp::Delete { key } => tally.add(key, None),
            }
        }
        Ok(EncodedBatch { rep: ops, tally })
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.tally.count as usize
    }

    /// True when there is no operation.
    pub fn is_empty(&self) -> bool {
        self.tally.count == 0
    }

    /// The first TTL out of range, if any: a write of the batch refuses it.
    pub fn bad_ttl(&self) -> Option<Duration> {
        self.tally.bad_ttl
    }

    /// The operations, in order.
    pub fn ops(&self) -> impl Iterator<Item = BatchOp<'a>> + use<'a> {
        // `parse` checked the whole encoding.
        BatchIter::new(self.rep).map_while(std::result::Result::ok)
    }
}

impl Writes for EncodedBatch<'_> {
    fn rep(&self) -> &[u8] {
        self.rep
    }

    fn tally(&self) -> Tally {
        self.tally
    }

    /// A copy: only an engine with its own WAL logs a borrowed batch (a replicated shard's
    /// log is the entry it came from).
    fn into_record(self, header: RecordHeader) -> Vec<u8> {
        debug_assert_eq!(header.ops, self.tally.count);
        let mut record = Vec::with_capacity(self.record_bytes());
        record.extend_from_slice(&header.encode());
        record.extend_from_slice(self.rep);
        record
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A TTL in whole milliseconds (rounded up), or None when out of range.
pub(crate) fn ttl_ms(ttl: Duration) -> Option<u64> {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    let ms = u64::try_from(ms).ok()?;
    (1..=TTL_MS_MAX).contains(&ms).then_some(ms)
}

/// One decoded operation, borrowing from the encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// A put, with its TTL in milliseconds if it has one.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Milliseconds to live from the write's time.
        ttl_ms: Option<u64>,
    },
    /// A delete.
    Delete {
        /// The key.
        key: &'a [u8],
    },
}

impl<'a> BatchOp<'a> {
    /// The key the operation writes.
    pub fn key(&self) -> &'a [u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

/// Iterates over encoded operations. A malformed encoding (only possible for bytes read back
/// from disk) yields `Err(offset)` with the offset of the bad operation, then stops.
pub(crate) struct BatchIter<'a> {
    rep: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub(crate) fn new(rep: &'a [u8]) -> Self {
        BatchIter {
            rep,
            pos: 0,
            failed: false,
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.rep.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn take_u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn take_u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }

    fn decode_one(&mut self) -> Option<BatchOp<'a>> {
        let op = *self.take(1)?.first()?;
        let key_len = self.take_u32()?;
        let key = self.take(key_len)?;
        match op {
            OP_PUT | OP_PUT_TTL => {
                let value_len = self.take_u32()?;
                let value = self.take(value_len)?;
                let ttl_ms = if op == OP_PUT_TTL {
                    Some(self.take_u64()?)
                } else {
                    None
                };
                Some(BatchOp::Put { key, value, ttl_ms })
            }
            OP_DELETE => Some(BatchOp::Delete { key }),
            _ => None,
        }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = std::result::Result<BatchOp<'a>, usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.rep.len() {
            return None;
        }
        let start = self.pos;
        match self.decode_one() {
            Some(op) => Some(Ok(op)),
            None => {
                self.failed = true;
                Some(Err(start))
            }
        }
    }
}

/// Checks every operation of a batch against the limits; nothing is changed on error.
pub(crate) fn validate(batch: &impl Writes, options: &crate::Options) -> Result<()> {
    let tally = batch.tally();
    if tally.count == 0 {
        return Err(Error::InvalidArgument(
            "empty batch: a write needs at least one operation".into(),
        ));
    }
    if let Some(ttl) = tally.bad_ttl {
        return Err(bad_ttl_error(ttl));
    }
    options.check_batch_bytes(tally.payload_bytes)?;
    // The encoding adds a few bytes per operation; the WAL record must still fit its frame.
    let encoded = RESERVED_HEADER_BYTES + batch.rep().len();
    if encoded > crate::wal::record::PAYLOAD_BYTES_MAX {
        return Err(Error::LimitExceeded {
            limit: crate::Limit::BatchSize,
            actual: encoded as u64,
            max: crate::wal::record::PAYLOAD_BYTES_MAX as u64,
        });
    }
    for op in BatchIter::new(batch.rep()) {
        let op = op.map_err(|offset| {
            Error::InvalidArgument(format!("malformed batch at byte {offset}"))
        })?;
        options.check_key(op.key())?;
        if let BatchOp::Put { value, .. } = op {
            options.check_value(value)?;
        }
    }
    Ok(())
}

pub(crate) fn bad_ttl_error(ttl: Duration) -> Error {
    Error::InvalidArgument(format!(
        "ttl {ttl:?} out of range: must be at least 1 ms and at most {TTL_MS_MAX} ms"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_sized_up_front_never_reallocates_and_encodes_the_same() {
        let value = vec![7u8; 1000];
        let keys: Vec<Vec<u8>> = (0..50u32).map(|i| format!("key{i}").into_bytes()).collect();
        let payload: usize = keys.iter().map(|k| k.len() + value.len()).sum::<usize>() + 2;
        let mut sized = WriteBatch::with_capacity(keys.len() + 1, payload);
        let start = (sized.rep.as_ptr(), sized.rep.capacity());
        let mut grown = WriteBatch::new();
        for (i, k) in keys.iter().enumerate() {
            if i % 2 == 0 {
                sized.put(k, &value);
                grown.put(k, &value);
            } else {
                sized.put_with_ttl(k, &value, Duration::from_secs(5));
                grown.put_with_ttl(k, &value, Duration::from_secs(5));
            }
        }
        sized.delete(b"zz");
        grown.delete(b"zz");
        assert_eq!((sized.rep.as_ptr(), sized.rep.capacity()), start);
        assert_eq!(sized.rep(), grown.rep());
        assert_eq!(sized.len(), grown.len());
        assert_eq!(sized.payload_bytes(), grown.payload_bytes());
        assert_eq!(sized.payload_bytes(), payload);
    }

    #[test]
    fn encodes_and_decodes_every_kind() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1")
            .delete(b"b")
            .put_with_ttl(b"c", b"", Duration::from_micros(1500));
        assert_eq!(b.len(), 3);
        assert_eq!(b.payload_bytes(), 4);
        let ops: Vec<_> = BatchIter::new(b.rep()).map(|o| o.unwrap()).collect();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put {
                    key: b"a",
                    value: b"1",
                    ttl_ms: None
                },
                BatchOp::Delete { key: b"b" },
                BatchOp::Put {
                    key: b"c",
                    value: b"",
                    ttl_ms: Some(2)
                },
            ]
        );
    }

    #[test]
    fn truncated_or_unknown_encoding_is_reported_with_its_offset() {
        let mut b = WriteBatch::new();
        b.put(b"key", b"value").put(b"k2", b"v2");
        let rep = b.rep();
        let first_len = 1 + 4 + 3 + 4 + 5;
        for cut in first_len + 1..rep.len() {
            let got: Vec<_> = BatchIter::new(&rep[..cut]).collect();
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[1], Err(first_len));
        }
        let mut bad = rep.to_vec();
        bad[first_len] = 9;
        assert_eq!(BatchIter::new(&bad).nth(1), Some(Err(first_len)));
    }

    #[test]
    fn bad_ttls_are_rejected_by_validate() {
        let o = crate::Options::default();
        for ttl in [Duration::ZERO, Duration::from_secs(TTL_MS_MAX / 1000 + 1)] {
            let mut b = WriteBatch::new();
            b.put_with_ttl(b"k", b"v", ttl);
            assert!(matches!(validate(&b, &o), Err(Error::InvalidArgument(_))));
        }
        let mut b = WriteBatch::new();
        b.put_with_ttl(b"k", b"v", Duration::from_nanos(1));
        validate(&b, &o).unwrap();
        assert!(matches!(
            validate(&WriteBatch::new(), &o),
            Err(Error::InvalidArgument(_))
        ));
    }
}
