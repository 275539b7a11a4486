//! The log operations replication needs: records by index ([`Wal::read`]), cutting the tail
//! ([`Wal::truncate_suffix`]), dropping the head ([`Wal::drop_prefix`]) and starting over at
//! a later index ([`Wal::restart_at`]).

use super::*;

impl Wal {
    /// Reads the written records with indices in `range` from disk, checking each frame.
    /// Stops early once `bytes_max` payload bytes have been returned (at least one record is
    /// returned if the range is not empty).
    pub async fn read(&self, range: Range<u64>, bytes_max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        if range.start >= range.end {
            return Ok(out);
        }
        {
            let state = self.shared.state.borrow();
            let first = self.first_index();
            if range.start < first || range.end > state.written_index + 1 {
                return Err(Error::InvalidArgument(format!(
                    "WAL read of [{}, {}): the written log holds [{first}, {})",
                    range.start,
                    range.end,
                    state.written_index + 1
                )));
            }
        }
        let mut next = range.start;
        let mut bytes = 0usize;
        while next < range.end {
            // Find the segment, the byte span of the records wanted from it, and a file.
            let (path, first, span_start, ends, active_file, format) = {
                let state = self.shared.state.borrow();
                let i = state
                    .segments
                    .partition_point(|s| s.first_index <= next)
                    .saturating_sub(1);
                let seg = &state.segments[i];
                let from = (next - seg.first_index) as usize;
                let to = ((range.end - seg.first_index) as usize).min(seg.offsets.len());
                // Frame ends: the next frame's offset, or the segment end.
                let ends: Vec<u64> = (from..to)
                    .map(|k| seg.offsets.get(k + 1).copied().unwrap_or(seg.end))
                    .collect();
                let active_file = if i + 1 == state.segments.len() {
                    state.active.as_ref().map(|a| a.file.clone())
                } else {
                    None
                };
                let Some(&span_start) = seg.offsets.get(from) else {
                    return Err(Error::InvalidArgument(format!(
                        "WAL record {next} is not in segment {:?}",
                        seg.path
                    )));
                };
                (
                    seg.path.clone(),
                    seg.first_index,
                    span_start,
                    ends,
                    active_file,
                    seg.format,
                )
            };
            let span_end = ends.last().copied().unwrap_or(span_start);
            let data = match active_file {
                Some(f) => {
                    f.read_at(span_start, (span_end - span_start) as usize)
                        .await?
                }
                None => {
                    let f = self.shared.io.open(&path).await?;
                    let r = f
                        .read_at(span_start, (span_end - span_start) as usize)
                        .await;
                    f.close().await?;
                    r?
                }
            };
            let mut at = 0usize;
            for end in ends {
                let offset = span_start + at as u64;
                let frame =
                    &data[at.min(data.len())..((end - span_start) as usize).min(data.len())];
                match record::decode(frame, format.salt()) {
                    record::Decoded::Record { index, payload, .. } if index == next => {
                        bytes += payload.len();
                        out.push((index, payload.to_vec()));
                    }
                    other => {
                        return Err(Error::corruption(
                            &path,
                            offset,
                            format!("reading record {next}: {other:?}"),
                        ));
                    }
                }
                at = (end - span_start) as usize;
                next += 1;
                if bytes >= bytes_max {
                    return Ok(out);
                }
            }
            debug_assert!(next > first);
        }
        Ok(out)
    }

    /// Holds the writer for a structural change: waits until every queued record is written
    /// and the writer is idle, then refuses appends until [`Wal::end_maintenance`].
    async fn begin_maintenance(&self) -> Result<()> {
        self.wait(self.last_index(), Level::Written).await?;
        self.shared.state.borrow_mut().maintenance = true;
        loop {
            let seen = self.shared.progress.generation();
            let idle = {
                let state = self.shared.state.borrow();
                !state.busy && state.in_flight == 0
            };
            if idle {
                return Ok(());
            }
            self.shared.progress.changed(seen).await;
        }
    }

    fn end_maintenance(&self, result: &Result<()>) {
        let mut state = self.shared.state.borrow_mut();
        state.maintenance = false;
        if let Err(e) = result {
            // The files may be half changed: stop writing until reopened.
            state.failure.get_or_insert_with(|| Failure::from_error(e));
            state.stats.io_errors_total += 1;
        }
        drop(state);
        self.shared.work.notify();
        self.shared.progress.notify();
    }

    /// Removes every record with index `from` or above (Raft: entries that conflict with the
    /// leader's). `first_index() <= from <= last_index() + 1`. Durable when it returns: later
    /// segments are deleted (newest first), then the segment holding `from` is replaced by a
    /// copy of its prefix (write, sync, rename, sync directory), so a crash at any point leaves
    /// a prefix of the old log. The next append gets index `from`.
    pub async fn truncate_suffix(&self, from: u64) -> Result<()> {
        let (first, next) = (self.first_index(), self.shared.state.borrow().next_index);
        if from < first || from > next {
            return Err(Error::InvalidArgument(format!(
                "truncate_suffix({from}): must be within [{first}, {next}]"
            )));
        }
        if from == next {
            return Ok(());
        }
        self.begin_maintenance().await?;
        let result = self.truncate_suffix_held(from).await;
        self.end_maintenance(&result);
        result
    }

    async fn truncate_suffix_held(&self, from: u64) -> Result<()> {
        let shared = &self.shared;
        // Delete whole segments at or after `from`, newest first.
        let mut deleted = false;
        loop {
            let path = {
                let mut state = shared.state.borrow_mut();
                match state.segments.last() {
                    Some(s) if s.first_index >= from => {
                        let path = s.path.clone();
                        state.segments.pop();
                        state.active = None;
                        state.stats.segments_deleted_total += 1;
                        path
                    }
                    _ => break,
                }
            };
            shared.io.remove_off_thread(&path).await?;
            deleted = true;
        }
        if deleted {
            shared.io.sync_dir(&shared.dir).await?;
        }
        // Cut the segment holding `from`, if any.
        let cut = {
            let state = shared.state.borrow();
            state.segments.last().and_then(|s| {
                let k = (from - s.first_index) as usize;
                let previous = k.checked_sub(1).map(|p| s.offsets[p]);
                (k < s.offsets.len()).then(|| {
                    let at = s.offsets[k];
                    (
                        s.path.clone(),
                        s.first_index,
                        s.size_bytes,
                        at,
                        previous,
                        s.format,
                    )
                })
            })
        };
        if let Some((path, first_index, size_bytes, from_at, previous, format)) = cut {
            let active = shared.state.borrow_mut().active.take();
            let mut prefix = match &active {
                Some(a) => a.file.read_at(0, from_at as usize).await?,
                None => {
                    let f = shared.io.open(&path).await?;
                    let r = f.read_at(0, from_at as usize).await;
                    f.close().await?;
                    r?
                }
            };
            drop(active);
            // The log ends where the record before `from` ends, before any gap that preceded
            // `from`: the next record follows it directly.
            let cut_at = match previous {
                None => from_at,
                Some(at) => match record::decode(&prefix[at as usize..], format.salt()) {
                    record::Decoded::Record {
                        index, frame_len, ..
                    } if index == from - 1
                        && at + frame_len as u64 <= from_at
                        && at + frame_len as u64 + BLOCK > from_at =>
                    {
                        at + frame_len as u64
                    }
                    other => {
                        return Err(Error::corruption(
                            &path,
                            at,
                            format!("cutting before record {from}: {other:?}"),
                        ));
                    }
                },
            };
            prefix.truncate(cut_at as usize);
            let file = segment::rewrite_prefix(
                &shared.io,
                &shared.dir,
                first_index,
                size_bytes,
                &prefix,
                shared.opts.zero_fill(),
            )
            .await?;
            let mut state = shared.state.borrow_mut();
            if let Some(s) = state.segments.last_mut() {
                s.offsets.truncate((from - first_index) as usize);
                s.end = cut_at;
            }
            let tail_from = (cut_at - cut_at % BLOCK) as usize;
            state.active = Some(Active {
                file: Rc::new(file),
                end: cut_at,
                tail: prefix[tail_from..].to_vec(),
            });
        } else if shared.state.borrow().segments.is_empty() {
            // Everything went: keep an empty segment so the next index survives a restart.
            let header = segment::Header::new(from, shared.opts.segment_size_bytes as u64);
            let (file, path) =
                segment::create(&shared.io, &shared.dir, &header, shared.opts.zero_fill()).await?;
            shared.state.borrow_mut().start_segment(&header, path, file);
        } else if shared.state.borrow().active.is_none() {
            // The cut fell on a segment boundary: the previous segment becomes active again.
            let (path, end) = {
                let state = shared.state.borrow();
                let s = state.segments.last().map(|s| (s.path.clone(), s.end));
                s.unwrap_or_default()
            };
            let file = shared.io.open(&path).await?;
            let tail_from = end - end % BLOCK;
            let tail = file.read_at(tail_from, (end - tail_from) as usize).await?;
            shared.state.borrow_mut().active = Some(Active {
                file: Rc::new(file),
                end,
                tail,
            });
        }
        let mut state = shared.state.borrow_mut();
        state.next_index = from;
        state.written_index = from - 1;
        state.synced_index = state.synced_index.min(from - 1);
        state.sync_target = state.sync_target.min(from - 1);
        Ok(())
    }

    /// Drops every record and makes `next` (at least 1) the next append's index (Raft: a
    /// snapshot replaced the log up to `next - 1`; the old log may have reached further).
    /// Segments are deleted newest first, then an empty segment starting at `next` is made:
    /// a crash in between leaves a prefix of the old log or an empty one, which the caller
    /// (who recorded the snapshot first) restarts again.
    pub async fn restart_at(&self, next: u64) -> Result<()> {
        if next == 0 {
            return Err(Error::InvalidArgument(
                "restart_at(0): indexes start at 1".into(),
            ));
        }
        self.begin_maintenance().await?;
        let result = self.restart_held(next).await;
        self.end_maintenance(&result);
        result
    }

    async fn restart_held(&self, next: u64) -> Result<()> {
        let shared = &self.shared;
        loop {
            let path = {
                let mut state = shared.state.borrow_mut();
                let Some(s) = state.segments.pop() else {
                    break;
                };
                state.active = None;
                state.stats.segments_deleted_total += 1;
                s.path
            };
            shared.io.remove_off_thread(&path).await?;
        }
        shared.io.sync_dir(&shared.dir).await?;
        let header = segment::Header::new(next, shared.opts.segment_size_bytes as u64);
        let (file, path) =
            segment::create(&shared.io, &shared.dir, &header, shared.opts.zero_fill()).await?;
        let mut state = shared.state.borrow_mut();
        state.start_segment(&header, path, file);
        state.next_index = next;
        state.written_index = next - 1;
        state.synced_index = next - 1;
        state.sync_target = next - 1;
        Ok(())
    }

    /// Whether [`Wal::drop_prefix`] with `upto` would delete a segment.
    pub fn drops_a_segment(&self, upto: u64) -> bool {
        let state = self.shared.state.borrow();
        state.segments.len() >= 2 && state.segments[1].first_index <= upto
    }

    /// Deletes whole segments whose records all have indices below `upto` (Raft: entries
    /// compacted into a snapshot; the engine: records flushed to SSTables). Never deletes the
    /// segment being written. Returns the new [`Wal::first_index`], which may be below
    /// `upto`: records below `upto` that share a segment with later ones stay readable.
    pub async fn drop_prefix(&self, upto: u64) -> Result<u64> {
        let shared = &self.shared;
        let mut deleted = false;
        loop {
            if !self.drops_a_segment(upto) {
                break;
            }
            let segment = shared.state.borrow_mut().segments.remove(0);
            if let Err(e) = shared.io.remove_off_thread(&segment.path).await {
                // Still the first: a later drop retries it before any segment after it, so
                // the files on disk never skip a segment (open refuses a gap).
                shared.state.borrow_mut().segments.insert(0, segment);
                if deleted {
                    shared.io.sync_dir(&shared.dir).await?;
                }
                return Err(e);
            }
            shared.state.borrow_mut().stats.segments_deleted_total += 1;
            deleted = true;
        }
        if deleted {
            shared.io.sync_dir(&shared.dir).await?;
        }
        Ok(self.first_index())
    }
}
