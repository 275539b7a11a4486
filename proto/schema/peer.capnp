# corekv peer protocol, version 2: Raft messages between the nodes of a cluster.
#
# Every shard is a Raft group replicated across nodes (raft-rs). raft-rs speaks protobuf
# (`eraftpb`), but corekv never decodes protobuf bytes received from the network (rust-protobuf 2
# has RUSTSEC-2024-0437): peer messages travel in this schema and are converted field by field
# to and from `eraftpb` (corekv-server's `replication::wire`, which also documents the framing).
#
# A peer connection carries a sequence of frames, each a `PeerFrame`:
#
#   1. The connecting node sends `hello` once: which cluster, which node to which node, which
#      shard (Raft group). The receiver closes a connection whose hello does not match it.
#   2. Then, once, `nodeInfo`: the sender's client address.
#   3. Then `messages` frames: the Raft messages of one `Ready`, in the order raft-rs produced
#      them.
#
# A snapshot travels on a connection of its own (the same hello), outside the Raft messages:
# `snapshotChunk` frames carry the files of the shard's checkpoint in order, each file's
# chunks at increasing offsets, its last chunk marked and carrying the file's checksum; then
# one `messages` frame holds the `MsgSnapshot` that names the snapshot, which the receiver
# hands to Raft only once every file has arrived and checked.
#
# Enumerations of raft-rs (`MessageType`, `EntryType`) are carried as their protobuf numbers, not
# as Cap'n Proto enums, so that the mapping is the one written in `eraftpb.proto` and a number
# this version does not know is refused by name (never silently read as a default).
#
# Fields are only added within a version; the structs of version 1 are the smallest a reader
# accepts. Version 2 has the structs of version 1; its normal entries may carry plain-writes
# commands (corekv-server's `replication::commands`), which a version-1 node cannot apply, so
# nodes of the two versions refuse each other's hello.

@0xe847b99d16547f70;

struct PeerFrame {
  union {
    hello @0 :Hello;
    # The first frame of a connection, and only the first.
    messages @1 :List(RaftMessage);
    # Raft messages for the shard the hello named, in send order.
    snapshotChunk @2 :SnapshotChunk;
    # A piece of a snapshot's file (on a snapshot connection only).
    nodeInfo @3 :NodeInfo;
    # What the sender tells about itself, right after the hello of its message connection.
  }
}

struct NodeInfo {
  clientAddress @0 :Text;
  # Where clients reach the sender (`host:port`): a replica that is not a shard's leader sends
  # clients there, and `topology` lists it.
}

struct SnapshotChunk {
  index @0 :UInt64;
  term @1 :UInt64;
  # The snapshot: the last Raft entry it holds, and that entry's term.
  file @2 :Text;
  # The file's name in the checkpoint directory (`NNNNNN.sst` or `CHECKPOINT`).
  offset @3 :UInt64;
  # Where `data` goes in the file: the bytes before it were sent by the earlier chunks.
  data @4 :Data;
  last @5 :Bool;
  # The file's final chunk.
  crc32c @6 :UInt32;
  # With `last`: the CRC-32C of the whole file.
}

struct Hello {
  protocolVersion @0 :UInt32;
  # The version of this schema the sender speaks (1).
  clusterId @1 :UInt64;
  # Both nodes must belong to the same cluster: a node of another cluster (a stale address, a
  # misconfiguration) is refused before any Raft message is read.
  fromNode @2 :UInt64;
  # The Raft node id of the sender.
  toNode @3 :UInt64;
  # The Raft node id the sender believes it reached.
  shard @4 :UInt32;
  # The shard (Raft group) whose messages follow.
  shardCount @5 :UInt32;
  # The sender's number of shards: every node of a cluster runs the same, shard i of each node
  # being a replica of group i, so a node with another count is refused.
}

struct RaftMessage {
  # `eraftpb::Message`, every field (raft-rs 0.7).
  msgType @0 :UInt16;
  # `eraftpb::MessageType` number: 0 MsgHup ... 18 MsgRequestPreVoteResponse.
  to @1 :UInt64;
  from @2 :UInt64;
  term @3 :UInt64;
  logTerm @4 :UInt64;
  # The term of the entry at `index` (the entry before `entries` in an append).
  index @5 :UInt64;
  entries @6 :List(Entry);
  commit @7 :UInt64;
  commitTerm @8 :UInt64;
  snapshot @9 :Snapshot;
  # Null when the message has none (protobuf's unset field), so that presence round-trips.
  requestSnapshot @10 :UInt64;
  reject @11 :Bool;
  rejectHint @12 :UInt64;
  context @13 :Data;
  deprecatedPriority @14 :UInt64;
  # raft-rs still sets it next to `priority` for older nodes; carried as is.
  priority @15 :Int64;
}

struct Entry {
  # `eraftpb::Entry`: one entry of a Raft log.
  entryType @0 :UInt8;
  # `eraftpb::EntryType` number: 0 EntryNormal, 1 EntryConfChange, 2 EntryConfChangeV2.
  term @1 :UInt64;
  index @2 :UInt64;
  data @3 :Data;
  # A normal entry's command, or a conf change (`eraftpb::ConfChange` or `ConfChangeV2`
  # protobuf bytes, as raft-rs writes them when a conf change is proposed).
  context @4 :Data;
  syncLog @5 :Bool;
  # Deprecated in raft-rs, kept there for compatibility; carried as is.
}

struct Snapshot {
  # `eraftpb::Snapshot`.
  data @0 :Data;
  metadata @1 :SnapshotMetadata;
  # Null when unset, as `RaftMessage.snapshot`.
}

struct SnapshotMetadata {
  # `eraftpb::SnapshotMetadata`.
  confState @0 :ConfState;
  # Null when unset, as `RaftMessage.snapshot`.
  index @1 :UInt64;
  # The last log index the snapshot covers.
  term @2 :UInt64;
  # The term of that entry.
}

struct ConfState {
  # `eraftpb::ConfState`: the membership of a Raft group.
  voters @0 :List(UInt64);
  learners @1 :List(UInt64);
  votersOutgoing @2 :List(UInt64);
  # The voters of the outgoing configuration; not empty while in joint consensus.
  learnersNext @3 :List(UInt64);
  # Nodes that become learners when the outgoing configuration is left.
  autoLeave @4 :Bool;
  # Whether raft-rs leaves the joint configuration on its own.
}
