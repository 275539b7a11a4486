//! File access for SSTables and the manifest: O_DIRECT files through glommio (io_uring).
//!
//! This is a deliberately small surface (create, open, aligned write, aligned read into a
//! caller's buffer, fdatasync, directory fsync, rename, remove) shaped like the engine's I/O
//! seam, so that fault injection can be attached in one place. Every error is an
//! [`Error::Io`] naming the operation and the file.
//!
//! Reads and writes must be aligned to [`PAGE_SIZE_BYTES`] in position and length (O_DIRECT).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::error::{Error, Result};

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

/// Converts a glommio error, keeping the OS error code (glommio's own conversion drops it).
fn os_error<T>(e: glommio::GlommioError<T>) -> std::io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Opens and closes the non-empty file `path` with O_DIRECT before any other DMA file.
///
/// glommio pitfall: the first DMA file opened on a device makes glommio probe whether the
/// device supports polled I/O by reading offset 0; if that file is empty the probe wrongly
/// succeeds and every later DMA read on the device fails with EOPNOTSUPP.
#[cfg(test)]
pub(crate) async fn probe(path: &Path) -> Result<()> {
    let f = DmaFile::open(path)
        .await
        .map_err(|e| Error::io("open (O_DIRECT probe)", path, os_error(e)))?;
    f.close()
        .await
        .map_err(|e| Error::io("close", path, os_error(e)))
}

/// One open O_DIRECT file. Cheap to clone (an `Rc`).
#[derive(Debug, Clone)]
pub(crate) struct DiskFile {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dma: DmaFile,
    path: PathBuf,
}

impl DiskFile {
    /// Creates `path` (failing if it exists) for reading and writing.
    pub(crate) async fn create_new(path: &Path) -> Result<DiskFile> {
        let dma = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(|e| Error::io("create", path, os_error(e)))?;
        Ok(Self::wrap(dma, path))
    }

    /// Creates or truncates `path` for reading and writing.
    pub(crate) async fn create_truncate(path: &Path) -> Result<DiskFile> {
        let dma = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await
            .map_err(|e| Error::io("create", path, os_error(e)))?;
        Ok(Self::wrap(dma, path))
    }

    /// Opens an existing `path` for reading only.
    pub(crate) async fn open_read(path: &Path) -> Result<DiskFile> {
        let dma = OpenOptions::new()
            .read(true)
            .dma_open(path)
            .await
            .map_err(|e| Error::io("open", path, os_error(e)))?;
        Ok(Self::wrap(dma, path))
    }

    /// Opens an existing `path` for reading and writing.
    pub(crate) async fn open_rw(path: &Path) -> Result<DiskFile> {
        let dma = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(|e| Error::io("open", path, os_error(e)))?;
        Ok(Self::wrap(dma, path))
    }

    fn wrap(dma: DmaFile, path: &Path) -> DiskFile {
        DiskFile {
            inner: Rc::new(Inner {
                dma,
                path: path.to_path_buf(),
            }),
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// An aligned buffer for [`DiskFile::write_at`] (not zeroed).
    pub(crate) fn alloc(&self, len: usize) -> DmaBuffer {
        self.inner.dma.alloc_dma_buffer(len)
    }

    /// Writes all of `buf` at `pos` (both page-aligned); anything less is an error.
    pub(crate) async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<()> {
        debug_assert_eq!(pos % PAGE_SIZE_BYTES as u64, 0);
        debug_assert_eq!(buf.len() % PAGE_SIZE_BYTES, 0);
        let len = buf.len();
        let written = self
            .inner
            .dma
            .write_at(buf, pos)
            .await
            .map_err(|e| Error::io("write", self.path(), os_error(e)))?;
        if written != len {
            return Err(Error::io(
                "write",
                self.path(),
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {written} of {len} bytes at offset {pos}"),
                ),
            ));
        }
        Ok(())
    }

    /// Reads `out.len()` bytes at `pos` (both page-aligned) into `out`. Returns how many bytes
    /// the file had (fewer than asked at the end of the file; the rest of `out` is zeroed).
    pub(crate) async fn read_into(&self, pos: u64, out: &mut [u8]) -> Result<usize> {
        debug_assert_eq!(pos % PAGE_SIZE_BYTES as u64, 0);
        debug_assert_eq!(out.len() % PAGE_SIZE_BYTES, 0);
        let r = self
            .inner
            .dma
            .read_at_aligned(pos, out.len())
            .await
            .map_err(|e| Error::io("read", self.path(), os_error(e)))?;
        let n = r.len().min(out.len());
        out[..n].copy_from_slice(&r[..n]);
        out[n..].fill(0);
        Ok(n)
    }

    /// `fdatasync`.
    pub(crate) async fn fdatasync(&self) -> Result<()> {
        self.inner
            .dma
            .fdatasync()
            .await
            .map_err(|e| Error::io("fdatasync", self.path(), os_error(e)))
    }

    /// The file's size in bytes.
    pub(crate) async fn size(&self) -> Result<u64> {
        self.inner
            .dma
            .file_size()
            .await
            .map_err(|e| Error::io("stat", self.path(), os_error(e)))
    }

    /// Cuts the file to `len` bytes.
    pub(crate) async fn truncate(&self, len: u64) -> Result<()> {
        self.inner
            .dma
            .truncate(len)
            .await
            .map_err(|e| Error::io("truncate", self.path(), os_error(e)))
    }

    /// Closes the file if this is the last handle (otherwise the last handle's drop closes it).
    pub(crate) async fn close(self) -> Result<()> {
        match Rc::try_unwrap(self.inner) {
            Ok(inner) => inner
                .dma
                .close()
                .await
                .map_err(|e| Error::io("close", &inner.path, os_error(e))),
            Err(_) => Ok(()),
        }
    }
}

/// `fsync`s a directory, making the creation, removal or renaming of its entries durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| Error::io("open directory", dir, os_error(e)))?;
    d.sync()
        .await
        .map_err(|e| Error::io("fsync directory", dir, os_error(e)))?;
    d.close()
        .await
        .map_err(|e| Error::io("close directory", dir, os_error(e)))
}

/// Renames a file (the caller syncs the directory).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
}

/// Removes a file (the caller syncs the directory when it matters).
pub(crate) fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e))
}
