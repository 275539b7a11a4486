//! The shard's view of its storage engine: the only module that names the engine's API.
//!
//! Like TiKV's `engine_traits`, this keeps the request path independent of how the engine is
//! built: the shard calls these methods and nothing else.
//!
//! TEMPORARY: until `corekv-storage`'s engine lands, the methods are backed by an in-memory
//! ordered map with the engine's documented semantics (limits, TTL, CAS, scans) but no
//! durability. The server says so in its startup log.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

pub use corekv_storage::{Error, Options, Result};

/// Sequence number of a write within one shard.
pub type SeqNo = u64;

/// One write of an atomic batch.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// Put `value` under `key`, expiring after `ttl` if given.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Time to live.
        ttl: Option<Duration>,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: &'a [u8],
    },
}

/// A range read: `[start, end)`, at most `limit` entries, in either direction.
#[derive(Debug, Clone)]
pub struct ScanRange {
    /// Inclusive; empty = from the first key.
    pub start: Vec<u8>,
    /// Exclusive; `None` = to the last key.
    pub end: Option<Vec<u8>>,
    /// Most entries returned, at least 1.
    pub limit: usize,
    /// Descending from just below `end`.
    pub reverse: bool,
}

/// The result of a range read.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    /// Entries in scan order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the range may hold more entries beyond the last one.
    pub more: bool,
}

/// The outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The expectation held; the new state was written with this sequence number.
    Applied(SeqNo),
    /// The key held `current` instead.
    Mismatch {
        /// The live value (`None` = absent).
        current: Option<Vec<u8>>,
    },
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live_at(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

/// One shard's storage.
pub struct Store {
    options: Options,
    map: RefCell<BTreeMap<Vec<u8>, Entry>>,
    last_seq: Cell<SeqNo>,
    writes_total: Cell<u64>,
}

impl Store {
    /// Opens (creating if needed) the shard's storage in `dir`.
    pub async fn open(dir: &Path, options: Options) -> Result<Store> {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{dir:?} is not a directory"
            )));
        }
        Ok(Store {
            options,
            map: RefCell::new(BTreeMap::new()),
            last_seq: Cell::new(0),
            writes_total: Cell::new(0),
        })
    }

    /// Whether writes survive a restart (false while the in-memory stand-in is used).
    pub fn is_durable(&self) -> bool {
        false
    }

    /// The limits writes are checked against.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The newest live value of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.options.check_key(key)?;
        let now = Instant::now();
        Ok(self
            .map
            .borrow()
            .get(key)
            .filter(|e| e.live_at(now))
            .map(|e| e.value.clone()))
    }

    /// Applies `writes` atomically, in order. Returns the sequence number of the last one.
    pub async fn write(&self, writes: &[Write<'_>]) -> Result<SeqNo> {
        let mut bytes = 0usize;
        for w in writes {
            match *w {
                Write::Put { key, value, .. } => {
                    self.options.check_key(key)?;
                    self.options.check_value(value)?;
                    bytes += key.len() + value.len();
                }
                Write::Delete { key } => {
                    self.options.check_key(key)?;
                    bytes += key.len();
                }
            }
        }
        self.options.check_batch_bytes(bytes)?;
        let now = Instant::now();
        let mut map = self.map.borrow_mut();
        for w in writes {
            match *w {
                Write::Put { key, value, ttl } => {
                    map.insert(
                        key.to_vec(),
                        Entry {
                            value: value.to_vec(),
                            // A TTL too large to represent never expires.
                            expires: ttl.and_then(|t| now.checked_add(t)),
                        },
                    );
                }
                Write::Delete { key } => {
                    map.remove(key);
                }
            }
        }
        Ok(self.next_seq(writes.len() as u64))
    }

    fn next_seq(&self, writes: u64) -> SeqNo {
        let seq = self.last_seq.get() + writes.max(1);
        self.last_seq.set(seq);
        self.writes_total.set(self.writes_total.get() + writes);
        seq
    }

    /// Compare-and-set, atomic with respect to every other write of this shard.
    pub async fn compare_and_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        self.options.check_key(key)?;
        if let Some(v) = new {
            self.options.check_value(v)?;
        }
        let now = Instant::now();
        let current = self
            .map
            .borrow()
            .get(key)
            .filter(|e| e.live_at(now))
            .map(|e| e.value.clone());
        if current.as_deref() != expected {
            return Ok(CasOutcome::Mismatch { current });
        }
        let write = match new {
            Some(value) => Write::Put { key, value, ttl },
            None => Write::Delete { key },
        };
        Ok(CasOutcome::Applied(self.write(&[write]).await?))
    }

    /// A range read of the latest state.
    pub async fn scan(&self, range: &ScanRange) -> Result<ScanPage> {
        debug_assert!(range.limit >= 1);
        let now = Instant::now();
        let map = self.map.borrow();
        let lower = Bound::Included(range.start.clone());
        let upper = match &range.end {
            Some(end) => Bound::Excluded(end.clone()),
            None => Bound::Unbounded,
        };
        if let (Bound::Included(s), Bound::Excluded(e)) = (&lower, &upper) {
            if s >= e {
                return Ok(ScanPage::default());
            }
        }
        let iter = map.range((lower, upper)).filter(|(_, e)| e.live_at(now));
        let mut page = ScanPage::default();
        let mut push = |(k, e): (&Vec<u8>, &Entry)| {
            if page.entries.len() == range.limit {
                page.more = true;
                return false;
            }
            page.entries.push((k.clone(), e.value.clone()));
            true
        };
        if range.reverse {
            for kv in iter.rev() {
                if !push(kv) {
                    break;
                }
            }
        } else {
            for kv in iter {
                if !push(kv) {
                    break;
                }
            }
        }
        Ok(page)
    }

    /// The engine's counters: `(stable snake_case name with unit, value)`.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("storage_writes_total", self.writes_total.get()),
            ("storage_keys", self.map.borrow().len() as u64),
        ]
    }

    /// Makes every acknowledged write durable and releases the storage.
    pub async fn close(&self) -> Result<()> {
        Ok(())
    }
}
