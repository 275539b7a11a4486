//! Opening an engine: recovery from the manifest and the WAL (or, for an engine applying an
//! external log, from the manifest alone), and stale-file cleanup.

use std::collections::HashMap;

use super::*;
use crate::compaction::picker::LevelTargets;
use crate::manifest::{Manifest, ManifestState};
use crate::memtable::Memtable;
use crate::options::Durability;
use crate::sst::reader::{TableReader, table_path};
use crate::version::TableFile;
use crate::wal::{Replayed, Wal, WalOptions};

impl Engine {
    /// Opens (creating if missing) the engine in `dir`, replaying the WAL.
    pub async fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        Self::open_with_hooks(dir, options, OpenHooks::default()).await
    }

    /// [`Engine::open`] with test substitutes (a manual clock).
    pub async fn open_with_hooks(
        dir: impl AsRef<Path>,
        options: Options,
        hooks: OpenHooks,
    ) -> Result<Engine> {
        Self::open_inner(dir.as_ref(), options, hooks, false).await
    }

    /// Opens (creating if missing) an engine that applies an external log, the Raft log of a
    /// replicated shard, instead of keeping a WAL (see `log.rs`). Its tables hold the log's
    /// entries up to [`Engine::flushed_log_index`]; the caller applies the entries after that
    /// again, each between [`Engine::begin_entry`] and [`Engine::end_entry`]. A directory
    /// holding an engine with its own WAL is refused, and the other way round, since either
    /// would lose the writes only the other log holds.
    pub async fn open_applying(
        dir: impl AsRef<Path>,
        options: Options,
        hooks: OpenHooks,
    ) -> Result<Engine> {
        Self::open_inner(dir.as_ref(), options, hooks, true).await
    }

    async fn open_inner(
        dir: &Path,
        options: Options,
        hooks: OpenHooks,
        external_log: bool,
    ) -> Result<Engine> {
        options.validate()?;
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let io = Io::new(hooks.faults.clone());
        // The lock file is non-empty: the safe first O_DIRECT file (see `Io::probe`).
        io.probe(lock.path()).await?;
        let (manifest, recovered) = Manifest::open(
            &io,
            &dir,
            options.levels_max,
            options.manifest_size_bytes_max,
        )
        .await?;
        let cache = BlockCache::new(options.block_cache_size_bytes);
        let version = open_tables(&io, &dir, &recovered.state, &cache, options.levels_max).await?;
        remove_unreferenced_files(&io, &dir, &recovered.state, manifest.number())?;
        let flushed_seq = recovered.state.flushed_seq;
        let mut memtable = Memtable::new();
        let mut last_seq: SeqNo = 0;
        let mut wal_index_max = 0;
        let (log, report) = if external_log {
            check_no_wal(&dir)?;
            // Every replica numbers the writes of an entry alike only if replay starts from
            // what the tables hold: sequence numbers handed out after the last flush (the
            // manifest's `last_seq` may have recorded some) were in the lost memtable.
            let log = log::ExternalLog::new((
                recovered.state.applied_index,
                recovered.state.applied_time_ms,
            ));
            (log::Log::External(log), Default::default())
        } else {
            if recovered.state.applied_index > 0 {
                return Err(Error::InvalidArgument(format!(
                    "{}: this engine applies an external (replicated) log up to entry {}; \
                     opening it with its own WAL would lose the entries after that",
                    dir.display(),
                    recovered.state.applied_index
                )));
            }
            let (wal, report) = Wal::open(
                dir.join(WAL_DIR),
                WalOptions::from_options(&options),
                hooks.faults,
                |r| {
                    wal_index_max = r.index;
                    replay_record(&mut memtable, &mut last_seq, flushed_seq, r)
                },
            )
            .await?;
            last_seq = last_seq.max(recovered.state.last_seq);
            (log::Log::Wal(wal), report)
        };
        let last_seq = last_seq.max(recovered.state.flushed_seq);
        tracing::info!(
            dir = ?dir,
            external_log,
            applied_index = recovered.state.applied_index,
            records = report.records_replayed,
            torn_tails_cut = report.torn_tails_cut,
            manifest_edits = recovered.edits,
            manifest_torn_tails_cut = recovered.torn_tails_cut,
            tables = version.levels.iter().map(Vec::len).sum::<usize>(),
            last_seq,
            "engine opened"
        );
        let stats = initial_stats(&options, recovered.torn_tails_cut);
        let next_file_number = recovered.state.next_file_number.max(manifest.number() + 1);
        let state = State::recovered(
            memtable,
            wal_index_max,
            version,
            next_file_number,
            last_seq,
            options.memtable_size_bytes_max,
        );
        let picker = Picker::new(LevelTargets {
            levels_max: options.levels_max,
            l0_compaction_trigger_files: options.l0_compaction_trigger_files,
            level1_size_bytes_max: options.level1_size_bytes_max,
            level_size_ratio: options.level_size_ratio,
        });
        let inner = Inner {
            dir,
            clock: hooks.clock.unwrap_or_default(),
            io,
            state: RefCell::new(state),
            snapshots: Rc::new(SnapshotList::default()),
            stats: RefCell::new(stats),
            closed: Cell::new(false),
            log,
            cache_fill: Cell::new(options.block_cache_fill_on_table_write),
            cache,
            manifest: ManifestLog::new(manifest, recovered.state, options.levels_max),
            workers: Rc::new(Workers::default()),
            backlog: Rc::new(EngineBacklog::new(
                options.background_shares,
                options.background_poll_interval_us,
            )),
            picker,
            options,
            _lock: lock,
        };
        let inner = Rc::new(inner);
        background::start(&inner)?;
        Ok(Engine { inner })
    }
}

/// Refuses to open an engine with an external log where a WAL holds records: they would
/// be ignored.
fn check_no_wal(dir: &Path) -> Result<()> {
    let wal_dir = dir.join(WAL_DIR);
    match std::fs::read_dir(&wal_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(Error::InvalidArgument(format!(
                "{}: this engine keeps its own WAL; it cannot apply an external (replicated) \
                 log without losing the WAL's writes",
                dir.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("list directory", &wal_dir, e)),
    }
}

/// The counters an engine starts with: its configuration and what opening it found.
fn initial_stats(options: &Options, manifest_torn_tails_cut: u64) -> Stats {
    let mut stats = Stats::default();
    match options.durability {
        Durability::Sync => stats.durability_sync = 1,
        Durability::Periodic { interval_ms } => stats.durability_periodic_interval_ms = interval_ms,
        Durability::None => stats.durability_none = 1,
    }
    stats.memtable_bytes_max = options.memtable_size_bytes_max as u64;
    stats.manifest_torn_tails_cut = manifest_torn_tails_cut;
    stats
}

/// Opens every table the manifest lists (checking each file's size against it) as the
/// engine's first version.
async fn open_tables(
    io: &Io,
    dir: &Path,
    state: &ManifestState,
    cache: &Rc<BlockCache>,
    levels_max: usize,
) -> Result<Version> {
    let mut added = HashMap::new();
    let mut edit = state.snapshot_edit();
    for (_, meta) in &edit.added {
        let path = table_path(dir, meta.file_number);
        let table = TableReader::open(io, &path, meta.file_number, cache.clone()).await?;
        if table.size_bytes() != meta.size_bytes {
            return Err(Error::corruption(
                &path,
                0,
                format!(
                    "the manifest records {} bytes for this table, the file has {}",
                    meta.size_bytes,
                    table.size_bytes()
                ),
            ));
        }
        added.insert(
            meta.file_number,
            TableFile::new(meta.clone(), table, io.clone()),
        );
    }
    edit.deleted.clear();
    Ok(Version::empty(levels_max).apply(&edit, &added))
}

/// Applies one replayed WAL record to the memtable; `last_seq` is the last sequence number
/// replayed so far. Records whose writes are all at or below `flushed_seq` are already in
/// tables and are skipped.
pub(crate) fn replay_record(
    memtable: &mut Memtable,
    last_seq: &mut SeqNo,
    flushed_seq: SeqNo,
    r: Replayed<'_>,
) -> Result<()> {
    // Errors point at the payload: past the frame header.
    let at = r.offset + crate::wal::record::HEADER_BYTES as u64;
    let bad = |off: u64, what: String| Err(Error::corruption(r.file, at + off, what));
    let Some((header, ops)) = RecordHeader::decode(r.payload) else {
        return bad(
            0,
            format!("record {}: unknown payload kind or short header", r.index),
        );
    };
    let RecordHeader {
        ops: count,
        first_seq,
        write_time_ms,
    } = header;
    // The record's last sequence number; a header whose range would pass u64::MAX is damage.
    let last_in_record = u64::from(count)
        .checked_sub(1)
        .and_then(|n| first_seq.checked_add(n));
    let Some(last_in_record) = last_in_record.filter(|_| first_seq > *last_seq) else {
        return bad(
            4,
            format!(
                "record {}: {count} operations from sequence {first_seq}, after sequence {}",
                r.index, *last_seq
            ),
        );
    };
    if last_in_record <= flushed_seq {
        *last_seq = last_in_record;
        return Ok(());
    }
    // Nobody reads during replay: keep only the newest version of each key.
    let applied = memtable
        .apply(ops, first_seq, write_time_ms, &|_, _| false)
        .map_err(|off| {
            Error::corruption(
                r.file,
                at + (RecordHeader::BYTES + off) as u64,
                format!("record {}: malformed operation", r.index),
            )
        })?;
    if applied != count {
        return bad(
            4,
            format!(
                "record {}: header says {count} operations, found {applied}",
                r.index
            ),
        );
    }
    *last_seq = last_in_record;
    Ok(())
}

/// Deletes what a crash may have left behind: tables the manifest does not list (a flush or
/// compaction that never reached its edit), old manifests and a half-written `CURRENT.tmp`.
fn remove_unreferenced_files(
    io: &Io,
    dir: &Path,
    state: &ManifestState,
    manifest_number: u64,
) -> Result<()> {
    let live: std::collections::HashSet<u64> = state
        .levels
        .iter()
        .flat_map(|l| l.keys().copied())
        .collect();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = if let Some(n) = name.strip_suffix(".sst") {
            n.parse::<u64>().is_ok_and(|n| !live.contains(&n))
        } else if let Some(n) = name.strip_prefix("MANIFEST-") {
            n.parse::<u64>().is_ok_and(|n| n != manifest_number)
        } else {
            name == "CURRENT.tmp"
        };
        if stale {
            tracing::info!(file = %name, "removing a file no live version refers to");
            match io.remove(&entry.path()) {
                // A closed engine's unlink task may have removed an obsolete table meanwhile.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
    }
    Ok(())
}
