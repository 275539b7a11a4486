//! The Raft log's files: the entry record (the WAL payload), the state file and the snapshot
//! marker (formats in the parent module's doc), and the atomic replacement of a small file.

use std::path::Path;

use raft::eraftpb::{Entry, EntryType, HardState};

use super::{LogError, SNAPSHOT_MARKER_FILE};

pub(super) const MARKER_MAGIC: &[u8; 8] = b"CKVRSNAP";

/// The entry record version written. Version 1 has the same layout and is read too; a
/// version-2 log may hold plain-writes commands, which a binary that knows only version 1
/// cannot apply: it refuses the record when it opens the log, rather than skip the writes.
pub(super) const ENTRY_VERSION: u8 = 2;
pub(super) const ENTRY_HEADER_BYTES: usize = 1 + 1 + 8 + 8 + 4;
pub(super) const STATE_MAGIC: &[u8; 8] = b"CKVRAFTS";
pub(super) const STATE_VERSION: u32 = 1;
/// Most voters a state file may list (bounds what a damaged file can make us allocate).
pub(super) const VOTERS_MAX: usize = 1024;

/// Encodes an entry as a WAL record payload.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = encode_entry_head(e, e.data.len());
    out.extend_from_slice(&e.data);
    out
}

/// The record of `e` up to its data (which follows), in a buffer with room for `extra`
/// bytes more.
pub fn encode_entry_head(e: &Entry, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + e.context.len() + extra);
    out.push(ENTRY_VERSION);
    out.push(e.get_entry_type() as u8);
    out.extend_from_slice(&e.term.to_le_bytes());
    out.extend_from_slice(&e.index.to_le_bytes());
    out.extend_from_slice(&(e.context.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.context);
    out
}

/// Decodes a WAL record payload as an entry; what is wrong if it is not one.
pub fn decode_entry(b: &[u8]) -> Result<Entry, String> {
    if b.len() < ENTRY_HEADER_BYTES {
        return Err(format!("entry record of {} bytes is too short", b.len()));
    }
    if !(1..=ENTRY_VERSION).contains(&b[0]) {
        return Err(format!(
            "entry record version {} (this build reads 1 to {ENTRY_VERSION})",
            b[0]
        ));
    }
    let entry_type = match b[1] {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        t => return Err(format!("unknown entry type {t}")),
    };
    let context_len = le_u32(b, 18) as usize;
    let rest = &b[ENTRY_HEADER_BYTES..];
    if context_len > rest.len() {
        return Err(format!(
            "entry context of {context_len} bytes runs past the record ({} left)",
            rest.len()
        ));
    }
    let mut e = Entry::default();
    e.set_entry_type(entry_type);
    e.term = le_u64(b, 2);
    e.index = le_u64(b, 10);
    e.context = rest[..context_len].to_vec().into();
    e.data = rest[context_len..].to_vec().into();
    Ok(e)
}

/// The little-endian u32 at `at` (the caller checked the length).
pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// The little-endian u64 at `at` (the caller checked the length).
pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PersistedState {
    pub(super) hard: HardState,
    pub(super) compacted_index: u64,
    pub(super) compacted_term: u64,
    pub(super) voters: Vec<u64>,
}

impl PersistedState {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for x in [
            self.hard.term,
            self.hard.vote,
            self.hard.commit,
            self.compacted_index,
            self.compacted_term,
        ] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        body.extend_from_slice(&(self.voters.len() as u32).to_le_bytes());
        for v in &self.voters {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = STATE_MAGIC.to_vec();
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub(super) fn decode(b: &[u8]) -> Result<PersistedState, String> {
        let header = STATE_MAGIC.len() + 8;
        if b.len() < header + 5 * 8 + 4 || &b[..8] != STATE_MAGIC {
            return Err("not a Raft state file (bad magic or too short)".into());
        }
        let u32_at = |at: usize| le_u32(b, at);
        let u64_at = |at: usize| le_u64(b, at);
        let version = u32_at(8);
        if version != STATE_VERSION {
            return Err(format!("state file version {version} (expected 1)"));
        }
        if crc32c::crc32c(&b[header..]) != u32_at(12) {
            return Err("state file checksum mismatch".into());
        }
        let hard = HardState {
            term: u64_at(header),
            vote: u64_at(header + 8),
            commit: u64_at(header + 16),
            ..HardState::default()
        };
        let voters_at = header + 5 * 8 + 4;
        let count = u32_at(header + 5 * 8) as usize;
        if count > VOTERS_MAX || b.len() != voters_at + count * 8 {
            return Err(format!(
                "state file lists {count} voters in {} bytes",
                b.len()
            ));
        }
        Ok(PersistedState {
            hard,
            compacted_index: u64_at(header + 24),
            compacted_term: u64_at(header + 32),
            voters: (0..count).map(|i| u64_at(voters_at + i * 8)).collect(),
        })
    }
}

/// Reads the snapshot marker: (index, term), or None if there is none.
pub(super) fn read_marker(dir: &Path) -> Result<Option<(u64, u64)>, LogError> {
    let path = dir.join(SNAPSHOT_MARKER_FILE);
    let b = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LogError::Io {
                op: "read",
                path,
                source,
            });
        }
    };
    if b.len() != 8 + 16 + 4
        || &b[..8] != MARKER_MAGIC
        || crc32c::crc32c(&b[..24]) != le_u32(&b, 24)
    {
        // Written and synced before anything else changed: damage means the disk lies.
        return Err(LogError::Corruption {
            path,
            what: "damaged snapshot marker".into(),
        });
    }
    Ok(Some((le_u64(&b, 8), le_u64(&b, 16))))
}

pub(super) fn write_marker(dir: &Path, index: u64, term: u64) -> Result<(), LogError> {
    let mut b = MARKER_MAGIC.to_vec();
    b.extend_from_slice(&index.to_le_bytes());
    b.extend_from_slice(&term.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    replace_file(dir, SNAPSHOT_MARKER_FILE, &b)
}

pub(super) fn remove_marker(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(SNAPSHOT_MARKER_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LogError::Io {
                op: "remove",
                path,
                source,
            });
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| LogError::Io {
            op: "sync directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// Replaces `dir/name` with `bytes` atomically and durably (temporary file, fsync, rename,
/// fsync of the directory). Blocking: run on the blocking thread (`RaftLog::file_op`) but
/// at open.
pub(super) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| LogError::Io { op, path, source }
    };
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))?;
    Ok(())
}
