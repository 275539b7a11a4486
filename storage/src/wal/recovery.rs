//! Opening the log: scanning every segment, cutting a torn tail, refusing damage before it.

use super::*;

/// Replays the segments in `dir` into `replay` and fills `state` (see the module doc).
pub(super) async fn recover(
    io: &Io,
    dir: &Path,
    opts: &WalOptions,
    state: &mut State,
    replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
) -> Result<RecoveryReport> {
    let mut r = Recovery {
        io,
        dir,
        opts,
        report: RecoveryReport::default(),
        replay,
    };
    let names = r.list_segments()?;
    let mut expect: Option<u64> = None;
    let mut dropped_from: Option<usize> = None;
    for (i, (first, path)) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        match r.segment(state, *first, path, last, expect).await? {
            Outcome::Replayed { next_index } => expect = Some(next_index),
            Outcome::ReplayedDropLater { next_index } => {
                expect = Some(next_index);
                dropped_from = Some(i + 1);
                break;
            }
            Outcome::CreationTorn => {
                expect.get_or_insert(*first);
                break;
            }
            Outcome::DropFromHere => {
                dropped_from = Some(i);
                break;
            }
        }
    }
    let mut report = r.report;
    if let Some(from) = dropped_from {
        for (_, path) in names[from..].iter().rev() {
            tracing::error!(file = ?path, "deleting a WAL segment after the damage (skip-to-last-good)");
            io.remove(path)?;
            report.segments_dropped += 1;
        }
        io.sync_dir(dir).await?;
    }
    // A sealed last segment with no room is fine: the writer rolls over on the first append.
    let next = expect.unwrap_or(1);
    state.next_index = next;
    state.written_index = next - 1;
    state.synced_index = next - 1;
    report.next_index = next;
    report.first_index = state.segments.first().map_or(next, |s| s.first_index);
    debug_assert!(
        state
            .segments
            .windows(2)
            .all(|w| w[0].first_index < w[1].first_index)
    );
    Ok(report)
}

/// What recovering one segment found.
enum Outcome {
    /// Its records were replayed; the next segment starts at `next_index`.
    Replayed { next_index: u64 },
    /// Its good records were replayed and the damage after them cut off; every later segment
    /// is dropped (skip-to-last-good).
    ReplayedDropLater { next_index: u64 },
    /// It was the last segment and its creation never completed: it was removed.
    CreationTorn,
    /// It is damaged from its start: it and every later segment are dropped
    /// (skip-to-last-good).
    DropFromHere,
}

struct Recovery<'a> {
    io: &'a Io,
    dir: &'a Path,
    opts: &'a WalOptions,
    report: RecoveryReport,
    replay: &'a mut dyn FnMut(Replayed<'_>) -> Result<()>,
}

impl Recovery<'_> {
    /// The segment files by first index, after removing unfinished segment rewrites.
    fn list_segments(&self) -> Result<Vec<(u64, PathBuf)>> {
        let dir = self.dir;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))? {
            let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(first) = segment::parse_file_name(name) {
                names.push((first, entry.path()));
            } else if name.ends_with(segment::TMP_SUFFIX) {
                // A segment rewrite that did not finish: the original is still in place.
                tracing::warn!(file = ?entry.path(), "removing an unfinished WAL segment rewrite");
                self.io.remove(&entry.path())?;
            }
        }
        names.sort();
        Ok(names)
    }

    /// Checks the segment starting at index `first` (the previous one ended before `expect`),
    /// replays its records and adds it to `state`; the last segment kept becomes the active one.
    async fn segment(
        &mut self,
        state: &mut State,
        first: u64,
        path: &Path,
        last: bool,
        expect: Option<u64>,
    ) -> Result<Outcome> {
        let (io, opts) = (self.io, self.opts);
        let file = io.open(path).await?;
        let mut data = segment::read_all(&file).await?;
        let header = match self.check_header(&data, first, path, last, expect)? {
            Ok(header) => header,
            Err(outcome) => {
                file.close().await?;
                if let Outcome::CreationTorn = outcome {
                    io.remove(path)?;
                    io.sync_dir(self.dir).await?;
                    self.report.segments_dropped += 1;
                }
                return Ok(outcome);
            }
        };
        if (data.len() as u64) < header.segment_size_bytes {
            // Cut short (a crash before a size change reached the disk, or a copy): restore
            // the preallocation; the missing bytes read as zeros.
            tracing::warn!(file = ?path, bytes = data.len(), "WAL segment shorter than its header says; reallocating");
            file.allocate(header.segment_size_bytes).await?;
            data.resize(header.segment_size_bytes as usize, 0);
        }
        let format = header.format();
        let scan = reader::scan(&data, first, format);
        for r in &scan.records {
            (self.replay)(Replayed {
                index: r.index,
                payload: &data[r.payload_start..r.payload_start + r.payload_len],
                file: path,
                offset: r.offset,
            })?;
        }
        self.report.records_replayed += scan.records.len() as u64;
        let next_index = first + scan.records.len() as u64;
        let seg = Segment {
            first_index: first,
            path: path.to_path_buf(),
            size_bytes: header.segment_size_bytes.max(data.len() as u64),
            offsets: scan.records.iter().map(|r| r.offset).collect(),
            end: scan.end,
            format,
        };
        let mut file = file;
        let mut drop_later = false;
        if let Some(d) = &scan.damage {
            self.accept_damage(path, d, last)?;
            file.close().await?;
            let prefix = &data[..d.offset as usize];
            let zero = opts.zero_fill();
            file =
                segment::rewrite_prefix(io, self.dir, first, seg.size_bytes, prefix, zero).await?;
            drop_later = !last;
        }
        if last || drop_later {
            let end = seg.end;
            let tail_from = (end - end % BLOCK) as usize;
            let tail = data[tail_from..end as usize].to_vec();
            state.segments.push(seg);
            state.active = Some(Active {
                file: Rc::new(file),
                end,
                tail,
            });
        } else {
            state.segments.push(seg);
            file.close().await?;
        }
        Ok(if drop_later {
            Outcome::ReplayedDropLater { next_index }
        } else {
            Outcome::Replayed { next_index }
        })
    }

    /// The header of the segment starting at index `first` (the previous one ended before
    /// `expect`), or, where the recovery mode allows, what to do instead of replaying it
    /// (the caller closes the file, and removes it when its creation was torn).
    fn check_header(
        &mut self,
        data: &[u8],
        first: u64,
        path: &Path,
        last: bool,
        expect: Option<u64>,
    ) -> Result<std::result::Result<segment::Header, Outcome>> {
        let mode = self.opts.recovery_mode;
        let header = match segment::Header::decode(data) {
            Ok(h) => h,
            Err(detail) => {
                let no_records = data
                    .get(segment::HEADER_BLOCK_BYTES as usize..)
                    .is_none_or(|rest| rest.iter().all(|&b| b == 0));
                if last && no_records && mode != WalRecoveryMode::AbsoluteConsistency {
                    // Creation was torn by a crash before any record was written to it.
                    tracing::warn!(file = ?path, %detail, "removing a WAL segment whose creation did not complete");
                    return Ok(Err(Outcome::CreationTorn));
                }
                if mode == WalRecoveryMode::SkipToLastGood {
                    self.report.corruptions_skipped += 1;
                    tracing::error!(file = ?path, %detail, "damaged WAL segment header: dropping it and everything after it (skip-to-last-good)");
                    return Ok(Err(Outcome::DropFromHere));
                }
                return Err(segment::header_error(path, detail));
            }
        };
        if header.first_index != first {
            return Err(Error::corruption(
                path,
                16,
                format!(
                    "header says the first index is {}, the file name says {first}",
                    header.first_index
                ),
            ));
        }
        if let Some(e) = expect
            && e != first
        {
            if mode == WalRecoveryMode::SkipToLastGood {
                self.report.corruptions_skipped += 1;
                tracing::error!(file = ?path, expected = e, "WAL index gap: dropping this segment and everything after it (skip-to-last-good)");
                return Ok(Err(Outcome::DropFromHere));
            }
            return Err(Error::corruption(
                path,
                0,
                format!("segment starts at index {first}, but the previous one ends before {e}"),
            ));
        }
        Ok(Ok(header))
    }

    /// Whether the recovery mode lets replay stop at damage `d` in segment `path` (counted and
    /// logged); the damage as an error otherwise.
    fn accept_damage(&mut self, path: &Path, d: &reader::Damage, last: bool) -> Result<()> {
        let torn = last && !d.proven_durable;
        let allowed = match self.opts.recovery_mode {
            WalRecoveryMode::AbsoluteConsistency => false,
            WalRecoveryMode::TolerateTornTail => torn,
            WalRecoveryMode::SkipToLastGood => true,
        };
        if !allowed {
            let why = if d.proven_durable {
                "; a later record shows this one had been made durable"
            } else if !last {
                "; only the last segment may end in a torn write"
            } else {
                ""
            };
            return Err(Error::corruption(
                path,
                d.offset,
                format!("{}{why}", d.detail),
            ));
        }
        if torn {
            self.report.torn_tails_cut += 1;
            self.report.torn_bytes_cut += d.nonzero_end - d.offset;
            tracing::warn!(file = ?path, offset = d.offset, bytes = d.nonzero_end - d.offset,
                detail = %d.detail, "cutting off a torn WAL tail (a write interrupted by a crash, never acknowledged as durable)");
        } else {
            self.report.corruptions_skipped += 1;
            tracing::error!(file = ?path, offset = d.offset, detail = %d.detail,
                "WAL corruption: replay stops at the last good record and everything after it is dropped (skip-to-last-good)");
        }
        Ok(())
    }
}
