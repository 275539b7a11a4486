//! Owned, `Send` mirrors of the schema's operations and results.
//!
//! The server moves these between shards and the client builds and returns them; both convert
//! to and from the Cap'n Proto structs with [`crate::codec`]. They carry no behaviour of their
//! own: what each operation means is documented in `proto/schema/corekv.capnp`.

use std::fmt;

/// One operation (`Op` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read the newest value of `key`.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write `value` under `key`, expiring after `ttl_ms` milliseconds when non-zero.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Time to live in milliseconds; 0 means no expiry.
        ttl_ms: u64,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Compare-and-set.
    Cas(CasOp),
    /// Ordered range read.
    Scan(ScanOp),
    /// Replace the key's value with an entity of these columns.
    PutEntity(PutEntityOp),
    /// Set and remove some columns of an entity.
    UpdateColumns(UpdateColumnsOp),
    /// Read columns of an entity.
    GetColumns(GetColumnsOp),
    /// Add to a counter.
    Increment(IncrementOp),
}

impl Op {
    /// The key the operation addresses, or `None` for a scan (which spans every shard).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } => Some(key),
            Op::Cas(cas) => Some(&cas.key),
            Op::Scan(_) => None,
            Op::PutEntity(op) => Some(&op.key),
            Op::UpdateColumns(op) => Some(&op.key),
            Op::GetColumns(op) => Some(&op.key),
            Op::Increment(op) => Some(&op.key),
        }
    }

    /// Whether the operation can change data.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put { .. }
                | Op::Delete { .. }
                | Op::Cas(_)
                | Op::PutEntity(_)
                | Op::UpdateColumns(_)
                | Op::Increment(_)
        )
    }

    /// Key and value bytes carried, for size limits.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Get { key } | Op::Delete { key } => key.len(),
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Cas(cas) => {
                cas.key.len()
                    + cas.expected.value().map_or(0, <[u8]>::len)
                    + cas.new.as_ref().map_or(0, Vec::len)
            }
            Op::Scan(scan) => scan.start.len() + scan.end.len(),
            Op::PutEntity(op) => op.key.len() + columns_bytes(&op.columns),
            Op::UpdateColumns(op) => {
                op.key.len()
                    + columns_bytes(&op.set)
                    + op.remove.iter().map(Vec::len).sum::<usize>()
            }
            Op::GetColumns(op) => op.key.len() + op.names.iter().map(Vec::len).sum::<usize>(),
            Op::Increment(op) => op.key.len() + op.column.len(),
        }
    }
}

/// A column: its name and value (`Column` in the schema).
pub type Column = (Vec<u8>, Vec<u8>);

/// Name and value bytes of `columns`.
pub fn columns_bytes(columns: &[Column]) -> usize {
    columns.iter().map(|(n, v)| n.len() + v.len()).sum()
}

/// Replace a key's value with an entity (`PutEntityOp` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutEntityOp {
    /// The key.
    pub key: Vec<u8>,
    /// The entity's columns: at least one, names non-empty and unique.
    pub columns: Vec<Column>,
    /// Expiry in milliseconds; 0 means none.
    pub ttl_ms: u64,
}

/// Set and remove columns of an entity (`UpdateColumnsOp` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateColumnsOp {
    /// The key.
    pub key: Vec<u8>,
    /// Columns added or replaced.
    pub set: Vec<Column>,
    /// Columns removed.
    pub remove: Vec<Vec<u8>>,
    /// Expiry of the entity from this write on, in milliseconds; 0 means none.
    pub ttl_ms: u64,
}

/// Read columns of an entity (`GetColumnsOp` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetColumnsOp {
    /// The key.
    pub key: Vec<u8>,
    /// The columns wanted; empty means all.
    pub names: Vec<Vec<u8>>,
}

/// Add to a counter (`IncrementOp` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncrementOp {
    /// The key.
    pub key: Vec<u8>,
    /// The column holding the counter; empty: the key's whole value.
    pub column: Vec<u8>,
    /// What to add (negative to subtract).
    pub delta: i64,
    /// Expiry of what is written, in milliseconds; 0 means none.
    pub ttl_ms: u64,
}

/// Compare-and-set (`CasOp` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOp {
    /// The key.
    pub key: Vec<u8>,
    /// What the key's live value must be for the new state to be written.
    pub expected: Expected,
    /// `Some(v)`: write `v`; `None`: delete the key.
    pub new: Option<Vec<u8>>,
    /// Expiry of the new value in milliseconds; 0 means none.
    pub ttl_ms: u64,
}

/// What a compare-and-set expects (`CasOp.expected` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// No live value.
    Absent,
    /// A live value equal to these bytes.
    Value(Vec<u8>),
    /// The live value written with this sequence number; 0: no live value.
    Sequence(u64),
}

impl Expected {
    /// The expected bytes, for [`Expected::Value`].
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Expected::Value(v) => Some(v),
            Expected::Absent | Expected::Sequence(_) => None,
        }
    }
}

impl From<Option<Vec<u8>>> for Expected {
    /// `None`: absent; `Some(v)`: the value `v`.
    fn from(value: Option<Vec<u8>>) -> Expected {
        value.map_or(Expected::Absent, Expected::Value)
    }
}

/// Range read over `[start, end)` (`ScanOp` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanOp {
    /// Inclusive lower bound; empty means from the first key.
    pub start: Vec<u8>,
    /// Exclusive upper bound; empty means to the last key.
    pub end: Vec<u8>,
    /// Maximum entries; 0 means the server's default.
    pub limit: u32,
    /// Descending from just below `end` when true.
    pub reverse: bool,
}

impl ScanOp {
    /// The same scan, resumed after a page that ended with `continuation`.
    pub fn resume(&self, continuation: &[u8]) -> ScanOp {
        let mut next = self.clone();
        if self.reverse {
            next.end = continuation.to_vec();
        } else {
            next.start = continuation.to_vec();
        }
        next
    }
}

/// The answer to one [`Op`] (`OpResult` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The operation failed; nothing was changed.
    Error(OpError),
    /// A `get`: the value and its version, or `None` if the key has no live value.
    Get(Option<Versioned>),
    /// A `put` or `delete` was applied with this sequence number.
    Write {
        /// The write's sequence number within the owning shard.
        sequence: u64,
    },
    /// A `cas` outcome.
    Cas(CasResult),
    /// A page of a `scan`.
    Scan(ScanResult),
    /// A `getColumns`: the columns found and the entity's version, or `None` if the key has
    /// no live value.
    Columns(Option<VersionedColumns>),
    /// An `increment` was applied.
    Increment {
        /// The counter's new value.
        value: i64,
        /// The write's sequence number within the owning shard.
        sequence: u64,
    },
}

/// Columns of a live entity and the sequence number of the write that stored it
/// (`ColumnsResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedColumns {
    /// The columns asked for that the entity has, in ascending name order.
    pub columns: Vec<Column>,
    /// The sequence number of the write that stored the entity.
    pub sequence: u64,
}

/// A live value and the sequence number of the write that stored it (`GetResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The sequence number of the write that stored it, in the shard that owns the key.
    pub sequence: u64,
}

/// Outcome of a compare-and-set (`CasResult` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasResult {
    /// Whether the expectation held and the new state was written.
    pub succeeded: bool,
    /// When `succeeded`: the write's sequence number; otherwise the sequence number of the live
    /// value found (0 when absent).
    pub sequence: u64,
    /// When not `succeeded`: the live value found (`None` = absent).
    pub current: Option<Vec<u8>>,
}

/// One page of a scan (`ScanResult` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanResult {
    /// Entries in scan order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the range may hold more entries beyond the last one returned.
    pub more: bool,
    /// When `more`: where the next page starts (see [`ScanOp::resume`]).
    pub continuation: Vec<u8>,
}

/// What went wrong with one operation (`ErrorCode` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A bug in the server.
    Internal,
    /// Keys must be at least one byte.
    EmptyKey,
    /// The key is longer than the server accepts.
    KeyTooLarge,
    /// The value is longer than the server accepts.
    ValueTooLarge,
    /// Too many operations or bytes in one batch.
    BatchTooLarge,
    /// A malformed argument (for example a scan with start > end).
    InvalidArgument,
    /// Storage failed; the write was not applied.
    Io,
    /// The shard refuses writes after an unrecoverable storage error.
    ReadOnly,
    /// A bound was reached; retry later.
    Overloaded,
    /// The server is stopping; the operation was not applied.
    ShuttingDown,
    /// Stored data failed its checksum.
    Corruption,
    /// The key holds another kind of value than the operation needs (a column operation on
    /// a plain value, an increment of bytes that are not a counter).
    WrongType,
    /// A replicated shard's operation reached a replica that is not its group's leader;
    /// nothing was applied.
    NotLeader,
    /// A replicated write may or may not have been applied (the replica stopped before its
    /// outcome was known).
    OutcomeUnknown,
}

impl ErrorCode {
    /// Stable snake_case name (as in the schema, lower camel case there).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal",
            ErrorCode::EmptyKey => "empty_key",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Io => "io",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Corruption => "corruption",
            ErrorCode::WrongType => "wrong_type",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed error for one operation (`Error` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// What kind of error.
    pub code: ErrorCode,
    /// Human-readable: what happened and what the caller can do.
    pub message: String,
    /// For the `*TooLarge` codes: the server's limit.
    pub limit: u64,
    /// For the `*TooLarge` codes: the size that was sent.
    pub actual: u64,
    /// With [`ErrorCode::NotLeader`]: where the shard's leader is, when the replica knows.
    pub leader: Option<LeaderHint>,
}

/// Where a replicated shard's leader is, as a replica that is not it knows (`Error.leader`,
/// `Error.leaderAddress` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id (non-zero).
    pub node: u64,
    /// Its client address, `host:port`, when the replica has learned it.
    pub address: Option<String>,
}

impl OpError {
    /// An error without size figures.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> OpError {
        OpError {
            code,
            message: message.into(),
            limit: 0,
            actual: 0,
            leader: None,
        }
    }

    /// A `*TooLarge` error with the limit and the size that was sent.
    pub fn too_large(code: ErrorCode, what: &str, actual: u64, limit: u64) -> OpError {
        OpError {
            code,
            message: format!("{what} is {actual} bytes, more than the server's limit of {limit}"),
            limit,
            actual,
            leader: None,
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for OpError {}

/// Where one shard listens (`ShardInfo` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard id, `0..shard_count`.
    pub id: u32,
    /// Host to connect to; an unspecified address (`0.0.0.0`, `::`) means "the host you used".
    pub host: String,
    /// The shard's own port.
    pub port: u16,
    /// In a cluster: the shard's leader as the answering node knows it (0: none known, or not
    /// a cluster).
    pub leader: u64,
    /// In a cluster: every node holding a replica of the shard (empty otherwise).
    pub replicas: Vec<ReplicaInfo>,
}

/// One replica of a shard in a cluster (`Replica` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The node's id.
    pub node: u64,
    /// Its client address for the shard; an empty host when the answering node has not
    /// learned it yet.
    pub host: String,
    /// The port of that address.
    pub port: u16,
}

/// How keys map to shards and where each shard listens (`Topology` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Number of shards.
    pub shard_count: u32,
    /// Name of the key -> shard function.
    pub hash: String,
    /// One entry per shard, indexed by shard id.
    pub shards: Vec<ShardInfo>,
}

/// What a server is and the limits it enforces (`ServerInfo` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerInfo {
    /// The server's release.
    pub version: String,
    /// The schema version it speaks.
    pub protocol_version: u32,
    /// Its node id in a cluster; 0 for a single server.
    pub node_id: u64,
    /// `sync`, `periodic:<ms>` or `none`.
    pub durability: String,
    /// Number of shards.
    pub shard_count: u32,
    /// Every request limit.
    pub limits: ServerLimits,
}

/// The request limits a server enforces (`Limits` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerLimits {
    /// Largest key.
    pub key_bytes_max: u64,
    /// Largest value.
    pub value_bytes_max: u64,
    /// Most operations in one `batch`.
    pub batch_ops_max: u64,
    /// Most key and value bytes in one `batch`.
    pub batch_bytes_max: u64,
    /// Most bytes of results in one `batch` reply.
    pub reply_bytes_max: u64,
    /// Entries a scan page holds when it asks for 0.
    pub scan_limit_default: u32,
    /// Most entries in one scan page.
    pub scan_limit_max: u32,
    /// A scan page stops growing past about this many key and value bytes.
    pub scan_page_bytes_max: u64,
    /// Longest TTL in milliseconds.
    pub ttl_ms_max: u64,
    /// Largest incoming message.
    pub frame_bytes_max: u64,
    /// Operations in flight on one connection before the server stops reading it.
    pub connection_inflight_ops_max: u64,
}

/// Counters of one shard (`ShardStats` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardStats {
    /// Shard id.
    pub id: u32,
    /// `(name, value)` pairs; names are stable snake_case with units.
    pub counters: Vec<(String, u64)>,
}

impl ShardStats {
    /// The value of counter `name`, if present.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

/// Sum of counter `name` over all shards (missing counts as 0).
pub fn counter_total(stats: &[ShardStats], name: &str) -> u64 {
    stats.iter().filter_map(|s| s.counter(name)).sum()
}
