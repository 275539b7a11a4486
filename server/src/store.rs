//! The shard's view of its storage engine: the only module that names the engine's API.
//!
//! Like TiKV's `engine_traits`, this keeps the request path independent of how the engine is
//! built: the shard calls these few methods and nothing else, so an engine change touches only
//! this file.

use std::path::Path;
use std::time::Duration;

use corekv_storage::io::FaultInjector;
pub use corekv_storage::{CasOutcome, Error, Expect, Options, Result, ScanPage, ScanRange, SeqNo};
use corekv_storage::{Engine, OpenHooks, WriteBatch};

/// An atomic list of writes built in place (puts and deletes, applied in order), sized up
/// front: the request's bytes are copied once, into the batch the engine logs and applies.
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
}

impl Store {
    /// Opens (creating if needed) the shard's storage in `dir`, recovering what it holds.
    /// `faults` (tests only) makes chosen disk operations fail.
    pub async fn open(
        dir: &Path,
        options: Options,
        faults: Option<FaultInjector>,
    ) -> Result<Store> {
        let hooks = OpenHooks {
            faults,
            ..OpenHooks::default()
        };
        Ok(Store {
            engine: Engine::open_with_hooks(dir, options, hooks).await?,
        })
    }

    /// The newest live value of `key` and the sequence number of the write that stored it.
    pub async fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, SeqNo)>> {
        self.engine.get_versioned(key).await
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
