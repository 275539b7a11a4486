//! Entry points for fuzzing and property tests of every decoder that reads bytes from disk:
//! WAL segments and records, write-batch payloads, SSTable blocks, footers and filters,
//! manifest records and edits. Each takes arbitrary bytes and must return without panicking,
//! looping or allocating more than a small multiple of its input.
//!
//! Checksums guard every on-disk structure, so random bytes rarely get past them; the entry
//! points therefore also call the decoders behind the checksum directly (a block's payload, a
//! WAL payload, a manifest edit), as damage with a matching checksum — or a bug in a writer —
//! would reach them. Used by `storage/tests/decoders.rs` (stable, in CI) and by the cargo-fuzz
//! targets in `tests/fuzz/` (nightly, for long runs). Not part of the engine's API.

use std::path::Path;

use crate::batch::BatchIter;
use crate::manifest::{ManifestState, Record, VersionEdit, read_record};
use crate::memtable::Memtable;
use crate::sst::block::{BlockKind, BlockRef};
use crate::sst::filter::Filter;
use crate::sst::footer::Footer;
use crate::sst::{BlockHandle, check_trailer, decode_data_value};
use crate::wal::{Replayed, reader, record, segment};

/// Levels a fuzzed manifest state may use (the engine's default).
const LEVELS_MAX: usize = 7;

/// A whole WAL segment file: header, record scan, and replay of every record found into a
/// memtable, as recovery does.
pub fn wal_segment(data: &[u8]) {
    let header = segment::Header::decode(data).ok();
    let first = header.map_or(1, |h| h.first_index);
    let scan = reader::scan(
        data,
        first,
        // Without a header (a slice of a segment), the unsalted rule, so replay is reached.
        header.map_or(reader::SegmentFormat::V2, |h| h.format()),
    );
    let mut memtable = Memtable::new();
    let mut last_seq = 0;
    for r in &scan.records {
        let Some(payload) = data.get(r.payload_start..r.payload_start + r.payload_len) else {
            panic!("scan returned a record outside the data");
        };
        let _ = crate::engine::replay_record(
            &mut memtable,
            &mut last_seq,
            0,
            Replayed {
                index: r.index,
                payload,
                file: Path::new("fuzz"),
                offset: r.offset,
            },
        );
    }
}

/// One WAL frame, and the bytes as a WAL payload (a write batch with its header) replayed
/// into a memtable.
pub fn wal_record(data: &[u8]) {
    let _ = record::decode(data, None);
    let _ = record::decode(data, Some(0x5eed));
    let mut memtable = Memtable::new();
    let mut last_seq = 0;
    let _ = crate::engine::replay_record(
        &mut memtable,
        &mut last_seq,
        0,
        Replayed {
            index: 1,
            payload: data,
            file: Path::new("fuzz"),
            offset: 0,
        },
    );
}

/// A write batch's operations (the part of a WAL payload after its header).
pub fn write_batch(data: &[u8]) {
    for op in BatchIter::new(data) {
        if op.is_err() {
            break;
        }
    }
}

/// An SSTable block: its trailer, then the payload (and the raw bytes, as if the checksum
/// matched) parsed as a data block and as an index/props block, every entry read and a few
/// searches run.
pub fn sst_block(data: &[u8]) {
    if let Ok((payload, _code)) = check_trailer(data) {
        block_payload(payload);
    }
    block_payload(data);
}

fn block_payload(payload: &[u8]) {
    if let Ok(block) = BlockRef::parse(payload, BlockKind::Data) {
        for i in 0..block.len() {
            let e = block.data_entry(i);
            let _ = block.lower_bound(e.key);
            let _ = block.lower_bound_binary(e.key);
        }
        for target in [
            &b""[..],
            b"\x00",
            b"m",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            let _ = block.lower_bound(target);
        }
    }
    if let Ok(block) = BlockRef::parse(payload, BlockKind::Plain) {
        for i in 0..block.len() {
            let (k, v) = block.entry(i);
            let _ = BlockHandle::decode(v);
            let _ = decode_data_value(k, v);
            let _ = block.lower_bound(k);
        }
    }
}

/// An SSTable footer, at the end of files of several sizes.
pub fn sst_footer(data: &[u8]) {
    let len = data.len() as u64;
    for file_size in [len, len.saturating_mul(2), u64::MAX] {
        if let Ok(f) = Footer::decode(data, file_size) {
            let _ = (f.filter(), f.index(), f.props());
        }
    }
}

/// An SSTable's filter block, and lookups in it.
pub fn sst_filter(data: &[u8]) {
    if let Ok(f) = Filter::decode(data) {
        for h in [0, 1, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
            let _ = f.may_contain(h);
        }
    }
}

/// One manifest edit, applied to an empty state.
pub fn manifest_edit(data: &[u8]) {
    if let Ok(e) = VersionEdit::decode(data) {
        let mut state = ManifestState::default();
        let _ = state.apply(&e, LEVELS_MAX);
        let _ = state.snapshot_edit().encode();
    }
}

/// A manifest log file: records read page by page, each decoded and applied, as opening the
/// engine does.
pub fn manifest_log(data: &[u8]) {
    let mut state = ManifestState::default();
    let mut at = 0;
    while let Record::Ok(payload, next) = read_record(data, at) {
        assert!(next > at, "the manifest reader did not move forward");
        if let Ok(e) = VersionEdit::decode(payload) {
            let _ = state.apply(&e, LEVELS_MAX);
        }
        at = next;
    }
}

/// Every decoder above, on the same bytes.
pub fn all(data: &[u8]) {
    wal_segment(data);
    wal_record(data);
    write_batch(data);
    sst_block(data);
    sst_footer(data);
    sst_filter(data);
    manifest_edit(data);
    manifest_log(data);
}
