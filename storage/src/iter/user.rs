//! [`VisibleIter`]: what a reader at a sequence number sees of a [`MergeIter`]: for each key,
//! the newest version at or below the read sequence number, skipped when it is a tombstone
//! or has expired.

use super::merge::MergeIter;
use crate::SeqNo;
use crate::error::Result;

/// The live key-value pairs of a merged stream at `read_seq`, judged at `now_ms`.
#[derive(Debug)]
pub struct VisibleIter {
    merge: MergeIter,
    read_seq: SeqNo,
    now_ms: u64,
    key: Vec<u8>,
    value: Vec<u8>,
    valid: bool,
}

impl VisibleIter {
    /// Wraps a positioned or unpositioned merge; call a seek before reading.
    pub fn new(merge: MergeIter, read_seq: SeqNo, now_ms: u64) -> VisibleIter {
        VisibleIter {
            merge,
            read_seq,
            now_ms,
            key: Vec::new(),
            value: Vec::new(),
            valid: false,
        }
    }

    /// Forward: positions at the first live key `>= start`.
    pub async fn seek_ge(&mut self, start: &[u8]) -> Result<()> {
        self.merge.seek_ge(start).await?;
        self.settle().await
    }

    /// Reverse: positions at the last live key `< end` (the last of all when None).
    pub async fn seek_lt(&mut self, end: Option<&[u8]>) -> Result<()> {
        self.merge.seek_lt(end).await?;
        self.settle().await
    }

    /// Whether the iterator is on a live key.
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The current value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Moves to the next live key in the iterator's direction.
    pub async fn next(&mut self) -> Result<()> {
        self.settle().await
    }

    /// Consumes the merged stream up to and including the next live key.
    async fn settle(&mut self) -> Result<()> {
        self.valid = false;
        let forward = self.merge.forward();
        while self.merge.valid() {
            // All versions of one key are adjacent: newest first going forward, oldest first
            // in reverse.
            self.key.clear();
            self.key.extend_from_slice(self.merge.entry().key);
            let mut found: Option<bool> = None; // Some(live?) once the visible version is seen
            while self.merge.valid() && self.merge.entry().key == self.key.as_slice() {
                let e = self.merge.entry();
                if e.seq <= self.read_seq && (!forward || found.is_none()) {
                    // Forward: the first such version is the newest visible. Reverse: the
                    // last such version is.
                    let live = !e.is_absent_at(self.now_ms);
                    if live {
                        self.value.clear();
                        self.value.extend_from_slice(e.value);
                    }
                    found = Some(live);
                }
                self.merge.step().await?;
            }
            if found == Some(true) {
                self.valid = true;
                return Ok(());
            }
        }
        Ok(())
    }
}
