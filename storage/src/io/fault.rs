//! [`FaultInjector`]: makes chosen file operations fail, and simulates crashes and power loss.
//!
//! Attach one with `OpenHooks::faults`. It is deterministic for a given seed and sequence of
//! operations, so a failing test replays.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaBuffer;

use super::File;
use crate::error::{Error, Result};

/// Size of the unit a torn write or a power loss tears at: writes are assumed atomic per
/// 512-byte sector, and nothing stronger.
pub const SECTOR_SIZE_BYTES: usize = 512;

/// A kind of file operation, as counted and matched by the injector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// Creating a file.
    Create,
    /// Opening an existing file.
    Open,
    /// A data write.
    Write,
    /// A data read.
    Read,
    /// `fdatasync` of a file.
    Sync,
    /// `fallocate`.
    Allocate,
    /// Removing a file.
    Remove,
    /// Renaming a file.
    Rename,
    /// `fsync` of a directory.
    SyncDir,
}

/// What an injected failure looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with EIO and changes nothing.
    Eio,
    /// The operation fails with ENOSPC and changes nothing.
    Enospc,
    /// (writes) Only a whole-block prefix of the buffer is written (possibly nothing) and the
    /// call returns the shorter length, as `pwrite` may.
    ShortWrite,
    /// (writes) A random subset of the buffer's 512-byte sectors reaches the file, then the
    /// call fails with EIO.
    TornWrite,
}

/// A named step of the engine's background work where a test can crash the machine (see
/// [`FaultInjector::crash_at_point`]): each sits between two writes whose order matters for
/// crash safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// About half of an immutable memtable is in its level-0 table (unsynced, unreferenced).
    FlushMidTable,
    /// The flushed table and its directory entry are durable; the manifest edit is not written.
    FlushBeforeManifest,
    /// The flush's manifest edit is durable; the WAL segments it covers are not released yet.
    FlushBeforeWalRelease,
    /// A compaction finished one output table (more may follow); nothing is installed.
    CompactionMidOutput,
    /// The compaction's outputs are durable; the manifest edit is not written.
    CompactionBeforeManifest,
    /// The compaction's manifest edit is durable; its input tables are not deleted yet.
    CompactionBeforeInputsDeleted,
    /// A checkpoint being installed (`Engine::install_checkpoint`) has its tables linked into
    /// the engine's directory; the manifest edit that makes them the engine's state is not
    /// written. Not in [`CrashPoint::ALL`], which lists the points of flushes and compactions.
    CheckpointBeforeManifest,
}

impl CrashPoint {
    /// Every crash point of flushes and compactions.
    pub const ALL: [CrashPoint; 6] = [
        CrashPoint::FlushMidTable,
        CrashPoint::FlushBeforeManifest,
        CrashPoint::FlushBeforeWalRelease,
        CrashPoint::CompactionMidOutput,
        CrashPoint::CompactionBeforeManifest,
        CrashPoint::CompactionBeforeInputsDeleted,
    ];

    /// Whether the point lies inside a flush (else inside a compaction).
    pub fn is_flush(self) -> bool {
        matches!(
            self,
            CrashPoint::FlushMidTable
                | CrashPoint::FlushBeforeManifest
                | CrashPoint::FlushBeforeWalRelease
        )
    }
}

#[derive(Debug)]
struct Rule {
    op: FaultOp,
    /// Matching operations still to let through before failing.
    skip: u64,
    fault: Fault,
    /// Fail every matching operation from then on (else only once).
    persistent: bool,
    /// Only operations on paths containing this match.
    path_part: Option<String>,
}

#[derive(Debug)]
struct UnsyncedWrite {
    /// Tells the write apart for [`FaultInjector::sync_starting`].
    id: u64,
    /// The write completed; a sync that starts later covers it.
    done: bool,
    pos: u64,
    old: Vec<u8>,
    new: Vec<u8>,
}

/// A directory entry change not yet made durable by an `fsync` of its directory.
#[derive(Debug)]
enum DirChange {
    /// A file was created.
    Created(PathBuf),
    /// `from` was renamed to `to`, replacing `replaced` (the old content of `to`, if any).
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<Vec<u8>>,
    },
}

impl DirChange {
    fn dir(&self) -> Option<&Path> {
        match self {
            DirChange::Created(p) => p.parent(),
            DirChange::Renamed { to, .. } => to.parent(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rng: u64,
    /// Ids given to remembered writes.
    writes_remembered: u64,
    /// For each injected fault, the operations in flight when it fired.
    in_flight_at_faults: Vec<u64>,
    rules: Vec<Rule>,
    counts: HashMap<FaultOp, u64>,
    /// Write and sync operations until the simulated crash (0 = the next one crashes).
    crash_in_ops: Option<u64>,
    crashed: bool,
    /// A crash point and how many times to pass it before crashing there.
    crash_point: Option<(CrashPoint, u64)>,
    /// The crash point that crashed the machine.
    crashed_at_point: Option<CrashPoint>,
    track_unsynced: bool,
    unsynced: HashMap<PathBuf, Vec<UnsyncedWrite>>,
    /// Creations and renames not yet made durable, oldest first (tracked with the writes).
    dir_changes: Vec<DirChange>,
    /// Opens, creations, writes and removals that passed the injector and are still running.
    in_flight: u64,
    /// Called when an armed crash point fires (see [`FaultInjector::on_crash_point`]).
    crash_hook: Option<CrashHook>,
}

/// What to do, besides failing every later operation, when an armed crash point fires.
#[derive(Clone)]
struct CrashHook(Rc<dyn Fn(CrashPoint)>);

impl std::fmt::Debug for CrashHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashHook")
    }
}

impl State {
    fn next_rand(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Counts `op` on `path` and decides its fate.
    fn decide(&mut self, op: FaultOp, path: &Path) -> Decision {
        if self.crashed {
            return Decision::Dead;
        }
        *self.counts.entry(op).or_insert(0) += 1;
        if matches!(op, FaultOp::Write | FaultOp::Sync) {
            if let Some(n) = self.crash_in_ops.as_mut() {
                if *n == 0 {
                    self.crash_in_ops = None;
                    self.crashed = true;
                    return Decision::Crash;
                }
                *n -= 1;
            }
        }
        let mut hit = None;
        for (i, rule) in self.rules.iter_mut().enumerate() {
            if rule.op != op {
                continue;
            }
            if let Some(part) = &rule.path_part
                && !path.to_string_lossy().contains(part.as_str())
            {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            hit = Some((i, rule.fault, rule.persistent));
            break;
        }
        match hit {
            None => Decision::Proceed,
            Some((i, fault, persistent)) => {
                if !persistent {
                    self.rules.remove(i);
                }
                self.in_flight_at_faults.push(self.in_flight);
                Decision::Fail(fault)
            }
        }
    }
}

enum Decision {
    Proceed,
    Fail(Fault),
    Crash,
    Dead,
}

/// An operation in flight (see [`FaultInjector::settle`]).
pub(crate) struct InFlight(FaultInjector);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.borrow_mut().in_flight -= 1;
    }
}

/// Makes file operations fail on demand and simulates crashes. Cheap to clone; clones share
/// state. Single-threaded, like the engine it is attached to.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    state: Rc<RefCell<State>>,
}

fn injected(op: &'static str, path: &Path, fault: Fault) -> Error {
    let code = if fault == Fault::Enospc {
        libc::ENOSPC
    } else {
        libc::EIO
    };
    Error::io(op, path, std::io::Error::from_raw_os_error(code))
}

fn dead(op: &'static str, path: &Path) -> Error {
    Error::io(op, path, std::io::Error::from_raw_os_error(libc::EIO))
}

fn op_name(op: FaultOp) -> &'static str {
    match op {
        FaultOp::Create => "create",
        FaultOp::Open => "open",
        FaultOp::Write => "write",
        FaultOp::Read => "read",
        FaultOp::Sync => "fdatasync",
        FaultOp::Allocate => "fallocate",
        FaultOp::Remove => "remove",
        FaultOp::Rename => "rename",
        FaultOp::SyncDir => "fsync directory",
    }
}

impl FaultInjector {
    /// An injector that injects nothing until told; `seed` drives its random choices (which
    /// sectors a torn write or a power loss keeps).
    pub fn new(seed: u64) -> Self {
        let inj = FaultInjector::default();
        inj.state.borrow_mut().rng = seed;
        inj
    }

    /// The `n`-th (0-based) future operation of kind `op` fails with `fault`, once.
    pub fn fail_nth(&self, op: FaultOp, n: u64, fault: Fault) {
        self.state.borrow_mut().rules.push(Rule {
            op,
            skip: n,
            fault,
            persistent: false,
            path_part: None,
        });
    }

    /// Like [`FaultInjector::fail_nth`], counting only operations on paths that contain
    /// `path_part` (for example `"wal-0"`: WAL segments, not the spare being prepared).
    pub fn fail_nth_in(&self, op: FaultOp, n: u64, fault: Fault, path_part: &str) {
        self.state.borrow_mut().rules.push(Rule {
            op,
            skip: n,
            fault,
            persistent: false,
            path_part: Some(path_part.to_string()),
        });
    }

    /// Every future operation of kind `op` fails with `fault` until [`FaultInjector::clear`].
    pub fn fail_all(&self, op: FaultOp, fault: Fault) {
        self.state.borrow_mut().rules.push(Rule {
            op,
            skip: 0,
            fault,
            persistent: true,
            path_part: None,
        });
    }

    /// Every operation of kind `op` from the `n`-th (0-based) future one on fails with
    /// `fault`, until [`FaultInjector::clear`]: a disk that fills up, or a device that dies.
    pub fn fail_from(&self, op: FaultOp, n: u64, fault: Fault) {
        self.state.borrow_mut().rules.push(Rule {
            op,
            skip: n,
            fault,
            persistent: true,
            path_part: None,
        });
    }

    /// Like [`FaultInjector::fail_from`], counting only operations on paths that contain
    /// `path_part` (for example `".sst"`: tables written by flushes and compactions).
    pub fn fail_from_in(&self, op: FaultOp, n: u64, fault: Fault, path_part: &str) {
        self.state.borrow_mut().rules.push(Rule {
            op,
            skip: n,
            fault,
            persistent: true,
            path_part: Some(path_part.to_string()),
        });
    }

    /// Calls `hook` when the armed crash point (see [`FaultInjector::crash_at_point`]) fires,
    /// before the engine's step fails. A server under test uses it to kill its own process
    /// right there: a real crash at a chosen step of a flush or compaction.
    pub fn on_crash_point(&self, hook: impl Fn(CrashPoint) + 'static) {
        self.state.borrow_mut().crash_hook = Some(CrashHook(Rc::new(hook)));
    }

    /// Removes every failure rule (a pending crash stays).
    pub fn clear(&self) {
        self.state.borrow_mut().rules.clear();
    }

    /// How many operations of kind `op` were attempted.
    pub fn count(&self, op: FaultOp) -> u64 {
        self.state.borrow().counts.get(&op).copied().unwrap_or(0)
    }

    /// Remembers every write until its file is `fdatasync`ed, so [`FaultInjector::power_loss`]
    /// can undo it.
    pub fn track_unsynced_writes(&self) {
        self.state.borrow_mut().track_unsynced = true;
    }

    /// The machine crashes at the `n`-th (0-based) future write or `fdatasync`: a write lands
    /// torn (a random subset of its sectors), a sync does not happen, and from then on every
    /// operation fails with EIO without touching any file.
    pub fn crash_at(&self, n: u64) {
        self.state.borrow_mut().crash_in_ops = Some(n);
    }

    /// The machine crashes now (see [`FaultInjector::crash_at`]).
    pub fn crash_now(&self) {
        self.state.borrow_mut().crashed = true;
    }

    /// Whether the simulated machine has crashed.
    pub fn crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// Waits until no open, creation, write or removal that began before a crash is still
    /// running: call it after a crash and before [`FaultInjector::power_loss`] or reopening, so
    /// nothing the crashed engine started touches the files afterwards.
    pub async fn settle(&self) {
        while self.state.borrow().in_flight > 0 {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Counts an operation running until the guard drops (see [`FaultInjector::settle`]).
    pub(crate) fn in_flight(&self) -> InFlight {
        self.state.borrow_mut().in_flight += 1;
        InFlight(self.clone())
    }

    /// The machine crashes the `n`-th (0-based) time the engine reaches `point`: the step
    /// after it never happens and every later operation fails with EIO (as after
    /// [`FaultInjector::crash_at`]). Replaces an earlier crash point.
    pub fn crash_at_point(&self, point: CrashPoint, n: u64) {
        self.state.borrow_mut().crash_point = Some((point, n));
    }

    /// For each fault injected so far, how many opens, creations, writes and removals were
    /// running when it fired (whether it hit an operation beside others in flight).
    pub fn in_flight_at_faults(&self) -> Vec<u64> {
        self.state.borrow().in_flight_at_faults.clone()
    }

    /// The crash point that crashed the machine, if one did.
    pub fn crashed_at_point(&self) -> Option<CrashPoint> {
        self.state.borrow().crashed_at_point
    }

    /// The engine reached `point`: crashes here if armed to (see
    /// [`FaultInjector::crash_at_point`]).
    pub(crate) fn reached(&self, point: CrashPoint) -> Result<()> {
        let mut state = self.state.borrow_mut();
        let here = Path::new("(crash point)");
        if state.crashed {
            return Err(dead("continue", here));
        }
        if let Some((p, n)) = state.crash_point.as_mut()
            && *p == point
        {
            if *n == 0 {
                state.crash_point = None;
                state.crashed = true;
                state.crashed_at_point = Some(point);
                let hook = state.crash_hook.clone();
                drop(state);
                if let Some(hook) = hook {
                    (hook.0)(point);
                }
                return Err(dead("continue", here));
            }
            *n -= 1;
        }
        Ok(())
    }

    /// Simulates losing power: for every write not followed by an `fdatasync` of its file,
    /// each 512-byte sector it touched ends up holding its content from before that write or
    /// after any later unsynced write, chosen at random. Then, per directory, the file
    /// creations and renames not followed by an `fsync` of that directory survive only up to
    /// a random point in their order (a journaling file system commits them in order): the
    /// later ones are undone (created files disappear, renamed files get their old name back
    /// and the file they replaced returns). Removals are treated as durable at once. Requires
    /// [`FaultInjector::track_unsynced_writes`] from before the writes; call it after the crash
    /// and before reopening. Returns how many sectors and directory entries changed.
    pub fn power_loss(&self) -> std::io::Result<usize> {
        let mut changed = self.lose_unsynced_writes()?;
        changed += self.lose_unsynced_dir_changes()?;
        Ok(changed)
    }

    fn lose_unsynced_dir_changes(&self) -> std::io::Result<usize> {
        let mut state = self.state.borrow_mut();
        let changes = std::mem::take(&mut state.dir_changes);
        let mut by_dir: BTreeMap<PathBuf, Vec<DirChange>> = BTreeMap::new();
        for c in changes {
            let dir = c.dir().map(Path::to_path_buf).unwrap_or_default();
            by_dir.entry(dir).or_default().push(c);
        }
        let mut changed = 0;
        for (_, list) in by_dir {
            let keep = (state.next_rand() % (list.len() as u64 + 1)) as usize;
            for c in list.into_iter().skip(keep).rev() {
                changed += 1;
                match c {
                    DirChange::Created(p) => {
                        if p.exists() {
                            std::fs::remove_file(&p)?;
                        }
                    }
                    DirChange::Renamed { from, to, replaced } => {
                        if to.exists() {
                            std::fs::rename(&to, &from)?;
                        }
                        if let Some(old) = replaced {
                            std::fs::write(&to, old)?;
                        }
                    }
                }
            }
        }
        Ok(changed)
    }

    fn lose_unsynced_writes(&self) -> std::io::Result<usize> {
        let mut state = self.state.borrow_mut();
        let unsynced = std::mem::take(&mut state.unsynced);
        let mut changed = 0;
        for (path, writes) in unsynced {
            // sector number -> candidate contents, oldest first.
            let mut sectors: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
            for w in &writes {
                for (i, new) in w.new.chunks(SECTOR_SIZE_BYTES).enumerate() {
                    let at = i * SECTOR_SIZE_BYTES;
                    let s = w.pos / SECTOR_SIZE_BYTES as u64 + i as u64;
                    let cands = sectors.entry(s).or_default();
                    if cands.is_empty() {
                        cands.push(w.old[at..at + new.len()].to_vec());
                    }
                    cands.push(new.to_vec());
                }
            }
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            for (s, cands) in sectors {
                let pick = (state.next_rand() % cands.len() as u64) as usize;
                if pick != cands.len() - 1 {
                    changed += 1;
                }
                f.write_all_at(&cands[pick], s * SECTOR_SIZE_BYTES as u64)?;
            }
            f.sync_all()?;
        }
        Ok(changed)
    }

    /// Checks a non-write operation.
    pub(crate) fn before(&self, op: FaultOp, path: &Path) -> Result<()> {
        let d = self.state.borrow_mut().decide(op, path);
        match d {
            Decision::Proceed => Ok(()),
            Decision::Fail(fault) => Err(injected(op_name(op), path, fault)),
            Decision::Crash | Decision::Dead => Err(dead(op_name(op), path)),
        }
    }

    /// A file is about to be created at `path`: remembers it if it is new (tracking only).
    pub(crate) fn creating(&self, path: &Path) {
        let mut state = self.state.borrow_mut();
        if state.track_unsynced && !state.crashed && !path.exists() {
            state
                .dir_changes
                .push(DirChange::Created(path.to_path_buf()));
        }
    }

    /// `from` is about to be renamed to `to`: remembers it and what it replaces (tracking
    /// only).
    pub(crate) fn renaming(&self, from: &Path, to: &Path) {
        let mut state = self.state.borrow_mut();
        if state.track_unsynced && !state.crashed {
            // The file at `to` is replaced: its unsynced writes go with it; `from`'s follow it.
            let moved = state.unsynced.remove(from);
            state.unsynced.remove(to);
            if let Some(writes) = moved {
                state.unsynced.insert(to.to_path_buf(), writes);
            }
            let replaced = std::fs::read(to).ok();
            state.dir_changes.push(DirChange::Renamed {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                replaced,
            });
        }
    }

    /// The directory `dir` was synced: its entries are durable.
    pub(crate) fn dir_synced(&self, dir: &Path) {
        self.state
            .borrow_mut()
            .dir_changes
            .retain(|c| c.dir() != Some(dir));
    }

    /// A sync of `path` is starting: the writes it will make durable, those already complete
    /// (one still in flight may reach the disk after the sync's flush).
    pub(crate) fn sync_starting(&self, path: &Path) -> Vec<u64> {
        let state = self.state.borrow();
        state.unsynced.get(path).map_or_else(Vec::new, |writes| {
            writes.iter().filter(|w| w.done).map(|w| w.id).collect()
        })
    }

    /// A sync of `path` that started when exactly the writes `covered` were complete ended:
    /// those are durable.
    pub(crate) fn synced(&self, path: &Path, covered: &[u64]) {
        let mut state = self.state.borrow_mut();
        if let Some(writes) = state.unsynced.get_mut(path) {
            writes.retain(|w| !covered.contains(&w.id));
            if writes.is_empty() {
                state.unsynced.remove(path);
            }
        }
    }

    /// The file was removed.
    pub(crate) fn forget(&self, path: &Path) {
        self.state.borrow_mut().unsynced.remove(path);
    }

    /// A write through the injector.
    pub(crate) async fn write(&self, file: &File, buf: DmaBuffer, pos: u64) -> Result<usize> {
        let path = file.path();
        let d = self.state.borrow_mut().decide(FaultOp::Write, path);
        let io_err = |e: std::io::Error| Error::io("write (fault injection)", path, e);
        match d {
            Decision::Dead => Err(dead("write", path)),
            Decision::Fail(f @ (Fault::Eio | Fault::Enospc)) => Err(injected("write", path, f)),
            Decision::Proceed => {
                let id = self.remember(path, pos, buf.as_bytes()).map_err(io_err)?;
                let _running = self.in_flight();
                let written = file.raw_write(buf, pos).await?;
                self.write_done(path, id);
                Ok(written)
            }
            Decision::Fail(Fault::ShortWrite) => {
                let blocks = buf.len() / crate::options::WAL_BLOCK_SIZE_BYTES;
                let keep_blocks =
                    (self.state.borrow_mut().next_rand() % blocks.max(1) as u64) as usize;
                let keep = keep_blocks * crate::options::WAL_BLOCK_SIZE_BYTES;
                if keep == 0 {
                    return Ok(0);
                }
                let mut prefix = file.alloc(keep);
                prefix
                    .as_bytes_mut()
                    .copy_from_slice(&buf.as_bytes()[..keep]);
                let id = self
                    .remember(path, pos, prefix.as_bytes())
                    .map_err(io_err)?;
                let _running = self.in_flight();
                let written = file.raw_write(prefix, pos).await?;
                self.write_done(path, id);
                Ok(written)
            }
            Decision::Fail(Fault::TornWrite) => {
                self.tear(path, pos, buf.as_bytes()).map_err(io_err)?;
                Err(injected("write", path, Fault::TornWrite))
            }
            Decision::Crash => {
                self.tear(path, pos, buf.as_bytes()).map_err(io_err)?;
                Err(dead("write", path))
            }
        }
    }

    /// Records a write about to happen, for `power_loss`; returns its id (None when not
    /// tracking).
    fn remember(&self, path: &Path, pos: u64, new: &[u8]) -> std::io::Result<Option<u64>> {
        if !self.state.borrow().track_unsynced {
            return Ok(None);
        }
        let mut old = vec![0u8; new.len()];
        let f = std::fs::File::open(path)?;
        let n = read_full_at(&f, &mut old, pos)?;
        old[n..].fill(0);
        let mut state = self.state.borrow_mut();
        state.writes_remembered += 1;
        let id = state.writes_remembered;
        state
            .unsynced
            .entry(path.to_path_buf())
            .or_default()
            .push(UnsyncedWrite {
                id,
                done: false,
                pos,
                old,
                new: new.to_vec(),
            });
        Ok(Some(id))
    }

    /// The remembered write `id` of `path` completed.
    fn write_done(&self, path: &Path, id: Option<u64>) {
        let Some(id) = id else {
            return;
        };
        let mut state = self.state.borrow_mut();
        if let Some(w) = state
            .unsynced
            .get_mut(path)
            .and_then(|writes| writes.iter_mut().find(|w| w.id == id))
        {
            w.done = true;
        }
    }

    /// Writes a random subset of the sectors of `new` (buffered I/O; later O_DIRECT reads
    /// see it because direct reads flush the page cache first).
    fn tear(&self, path: &Path, pos: u64, new: &[u8]) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut landed = vec![0u8; new.len()];
        let n = read_full_at(&f, &mut landed, pos)?;
        landed[n..].fill(0);
        {
            let mut state = self.state.borrow_mut();
            for (i, sector) in new.chunks(SECTOR_SIZE_BYTES).enumerate() {
                if state.next_rand() % 2 == 0 {
                    let at = i * SECTOR_SIZE_BYTES;
                    landed[at..at + sector.len()].copy_from_slice(sector);
                }
            }
        }
        self.remember(path, pos, &landed)?;
        f.write_all_at(&landed, pos)?;
        f.sync_all()
    }
}

fn read_full_at(f: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], pos + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
