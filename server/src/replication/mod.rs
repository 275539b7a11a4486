//! Replication: every shard a Raft group across nodes (raft-rs `RawNode`, driven inside the
//! shard's executor).
//!
//! - [`wire`]: peer messages in the project's own Cap'n Proto schema
//!   (`proto/schema/peer.capnp`), converted field by field to and from raft-rs's `eraftpb`
//!   types; protobuf bytes never cross the network.

pub mod wire;
