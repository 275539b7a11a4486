use super::*;
use capnp::message::{Builder, HeapAllocator, ReaderOptions};

fn found(value: Vec<u8>) -> Versioned {
    Versioned { value, sequence: 5 }
}

fn round_trip_op(o: &Op) -> Op {
    let mut msg = Builder::new_default();
    write_op(msg.init_root::<op::Builder<'_>>(), o);
    let bytes = capnp::serialize::write_message_to_words(&msg);
    let reader =
        capnp::serialize::read_message(&mut bytes.as_slice(), ReaderOptions::new()).unwrap();
    read_op(reader.get_root::<op::Reader<'_>>().unwrap()).unwrap()
}

fn round_trip_result(r: &OpResult) -> OpResult {
    let mut msg: Builder<HeapAllocator> = Builder::new_default();
    write_result(msg.init_root::<op_result::Builder<'_>>(), r);
    let bytes = capnp::serialize::write_message_to_words(&msg);
    let reader =
        capnp::serialize::read_message(&mut bytes.as_slice(), ReaderOptions::new()).unwrap();
    read_result(reader.get_root::<op_result::Reader<'_>>().unwrap()).unwrap()
}

#[test]
fn result_wire_bytes_bounds_the_encoded_size_of_a_list_of_results() {
    let results = [
        OpResult::Error(OpError::new(ErrorCode::BatchTooLarge, "x".repeat(77))),
        OpResult::Get(None),
        OpResult::Get(Some(found(vec![]))),
        OpResult::Get(Some(found(vec![7; 8]))),
        OpResult::Get(Some(found(vec![7; 1001]))),
        OpResult::Write { sequence: 9 },
        OpResult::Cas(CasResult {
            succeeded: false,
            sequence: 0,
            current: Some(vec![1; 13]),
        }),
        OpResult::Scan(ScanResult {
            entries: (0..50)
                .map(|i| (vec![i as u8; i], vec![i as u8; 3 * i]))
                .collect(),
            more: true,
            continuation: vec![5; 17],
        }),
    ];
    // Each alone, then all in one list (as a `batch` reply carries them).
    let one = list_message_bytes;
    let empty = one(&[]);
    for r in &results {
        let encoded = one(std::slice::from_ref(r)) - empty;
        assert!(
            encoded <= result_wire_bytes(r),
            "{r:?}: {encoded} bytes encoded, bound {}",
            result_wire_bytes(r)
        );
    }
    let all: usize = results.iter().map(result_wire_bytes).sum();
    assert!(one(&results) - empty <= all);
}

/// Encodes `results` as one list, as a `batch` reply carries them; the message's size.
fn list_message_bytes(results: &[OpResult]) -> usize {
    let mut msg: Builder<HeapAllocator> = Builder::new_default();
    let mut list =
        msg.initn_root::<capnp::struct_list::Builder<'_, op_result::Owned>>(results.len() as u32);
    for (i, r) in results.iter().enumerate() {
        write_result(list.reborrow().get(i as u32), r);
    }
    capnp::serialize::compute_serialized_size_in_words(&msg) * 8
}

#[test]
fn a_reply_of_results_up_to_the_cap_is_within_the_default_reader_limit() {
    // Values of one size, and mixed: the segment ends left unused differ.
    let sizes: [&[usize]; 4] = [
        &[8 << 20],
        &[1 << 20],
        &[100 << 10],
        &[8 << 20, 3, 1 << 20, 5000, 3 << 20, 0, 777_777],
    ];
    for pattern in sizes {
        let mut results = Vec::new();
        let mut bytes = 0;
        for &len in pattern.iter().cycle() {
            let r = OpResult::Get(Some(found(vec![1; len])));
            if bytes + result_wire_bytes(&r) > REPLY_RESULT_BYTES_MAX {
                break;
            }
            bytes += result_wire_bytes(&r);
            results.push(r);
        }
        let encoded = list_message_bytes(&results);
        assert!(
            encoded <= bytes + (64 << 10),
            "{pattern:?}: {encoded} > {bytes}"
        );
        assert!(
            encoded + (1 << 20) <= DEFAULT_READER_LIMIT_BYTES,
            "{pattern:?}: {encoded} bytes"
        );
    }
}

#[test]
fn every_op_round_trips() {
    let ops = [
        Op::Get { key: b"k".to_vec() },
        Op::Put {
            key: vec![0, 255, 10],
            value: vec![],
            ttl_ms: 1500,
        },
        Op::Delete { key: b"d".to_vec() },
        Op::Cas(CasOp {
            key: b"c".to_vec(),
            expected: Expected::Absent,
            new: Some(b"v".to_vec()),
            ttl_ms: 0,
        }),
        Op::Cas(CasOp {
            key: b"c".to_vec(),
            expected: Expected::Value(vec![]),
            new: None,
            ttl_ms: 7,
        }),
        Op::Scan(ScanOp {
            start: b"a".to_vec(),
            end: vec![],
            limit: 3,
            reverse: true,
        }),
    ];
    for o in &ops {
        assert_eq!(&round_trip_op(o), o);
    }
}

#[test]
fn every_result_round_trips() {
    let results = [
        OpResult::Get(None),
        OpResult::Get(Some(found(vec![]))),
        OpResult::Get(Some(Versioned {
            value: vec![1, 2, 3],
            sequence: 77,
        })),
        OpResult::Write { sequence: 42 },
        OpResult::Cas(CasResult {
            succeeded: false,
            sequence: 0,
            current: Some(b"x".to_vec()),
        }),
        OpResult::Cas(CasResult {
            succeeded: true,
            sequence: 9,
            current: None,
        }),
        OpResult::Scan(ScanResult {
            entries: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])],
            more: true,
            continuation: b"b\0".to_vec(),
        }),
        OpResult::Error(OpError::too_large(ErrorCode::ValueTooLarge, "value", 10, 8)),
        OpResult::Error(OpError::new(ErrorCode::Corruption, "bad block")),
    ];
    for r in &results {
        assert_eq!(&round_trip_result(r), r);
    }
}

#[test]
fn an_empty_value_is_found_not_missing() {
    // `found` carries presence; an empty value must not read back as a missing key.
    assert_eq!(
        round_trip_result(&OpResult::Get(Some(found(vec![])))),
        OpResult::Get(Some(found(vec![])))
    );
}

#[test]
fn scan_resume_moves_the_right_bound() {
    let fwd = ScanOp {
        start: b"a".to_vec(),
        end: b"z".to_vec(),
        limit: 2,
        reverse: false,
    };
    assert_eq!(fwd.resume(b"c\0").start, b"c\0");
    assert_eq!(fwd.resume(b"c\0").end, b"z");
    let rev = ScanOp {
        reverse: true,
        ..fwd
    };
    assert_eq!(rev.resume(b"q").end, b"q");
    assert_eq!(rev.resume(b"q").start, b"a");
}
