//! Entities and counters on this shard's store: column updates and increments are
//! read-modify-writes inside the engine ([`crate::store::Store::read_modify_write`]), so
//! concurrent updates of one key are applied one after another and none is lost.
//!
//! Why read-modify-write rather than merge operands resolved on read and compaction (RocksDB's
//! merge operator): an update costs one read of the key, which for a key written recently is a
//! memtable hit, and every read and scan stays a plain lookup of one version, with nothing to
//! fold. The encodings are in [`corekv_proto::entity`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use corekv_proto::entity;
use corekv_proto::{
    ErrorCode, GetColumnsOp, IncrementOp, OpError, OpResult, PutEntityOp, UpdateColumnsOp,
    VersionedColumns,
};

use super::Shard;
use super::local::{storage_error, ttl};
use crate::store::{Change, WriteSet};

impl Shard {
    /// Reads columns of the entity under `op.key`.
    pub(super) async fn get_columns(&self, op: &GetColumnsOp) -> OpResult {
        let (bytes, sequence) = match self.store.get(&op.key).await {
            Ok(Some(found)) => found,
            Ok(None) => return OpResult::Columns(None),
            Err(e) => return OpResult::Error(storage_error(e)),
        };
        let Some(all) = entity::decode(&bytes) else {
            return OpResult::Error(not_an_entity());
        };
        let columns = if op.names.is_empty() {
            all.into_iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect()
        } else {
            let wanted: std::collections::HashSet<&[u8]> =
                op.names.iter().map(Vec::as_slice).collect();
            all.into_iter()
                .filter(|(n, _)| wanted.contains(n))
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect()
        };
        OpResult::Columns(Some(VersionedColumns { columns, sequence }))
    }

    /// Sets and removes columns of the entity under `op.key`.
    pub(super) async fn update_columns(&self, op: &UpdateColumnsOp) -> OpResult {
        let ttl = ttl(op.ttl_ms);
        let outcome = self
            .store
            .read_modify_write(&op.key, |current| {
                let mut columns: BTreeMap<&[u8], &[u8]> = match current {
                    None => BTreeMap::new(),
                    Some((bytes, _)) => match entity::decode(bytes) {
                        Some(columns) => columns.into_iter().collect(),
                        None => return (Change::Keep, Err(not_an_entity())),
                    },
                };
                for name in &op.remove {
                    columns.remove(name.as_slice());
                }
                for (name, value) in &op.set {
                    columns.insert(name, value);
                }
                let change = if columns.is_empty() {
                    Change::Delete
                } else {
                    let value = entity::encode_sorted(columns.iter().map(|(n, v)| (*n, *v)));
                    Change::Put {
                        value: Cow::Owned(value),
                        ttl,
                    }
                };
                (change, Ok(()))
            })
            .await;
        match outcome {
            Ok((Ok(()), Some(sequence))) => OpResult::Write { sequence },
            Ok((Err(e), _)) => OpResult::Error(e),
            Ok((Ok(()), None)) => OpResult::Error(unwritten()),
            Err(e) => OpResult::Error(storage_error(e)),
        }
    }

    /// Adds `op.delta` to the counter `op` addresses.
    pub(super) async fn increment(&self, op: &IncrementOp) -> OpResult {
        let ttl = ttl(op.ttl_ms);
        let outcome = self
            .store
            .read_modify_write(&op.key, |current| match incremented(op, current) {
                Ok((value, new)) => (
                    Change::Put {
                        value: Cow::Owned(value),
                        ttl,
                    },
                    Ok(new),
                ),
                Err(e) => (Change::Keep, Err(e)),
            })
            .await;
        match outcome {
            Ok((Ok(value), Some(sequence))) => OpResult::Increment { value, sequence },
            Ok((Err(e), _)) => OpResult::Error(e),
            Ok((Ok(_), None)) => OpResult::Error(unwritten()),
            Err(e) => OpResult::Error(storage_error(e)),
        }
    }
}

/// Adds an entity put to `set` (the operation was checked: names valid and unique).
pub(super) fn add_put_entity(set: &mut WriteSet, op: &PutEntityOp) {
    let mut columns: Vec<(&[u8], &[u8])> = op
        .columns
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    columns.sort_unstable_by_key(|(name, _)| *name);
    set.put(
        &op.key,
        &entity::encode_sorted(columns.iter().copied()),
        ttl(op.ttl_ms),
    );
}

/// The bytes to store and the counter's new value, given the key's live value.
fn incremented(op: &IncrementOp, current: Option<(&[u8], u64)>) -> Result<(Vec<u8>, i64), OpError> {
    let current = current.map(|(bytes, _)| bytes);
    let add = |old: Option<&[u8]>| -> Result<i64, OpError> {
        let old = match old {
            None => 0,
            Some(bytes) => entity::decode_counter(bytes).ok_or_else(not_a_counter)?,
        };
        old.checked_add(op.delta).ok_or_else(|| {
            OpError::new(
                ErrorCode::InvalidArgument,
                format!("{old} + {} overflows a signed 64-bit counter", op.delta),
            )
        })
    };
    if op.column.is_empty() {
        let new = add(current)?;
        return Ok((entity::encode_counter(new), new));
    }
    let mut columns: BTreeMap<&[u8], &[u8]> = match current {
        None => BTreeMap::new(),
        Some(bytes) => entity::decode(bytes)
            .ok_or_else(not_an_entity)?
            .into_iter()
            .collect(),
    };
    let new = add(columns.get(op.column.as_slice()).copied())?;
    let counter = entity::encode_counter(new);
    columns.insert(&op.column, &counter);
    let value = entity::encode_sorted(columns.iter().map(|(n, v)| (*n, *v)));
    Ok((value, new))
}

fn not_an_entity() -> OpError {
    OpError::new(
        ErrorCode::WrongType,
        "the key holds a plain value, not an entity of columns; put an entity or use get/put",
    )
}

fn not_a_counter() -> OpError {
    OpError::new(
        ErrorCode::WrongType,
        "the counter holds bytes that are not a decimal signed 64-bit integer",
    )
}

/// A read-modify-write that chose a write and reported none: a bug.
fn unwritten() -> OpError {
    OpError::new(ErrorCode::Internal, "the update was not written")
}
