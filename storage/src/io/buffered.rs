//! Whole reads and writes of glommio's buffered files (page cache, through io_uring), for the
//! rare paths that copy files (checkpoints, snapshot streams) without blocking the shard's
//! thread.

use glommio::io::BufferedFile;

/// `len` bytes of `file` from `offset`.
pub async fn read_exact_at(
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
/// count, so a short write (rare for buffered writes to a regular file: a full disk) is an
/// error; the caller starts the file again.
pub async fn write_all_at(file: &BufferedFile, data: Vec<u8>, offset: u64) -> std::io::Result<()> {
    let len = data.len();
    let n = file.write_at(data, offset).await?;
    if n != len {
        return Err(std::io::Error::other(format!(
            "a short write at {offset}: {n} of {len} bytes"
        )));
    }
    Ok(())
}
