//! Point reads, scans and iterators: the memtables, then the tables, at a sequence number.

use super::*;

impl Engine {
    /// The live value of `key`, as of the latest acknowledged write.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key).await?.map(|(value, _)| value))
    }

    /// The live value of `key` and the sequence number of the write that stored it, as of the
    /// latest acknowledged write.
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<(Vec<u8>, SeqNo)>> {
        self.check_open()?;
        self.get_seq(key, None).await
    }

    /// A consistent point-in-time view; the versions it needs are kept until it is dropped.
    pub fn snapshot(&self) -> Snapshot {
        let seq = self.inner.state.borrow().visible_seq();
        self.inner.snapshots.take(seq)
    }

    /// The live value of `key` as of `snapshot` (taken from this engine).
    pub async fn get_at(&self, key: &[u8], snapshot: &Snapshot) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.check_snapshot(snapshot)?;
        Ok(self
            .get_seq(key, Some(snapshot.seq()))
            .await?
            .map(|(value, _)| value))
    }

    /// Live entries of `range`, at `snapshot` or (None) the latest acknowledged state.
    pub async fn scan(&self, range: &ScanRange, snapshot: Option<&Snapshot>) -> Result<ScanPage> {
        self.check_open()?;
        if range.limit == 0 {
            return Err(Error::InvalidArgument(
                "scan limit must be at least 1".into(),
            ));
        }
        let seq = match snapshot {
            Some(s) => {
                self.check_snapshot(s)?;
                s.seq()
            }
            None => self.inner.state.borrow().visible_seq(),
        };
        let limit = range.limit.min(self.inner.options.scan_entries_max);
        let (entries, more) = self.scan_seq(range, limit, seq).await?;
        let mut stats = self.inner.stats.borrow_mut();
        stats.scans_total += 1;
        stats.scan_entries_total += entries.len() as u64;
        Ok(ScanPage { entries, more })
    }

    /// A cursor over the live entries at `snapshot` or (None) the latest acknowledged state,
    /// moving towards larger keys, or smaller ones when `reverse`. Unpositioned: call
    /// [`EngineIter::seek`] or [`EngineIter::seek_to_first`]. It reads keys and values in
    /// place, without allocating per entry, and sees exactly what [`Engine::scan`] would
    /// (TTLs judged at the time it is made). It pins the memtables and tables it reads until
    /// it is dropped (see [`EngineIter`]).
    pub fn iter(&self, reverse: bool, snapshot: Option<&Snapshot>) -> Result<EngineIter> {
        self.check_open()?;
        let seq = match snapshot {
            Some(s) => {
                self.check_snapshot(s)?;
                s.seq()
            }
            None => self.inner.state.borrow().visible_seq(),
        };
        self.inner.stats.borrow_mut().iterators_total += 1;
        Ok(self.iter_seq(seq, !reverse))
    }

    /// The live value of `key` at `at` (a registered snapshot's sequence number), or (None)
    /// at the read point as of the lookup.
    async fn get_seq(&self, key: &[u8], at: Option<SeqNo>) -> Result<Option<(Vec<u8>, SeqNo)>> {
        self.inner.options.check_key(key)?;
        backlog::cooperate(&self.inner.backlog).await;
        self.inner.stats.borrow_mut().gets_total += 1;
        // The read point, the memtables and the version are taken in one synchronous step: a
        // flush that moves a memtable into a table cannot fall between them, and no write can
        // be published and prune the version read (an unregistered read point is only safe
        // with no await between taking it and reading the memtables).
        let now_ms = self.inner.clock.now_ms();
        let (hit, version, seq) = {
            let state = self.inner.state.borrow();
            let seq = at.unwrap_or_else(|| state.visible_seq());
            let hit = state.memtables_lookup(key, seq, now_ms);
            (hit, state.version().clone(), seq)
        };
        if let Some(v) = hit {
            self.inner.stats.borrow_mut().gets_memtable_hits_total += 1;
            return Ok(v);
        }
        self.tables_lookup(&version, key, seq).await
    }

    /// The live value of `key` at `seq` in the tables of `version`.
    pub(super) async fn tables_lookup(
        &self,
        version: &Version,
        key: &[u8],
        seq: SeqNo,
    ) -> Result<Option<(Vec<u8>, SeqNo)>> {
        let out = version.get(key, key_hash(key), seq).await?;
        {
            let mut stats = self.inner.stats.borrow_mut();
            stats.bloom_useful_total += out.filter_negatives;
            stats.bloom_false_positive_total += out.filter_false_positives;
            stats.bloom_true_positive_total += out.filter_true_positives;
        }
        // While a log entry is applied, at the entry's time (as the memtables are judged).
        let now = self.write_time_ms();
        Ok(out
            .entry
            .filter(|e| !e.as_ref().is_absent_at(now))
            .map(|e| (e.value, e.seq)))
    }

    /// Up to `limit` live entries of `range` at `seq`, and whether more remain.
    async fn scan_seq(
        &self,
        range: &ScanRange,
        limit: usize,
        seq: SeqNo,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, bool)> {
        if let Some(end) = &range.end
            && end.as_slice() <= range.start.as_slice()
        {
            return Ok((Vec::new(), false));
        }
        let forward = !range.reverse;
        let mut it = self.iter_seq(seq, forward);
        let in_range = |k: &[u8]| {
            if forward {
                range.end.as_deref().is_none_or(|e| k < e)
            } else {
                k >= range.start.as_slice()
            }
        };
        match (forward, range.end.as_deref()) {
            (true, _) => it.seek(&range.start).await?,
            (false, Some(end)) => it.seek(end).await?,
            (false, None) => it.seek_to_first().await?,
        }
        let mut out = Vec::new();
        while it.valid() && in_range(it.key()) {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next().await?;
        }
        Ok((out, false))
    }

    /// An unpositioned iterator over the live entries at `seq`.
    fn iter_seq(&self, seq: SeqNo, forward: bool) -> EngineIter {
        // Registered for the iterator's life so writes keep the memtable versions it needs.
        let guard = self.inner.snapshots.take(seq);
        // Memtables and the version are taken in one synchronous step: a flush that moves a
        // memtable into a table cannot fall between them.
        let (sources, version) = {
            let state = self.inner.state.borrow();
            (state.sources(forward), state.version().clone())
        };
        let now = self.inner.clock.now_ms();
        let it = VisibleIter::new(MergeIter::new(sources, forward), seq, now);
        EngineIter::new(it, guard, version, self.inner.backlog.clone())
    }

    fn check_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        if !snapshot.belongs_to(&self.inner.snapshots) {
            return Err(Error::InvalidArgument(
                "snapshot was taken from another engine instance".into(),
            ));
        }
        Ok(())
    }
}
