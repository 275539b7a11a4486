//! The shard's view of its storage engine: the only module that names the engine's API.
//!
//! Like TiKV's `engine_traits`, this keeps the request path independent of how the engine is
//! built: the shard calls these few methods and nothing else, so an engine change touches only
//! this file.

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

pub use corekv_storage::batch::FRAME_HEAD_BYTES;
use corekv_storage::io::FaultInjector;
pub use corekv_storage::{
    BatchOp, CasOutcome, Change, EncodedBatch, Error, Expect, Options, Result, ScanPage, ScanRange,
    SeqNo,
};
use corekv_storage::{Engine, OpenHooks, Snapshot, WriteBatch};

use crate::faults::PlantedBug;

/// How old the snapshot that the `stale-reads` planted bug reads may get.
const STALE_READS_AGE: Duration = Duration::from_millis(100);

/// An atomic list of writes built in place (puts and deletes, applied in order), sized up
/// front: the request's bytes are copied once, into the batch the engine logs and applies.
#[derive(Debug)]
pub struct WriteSet {
    batch: WriteBatch,
}

impl WriteSet {
    /// An empty set with room for `ops` writes carrying `payload_bytes` key and value bytes.
    pub fn with_capacity(ops: usize, payload_bytes: usize) -> WriteSet {
        WriteSet {
            batch: WriteBatch::with_capacity(ops, payload_bytes),
        }
    }

    /// Adds a put of `value` under `key`, expiring after `ttl` if given.
    pub fn put(&mut self, key: &[u8], value: &[u8], ttl: Option<Duration>) {
        match ttl {
            None => self.batch.put(key, value),
            Some(ttl) => self.batch.put_with_ttl(key, value, ttl),
        };
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        self.batch.delete(key);
    }

    /// The set's encoded operations after `head`, in the set's own buffer (see
    /// [`WriteBatch::into_framed`]).
    pub fn into_framed(self, head: [u8; FRAME_HEAD_BYTES]) -> Result<Vec<u8>> {
        self.batch.into_framed(head)
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the set holds no write.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// One shard's storage.
pub struct Store {
    engine: Engine,
    /// The `stale-reads` planted bug (tests only): the snapshot gets read and when it was taken.
    stale_reads: Option<RefCell<Option<(Instant, Snapshot)>>>,
}

impl Store {
    /// Opens (creating if needed) the shard's storage in `dir`, recovering what it holds.
    /// `faults` (tests only) makes chosen disk operations fail.
    /// `bug` (tests only) plants a consistency bug.
    /// `replicated`: the shard is a Raft group's replica, whose engine applies the group's log
    /// (`Engine::open_applying`) instead of keeping a WAL.
    pub async fn open(
        dir: &Path,
        mut options: Options,
        faults: Option<FaultInjector>,
        bug: Option<PlantedBug>,
        replicated: bool,
    ) -> Result<Store> {
        let hooks = OpenHooks {
            faults,
            ..OpenHooks::default()
        };
        if bug == Some(PlantedBug::EarlyAck) {
            // Acknowledged at once; the WAL writer writes it later.
            options.durability = corekv_storage::Durability::None;
        }
        let engine = if replicated {
            Engine::open_applying(dir, options, hooks).await?
        } else {
            Engine::open_with_hooks(dir, options, hooks).await?
        };
        Ok(Store {
            engine,
            stale_reads: (bug == Some(PlantedBug::StaleReads)).then(RefCell::default),
        })
    }

    /// The engine itself, for the Raft group that applies its log to it.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The newest live value of `key` and the sequence number of the write that stored it.
    pub async fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, SeqNo)>> {
        match &self.stale_reads {
            None => self.engine.get_versioned(key).await,
            Some(stale) => self.get_stale(stale, key).await,
        }
    }

    /// A get under the `stale-reads` planted bug.
    async fn get_stale(
        &self,
        stale: &RefCell<Option<(Instant, Snapshot)>>,
        key: &[u8],
    ) -> Result<Option<(Vec<u8>, SeqNo)>> {
        let snapshot = {
            let mut stale = stale.borrow_mut();
            if stale
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() > STALE_READS_AGE)
            {
                *stale = Some((Instant::now(), self.engine.snapshot()));
            }
            stale.as_ref().map(|(_, s)| s.clone())
        };
        let Some(snapshot) = snapshot else {
            return self.engine.get_versioned(key).await;
        };
        let value = self.engine.get_at(key, &snapshot).await?;
        Ok(value.map(|v| (v, snapshot.seq())))
    }

    /// Applies operations encoded elsewhere (a replicated entry's) as [`Store::write`] applies
    /// a set.
    pub async fn write_encoded(&self, batch: EncodedBatch<'_>) -> Result<SeqNo> {
        self.engine.write_encoded(batch).await
    }

    /// Applies `set` atomically, in order, once as durable as the durability mode promises.
    /// Returns the sequence number of the last write (the engine numbers them one by one).
    pub async fn write(&self, set: WriteSet) -> Result<SeqNo> {
        self.engine.write(set.batch).await
    }

    /// Compare-and-set, atomic with respect to every other write of this shard.
    pub async fn compare_and_set(
        &self,
        key: &[u8],
        expected: Expect<'_>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        self.engine
            .compare_and_set_expecting(key, expected, new, ttl)
            .await
    }

    /// Reads the live value of `key`, lets `decide` choose what to write from it, and writes
    /// that, with no other write to the store in between (`decide` may run more than once;
    /// the answer of its last run is returned, with the write's sequence number if it wrote).
    pub async fn read_modify_write<'c, T>(
        &self,
        key: &[u8],
        decide: impl FnMut(Option<(&[u8], SeqNo)>) -> (Change<'c>, T),
    ) -> Result<(T, Option<SeqNo>)> {
        self.engine.read_modify_write(key, decide).await
    }

    /// A range read of the latest acknowledged state.
    pub async fn scan(&self, range: &ScanRange) -> Result<ScanPage> {
        self.engine.scan(range, None).await
    }

    /// The engine's counters: `(stable snake_case name with unit, value)`.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.engine.stats().counters()
    }

    /// Makes every acknowledged write durable and releases the storage. Later calls on this
    /// store fail with a closed-engine error.
    pub async fn close(&self) -> Result<()> {
        self.engine.clone().close().await
    }
}
