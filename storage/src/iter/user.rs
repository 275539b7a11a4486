//! [`VisibleIter`]: what a reader at a sequence number sees of a [`MergeIter`]: for each key,
//! the newest version at or below the read sequence number, skipped when it is a tombstone
//! or has expired.

use super::merge::MergeIter;
use crate::SeqNo;
use crate::error::Result;

/// The live key-value pairs of a merged stream at `read_seq`, judged at `now_ms`.
///
/// Going forward the iterator stops *on* the visible version in the merge, so the value is
/// read in place (from a cached block or a memtable chunk) without a copy; only the key is
/// copied (it is needed to skip the key's older versions on the next step). In reverse the
/// visible version is known only after reading past it, so its value is copied.
#[derive(Debug)]
pub struct VisibleIter {
    merge: MergeIter,
    read_seq: SeqNo,
    now_ms: u64,
    key: Vec<u8>,
    /// The current value (reverse only).
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

    /// The direction (fixed when the merge was made).
    pub fn forward(&self) -> bool {
        self.merge.forward()
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
    #[inline]
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current key (only when valid).
    #[inline]
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The current value (only when valid).
    #[inline]
    pub fn value(&self) -> &[u8] {
        if self.merge.forward() {
            // Forward, a valid iterator sits on the visible version.
            self.merge.entry().value
        } else {
            &self.value
        }
    }

    /// Moves to the next live key in the iterator's direction.
    pub async fn next(&mut self) -> Result<()> {
        if self.merge.forward() && self.valid {
            // Leave the current key: its visible version, then its older ones.
            self.merge.step().await?;
            self.skip_key().await?;
        }
        self.settle().await
    }

    /// Forward: steps past every entry of the merge whose key is `self.key`.
    async fn skip_key(&mut self) -> Result<()> {
        while self.merge.valid() && self.merge.entry().key == self.key.as_slice() {
            self.merge.step().await?;
        }
        Ok(())
    }

    /// Consumes the merged stream up to the next live key (forward: onto its visible
    /// version; reverse: past all its versions).
    async fn settle(&mut self) -> Result<()> {
        self.valid = false;
        if self.merge.forward() {
            while self.merge.valid() {
                let e = self.merge.entry();
                if e.seq > self.read_seq {
                    // Newer than the read point: an older version of the key (or the next
                    // key) follows.
                    self.merge.step().await?;
                    continue;
                }
                // Versions of one key come newest first: this is the key's visible version.
                let live = !e.is_absent_at(self.now_ms);
                self.key.clear();
                self.key.extend_from_slice(e.key);
                if live {
                    self.valid = true;
                    return Ok(());
                }
                self.merge.step().await?;
                self.skip_key().await?;
            }
            return Ok(());
        }
        while self.merge.valid() {
            // All versions of one key are adjacent, oldest first in reverse: the last one at
            // or below the read point is the visible one.
            self.key.clear();
            self.key.extend_from_slice(self.merge.entry().key);
            let mut found: Option<bool> = None; // Some(live?) once a visible version is seen
            while self.merge.valid() && self.merge.entry().key == self.key.as_slice() {
                let e = self.merge.entry();
                if e.seq <= self.read_seq {
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
