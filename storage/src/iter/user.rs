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
    /// `merge::key_head(key)`: most entries of other keys differ from it, which spares a
    /// `memcmp` per step when skipping a key's versions.
    key_head: u64,
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
            key_head: 0,
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
        match self.next_fast() {
            Ok(()) => Ok(()),
            Err(pending) => self.finish(pending).await,
        }
    }

    /// Forward: [`VisibleIter::next`] as far as it gets without I/O. `Ok` when done; else
    /// the merge needs a step that reads a block, and `finish(pending)` completes the move.
    /// (Reverse iterators always return `Err`.)
    pub fn next_fast(&mut self) -> std::result::Result<(), Pending> {
        if !self.merge.forward() {
            return Err(Pending::Reverse);
        }
        if !self.valid {
            return Ok(());
        }
        self.valid = false;
        // Leave the current key: its visible version, then its older ones.
        if !self.merge.step_fast() {
            return Err(Pending::Skip);
        }
        self.run_forward(Phase::Skip)
    }

    /// Completes a move that [`VisibleIter::next_fast`] left pending.
    pub async fn finish(&mut self, pending: Pending) -> Result<()> {
        match pending {
            Pending::Reverse => self.settle_reverse().await,
            Pending::Skip => self.finish_forward(Phase::Skip).await,
            Pending::Find => self.finish_forward(Phase::Find).await,
        }
    }

    /// A slow step, then the forward walk from `phase`, until it completes.
    async fn finish_forward(&mut self, mut phase: Phase) -> Result<()> {
        loop {
            self.merge.step_slow().await?;
            match self.run_forward(phase) {
                Ok(()) => return Ok(()),
                Err(Pending::Skip) => phase = Phase::Skip,
                Err(_) => phase = Phase::Find,
            }
        }
    }

    /// The forward walk from `phase`, with steps that need no I/O. `Err(p)`: the merge needs
    /// a slow step; after it, resume in `p`'s phase.
    fn run_forward(&mut self, mut phase: Phase) -> std::result::Result<(), Pending> {
        loop {
            match phase {
                Phase::Skip => {
                    if self.merge.valid()
                        && self.merge.head() == self.key_head
                        && self.merge.entry().key == self.key.as_slice()
                    {
                        if !self.merge.step_fast() {
                            return Err(Pending::Skip);
                        }
                    } else {
                        phase = Phase::Find;
                    }
                }
                Phase::Find => {
                    if !self.merge.valid() {
                        return Ok(());
                    }
                    let e = self.merge.entry();
                    if e.seq > self.read_seq {
                        // Newer than the read point: an older version of the key (or the
                        // next key) follows.
                        if !self.merge.step_fast() {
                            return Err(Pending::Find);
                        }
                        continue;
                    }
                    // Versions of one key come newest first: this is its visible version.
                    let live = !e.is_absent_at(self.now_ms);
                    self.key.clear();
                    self.key.extend_from_slice(e.key);
                    self.key_head = self.merge.head();
                    if live {
                        self.valid = true;
                        return Ok(());
                    }
                    if !self.merge.step_fast() {
                        return Err(Pending::Skip);
                    }
                    phase = Phase::Skip;
                }
            }
        }
    }

    /// Consumes the merged stream up to the next live key (forward: onto its visible
    /// version; reverse: past all its versions).
    async fn settle(&mut self) -> Result<()> {
        self.valid = false;
        if self.merge.forward() {
            return match self.run_forward(Phase::Find) {
                Ok(()) => Ok(()),
                Err(Pending::Skip) => self.finish_forward(Phase::Skip).await,
                Err(_) => self.finish_forward(Phase::Find).await,
            };
        }
        self.settle_reverse().await
    }

    /// Reverse: consumes every version of the next key that has a live visible version.
    async fn settle_reverse(&mut self) -> Result<()> {
        self.valid = false;
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
                if !self.merge.step_fast() {
                    self.merge.step_slow().await?;
                }
            }
            if found == Some(true) {
                self.valid = true;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Where a forward walk stopped for a step that reads a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// After the step, skip the older versions of the current key.
    Skip,
    /// After the step, look for the next visible version.
    Find,
    /// A reverse iterator: the whole move is done asynchronously.
    Reverse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Skip,
    Find,
}
