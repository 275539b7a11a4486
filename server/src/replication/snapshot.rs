//! Snapshots: a replica whose log ends before the leader's compacted log gets the shard's
//! state as files, streamed outside the Raft messages (TiKV's snapshot stream,
//! etcd-io/etcd#9000), then the entries after it.
//!
//! ## Leader
//! raft-rs asks the log for a snapshot (`Storage::snapshot`). When none is ready, the group
//! calls [`Snapshots::prepare`]: the engine checkpoints its tables (`Engine::checkpoint`:
//! hard links, as of the last flushed entry, no flush needed) into `raft-snapshot-out-<n>/`,
//! and the log offers (index, term). raft-rs then emits a `MsgSnapshot` naming them;
//! [`Snapshots::send`] opens a connection of its own to the peer (the peer protocol's `Hello`),
//! streams the checkpoint's files as `snapshotChunk` frames (tables first, the descriptor
//! last, each file's last chunk carrying its CRC-32C), then the `MsgSnapshot`, and reports the
//! outcome to raft-rs. The log is not compacted past a checkpoint while one is being sent; once
//! no send is under way after one succeeded, the checkpoint goes (its links would keep tables
//! the engine compacted away) and the next follower that needs a snapshot gets a new one.
//!
//! ## Follower
//! Chunks go to `raft-snapshot-in-<term>-<index>-<from>-<n>/`: in order, each file's checksum
//! checked at its last chunk and the file synced. Once the descriptor has arrived and every
//! table it names is there with its size, the tables are renumbered for this engine
//! (`renumber_checkpoint`) and the `MsgSnapshot` that follows is handed to Raft. Anything else
//! (a chunk out of order, a bad file name, a checksum mismatch, a `MsgSnapshot` whose files did
//! not arrive on its connection, more than [`FILES_MAX`] files, a chunk that would leave less
//! than [`DISK_RESERVE_BYTES`] free on the disk, a frame not whole within a minute) closes the connection
//! and removes what it sent. When Raft
//! accepts the snapshot, [`Snapshots::install`]: the log records it (a marker, then its state
//! file), the engine installs the checkpoint (its commit point), the log restarts after it.
//! A restart in between finishes the log's part from the marker and the engine's from the
//! received directory ([`Snapshots::recover`]).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use corekv_storage::Engine;
use corekv_storage::engine::{
    CHECKPOINT_FILE, DESCRIPTOR_BYTES_MAX, decode_descriptor, renumber_checkpoint,
};
use corekv_storage::io::buffered::{read_exact_at, write_all_at};
use files::free_bytes;
use futures::AsyncWriteExt;
use glommio::io::{BufferedFile, Directory};
use glommio::net::TcpStream;
use graveyard::{Graveyard, remove_dir, remove_dirs};
use raft::Storage;
use raft::eraftpb::Message;

use super::group::Group;
use super::log_store::RaftLog;
use super::wire::{
    Hello, PEER_PROTOCOL_VERSION, SnapshotChunk, encode_hello, encode_messages,
    encode_snapshot_chunk,
};

const OUT_PREFIX: &str = "raft-snapshot-out-";
const IN_PREFIX: &str = "raft-snapshot-in-";
/// Bytes of file data per chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Snapshots one replica receives at once (one per leader that thinks it needs one).
const RECEIVING_MAX: u32 = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a chunk write may wait for the receiver to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Numbers a renumbered checkpoint starts above the engine's next one: room for the tables
/// the engine writes between the snapshot's arrival and its installation.
const NUMBER_GAP: u64 = 1 << 20;
/// Most files one received snapshot may hold (its tables and the descriptor): bounds the
/// memory its list of files takes, whatever a peer sends.
const FILES_MAX: usize = 1 << 16;
/// Free space a snapshot being received leaves on the data directory's filesystem: one that
/// would take more is refused, so a peer's stream cannot fill the disk the engine writes to.
const DISK_RESERVE_BYTES: u64 = 1 << 30;

/// What snapshots have done on this replica since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Checkpoints made to send.
    pub made: u64,
    /// Snapshots sent whole.
    pub sent: u64,
    /// Snapshots whose sending failed.
    pub send_failures: u64,
    /// Milliseconds outgoing streams waited for `--snapshot-send-mib-per-s`.
    pub send_paced_ms: u64,
    /// Snapshots received whole.
    pub received: u64,
    /// Snapshots installed.
    pub installed: u64,
}

/// A checkpoint made to be sent; its directory goes when the last sender lets go.
struct Outgoing {
    index: u64,
    term: u64,
    dir: PathBuf,
    files: Vec<(String, u64)>,
    graveyard: Rc<Graveyard>,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.graveyard.bury(std::mem::take(&mut self.dir));
    }
}

/// One shard replica's snapshots, both ways.
pub struct Snapshots {
    dir: PathBuf,
    engine: Engine,
    log: RaftLog,
    node_id: u64,
    shard: u32,
    shard_count: u32,
    cluster_id: u64,
    peers: Vec<(u64, SocketAddr)>,
    group: RefCell<Option<Group>>,
    outgoing: RefCell<Option<Rc<Outgoing>>>,
    sending: Cell<u32>,
    receiving: Cell<u32>,
    /// Snapshots received whole and handed to Raft, until Raft refuses one
    /// ([`Snapshots::discard`]) or one is installed: (index, term, directory).
    pub(super) received: RefCell<Vec<(u64, u64, PathBuf)>>,
    /// Table numbers the next received snapshot is renumbered from at least: above every
    /// received one's, so no two received copies share a number, whichever is installed.
    numbers_from: Cell<u64>,
    /// One renumbering at a time: each reads `numbers_from` and, after its I/O, raises it.
    renumbering: glommio::sync::Semaphore,
    next_dir: Cell<u64>,
    stats: Cell<SnapshotStats>,
    /// The bandwidth this shard's outgoing streams share.
    pacer: pace::Pacer,
    /// Directories dropped streams and checkpoints left for removal.
    graveyard: Rc<Graveyard>,
}

impl Snapshots {
    /// The snapshots of the replica whose engine and log live in `dir`.
    pub fn new(
        dir: &Path,
        engine: Engine,
        log: RaftLog,
        node_id: u64,
        (shard, shard_count): (u32, u32),
        cluster_id: u64,
        peers: Vec<(u64, SocketAddr)>,
    ) -> Rc<Snapshots> {
        Rc::new(Snapshots {
            dir: dir.to_path_buf(),
            engine,
            log,
            node_id,
            shard,
            shard_count,
            cluster_id,
            peers,
            group: RefCell::new(None),
            outgoing: RefCell::new(None),
            sending: Cell::new(0),
            receiving: Cell::new(0),
            received: RefCell::default(),
            numbers_from: Cell::new(0),
            renumbering: glommio::sync::Semaphore::new(1),
            next_dir: Cell::new(0),
            stats: Cell::new(SnapshotStats::default()),
            pacer: pace::Pacer::new(0),
            graveyard: Rc::default(),
        })
    }

    /// Starts removing the directories dropped streams and checkpoints left (on the
    /// executor's blocking thread); called on every tick of the replica.
    pub fn remove_left_dirs(&self) {
        self.graveyard.empty_in_background();
    }

    /// The group that outcomes are reported to and received snapshots handed to.
    pub fn set_group(&self, group: Group) {
        *self.group.borrow_mut() = Some(group);
    }

    /// Limits the bytes per second this shard's outgoing streams send together (0: none).
    pub fn set_send_rate(&self, bytes_per_s: u64) {
        self.pacer.set_rate(bytes_per_s);
    }

    /// What snapshots have done here.
    pub fn stats(&self) -> SnapshotStats {
        self.stats.get()
    }

    fn count(&self, f: impl FnOnce(&mut SnapshotStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Before the group starts: finishes a snapshot a restart interrupted (the log says it
    /// starts after a snapshot the engine does not hold yet: the received copy is installed),
    /// then removes every snapshot directory left behind.
    pub async fn recover(&self) -> Result<(), String> {
        let (index, term) = self.log.compacted();
        let dirs = snapshot_dirs(&self.dir)?;
        if self.engine.flushed_log_index() < index {
            // Several copies may be here (from different leaders, one cut short by the
            // crash, half renumbered): the one to install is one the engine takes whole.
            let prefix = format!("{IN_PREFIX}{term}-{index}-");
            let mut refused = Vec::new();
            let mut chosen = None;
            for d in &dirs {
                if !d
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                {
                    continue;
                }
                match self.engine.check_checkpoint(d).await {
                    Ok(_) => {
                        chosen = Some(d);
                        break;
                    }
                    Err(e) => refused.push(format!("{}: {e}", d.display())),
                }
            }
            let Some(dir) = chosen else {
                return Err(format!(
                    "the Raft log starts after a snapshot at entry {index} (term {term}) that \
                     the engine does not hold, and no complete copy of it is in {}{}",
                    self.dir.display(),
                    if refused.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", refused.join("; "))
                    }
                ));
            };
            self.engine
                .install_checkpoint(dir)
                .await
                .map_err(|e| format!("finishing the snapshot at entry {index}: {e}"))?;
            tracing::info!(
                index,
                term,
                "finished installing a snapshot a restart interrupted"
            );
        }
        remove_dirs(dirs).await;
        Ok(())
    }

    /// Makes a checkpoint to send and offers it to raft-rs (the log had no recent enough
    /// one when raft-rs asked).
    pub async fn prepare(&self) -> Result<(), String> {
        self.graveyard.empty_in_background();
        let flushed = self.engine.flushed_log_index();
        if let Some(o) = self.outgoing.borrow().as_ref()
            && o.index == flushed
        {
            // Nothing was flushed since: the checkpoint is as recent as one can be.
            self.log.offer_snapshot(o.index, o.term);
            return Ok(());
        }
        let n = self.next_dir.get();
        self.next_dir.set(n + 1);
        let dir = self.dir.join(format!("{OUT_PREFIX}{n}"));
        remove_dirs(vec![dir.clone()]).await;
        let info = self
            .engine
            .checkpoint(&dir)
            .await
            .map_err(|e| format!("checkpoint for a snapshot: {e}"))?;
        let index = info.applied_index;
        let term = match self.log.term(index) {
            Ok(term) if index > 0 => term,
            _ => {
                // Nothing flushed yet, or compacted past (cannot be: compaction stays behind
                // the flushed entry): nothing to offer.
                remove_dirs(vec![dir]).await;
                return Ok(());
            }
        };
        *self.outgoing.borrow_mut() = Some(Rc::new(Outgoing {
            index,
            term,
            dir,
            files: info.files,
            graveyard: Rc::clone(&self.graveyard),
        }));
        self.count(|s| s.made += 1);
        self.log.offer_snapshot(index, term);
        tracing::info!(
            node = self.node_id,
            shard = self.shard,
            index,
            term,
            "checkpoint ready for a snapshot"
        );
        Ok(())
    }

    /// The entry the log must keep (compaction stops before it) while a snapshot is sent.
    pub fn pinned_index(&self) -> Option<u64> {
        if self.sending.get() == 0 {
            return None;
        }
        self.outgoing.borrow().as_ref().map(|o| o.index)
    }

    /// Sends the snapshot `message` (a `MsgSnapshot`) names to its peer in the background,
    /// then reports the outcome to raft-rs.
    pub fn send(self: &Rc<Self>, message: Message) {
        let this = Rc::clone(self);
        glommio::spawn_local(async move {
            let to = message.to;
            let index = message.get_snapshot().get_metadata().index;
            let ok = match this.stream(&message).await {
                Ok((bytes, paced)) => {
                    let paced_ms = paced.as_millis() as u64;
                    this.count(|s| {
                        s.sent += 1;
                        s.send_paced_ms += paced_ms;
                    });
                    tracing::info!(
                        node = this.node_id,
                        shard = this.shard,
                        to,
                        index,
                        bytes,
                        paced_ms,
                        "snapshot sent"
                    );
                    true
                }
                Err(e) => {
                    this.count(|s| s.send_failures += 1);
                    tracing::warn!(node = this.node_id, shard = this.shard, to, index,
                        error = %e, "sending a snapshot failed; Raft tries again");
                    false
                }
            };
            if ok && this.sending.get() == 0 {
                // Sent, and no other send under way: the checkpoint's links would keep tables
                // the engine has since compacted away on disk; another follower that needs a
                // snapshot gets a fresh one.
                let mut outgoing = this.outgoing.borrow_mut();
                if let Some(o) = outgoing.take_if(|o| o.index == index) {
                    this.log.withdraw_snapshot(o.index, o.term);
                }
            }
            let group = this.group.borrow().clone();
            if let Some(group) = group {
                group.report_snapshot(to, ok);
            }
        })
        .detach();
    }

    /// Sends the files and the message: the file bytes sent, and how long pacing held them.
    async fn stream(&self, message: &Message) -> Result<(u64, Duration), String> {
        let meta = message.get_snapshot().get_metadata();
        let (index, term, to) = (meta.index, meta.term, message.to);
        let out = self
            .outgoing
            .borrow()
            .clone()
            .filter(|o| o.index == index && o.term == term)
            .ok_or("its checkpoint was replaced by a newer one")?;
        let &(_, addr) = self
            .peers
            .iter()
            .find(|(id, _)| *id == to)
            .ok_or_else(|| format!("node {to} is not a peer"))?;
        self.sending.set(self.sending.get() + 1);
        let _sending = scopeguard(&self.sending);
        let mut stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let hello = encode_hello(&Hello {
            protocol_version: PEER_PROTOCOL_VERSION,
            cluster_id: self.cluster_id,
            from_node: self.node_id,
            to_node: to,
            shard: self.shard,
            shard_count: self.shard_count,
        });
        let write_err = |e: std::io::Error| format!("write to {addr}: {e}");
        stream.write_all(&hello).await.map_err(write_err)?;
        let (mut bytes, mut paced) = (0, Duration::ZERO);
        for (name, size) in &out.files {
            let path = out.dir.join(name);
            let file_err = |e: std::io::Error| format!("{}: {e}", path.display());
            let file = BufferedFile::open(&path)
                .await
                .map_err(|e| file_err(e.into()))?;
            let (mut offset, mut crc) = (0u64, 0u32);
            loop {
                let n = CHUNK_BYTES.min((size - offset) as usize);
                let data = read_exact_at(&file, offset, n).await.map_err(file_err)?;
                crc = crc32c::crc32c_append(crc, &data);
                let last = offset + n as u64 == *size;
                let frame = encode_snapshot_chunk(&SnapshotChunk {
                    index,
                    term,
                    file: name.clone(),
                    offset,
                    data,
                    last,
                    crc32c: if last { crc } else { 0 },
                })
                .map_err(|e| e.to_string())?;
                paced += self.pacer.pace(frame.len() as u64).await;
                stream.write_all(&frame).await.map_err(write_err)?;
                offset += n as u64;
                bytes += n as u64;
                if last {
                    break;
                }
            }
            file.close().await.map_err(|e| file_err(e.into()))?;
        }
        let frame = encode_messages(std::slice::from_ref(message)).map_err(|e| e.to_string())?;
        stream.write_all(&frame).await.map_err(write_err)?;
        stream.flush().await.map_err(write_err)?;
        stream.close().await.map_err(write_err)?;
        Ok((bytes, paced))
    }

    /// Installs the snapshot (index, term) Raft accepted: its files arrived whole before
    /// Raft saw it.
    pub async fn install(&self, index: u64, term: u64) -> Result<(), String> {
        self.graveyard.empty_in_background();
        // Out of the list before the first await: nothing else removes it meanwhile. On
        // failure (the group stops) the directory stays for the next start's `recover`.
        let dir = {
            let mut received = self.received.borrow_mut();
            let at = received
                .iter()
                .position(|(i, t, _)| (*i, *t) == (index, term))
                .ok_or_else(|| {
                    format!(
                        "Raft accepted the snapshot at {index} (term {term}) but its files \
                         are gone"
                    )
                })?;
            received.remove(at).2
        };
        // Everything the engine would refuse is refused before the log changes: a log that
        // starts after a snapshot the engine cannot take would leave nothing to go back to.
        self.engine
            .check_checkpoint(&dir)
            .await
            .map_err(|e| format!("the snapshot at {index} cannot be installed: {e}"))?;
        self.log
            .begin_snapshot(index, term)
            .await
            .map_err(|e| e.to_string())?;
        self.engine
            .install_checkpoint(&dir)
            .await
            .map_err(|e| format!("installing the snapshot at {index}: {e}"))?;
        self.log
            .finish_snapshot()
            .await
            .map_err(|e| e.to_string())?;
        // Older snapshots are useless now; a newer one (another leader's, handed to Raft
        // already) may still be the next to install.
        let mut gone = vec![dir];
        self.received.borrow_mut().retain(|(i, _, d)| {
            let keep = *i > index;
            if !keep {
                gone.push(d.clone());
            }
            keep
        });
        remove_dirs(gone).await;
        self.count(|s| s.installed += 1);
        tracing::info!(
            node = self.node_id,
            shard = self.shard,
            index,
            term,
            "snapshot installed"
        );
        Ok(())
    }

    /// Raft did not take the snapshot received into `dir` (it holds those entries already,
    /// or it is from a deposed leader): its files go.
    pub fn discard(&self, dir: &Path) {
        self.received.borrow_mut().retain(|(_, _, d)| d != dir);
        // In the background: no other stream reuses the name in this process.
        glommio::spawn_local(remove_dirs(vec![dir.to_path_buf()])).detach();
    }

    pub(super) async fn chunk(
        self: &Rc<Self>,
        conn: &mut Option<Incoming>,
        from: u64,
        chunk: SnapshotChunk,
    ) -> Result<(), String> {
        if conn.is_none() {
            self.graveyard.empty_in_background();
            if self.receiving.get() >= RECEIVING_MAX {
                return Err(format!(
                    "{RECEIVING_MAX} snapshots are being received already"
                ));
            }
            if chunk.index == 0 || chunk.term == 0 {
                return Err("a snapshot at entry 0".into());
            }
            let n = self.next_dir.get();
            self.next_dir.set(n + 1);
            let dir = self.dir.join(format!(
                "{IN_PREFIX}{}-{}-{from}-{n}",
                chunk.term, chunk.index
            ));
            // Counted before the wait below, so that streams starting meanwhile see it; the
            // guard takes it back if the wait fails or is cancelled.
            self.receiving.set(self.receiving.get() + 1);
            let counted = scopeguard(&self.receiving);
            let owned = dir.clone();
            corekv_storage::io::blocking(move || {
                remove_dir(&owned);
                std::fs::create_dir(&owned).map_err(|e| format!("{}: {e}", owned.display()))
            })
            .await?;
            // From here the stream's `Incoming` gives the count back when it ends.
            std::mem::forget(counted);
            *conn = Some(Incoming {
                owner: Rc::downgrade(self),
                index: chunk.index,
                term: chunk.term,
                dir,
                file: None,
                done: Vec::new(),
                reserve: DISK_RESERVE_BYTES,
                complete: false,
                handed_over: false,
            });
        }
        let Some(incoming) = conn.as_mut() else {
            unreachable!("set above");
        };
        incoming.write(chunk).await?;
        if incoming.complete {
            // Numbered for this engine now, so installing it is only links and one edit. Two
            // streams completing together must not both start from the same number.
            let _turn = self
                .renumbering
                .acquire_permit(1)
                .await
                .map_err(|e| e.to_string())?;
            let at_least =
                (self.engine.next_file_number() + NUMBER_GAP).max(self.numbers_from.get());
            let used = renumber_checkpoint(&incoming.dir, at_least)
                .await
                .map_err(|e| e.to_string())?;
            self.numbers_from.set(self.numbers_from.get().max(used.end));
            // Refused here, before Raft sees it, if this engine would not take it.
            self.engine
                .check_checkpoint(&incoming.dir)
                .await
                .map_err(|e| format!("this replica cannot install the snapshot: {e}"))?;
            self.count(|s| s.received += 1);
        }
        Ok(())
    }
}

fn scopeguard(counter: &Cell<u32>) -> impl Drop + '_ {
    struct Guard<'a>(&'a Cell<u32>);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    Guard(counter)
}

/// A file being received.
struct OpenFile {
    name: String,
    file: BufferedFile,
    offset: u64,
    crc: u32,
}

/// A snapshot being received on one connection.
pub struct Incoming {
    /// Counts this stream among those being received while it lives.
    owner: Weak<Snapshots>,
    pub(super) index: u64,
    pub(super) term: u64,
    pub(super) dir: PathBuf,
    file: Option<OpenFile>,
    /// Files received whole: name and size.
    done: Vec<(String, u64)>,
    /// Free bytes each chunk must leave on the disk.
    reserve: u64,
    pub(super) complete: bool,
    pub(super) handed_over: bool,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let owner = self.owner.upgrade();
        if !self.handed_over {
            match &owner {
                Some(owner) => owner.graveyard.bury(std::mem::take(&mut self.dir)),
                None => remove_dir(&self.dir),
            }
        }
        if let Some(owner) = owner {
            owner.receiving.set(owner.receiving.get() - 1);
        }
    }
}

impl Incoming {
    /// Writes one chunk (through io_uring, like every file operation of a stream but creating
    /// its directory: the shard's thread never waits on the disk), checking it first.
    async fn write(&mut self, chunk: SnapshotChunk) -> Result<(), String> {
        if self.complete {
            return Err("a chunk after the snapshot was complete".into());
        }
        if (chunk.index, chunk.term) != (self.index, self.term) {
            return Err(format!(
                "a chunk of snapshot {}/{} on the connection of {}/{}",
                chunk.index, chunk.term, self.index, self.term
            ));
        }
        if !valid_file_name(&chunk.file) {
            return Err(format!("a snapshot file named {:?}", chunk.file));
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| format!("{}: {e}", path.display())
        };
        let path = self.dir.join(&chunk.file);
        match &self.file {
            Some(f) if f.name == chunk.file => {}
            Some(f) => {
                return Err(format!(
                    "file {:?} began before {:?} ended",
                    chunk.file, f.name
                ));
            }
            None => {
                if self.done.iter().any(|(n, _)| *n == chunk.file) {
                    return Err(format!("file {:?} sent twice", chunk.file));
                }
                if self.done.len() >= FILES_MAX {
                    return Err(format!("more than {FILES_MAX} files"));
                }
                let file = glommio::io::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .buffered_open(&path)
                    .await
                    .map_err(|e| io(&path)(e.into()))?;
                self.file = Some(OpenFile {
                    name: chunk.file.clone(),
                    file,
                    offset: 0,
                    crc: 0,
                });
            }
        }
        let Some(f) = self.file.as_mut() else {
            unreachable!("set above");
        };
        if chunk.offset != f.offset {
            return Err(format!(
                "{:?}: a chunk at offset {}, expected {}",
                chunk.file, chunk.offset, f.offset
            ));
        }
        if chunk.file == CHECKPOINT_FILE
            && f.offset + chunk.data.len() as u64 > DESCRIPTOR_BYTES_MAX
        {
            return Err(format!("a descriptor over {DESCRIPTOR_BYTES_MAX} bytes"));
        }
        // Measured at every chunk: what other streams, kept copies and the engine write
        // meanwhile counts too.
        let free = free_bytes(&self.dir)?;
        if free < self.reserve.saturating_add(chunk.data.len() as u64) {
            return Err(format!(
                "{} more bytes would leave less than {} bytes free on this replica's disk \
                 ({free} free)",
                chunk.data.len(),
                self.reserve
            ));
        }
        f.crc = crc32c::crc32c_append(f.crc, &chunk.data);
        let len = chunk.data.len() as u64;
        // Buffered writes (the page cache takes them); the file is synced at its end.
        write_all_at(&f.file, chunk.data, f.offset)
            .await
            .map_err(io(&path))?;
        f.offset += len;
        if !chunk.last {
            return Ok(());
        }
        if f.crc != chunk.crc32c {
            return Err(format!(
                "{:?}: checksum {:#010x}, the sender's {:#010x}",
                chunk.file, f.crc, chunk.crc32c
            ));
        }
        f.file.fdatasync().await.map_err(|e| io(&path)(e.into()))?;
        self.done.push((chunk.file.clone(), f.offset));
        if let Some(f) = self.file.take() {
            f.file.close().await.map_err(|e| io(&path)(e.into()))?;
        }
        if chunk.file == CHECKPOINT_FILE {
            self.check_complete().await?;
        }
        Ok(())
    }

    /// The descriptor arrived: every table it names must be here, whole.
    async fn check_complete(&mut self) -> Result<(), String> {
        let path = self.dir.join(CHECKPOINT_FILE);
        let file_err = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = BufferedFile::open(&path)
            .await
            .map_err(|e| file_err(e.into()))?;
        let size = file.file_size().await.map_err(|e| file_err(e.into()))?;
        // The chunks' bound: the descriptor was not allowed to grow past it.
        debug_assert!(size <= DESCRIPTOR_BYTES_MAX);
        let bytes = read_exact_at(&file, 0, size.min(DESCRIPTOR_BYTES_MAX) as usize)
            .await
            .map_err(file_err)?;
        file.close().await.map_err(|e| file_err(e.into()))?;
        let edit = decode_descriptor(&bytes)?;
        if edit.applied_index != Some(self.index) {
            return Err(format!(
                "the descriptor holds entry {:?}, the snapshot is at {}",
                edit.applied_index, self.index
            ));
        }
        for (_, meta) in &edit.added {
            let name = corekv_storage::sst::builder::table_file_name(meta.file_number);
            if !self
                .done
                .iter()
                .any(|(n, size)| *n == name && *size == meta.size_bytes)
            {
                return Err(format!(
                    "table {name} of the descriptor did not arrive whole"
                ));
            }
        }
        if self.done.len() != edit.added.len() + 1 {
            return Err("files the descriptor does not name".into());
        }
        let dir_err = |e: glommio::GlommioError<()>| format!("{}: {e}", self.dir.display());
        Directory::open(&self.dir)
            .await
            .map_err(dir_err)?
            .sync()
            .await
            .map_err(dir_err)?;
        self.complete = true;
        Ok(())
    }
}

/// `CHECKPOINT` or a table's `NNNNNN.sst`: nothing that names another directory.
fn valid_file_name(name: &str) -> bool {
    name == CHECKPOINT_FILE
        || name
            .strip_suffix(".sst")
            .is_some_and(|n| (6..=20).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

fn snapshot_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(OUT_PREFIX) || name.starts_with(IN_PREFIX) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

mod files;
mod graveyard;
mod pace;
#[cfg(test)]
mod tests;
