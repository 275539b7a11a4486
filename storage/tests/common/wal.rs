//! WAL test helpers: options, payloads, opening with replay, appending, reading segments.

use std::path::{Path, PathBuf};

use corekv_storage::wal::{RecoveryReport, Wal, WalOptions};
use corekv_storage::{Durability, WalRecoveryMode};

pub fn opts(segment_kib: usize) -> WalOptions {
    WalOptions {
        durability: Durability::Sync,
        segment_size_bytes: segment_kib << 10,
        write_bytes_max: 64 << 10,
        recovery_mode: WalRecoveryMode::TolerateTornTail,
        pending_bytes_max: 1 << 20,
        dsync_writes: true,
    }
}

/// The payload of record `i`: its index and a length that varies, so frames straddle blocks.
pub fn payload(i: u64) -> Vec<u8> {
    let len = 1 + (i as usize * 37) % 300;
    let mut p = i.to_le_bytes().to_vec();
    p.resize(len.max(8), (i % 251) as u8);
    p
}

pub async fn open(
    dir: &Path,
    o: WalOptions,
) -> corekv_storage::Result<(Wal, Vec<(u64, Vec<u8>)>, RecoveryReport)> {
    let mut got = Vec::new();
    let (wal, report) = Wal::open(dir, o, None, |r| {
        got.push((r.index, r.payload.to_vec()));
        Ok(())
    })
    .await?;
    Ok((wal, got, report))
}

pub async fn append_synced(wal: &Wal, range: std::ops::Range<u64>) {
    for i in range {
        let idx = wal.append(payload(i)).unwrap();
        assert_eq!(idx, i);
        wal.wait_durable(idx).await.unwrap();
    }
}

/// Appends records without waiting for each (they group-commit), then waits for the last.
pub async fn append_all(wal: &Wal, range: std::ops::Range<u64>) {
    let mut last = 0;
    for i in range {
        last = wal.append(payload(i)).unwrap();
        assert_eq!(last, i);
    }
    wal.wait_durable(last).await.unwrap();
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

pub fn first_index_of(segment: &Path) -> u64 {
    segment.file_name().unwrap().to_str().unwrap()[4..24]
        .parse()
        .unwrap()
}

pub fn assert_records(got: &[(u64, Vec<u8>)], range: std::ops::Range<u64>) {
    let want: Vec<_> = range.map(|i| (i, payload(i))).collect();
    assert_eq!(got.len(), want.len(), "record count");
    assert!(got == want.as_slice(), "records differ");
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites the format version in a segment image's header (and its checksum).
pub fn with_format_version(segment: &[u8], version: u32) -> Vec<u8> {
    let mut d = segment.to_vec();
    d[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&d[0..32]);
    d[32..36].copy_from_slice(&crc.to_le_bytes());
    d
}

/// A segment image written by this build (format 3, one write at a time so without gaps) as
/// an older build would have written it: header `version`, no salt, every record's checksum
/// unsalted.
pub fn as_old_format(segment: &[u8], version: u32) -> Vec<u8> {
    let mut d = with_format_version(segment, version);
    d[36..48].fill(0);
    let mut pos = 4096;
    while pos + 24 <= d.len() {
        let len = u32::from_le_bytes(d[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&d[pos..pos + 4]),
            &d[pos + 8..pos + 24 + len],
        );
        d[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos += (24 + len).next_multiple_of(8);
    }
    d
}
