//! The log operations replication needs: records by index ([`Wal::read`]), cutting the tail
//! ([`Wal::truncate_suffix`]) and dropping the head ([`Wal::drop_prefix`]).

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
            let st = self.sh.st.borrow();
            let first = self.first_index();
            if range.start < first || range.end > st.written_index + 1 {
                return Err(Error::InvalidArgument(format!(
                    "WAL read of [{}, {}): the written log holds [{first}, {})",
                    range.start,
                    range.end,
                    st.written_index + 1
                )));
            }
        }
        let mut next = range.start;
        let mut bytes = 0usize;
        while next < range.end {
            // Find the segment, the byte span of the records wanted from it, and a file.
            let (path, first, span_start, ends, active_file) = {
                let st = self.sh.st.borrow();
                let i = st
                    .segments
                    .partition_point(|s| s.first_index <= next)
                    .saturating_sub(1);
                let seg = &st.segments[i];
                let from = (next - seg.first_index) as usize;
                let to = ((range.end - seg.first_index) as usize).min(seg.offsets.len());
                // Frame ends: the next frame's offset, or the segment end.
                let ends: Vec<u64> = (from..to)
                    .map(|k| seg.offsets.get(k + 1).copied().unwrap_or(seg.end))
                    .collect();
                let active_file = if i + 1 == st.segments.len() {
                    st.active.as_ref().map(|a| a.file.clone())
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
                )
            };
            let span_end = ends.last().copied().unwrap_or(span_start);
            let data = match active_file {
                Some(f) => {
                    f.read_at(span_start, (span_end - span_start) as usize)
                        .await?
                }
                None => {
                    let f = self.sh.io.open(&path).await?;
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
                match record::decode(frame) {
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
        self.sh.st.borrow_mut().maintenance = true;
        loop {
            let seen = self.sh.progress.generation();
            if !self.sh.st.borrow().busy {
                return Ok(());
            }
            self.sh.progress.changed(seen).await;
        }
    }

    fn end_maintenance(&self, result: &Result<()>) {
        let mut st = self.sh.st.borrow_mut();
        st.maintenance = false;
        if let Err(e) = result {
            // The files may be half changed: stop writing until reopened.
            st.failure.get_or_insert_with(|| Failure::from_error(e));
            st.stats.io_errors_total += 1;
        }
        drop(st);
        self.sh.work.notify();
        self.sh.progress.notify();
    }

    /// Removes every record with index `from` or above (Raft: entries that conflict with the
    /// leader's). `first_index() <= from <= last_index() + 1`. Durable when it returns: later
    /// segments are deleted (newest first), then the segment holding `from` is replaced by a
    /// copy of its prefix (write, sync, rename, sync directory), so a crash at any point leaves
    /// a prefix of the old log. The next append gets index `from`.
    pub async fn truncate_suffix(&self, from: u64) -> Result<()> {
        let (first, next) = (self.first_index(), self.sh.st.borrow().next_index);
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
        let sh = &self.sh;
        // Delete whole segments at or after `from`, newest first.
        let mut deleted = false;
        loop {
            let path = {
                let mut st = sh.st.borrow_mut();
                match st.segments.last() {
                    Some(s) if s.first_index >= from => {
                        let path = s.path.clone();
                        st.segments.pop();
                        st.active = None;
                        st.stats.segments_deleted_total += 1;
                        path
                    }
                    _ => break,
                }
            };
            sh.io.remove(&path)?;
            deleted = true;
        }
        if deleted {
            sh.io.sync_dir(&sh.dir).await?;
        }
        // Cut the segment holding `from`, if any.
        let cut = {
            let st = sh.st.borrow();
            st.segments.last().and_then(|s| {
                let k = (from - s.first_index) as usize;
                (k < s.offsets.len())
                    .then(|| (s.path.clone(), s.first_index, s.size_bytes, s.offsets[k]))
            })
        };
        if let Some((path, first_index, size_bytes, cut_at)) = cut {
            let active = sh.st.borrow_mut().active.take();
            let prefix = match &active {
                Some(a) => a.file.read_at(0, cut_at as usize).await?,
                None => {
                    let f = sh.io.open(&path).await?;
                    let r = f.read_at(0, cut_at as usize).await;
                    f.close().await?;
                    r?
                }
            };
            drop(active);
            let file = segment::rewrite_prefix(
                &sh.io,
                &sh.dir,
                first_index,
                size_bytes,
                &prefix,
                sh.opts.zero_fill(),
            )
            .await?;
            let mut st = sh.st.borrow_mut();
            if let Some(s) = st.segments.last_mut() {
                s.offsets.truncate((from - first_index) as usize);
                s.end = cut_at;
            }
            let tail_from = (cut_at - cut_at % BLOCK) as usize;
            st.active = Some(Active {
                file: Rc::new(file),
                end: cut_at,
                tail: prefix[tail_from..].to_vec(),
            });
        } else if sh.st.borrow().segments.is_empty() {
            // Everything went: keep an empty segment so the next index survives a restart.
            let (file, path) = segment::create(
                &sh.io,
                &sh.dir,
                from,
                sh.opts.segment_size_bytes as u64,
                sh.opts.zero_fill(),
            )
            .await?;
            sh.st
                .borrow_mut()
                .start_segment(from, path, sh.opts.segment_size_bytes as u64, file);
        } else if sh.st.borrow().active.is_none() {
            // The cut fell on a segment boundary: the previous segment becomes active again.
            let (path, end) = {
                let st = sh.st.borrow();
                let s = st.segments.last().map(|s| (s.path.clone(), s.end));
                s.unwrap_or_default()
            };
            let file = sh.io.open(&path).await?;
            let tail_from = end - end % BLOCK;
            let tail = file.read_at(tail_from, (end - tail_from) as usize).await?;
            sh.st.borrow_mut().active = Some(Active {
                file: Rc::new(file),
                end,
                tail,
            });
        }
        let mut st = sh.st.borrow_mut();
        st.next_index = from;
        st.written_index = from - 1;
        st.synced_index = st.synced_index.min(from - 1);
        st.sync_target = st.sync_target.min(from - 1);
        Ok(())
    }

    /// Deletes whole segments whose records all have indices below `upto` (Raft: entries
    /// compacted into a snapshot; the engine: records flushed to SSTables). Never deletes the
    /// segment being written. Returns the new [`Wal::first_index`], which may be below
    /// `upto`: records below `upto` that share a segment with later ones stay readable.
    pub async fn drop_prefix(&self, upto: u64) -> Result<u64> {
        let sh = &self.sh;
        let mut deleted = false;
        loop {
            let path = {
                let mut st = sh.st.borrow_mut();
                if st.segments.len() < 2 || st.segments[1].first_index > upto {
                    break;
                }
                let s = st.segments.remove(0);
                st.stats.segments_deleted_total += 1;
                s.path
            };
            sh.io.remove(&path)?;
            deleted = true;
        }
        if deleted {
            sh.io.sync_dir(&sh.dir).await?;
        }
        Ok(self.first_index())
    }
}
