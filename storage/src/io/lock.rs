//! The directory lock: an exclusive `flock` on `DIR/LOCK`, so two engines never share a
//! directory. The lock file is 4 KiB and non-empty, which also makes it the safe first file to
//! open with O_DIRECT (see [`super::Io::probe`]).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Held while the directory is in use; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir`, creating the lock file if needed.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked { path });
            }
            return Err(Error::io("flock", &path, err));
        }
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat lock file", &path, e))?
            .len();
        if len < 4096 {
            let mut block = vec![0u8; 4096];
            let text = b"corekv-storage directory lock (format 1)\n";
            block[..text.len()].copy_from_slice(text);
            file.write_all(&block)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("write lock file", &path, e))?;
        }
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
