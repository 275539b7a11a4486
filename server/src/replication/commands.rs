//! What a replicated shard's Raft entries carry: the operations of one request, and what
//! applying them answered.
//!
//! Both use the public schema (`proto/schema/corekv.capnp`) through the same codec as the
//! client protocol: a command is a `batch` call's parameters (`ops :List(Op)`), an answer its
//! results (`results :List(OpResult)`), each one Cap'n Proto message in flat form. Entries
//! come from peers' logs, so decoding bounds what it reads like the request path does.

use capnp::message::{Builder, ReaderOptions};
use corekv_proto::codec::{read_op, read_result, write_op, write_result};
use corekv_proto::corekv_capnp::core_kv;
use corekv_proto::{Op, OpResult};

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
    let words = capnp::serialize::compute_serialized_size_in_words(&message);
    let mut out = Vec::with_capacity(prefix_bytes + words * 8);
    out.resize(prefix_bytes, 0);
    // Writing to a Vec cannot fail.
    let _ = capnp::serialize::write_message(&mut out, &message);
    out
}

/// Decodes an entry's command.
pub fn decode_ops(bytes: &[u8]) -> capnp::Result<Vec<Op>> {
    // Capnp reads segments in place only when they are 8-byte aligned; a command is a view
    // into its entry's bytes, so one that is not is read from an aligned copy (an error here
    // must depend on the bytes alone: every replica answers alike).
    if (bytes.as_ptr() as usize) % 8 != 0 {
        let mut words = capnp::Word::allocate_zeroed_vec(bytes.len().div_ceil(8));
        capnp::Word::words_to_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
        return decode_ops_aligned(&capnp::Word::words_to_bytes(&words)[..bytes.len()]);
    }
    decode_ops_aligned(bytes)
}

fn decode_ops_aligned(bytes: &[u8]) -> capnp::Result<Vec<Op>> {
    let mut slice = bytes;
    let message = capnp::serialize::read_message_from_flat_slice(&mut slice, options(bytes.len()))?;
    let params = message.get_root::<core_kv::batch_params::Reader<'_>>()?;
    params.get_ops()?.iter().map(read_op).collect()
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
        }
    }
}
