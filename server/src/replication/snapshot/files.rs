//! File helpers of snapshot streams: whole reads and writes through glommio's buffered files,
//! and the free space a received chunk must leave.

use std::path::Path;

use glommio::io::BufferedFile;

/// `len` bytes of `file` from `offset`.
pub(super) async fn read_exact_at(
    file: &BufferedFile,
    offset: u64,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let got = file
            .read_at(offset + data.len() as u64, len - data.len())
            .await?;
        if got.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ends at {}", offset + data.len() as u64),
            ));
        }
        data.extend_from_slice(&got);
    }
    Ok(data)
}

/// Writes all of `data` at `offset` of `file`. glommio takes the buffer and returns only a
/// count, so a short write (rare for buffered writes to a regular file: a full disk) fails the
/// stream, which the leader sends again.
pub(super) async fn write_all_at(
    file: &BufferedFile,
    data: Vec<u8>,
    offset: u64,
) -> std::io::Result<()> {
    let len = data.len();
    let n = file.write_at(data, offset).await?;
    if n != len {
        return Err(std::io::Error::other(format!(
            "a short write at {offset}: {n} of {len} bytes"
        )));
    }
    Ok(())
}

/// Bytes an unprivileged writer may still write on the filesystem holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", dir.display()))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; `stat` is valid for writes of
    // one `statvfs`, which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
