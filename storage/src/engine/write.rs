//! The write path: validation, stalls, sequencing (WAL record, memtable), durability, publishing.

use super::*;
use crate::batch::{BatchIter, BatchOp, EncodedBatch, Tally, Writes};

impl Engine {
    /// Writes `key = value`. Returns the write's sequence number once it is as durable as
    /// the durability mode promises.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write_inner(b, WriteKind::Single).await
    }

    /// Writes `key = value`, invisible to reads once `ttl` has passed (1 ms ..= 100 years).
    pub async fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.put_with_ttl(key, value, ttl);
        self.write_inner(b, WriteKind::Single).await
    }

    /// Deletes `key` (a no-op for readers if it is absent, but still a write).
    pub async fn delete(&self, key: &[u8]) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write_inner(b, WriteKind::Single).await
    }

    /// Applies every operation of `batch` atomically: readers (and recovery) see all of them
    /// or none. Returns the sequence number of the batch's last operation.
    pub async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        self.write_inner(batch, WriteKind::Batch).await
    }

    /// [`Engine::write`] of operations encoded elsewhere (a replicated log entry): the same
    /// checks and outcome, the memtable filled straight from `batch`'s bytes.
    pub async fn write_encoded(&self, batch: EncodedBatch<'_>) -> Result<SeqNo> {
        self.write_inner(batch, WriteKind::Batch).await
    }

    /// Compare-and-set, atomic with respect to every other write to this engine: if the live
    /// value of `key` equals `expected` (None = absent, deleted or expired), writes `new`
    /// (None = delete) with an optional TTL. The comparison includes writes that are sequenced
    /// but not yet acknowledged; a mismatch is reported only once those are acknowledged.
    pub async fn compare_and_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        self.compare_and_set_expecting(key, expected.into(), new, ttl)
            .await
    }

    /// [`Engine::compare_and_set`] with any expectation, a sequence number included.
    pub async fn compare_and_set_expecting(
        &self,
        key: &[u8],
        expected: Expect<'_>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        let change = match (new, ttl) {
            (Some(value), ttl) => Change::Put {
                value: Cow::Borrowed(value),
                ttl,
            },
            (None, None) => Change::Delete,
            (None, Some(_)) => {
                self.count_invalid();
                return Err(Error::InvalidArgument(
                    "compare_and_set: a ttl needs a new value (new = None deletes)".into(),
                ));
            }
        };
        let (mismatch, written) = self
            .read_modify_write(key, |current| {
                if expected.holds_for(current) {
                    (change.clone(), None)
                } else {
                    let (current, current_seq) =
                        current.map_or((None, 0), |(v, seq)| (Some(v.to_vec()), seq));
                    (
                        Change::Keep,
                        Some(CasOutcome::Mismatch {
                            current,
                            current_seq,
                        }),
                    )
                }
            })
            .await?;
        let mut stats = self.inner.stats.borrow_mut();
        match (written, mismatch) {
            (Some(seq), _) => {
                stats.cas_applied_total += 1;
                Ok(CasOutcome::Applied(seq))
            }
            (None, Some(mismatch)) => {
                stats.cas_mismatch_total += 1;
                Ok(mismatch)
            }
            (None, None) => unreachable!("a compare-and-set either writes or reports a mismatch"),
        }
    }

    /// Reads the live value of `key` (with its sequence number), lets `decide` choose a
    /// [`Change`] from it, and writes that change, atomically with respect to every other
    /// write to this engine: no write comes between the read and the write. `decide` may run
    /// more than once (when a flush or another write to the key raced with a read from the
    /// tables, or when a stall had to be waited out); the answer of its last run is returned,
    /// with the write's sequence number unless it chose [`Change::Keep`].
    ///
    /// The value read includes writes that are sequenced but not yet acknowledged; when
    /// nothing is written, the call returns only once those are acknowledged, so the caller
    /// never reports a state that could still be lost.
    pub async fn read_modify_write<'c, T>(
        &self,
        key: &[u8],
        mut decide: impl FnMut(Option<(&[u8], SeqNo)>) -> (Change<'c>, T),
    ) -> Result<(T, Option<SeqNo>)> {
        self.check_writable()?;
        self.inner
            .options
            .check_key(key)
            .inspect_err(|_| self.count_invalid())?;
        let inner = &self.inner;
        // Until `decide` has run, the least the write can cost: a delete of the key.
        let mut needed = memtable::write_cost_bytes(key.len(), 0);
        loop {
            self.make_room(needed).await?;
            let Some(current) = self.current_value(key).await? else {
                continue;
            };
            // From the read to `sequence` nothing awaits: no other write can come between.
            let (change, answer) = decide(current.as_ref().map(|(v, seq)| (v.as_slice(), *seq)));
            let mut b = WriteBatch::new();
            match change {
                Change::Keep => {
                    // What was read may come from a write not yet acknowledged: answer only
                    // once everything sequenced so far is durable.
                    let seen = inner.state.borrow().last_seq();
                    inner.log.wait_all_durable().await?;
                    inner.state.borrow_mut().publish(seen);
                    return Ok((answer, None));
                }
                Change::Put { value, ttl: None } => b.put(key, &value),
                Change::Put {
                    value,
                    ttl: Some(ttl),
                } => b.put_with_ttl(key, &value, ttl),
                Change::Delete => b.delete(key),
            };
            self.validate(&b)?;
            needed = write_cost(&b);
            if self.stall_reason(needed).is_some() {
                continue;
            }
            let seq = self.sequence(b)?;
            let seq = self.finish_write(seq, WriteKind::Single).await?;
            return Ok((answer, Some(seq)));
        }
    }

    /// The live value of `key` as of everything sequenced so far, or `None` when it must be
    /// read again. From the memtables synchronously; from the tables asynchronously, then
    /// re-checked: if a flush or a write to the key came in meanwhile, the read is stale.
    /// Returns without awaiting after the last check, so the caller can sequence a write
    /// based on the value before anything else runs.
    async fn current_value(&self, key: &[u8]) -> Result<Option<Option<(Vec<u8>, SeqNo)>>> {
        let inner = &self.inner;
        let now_ms = self.write_time_ms();
        let (mem_hit, version, generation, read_seq) = {
            let state = inner.state.borrow();
            let read_seq = state.last_seq();
            let hit = state.memtables_lookup(key, read_seq, now_ms);
            let version = state.version().clone();
            (hit, version, state.flush_generation(), read_seq)
        };
        if let Some(hit) = mem_hit {
            return Ok(Some(hit));
        }
        let from_tables = self.tables_lookup(&version, key, read_seq).await?;
        let state = inner.state.borrow();
        let raced = state.flush_generation() != generation
            || state
                .memtables_lookup(key, state.last_seq(), now_ms)
                .is_some();
        Ok((!raced).then_some(from_tables))
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        let failure = self
            .inner
            .log
            .failure()
            .or_else(|| self.inner.workers.failure());
        if let Some(reason) = failure {
            self.inner.stats.borrow_mut().rejected_read_only_total += 1;
            return Err(Error::ReadOnly { reason });
        }
        Ok(())
    }

    fn count_invalid(&self) {
        self.inner.stats.borrow_mut().rejected_invalid_total += 1;
    }

    fn validate(&self, b: &impl Writes) -> Result<()> {
        batch::validate(b, &self.inner.options).inspect_err(|_| self.count_invalid())
    }

    async fn write_inner(&self, b: impl Writes, kind: WriteKind) -> Result<SeqNo> {
        self.check_writable()?;
        self.validate(&b)?;
        let needed = write_cost(&b);
        loop {
            self.make_room(needed).await?;
            // No await between make_room and sequence: the room is still there (checked
            // again, cheaply, in case a stalled writer ahead took it).
            if self.stall_reason(needed).is_none() {
                let s = self.sequence(b)?;
                let r = self.finish_write(s, kind).await;
                // After sequencing, never before: writes are sequenced in the order issued.
                backlog::cooperate(&self.inner.backlog).await;
                return r;
            }
        }
    }

    /// Whether the active memtable may become immutable now. Always with the engine's own
    /// WAL; with an external log, unless it holds writes of the entry being applied, whose
    /// writes must all land in one memtable (see `log.rs`).
    pub(super) fn may_switch_memtable(&self, state: &State) -> bool {
        match self.inner.log.external().and_then(|log| log.entry()) {
            Some((index, _)) => state.memtable_log_index() < index,
            None => true,
        }
    }

    /// Whether the active memtable has no room for `needed` more bytes, once the versions
    /// no reader needs are dropped (see [`State::memtable_full_after_prune`]).
    fn memtable_full(&self, state: &mut State, needed: usize) -> bool {
        let inner = &self.inner;
        let max = inner.options.memtable_size_bytes_max;
        let (full, pass) = state.memtable_full_after_prune(needed, max, &inner.snapshots);
        if let Some(pass) = pass {
            let mut stats = inner.stats.borrow_mut();
            stats.memtable_prunes_total += 1;
            stats.memtable_pruned_bytes_total += pass.freed as u64;
            stats.memtable_prune_us_total += pass.took.as_micros() as u64;
        }
        full
    }

    /// Why a write of `needed` bytes cannot be sequenced now, if it cannot. May first prune
    /// the active memtable (see [`Engine::memtable_full`]).
    fn stall_reason(&self, needed: usize) -> Option<StallReason> {
        let inner = &self.inner;
        let mut state = inner.state.borrow_mut();
        let o = &inner.options;
        if self.memtable_full(&mut state, needed)
            && self.may_switch_memtable(&state)
            && state.immutable_count() >= o.memtables_immutable_max
        {
            return Some(StallReason::Memtables);
        }
        if state.version().levels[0].len() >= o.l0_stop_writes_files {
            return Some(StallReason::Level0);
        }
        if inner.picker.pending_bytes(state.version()) >= o.pending_compaction_bytes_stop {
            return Some(StallReason::PendingCompaction);
        }
        None
    }

    /// Waits (a counted write stall) until a write of `needed` bytes can go in. Stalled
    /// writers go on in arrival order: while one waits, later writers queue behind it, so
    /// writes are still sequenced in the order they were issued and a large write is not
    /// starved by small ones.
    pub(super) async fn make_room(&self, needed: usize) -> Result<()> {
        let inner = &self.inner;
        let workers = &inner.workers;
        if workers.stalled_writers() == 0 {
            let Some(reason) = self.stall_reason(needed) else {
                return Ok(());
            };
            let mut stats = inner.stats.borrow_mut();
            stats.write_stalls_total += 1;
            match reason {
                StallReason::Memtables => stats.write_stalls_memtables_total += 1,
                StallReason::Level0 => stats.write_stalls_l0_total += 1,
                StallReason::PendingCompaction => stats.write_stalls_pending_compaction_total += 1,
            }
        }
        let started = std::time::Instant::now();
        let ticket = workers.take_ticket();
        // A writer waits: the background goes to full shares now, not at its next event.
        background::refresh_backlog(inner);
        workers.wake();
        let r = loop {
            let seen = workers.room_generation();
            if let Err(e) = self.check_writable() {
                break Err(e);
            }
            if workers.is_turn(ticket) && self.stall_reason(needed).is_none() {
                break Ok(());
            }
            workers.room_changed(seen).await;
        };
        workers.done_ticket(ticket);
        inner.stats.borrow_mut().write_stall_us_total += started.elapsed().as_micros() as u64;
        r
    }

    /// Waits until a sequenced write is as durable as promised, then publishes it.
    async fn finish_write(&self, s: Sequenced, kind: WriteKind) -> Result<SeqNo> {
        let last_seq = s.last_seq;
        if let Err(e) = self.inner.log.wait_durable(s.index).await {
            self.inner.stats.borrow_mut().failed_io_total += 1;
            return Err(e);
        }
        self.inner.state.borrow_mut().publish(last_seq);
        let mut stats = self.inner.stats.borrow_mut();
        stats.writes_total += 1;
        stats.write_ops_total += u64::from(s.ops);
        stats.write_payload_bytes_total += s.payload_bytes as u64;
        if kind == WriteKind::Batch {
            stats.batches_total += 1;
        }
        Ok(last_seq)
    }

    /// Hands out sequence numbers, applies the (still invisible) versions to the memtable and
    /// queues the WAL record. Synchronous: nothing else runs on the shard in between.
    /// A full memtable is first made immutable (and its flush started). The caller has just
    /// checked that there is room (`stall_reason` is None).
    fn sequence(&self, b: impl Writes) -> Result<Sequenced> {
        let inner = &self.inner;
        let needed = write_cost(&b);
        debug_assert!({
            // The caller's check may have pruned; this one must not change anything.
            let state = inner.state.borrow();
            let o = &inner.options;
            !(state.memtable_full_now(needed, o.memtable_size_bytes_max)
                && self.may_switch_memtable(&state)
                && state.immutable_count() >= o.memtables_immutable_max)
        });
        // Refuse now, before anything changes, what the WAL would refuse below.
        inner.log.check_appendable(b.record_bytes())?;
        let mut state = inner.state.borrow_mut();
        if self.memtable_full(&mut state, needed) && self.may_switch_memtable(&state) {
            state.rotate_memtable(self.applied_log_entry());
            inner.workers.wake();
            drop(state);
            background::refresh_backlog(inner);
            state = inner.state.borrow_mut();
        }
        let write_time_ms = self.write_time_ms();
        let Tally {
            count: ops,
            payload_bytes,
            ..
        } = b.tally();
        let first_seq = state.apply_write(b.rep(), ops, write_time_ms, &inner.snapshots);
        let header = RecordHeader {
            ops,
            first_seq,
            write_time_ms,
        };
        let record_bytes = b.record_bytes();
        let index = inner.log.append(|| b.into_record(header))?;
        state.logged(index, record_bytes);
        let max = inner.options.memtable_size_bytes_max;
        if inner
            .backlog
            .memtable_step_passed(state.active_bytes(), max)
        {
            drop(state);
            background::refresh_backlog(inner);
            state = inner.state.borrow_mut();
        }
        Ok(Sequenced {
            last_seq: state.last_seq(),
            index,
            ops,
            payload_bytes,
        })
    }
}

/// Why a write has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StallReason {
    Memtables,
    Level0,
    PendingCompaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Single,
    Batch,
}

/// A sequenced write, waiting to become durable.
struct Sequenced {
    last_seq: SeqNo,
    index: u64,
    ops: u32,
    payload_bytes: usize,
}

/// Memtable bytes a batch needs at most.
fn write_cost(b: &impl Writes) -> usize {
    BatchIter::new(b.rep())
        .flatten()
        .map(|op| match op {
            BatchOp::Put { key, value, .. } => memtable::write_cost_bytes(key.len(), value.len()),
            BatchOp::Delete { key } => memtable::write_cost_bytes(key.len(), 0),
        })
        .sum()
}
