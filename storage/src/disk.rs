//! Page-aligned file access for SSTables and the manifest, on top of the engine's I/O seam
//! ([`crate::io`]): every operation goes through it, so fault injection and simulated crashes
//! cover flushes, compactions and manifest edits like they cover the WAL.
//!
//! Reads and writes must be aligned to [`PAGE_SIZE_BYTES`] in position and length (O_DIRECT).

use std::path::Path;
use std::rc::Rc;

use glommio::io::DmaBuffer;

use crate::error::Result;
use crate::io::{File, Io};

/// Alignment of every SSTable and manifest read and write (O_DIRECT).
pub const PAGE_SIZE_BYTES: usize = 4096;

/// Rounds `n` up to a multiple of [`PAGE_SIZE_BYTES`].
pub(crate) const fn align_up(n: u64) -> u64 {
    n.div_ceil(PAGE_SIZE_BYTES as u64) * PAGE_SIZE_BYTES as u64
}

/// Rounds `n` down to a multiple of [`PAGE_SIZE_BYTES`].
pub(crate) const fn align_down(n: u64) -> u64 {
    n / PAGE_SIZE_BYTES as u64 * PAGE_SIZE_BYTES as u64
}

/// One open O_DIRECT file, shared by its readers. Cheap to clone (an `Rc`).
#[derive(Debug, Clone)]
pub(crate) struct DiskFile {
    inner: Rc<File>,
}

impl DiskFile {
    /// Creates (or truncates) `path` for reading and writing.
    pub(crate) async fn create(io: &Io, path: &Path) -> Result<DiskFile> {
        Ok(DiskFile {
            inner: Rc::new(io.create(path).await?),
        })
    }

    /// Opens an existing `path`.
    pub(crate) async fn open(io: &Io, path: &Path) -> Result<DiskFile> {
        Ok(DiskFile {
            inner: Rc::new(io.open(path).await?),
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        self.inner.path()
    }

    /// Another handle to the open file (it closes when the last one drops).
    pub(crate) fn shared(&self) -> Rc<File> {
        Rc::clone(&self.inner)
    }

    /// An aligned buffer for [`DiskFile::write_at`] (not zeroed).
    pub(crate) fn alloc(&self, len: usize) -> DmaBuffer {
        self.inner.alloc(len)
    }

    /// Writes all of `buf` at `pos` (both page-aligned).
    pub(crate) async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<()> {
        debug_assert_eq!(pos % PAGE_SIZE_BYTES as u64, 0);
        debug_assert_eq!(buf.len() % PAGE_SIZE_BYTES, 0);
        self.inner.write_at(buf, pos).await
    }

    /// Reads `out.len()` bytes at `pos` (both page-aligned) into `out`; returns how many the
    /// file had (the rest of `out` is zeroed).
    pub(crate) async fn read_into(&self, pos: u64, out: &mut [u8]) -> Result<usize> {
        debug_assert_eq!(pos % PAGE_SIZE_BYTES as u64, 0);
        debug_assert_eq!(out.len() % PAGE_SIZE_BYTES, 0);
        self.inner.read_into(pos, out).await
    }

    /// `fdatasync`.
    pub(crate) async fn fdatasync(&self) -> Result<()> {
        self.inner.fdatasync().await
    }

    /// The file's size in bytes.
    pub(crate) async fn size(&self) -> Result<u64> {
        self.inner.size().await
    }

    /// Cuts the file to `len` bytes.
    pub(crate) async fn truncate(&self, len: u64) -> Result<()> {
        self.inner.truncate(len).await
    }

    /// Closes the file if this is the last handle (otherwise the last handle's drop closes it).
    pub(crate) async fn close(self) -> Result<()> {
        match Rc::try_unwrap(self.inner) {
            Ok(f) => f.close().await,
            Err(_) => Ok(()),
        }
    }
}
