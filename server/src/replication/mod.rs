//! Replication: every shard a Raft group across nodes (raft-rs `RawNode`, driven inside the
//! shard's executor).
//!
//! - [`group`]: one shard's Raft group — the loop that drives raft-rs, proposals, read
//!   barriers (ReadIndex), applying committed entries to the engine.
//! - [`replica`]: the request path's side: writes proposed as entries ([`commands`]: the
//!   request's operations in the public schema), reads behind a ReadIndex barrier.
//! - [`log_store`]: the Raft log (a WAL whose record index is the Raft index) and hard
//!   state on disk, and raft-rs's `Storage` over them.
//! - [`wire`]: peer messages in the project's own Cap'n Proto schema
//!   (`proto/schema/peer.capnp`), converted field by field to and from raft-rs's `eraftpb`
//!   types; protobuf bytes never cross the network.
//! - [`transport`]: those messages between nodes over TCP — one outbound connection per
//!   (peer, shard), bounded queues that never block the group, and the checks an inbound
//!   connection must pass.
//! - [`snapshot`]: a replica behind the leader's compacted log gets the shard's tables,
//!   streamed in chunks on a connection of their own, and installs them.

pub mod commands;
pub mod group;
pub mod log_store;
pub mod replica;
pub mod slog_bridge;
pub mod snapshot;
pub mod transport;
pub mod wire;
