//! Entry point for fuzzing and property tests of the server's request decoding: a
//! frame as the server's RPC layer reads it (`capnp::serialize`, with the server's traversal
//! limit), then the RPC message, and for a call to `CoreKv` the parameters decoded as
//! `corekv-server`'s service does for each method (keys, values, TTLs, CAS, scan and column
//! operations, batch lists through [`crate::codec`]). Arbitrary bytes must never panic, loop or allocate
//! beyond a small multiple of their size. Used by `proto/tests/decode_requests.rs` (stable,
//! in CI) and the cargo-fuzz targets in `tests/fuzz/`. Not part of the client API. [`entity`]
//! does the same for the entity and counter decoders, which read stored values.

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_capnp::message;

use crate::codec;
use crate::corekv_capnp::core_kv;

/// The server's limit on one frame (`corekv-server`'s `frame_bytes_max` default).
pub const FRAME_BYTES_MAX: usize = 80 << 20;

/// Most operations of a batch the decoder looks at (the server refuses longer batches before
/// decoding them).
const BATCH_OPS_MAX: usize = 10_000;

fn options() -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(FRAME_BYTES_MAX / 8));
    options
}

/// Decodes `bytes` as one request frame; every failure is a clean `Err` inside, never a panic.
pub fn request(bytes: &[u8]) {
    let mut slice = bytes;
    let Ok(msg) = capnp::serialize::read_message_from_flat_slice(&mut slice, options()) else {
        return;
    };
    // As the RPC layer sees it: a message, maybe a call to one of our methods.
    if let Ok(m) = msg.get_root::<message::Reader<'_>>()
        && let Ok(message::Call(Ok(call))) = m.which()
        && let Ok(params) = call.get_params()
    {
        let _ = call.get_interface_id();
        let content = params.get_content();
        let _ = decode_params(call.get_method_id(), content);
    }
    // The parameter structs as roots, whatever the wrapper: the decoders behind the RPC layer
    // see every shape of them.
    if let Ok(root) = msg.get_root::<capnp::any_pointer::Reader<'_>>() {
        for method in 0..=12 {
            let _ = decode_params(method, root);
        }
    }
}

/// What the service does with the parameters of method `method` (numbers from the schema).
fn decode_params(method: u16, content: capnp::any_pointer::Reader<'_>) -> capnp::Result<()> {
    match method {
        0 => {
            let p = content.get_as::<core_kv::get_params::Reader<'_>>()?;
            let _ = p.get_key()?.to_vec();
        }
        1 => {
            let p = content.get_as::<core_kv::put_params::Reader<'_>>()?;
            let _ = (
                p.get_key()?.to_vec(),
                p.get_value()?.to_vec(),
                p.get_ttl_ms(),
            );
        }
        2 => {
            let p = content.get_as::<core_kv::delete_params::Reader<'_>>()?;
            let _ = p.get_key()?.to_vec();
        }
        3 => {
            let p = content.get_as::<core_kv::cas_params::Reader<'_>>()?;
            let _ = codec::read_cas_op(p.get_op()?);
        }
        4 => {
            let p = content.get_as::<core_kv::scan_params::Reader<'_>>()?;
            let _ = codec::read_scan_op(p.get_op()?);
        }
        5 => {
            let p = content.get_as::<core_kv::batch_params::Reader<'_>>()?;
            let list = p.get_ops()?;
            if (list.len() as usize) <= BATCH_OPS_MAX {
                let mut ops = Vec::with_capacity(list.len() as usize);
                for r in list.iter() {
                    ops.push(codec::read_op(r)?);
                }
            }
        }
        6 => {
            let _ = content.get_as::<core_kv::topology_params::Reader<'_>>()?;
        }
        9 => {
            let p = content.get_as::<core_kv::put_entity_params::Reader<'_>>()?;
            let _ = codec::read_put_entity_op(p.get_op()?);
        }
        10 => {
            let p = content.get_as::<core_kv::update_columns_params::Reader<'_>>()?;
            let _ = codec::read_update_columns_op(p.get_op()?);
        }
        11 => {
            let p = content.get_as::<core_kv::get_columns_params::Reader<'_>>()?;
            let _ = codec::read_get_columns_op(p.get_op()?);
        }
        12 => {
            let p = content.get_as::<core_kv::increment_params::Reader<'_>>()?;
            let _ = codec::read_increment_op(p.get_op()?);
        }
        _ => {
            let _ = content.get_as::<core_kv::stats_params::Reader<'_>>()?;
        }
    }
    Ok(())
}

/// Decodes `bytes` as a stored value the column operations read: an entity, and a counter.
pub fn entity(bytes: &[u8]) {
    if let Some(columns) = crate::entity::decode(bytes) {
        // What decodes re-encodes to the same bytes: the encoding is canonical.
        let again = crate::entity::encode_sorted(columns.iter().copied());
        assert_eq!(
            again, bytes,
            "an entity decoded but does not re-encode to itself"
        );
    }
    if let Some(v) = crate::entity::decode_counter(bytes) {
        assert_eq!(
            crate::entity::encode_counter(v),
            bytes,
            "a counter is not canonical"
        );
    }
}
