//! The manifest: an append-only log of version edits (tables added to and removed from levels,
//! the next file number, the last sequence number, how much of the WAL the tables hold),
//! replayed on open to rebuild the set of live tables.
//!
//! ## Files
//!
//! * `MANIFEST-NNNNNN`: the log. Each record starts on a 4 KiB page, so a record is written
//!   with O_DIRECT into fresh pages and never rewrites an earlier record's bytes.
//! * `CURRENT`: one page naming the live log (`MANIFEST-NNNNNN\n`, then zeros). Replaced
//!   atomically: write `CURRENT.tmp`, fdatasync, rename over `CURRENT`, fsync the directory.
//!
//! A record is durable (and the edit in force) once its pages are written and the log is
//! fdatasync'ed. When the log passes `manifest_size_bytes_max` or [`MANIFEST_EDITS_MAX`] edits,
//! a new log starting with one edit that describes the whole state is written, then `CURRENT`
//! is switched to it and the old log deleted.
//!
//! ## Record format (version 1)
//!
//! ```text
//! page-aligned offset
//! +----------------+----------------+-------------------------+------------------------+
//! | crc32c u32 LE  | len u32 LE     | payload (len bytes)     | zero padding to a page |
//! +----------------+----------------+-------------------------+------------------------+
//!   crc32c covers len ‖ payload. The first record's payload is the header:
//!   "CKVMANIF" (8 bytes) ‖ format version u32 LE (1). Every later payload is an edit:
//!   a sequence of fields, each a tag byte then its value:
//!     2 next_file_number   varint
//!     3 last_seq           varint
//!     4 flushed_seq        varint  (every write <= it is in a table: the WAL may drop it)
//!     6 delete file        varint level, varint file number
//!     7 add file           varint level, number, size_bytes, seq_min, seq_max, entries,
//!                          tombstones, raw_bytes, then smallest and largest keys
//!                          (each varint length + bytes)
//!     8 applied_index      varint  (an engine applying an external log, the Raft log: every
//!                          entry <= it is in a table, so the log may drop it)
//!     9 applied_time_ms    varint  (the time of that entry: what compactions judge TTLs by)
//! ```
//!
//! ## Recovery
//!
//! Replay stops at the first page whose record header is all zeros (the end of the log). A
//! record that fails its checksum or runs past the end of the file is a *torn tail* when no
//! valid record follows it (a crash during the last append, which was never acknowledged): it
//! is logged, counted and cut off. Damage followed by a valid record means acknowledged edits
//! are damaged: [`crate::Error::Corruption`] with the file and offset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::SeqNo;
use crate::disk::{DiskFile, PAGE_SIZE_BYTES, align_up};
use crate::error::Result;
use crate::io::Io;
use crate::sst::builder::TableMeta;
use crate::sst::{corruption, get_varint, put_varint};

/// Manifest format version, in the header record.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
const HEADER_MAGIC: &[u8; 8] = b"CKVMANIF";
const RECORD_HEADER_BYTES: usize = 8;
/// Name of the file naming the live manifest.
pub const CURRENT_FILE: &str = "CURRENT";

const TAG_NEXT_FILE: u8 = 2;
const TAG_LAST_SEQ: u8 = 3;
const TAG_FLUSHED_SEQ: u8 = 4;
const TAG_DELETE_FILE: u8 = 6;
const TAG_ADD_FILE: u8 = 7;
const TAG_APPLIED_INDEX: u8 = 8;
const TAG_APPLIED_TIME: u8 = 9;

/// The file name of manifest `number`.
pub fn manifest_file_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

/// One change to the set of live tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// The next file number to hand out (tables, manifests).
    pub next_file_number: Option<u64>,
    /// The last sequence number handed out.
    pub last_seq: Option<SeqNo>,
    /// Every write with a sequence number at or below this is in a table.
    pub flushed_seq: Option<SeqNo>,
    /// Every entry of the external log at or below this index is in a table.
    pub applied_index: Option<u64>,
    /// The time of that entry (ms since the epoch).
    pub applied_time_ms: Option<u64>,
    /// Tables removed: (level, file number).
    pub deleted: Vec<(usize, u64)>,
    /// Tables added: (level, metadata).
    pub added: Vec<(usize, TableMeta)>,
}

impl VersionEdit {
    /// Encodes the edit as a record payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(n) = self.next_file_number {
            out.push(TAG_NEXT_FILE);
            put_varint(&mut out, n);
        }
        if let Some(s) = self.last_seq {
            out.push(TAG_LAST_SEQ);
            put_varint(&mut out, s);
        }
        if let Some(s) = self.flushed_seq {
            out.push(TAG_FLUSHED_SEQ);
            put_varint(&mut out, s);
        }
        if let Some(i) = self.applied_index {
            out.push(TAG_APPLIED_INDEX);
            put_varint(&mut out, i);
        }
        if let Some(t) = self.applied_time_ms {
            out.push(TAG_APPLIED_TIME);
            put_varint(&mut out, t);
        }
        for &(level, number) in &self.deleted {
            out.push(TAG_DELETE_FILE);
            put_varint(&mut out, level as u64);
            put_varint(&mut out, number);
        }
        for (level, m) in &self.added {
            out.push(TAG_ADD_FILE);
            for v in [
                *level as u64,
                m.file_number,
                m.size_bytes,
                m.seq_min,
                m.seq_max,
                m.entries,
                m.tombstones,
                m.raw_bytes,
            ] {
                put_varint(&mut out, v);
            }
            for k in [&m.smallest, &m.largest] {
                put_varint(&mut out, k.len() as u64);
                out.extend_from_slice(k);
            }
        }
        out
    }

    /// Decodes a record payload; a description of the problem if malformed.
    pub fn decode(b: &[u8]) -> std::result::Result<VersionEdit, String> {
        let mut e = VersionEdit::default();
        let mut pos = 0;
        let var =
            |pos: &mut usize| get_varint(b, pos).ok_or_else(|| "truncated varint".to_string());
        while pos < b.len() {
            let tag = b[pos];
            pos += 1;
            match tag {
                TAG_NEXT_FILE => e.next_file_number = Some(var(&mut pos)?),
                TAG_LAST_SEQ => e.last_seq = Some(var(&mut pos)?),
                TAG_FLUSHED_SEQ => e.flushed_seq = Some(var(&mut pos)?),
                TAG_APPLIED_INDEX => e.applied_index = Some(var(&mut pos)?),
                TAG_APPLIED_TIME => e.applied_time_ms = Some(var(&mut pos)?),
                TAG_DELETE_FILE => {
                    let level = var(&mut pos)? as usize;
                    let n = var(&mut pos)?;
                    e.deleted.push((level, n));
                }
                TAG_ADD_FILE => {
                    let mut v = [0u64; 8];
                    for x in &mut v {
                        *x = var(&mut pos)?;
                    }
                    let mut keys = [Vec::new(), Vec::new()];
                    for k in &mut keys {
                        let len = var(&mut pos)? as usize;
                        let end = pos
                            .checked_add(len)
                            .filter(|&end| end <= b.len())
                            .ok_or("key runs past the record")?;
                        *k = b[pos..end].to_vec();
                        pos = end;
                    }
                    let [smallest, largest] = keys;
                    e.added.push((
                        v[0] as usize,
                        TableMeta {
                            file_number: v[1],
                            size_bytes: v[2],
                            seq_min: v[3],
                            seq_max: v[4],
                            entries: v[5],
                            tombstones: v[6],
                            raw_bytes: v[7],
                            smallest,
                            largest,
                        },
                    ));
                }
                other => return Err(format!("unknown edit field tag {other}")),
            }
        }
        Ok(e)
    }
}

/// The state a manifest describes: live tables per level and the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// `levels[l]`: file number -> metadata.
    pub levels: Vec<BTreeMap<u64, TableMeta>>,
    /// Next file number to hand out.
    pub next_file_number: u64,
    /// Last sequence number handed out when the last edit was written.
    pub last_seq: SeqNo,
    /// Every write at or below this is in a table.
    pub flushed_seq: SeqNo,
    /// Every entry of the external log at or below this index is in a table (0 = none, or
    /// the engine keeps its own WAL).
    pub applied_index: u64,
    /// The time of that entry.
    pub applied_time_ms: u64,
}

impl ManifestState {
    /// Applies an edit; a description of the problem if it contradicts the state.
    pub fn apply(&mut self, e: &VersionEdit, levels_max: usize) -> std::result::Result<(), String> {
        if let Some(n) = e.next_file_number {
            self.next_file_number = self.next_file_number.max(n);
        }
        if let Some(s) = e.last_seq {
            self.last_seq = self.last_seq.max(s);
        }
        if let Some(s) = e.flushed_seq {
            self.flushed_seq = self.flushed_seq.max(s);
        }
        if let Some(i) = e.applied_index {
            self.applied_index = self.applied_index.max(i);
        }
        if let Some(t) = e.applied_time_ms {
            self.applied_time_ms = self.applied_time_ms.max(t);
        }
        for &(level, n) in &e.deleted {
            if self
                .levels
                .get_mut(level)
                .and_then(|l| l.remove(&n))
                .is_none()
            {
                return Err(format!(
                    "edit deletes table {n} from level {level}, which lacks it"
                ));
            }
        }
        for (level, m) in &e.added {
            if *level >= levels_max {
                return Err(format!(
                    "edit adds table {} to level {level} (max {levels_max})",
                    m.file_number
                ));
            }
            // A table numbered u64::MAX would leave no next number (found by cargo-fuzz).
            let next = m
                .file_number
                .checked_add(1)
                .ok_or_else(|| format!("edit adds table {}: no number after it", m.file_number))?;
            if self.levels.len() <= *level {
                self.levels.resize_with(*level + 1, BTreeMap::new);
            }
            if self.levels.iter().any(|l| l.contains_key(&m.file_number)) {
                return Err(format!("edit adds table {} twice", m.file_number));
            }
            self.levels[*level].insert(m.file_number, m.clone());
            self.next_file_number = self.next_file_number.max(next);
        }
        Ok(())
    }

    /// One edit that recreates this state from nothing.
    pub fn snapshot_edit(&self) -> VersionEdit {
        VersionEdit {
            next_file_number: Some(self.next_file_number),
            last_seq: Some(self.last_seq),
            flushed_seq: Some(self.flushed_seq),
            applied_index: (self.applied_index > 0).then_some(self.applied_index),
            applied_time_ms: (self.applied_time_ms > 0).then_some(self.applied_time_ms),
            deleted: Vec::new(),
            added: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(l, files)| files.values().map(move |m| (l, m.clone())))
                .collect(),
        }
    }
}

/// What opening the manifest found.
#[derive(Debug, Default)]
pub struct ManifestRecovery {
    /// The state it describes.
    pub state: ManifestState,
    /// Edits replayed.
    pub edits: u64,
    /// Torn tails cut off (0 or 1).
    pub torn_tails_cut: u64,
    /// Whether a manifest existed (false: a new engine directory).
    pub existed: bool,
}

/// The open manifest log, appended to by flushes and compactions.
#[derive(Debug)]
pub struct Manifest {
    io: Io,
    dir: PathBuf,
    file: DiskFile,
    number: u64,
    /// Where the next record goes (page-aligned).
    end: u64,
    size_bytes_max: u64,
    /// Edits appended to the live log since it was created or opened.
    edits_in_log: u64,
    edits_written: u64,
    bytes_written: u64,
}

/// Edits after which the log is rewritten as one snapshot, whatever its size: every edit takes
/// a 4 KiB page, so this bounds the log to 512 KiB plus the snapshot.
pub const MANIFEST_EDITS_MAX: u64 = 128;

fn encode_record(payload: &[u8]) -> Vec<u8> {
    let mut rec =
        Vec::with_capacity(align_up((RECORD_HEADER_BYTES + payload.len()) as u64) as usize);
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(payload);
    let crc = crc32c::crc32c(&rec[4..]);
    rec[..4].copy_from_slice(&crc.to_le_bytes());
    rec.resize(align_up(rec.len() as u64) as usize, 0);
    rec
}

fn header_payload() -> Vec<u8> {
    let mut p = HEADER_MAGIC.to_vec();
    p.extend_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
    p
}

/// Outcome of reading the record at a page-aligned offset.
pub(crate) enum Record<'a> {
    /// A zero header: the end of the log.
    End,
    /// A valid record and the offset of the next one.
    Ok(&'a [u8], usize),
    /// Damaged (bad checksum or runs past the end).
    Bad(String),
}

pub(crate) fn read_record(data: &[u8], at: usize) -> Record<'_> {
    let Some(h) = data.get(at..at + RECORD_HEADER_BYTES) else {
        return Record::End;
    };
    let crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if crc == 0 && len == 0 {
        return Record::End;
    }
    let end = at + RECORD_HEADER_BYTES + len;
    if end > data.len() {
        return Record::Bad(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    }
    let actual = crc32c::crc32c(&data[at + 4..end]);
    if actual != crc {
        return Record::Bad(format!(
            "record checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    Record::Ok(
        &data[at + RECORD_HEADER_BYTES..end],
        align_up(end as u64) as usize,
    )
}

async fn write_pages(file: &DiskFile, at: u64, bytes: &[u8]) -> Result<()> {
    let mut buf = file.alloc(bytes.len());
    buf.as_bytes_mut().copy_from_slice(bytes);
    file.write_at(buf, at).await
}

async fn read_whole(file: &DiskFile) -> Result<Vec<u8>> {
    let size = file.size().await?;
    let mut data = vec![0u8; align_up(size) as usize];
    let mut at = 0usize;
    while at < data.len() {
        let n = (data.len() - at).min(1 << 20);
        let got = file.read_into(at as u64, &mut data[at..at + n]).await?;
        if got == 0 {
            break;
        }
        at += n;
    }
    data.truncate(size as usize);
    Ok(data)
}

impl Manifest {
    /// Opens the manifest in `dir` and replays it, or creates an empty one when the directory
    /// has none (no `CURRENT`).
    pub(crate) async fn open(
        io: &Io,
        dir: &Path,
        levels_max: usize,
        size_bytes_max: u64,
    ) -> Result<(Manifest, ManifestRecovery)> {
        let current = dir.join(CURRENT_FILE);
        if !current.exists() {
            let state = ManifestState {
                levels: vec![BTreeMap::new(); levels_max],
                next_file_number: 2,
                ..ManifestState::default()
            };
            let m = Self::create(io, dir, 1, &state, size_bytes_max).await?;
            return Ok((
                m,
                ManifestRecovery {
                    state,
                    ..ManifestRecovery::default()
                },
            ));
        }
        let number = read_current(io, &current).await?;
        let path = dir.join(manifest_file_name(number));
        let file = DiskFile::open(io, &path).await?;
        let data = read_whole(&file).await?;
        let mut rec = ManifestRecovery {
            existed: true,
            ..ManifestRecovery::default()
        };
        rec.state.levels = vec![BTreeMap::new(); levels_max];
        let mut at = 0usize;
        let mut header_seen = false;
        loop {
            match read_record(&data, at) {
                Record::End => break,
                Record::Ok(payload, next) => {
                    if !header_seen {
                        if payload.len() != 12 || &payload[..8] != HEADER_MAGIC {
                            return Err(corruption(&path, 0, "not a corekv manifest (bad header)"));
                        }
                        let v =
                            u32::from_le_bytes([payload[8], payload[9], payload[10], payload[11]]);
                        if v != MANIFEST_FORMAT_VERSION {
                            return Err(corruption(
                                &path,
                                0,
                                format!(
                                    "manifest format version {v} is not supported (this build reads {MANIFEST_FORMAT_VERSION})"
                                ),
                            ));
                        }
                        header_seen = true;
                    } else {
                        let edit = VersionEdit::decode(payload)
                            .map_err(|d| corruption(&path, at as u64, format!("edit: {d}")))?;
                        rec.state
                            .apply(&edit, levels_max)
                            .map_err(|d| corruption(&path, at as u64, d))?;
                        rec.edits += 1;
                    }
                    at = next;
                }
                Record::Bad(detail) => {
                    // A torn tail only if nothing valid follows.
                    let mut later = at + PAGE_SIZE_BYTES;
                    while later < data.len() {
                        if let Record::Ok(..) = read_record(&data, later) {
                            return Err(corruption(&path, at as u64, detail));
                        }
                        later += PAGE_SIZE_BYTES;
                    }
                    if !header_seen {
                        return Err(corruption(&path, 0, format!("manifest header: {detail}")));
                    }
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        %detail,
                        "manifest: cutting off a torn last edit (a crash during its write; it was never acknowledged)"
                    );
                    rec.torn_tails_cut = 1;
                    break;
                }
            }
        }
        if !header_seen {
            return Err(corruption(&path, 0, "manifest has no header"));
        }
        if (at as u64) < data.len() as u64 {
            // Drop whatever follows the last good record so the next append starts clean.
            file.truncate(at as u64).await?;
            file.fdatasync().await?;
        }
        Ok((
            Manifest {
                io: io.clone(),
                dir: dir.to_path_buf(),
                file,
                number,
                end: at as u64,
                size_bytes_max,
                edits_in_log: rec.edits,
                edits_written: 0,
                bytes_written: 0,
            },
            rec,
        ))
    }

    /// Writes a new manifest `number` describing `state` and makes `CURRENT` name it.
    async fn create(
        io: &Io,
        dir: &Path,
        number: u64,
        state: &ManifestState,
        size_bytes_max: u64,
    ) -> Result<Manifest> {
        let path = dir.join(manifest_file_name(number));
        let file = DiskFile::create(io, &path).await?;
        let mut bytes = encode_record(&header_payload());
        bytes.extend_from_slice(&encode_record(&state.snapshot_edit().encode()));
        write_pages(&file, 0, &bytes).await?;
        file.fdatasync().await?;
        set_current(io, dir, number).await?;
        Ok(Manifest {
            io: io.clone(),
            dir: dir.to_path_buf(),
            file,
            number,
            end: bytes.len() as u64,
            size_bytes_max,
            edits_in_log: 1,
            edits_written: 1,
            bytes_written: bytes.len() as u64,
        })
    }

    /// Appends `edit` and makes it durable. When the log has grown past its bound, writes a
    /// new log holding `state_after` (the state with `edit` applied) instead, and switches to
    /// it. `next_number` hands out the new log's file number.
    pub async fn append(
        &mut self,
        edit: &VersionEdit,
        state_after: &ManifestState,
        next_number: impl FnOnce() -> u64,
    ) -> Result<()> {
        if self.end >= self.size_bytes_max || self.edits_in_log >= MANIFEST_EDITS_MAX {
            let number = next_number();
            let fresh = Self::create(
                &self.io,
                &self.dir,
                number,
                state_after,
                self.size_bytes_max,
            )
            .await?;
            let old = std::mem::replace(self, fresh);
            self.edits_written += old.edits_written;
            self.bytes_written += old.bytes_written;
            let old_path = old.path();
            old.file.close().await?;
            self.io.remove(&old_path)?;
            return Ok(());
        }
        let rec = encode_record(&edit.encode());
        write_pages(&self.file, self.end, &rec).await?;
        self.file.fdatasync().await?;
        self.end += rec.len() as u64;
        self.edits_in_log += 1;
        self.edits_written += 1;
        self.bytes_written += rec.len() as u64;
        Ok(())
    }

    /// The live log's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(manifest_file_name(self.number))
    }

    /// The live log's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Edits written since open.
    pub fn edits_written(&self) -> u64 {
        self.edits_written
    }

    /// Bytes written since open.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Closes the log.
    pub async fn close(self) -> Result<()> {
        self.file.close().await
    }
}

/// Reads `CURRENT`: the number of the live manifest.
async fn read_current(io: &Io, path: &Path) -> Result<u64> {
    let file = DiskFile::open(io, path).await?;
    let mut page = vec![0u8; PAGE_SIZE_BYTES];
    let got = file.read_into(0, &mut page).await?;
    file.close().await?;
    let text = &page[..got];
    let line = text
        .iter()
        .position(|&b| b == b'\n')
        .map(|n| &text[..n])
        .ok_or_else(|| corruption(path, 0, "CURRENT holds no manifest name"))?;
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.strip_prefix("MANIFEST-"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            corruption(
                path,
                0,
                format!(
                    "CURRENT names {:?}, not a manifest",
                    String::from_utf8_lossy(line)
                ),
            )
        })
}

/// Points `CURRENT` at manifest `number`: write a temporary file, sync it, rename it over
/// `CURRENT`, sync the directory.
async fn set_current(io: &Io, dir: &Path, number: u64) -> Result<()> {
    let tmp = dir.join("CURRENT.tmp");
    let file = DiskFile::create(io, &tmp).await?;
    let mut page = vec![0u8; PAGE_SIZE_BYTES];
    let text = format!("{}\n", manifest_file_name(number));
    page[..text.len()].copy_from_slice(text.as_bytes());
    write_pages(&file, 0, &page).await?;
    file.fdatasync().await?;
    file.close().await?;
    io.rename(&tmp, &dir.join(CURRENT_FILE))?;
    io.sync_dir(dir).await
}

#[cfg(test)]
mod tests;
