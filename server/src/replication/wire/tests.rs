//! Round trips of every field, the limits, and the framing on a stream.

use capnp::traits::HasStructSize;
use corekv_proto::peer_capnp::{conf_state, entry, raft_message, snapshot, snapshot_metadata};
use futures::executor::block_on;
use futures::io::Cursor;
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::convert::{self, message_types};
use super::*;

/// The body of a whole frame.
fn body(frame: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(
        frame.len(),
        FRAME_PREFIX_BYTES + len,
        "prefix counts the body"
    );
    &frame[FRAME_PREFIX_BYTES..]
}

fn round_trip(messages: &[Message]) {
    let frame = encode_messages(messages).unwrap();
    // Capnp's standard serialization of one segment: count - 1, the segment's words, the
    // segment (the sender writes the built frame's head and segment in turn).
    let b = body(&frame);
    let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!((word(0), word(4) * 8), (0, b.len() - 8));
    let built = build_messages(messages).unwrap();
    assert_eq!(built.parts().concat(), frame);
    assert_eq!(built.len(), frame.len());
    let expected = PeerFrame::Messages(messages.to_vec());
    // The body after the prefix is not 8-byte aligned (decoded from a copy); `read_frame`'s
    // buffer is (decoded in place): both.
    assert_eq!(decode_frame(body(&frame)).unwrap(), expected);
    let mut words = capnp::Word::allocate_zeroed_vec(body(&frame).len() / 8);
    capnp::Word::words_to_bytes_mut(&mut words).copy_from_slice(body(&frame));
    assert_eq!(
        decode_frame(capnp::Word::words_to_bytes(&words)).unwrap(),
        expected
    );
}

fn new_entry(entry_type: EntryType, term: u64, index: u64, data: &[u8], context: &[u8]) -> Entry {
    Entry {
        entry_type,
        term,
        index,
        data: data.to_vec().into(),
        context: context.to_vec().into(),
        sync_log: index % 2 == 1,
        ..Entry::default()
    }
}

fn sample_conf_state() -> ConfState {
    ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        voters_outgoing: vec![1, 2, 5],
        learners_next: vec![6, 7],
        auto_leave: true,
        ..ConfState::default()
    }
}

fn sample_snapshot() -> Snapshot {
    let mut metadata = SnapshotMetadata {
        index: 900,
        term: 7,
        ..SnapshotMetadata::default()
    };
    metadata.set_conf_state(sample_conf_state());
    let mut s = Snapshot {
        data: b"snapshot bytes".to_vec().into(),
        ..Snapshot::default()
    };
    s.set_metadata(metadata);
    s
}

/// A message of `msg_type` with every field set to something not default.
fn full_message(msg_type: MessageType) -> Message {
    let mut m = Message {
        msg_type,
        to: 2,
        from: 1,
        term: 7,
        log_term: 6,
        index: 1000,
        entries: vec![
            new_entry(EntryType::EntryNormal, 7, 1001, b"put k v", b""),
            new_entry(EntryType::EntryConfChange, 7, 1002, b"\x10\x03", b"ctx"),
            new_entry(EntryType::EntryConfChangeV2, 7, 1003, b"", b"only context"),
            new_entry(EntryType::EntryNormal, 7, 1004, &[0xff; 9], &[0; 17]),
        ]
        .into(),
        commit: 999,
        commit_term: 6,
        request_snapshot: 5,
        reject: true,
        reject_hint: 998,
        context: b"read index ctx".to_vec().into(),
        deprecated_priority: 3,
        priority: -4,
        ..Message::default()
    };
    m.set_snapshot(sample_snapshot());
    m
}

#[test]
fn struct_sizes_are_those_of_the_schema() {
    let words = |size: capnp::private::layout::StructSize| {
        usize::from(size.data) + usize::from(size.pointers)
    };
    assert_eq!(
        convert::RAFT_MESSAGE_WORDS,
        words(raft_message::Builder::STRUCT_SIZE)
    );
    assert_eq!(convert::ENTRY_WORDS, words(entry::Builder::STRUCT_SIZE));
    assert_eq!(
        convert::SNAPSHOT_WORDS,
        words(snapshot::Builder::STRUCT_SIZE)
    );
    assert_eq!(
        convert::SNAPSHOT_METADATA_WORDS,
        words(snapshot_metadata::Builder::STRUCT_SIZE)
    );
    assert_eq!(
        convert::CONF_STATE_WORDS,
        words(conf_state::Builder::STRUCT_SIZE)
    );
    assert_eq!(HELLO_WORDS, words(hello::Builder::STRUCT_SIZE));
    assert_eq!(
        FRAME_ROOT_WORDS,
        1 + words(peer_frame::Builder::STRUCT_SIZE)
    );
}

#[test]
fn type_tables_follow_the_protobuf_numbers() {
    for (number, t) in message_types().iter().enumerate() {
        assert_eq!(*t as usize, number, "{t:?}");
    }
    for (number, t) in convert::entry_types().iter().enumerate() {
        assert_eq!(*t as usize, number, "{t:?}");
    }
    // The last of each: raft-rs 0.7 has no more.
    assert_eq!(
        message_types().last(),
        Some(&MessageType::MsgRequestPreVoteResponse)
    );
    assert_eq!(
        convert::entry_types().last(),
        Some(&EntryType::EntryConfChangeV2)
    );
}

#[test]
fn every_message_type_round_trips_with_every_field() {
    let all: Vec<Message> = message_types().iter().map(|t| full_message(*t)).collect();
    for m in &all {
        round_trip(std::slice::from_ref(m));
    }
    round_trip(&all);
}

#[test]
fn defaults_empty_frames_and_presence_round_trip() {
    round_trip(&[]);
    round_trip(&[Message::default()]);
    // A set but empty snapshot, metadata and conf state stay set; unset ones stay unset.
    let mut with_empty = Message::default();
    with_empty.set_snapshot(Snapshot::default());
    round_trip(std::slice::from_ref(&with_empty));
    let mut meta = Snapshot::default();
    meta.set_metadata(SnapshotMetadata::default());
    with_empty.set_snapshot(meta.clone());
    round_trip(std::slice::from_ref(&with_empty));
    meta.mut_metadata().set_conf_state(ConfState::default());
    with_empty.set_snapshot(meta);
    round_trip(std::slice::from_ref(&with_empty));
    let decoded = decode_frame(body(&encode_messages(&[with_empty]).unwrap())).unwrap();
    let PeerFrame::Messages(m) = decoded else {
        panic!("not messages")
    };
    assert!(m[0].has_snapshot() && m[0].get_snapshot().get_metadata().has_conf_state());
    let decoded = decode_frame(body(&encode_messages(&[Message::default()]).unwrap())).unwrap();
    let PeerFrame::Messages(m) = decoded else {
        panic!("not messages")
    };
    assert!(!m[0].has_snapshot());
    // Extremes of every number.
    let mut max = full_message(MessageType::MsgAppend);
    for m in [u64::MAX, 0] {
        max.to = m;
        max.from = m;
        max.term = m;
        max.log_term = m;
        max.index = m;
        max.commit = m;
        max.commit_term = m;
        max.request_snapshot = m;
        max.reject_hint = m;
        max.deprecated_priority = m;
        max.priority = i64::MIN;
        round_trip(std::slice::from_ref(&max));
        max.priority = i64::MAX;
        round_trip(std::slice::from_ref(&max));
    }
}

#[test]
fn hello_round_trips() {
    let hello = Hello {
        protocol_version: PEER_PROTOCOL_VERSION,
        cluster_id: 0xdead_beef_0bad_cafe,
        from_node: 3,
        to_node: u64::MAX,
        shard: 17,
        shard_count: 18,
    };
    let frame = encode_hello(&hello);
    assert_eq!(decode_frame(body(&frame)).unwrap(), PeerFrame::Hello(hello));
}

#[test]
fn node_info_round_trips() {
    let info = NodeInfo {
        client_address: "127.0.0.1:7379".into(),
    };
    let frame = encode_node_info(&info);
    assert_eq!(
        decode_frame(body(&frame)).unwrap(),
        PeerFrame::NodeInfo(info)
    );
}

#[test]
fn snapshot_chunks_round_trip_and_one_over_a_frame_is_refused() {
    let chunk = SnapshotChunk {
        index: 1234,
        term: 7,
        file: "000042.sst".into(),
        offset: 1 << 20,
        data: (0..=255u8).cycle().take(5000).collect(),
        last: true,
        crc32c: 0xfeed_f00d,
    };
    let frame = encode_snapshot_chunk(&chunk).unwrap();
    assert_eq!(
        decode_frame(body(&frame)).unwrap(),
        PeerFrame::SnapshotChunk(chunk.clone())
    );
    let huge = SnapshotChunk {
        data: vec![0; PEER_FRAME_BYTES_MAX],
        ..chunk
    };
    assert!(matches!(
        encode_snapshot_chunk(&huge),
        Err(WireError::TooLarge { .. })
    ));
}

fn random_bytes(rng: &mut StdRng, len_max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=len_max);
    (0..len).map(|_| rng.r#gen()).collect()
}

fn random_ids(rng: &mut StdRng) -> Vec<u64> {
    (0..rng.gen_range(0..5)).map(|_| rng.r#gen()).collect()
}

fn random_message(rng: &mut StdRng) -> Message {
    let types = message_types();
    let entry_types = convert::entry_types();
    let mut m = Message {
        msg_type: types[rng.gen_range(0..types.len())],
        to: rng.r#gen(),
        from: rng.r#gen(),
        term: rng.r#gen(),
        log_term: rng.r#gen(),
        index: rng.r#gen(),
        entries: (0..rng.gen_range(0..6))
            .map(|_| Entry {
                entry_type: entry_types[rng.gen_range(0..entry_types.len())],
                term: rng.r#gen(),
                index: rng.r#gen(),
                data: random_bytes(rng, 40).into(),
                context: random_bytes(rng, 10).into(),
                sync_log: rng.r#gen(),
                ..Entry::default()
            })
            .collect::<Vec<_>>()
            .into(),
        commit: rng.r#gen(),
        commit_term: rng.r#gen(),
        request_snapshot: rng.r#gen(),
        reject: rng.r#gen(),
        reject_hint: rng.r#gen(),
        context: random_bytes(rng, 20).into(),
        deprecated_priority: rng.r#gen(),
        priority: rng.r#gen(),
        ..Message::default()
    };
    if rng.gen_bool(0.3) {
        let mut s = Snapshot {
            data: random_bytes(rng, 30).into(),
            ..Snapshot::default()
        };
        if rng.gen_bool(0.7) {
            let mut meta = SnapshotMetadata {
                index: rng.r#gen(),
                term: rng.r#gen(),
                ..SnapshotMetadata::default()
            };
            if rng.gen_bool(0.7) {
                meta.set_conf_state(ConfState {
                    voters: random_ids(rng),
                    learners: random_ids(rng),
                    voters_outgoing: random_ids(rng),
                    learners_next: random_ids(rng),
                    auto_leave: rng.r#gen(),
                    ..ConfState::default()
                });
            }
            s.set_metadata(meta);
        }
        m.set_snapshot(s);
    }
    m
}

#[test]
fn random_messages_round_trip_and_survive_mutation() {
    let seed = std::env::var("COREKV_WIRE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("seed {seed} (replay with COREKV_WIRE_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..300 {
        let messages: Vec<Message> = (0..rng.gen_range(0..5))
            .map(|_| random_message(&mut rng))
            .collect();
        round_trip(&messages);
        // Damaged copies decode to something or to an error, never a panic or a frame that
        // changes through another round trip.
        let frame = encode_messages(&messages).unwrap();
        for _ in 0..10 {
            let mut d = body(&frame).to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..d.len());
                d[i] ^= 1 << rng.gen_range(0..8);
            }
            fuzz_decode(&d);
        }
    }
}

/// A body laid out by hand: a `messages` frame whose list holds `count` structs of one data
/// word each (a version-1 `RaftMessage` has 15 words), then `padding_words` unused words.
fn short_struct_list(count: u64, padding_words: usize) -> Vec<u8> {
    let segment = [
        (1 << 32) | (1 << 48),         // root: struct, 1 data word, 1 pointer
        1,                             // PeerFrame: union discriminant 1 = messages
        1 | (7 << 32) | (count << 35), // list pointer: inline composite, `count` words
        (count << 2) | (1 << 32),      // tag: `count` structs of 1 data word
    ]
    .into_iter()
    .chain((0..count).map(|_| 3)) // msgType 3: MsgAppend
    .chain(std::iter::repeat_n(0, padding_words))
    .collect::<Vec<u64>>();
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&(segment.len() as u32).to_le_bytes());
    for w in segment {
        body.extend_from_slice(&w.to_le_bytes());
    }
    body
}

#[test]
fn lists_longer_than_their_bytes_are_refused() {
    // Short structs read as messages with every other field at its default, as long as the
    // body could hold the list at full size (here exactly: a body of 30 words, 2 × 15) ...
    let PeerFrame::Messages(m) = decode_frame(&short_struct_list(2, 23)).unwrap() else {
        panic!("not messages")
    };
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].get_msg_type(), MessageType::MsgAppend);
    assert_eq!(m[1].term, 0);
    // ... but a list that claims more elements than that is refused, even where the traversal
    // limit (the words actually read) would let it through.
    for (count, padding_words) in [(1, 0), (5, 0), (2, 22)] {
        match decode_frame(&short_struct_list(count, padding_words)) {
            Err(WireError::Malformed(why)) => assert!(why.contains("claims"), "{why}"),
            other => panic!("{count} {padding_words}: {other:?}"),
        }
    }
}

/// The body of a frame of one message of type `msg_type` holding one entry of `entry_type`.
fn with_numbers(msg_type: u16, entry_type: u8) -> Vec<u8> {
    let mut builder = capnp::message::Builder::new_default();
    {
        let root = builder.init_root::<peer_frame::Builder<'_>>();
        let mut m = root.init_messages(1).get(0);
        m.set_msg_type(msg_type);
        m.init_entries(1).get(0).set_entry_type(entry_type);
    }
    capnp::serialize::write_message_to_words(&builder)
}

#[test]
fn unknown_numbers_are_refused_by_name() {
    assert!(decode_frame(&with_numbers(18, 2)).is_ok());
    assert!(matches!(
        decode_frame(&with_numbers(19, 0)),
        Err(WireError::UnknownMessageType(19))
    ));
    assert!(matches!(
        decode_frame(&with_numbers(u16::MAX, 0)),
        Err(WireError::UnknownMessageType(u16::MAX))
    ));
    assert!(matches!(
        decode_frame(&with_numbers(0, 3)),
        Err(WireError::UnknownEntryType(3))
    ));
    // A frame kind from a newer protocol: the union's discriminant (the first data word of the
    // root struct, after the segment table and the root pointer).
    let mut frame = body(&encode_hello(&Hello {
        protocol_version: 1,
        cluster_id: 1,
        from_node: 1,
        to_node: 2,
        shard: 0,
        shard_count: 1,
    }))
    .to_vec();
    frame[16..18].copy_from_slice(&7u16.to_le_bytes());
    assert!(matches!(
        decode_frame(&frame),
        Err(WireError::UnknownFrameKind(7))
    ));
}

#[test]
fn trailing_bytes_garbage_and_over_limit_bodies_are_errors() {
    let frame = encode_messages(&[full_message(MessageType::MsgAppend)]).unwrap();
    let mut trailing = body(&frame).to_vec();
    trailing.extend_from_slice(&[0; 8]);
    assert!(matches!(
        decode_frame(&trailing),
        Err(WireError::Malformed(_))
    ));
    for garbage in [&[][..], &[0; 3], &[0xff; 64]] {
        assert!(decode_frame(garbage).is_err());
    }
    let huge = vec![0u8; PEER_FRAME_BYTES_MAX + 8];
    assert!(matches!(
        decode_frame(&huge),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn an_over_limit_frame_is_refused_before_it_is_built() {
    let mut m = Message::default();
    m.mut_entries().push(Entry {
        data: vec![0u8; PEER_FRAME_BYTES_MAX].into(),
        ..Entry::default()
    });
    match encode_messages(&[m]) {
        Err(WireError::TooLarge { len, max }) => {
            assert!(len > max as u64);
            assert_eq!(max, PEER_FRAME_BYTES_MAX);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn frames_are_read_one_by_one_from_a_stream() {
    let hello = Hello {
        protocol_version: 1,
        cluster_id: 9,
        from_node: 1,
        to_node: 2,
        shard: 3,
        shard_count: 4,
    };
    let batch: Vec<Message> = message_types().iter().map(|t| full_message(*t)).collect();
    let mut stream = encode_hello(&hello);
    stream.extend(encode_messages(&batch).unwrap());
    stream.extend(encode_messages(&[]).unwrap());
    let mut r = Cursor::new(stream);
    let mut buf = Vec::new();
    block_on(async {
        let b = read_frame(&mut r, &mut buf).await.unwrap().unwrap();
        assert_eq!(decode_frame(b).unwrap(), PeerFrame::Hello(hello));
        let b = read_frame(&mut r, &mut buf).await.unwrap().unwrap();
        assert_eq!(decode_frame(b).unwrap(), PeerFrame::Messages(batch));
        let b = read_frame(&mut r, &mut buf).await.unwrap().unwrap();
        assert_eq!(decode_frame(b).unwrap(), PeerFrame::Messages(Vec::new()));
        // Closed between frames.
        assert!(read_frame(&mut r, &mut buf).await.unwrap().is_none());
    });
}

#[test]
fn a_stream_cut_inside_a_frame_or_announcing_too_much_is_an_error() {
    let frame = encode_messages(&[full_message(MessageType::MsgAppend)]).unwrap();
    let mut buf = Vec::new();
    block_on(async {
        for cut in [1, 3, 4, frame.len() - 1] {
            let mut r = Cursor::new(frame[..cut].to_vec());
            match read_frame(&mut r, &mut buf).await {
                Err(WireError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "cut {cut}")
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        // An announced length over the limit is refused without reading (or allocating) it.
        let mut r = Cursor::new(u32::MAX.to_le_bytes().to_vec());
        buf = Vec::new();
        match read_frame(&mut r, &mut buf).await {
            Err(WireError::TooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, PEER_FRAME_BYTES_MAX);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.capacity(), 0);
        // A frame of exactly the limit's length is read (here: cut short, it is only announced).
        let announced = (PEER_FRAME_BYTES_MAX as u32).to_le_bytes();
        let mut r = Cursor::new([&announced[..], &[0; 16]].concat());
        assert!(matches!(
            read_frame(&mut r, &mut buf).await,
            Err(WireError::Io(_))
        ));
        assert!(
            buf.capacity() < 1 << 20,
            "grew with the bytes, not the announcement"
        );
    });
}

/// A reader that hands out at most `step` bytes per read, as a slow connection does.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
}

impl futures::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        out: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = out.len().min(self.step).min(self.bytes.len() - self.at);
        out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        std::task::Poll::Ready(Ok(n))
    }
}

#[test]
fn large_frames_arrive_in_pieces() {
    let mut big = full_message(MessageType::MsgAppend);
    big.mut_entries()[0].data = vec![7u8; 300 << 10].into(); // past several growth steps
    let batch = vec![big, full_message(MessageType::MsgHeartbeat)];
    let frame = encode_messages(&batch).unwrap();
    for step in [1, 7, 4096, usize::MAX] {
        let bytes = [frame.clone(), frame.clone()].concat();
        let mut r = Trickle { bytes, at: 0, step };
        let mut buf = Vec::new();
        block_on(async {
            for _ in 0..2 {
                let b = read_frame(&mut r, &mut buf).await.unwrap().unwrap();
                assert_eq!(decode_frame(b).unwrap(), PeerFrame::Messages(batch.clone()));
            }
            assert!(read_frame(&mut r, &mut buf).await.unwrap().is_none());
        });
    }
}

#[test]
fn the_buffer_is_reused() {
    let frame = encode_messages(&[full_message(MessageType::MsgAppend)]).unwrap();
    let stream = [frame.clone(), frame.clone(), frame].concat();
    let mut r = Cursor::new(stream);
    let mut buf = Vec::new();
    block_on(async {
        read_frame(&mut r, &mut buf).await.unwrap().unwrap();
        let (ptr, capacity) = (buf.as_ptr(), buf.capacity());
        read_frame(&mut r, &mut buf).await.unwrap().unwrap();
        read_frame(&mut r, &mut buf).await.unwrap().unwrap();
        assert_eq!((buf.as_ptr(), buf.capacity()), (ptr, capacity));
    });
}
