//! Field-by-field conversion between raft-rs's `eraftpb` types and `proto/schema/peer.capnp`.
//!
//! Writing is infallible once the frame's size was checked ([`message_words`] is the exact
//! size, computed first). Reading checks what the bytes claim: enumeration numbers must be
//! known, and a list may not claim more elements than the frame's bytes can hold, so that a
//! length field never sizes an allocation on its own.
//!
//! Presence round-trips: an unset `snapshot`, `metadata` or `conf_state` is a null pointer, a
//! set one (even all defaults) is a struct, as protobuf tells the two apart.

use capnp::primitive_list;
use corekv_proto::peer_capnp::{conf_state, entry, raft_message, snapshot, snapshot_metadata};
use raft::eraftpb::{
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

use super::WireError;

/// Every `eraftpb::MessageType`, indexed by its protobuf number (`eraftpb.proto`).
const MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

/// Every `eraftpb::EntryType`, indexed by its protobuf number.
const ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

/// Words of one struct of `peer.capnp` version 1 (data words + pointers), as capnpc lays them
/// out. Fields are only added, so no honest sender writes a smaller element: a list whose
/// element count times this is more than the frame holds is a lie. (`tests.rs` checks these
/// against the generated code.)
pub(super) const RAFT_MESSAGE_WORDS: usize = 12 + 3;
pub(super) const ENTRY_WORDS: usize = 3 + 2;
pub(super) const SNAPSHOT_WORDS: usize = 2;
pub(super) const SNAPSHOT_METADATA_WORDS: usize = 2 + 1;
pub(super) const CONF_STATE_WORDS: usize = 1 + 4;

/// Every message type and entry type number this version knows.
#[cfg(test)]
pub(super) fn message_types() -> &'static [MessageType] {
    &MESSAGE_TYPES
}

#[cfg(test)]
pub(super) fn entry_types() -> &'static [EntryType] {
    &ENTRY_TYPES
}

/// Words a `Data` field of `len` bytes occupies (0 when empty: it is left null).
fn blob_words(len: usize) -> usize {
    len.div_ceil(8)
}

/// Exact words `write_message` uses for `m` (the element inside its list included), so that a
/// frame's size is known before it is built.
pub(super) fn message_words(m: &Message) -> usize {
    let mut words = RAFT_MESSAGE_WORDS + blob_words(m.context.len());
    if !m.entries.is_empty() {
        words += 1; // the list's tag word
        for e in m.entries.iter() {
            words += ENTRY_WORDS + blob_words(e.data.len()) + blob_words(e.context.len());
        }
    }
    if m.has_snapshot() {
        let s = m.get_snapshot();
        words += SNAPSHOT_WORDS + blob_words(s.data.len());
        if s.has_metadata() {
            words += SNAPSHOT_METADATA_WORDS;
            if s.get_metadata().has_conf_state() {
                let c = s.get_metadata().get_conf_state();
                words += CONF_STATE_WORDS
                    + c.voters.len()
                    + c.learners.len()
                    + c.voters_outgoing.len()
                    + c.learners_next.len();
            }
        }
    }
    words
}

/// A list length for capnp; the frame's size was checked first (`message_words`), so every
/// list fits a `u32` and this never saturates.
fn list_len(len: usize) -> u32 {
    debug_assert!(
        len <= u32::MAX as usize,
        "list of {len} passed the frame size check"
    );
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(super) fn write_message(mut b: raft_message::Builder<'_>, m: &Message) {
    b.set_msg_type(m.get_msg_type() as u16);
    b.set_to(m.to);
    b.set_from(m.from);
    b.set_term(m.term);
    b.set_log_term(m.log_term);
    b.set_index(m.index);
    b.set_commit(m.commit);
    b.set_commit_term(m.commit_term);
    b.set_request_snapshot(m.request_snapshot);
    b.set_reject(m.reject);
    b.set_reject_hint(m.reject_hint);
    b.set_deprecated_priority(m.deprecated_priority);
    b.set_priority(m.priority);
    if !m.context.is_empty() {
        b.set_context(&m.context);
    }
    if !m.entries.is_empty() {
        let mut list = b.reborrow().init_entries(list_len(m.entries.len()));
        for (i, e) in m.entries.iter().enumerate() {
            write_entry(list.reborrow().get(list_len(i)), e);
        }
    }
    if m.has_snapshot() {
        write_snapshot(b.init_snapshot(), m.get_snapshot());
    }
}

fn write_entry(mut b: entry::Builder<'_>, e: &Entry) {
    b.set_entry_type(e.get_entry_type() as u8);
    b.set_term(e.term);
    b.set_index(e.index);
    b.set_sync_log(e.sync_log);
    if !e.data.is_empty() {
        b.set_data(&e.data);
    }
    if !e.context.is_empty() {
        b.set_context(&e.context);
    }
}

fn write_snapshot(mut b: snapshot::Builder<'_>, s: &Snapshot) {
    if !s.data.is_empty() {
        b.set_data(&s.data);
    }
    if s.has_metadata() {
        let m = s.get_metadata();
        let mut mb = b.init_metadata();
        mb.set_index(m.index);
        mb.set_term(m.term);
        if m.has_conf_state() {
            write_conf_state(mb.init_conf_state(), m.get_conf_state());
        }
    }
}

fn write_conf_state(mut b: conf_state::Builder<'_>, c: &ConfState) {
    b.set_auto_leave(c.auto_leave);
    // Empty lists stay null: they read back empty all the same.
    if !c.voters.is_empty() {
        fill(
            b.reborrow().init_voters(list_len(c.voters.len())),
            &c.voters,
        );
    }
    if !c.learners.is_empty() {
        fill(
            b.reborrow().init_learners(list_len(c.learners.len())),
            &c.learners,
        );
    }
    if !c.voters_outgoing.is_empty() {
        let list = b
            .reborrow()
            .init_voters_outgoing(list_len(c.voters_outgoing.len()));
        fill(list, &c.voters_outgoing);
    }
    if !c.learners_next.is_empty() {
        let list = b.init_learners_next(list_len(c.learners_next.len()));
        fill(list, &c.learners_next);
    }
}

fn fill(mut list: primitive_list::Builder<'_, u64>, values: &[u64]) {
    for (i, v) in values.iter().enumerate() {
        list.set(list_len(i), *v);
    }
}

/// What a reader may believe of a list's length: `body_bytes` is the frame's size, which every
/// element of `words_min` words must fit in.
#[derive(Clone, Copy)]
pub(super) struct Bound {
    pub(super) body_bytes: usize,
}

impl Bound {
    fn check(self, what: &str, len: u32, words_min: usize) -> Result<usize, WireError> {
        let len = len as usize;
        if len.saturating_mul(words_min * 8) > self.body_bytes {
            return Err(WireError::Malformed(format!(
                "{what} claims {len} elements of at least {words_min} words, more than the \
                 frame's {} bytes hold",
                self.body_bytes
            )));
        }
        Ok(len)
    }
}

pub(super) fn read_message(
    r: raft_message::Reader<'_>,
    bound: Bound,
) -> Result<Message, WireError> {
    let number = r.get_msg_type();
    let msg_type = *MESSAGE_TYPES
        .get(usize::from(number))
        .ok_or(WireError::UnknownMessageType(number))?;
    let list = r.get_entries()?;
    let mut entries = Vec::with_capacity(bound.check("an entry list", list.len(), ENTRY_WORDS)?);
    for e in list.iter() {
        entries.push(read_entry(e)?);
    }
    let mut m = Message {
        msg_type,
        to: r.get_to(),
        from: r.get_from(),
        term: r.get_term(),
        log_term: r.get_log_term(),
        index: r.get_index(),
        entries: entries.into(),
        commit: r.get_commit(),
        commit_term: r.get_commit_term(),
        request_snapshot: r.get_request_snapshot(),
        reject: r.get_reject(),
        reject_hint: r.get_reject_hint(),
        context: r.get_context()?.to_vec().into(),
        deprecated_priority: r.get_deprecated_priority(),
        priority: r.get_priority(),
        ..Message::default()
    };
    if r.has_snapshot() {
        m.set_snapshot(read_snapshot(r.get_snapshot()?, bound)?);
    }
    Ok(m)
}

fn read_entry(r: entry::Reader<'_>) -> Result<Entry, WireError> {
    let number = r.get_entry_type();
    let entry_type = *ENTRY_TYPES
        .get(usize::from(number))
        .ok_or(WireError::UnknownEntryType(number))?;
    Ok(Entry {
        entry_type,
        term: r.get_term(),
        index: r.get_index(),
        data: r.get_data()?.to_vec().into(),
        context: r.get_context()?.to_vec().into(),
        sync_log: r.get_sync_log(),
        ..Entry::default()
    })
}

fn read_snapshot(r: snapshot::Reader<'_>, bound: Bound) -> Result<Snapshot, WireError> {
    let mut s = Snapshot {
        data: r.get_data()?.to_vec().into(),
        ..Snapshot::default()
    };
    if r.has_metadata() {
        s.set_metadata(read_snapshot_metadata(r.get_metadata()?, bound)?);
    }
    Ok(s)
}

fn read_snapshot_metadata(
    r: snapshot_metadata::Reader<'_>,
    bound: Bound,
) -> Result<SnapshotMetadata, WireError> {
    let mut m = SnapshotMetadata {
        index: r.get_index(),
        term: r.get_term(),
        ..SnapshotMetadata::default()
    };
    if r.has_conf_state() {
        m.set_conf_state(read_conf_state(r.get_conf_state()?, bound)?);
    }
    Ok(m)
}

fn read_conf_state(r: conf_state::Reader<'_>, bound: Bound) -> Result<ConfState, WireError> {
    let ids = |what: &str, list: primitive_list::Reader<'_, u64>| {
        let mut out = Vec::with_capacity(bound.check(what, list.len(), 1)?);
        out.extend(list.iter());
        Ok::<_, WireError>(out)
    };
    Ok(ConfState {
        voters: ids("voters", r.get_voters()?)?,
        learners: ids("learners", r.get_learners()?)?,
        voters_outgoing: ids("votersOutgoing", r.get_voters_outgoing()?)?,
        learners_next: ids("learnersNext", r.get_learners_next()?)?,
        auto_leave: r.get_auto_leave(),
        ..ConfState::default()
    })
}

/// Reads a frame's list of messages; `bound` as in [`Bound`].
pub(super) fn read_messages(
    list: capnp::struct_list::Reader<'_, raft_message::Owned>,
    bound: Bound,
) -> Result<Vec<Message>, WireError> {
    let len = bound.check("the message list", list.len(), RAFT_MESSAGE_WORDS)?;
    let mut out = Vec::with_capacity(len);
    for r in list.iter() {
        out.push(read_message(r, bound)?);
    }
    Ok(out)
}
