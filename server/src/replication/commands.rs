//! What a replicated shard's Raft entries carry: the operations of one request, and what
//! applying them answered.
//!
//! Both use the public schema (`proto/schema/corekv.capnp`) through the same codec as the
//! client protocol: a command is a `batch` call's parameters (`ops :List(Op)`), an answer its
//! results (`results :List(OpResult)`), each one Cap'n Proto message in flat form. Entries
//! come from peers' logs, so decoding bounds what it reads like the request path does.

use capnp::message::{Allocator, Builder, HeapAllocator, ReaderOptions};
use corekv_proto::codec::{read_op, read_result, write_op, write_put_op, write_result};
use corekv_proto::corekv_capnp::{core_kv, op};
use corekv_proto::{Op, OpResult};

use crate::shard::local::{RequestOp, distinct_plain_writes, write_set_of};
use crate::store::WriteSet;

/// Nesting a command or answer may have (the schema's deepest path is a few levels).
const NESTING_MAX: i32 = 16;

fn options(bytes: usize) -> ReaderOptions {
    let mut options = ReaderOptions::new();
    // An honest message reads each word once.
    options
        .traversal_limit_in_words(Some(bytes / 8 + 1))
        .nesting_limit(NESTING_MAX);
    options
}

/// Encodes the operations of one request as an entry's command.
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    encode_ops_after(0, ops)
}

/// [`encode_ops`] after `prefix_bytes` zero bytes (room for what the caller puts first).
pub fn encode_ops_after(prefix_bytes: usize, ops: &[Op]) -> Vec<u8> {
    let mut message = Builder::new_default();
    let params = message.init_root::<core_kv::batch_params::Builder<'_>>();
    let mut list = params.init_ops(ops.len() as u32);
    for (i, op) in ops.iter().enumerate() {
        write_op(list.reborrow().get(i as u32), op);
    }
    flatten(prefix_bytes, &message)
}

/// `message` in flat form after `prefix_bytes` zero bytes.
fn flatten<A: capnp::message::Allocator>(prefix_bytes: usize, message: &Builder<A>) -> Vec<u8> {
    let words = capnp::serialize::compute_serialized_size_in_words(message);
    let mut out = Vec::with_capacity(prefix_bytes + words * 8);
    out.resize(prefix_bytes, 0);
    // Writing to a Vec cannot fail.
    let _ = capnp::serialize::write_message(&mut out, message);
    out
}

/// [`encode_ops_after`] of a request's operations as read (puts and deletes borrowed from it,
/// so each key and value is copied once, into the message); `payload_bytes` is their keys'
/// and values' bytes, to size the message's one segment.
///
/// The message is built in the returned buffer itself, after the prefix and a one-segment
/// table: an entry's tens of KiB are written once, into memory touched once (no segment to
/// allocate, zero and copy from).
pub fn encode_writes_after(
    prefix_bytes: usize,
    ops: &[RequestOp<'_>],
    payload_bytes: usize,
) -> Vec<u8> {
    // About 12 words of structure per operation besides its bytes: rarely a second segment.
    let words = payload_bytes / 8 + 12 * ops.len() + 16;
    if let Some(out) = encode_in_place(prefix_bytes, ops, words) {
        return out;
    }
    let mut message = Builder::new(
        HeapAllocator::new().first_segment_words(u32::try_from(words).unwrap_or(u32::MAX)),
    );
    fill_writes(&mut message, ops);
    flatten(prefix_bytes, &message)
}

/// [`encode_writes_after`] built in a buffer of `words` for the segment; None when the
/// buffer's segment would not start on a word, or the message outgrew it.
fn encode_in_place(prefix_bytes: usize, ops: &[RequestOp<'_>], words: usize) -> Option<Vec<u8>> {
    let head = prefix_bytes + SEGMENT_TABLE_BYTES;
    let mut out = vec![0u8; head + words * 8];
    let (front, scratch) = out.split_at_mut(head);
    let start = scratch.as_ptr();
    // SAFETY: `scratch` is zeroed (`vec![0; n]` above).
    let mut message = Builder::new(unsafe { InPlace::new(scratch) }?);
    fill_writes(&mut message, ops);
    let segments = message.get_segments_for_output();
    if segments.len() != 1 || !std::ptr::eq(segments[0].as_ptr(), start) {
        return None;
    }
    let used_words = segments[0].len() / 8;
    drop(message);
    // The standard one-segment table: segment count - 1, then its size in words.
    front[prefix_bytes..prefix_bytes + 4].copy_from_slice(&0u32.to_le_bytes());
    let size = u32::try_from(used_words).ok()?;
    front[prefix_bytes + 4..head].copy_from_slice(&size.to_le_bytes());
    out.truncate(head + used_words * 8);
    // The entry stays in the in-memory log until compacted: not with much unused room.
    if out.capacity() - out.len() > out.len() / 4 {
        out.shrink_to_fit();
    }
    Some(out)
}

/// Bytes of the segment table of a one-segment message.
const SEGMENT_TABLE_BYTES: usize = 8;

/// A message's first segment in a zeroed, word-aligned buffer that outlives it and keeps
/// what was built there (capnp's `ScratchSpaceHeapAllocator` zeroes it again when the message
/// goes); later segments on the heap.
struct InPlace<'a> {
    buffer: &'a mut [u8],
    handed_out: bool,
    heap: HeapAllocator,
}

impl<'a> InPlace<'a> {
    /// None when `buffer` does not start on a word.
    ///
    /// # Safety
    /// `buffer` must be all zeros (capnp's contract for a new segment).
    unsafe fn new(buffer: &'a mut [u8]) -> Option<Self> {
        (buffer.as_ptr() as usize % 8 == 0).then_some(InPlace {
            buffer,
            handed_out: false,
            heap: HeapAllocator::new(),
        })
    }
}

// SAFETY: the first segment is `buffer`: zeroed and word-aligned (`InPlace::new`'s contract
// and check), exclusively borrowed for `'a`, which outlives the builder, and handed out at
// most once; every other segment is the heap allocator's, returned to it.
unsafe impl Allocator for InPlace<'_> {
    fn allocate_segment(&mut self, minimum_size: u32) -> (std::ptr::NonNull<u8>, u32) {
        let words = self.buffer.len() / 8;
        if !self.handed_out && minimum_size as usize <= words {
            self.handed_out = true;
            let size = u32::try_from(words).unwrap_or(u32::MAX);
            return (std::ptr::NonNull::from(&mut *self.buffer).cast(), size);
        }
        self.heap.allocate_segment(minimum_size)
    }

    unsafe fn deallocate_segment(
        &mut self,
        ptr: std::ptr::NonNull<u8>,
        word_size: u32,
        words_used: u32,
    ) {
        if std::ptr::eq(ptr.as_ptr(), self.buffer.as_ptr()) {
            // The message's bytes: the caller keeps them.
            return;
        }
        // SAFETY: any other segment came from `self.heap`, with these sizes (the caller's
        // contract).
        unsafe { self.heap.deallocate_segment(ptr, word_size, words_used) }
    }
}

fn fill_writes<A: capnp::message::Allocator>(message: &mut Builder<A>, ops: &[RequestOp<'_>]) {
    let params = message.init_root::<core_kv::batch_params::Builder<'_>>();
    let mut list = params.init_ops(ops.len() as u32);
    for (i, op) in ops.iter().enumerate() {
        let b = list.reborrow().get(i as u32);
        match op {
            RequestOp::Put { key, value, ttl_ms } => write_put_op(b, key, value, *ttl_ms),
            RequestOp::Delete { key } => b.init_delete().set_key(key),
            RequestOp::Other(op) => write_op(b, op),
        }
    }
}

/// Decodes an entry's command.
pub fn decode_ops(bytes: &[u8]) -> capnp::Result<Vec<Op>> {
    aligned(bytes, |bytes| {
        let mut slice = bytes;
        let message =
            capnp::serialize::read_message_from_flat_slice(&mut slice, options(bytes.len()))?;
        let params = message.get_root::<core_kv::batch_params::Reader<'_>>()?;
        params.get_ops()?.iter().map(read_op).collect()
    })
}

/// An entry's command as one [`WriteSet`], each key and value copied once (no [`Op`] made),
/// when it is what [`crate::shard::Shard::apply_entry`] would write as one: several
/// operations, every one a put or a delete, no key twice. `None` otherwise, and for a command
/// that does not decode (the general path decodes it and answers the error).
pub fn decode_plain_writes(bytes: &[u8]) -> Option<WriteSet> {
    aligned(bytes, |bytes| {
        let mut slice = bytes;
        let message =
            capnp::serialize::read_message_from_flat_slice(&mut slice, options(bytes.len()))
                .ok()?;
        let params = message
            .get_root::<core_kv::batch_params::Reader<'_>>()
            .ok()?;
        let list = params.get_ops().ok()?;
        if list.len() < 2 {
            return None;
        }
        let mut ops = Vec::with_capacity(list.len() as usize);
        for r in list.iter() {
            ops.push(match r.which().ok()? {
                op::Put(p) => {
                    let p = p.ok()?;
                    RequestOp::Put {
                        key: p.get_key().ok()?,
                        value: p.get_value().ok()?,
                        ttl_ms: p.get_ttl_ms(),
                    }
                }
                op::Delete(d) => RequestOp::Delete {
                    key: d.ok()?.get_key().ok()?,
                },
                _ => return None,
            });
        }
        let (_, payload_bytes) = distinct_plain_writes(&ops)?;
        Some(write_set_of(&ops, payload_bytes))
    })
}

/// Runs `f` on `bytes` 8-byte aligned. Capnp reads segments in place only when they are; a
/// command is a view into its entry's bytes, so one that is not is read from an aligned copy
/// (an error must depend on the bytes alone: every replica answers alike).
fn aligned<T>(bytes: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    if (bytes.as_ptr() as usize) % 8 != 0 {
        let mut words = capnp::Word::allocate_zeroed_vec(bytes.len().div_ceil(8));
        capnp::Word::words_to_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
        return f(&capnp::Word::words_to_bytes(&words)[..bytes.len()]);
    }
    f(bytes)
}

/// Encodes what applying a command answered.
pub fn encode_results(results: &[OpResult]) -> Vec<u8> {
    let mut message = Builder::new_default();
    let root = message.init_root::<core_kv::batch_results::Builder<'_>>();
    let mut list = root.init_results(results.len() as u32);
    for (i, r) in results.iter().enumerate() {
        write_result(list.reborrow().get(i as u32), r);
    }
    capnp::serialize::write_message_to_words(&message)
}

/// Decodes an answer.
pub fn decode_results(bytes: &[u8]) -> capnp::Result<Vec<OpResult>> {
    let mut slice = bytes;
    let message = capnp::serialize::read_message_from_flat_slice(&mut slice, options(bytes.len()))?;
    let root = message.get_root::<core_kv::batch_results::Reader<'_>>()?;
    root.get_results()?.iter().map(read_result).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use corekv_proto::{ErrorCode, OpError};

    #[test]
    fn commands_and_answers_round_trip_and_garbage_is_an_error() {
        let ops = vec![
            Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ttl_ms: 5,
            },
            Op::Delete { key: b"d".to_vec() },
            Op::Get { key: b"g".to_vec() },
        ];
        assert_eq!(decode_ops(&encode_ops(&ops)).unwrap(), ops);
        // At an offset that is not a multiple of 8, as a view into an entry may be.
        let mut unaligned = vec![0u8; 3];
        unaligned.extend_from_slice(&encode_ops(&ops));
        assert_eq!(decode_ops(&unaligned[3..]).unwrap(), ops);
        let after = encode_ops_after(8, &ops);
        assert_eq!(
            (&after[..8], &after[8..]),
            (&[0u8; 8][..], &encode_ops(&ops)[..])
        );
        let results = vec![
            OpResult::Error(OpError::new(ErrorCode::NotLeader, "node 2 leads")),
            OpResult::Get(None),
        ];
        assert_eq!(decode_results(&encode_results(&results)).unwrap(), results);
        for bytes in [&b""[..], &[0u8; 7], &[0xff; 64]] {
            assert!(decode_ops(bytes).is_err());
            assert!(decode_results(bytes).is_err());
            assert!(decode_plain_writes(bytes).is_none());
        }
    }

    #[test]
    fn puts_and_deletes_of_distinct_keys_decode_straight_into_one_write_set() {
        let put = |k: &str, ttl_ms| Op::Put {
            key: k.as_bytes().to_vec(),
            value: format!("value of {k}").into_bytes(),
            ttl_ms,
        };
        let ops = vec![
            put("a", 0),
            Op::Delete { key: b"d".to_vec() },
            put("b", 60_000),
        ];
        let mut want = WriteSet::with_capacity(3, 0);
        want.put(b"a", b"value of a", None);
        want.delete(b"d");
        want.put(
            b"b",
            b"value of b",
            Some(std::time::Duration::from_secs(60)),
        );
        // At an aligned and at an unaligned offset, as a view into an entry may be.
        let mut unaligned = vec![0u8; 3];
        unaligned.extend_from_slice(&encode_ops(&ops));
        for bytes in [&encode_ops(&ops)[..], &unaligned[3..]] {
            let set = decode_plain_writes(bytes).unwrap();
            assert_eq!(format!("{set:?}"), format!("{want:?}"));
        }
        // Encoded straight from a request's operations, they read back as the same `Op`s.
        let read: Vec<RequestOp<'_>> = vec![
            RequestOp::Put {
                key: b"a",
                value: b"value of a",
                ttl_ms: 0,
            },
            RequestOp::Delete { key: b"d" },
            RequestOp::Put {
                key: b"b",
                value: b"value of b",
                ttl_ms: 60_000,
            },
        ];
        let command = encode_writes_after(8, &read, 22);
        assert_eq!(&command[..8], &[0u8; 8]);
        assert_eq!(decode_ops(&command[8..]).unwrap(), ops);
        // Built in place, it is byte for byte the general encoder's flat message.
        assert_eq!(encode_in_place(8, &read, 64), Some(command.clone()));
        assert_eq!(command, encode_ops_after(8, &ops));
        // Sized too small (a value past the estimate), it still encodes whole.
        let big = vec![7u8; 10_000];
        let outgrown = [
            RequestOp::Put {
                key: b"k",
                value: &big,
                ttl_ms: 0,
            },
            RequestOp::Delete { key: b"d" },
        ];
        assert_eq!(encode_in_place(8, &outgrown, 40), None);
        let command = encode_writes_after(8, &outgrown, 0);
        let want = vec![
            Op::Put {
                key: b"k".to_vec(),
                value: big.clone(),
                ttl_ms: 0,
            },
            Op::Delete { key: b"d".to_vec() },
        ];
        assert_eq!(decode_ops(&command[8..]).unwrap(), want);
        // Anything else takes the general path: one operation, a key twice, not a plain write.
        for other in [
            vec![put("a", 0)],
            vec![put("a", 0), Op::Delete { key: b"a".to_vec() }],
            vec![put("a", 0), Op::Get { key: b"g".to_vec() }],
        ] {
            assert!(
                decode_plain_writes(&encode_ops(&other)).is_none(),
                "{other:?}"
            );
        }
    }
}
