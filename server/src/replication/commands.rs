//! What a replicated shard's Raft entries carry: the operations of one request, and what
//! applying them answered.
//!
//! A command is one of two kinds:
//! - plain writes (puts and deletes of distinct keys, a `batch` call's usual content): a short
//!   head, then the operations in the engine's batch encoding, which every replica writes
//!   to its memtable straight from the entry ([`encode_plain_writes`]);
//! - anything else: a `batch` call's parameters (`ops :List(Op)`) in the public schema
//!   (`proto/schema/corekv.capnp`), one Cap'n Proto message in flat form.
//!
//! An answer is a `batch` call's results (`results :List(OpResult)`), one Cap'n Proto message.
//! Entries come from peers' logs, so decoding bounds what it reads like the request path
//! does.

use capnp::message::{Builder, ReaderOptions};
use corekv_proto::codec::{read_op, read_result, write_op, write_result};
use corekv_proto::corekv_capnp::core_kv;
use corekv_proto::{ErrorCode, Op, OpError, OpResult};

use super::group::ENTRY_TIME_BYTES;
use crate::shard::local::{RequestOp, write_set_of};
use crate::store::{EncodedBatch, FRAME_HEAD_BYTES};

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

/// First word of a plain-writes command. A Cap'n Proto command starts with its segment count
/// less one, which readers refuse above 511: the two kinds cannot be confused.
const PLAIN_WRITES_TAG: u32 = 0xFFFF_FF01;

/// Bytes of a plain-writes command before its operations: the tag, the operation count and
/// 8 reserved zero bytes.
const PLAIN_WRITES_HEAD_BYTES: usize = 16;

// The entry's time and the command's head fill the room a write set keeps at its front.
const _: () = assert!(ENTRY_TIME_BYTES + PLAIN_WRITES_HEAD_BYTES == FRAME_HEAD_BYTES);

/// A request's puts and deletes (`payload_bytes` of keys and values; checked by the caller,
/// no key twice) as a whole entry: [`ENTRY_TIME_BYTES`] zero bytes, then a plain-writes
/// command, whose operations are in the engine's own batch encoding
/// (`corekv_storage::batch`): each key and value is copied once, into the entry, and every
/// replica writes its memtable straight from the entry's bytes. `None` when the engine would
/// refuse a TTL (the general path reports it).
///
/// ```text
/// | tag 0xFFFF_FF01 (u32 LE) | op count (u32 LE) | 8 zero bytes | operations ... |
/// ```
pub fn encode_plain_writes(ops: &[RequestOp<'_>], payload_bytes: usize) -> Option<Vec<u8>> {
    let set = write_set_of(ops, payload_bytes);
    let mut head = [0u8; FRAME_HEAD_BYTES];
    let command = &mut head[ENTRY_TIME_BYTES..];
    command[..4].copy_from_slice(&PLAIN_WRITES_TAG.to_le_bytes());
    command[4..8].copy_from_slice(&u32::try_from(set.len()).ok()?.to_le_bytes());
    let mut entry = set.into_framed(head).ok()?;
    // The entry stays in the in-memory log until compacted: not with much unused room (the
    // set was sized for a TTL on every operation).
    if entry.capacity() - entry.len() > entry.len() / 4 {
        entry.shrink_to_fit();
    }
    Some(entry)
}

/// A plain-writes command ([`encode_plain_writes`]): `None` when `command` is not one (it is
/// Cap'n Proto), else its operations, or why they do not decode.
pub fn decode_plain_writes(command: &[u8]) -> Option<Result<EncodedBatch<'_>, String>> {
    let (tag, rest) = command.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*tag) != PLAIN_WRITES_TAG {
        return None;
    }
    let Some((count, rest)) = rest.split_first_chunk::<4>() else {
        return Some(Err("a plain-writes command cut short in its head".into()));
    };
    let count = u32::from_le_bytes(*count) as usize;
    let Some((reserved, ops)) = rest.split_first_chunk::<8>() else {
        return Some(Err("a plain-writes command cut short in its head".into()));
    };
    if reserved != &[0u8; 8] {
        return Some(Err("a plain-writes command with unknown flags".into()));
    }
    Some(match EncodedBatch::parse(ops) {
        Ok(batch) if batch.len() != count => Err(format!(
            "a plain-writes command of {count} operations holds {}",
            batch.len()
        )),
        Ok(batch) => match batch.bad_ttl() {
            Some(ttl) => Err(format!("a plain-writes command with a TTL of {ttl:?}")),
            None => Ok(batch),
        },
        Err(e) => Err(e.to_string()),
    })
}

/// The answer to an entry that does not decode: one error, whatever the entry claims to
/// hold (its proposer, expecting as many results as it sent operations, reports the
/// mismatch). Every replica decodes the same bytes alike, so the answer is deterministic.
pub fn undecodable(why: &str) -> Vec<OpResult> {
    vec![OpResult::Error(OpError::new(
        ErrorCode::InvalidArgument,
        format!("a log entry does not decode: {why}"),
    ))]
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

/// Fuzzing entry point (`tests/tests/decoders.rs`, `tests/fuzz`): `data` as an entry's
/// command, and as the operations of a plain-writes command with a well-formed head. Neither
/// may panic, and what does not decode is answered with one error.
pub fn fuzz_decode(data: &[u8]) {
    let _ = decode_ops(data);
    let check = |command: &[u8]| match decode_plain_writes(command) {
        Some(Ok(batch)) => assert_eq!(batch.ops().count(), batch.len()),
        Some(Err(why)) => assert_eq!(undecodable(&why).len(), 1),
        None => {}
    };
    check(data);
    let count = EncodedBatch::parse(data).map_or(0, |b| b.len());
    let mut command = Vec::with_capacity(PLAIN_WRITES_HEAD_BYTES + data.len());
    command.extend_from_slice(&PLAIN_WRITES_TAG.to_le_bytes());
    command.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    command.extend_from_slice(&[0; 8]);
    command.extend_from_slice(data);
    check(&command);
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
    use crate::store::BatchOp;
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
    fn plain_writes_encode_in_the_batch_encoding_and_decode_as_written() {
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
        let entry = encode_plain_writes(&read, 22).unwrap();
        // Room for the entry's time, then the command.
        assert_eq!(&entry[..ENTRY_TIME_BYTES], &[0u8; ENTRY_TIME_BYTES]);
        let command = &entry[ENTRY_TIME_BYTES..];
        let batch = decode_plain_writes(command).unwrap().unwrap();
        assert_eq!(batch.len(), 3);
        let ops: Vec<BatchOp<'_>> = batch.ops().collect();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put {
                    key: b"a",
                    value: b"value of a",
                    ttl_ms: None
                },
                BatchOp::Delete { key: b"d" },
                BatchOp::Put {
                    key: b"b",
                    value: b"value of b",
                    ttl_ms: Some(60_000)
                },
            ]
        );
        // Not Cap'n Proto: the general decoder refuses it rather than misreading it.
        assert!(decode_ops(command).is_err());
        // A Cap'n Proto command is not taken for plain writes.
        let general = vec![Op::Get { key: b"g".to_vec() }];
        assert!(decode_plain_writes(&encode_ops(&general)).is_none());

        // What does not decode is an error, answered once whatever the head claims (a
        // count of 4 billion must not size the answer).
        let refused = |bytes: &[u8]| match decode_plain_writes(bytes) {
            Some(Err(why)) => {
                assert_eq!(undecodable(&why).len(), 1);
                why
            }
            other => panic!("{other:?}"),
        };
        assert!(refused(&command[..6]).contains("cut short"));
        assert!(refused(&command[..12]).contains("cut short"));
        let mut flagged = command.to_vec();
        flagged[9] = 1;
        assert!(refused(&flagged).contains("flags"), "{flagged:?}");
        let mut miscounted = command.to_vec();
        miscounted[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(refused(&miscounted).contains("of 4294967295 operations holds 3"));
        assert!(refused(&command[..command.len() - 1]).contains("malformed"));
        // A TTL the engine would refuse: 0 ms, written over the last put's.
        let mut zero_ttl = command.to_vec();
        let at = zero_ttl.len() - 8;
        zero_ttl[at..].copy_from_slice(&0u64.to_le_bytes());
        assert!(refused(&zero_ttl).contains("TTL"));
        // The engine refuses a TTL it cannot encode, and so does the encoder.
        let too_long = [
            RequestOp::Put {
                key: b"k",
                value: b"v",
                ttl_ms: u64::MAX,
            },
            RequestOp::Delete { key: b"d" },
        ];
        assert!(encode_plain_writes(&too_long, 3).is_none());
    }
}
