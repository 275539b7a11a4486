//! The I/O seam: every file operation of the engine goes through `Io` and `File`, thin
//! wrappers over glommio's DMA (O_DIRECT, io_uring) files. Production code pays one `Option`
//! check per call; tests attach a [`FaultInjector`] that makes chosen operations fail (EIO,
//! ENOSPC, short writes, torn writes) or simulates a crash and a power loss, so fault tests need
//! no broken disk.
//!
//! Errors come back as [`Error::Io`] naming the operation and the file.
//!
//! glommio pitfall handled here: the first DMA file opened on a device makes glommio probe
//! whether the device supports polled I/O by reading offset 0; if that file is empty the probe
//! wrongly succeeds and every later DMA read on the device fails with EOPNOTSUPP. `Io::probe`
//! opens a non-empty file first.

pub mod buffered;
mod fault;
mod lock;
mod unlink;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::error::{Error, Result};

pub use fault::{CrashPoint, Fault, FaultInjector, FaultOp};
pub(crate) use lock::DirLock;

/// Converts a glommio error, keeping the OS error code (glommio's own conversion drops it).
fn os_error<T>(e: glommio::GlommioError<T>) -> std::io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Entry point of the seam; cheap to clone.
#[derive(Clone, Default, Debug)]
pub(crate) struct Io {
    faults: Option<FaultInjector>,
    unlinks: Rc<unlink::Unlinks>,
}

impl Io {
    pub(crate) fn new(faults: Option<FaultInjector>) -> Self {
        Io {
            faults,
            unlinks: Rc::default(),
        }
    }

    fn check(&self, op: FaultOp, path: &Path) -> Result<()> {
        match &self.faults {
            Some(f) => f.before(op, path),
            None => Ok(()),
        }
    }

    /// Opens and closes the non-empty file `path` with O_DIRECT (see the module doc). Call it
    /// before any other DMA file is opened.
    pub(crate) async fn probe(&self, path: &Path) -> Result<()> {
        let f = DmaFile::open(path)
            .await
            .map_err(|e| Error::io("open (O_DIRECT probe)", path, os_error(e)))?;
        f.close()
            .await
            .map_err(|e| Error::io("close", path, os_error(e)))
    }

    /// Creates (or truncates) `path` for reading and writing with O_DIRECT.
    pub(crate) async fn create(&self, path: &Path) -> Result<File> {
        self.check(FaultOp::Create, path)?;
        if let Some(f) = &self.faults {
            f.creating(path);
        }
        let _running = self.faults.as_ref().map(FaultInjector::in_flight);
        let dma = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await
            .map_err(|e| Error::io("create", path, os_error(e)))?;
        Ok(self.file(dma, path))
    }

    /// Opens an existing `path` for reading and writing with O_DIRECT.
    pub(crate) async fn open(&self, path: &Path) -> Result<File> {
        self.check(FaultOp::Open, path)?;
        let _running = self.faults.as_ref().map(FaultInjector::in_flight);
        let dma = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(|e| Error::io("open", path, os_error(e)))?;
        Ok(self.file(dma, path))
    }

    fn file(&self, dma: DmaFile, path: &Path) -> File {
        File {
            dma,
            dsync: RefCell::new(None),
            path: path.to_path_buf(),
            io: self.clone(),
        }
    }

    /// `fsync`s a directory, making the creation, removal or renaming of its entries durable.
    pub(crate) async fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.check(FaultOp::SyncDir, dir)?;
        let d = glommio::io::Directory::open(dir)
            .await
            .map_err(|e| Error::io("open directory", dir, os_error(e)))?;
        d.sync()
            .await
            .map_err(|e| Error::io("fsync directory", dir, os_error(e)))?;
        d.close()
            .await
            .map_err(|e| Error::io("close directory", dir, os_error(e)))?;
        if let Some(f) = &self.faults {
            f.dir_synced(dir);
        }
        Ok(())
    }

    /// The engine reached `point` of its background work (a test may crash it there).
    pub(crate) fn crash_point(&self, point: CrashPoint) -> Result<()> {
        match &self.faults {
            Some(f) => f.reached(point),
            None => Ok(()),
        }
    }

    /// Renames a file (the caller syncs the directory).
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.check(FaultOp::Rename, from)?;
        if let Some(f) = &self.faults {
            f.renaming(from, to);
        }
        std::fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
        if let Some(f) = &self.faults {
            f.forget(from);
        }
        Ok(())
    }

    /// Removes a file on the executor's blocking thread (the caller syncs the directory), so
    /// the shard serves meanwhile: the last link's removal is where the file system frees the
    /// file's blocks (about 3 ms for a full 16 MiB WAL segment on ext4).
    pub(crate) async fn remove_off_thread(&self, path: &Path) -> Result<()> {
        self.check(FaultOp::Remove, path)?;
        // A crash test's `settle` waits for it.
        let _running = self.faults.as_ref().map(FaultInjector::in_flight);
        let owned = path.to_path_buf();
        blocking(move || std::fs::remove_file(owned))
            .await
            .map_err(|e| Error::io("remove", path, e))?;
        if let Some(f) = &self.faults {
            f.forget(path);
        }
        Ok(())
    }

    /// Removes a file (the caller syncs the directory).
    pub(crate) fn remove(&self, path: &Path) -> Result<()> {
        self.check(FaultOp::Remove, path)?;
        std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
        if let Some(f) = &self.faults {
            f.forget(path);
        }
        Ok(())
    }
}

/// Runs `f`, blocking file-system calls io_uring does not offer here (a directory made or
/// removed, hard links, renames, a small file read) or a large free, on the executor's
/// blocking thread, so the shard's thread serves requests meanwhile. That one thread runs
/// calls in order and, in the server, on the shard's own CPU (glommio places it with its
/// executor): it overlaps waits on the disk, and splits CPU work with the shard instead of
/// stopping it. One call should carry a batch: each costs a hand-off there and back. `f` must
/// not panic: glommio's thread would die with it and every later call would wait forever.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// One open DMA file. Writes must be whole, aligned blocks from [`File::alloc`].
#[derive(Debug)]
pub(crate) struct File {
    dma: DmaFile,
    /// A second descriptor of the same file opened with `O_DSYNC`, opened on first use by
    /// [`File::write_durable_at`].
    dsync: RefCell<Option<Rc<DmaFile>>>,
    path: PathBuf,
    io: Io,
}

impl File {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// An aligned buffer for [`File::write_at`] (not zeroed).
    pub(crate) fn alloc(&self, len: usize) -> DmaBuffer {
        self.dma.alloc_dma_buffer(len)
    }

    /// Writes all of `buf` at `pos` (both aligned); anything less is an error.
    pub(crate) async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<()> {
        let len = buf.len();
        let written = match &self.io.faults {
            None => self.raw_write(buf, pos).await?,
            Some(f) => f.write(self, buf, pos).await?,
        };
        self.whole("write", written, len, pos)
    }

    /// A short write is an error naming how much of what landed where.
    fn whole(&self, op: &'static str, written: usize, len: usize, pos: u64) -> Result<()> {
        if written == len {
            return Ok(());
        }
        Err(Error::io(
            op,
            &self.path,
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at offset {pos}"),
            ),
        ))
    }

    async fn raw_write(&self, buf: DmaBuffer, pos: u64) -> Result<usize> {
        self.dma
            .write_at(buf, pos)
            .await
            .map_err(|e| Error::io("write", &self.path, os_error(e)))
    }

    /// Writes `buf` at `pos` and makes it durable, as `write_at` then `fdatasync` would, but
    /// as one operation: the write goes through an `O_DSYNC` descriptor of the same file, so
    /// the kernel issues the device cache flush as soon as the write completes, without a
    /// second trip through the ring and the executor. Used by the WAL in `sync` mode, where a
    /// lone writer's commit latency is exactly this. With a fault injector attached it is
    /// `write_at` + `fdatasync`, so every fault and crash point of the two still applies.
    pub(crate) async fn write_durable_at(&self, buf: DmaBuffer, pos: u64) -> Result<()> {
        if self.io.faults.is_some() {
            self.write_at(buf, pos).await?;
            return self.fdatasync().await;
        }
        let twin = self.dsync_twin().await?;
        let len = buf.len();
        let written = twin
            .write_at(buf, pos)
            .await
            .map_err(|e| Error::io("write (O_DSYNC)", &self.path, os_error(e)))?;
        self.whole("write (O_DSYNC)", written, len, pos)
    }

    /// Opens the `O_DSYNC` descriptor of [`File::write_durable_at`] now, unless it is open
    /// (or unused, with faults attached). Its first use opens it otherwise, so two first
    /// writes at once would open two: callers that overlap writes call this first.
    pub(crate) async fn open_dsync(&self) -> Result<()> {
        if self.io.faults.is_none() {
            self.dsync_twin().await?;
        }
        Ok(())
    }

    async fn dsync_twin(&self) -> Result<Rc<DmaFile>> {
        if let Some(t) = self.dsync.borrow().clone() {
            return Ok(t);
        }
        let t = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .dma_open(&self.path)
            .await
            .map_err(|e| Error::io("open (O_DSYNC)", &self.path, os_error(e)))?;
        let t = Rc::new(t);
        *self.dsync.borrow_mut() = Some(t.clone());
        Ok(t)
    }

    /// Reads up to `len` bytes at `pos` (any alignment); fewer at end of file.
    pub(crate) async fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        self.io.check(FaultOp::Read, &self.path)?;
        let r = self
            .dma
            .read_at(pos, len)
            .await
            .map_err(|e| Error::io("read", &self.path, os_error(e)))?;
        Ok(r.to_vec())
    }

    /// Reads `out.len()` bytes at `pos` (both aligned) into `out`, without an intermediate
    /// copy beyond glommio's read buffer. Returns how many bytes the file had there (fewer at
    /// its end; the rest of `out` is zeroed).
    pub(crate) async fn read_into(&self, pos: u64, out: &mut [u8]) -> Result<usize> {
        self.io.check(FaultOp::Read, &self.path)?;
        let r = self
            .dma
            .read_at_aligned(pos, out.len())
            .await
            .map_err(|e| Error::io("read", &self.path, os_error(e)))?;
        let n = r.len().min(out.len());
        out[..n].copy_from_slice(&r[..n]);
        out[n..].fill(0);
        Ok(n)
    }

    /// Cuts the file to `len` bytes (the caller syncs).
    pub(crate) async fn truncate(&self, len: u64) -> Result<()> {
        self.io.check(FaultOp::Allocate, &self.path)?;
        self.dma
            .truncate(len)
            .await
            .map_err(|e| Error::io("truncate", &self.path, os_error(e)))
    }

    /// `fdatasync`.
    pub(crate) async fn fdatasync(&self) -> Result<()> {
        self.io.check(FaultOp::Sync, &self.path)?;
        let covered = self.io.faults.as_ref().map(|f| f.sync_starting(&self.path));
        self.dma
            .fdatasync()
            .await
            .map_err(|e| Error::io("fdatasync", &self.path, os_error(e)))?;
        if let (Some(f), Some(covered)) = (&self.io.faults, covered) {
            f.synced(&self.path, &covered);
        }
        Ok(())
    }

    /// Allocates `size` bytes of disk for the file (the file's size becomes `size`; new bytes
    /// read as zeros).
    pub(crate) async fn allocate(&self, size: u64) -> Result<()> {
        self.io.check(FaultOp::Allocate, &self.path)?;
        self.dma
            .pre_allocate(size, false)
            .await
            .map_err(|e| Error::io("fallocate", &self.path, os_error(e)))
    }

    /// The file's size in bytes.
    pub(crate) async fn size(&self) -> Result<u64> {
        self.dma
            .file_size()
            .await
            .map_err(|e| Error::io("stat", &self.path, os_error(e)))
    }

    /// Closes the file.
    pub(crate) async fn close(self) -> Result<()> {
        if let Some(twin) = self.dsync.take().and_then(|t| Rc::try_unwrap(t).ok()) {
            twin.close()
                .await
                .map_err(|e| Error::io("close (O_DSYNC)", &self.path, os_error(e)))?;
        }
        self.dma
            .close()
            .await
            .map_err(|e| Error::io("close", &self.path, os_error(e)))
    }
}
