//! Conversions between the owned types in [`crate::ops`] and the Cap'n Proto structs.
//!
//! Readers copy bytes out of the message (the owned types outlive it); builders write every field
//! of the matching struct. Both the server and the client use these, so the two sides cannot
//! disagree on how a field is read.

use capnp::Result;

use crate::corekv_capnp::ErrorCode as WireCode;
use crate::corekv_capnp::{
    cas_op, cas_result, column, columns_result, error, get_columns_op, increment_op, op, op_result,
    put_entity_op, scan_op, scan_result, server_info, shard_stats, topology, update_columns_op,
};
use crate::ops::{
    CasOp, CasResult, Column, ErrorCode, Expected, GetColumnsOp, IncrementOp, LeaderHint, Op,
    OpError, OpResult, PutEntityOp, ReplicaInfo, ScanOp, ScanResult, ServerInfo, ServerLimits,
    ShardInfo, ShardStats, Topology, UpdateColumnsOp, Versioned, VersionedColumns,
};

fn not_in_schema(what: &str, e: capnp::NotInSchema) -> capnp::Error {
    capnp::Error::failed(format!(
        "{what}: union or enum value {} is not in the schema",
        e.0
    ))
}

/// Reads one `Op`.
pub fn read_op(r: op::Reader<'_>) -> Result<Op> {
    Ok(match r.which().map_err(|e| not_in_schema("Op", e))? {
        op::Get(g) => Op::Get {
            key: g?.get_key()?.to_vec(),
        },
        op::Put(p) => {
            let p = p?;
            Op::Put {
                key: p.get_key()?.to_vec(),
                value: p.get_value()?.to_vec(),
                ttl_ms: p.get_ttl_ms(),
            }
        }
        op::Delete(d) => Op::Delete {
            key: d?.get_key()?.to_vec(),
        },
        op::Cas(c) => Op::Cas(read_cas_op(c?)?),
        op::Scan(s) => Op::Scan(read_scan_op(s?)?),
        op::PutEntity(p) => Op::PutEntity(read_put_entity_op(p?)?),
        op::UpdateColumns(u) => Op::UpdateColumns(read_update_columns_op(u?)?),
        op::GetColumns(g) => Op::GetColumns(read_get_columns_op(g?)?),
        op::Increment(i) => Op::Increment(read_increment_op(i?)?),
    })
}

/// Writes one `Op`.
pub fn write_op(b: op::Builder<'_>, op: &Op) {
    match op {
        Op::Get { key } => b.init_get().set_key(key),
        Op::Put { key, value, ttl_ms } => {
            let mut p = b.init_put();
            p.set_key(key);
            p.set_value(value);
            p.set_ttl_ms(*ttl_ms);
        }
        Op::Delete { key } => b.init_delete().set_key(key),
        Op::Cas(cas) => write_cas_op(b.init_cas(), cas),
        Op::Scan(scan) => write_scan_op(b.init_scan(), scan),
        Op::PutEntity(p) => write_put_entity_op(b.init_put_entity(), p),
        Op::UpdateColumns(u) => write_update_columns_op(b.init_update_columns(), u),
        Op::GetColumns(g) => write_get_columns_op(b.init_get_columns(), g),
        Op::Increment(i) => write_increment_op(b.init_increment(), i),
    }
}

/// Capacity reserved up front for a list read from a message: its length is the sender's
/// word, and a list of empty elements costs almost nothing to send.
const LIST_PRESIZE_MAX: usize = 64;

/// Column names must be non-empty (the schema says so). Checked while reading, so that every
/// element kept costs the sender bytes: a list of empty elements is cheap to send and would
/// otherwise become a large allocation.
fn read_name(name: &[u8]) -> Result<Vec<u8>> {
    if name.is_empty() {
        return Err(capnp::Error::failed(
            "a column name is empty; names must be at least 1 byte".to_string(),
        ));
    }
    Ok(name.to_vec())
}

fn read_columns(list: capnp::struct_list::Reader<'_, column::Owned>) -> Result<Vec<Column>> {
    let mut columns = Vec::with_capacity((list.len() as usize).min(LIST_PRESIZE_MAX));
    for c in list.iter() {
        columns.push((read_name(c.get_name()?)?, c.get_value()?.to_vec()));
    }
    Ok(columns)
}

fn write_columns(mut list: capnp::struct_list::Builder<'_, column::Owned>, columns: &[Column]) {
    for (i, (name, value)) in columns.iter().enumerate() {
        let mut c = list.reborrow().get(i as u32);
        c.set_name(name);
        c.set_value(value);
    }
}

fn read_names(list: capnp::data_list::Reader<'_>) -> Result<Vec<Vec<u8>>> {
    let mut names = Vec::with_capacity((list.len() as usize).min(LIST_PRESIZE_MAX));
    for n in list.iter() {
        names.push(read_name(n?)?);
    }
    Ok(names)
}

fn write_names(mut list: capnp::data_list::Builder<'_>, names: &[Vec<u8>]) {
    for (i, name) in names.iter().enumerate() {
        list.set(i as u32, name);
    }
}

/// The length of a list the caller built from a request (so within the frame limit).
fn list_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Reads a `PutEntityOp`.
pub fn read_put_entity_op(r: put_entity_op::Reader<'_>) -> Result<PutEntityOp> {
    Ok(PutEntityOp {
        key: r.get_key()?.to_vec(),
        columns: read_columns(r.get_columns()?)?,
        ttl_ms: r.get_ttl_ms(),
    })
}

/// Writes a `PutEntityOp`.
pub fn write_put_entity_op(mut b: put_entity_op::Builder<'_>, op: &PutEntityOp) {
    b.set_key(&op.key);
    b.set_ttl_ms(op.ttl_ms);
    write_columns(b.init_columns(list_len(op.columns.len())), &op.columns);
}

/// Reads an `UpdateColumnsOp`.
pub fn read_update_columns_op(r: update_columns_op::Reader<'_>) -> Result<UpdateColumnsOp> {
    Ok(UpdateColumnsOp {
        key: r.get_key()?.to_vec(),
        set: read_columns(r.get_set()?)?,
        remove: read_names(r.get_remove()?)?,
        ttl_ms: r.get_ttl_ms(),
    })
}

/// Writes an `UpdateColumnsOp`.
pub fn write_update_columns_op(mut b: update_columns_op::Builder<'_>, op: &UpdateColumnsOp) {
    b.set_key(&op.key);
    b.set_ttl_ms(op.ttl_ms);
    write_columns(b.reborrow().init_set(list_len(op.set.len())), &op.set);
    write_names(b.init_remove(list_len(op.remove.len())), &op.remove);
}

/// Reads a `GetColumnsOp`.
pub fn read_get_columns_op(r: get_columns_op::Reader<'_>) -> Result<GetColumnsOp> {
    Ok(GetColumnsOp {
        key: r.get_key()?.to_vec(),
        names: read_names(r.get_names()?)?,
    })
}

/// Writes a `GetColumnsOp`.
pub fn write_get_columns_op(mut b: get_columns_op::Builder<'_>, op: &GetColumnsOp) {
    b.set_key(&op.key);
    write_names(b.init_names(list_len(op.names.len())), &op.names);
}

/// Reads an `IncrementOp`.
pub fn read_increment_op(r: increment_op::Reader<'_>) -> Result<IncrementOp> {
    Ok(IncrementOp {
        key: r.get_key()?.to_vec(),
        column: r.get_column()?.to_vec(),
        delta: r.get_delta(),
        ttl_ms: r.get_ttl_ms(),
    })
}

/// Writes an `IncrementOp`.
pub fn write_increment_op(mut b: increment_op::Builder<'_>, op: &IncrementOp) {
    b.set_key(&op.key);
    b.set_column(&op.column);
    b.set_delta(op.delta);
    b.set_ttl_ms(op.ttl_ms);
}

/// Reads a `CasOp`.
pub fn read_cas_op(r: cas_op::Reader<'_>) -> Result<CasOp> {
    let expected = match r
        .get_expected()
        .which()
        .map_err(|e| not_in_schema("CasOp.expected", e))?
    {
        cas_op::expected::Absent(()) => Expected::Absent,
        cas_op::expected::Value(v) => Expected::Value(v?.to_vec()),
        cas_op::expected::Sequence(s) => Expected::Sequence(s),
    };
    let new = match r
        .get_new()
        .which()
        .map_err(|e| not_in_schema("CasOp.new", e))?
    {
        cas_op::new::Value(v) => Some(v?.to_vec()),
        cas_op::new::Delete(()) => None,
    };
    Ok(CasOp {
        key: r.get_key()?.to_vec(),
        expected,
        new,
        ttl_ms: r.get_ttl_ms(),
    })
}

/// Writes a `CasOp`.
pub fn write_cas_op(mut b: cas_op::Builder<'_>, cas: &CasOp) {
    b.set_key(&cas.key);
    match &cas.expected {
        Expected::Absent => b.reborrow().init_expected().set_absent(()),
        Expected::Value(v) => b.reborrow().init_expected().set_value(v),
        Expected::Sequence(s) => b.reborrow().init_expected().set_sequence(*s),
    }
    match &cas.new {
        None => b.reborrow().init_new().set_delete(()),
        Some(v) => b.reborrow().init_new().set_value(v),
    }
    b.set_ttl_ms(cas.ttl_ms);
}

/// Reads a `ScanOp`.
pub fn read_scan_op(r: scan_op::Reader<'_>) -> Result<ScanOp> {
    Ok(ScanOp {
        start: r.get_start()?.to_vec(),
        end: r.get_end()?.to_vec(),
        limit: r.get_limit(),
        reverse: r.get_reverse(),
    })
}

/// Writes a `ScanOp`.
pub fn write_scan_op(mut b: scan_op::Builder<'_>, scan: &ScanOp) {
    b.set_start(&scan.start);
    b.set_end(&scan.end);
    b.set_limit(scan.limit);
    b.set_reverse(scan.reverse);
}

fn code_from_wire(code: WireCode) -> ErrorCode {
    match code {
        WireCode::Internal => ErrorCode::Internal,
        WireCode::EmptyKey => ErrorCode::EmptyKey,
        WireCode::KeyTooLarge => ErrorCode::KeyTooLarge,
        WireCode::ValueTooLarge => ErrorCode::ValueTooLarge,
        WireCode::BatchTooLarge => ErrorCode::BatchTooLarge,
        WireCode::InvalidArgument => ErrorCode::InvalidArgument,
        WireCode::Io => ErrorCode::Io,
        WireCode::ReadOnly => ErrorCode::ReadOnly,
        WireCode::Overloaded => ErrorCode::Overloaded,
        WireCode::ShuttingDown => ErrorCode::ShuttingDown,
        WireCode::Corruption => ErrorCode::Corruption,
        WireCode::WrongType => ErrorCode::WrongType,
        WireCode::NotLeader => ErrorCode::NotLeader,
        WireCode::OutcomeUnknown => ErrorCode::OutcomeUnknown,
    }
}

fn code_to_wire(code: ErrorCode) -> WireCode {
    match code {
        ErrorCode::Internal => WireCode::Internal,
        ErrorCode::EmptyKey => WireCode::EmptyKey,
        ErrorCode::KeyTooLarge => WireCode::KeyTooLarge,
        ErrorCode::ValueTooLarge => WireCode::ValueTooLarge,
        ErrorCode::BatchTooLarge => WireCode::BatchTooLarge,
        ErrorCode::InvalidArgument => WireCode::InvalidArgument,
        ErrorCode::Io => WireCode::Io,
        ErrorCode::ReadOnly => WireCode::ReadOnly,
        ErrorCode::Overloaded => WireCode::Overloaded,
        ErrorCode::ShuttingDown => WireCode::ShuttingDown,
        ErrorCode::Corruption => WireCode::Corruption,
        ErrorCode::WrongType => WireCode::WrongType,
        ErrorCode::NotLeader => WireCode::NotLeader,
        ErrorCode::OutcomeUnknown => WireCode::OutcomeUnknown,
    }
}

/// Reads an `Error`. A code this version does not know reads as [`ErrorCode::Internal`] with
/// the server's message kept.
pub fn read_error(r: error::Reader<'_>) -> Result<OpError> {
    Ok(OpError {
        code: r.get_code().map_or(ErrorCode::Internal, code_from_wire),
        message: r
            .get_message()?
            .to_string()
            .map_err(|e| capnp::Error::failed(format!("Error.message is not UTF-8: {e}")))?,
        limit: r.get_limit(),
        actual: r.get_actual(),
        leader: match r.get_leader() {
            0 => None,
            node => {
                let address = text(r.get_leader_address()?)?;
                Some(LeaderHint {
                    node,
                    address: (!address.is_empty()).then_some(address),
                })
            }
        },
    })
}

/// Writes an `Error`.
pub fn write_error(mut b: error::Builder<'_>, e: &OpError) {
    b.set_code(code_to_wire(e.code));
    b.set_message(e.message.as_str());
    b.set_limit(e.limit);
    b.set_actual(e.actual);
    if let Some(leader) = &e.leader {
        b.set_leader(leader.node);
        b.set_leader_address(leader.address.as_deref().unwrap_or(""));
    }
}

/// Reads one `OpResult`.
pub fn read_result(r: op_result::Reader<'_>) -> Result<OpResult> {
    Ok(match r.which().map_err(|e| not_in_schema("OpResult", e))? {
        op_result::Error(e) => OpResult::Error(read_error(e?)?),
        op_result::Get(g) => {
            let g = g?;
            OpResult::Get(if g.get_found() {
                Some(Versioned {
                    value: g.get_value()?.to_vec(),
                    sequence: g.get_sequence(),
                })
            } else {
                None
            })
        }
        op_result::Write(w) => OpResult::Write {
            sequence: w?.get_sequence(),
        },
        op_result::Cas(c) => OpResult::Cas(read_cas_result(c?)?),
        op_result::Scan(s) => OpResult::Scan(read_scan_result(s?)?),
        op_result::Columns(c) => {
            let c = c?;
            OpResult::Columns(if c.get_found() {
                Some(VersionedColumns {
                    columns: read_columns(c.get_columns()?)?,
                    sequence: c.get_sequence(),
                })
            } else {
                None
            })
        }
        op_result::Increment(i) => {
            let i = i?;
            OpResult::Increment {
                value: i.get_value(),
                sequence: i.get_sequence(),
            }
        }
    })
}

/// Writes one `OpResult`.
pub fn write_result(b: op_result::Builder<'_>, result: &OpResult) {
    match result {
        OpResult::Error(e) => write_error(b.init_error(), e),
        OpResult::Get(value) => {
            let mut g = b.init_get();
            g.set_found(value.is_some());
            if let Some(v) = value {
                g.set_value(&v.value);
                g.set_sequence(v.sequence);
            }
        }
        OpResult::Write { sequence } => b.init_write().set_sequence(*sequence),
        OpResult::Cas(c) => write_cas_result(b.init_cas(), c),
        OpResult::Scan(s) => write_scan_result(b.init_scan(), s),
        OpResult::Columns(found) => write_columns_result(b.init_columns(), found.as_ref()),
        OpResult::Increment { value, sequence } => {
            let mut i = b.init_increment();
            i.set_value(*value);
            i.set_sequence(*sequence);
        }
    }
}

fn write_columns_result(mut b: columns_result::Builder<'_>, found: Option<&VersionedColumns>) {
    b.set_found(found.is_some());
    if let Some(found) = found {
        b.set_sequence(found.sequence);
        write_columns(
            b.init_columns(list_len(found.columns.len())),
            &found.columns,
        );
    }
}

fn read_cas_result(r: cas_result::Reader<'_>) -> Result<CasResult> {
    let current = match r
        .get_current()
        .which()
        .map_err(|e| not_in_schema("CasResult.current", e))?
    {
        cas_result::current::Absent(()) => None,
        cas_result::current::Value(v) => Some(v?.to_vec()),
    };
    Ok(CasResult {
        succeeded: r.get_succeeded(),
        sequence: r.get_sequence(),
        current,
    })
}

fn write_cas_result(mut b: cas_result::Builder<'_>, c: &CasResult) {
    b.set_succeeded(c.succeeded);
    b.set_sequence(c.sequence);
    match &c.current {
        None => b.init_current().set_absent(()),
        Some(v) => b.init_current().set_value(v),
    }
}

fn read_scan_result(r: scan_result::Reader<'_>) -> Result<ScanResult> {
    let list = r.get_entries()?;
    let mut entries = Vec::with_capacity(list.len() as usize);
    for kv in list.iter() {
        entries.push((kv.get_key()?.to_vec(), kv.get_value()?.to_vec()));
    }
    Ok(ScanResult {
        entries,
        more: r.get_more(),
        continuation: r.get_continuation()?.to_vec(),
    })
}

fn write_scan_result(mut b: scan_result::Builder<'_>, s: &ScanResult) {
    b.set_more(s.more);
    b.set_continuation(&s.continuation);
    let len = u32::try_from(s.entries.len()).unwrap_or(u32::MAX);
    let mut list = b.init_entries(len);
    for (i, (k, v)) in s.entries.iter().enumerate().take(len as usize) {
        let mut kv = list.reborrow().get(i as u32);
        kv.set_key(k);
        kv.set_value(v);
    }
}

/// The largest message a Cap'n Proto implementation reads with its default settings: 8 Mi
/// words, the default traversal limit of capnp C++ (and so pycapnp) and capnp-rust, which they
/// also apply to a message's total size when reading it from a stream.
pub const DEFAULT_READER_LIMIT_BYTES: usize = 64 << 20;

/// Most bytes of results ([`result_wire_bytes`]) the server puts in one reply. The rest of the
/// limit above is headroom for the RPC framing around them and for segment ends left unused.
pub const REPLY_RESULT_BYTES_MAX: usize = 60 << 20;

/// Bytes of a `Data` or `Text` blob in a message: padded to whole words (`Text` adds a NUL).
fn blob_wire_bytes(len: usize) -> usize {
    (len + 1).div_ceil(8) * 8
}

/// Upper bound on the bytes `result` takes in a message: as an element of a `List(OpResult)`
/// (its struct words) plus everything it points to (structs, lists and blobs, word-padded).
/// The server caps a `batch` reply with it so that the whole reply stays within what a client
/// with default settings reads (a 64 MiB traversal limit).
pub fn result_wire_bytes(result: &OpResult) -> usize {
    // The `OpResult` struct, and the struct its union points to, with room to spare for the
    // fields either may gain (each is a few words).
    const STRUCTS: usize = 64;
    // A list pointer's tag word, and each `KeyValue` element (two pointers).
    const LIST_TAG: usize = 8;
    const KEY_VALUE: usize = 16;
    STRUCTS
        + match result {
            OpResult::Error(e) => blob_wire_bytes(e.message.len()),
            OpResult::Get(v) => v.as_ref().map_or(0, |v| blob_wire_bytes(v.value.len())),
            OpResult::Write { .. } => 0,
            OpResult::Cas(c) => c.current.as_ref().map_or(0, |v| blob_wire_bytes(v.len())),
            OpResult::Increment { .. } => 0,
            OpResult::Columns(c) => c.as_ref().map_or(0, |c| {
                LIST_TAG
                    + c.columns
                        .iter()
                        .map(|(n, v)| {
                            KEY_VALUE + blob_wire_bytes(n.len()) + blob_wire_bytes(v.len())
                        })
                        .sum::<usize>()
            }),
            OpResult::Scan(s) => {
                LIST_TAG
                    + blob_wire_bytes(s.continuation.len())
                    + s.entries
                        .iter()
                        .map(|(k, v)| {
                            KEY_VALUE + blob_wire_bytes(k.len()) + blob_wire_bytes(v.len())
                        })
                        .sum::<usize>()
            }
        }
}

/// Reads a `ServerInfo`.
pub fn read_server_info(r: server_info::Reader<'_>) -> Result<ServerInfo> {
    let l = r.get_limits()?;
    Ok(ServerInfo {
        version: r.get_version()?.to_string()?,
        protocol_version: r.get_protocol_version(),
        node_id: r.get_node_id(),
        durability: r.get_durability()?.to_string()?,
        shard_count: r.get_shard_count(),
        limits: ServerLimits {
            key_bytes_max: l.get_key_bytes_max(),
            value_bytes_max: l.get_value_bytes_max(),
            batch_ops_max: l.get_batch_ops_max(),
            batch_bytes_max: l.get_batch_bytes_max(),
            reply_bytes_max: l.get_reply_bytes_max(),
            scan_limit_default: l.get_scan_limit_default(),
            scan_limit_max: l.get_scan_limit_max(),
            scan_page_bytes_max: l.get_scan_page_bytes_max(),
            ttl_ms_max: l.get_ttl_ms_max(),
            frame_bytes_max: l.get_frame_bytes_max(),
            connection_inflight_ops_max: l.get_connection_inflight_ops_max(),
        },
    })
}

/// Writes a `ServerInfo`.
pub fn write_server_info(mut b: server_info::Builder<'_>, info: &ServerInfo) {
    b.set_version(info.version.as_str());
    b.set_protocol_version(info.protocol_version);
    b.set_node_id(info.node_id);
    b.set_durability(info.durability.as_str());
    b.set_shard_count(info.shard_count);
    let l = &info.limits;
    let mut lb = b.init_limits();
    lb.set_key_bytes_max(l.key_bytes_max);
    lb.set_value_bytes_max(l.value_bytes_max);
    lb.set_batch_ops_max(l.batch_ops_max);
    lb.set_batch_bytes_max(l.batch_bytes_max);
    lb.set_reply_bytes_max(l.reply_bytes_max);
    lb.set_scan_limit_default(l.scan_limit_default);
    lb.set_scan_limit_max(l.scan_limit_max);
    lb.set_scan_page_bytes_max(l.scan_page_bytes_max);
    lb.set_ttl_ms_max(l.ttl_ms_max);
    lb.set_frame_bytes_max(l.frame_bytes_max);
    lb.set_connection_inflight_ops_max(l.connection_inflight_ops_max);
}

/// Reads a `Topology`.
pub fn read_topology(r: topology::Reader<'_>) -> Result<Topology> {
    let mut shards = Vec::new();
    for s in r.get_shards()?.iter() {
        let mut replicas = Vec::new();
        for r in s.get_replicas()?.iter() {
            replicas.push(ReplicaInfo {
                node: r.get_node(),
                host: text(r.get_host()?)?,
                port: r.get_port(),
            });
        }
        shards.push(ShardInfo {
            id: s.get_id(),
            host: text(s.get_host()?)?,
            port: s.get_port(),
            leader: s.get_leader(),
            replicas,
        });
    }
    Ok(Topology {
        shard_count: r.get_shard_count(),
        hash: text(r.get_hash()?)?,
        shards,
    })
}

/// Writes a `Topology`.
pub fn write_topology(mut b: topology::Builder<'_>, t: &Topology) {
    b.set_shard_count(t.shard_count);
    b.set_hash(t.hash.as_str());
    let mut list = b.init_shards(t.shards.len() as u32);
    for (i, s) in t.shards.iter().enumerate() {
        let mut e = list.reborrow().get(i as u32);
        e.set_id(s.id);
        e.set_host(s.host.as_str());
        e.set_port(s.port);
        e.set_leader(s.leader);
        let mut replicas = e.init_replicas(s.replicas.len() as u32);
        for (j, r) in s.replicas.iter().enumerate() {
            let mut b = replicas.reborrow().get(j as u32);
            b.set_node(r.node);
            b.set_host(r.host.as_str());
            b.set_port(r.port);
        }
    }
}

/// Reads one `ShardStats`.
pub fn read_shard_stats(r: shard_stats::Reader<'_>) -> Result<ShardStats> {
    let mut counters = Vec::new();
    for c in r.get_counters()?.iter() {
        counters.push((text(c.get_name()?)?, c.get_value()));
    }
    Ok(ShardStats {
        id: r.get_id(),
        counters,
    })
}

/// Writes one `ShardStats`.
pub fn write_shard_stats(mut b: shard_stats::Builder<'_>, s: &ShardStats) {
    b.set_id(s.id);
    let mut list = b.init_counters(s.counters.len() as u32);
    for (i, (name, value)) in s.counters.iter().enumerate() {
        let mut c = list.reborrow().get(i as u32);
        c.set_name(name.as_str());
        c.set_value(*value);
    }
}

fn text(t: capnp::text::Reader<'_>) -> Result<String> {
    t.to_string()
        .map_err(|e| capnp::Error::failed(format!("text field is not UTF-8: {e}")))
}

#[cfg(test)]
mod tests;
