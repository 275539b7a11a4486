//! Peer messages on the wire: Raft messages between nodes, in `proto/schema/peer.capnp`,
//! converted field by field to and from raft-rs's `eraftpb` types. Protobuf bytes never cross
//! the network (rust-protobuf 2 has RUSTSEC-2024-0437), so nothing read from a peer is ever
//! handed to a protobuf decoder by this module.
//!
//! # Frames (peer protocol version 2)
//!
//! A peer connection is a sequence of frames:
//!
//! ```text
//!  offset 0          4                                            4 + len
//!         +----------+--------------------------------------------+
//!         | len: u32 | body: one Cap'n Proto message, flat         |
//!         | (little  | (`capnp::serialize`: segment table, then    |
//!         |  endian) | segments), root `PeerFrame` of peer.capnp   |
//!         +----------+--------------------------------------------+
//! ```
//!
//! `len` counts the body only and is at most [`PEER_FRAME_BYTES_MAX`]; a larger one is refused
//! before anything is allocated for it. The first frame is a `hello` ([`Hello`]), every later
//! one a list of Raft messages or, on a snapshot's connection, a [`SnapshotChunk`]. The body holds exactly one message: trailing bytes are an error.
//!
//! # Limits on what a peer can make us do
//!
//! - A body over [`PEER_FRAME_BYTES_MAX`] is refused ([`WireError::TooLarge`]).
//! - Decoding reads at most as many words as the body has (the traversal limit), so pointers
//!   that alias one another cannot multiply the work; nesting is at most [`NESTING_MAX`].
//! - A list claiming more elements than the body can hold at the schema's smallest element
//!   size is [`WireError::Malformed`]: a length field never sizes an allocation on its own.
//! - A message or entry type number this version does not know is refused by name
//!   ([`WireError::UnknownMessageType`], [`WireError::UnknownEntryType`]).

mod convert;
#[cfg(test)]
mod tests;

use capnp::message::{Builder, HeapAllocator, ReaderOptions};
use corekv_proto::peer_capnp::{hello, peer_frame};
use futures::{AsyncRead, AsyncReadExt};
use raft::eraftpb::Message;

/// The version of `proto/schema/peer.capnp` this node speaks, sent in [`Hello`].
pub const PEER_PROTOCOL_VERSION: u32 = 2;

/// Largest frame body, in bytes: Raft messages are batched per `Ready` and raft-rs's
/// `max_size_per_msg` keeps appends far below this; a snapshot's data must be sent in pieces
/// under it.
pub const PEER_FRAME_BYTES_MAX: usize = 64 << 20;

/// Bytes of a frame's length prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Deepest pointer nesting a frame needs is 6 (frame → messages → message → snapshot →
/// metadata → conf state → voters); a little room for fields added later.
pub const NESTING_MAX: i32 = 16;

/// The first step of a frame buffer's growth in [`read_frame`], in bytes.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Words of the frame's root pointer and its `PeerFrame` struct (1 data word, 1 pointer).
const FRAME_ROOT_WORDS: usize = 1 + 2;

/// Words of a `Hello` struct (5 data words, no pointer).
const HELLO_WORDS: usize = 5;

/// What went wrong reading or writing a peer frame. Every variant but `Io` means the peer sent
/// something this node will not accept: close the connection (and count it).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A frame over the limit, announced by a peer or about to be sent.
    #[error("peer frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The frame body's length in bytes.
        len: u64,
        /// [`PEER_FRAME_BYTES_MAX`].
        max: usize,
    },
    /// The body is not a valid `PeerFrame` (bad pointers, a list longer than its bytes,
    /// trailing bytes, over the traversal or nesting limit, ...).
    #[error("malformed peer frame: {0}")]
    Malformed(String),
    /// A frame kind (union member of `PeerFrame`) this version does not know.
    #[error("unknown peer frame kind {0}: the peer speaks a newer protocol")]
    UnknownFrameKind(u16),
    /// A Raft message type number `eraftpb::MessageType` does not have.
    #[error("unknown Raft message type {0}: the peer runs another raft-rs version")]
    UnknownMessageType(u16),
    /// A Raft entry type number `eraftpb::EntryType` does not have.
    #[error("unknown Raft entry type {0}: the peer runs another raft-rs version")]
    UnknownEntryType(u8),
    /// Reading the connection failed, or it closed inside a frame.
    #[error("peer connection: {0}")]
    Io(#[from] std::io::Error),
}

impl From<capnp::Error> for WireError {
    fn from(e: capnp::Error) -> Self {
        WireError::Malformed(e.to_string())
    }
}

/// The first frame on a peer connection: who connects to whom, for which Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// [`PEER_PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u32,
    /// The cluster both nodes must belong to.
    pub cluster_id: u64,
    /// The sender's Raft node id.
    pub from_node: u64,
    /// The Raft node id the sender means to reach.
    pub to_node: u64,
    /// The shard (Raft group) whose messages follow.
    pub shard: u32,
    /// The sender's number of shards (every node of a cluster runs the same).
    pub shard_count: u32,
}

/// A piece of one file of a snapshot (see `peer.capnp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The last Raft entry the snapshot holds.
    pub index: u64,
    /// That entry's term.
    pub term: u64,
    /// The file's name in the checkpoint directory.
    pub file: String,
    /// Where `data` goes in the file.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// The file's final chunk.
    pub last: bool,
    /// With `last`: the CRC-32C of the whole file.
    pub crc32c: u32,
}

/// What a node tells its peers about itself (see `peer.capnp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Where clients reach it, `host:port`.
    pub client_address: String,
}

/// A whole frame (length prefix and body) holding `info`.
pub fn encode_node_info(info: &NodeInfo) -> Vec<u8> {
    let mut builder = Builder::new_default();
    builder
        .init_root::<peer_frame::Builder<'_>>()
        .init_node_info()
        .set_client_address(info.client_address.as_str());
    let body = capnp::serialize::write_message_to_words(&builder);
    let mut frame = Vec::with_capacity(FRAME_PREFIX_BYTES + body.len());
    frame.extend_from_slice(&body_len_prefix(body.len()));
    frame.extend_from_slice(&body);
    frame
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerFrame {
    /// The connection's opening frame.
    Hello(Hello),
    /// Raft messages, in send order.
    Messages(Vec<Message>),
    /// A piece of a snapshot's file.
    SnapshotChunk(SnapshotChunk),
    /// The sender's client address.
    NodeInfo(NodeInfo),
}

/// A whole frame (length prefix and body) holding `chunk`, or [`WireError::TooLarge`] when
/// its data does not fit in one.
pub fn encode_snapshot_chunk(chunk: &SnapshotChunk) -> Result<Vec<u8>, WireError> {
    let mut builder = Builder::new_default();
    {
        let root = builder.init_root::<peer_frame::Builder<'_>>();
        let mut c = root.init_snapshot_chunk();
        c.set_index(chunk.index);
        c.set_term(chunk.term);
        c.set_file(chunk.file.as_str());
        c.set_offset(chunk.offset);
        c.set_data(&chunk.data);
        c.set_last(chunk.last);
        c.set_crc32c(chunk.crc32c);
    }
    let body_bytes = capnp::serialize::compute_serialized_size_in_words(&builder) * 8;
    if body_bytes > PEER_FRAME_BYTES_MAX {
        return Err(WireError::TooLarge {
            len: body_bytes as u64,
            max: PEER_FRAME_BYTES_MAX,
        });
    }
    let mut frame = Vec::with_capacity(FRAME_PREFIX_BYTES + body_bytes);
    frame.extend_from_slice(&body_len_prefix(body_bytes));
    capnp::serialize::write_message(&mut frame, &builder)
        .map_err(|e| WireError::Io(std::io::Error::other(e.to_string())))?;
    Ok(frame)
}

/// A whole frame (length prefix and body) holding `hello`.
pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let content_words = FRAME_ROOT_WORDS + HELLO_WORDS;
    let mut builder =
        Builder::new(HeapAllocator::new().first_segment_words(word_count(content_words)));
    write_hello(
        builder.init_root::<peer_frame::Builder<'_>>().init_hello(),
        hello,
    );
    let body = capnp::serialize::write_message_to_words(&builder);
    // One segment (a one-word segment table) of exactly the words counted.
    debug_assert_eq!(body.len(), 8 * (1 + content_words));
    let mut frame = Vec::with_capacity(FRAME_PREFIX_BYTES + body.len());
    frame.extend_from_slice(&body_len_prefix(body.len()));
    frame.extend_from_slice(&body);
    frame
}

fn write_hello(mut h: hello::Builder<'_>, hello: &Hello) {
    h.set_protocol_version(hello.protocol_version);
    h.set_cluster_id(hello.cluster_id);
    h.set_from_node(hello.from_node);
    h.set_to_node(hello.to_node);
    h.set_shard(hello.shard);
    h.set_shard_count(hello.shard_count);
}

/// A whole frame (length prefix and body) holding `messages`, or [`WireError::TooLarge`]
/// (checked before building it) when it would pass [`PEER_FRAME_BYTES_MAX`]: send fewer
/// messages per frame, or a snapshot in pieces.
pub fn encode_messages(messages: &[Message]) -> Result<Vec<u8>, WireError> {
    let built = build_messages(messages)?;
    let mut frame = Vec::with_capacity(built.len());
    for part in built.parts() {
        frame.extend_from_slice(part);
    }
    Ok(frame)
}

/// A `Messages` frame as built ([`build_messages`]): the bytes before its one segment (the
/// length prefix and the segment table) and the builder that holds the segment. A sender
/// writes the two parts in turn, so a frame of many entries is never copied whole into a
/// buffer of its own.
pub struct MessagesFrame {
    head: [u8; FRAME_PREFIX_BYTES + 8],
    builder: Builder<HeapAllocator>,
}

impl MessagesFrame {
    /// The frame's bytes, in order: the head, then the segment.
    pub fn parts(&self) -> [&[u8]; 2] {
        let segment = self.builder.get_segments_for_output()[0];
        [&self.head, segment]
    }

    /// Bytes of the whole frame.
    pub(crate) fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }
}

/// [`encode_messages`] as a [`MessagesFrame`], whose parts are written in turn.
pub fn build_messages(messages: &[Message]) -> Result<MessagesFrame, WireError> {
    // The exact size first: one segment of it, and no frame built that cannot be sent.
    let content_words = messages
        .iter()
        .map(convert::message_words)
        .fold(FRAME_ROOT_WORDS + 1, usize::saturating_add); // + 1: the list's tag word
    let segment_table_words = 1;
    let body_bytes = content_words
        .saturating_add(segment_table_words)
        .saturating_mul(8);
    if body_bytes > PEER_FRAME_BYTES_MAX {
        return Err(WireError::TooLarge {
            len: body_bytes as u64,
            max: PEER_FRAME_BYTES_MAX,
        });
    }
    let mut builder =
        Builder::new(HeapAllocator::new().first_segment_words(word_count(content_words)));
    {
        let root = builder.init_root::<peer_frame::Builder<'_>>();
        let count = u32::try_from(messages.len()).map_err(|_| WireError::TooLarge {
            len: body_bytes as u64,
            max: PEER_FRAME_BYTES_MAX,
        })?;
        let mut list = root.init_messages(count);
        for (i, m) in (0..count).zip(messages) {
            convert::write_message(list.reborrow().get(i), m);
        }
    }
    let written_bytes = capnp::serialize::compute_serialized_size_in_words(&builder) * 8;
    // The size computed by hand and the one capnp lays out must agree, or the limit check
    // above checked something else.
    assert_eq!(
        written_bytes, body_bytes,
        "peer frame size estimate differs from the encoding"
    );
    // The standard serialization of a one-segment message: segment count - 1 (0), the
    // segment's size in words, then the segment.
    let segment_words = {
        let segments = builder.get_segments_for_output();
        assert_eq!(
            segments.len(),
            1,
            "the frame's one segment was sized exactly"
        );
        segments[0].len() / 8
    };
    assert_eq!(
        (segment_words + segment_table_words) * 8,
        body_bytes,
        "peer frame segment size differs from the estimate"
    );
    let mut head = [0u8; FRAME_PREFIX_BYTES + 8];
    head[..FRAME_PREFIX_BYTES].copy_from_slice(&body_len_prefix(body_bytes));
    head[FRAME_PREFIX_BYTES + 4..].copy_from_slice(&word_count(segment_words).to_le_bytes());
    Ok(MessagesFrame { head, builder })
}

/// `words` as the allocator takes it; callers checked it is under the frame limit.
fn word_count(words: usize) -> u32 {
    u32::try_from(words).unwrap_or(u32::MAX)
}

fn body_len_prefix(body_bytes: usize) -> [u8; FRAME_PREFIX_BYTES] {
    assert!(
        body_bytes <= PEER_FRAME_BYTES_MAX,
        "peer frame of {body_bytes} bytes"
    );
    u32::try_from(body_bytes).unwrap_or(u32::MAX).to_le_bytes()
}

/// Reader options for a body of `body_bytes`: an honest message reads each of its words once,
/// so it never needs to read more words than the body holds.
fn reader_options(body_bytes: usize) -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(body_bytes / 8))
        .nesting_limit(NESTING_MAX);
    options
}

/// Decodes a frame body (what [`read_frame`] returns). Any bytes give `Ok` or a [`WireError`],
/// never a panic.
pub fn decode_frame(body: &[u8]) -> Result<PeerFrame, WireError> {
    if body.len() > PEER_FRAME_BYTES_MAX {
        return Err(WireError::TooLarge {
            len: body.len() as u64,
            max: PEER_FRAME_BYTES_MAX,
        });
    }
    // Cap'n Proto reads words in place and needs them 8-byte aligned; a buffer from the
    // allocator is, a slice of one (a test, a fuzzer) may not be: copy it then.
    if body.as_ptr().align_offset(8) != 0 {
        let mut words = capnp::Word::allocate_zeroed_vec(body.len().div_ceil(8));
        let aligned = &mut capnp::Word::words_to_bytes_mut(&mut words)[..body.len()];
        aligned.copy_from_slice(body);
        return decode_aligned(aligned);
    }
    decode_aligned(body)
}

fn decode_aligned(body: &[u8]) -> Result<PeerFrame, WireError> {
    let mut rest = body;
    let message =
        capnp::serialize::read_message_from_flat_slice(&mut rest, reader_options(body.len()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    let root = message.get_root::<peer_frame::Reader<'_>>()?;
    match root.which() {
        Ok(peer_frame::Hello(h)) => {
            let h = h?;
            Ok(PeerFrame::Hello(Hello {
                protocol_version: h.get_protocol_version(),
                cluster_id: h.get_cluster_id(),
                from_node: h.get_from_node(),
                to_node: h.get_to_node(),
                shard: h.get_shard(),
                shard_count: h.get_shard_count(),
            }))
        }
        Ok(peer_frame::Messages(list)) => {
            let bound = convert::Bound {
                body_bytes: body.len(),
            };
            Ok(PeerFrame::Messages(convert::read_messages(list?, bound)?))
        }
        Ok(peer_frame::SnapshotChunk(c)) => {
            let c = c?;
            let file = c
                .get_file()?
                .to_string()
                .map_err(|e| WireError::Malformed(format!("snapshot file name: {e}")))?;
            Ok(PeerFrame::SnapshotChunk(SnapshotChunk {
                index: c.get_index(),
                term: c.get_term(),
                file,
                offset: c.get_offset(),
                data: c.get_data()?.to_vec(),
                last: c.get_last(),
                crc32c: c.get_crc32c(),
            }))
        }
        Ok(peer_frame::NodeInfo(info)) => {
            let client_address = info?
                .get_client_address()?
                .to_string()
                .map_err(|e| WireError::Malformed(format!("client address: {e}")))?;
            Ok(PeerFrame::NodeInfo(NodeInfo { client_address }))
        }
        Err(capnp::NotInSchema(kind)) => Err(WireError::UnknownFrameKind(kind)),
    }
}

/// Reads one frame from `r` into `buf` (reused from frame to frame) and returns its body, or
/// `None` when the peer closed the connection between frames. A length over
/// [`PEER_FRAME_BYTES_MAX`] is refused before reading the body; the buffer grows with the bytes
/// that arrive, not with the length announced, so a peer that announces a large frame and
/// stalls costs at most [`READ_CHUNK_BYTES`]. Closing inside a frame is an `Io` error
/// (`UnexpectedEof`).
pub async fn read_frame<'b, R>(
    r: &mut R,
    buf: &'b mut Vec<u8>,
) -> Result<Option<&'b [u8]>, WireError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let mut got = 0;
    while got < prefix.len() {
        match r.read(&mut prefix[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("peer closed inside a frame's length prefix ({got} of 4 bytes)"),
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(prefix);
    if len as usize > PEER_FRAME_BYTES_MAX {
        return Err(WireError::TooLarge {
            len: u64::from(len),
            max: PEER_FRAME_BYTES_MAX,
        });
    }
    let len = len as usize;
    buf.clear();
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            // Grow by doubling what arrived, not to what was announced: a peer that announces
            // a large frame and stalls costs little memory. Within the buffer's capacity (kept
            // from earlier frames) this allocates nothing.
            let target = len.min(buf.len().saturating_mul(2).max(READ_CHUNK_BYTES));
            buf.resize(target, 0);
        }
        match r.read(&mut buf[filled..]).await {
            Ok(0) => {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("peer closed after {filled} of a frame's {len} bytes"),
                )));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    debug_assert_eq!(buf.len(), len);
    Ok(Some(&buf[..]))
}

/// Fuzzing entry point (`tests/tests/decoders.rs`, cargo-fuzz target `peer_frame`): decodes
/// arbitrary bytes as a frame body and, when they decode, checks that encoding and decoding
/// again gives the same frame (the conversion loses nothing it accepts). Panics only on such a
/// mismatch.
#[doc(hidden)]
pub fn fuzz_decode(body: &[u8]) {
    let Ok(frame) = decode_frame(body) else {
        return;
    };
    let encoded = match &frame {
        PeerFrame::Hello(h) => encode_hello(h),
        PeerFrame::NodeInfo(i) => encode_node_info(i),
        PeerFrame::SnapshotChunk(c) => match encode_snapshot_chunk(c) {
            Ok(f) => f,
            Err(WireError::TooLarge { .. }) => return,
            Err(e) => panic!("a decoded chunk does not encode: {e}"),
        },
        PeerFrame::Messages(m) => match encode_messages(m) {
            Ok(f) => f,
            // A frame of short structs can grow past the limit once written at full size.
            Err(WireError::TooLarge { .. }) => return,
            Err(e) => panic!("a decoded frame does not encode: {e}"),
        },
    };
    match decode_frame(&encoded[FRAME_PREFIX_BYTES..]) {
        Ok(again) => assert_eq!(
            again, frame,
            "a peer frame changed through encode and decode"
        ),
        Err(e) => panic!("a re-encoded peer frame does not decode: {e}"),
    }
}
