//! Executing operations on this shard's own store.
//!
//! A list of operations (one `batch` share, or a message from another shard) runs in
//! *phases*: a phase is the longest run of operations with no key twice. Within a phase every
//! `put`/`delete` goes into one atomic store write (one WAL record, one group commit) and the
//! reads and CASes run concurrently beside it; phases run one after another. So operations on
//! one key apply in list order, and distinct keys cost one write per phase, not per operation.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use corekv_proto::{
    CasOp, CasResult, ErrorCode, Expected, Op, OpError, OpResult, ScanOp, ScanResult, Versioned,
};
use corekv_storage::{Error as StorageError, Limit};
use futures::FutureExt;

use super::{Shard, columns};
use crate::metrics::OpKind;
use crate::replication::commands::encode_plain_writes;
use crate::store::{CasOutcome, EncodedBatch, Expect, ScanRange, WriteSet};

type OpFuture<'a> = Pin<Box<dyn Future<Output = (usize, OpResult)> + 'a>>;

impl Shard {
    /// Executes `ops`, all owned by this shard (a scan covers only this shard's keys): in a
    /// cluster through the shard's Raft group (writes are proposed, reads wait for a ReadIndex
    /// barrier), else on the store at once.
    pub async fn execute_local(&self, ops: Vec<Op>) -> Vec<OpResult> {
        match self.replica.get() {
            Some(replica) => replica.execute(self, ops).await,
            None => self.apply_local(ops).await,
        }
    }

    /// Executes `ops` on this shard's store: directly on a single node, and in a cluster when
    /// the group applies a committed entry (the engine then takes writes only inside it).
    pub async fn apply_local(&self, ops: Vec<Op>) -> Vec<OpResult> {
        let mut results: Vec<Option<OpResult>> = (0..ops.len()).map(|_| None).collect();
        // Reads commute with reads: without writes the whole list is one phase.
        let has_writes = ops.iter().any(Op::is_write);
        let mut start = 0;
        while start < ops.len() {
            let end = if has_writes {
                phase_end(&ops, start)
            } else {
                ops.len()
            };
            self.run_phase(&ops[start..end], &mut results[start..end])
                .await;
            start = end;
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    OpResult::Error(OpError::new(ErrorCode::Internal, "operation lost"))
                })
            })
            .collect()
    }

    /// Executes one operation owned by this shard (in a cluster, through its Raft group).
    pub async fn execute_local_one(&self, op: &Op) -> OpResult {
        if self.replica.get().is_none() {
            return self.apply_local_one(op).await;
        }
        self.execute_local(vec![op.clone()])
            .await
            .pop()
            .unwrap_or_else(|| OpResult::Error(OpError::new(ErrorCode::Internal, "operation lost")))
    }

    /// Applies a committed Raft entry's operations to this shard's store, one after another:
    /// every replica then hands out the same sequence numbers in the same order (running them
    /// concurrently, as phases do, would number them in whatever order the disk answers).
    ///
    /// An entry of plain writes (puts, deletes, entity puts) of distinct keys is one store
    /// write: the engine numbers a batch's writes one by one, so each gets the sequence number
    /// it would have had alone, and the entry costs one write, not one per operation. If the
    /// engine refuses the batch as a whole (a limit, a bad argument: nothing is written), the
    /// operations run one at a time, so that only the ones at fault fail, as they would alone.
    pub async fn apply_entry(&self, ops: &[Op]) -> Vec<OpResult> {
        if let Some(set) = plain_write_set(ops)
            && let Some(results) = self.apply_entry_writes(set).await
        {
            return results;
        }
        self.apply_entry_each(ops).await
    }

    /// Applies a committed entry's operations one at a time (see [`Shard::apply_entry`]).
    pub async fn apply_entry_each(&self, ops: &[Op]) -> Vec<OpResult> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.apply_local_one(op).await);
        }
        results
    }

    /// Applies a committed entry's plain writes (of distinct keys, encoded by the leader) as
    /// one store write (see [`Shard::apply_entry`]): the result of each, or `None` when the
    /// engine refused the batch as a whole (nothing written; the caller applies them one at
    /// a time).
    pub async fn apply_entry_encoded(&self, batch: EncodedBatch<'_>) -> Option<Vec<OpResult>> {
        let count = batch.len();
        self.entry_write_results(self.store.write_encoded(batch).await, count)
    }

    /// [`Shard::apply_entry_encoded`] of a set.
    async fn apply_entry_writes(&self, set: WriteSet) -> Option<Vec<OpResult>> {
        let count = set.len();
        self.entry_write_results(self.store.write(set).await, count)
    }

    /// The results of an entry's `count` writes made as one, or `None` when the engine refused
    /// them as a whole.
    fn entry_write_results(
        &self,
        r: Result<u64, StorageError>,
        count: usize,
    ) -> Option<Vec<OpResult>> {
        // The engine's checks of a whole batch, all made before anything is sequenced.
        if matches!(
            r,
            Err(StorageError::InvalidArgument(_)
                | StorageError::LimitExceeded { .. }
                | StorageError::EmptyKey)
        ) {
            return None;
        }
        Some(self.write_results(r, count).collect())
    }

    /// Executes one operation on this shard's store.
    pub async fn apply_local_one(&self, op: &Op) -> OpResult {
        match op {
            Op::Put { .. } | Op::Delete { .. } | Op::PutEntity(_) => {
                let mut set = WriteSet::with_capacity(1, op.payload_bytes());
                add_write(&mut set, op);
                self.write_result(self.store.write(set).await)
            }
            Op::Get { key } => self.get(key).await,
            Op::Cas(cas) => self.cas(cas).await,
            Op::Scan(scan) => self.local_scan(scan).await,
            Op::GetColumns(g) => self.get_columns(g).await,
            Op::UpdateColumns(u) => self.update_columns(u).await,
            Op::Increment(i) => self.increment(i).await,
        }
    }

    /// The puts and deletes of a `batch` call as one write, each key and value copied once,
    /// when the general path would make exactly one write of them ([`Shard::plain_writes`]):
    /// on a single node one [`WriteSet`], in a cluster one Raft entry's command encoded
    /// straight from the request. `None` otherwise.
    pub fn plain_write_call(&self, ops: &[RequestOp<'_>]) -> Option<PlainWrites> {
        let (_, payload_bytes) = self.plain_writes(ops)?;
        let write = match self.replica.get() {
            None => PlainWrite::Local(write_set_of(ops, payload_bytes)),
            Some(_) => PlainWrite::Replicated(encode_plain_writes(ops, payload_bytes)?),
        };
        let kinds = ops
            .iter()
            .map(|op| match op {
                RequestOp::Delete { .. } => OpKind::Delete,
                _ => OpKind::Put,
            })
            .collect();
        Some(PlainWrites { kinds, write })
    }

    /// Runs a [`Shard::plain_write_call`]'s write: the result of each operation, in order.
    pub async fn execute_plain_writes(&self, w: PlainWrite, count: usize) -> Vec<OpResult> {
        match w {
            PlainWrite::Local(set) => self
                .write_results(self.store.write(set).await, count)
                .collect(),
            PlainWrite::Replicated(command) => match self.replica.get() {
                Some(replica) => replica.propose_command(command, count).await,
                // Made only where the replica is set, which is never taken away.
                None => {
                    vec![OpResult::Error(OpError::new(ErrorCode::Internal, "no replica")); count]
                }
            },
        }
    }

    /// `(puts, payload bytes)` of `ops` when all are puts and deletes this shard owns that
    /// pass the limits, no key twice (so the whole list is one phase), the batch within its
    /// limits: then the general path writes them as one. `None` otherwise: the general path
    /// runs the call (and reports its errors).
    fn plain_writes(&self, ops: &[RequestOp<'_>]) -> Option<(usize, usize)> {
        let (puts, payload_bytes) = distinct_plain_writes(ops)?;
        for op in ops {
            let (key, value, ttl_ms) = match *op {
                RequestOp::Put { key, value, ttl_ms } => (key, Some(value), ttl_ms),
                RequestOp::Delete { key } => (key, None, 0),
                RequestOp::Other(_) => return None,
            };
            if self.owner(key) != self.id || self.limits.check_write(key, value, ttl_ms).is_err() {
                return None;
            }
        }
        self.limits.check_batch(ops.len(), payload_bytes).ok()?;
        Some((puts, payload_bytes))
    }

    async fn run_phase(&self, ops: &[Op], out: &mut [Option<OpResult>]) {
        debug_assert_eq!(ops.len(), out.len());
        // Sized once: grown by doubling, a phase of ~100 1000-byte values would be
        // reallocated (copied, and fresh memory touched) seven times.
        let (write_ops, write_bytes) = ops
            .iter()
            .filter(|op| is_plain_write(op))
            .fold((0, 0), |(n, bytes), op| (n + 1, bytes + op.payload_bytes()));
        let mut writes = WriteSet::with_capacity(write_ops, write_bytes);
        let mut write_positions = Vec::with_capacity(write_ops);
        let mut others: Vec<OpFuture<'_>> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Put { .. } | Op::Delete { .. } | Op::PutEntity(_) => {
                    add_write(&mut writes, op);
                    write_positions.push(i);
                }
                Op::Get { key } => {
                    // A read the store can answer without waiting (the memtable) is answered
                    // here; only reads that wait (disk) join the others. The future that was
                    // polled is the one kept, so a read that started I/O is never issued twice.
                    let mut read: OpFuture<'_> = Box::pin(async move { (i, self.get(key).await) });
                    match read.as_mut().now_or_never() {
                        Some((_, r)) => out[i] = Some(r),
                        None => others.push(read),
                    }
                }
                Op::Cas(cas) => others.push(Box::pin(async move { (i, self.cas(cas).await) })),
                Op::Scan(scan) => {
                    others.push(Box::pin(async move { (i, self.local_scan(scan).await) }))
                }
                Op::GetColumns(g) => {
                    let mut read: OpFuture<'_> =
                        Box::pin(async move { (i, self.get_columns(g).await) });
                    match read.as_mut().now_or_never() {
                        Some((_, r)) => out[i] = Some(r),
                        None => others.push(read),
                    }
                }
                Op::UpdateColumns(u) => {
                    others.push(Box::pin(async move { (i, self.update_columns(u).await) }))
                }
                Op::Increment(inc) => {
                    others.push(Box::pin(async move { (i, self.increment(inc).await) }))
                }
            }
        }
        let write = async {
            if writes.is_empty() {
                None
            } else {
                Some(self.store.write(writes).await)
            }
        };
        let (written, others) = futures::join!(write, futures::future::join_all(others));
        if let Some(written) = written {
            for (i, result) in write_positions
                .iter()
                .zip(self.write_results(written, write_positions.len()))
            {
                out[*i] = Some(result);
            }
        }
        for (i, r) in others {
            out[i] = Some(r);
        }
    }

    fn write_result(&self, r: Result<u64, StorageError>) -> OpResult {
        match r {
            Ok(sequence) => OpResult::Write { sequence },
            Err(e) => OpResult::Error(storage_error(e)),
        }
    }

    /// The results of the `count` writes of one store write that ended with `r`: the engine
    /// numbers a batch's writes one by one, so write `j` has the sequence number
    /// `last - (count - 1 - j)`, the version a `get` of its key reports.
    pub fn write_results(
        &self,
        r: Result<u64, StorageError>,
        count: usize,
    ) -> impl Iterator<Item = OpResult> {
        let outcome = match r {
            Ok(last) => {
                assert!(count as u64 <= last, "a batch of {count} ends at {last}");
                Ok(last + 1 - count as u64)
            }
            Err(e) => Err(OpResult::Error(storage_error(e))),
        };
        (0..count as u64).map(move |j| match &outcome {
            Ok(first) => OpResult::Write {
                sequence: first + j,
            },
            Err(e) => e.clone(),
        })
    }

    async fn get(&self, key: &[u8]) -> OpResult {
        match self.store.get(key).await {
            Ok(v) => OpResult::Get(v.map(|(value, sequence)| Versioned { value, sequence })),
            Err(e) => OpResult::Error(storage_error(e)),
        }
    }

    async fn cas(&self, cas: &CasOp) -> OpResult {
        let outcome = self
            .store
            .compare_and_set(
                &cas.key,
                match &cas.expected {
                    Expected::Absent => Expect::Absent,
                    Expected::Value(v) => Expect::Value(v),
                    Expected::Sequence(s) => Expect::Sequence(*s),
                },
                cas.new.as_deref(),
                ttl(cas.ttl_ms),
            )
            .await;
        match outcome {
            Ok(CasOutcome::Applied(sequence)) => OpResult::Cas(CasResult {
                succeeded: true,
                sequence,
                current: None,
            }),
            Ok(CasOutcome::Mismatch {
                current,
                current_seq,
            }) => OpResult::Cas(CasResult {
                succeeded: false,
                sequence: current_seq,
                current,
            }),
            Err(e) => OpResult::Error(storage_error(e)),
        }
    }

    /// This shard's part of a scan: its own keys only, `limit` already capped.
    pub(crate) async fn local_scan(&self, scan: &ScanOp) -> OpResult {
        let range = ScanRange {
            start: scan.start.clone(),
            end: (!scan.end.is_empty()).then(|| scan.end.clone()),
            limit: self.limits.scan_limit(scan.limit).max(1) as usize,
            reverse: scan.reverse,
        };
        match self.store.scan(&range).await {
            Ok(page) => OpResult::Scan(ScanResult {
                entries: page.entries,
                more: page.more,
                continuation: Vec::new(),
            }),
            Err(e) => OpResult::Error(storage_error(e)),
        }
    }
}

/// One operation of a `batch` call as read from the request: puts and deletes still pointing
/// into the message (copied only once, into whatever runs them), the rest owned.
pub enum RequestOp<'a> {
    /// A put.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Time to live in milliseconds; 0 is none.
        ttl_ms: u64,
    },
    /// A delete.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Anything else, owned.
    Other(Op),
}

impl RequestOp<'_> {
    /// The key it addresses (none for a scan).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            RequestOp::Put { key, .. } | RequestOp::Delete { key } => Some(key),
            RequestOp::Other(op) => op.key(),
        }
    }

    /// Whether it can change data.
    pub fn is_write(&self) -> bool {
        match self {
            RequestOp::Put { .. } | RequestOp::Delete { .. } => true,
            RequestOp::Other(op) => op.is_write(),
        }
    }

    /// The owned operation.
    pub fn into_op(self) -> Op {
        match self {
            RequestOp::Put { key, value, ttl_ms } => Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
                ttl_ms,
            },
            RequestOp::Delete { key } => Op::Delete { key: key.to_vec() },
            RequestOp::Other(op) => op,
        }
    }
}

/// A `batch` call's puts and deletes as one write ([`Shard::plain_write_call`]).
pub struct PlainWrites {
    /// What each operation is, in the request's order.
    pub kinds: Vec<OpKind>,
    /// The write.
    pub write: PlainWrite,
}

/// The one write of a [`PlainWrites`].
pub enum PlainWrite {
    /// On a single node: one store write.
    Local(WriteSet),
    /// In a cluster: one Raft entry's plain-writes command, after room for the entry's time.
    Replicated(Vec<u8>),
}

/// `(puts, payload bytes)` of `ops` when there are some, every one a put or a delete, no key
/// twice; `None` otherwise.
fn distinct_plain_writes(ops: &[RequestOp<'_>]) -> Option<(usize, usize)> {
    let len = ops.len();
    if len == 0 {
        return None;
    }
    // std's keyed SipHash, as the phases use: keys come from clients.
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(if len > 1 { len } else { 0 });
    let (mut puts, mut payload_bytes) = (0usize, 0usize);
    for op in ops {
        let (key, value) = match *op {
            RequestOp::Put { key, value, .. } => (key, Some(value)),
            RequestOp::Delete { key } => (key, None),
            RequestOp::Other(_) => return None,
        };
        if len > 1 && !seen.insert(key) {
            return None;
        }
        puts += usize::from(value.is_some());
        payload_bytes += key.len() + value.map_or(0, <[u8]>::len);
    }
    Some((puts, payload_bytes))
}

/// The puts and deletes of `ops` (`payload_bytes` of keys and values) as one [`WriteSet`],
/// each key and value copied once; anything else is left out.
pub(crate) fn write_set_of(ops: &[RequestOp<'_>], payload_bytes: usize) -> WriteSet {
    let mut set = WriteSet::with_capacity(ops.len(), payload_bytes);
    for op in ops {
        match *op {
            RequestOp::Put { key, value, ttl_ms } => set.put(key, value, ttl(ttl_ms)),
            RequestOp::Delete { key } => set.delete(key),
            RequestOp::Other(_) => {}
        }
    }
    set
}

/// Whether `op` writes without reading the key first (a put, a delete, an entity put): such
/// writes of one phase go into one store write.
fn is_plain_write(op: &Op) -> bool {
    matches!(op, Op::Put { .. } | Op::Delete { .. } | Op::PutEntity(_))
}

/// `ops` as one [`WriteSet`] when there are several, every one a plain write
/// ([`is_plain_write`]) and no key twice; `None` otherwise.
fn plain_write_set(ops: &[Op]) -> Option<WriteSet> {
    if ops.len() < 2 || !ops.iter().all(is_plain_write) {
        return None;
    }
    // std's keyed SipHash, as the phases use: keys come from clients.
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(ops.len());
    if !ops
        .iter()
        .all(|op| op.key().is_some_and(|k| seen.insert(k)))
    {
        return None;
    }
    let mut set = WriteSet::with_capacity(ops.len(), ops.iter().map(Op::payload_bytes).sum());
    for op in ops {
        add_write(&mut set, op);
    }
    Some(set)
}

/// Adds a plain write ([`is_plain_write`]) to `set`; anything else is left out.
fn add_write(set: &mut WriteSet, op: &Op) {
    match op {
        Op::Put { key, value, ttl_ms } => set.put(key, value, ttl(*ttl_ms)),
        Op::Delete { key } => set.delete(key),
        Op::PutEntity(p) => columns::add_put_entity(set, p),
        Op::Get { .. }
        | Op::Cas(_)
        | Op::Scan(_)
        | Op::GetColumns(_)
        | Op::UpdateColumns(_)
        | Op::Increment(_) => {}
    }
}

/// `ttl_ms` as the store takes it: 0 is "no expiry".
pub(crate) fn ttl(ttl_ms: u64) -> Option<Duration> {
    (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms))
}

/// Where the phase starting at `start` ends: just before the first key seen twice.
fn phase_end(ops: &[Op], start: usize) -> usize {
    // std's keyed SipHash: keys come from clients, and a batch of colliding keys must not turn
    // this into quadratic work on the shard's only thread.
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(ops.len() - start);
    for (i, op) in ops.iter().enumerate().skip(start) {
        if let Some(key) = op.key() {
            if !seen.insert(key) {
                return i;
            }
        }
    }
    ops.len()
}

/// The typed error a client gets for a storage error.
pub fn storage_error(e: StorageError) -> OpError {
    let message = e.to_string();
    match e {
        StorageError::EmptyKey => OpError::new(ErrorCode::EmptyKey, message),
        StorageError::LimitExceeded { limit, actual, max } => OpError {
            code: match limit {
                Limit::KeySize => ErrorCode::KeyTooLarge,
                Limit::ValueSize => ErrorCode::ValueTooLarge,
                Limit::BatchSize => ErrorCode::BatchTooLarge,
            },
            message,
            limit: max,
            actual,
            leader: None,
        },
        StorageError::InvalidArgument(_) => OpError::new(ErrorCode::InvalidArgument, message),
        StorageError::Io { .. } => OpError::new(ErrorCode::Io, message),
        StorageError::Corruption { .. } => OpError::new(ErrorCode::Corruption, message),
        StorageError::ReadOnly { .. } => OpError::new(ErrorCode::ReadOnly, message),
        StorageError::Closed => OpError::new(ErrorCode::ShuttingDown, message),
        StorageError::Locked { .. } => OpError::new(ErrorCode::Internal, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> Op {
        Op::Put {
            key: k.as_bytes().to_vec(),
            value: vec![],
            ttl_ms: 0,
        }
    }

    #[test]
    fn phases_split_at_the_first_repeated_key() {
        let ops = vec![put("a"), put("b"), put("a"), put("c"), put("b"), put("d")];
        assert_eq!(phase_end(&ops, 0), 2);
        // From the second "a": a, c, b, d are all distinct.
        assert_eq!(phase_end(&ops, 2), 6);
        assert_eq!(phase_end(&[put("x"), put("x")], 0), 1);
        let scans = vec![Op::Scan(ScanOp::default()), Op::Scan(ScanOp::default())];
        assert_eq!(phase_end(&scans, 0), 2);
    }

    #[test]
    fn storage_limits_become_typed_size_errors() {
        let e = storage_error(StorageError::LimitExceeded {
            limit: Limit::ValueSize,
            actual: 10,
            max: 8,
        });
        assert_eq!(
            (e.code, e.actual, e.limit),
            (ErrorCode::ValueTooLarge, 10, 8)
        );
        assert_eq!(
            storage_error(StorageError::EmptyKey).code,
            ErrorCode::EmptyKey
        );
    }
}
