//! An in-process ordered map standing in for a database: the driver's own ceiling (how fast it
//! generates, measures and completes operations with no network at all), and a model for tests
//! (a read of a record that was never written returns `NOT_FOUND`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::{Backend, Connection, Update};
use crate::ycsb::measure::Status;
use crate::ycsb::record::merge_field;

/// Shared by every connection: one map behind a lock.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    map: Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryBackend {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records stored.
    pub fn len(&self) -> usize {
        self.map.read().map_or(0, |m| m.len())
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.read().ok()?.get(key).cloned()
    }
}

/// A connection to the shared map.
#[derive(Debug)]
pub struct MemoryConn {
    backend: MemoryBackend,
}

impl Backend for MemoryBackend {
    type Conn = MemoryConn;

    fn name(&self) -> &'static str {
        "memory"
    }

    async fn connect(&self) -> Result<MemoryConn, crate::Error> {
        Ok(MemoryConn {
            backend: self.clone(),
        })
    }
}

impl Connection for MemoryConn {
    async fn insert(&self, key: &[u8], record: &[u8]) -> Status {
        match self.backend.map.write() {
            Ok(mut m) => {
                m.insert(key.to_vec(), record.to_vec());
                Status::Ok
            }
            Err(_) => Status::Error,
        }
    }

    async fn read(&self, key: &[u8], keep: Option<&mut Vec<u8>>) -> Status {
        let Ok(m) = self.backend.map.read() else {
            return Status::Error;
        };
        match m.get(key) {
            Some(v) => {
                if let Some(keep) = keep {
                    keep.clear();
                    keep.extend_from_slice(v);
                }
                Status::Ok
            }
            None => Status::NotFound,
        }
    }

    async fn update(&self, key: &[u8], update: Update<'_>, _current: Option<&[u8]>) -> Status {
        let Ok(mut m) = self.backend.map.write() else {
            return Status::Error;
        };
        let Some(stored) = m.get_mut(key) else {
            return Status::NotFound;
        };
        match update {
            Update::All(record) => {
                stored.clear();
                stored.extend_from_slice(record);
                Status::Ok
            }
            Update::Field { index, value } => {
                let mut merged = Vec::with_capacity(stored.len() + value.len());
                match merge_field(stored, index, value, &mut merged) {
                    Ok(()) => {
                        *stored = merged;
                        Status::Ok
                    }
                    Err(_) => Status::UnexpectedState,
                }
            }
        }
    }

    async fn scan(&self, start: &[u8], count: u64) -> Status {
        let Ok(m) = self.backend.map.read() else {
            return Status::Error;
        };
        let found = m.range(start.to_vec()..).take(count as usize).count();
        if found == 0 {
            Status::NotFound
        } else {
            Status::Ok
        }
    }

    fn failure(&self) -> Option<String> {
        None
    }
}
