//! Opening the log: scanning every segment, cutting a torn tail, refusing damage before it.

use super::*;

/// Replays the segments in `dir` into `replay` and fills `st` (see the module doc).
pub(super) async fn recover(
    io: &Io,
    dir: &Path,
    opts: &WalOptions,
    st: &mut State,
    replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
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
            io.remove(&entry.path())?;
        }
    }
    names.sort();
    let mut expect: Option<u64> = None;
    let count = names.len();
    let mut dropped_from: Option<usize> = None;
    for (i, (first, path)) in names.iter().enumerate() {
        let (first, last) = (*first, i + 1 == count);
        let file = io.open(path).await?;
        let mut data = segment::read_all(&file).await?;
        let header = match segment::Header::decode(&data) {
            Ok(h) => h,
            Err(detail) => {
                let no_records = data
                    .get(segment::HEADER_BLOCK_BYTES as usize..)
                    .is_none_or(|rest| rest.iter().all(|&b| b == 0));
                if last && no_records && opts.recovery_mode != WalRecoveryMode::AbsoluteConsistency
                {
                    // Creation was torn by a crash before any record was written to it.
                    tracing::warn!(file = ?path, %detail, "removing a WAL segment whose creation did not complete");
                    file.close().await?;
                    io.remove(path)?;
                    io.sync_dir(dir).await?;
                    report.segments_dropped += 1;
                    expect.get_or_insert(first);
                    break;
                }
                if opts.recovery_mode == WalRecoveryMode::SkipToLastGood {
                    file.close().await?;
                    report.corruptions_skipped += 1;
                    dropped_from = Some(i);
                    tracing::error!(file = ?path, %detail, "damaged WAL segment header: dropping it and everything after it (skip-to-last-good)");
                    break;
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
            if opts.recovery_mode == WalRecoveryMode::SkipToLastGood {
                file.close().await?;
                report.corruptions_skipped += 1;
                dropped_from = Some(i);
                tracing::error!(file = ?path, expected = e, "WAL index gap: dropping this segment and everything after it (skip-to-last-good)");
                break;
            }
            return Err(Error::corruption(
                path,
                0,
                format!("segment starts at index {first}, but the previous one ends before {e}"),
            ));
        }
        if (data.len() as u64) < header.segment_size_bytes {
            // Cut short (a crash before a size change reached the disk, or a copy): restore
            // the preallocation; the missing bytes read as zeros.
            tracing::warn!(file = ?path, bytes = data.len(), "WAL segment shorter than its header says; reallocating");
            file.allocate(header.segment_size_bytes).await?;
            data.resize(header.segment_size_bytes as usize, 0);
        }
        let scan = reader::scan(&data, first);
        for r in &scan.records {
            replay(Replayed {
                index: r.index,
                payload: &data[r.payload_start..r.payload_start + r.payload_len],
                file: path,
                offset: r.offset,
            })?;
        }
        report.records_replayed += scan.records.len() as u64;
        let mut seg = Segment {
            first_index: first,
            path: path.clone(),
            size_bytes: header.segment_size_bytes.max(data.len() as u64),
            offsets: scan.records.iter().map(|r| r.offset).collect(),
            end: scan.end,
        };
        expect = Some(first + scan.records.len() as u64);
        let mut file = Some(file);
        if let Some(d) = &scan.damage {
            let torn = last && !d.proven_durable;
            let allowed = match opts.recovery_mode {
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
                report.torn_tails_cut += 1;
                report.torn_bytes_cut += d.nonzero_end - d.offset;
                tracing::warn!(file = ?path, offset = d.offset, bytes = d.nonzero_end - d.offset,
                    detail = %d.detail, "cutting off a torn WAL tail (a write interrupted by a crash, never acknowledged as durable)");
            } else {
                report.corruptions_skipped += 1;
                tracing::error!(file = ?path, offset = d.offset, detail = %d.detail,
                    "WAL corruption: replay stops at the last good record and everything after it is dropped (skip-to-last-good)");
            }
            if let Some(f) = file.take() {
                f.close().await?;
            }
            let prefix = &data[..d.offset as usize];
            let zero = opts.zero_fill();
            file =
                Some(segment::rewrite_prefix(io, dir, first, seg.size_bytes, prefix, zero).await?);
            if !last {
                dropped_from = Some(i + 1);
            }
        }
        if last || dropped_from.is_some() {
            let end = seg.end;
            let tail_from = (end - end % BLOCK) as usize;
            let tail = data[tail_from..end as usize].to_vec();
            seg.end = end;
            st.segments.push(seg);
            if let Some(f) = file {
                st.active = Some(Active {
                    file: Rc::new(f),
                    end,
                    tail,
                });
            }
            if dropped_from.is_some() {
                break;
            }
        } else {
            st.segments.push(seg);
            if let Some(f) = file {
                f.close().await?;
            }
        }
    }
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
    st.next_index = next;
    st.written_index = next - 1;
    st.synced_index = next - 1;
    report.next_index = next;
    report.first_index = st.segments.first().map_or(next, |s| s.first_index);
    debug_assert!(
        st.segments
            .windows(2)
            .all(|w| w[0].first_index < w[1].first_index)
    );
    Ok(report)
}
