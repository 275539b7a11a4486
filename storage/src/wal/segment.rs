//! WAL segment files: naming, the header block, creation.
//!
//! A segment is `wal-<first index, 20 decimal digits>.log`, allocated to its full size
//! (`Options::wal_segment_size_bytes`, or larger for a record that needs it) so appends never
//! change the file size. In `sync` mode it is also **filled with zeros by real writes** before
//! the first record goes in, so appends never convert an unwritten extent and an `fdatasync`
//! needs no journal commit: on this project's ext4 test machine, 16 writers group-committing
//! into fresh `fallocate`d blocks paid ≈2.4 ms per write+fdatasync, against ≈0.17 ms into
//! zero-filled blocks. Other modes sync rarely and skip the extra writes.
//!
//! Zero-filling 64 MiB takes a while, so it is done ahead of time: a *spare* segment
//! ([`SPARE_FILE`]) is prepared in the background and, at rollover, [`install`]ed under its
//! real name (header, sync, rename, directory sync).
//!
//! ## Header block (the first 4096 bytes, little-endian)
//!
//! ```text
//! 0              8                12               16              24                  32       36       44       48
//! +--------------+----------------+----------------+---------------+-------------------+--------+--------+--------+-------+
//! | magic        | format_version | block_size     | first_index   | segment_size      | crc32c | salt   | crc32c | zeros |
//! | "corekvWL"   | u32 = 1, 2, 3  | u32 = 4096     | u64           | u64 (bytes)       | of 0..32 | u64  | of salt| to 4096 |
//! +--------------+----------------+----------------+---------------+-------------------+--------+--------+--------+-------+
//! ```
//!
//! Records (see [`super::record`]) follow from byte 4096. The salt and its checksum are in
//! version 3 only (zeros before).
//!
//! Format versions: in version 1 records follow one another with no gap. Version 2 also
//! allows zeros from the end of a record to the next 4 KiB boundary when the next record
//! starts there: the second of two overlapping writes (see `writer.rs`) starts on a fresh
//! block, so the two never share one. Version 3 (written by this code in every mode) allows
//! the same gaps and seeds every record's checksum with the segment's random salt. Without
//! the salt, recovery after a torn write could take a frame inside an unacknowledged record's
//! payload (client data) for a record: for the next one, at a block boundary after the
//! record's first sectors were lost, or for a later one that "proves" the torn record durable
//! and refuses the open. A client cannot forge a frame with a salt it never sees. Segments of
//! versions 1 and 2 are read with their own rules and get no more records: after an upgrade
//! the first append starts a new segment. Builds before version 3 refuse a version 3 segment.

use std::path::{Path, PathBuf};

use super::reader::SegmentFormat;
use crate::error::{Error, Result};
use crate::io::{File, Io};
use crate::options::WAL_BLOCK_SIZE_BYTES;

/// Identifies a WAL segment.
pub(crate) const MAGIC: &[u8; 8] = b"corekvWL";
/// The on-disk format this code writes (it reads every format from [`FORMAT_VERSION_MIN`] to
/// this one).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this code reads.
pub const FORMAT_VERSION_MIN: u32 = 1;
/// Where the first record starts.
pub(crate) const HEADER_BLOCK_BYTES: u64 = WAL_BLOCK_SIZE_BYTES as u64;

/// The file name of the segment whose first record has index `first_index`.
pub(crate) fn file_name(first_index: u64) -> String {
    format!("wal-{first_index:020}.log")
}

/// The first index encoded in a segment file name, or None for other files.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header block's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) first_index: u64,
    pub(crate) segment_size_bytes: u64,
    /// [`FORMAT_VERSION`] when written by this code; older when read from an older segment.
    pub(crate) format_version: u32,
    /// Seeds every record's checksum (version 3; 0 in older ones).
    pub(crate) salt: u64,
}

impl Header {
    /// The header of a new segment: the newest version, with a fresh random salt.
    pub(crate) fn new(first_index: u64, segment_size_bytes: u64) -> Header {
        Header {
            first_index,
            segment_size_bytes,
            format_version: FORMAT_VERSION,
            salt: random_salt(first_index),
        }
    }

    /// What the segment's format allows between two records.
    pub(crate) fn format(&self) -> SegmentFormat {
        match self.format_version {
            1 => SegmentFormat::V1,
            2 => SegmentFormat::V2,
            _ => SegmentFormat::V3(self.salt),
        }
    }

    /// The 4096-byte header block.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; WAL_BLOCK_SIZE_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[12..16].copy_from_slice(&(WAL_BLOCK_SIZE_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        b[24..32].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        if self.format_version >= 3 {
            b[36..44].copy_from_slice(&self.salt.to_le_bytes());
            let crc = crc32c::crc32c(&b[36..44]);
            b[44..48].copy_from_slice(&crc.to_le_bytes());
        }
        b
    }

    /// Parses a header block; the error text says what is wrong.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Header, String> {
        if b.len() < 36 {
            return Err(format!("header truncated: {} bytes", b.len()));
        }
        if b[0..36].iter().all(|&x| x == 0) {
            return Err("header is all zeros (segment creation never completed)".into());
        }
        if &b[0..8] != MAGIC {
            return Err("not a corekv WAL segment (bad magic)".into());
        }
        let crc = u32::from_le_bytes([b[32], b[33], b[34], b[35]]);
        if crc32c::crc32c(&b[0..32]) != crc {
            return Err("header checksum mismatch".into());
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "WAL format version {version} is not supported (this build reads versions \
                 {FORMAT_VERSION_MIN} to {FORMAT_VERSION})"
            ));
        }
        let block = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if block as usize != WAL_BLOCK_SIZE_BYTES {
            return Err(format!("block size {block} is not {WAL_BLOCK_SIZE_BYTES}"));
        }
        let mut u = [0u8; 8];
        u.copy_from_slice(&b[16..24]);
        let first_index = u64::from_le_bytes(u);
        u.copy_from_slice(&b[24..32]);
        let segment_size_bytes = u64::from_le_bytes(u);
        let mut salt = 0;
        if version >= 3 {
            if b.len() < 48 {
                return Err(format!("header truncated: {} bytes", b.len()));
            }
            let crc = u32::from_le_bytes([b[44], b[45], b[46], b[47]]);
            if crc32c::crc32c(&b[36..44]) != crc {
                return Err("header salt checksum mismatch".into());
            }
            u.copy_from_slice(&b[36..44]);
            salt = u64::from_le_bytes(u);
        }
        Ok(Header {
            first_index,
            segment_size_bytes,
            format_version: version,
            salt,
        })
    }
}

/// Name of the spare segment being prepared (removed at open, like every `*.log.tmp`).
pub const SPARE_FILE: &str = "wal-spare.log.tmp";

/// Bytes per zero-fill write.
const ZERO_CHUNK_BYTES: u64 = 1 << 20;

/// Creates `path` (truncating it), allocates `size_bytes`, writes zeros over all of it if
/// `zero`, and `fdatasync`s. Gives up with `Ok(None)` as soon as `stop()` says so.
async fn create_zeroed(
    io: &Io,
    path: &Path,
    size_bytes: u64,
    zero: bool,
    stop: &dyn Fn() -> bool,
) -> Result<Option<File>> {
    let file = io.create(path).await?;
    file.allocate(size_bytes).await?;
    if zero && !zero_fill(&file, 0, size_bytes, stop).await? {
        file.close().await?;
        return Ok(None);
    }
    file.fdatasync().await?;
    Ok(Some(file))
}

/// Writes zeros over `[from, to)` (block-aligned) in 1 MiB writes; false if `stop()` said so
/// between two writes.
async fn zero_fill(file: &File, from: u64, to: u64, stop: &dyn Fn() -> bool) -> Result<bool> {
    debug_assert!(from % HEADER_BLOCK_BYTES == 0 && to % HEADER_BLOCK_BYTES == 0);
    let mut at = from;
    while at < to {
        if stop() {
            return Ok(false);
        }
        let n = ZERO_CHUNK_BYTES.min(to - at) as usize;
        let mut buf = file.alloc(n);
        buf.as_bytes_mut().fill(0);
        file.write_at(buf, at).await?;
        at += n as u64;
    }
    Ok(true)
}

/// A salt no client can predict: 8 bytes from the kernel's random source (`getrandom(2)`),
/// or, should that fail, std's randomly keyed SipHash of the index.
fn random_salt(first_index: u64) -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a live, writable buffer of exactly `b.len()` bytes for the whole call;
    // getrandom writes at most that many and keeps no pointer to it.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == b.len() as isize {
        return u64::from_le_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(first_index);
    h.finish()
}

async fn write_header(file: &File, header: &Header) -> Result<()> {
    let header = header.encode();
    let mut buf = file.alloc(header.len());
    buf.as_bytes_mut().copy_from_slice(&header);
    file.write_at(buf, 0).await?;
    file.fdatasync().await
}

/// Prepares a spare segment of `size_bytes`: allocated, zero-filled, synced; no header yet.
/// Returns None (leaving a partial file that the next open removes) once `stop()` says so.
pub(crate) async fn prepare_spare(
    io: &Io,
    dir: &Path,
    size_bytes: u64,
    zero: bool,
    stop: &dyn Fn() -> bool,
) -> Result<Option<File>> {
    create_zeroed(io, &dir.join(SPARE_FILE), size_bytes, zero, stop).await
}

/// Turns a prepared spare into the segment `header` describes: header, `fdatasync`, rename,
/// directory `fsync`. Returns the segment, open under its real name.
pub(crate) async fn install(
    io: &Io,
    dir: &Path,
    spare: File,
    header: &Header,
) -> Result<(File, PathBuf)> {
    write_header(&spare, header).await?;
    let from = spare.path().to_path_buf();
    spare.close().await?;
    let path = dir.join(file_name(header.first_index));
    io.rename(&from, &path)?;
    io.sync_dir(dir).await?;
    Ok((io.open(&path).await?, path))
}

/// Creates a segment durably in one go (when no spare of the right size is at hand): file,
/// allocation, zeros, header, `fdatasync`, directory `fsync`. Returns the open file.
pub(crate) async fn create(
    io: &Io,
    dir: &Path,
    header: &Header,
    zero: bool,
) -> Result<(File, PathBuf)> {
    let (first_index, size_bytes) = (header.first_index, header.segment_size_bytes);
    debug_assert!(size_bytes % HEADER_BLOCK_BYTES == 0 && size_bytes > HEADER_BLOCK_BYTES);
    let path = dir.join(file_name(first_index));
    let file = create_zeroed(io, &path, size_bytes, zero, &|| false)
        .await?
        .ok_or_else(|| {
            Error::io(
                "create segment",
                &path,
                std::io::Error::other("interrupted"),
            )
        })?;
    write_header(&file, header).await?;
    io.sync_dir(dir).await?;
    Ok((file, path))
}

/// Suffix of a segment being rewritten (see [`rewrite_prefix`]).
pub(crate) const TMP_SUFFIX: &str = ".log.tmp";

/// Atomically replaces segment `first_index` by a segment holding only `prefix` (its first
/// bytes, header included) followed by zeros: the copy is written to a temporary file,
/// synced, renamed over the segment, and the directory is synced. A crash at any point leaves
/// either the old or the new segment. Returns the new segment, open.
pub(crate) async fn rewrite_prefix(
    io: &Io,
    dir: &Path,
    first_index: u64,
    size_bytes: u64,
    prefix: &[u8],
    zero: bool,
) -> Result<File> {
    const CHUNK_BYTES: usize = 1 << 20;
    let name = file_name(first_index);
    let tmp = dir.join(format!("wal-{first_index:020}{TMP_SUFFIX}"));
    let path = dir.join(&name);
    let file = io.create(&tmp).await?;
    let size_bytes = size_bytes.max(HEADER_BLOCK_BYTES);
    file.allocate(size_bytes).await?;
    let mut at = 0usize;
    while at < prefix.len() {
        let n = CHUNK_BYTES.min(prefix.len() - at);
        let len = n.next_multiple_of(WAL_BLOCK_SIZE_BYTES);
        let mut buf = file.alloc(len);
        let bytes = buf.as_bytes_mut();
        bytes[..n].copy_from_slice(&prefix[at..at + n]);
        bytes[n..].fill(0);
        file.write_at(buf, at as u64).await?;
        at += n;
    }
    let written = (prefix.len() as u64).next_multiple_of(HEADER_BLOCK_BYTES);
    if zero {
        zero_fill(&file, written.min(size_bytes), size_bytes, &|| false).await?;
    }
    file.fdatasync().await?;
    file.close().await?;
    io.rename(&tmp, &path)?;
    io.sync_dir(dir).await?;
    io.open(&path).await
}

/// Reads a whole segment file into memory.
pub(crate) async fn read_all(file: &File) -> Result<Vec<u8>> {
    const CHUNK_BYTES: usize = 1 << 20;
    let size = file.size().await?;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while (data.len() as u64) < size {
        let want = CHUNK_BYTES.min((size - data.len() as u64) as usize);
        let chunk = file.read_at(data.len() as u64, want).await?;
        if chunk.is_empty() {
            break;
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// An error about a segment's header.
pub(crate) fn header_error(path: &Path, detail: String) -> Error {
    Error::corruption(path, 0, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_index() {
        assert_eq!(file_name(1), "wal-00000000000000000001.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "wal-1.log",
            "wal-0000000000000000000x.log",
            "LOCK",
            "wal-00000000000000000001.tmp",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = Header::new(77, 1 << 20);
        assert_eq!(h.format_version, FORMAT_VERSION);
        let b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        assert_eq!(h.format(), SegmentFormat::V3(h.salt));
        for i in 0..48 {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(Header::decode(&d).is_err(), "byte {i}");
        }
        assert!(
            Header::decode(&[0; 4096])
                .unwrap_err()
                .contains("all zeros")
        );
        let with_version = |v: u32| {
            let mut d = b.clone();
            d[8..12].copy_from_slice(&v.to_le_bytes());
            let crc = crc32c::crc32c(&d[0..32]);
            d[32..36].copy_from_slice(&crc.to_le_bytes());
            d
        };
        let v1 = Header::decode(&with_version(1)).unwrap();
        assert_eq!(
            (v1.format_version, v1.salt, v1.format()),
            (1, 0, SegmentFormat::V1)
        );
        let v2 = Header::decode(&with_version(2)).unwrap();
        assert_eq!((v2.salt, v2.format()), (0, SegmentFormat::V2));
        assert!(
            Header::decode(&with_version(FORMAT_VERSION + 1))
                .unwrap_err()
                .contains(&format!("version {}", FORMAT_VERSION + 1))
        );
        assert!(Header::decode(&with_version(0)).is_err());
    }

    #[test]
    fn every_new_segment_is_the_newest_version_with_its_own_salt() {
        let a = Header::new(5, 1 << 20);
        let b = Header::new(5, 1 << 20);
        assert_eq!(a.format_version, FORMAT_VERSION);
        assert_eq!(Header::decode(&a.encode()), Ok(a));
        assert_ne!(a.salt, b.salt, "two segments drew the same salt");
    }
}
