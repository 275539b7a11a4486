//! Running one compaction: merge the input tables (read sequentially with large reads, not
//! through the block cache) into new tables of the output level, cut at
//! `target_file_size_bytes` on key boundaries.
//!
//! ## What is dropped
//!
//! For each key, its versions newest first `v1, v2, ...`: a reader at sequence `s` sees the
//! newest version at or below `s`, so `vi` is needed only if some reader may read in
//! `[vi.seq, v(i-1).seq)` (for `v1`, up to infinity: the latest state always needs it).
//! Readers are the live snapshots and anyone at or above the read point when the compaction
//! started. Unneeded versions are dropped.
//!
//! When the output is the bottommost level for the range (no deeper table overlaps it), a
//! tombstone or an expired value that is the oldest kept version hides nothing: readers in its
//! interval would fall through to nothing anyway. It is dropped, and so is the next one up if
//! it is also a tombstone, and so on.

use std::path::Path;
use std::rc::Rc;

use super::picker::Plan;
use crate::SeqNo;
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::io::{CrashPoint, Io};
use crate::iter::Source;
use crate::iter::level::LevelIter;
use crate::iter::merge::MergeIter;
use crate::snapshot::SnapshotList;
use crate::sst::builder::{TableBuilder, TableMeta, TableOptions};
use crate::sst::{Entry, EntryRef};

/// Everything a compaction needs besides its plan.
pub(crate) struct JobContext<'a> {
    pub io: &'a Io,
    pub dir: &'a Path,
    pub table_options: TableOptions,
    pub target_file_size_bytes: u64,
    pub snapshots: &'a SnapshotList,
    /// The read point when the job started.
    pub visible_seq: SeqNo,
    pub now_ms: u64,
    /// Hands out file numbers for outputs.
    pub next_file_number: &'a dyn Fn() -> u64,
    /// Asked between output tables and every few thousand entries: stop early (close).
    pub should_stop: &'a dyn Fn() -> bool,
    /// Where output data blocks also go as they are written (None: nowhere).
    pub cache: Option<&'a Rc<BlockCache>>,
}

/// What a compaction produced.
#[derive(Debug, Default)]
pub(crate) struct JobResult {
    pub outputs: Vec<TableMeta>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub versions_in: u64,
    pub versions_dropped: u64,
}

/// Decides which versions of one key to keep (see the module doc). `group` is newest first.
pub(crate) fn keep_versions(
    group: &[Entry],
    bottommost: bool,
    visible_seq: SeqNo,
    snapshots: &SnapshotList,
    now_ms: u64,
) -> Vec<bool> {
    let mut keep: Vec<bool> = Vec::with_capacity(group.len());
    let mut newer: Option<SeqNo> = None;
    for v in group {
        let needed = match newer {
            None => true,
            Some(hi) if hi == v.seq => false, // a duplicate of the same write
            Some(hi) => visible_seq < hi || snapshots.any_in(v.seq, hi),
        };
        keep.push(needed);
        newer = Some(v.seq);
    }
    if bottommost {
        for i in (0..group.len()).rev() {
            if !keep[i] {
                continue;
            }
            if group[i].as_ref().is_absent_at(now_ms) {
                keep[i] = false;
            } else {
                break;
            }
        }
    }
    keep
}

struct Output<'a, 'b> {
    ctx: &'a JobContext<'b>,
    builder: Option<TableBuilder>,
    done: Vec<TableMeta>,
}

impl Output<'_, '_> {
    async fn add(&mut self, e: &EntryRef<'_>) -> Result<()> {
        if self.builder.is_none() {
            let n = (self.ctx.next_file_number)();
            let mut b =
                TableBuilder::create(self.ctx.io, self.ctx.dir, n, self.ctx.table_options).await?;
            if let Some(c) = self.ctx.cache {
                b.fill_cache(c.clone());
            }
            self.builder = Some(b);
        }
        if let Some(b) = self.builder.as_mut() {
            b.add(e).await?;
        }
        Ok(())
    }

    /// Finishes the current table if it reached the target size (called between keys).
    async fn maybe_cut(&mut self) -> Result<()> {
        let full = self
            .builder
            .as_ref()
            .is_some_and(|b| b.estimated_size_bytes() >= self.ctx.target_file_size_bytes);
        if full {
            self.finish().await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        if let Some(b) = self.builder.take() {
            if b.is_empty() {
                b.abandon().await?;
            } else {
                self.done.push(b.finish().await?);
                self.ctx.io.crash_point(CrashPoint::CompactionMidOutput)?;
            }
        }
        Ok(())
    }

    async fn abandon(&mut self) {
        if let Some(b) = self.builder.take() {
            let _ = b.abandon().await;
        }
        for m in self.done.drain(..) {
            let _ = self
                .ctx
                .io
                .remove(&crate::sst::reader::table_path(self.ctx.dir, m.file_number));
        }
    }
}

/// Runs the merge of `plan` (not a trivial move). On error or stop, removes what it wrote.
pub(crate) async fn run(plan: &Plan, ctx: &JobContext<'_>) -> Result<JobResult> {
    let mut out = Output {
        ctx,
        builder: None,
        done: Vec::new(),
    };
    let r = merge(plan, ctx, &mut out).await;
    match r {
        Ok(mut res) => {
            res.outputs = std::mem::take(&mut out.done);
            res.bytes_written = res.outputs.iter().map(|m| m.size_bytes).sum();
            Ok(res)
        }
        Err(e) => {
            out.abandon().await;
            Err(e)
        }
    }
}

/// Copies `e` into `group[i]`, reusing its buffers.
fn copy_into(group: &mut Vec<Entry>, i: usize, e: &EntryRef<'_>) {
    if i == group.len() {
        group.push(e.to_owned());
        return;
    }
    let g = &mut group[i];
    g.key.clear();
    g.key.extend_from_slice(e.key);
    g.value.clear();
    g.value.extend_from_slice(e.value);
    g.seq = e.seq;
    g.kind = e.kind;
    g.expires_at_ms = e.expires_at_ms;
}

async fn merge(plan: &Plan, ctx: &JobContext<'_>, out: &mut Output<'_, '_>) -> Result<JobResult> {
    let mut res = JobResult {
        bytes_read: plan.input_bytes(),
        ..JobResult::default()
    };
    let mut sources = Vec::new();
    if plan.level == 0 {
        for t in &plan.inputs {
            sources.push(Source::Table(t.table.iter(true)));
        }
    } else {
        let tables = plan.inputs.iter().map(|t| t.table.clone()).collect();
        sources.push(Source::Level(LevelIter::new(tables, true)));
    }
    let next = plan.next_inputs.iter().map(|t| t.table.clone()).collect();
    sources.push(Source::Level(LevelIter::new(next, true)));
    let mut merge = MergeIter::new(sources, true);
    merge.seek_ge(&[]).await?;
    // Versions of the current key, newest first; entries are reused to avoid allocating.
    let mut group: Vec<Entry> = Vec::new();
    let mut n;
    let mut since_yield = 0u32;
    while merge.valid() {
        n = 0;
        loop {
            copy_into(&mut group, n, &merge.entry());
            n += 1;
            merge.step().await?;
            if !merge.valid() || merge.entry().key != group[0].key.as_slice() {
                break;
            }
        }
        let versions = &group[..n];
        res.versions_in += n as u64;
        let keep = keep_versions(
            versions,
            plan.bottommost,
            ctx.visible_seq,
            ctx.snapshots,
            ctx.now_ms,
        );
        for (e, k) in versions.iter().zip(&keep) {
            if *k {
                out.add(&e.as_ref()).await?;
            } else {
                res.versions_dropped += 1;
            }
        }
        out.maybe_cut().await?;
        since_yield += n as u32;
        if since_yield >= 1024 {
            since_yield = 0;
            if (ctx.should_stop)() {
                return Err(Error::Closed);
            }
            glommio::yield_if_needed().await;
        }
    }
    out.finish().await?;
    Ok(res)
}
