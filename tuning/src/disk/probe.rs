//! The measuring engine: one io_uring, one O_DIRECT file, a buffer region registered with the
//! ring when the locked-memory limit allows (fixed-buffer reads and writes skip the per-I/O page
//! pinning), and a loop that keeps `depth` requests in flight until a deadline.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{IoUring, opcode, squeue, types};

use super::buffer::AlignedBuf;
use crate::error::{Error, Result};

/// Deepest queue the probe drives.
pub const DEPTH_MAX: usize = 64;
/// Largest single I/O.
pub const BLOCK_BYTES_MAX: usize = 1 << 20;
/// The buffer region: enough for 8 in-flight 1 MiB writes or 64 in-flight 4 KiB reads.
const REGION_BYTES: usize = 8 * BLOCK_BYTES_MAX;
/// user_data bit marking the fdatasync half of a write+fdatasync pair.
const SYNC_TAG: u64 = 1 << 63;

/// What one timed run did.
#[derive(Debug)]
pub struct RunStats {
    /// Requests completed.
    pub ops: u64,
    /// Bytes transferred.
    pub bytes: u64,
    /// Wall time from the first submission to the last completion.
    pub elapsed: Duration,
    /// Per-request latency, microseconds (submission to completion).
    pub latency_us: Histogram<u64>,
}

impl RunStats {
    /// Requests per second.
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// MiB per second.
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The access pattern of a run.
#[derive(Debug, Clone, Copy)]
pub enum Pattern {
    /// Sequential writes of `block` bytes, wrapping at the end of the file.
    SeqWrite { block: usize },
    /// Random `block`-aligned reads anywhere in the file.
    RandRead { block: usize },
    /// Sequential `block` writes, each followed by fdatasync (linked; depth must be 1).
    WriteSync { block: usize },
}

/// A probe file on disk, removed on drop.
pub struct ProbeFile {
    fd: OwnedFd,
    path: PathBuf,
    size_bytes: u64,
}

impl ProbeFile {
    /// Creates `path` (which must not exist) with O_DIRECT and preallocates `size_bytes`, as
    /// fio does for a write job (`fallocate`: the extents exist but are unwritten).
    pub fn create(path: &Path, size_bytes: u64) -> Result<ProbeFile> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::Invalid(format!("{path:?} contains a NUL byte")))?;
        // SAFETY: `c` is a valid NUL-terminated path; the flags and mode are plain integers.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_DIRECT | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::EINVAL) => "; this filesystem does not support O_DIRECT (tmpfs?): \
                                       use a directory on the data disk"
                    .to_string(),
                Some(libc::EEXIST) => "; a previous probe left it behind: remove it".to_string(),
                _ => String::new(),
            };
            return Err(Error::Io {
                op: "open (O_DIRECT)",
                path: path.to_path_buf(),
                source: e,
                hint,
            });
        }
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = ProbeFile {
            fd,
            path: path.to_path_buf(),
            size_bytes,
        };
        let len = i64::try_from(size_bytes)
            .map_err(|_| Error::Invalid(format!("file size {size_bytes} is too large")))?;
        // SAFETY: a valid open descriptor; mode 0 allocates [0, len).
        if unsafe { libc::fallocate(file.fd.as_raw_fd(), 0, 0, len) } != 0 {
            let e = std::io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
                "; not enough free space: pass a smaller --file-size-bytes".to_string()
            } else {
                String::new()
            };
            return Err(Error::Io {
                op: "fallocate",
                path: path.to_path_buf(),
                source: e,
                hint,
            });
        }
        Ok(file)
    }

    /// Size of the file.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An io_uring with a buffer region.
pub struct Engine {
    ring: IoUring,
    region: AlignedBuf,
    registered: bool,
    rng: u64,
}

impl Engine {
    /// Sets up the ring and registers the buffer region when allowed.
    pub fn new() -> Result<Engine> {
        let ring = IoUring::new(2 * DEPTH_MAX as u32).map_err(|e| Error::Io {
            op: "io_uring_setup",
            path: PathBuf::new(),
            source: e,
            hint: "; io_uring may be disabled (sysctl kernel.io_uring_disabled)".to_string(),
        })?;
        let mut region = AlignedBuf::new(REGION_BYTES)?;
        let iov = libc::iovec {
            iov_base: region.as_mut_ptr().cast(),
            iov_len: region.len(),
        };
        // SAFETY: the iovec describes `region`, which lives in this Engine as long as the ring
        // (fields drop in order: `ring` first, unregistering, then `region`).
        let registered = unsafe { ring.submitter().register_buffers(&[iov]) }.is_ok();
        Ok(Engine {
            ring,
            region,
            registered,
            rng: 0x2545_f491_4f6c_dd1d,
        })
    }

    /// Whether reads and writes use the registered (fixed) buffer.
    pub fn registered(&self) -> bool {
        self.registered
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: uniform enough to pick offsets.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Runs `pattern` on `file` with `depth` requests in flight until `duration` has passed
    /// (the requests in flight then are completed and counted). When `stop_after_bytes` is
    /// set, the run also ends once that many bytes were submitted.
    pub fn run(
        &mut self,
        file: &ProbeFile,
        pattern: Pattern,
        depth: usize,
        duration: Duration,
        stop_after_bytes: Option<u64>,
    ) -> Result<RunStats> {
        let block = match pattern {
            Pattern::SeqWrite { block }
            | Pattern::RandRead { block }
            | Pattern::WriteSync { block } => block,
        };
        let blocks_in_file = file.size_bytes / block as u64;
        if depth == 0
            || depth > DEPTH_MAX
            || depth * block > self.region.len()
            || blocks_in_file == 0
        {
            return Err(Error::Invalid(format!(
                "probe run of depth {depth} × {block} bytes does not fit (file {} bytes)",
                file.size_bytes
            )));
        }
        if matches!(pattern, Pattern::WriteSync { .. }) && depth != 1 {
            return Err(Error::Invalid(
                "write+fdatasync runs one at a time".to_string(),
            ));
        }
        let fd = types::Fd(file.fd.as_raw_fd());
        let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| Error::Invalid(format!("histogram: {e}")))?;
        let mut started = vec![Instant::now(); depth];
        let mut next_block: u64 = 0;
        let mut submitted_bytes: u64 = 0;
        let (mut ops, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        let deadline = start + duration;
        let mut in_flight = 0usize;

        // Queues request `slot`; returns false when the run should stop issuing.
        let mut issue = |eng: &mut Engine, slot: usize, in_flight: &mut usize| -> Result<bool> {
            if Instant::now() >= deadline || stop_after_bytes.is_some_and(|b| submitted_bytes >= b)
            {
                return Ok(false);
            }
            let offset = match pattern {
                Pattern::RandRead { .. } => (eng.next_random() % blocks_in_file) * block as u64,
                _ => {
                    let o = (next_block % blocks_in_file) * block as u64;
                    next_block += 1;
                    o
                }
            };
            // In bounds: slot * block + block <= region.len(), checked above.
            let buf = eng.region.as_mut_ptr().wrapping_add(slot * block);
            let len = block as u32;
            let registered = eng.registered;
            let rw = match (pattern, registered) {
                (Pattern::RandRead { .. }, true) => opcode::ReadFixed::new(fd, buf, len, 0)
                    .offset(offset)
                    .build(),
                (Pattern::RandRead { .. }, false) => {
                    opcode::Read::new(fd, buf, len).offset(offset).build()
                }
                (_, true) => opcode::WriteFixed::new(fd, buf, len, 0)
                    .offset(offset)
                    .build(),
                (_, false) => opcode::Write::new(fd, buf, len).offset(offset).build(),
            }
            .user_data(slot as u64);
            let mut sq = eng.ring.submission();
            if let Pattern::WriteSync { .. } = pattern {
                let sync = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(slot as u64 | SYNC_TAG);
                let rw = rw.flags(squeue::Flags::IO_LINK);
                // SAFETY: the buffer stays valid (it is `region`, owned by the engine) until the
                // completion is reaped below; the ring has room for 2 × DEPTH_MAX entries.
                unsafe {
                    sq.push(&rw)
                        .map_err(|_| Error::Invalid("submission queue full".into()))?;
                    sq.push(&sync)
                        .map_err(|_| Error::Invalid("submission queue full".into()))?;
                }
            } else {
                // SAFETY: as above: `buf` points into `region`, alive until the completion.
                unsafe {
                    sq.push(&rw)
                        .map_err(|_| Error::Invalid("submission queue full".into()))?
                };
            }
            drop(sq);
            submitted_bytes += block as u64;
            *in_flight += 1;
            Ok(true)
        };

        for (slot, at) in started.iter_mut().enumerate() {
            *at = Instant::now();
            if !issue(self, slot, &mut in_flight)? {
                break;
            }
        }
        let expect_sync = matches!(pattern, Pattern::WriteSync { .. });
        while in_flight > 0 {
            self.ring
                .submit_and_wait(1)
                .map_err(|e| Error::io("io_uring_enter", &file.path, e))?;
            let done: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (user_data, res) in done {
                let slot = (user_data & !SYNC_TAG) as usize;
                let is_sync = user_data & SYNC_TAG != 0;
                if res < 0 {
                    let op = match (pattern, is_sync) {
                        (_, true) => "fdatasync",
                        (Pattern::RandRead { .. }, _) => "read",
                        _ => "write",
                    };
                    return Err(Error::io(
                        op,
                        &file.path,
                        std::io::Error::from_raw_os_error(-res),
                    ));
                }
                if !is_sync && res as usize != block {
                    return Err(Error::Io {
                        op: "short I/O",
                        path: file.path.clone(),
                        source: std::io::Error::other(format!("{res} of {block} bytes")),
                        hint: String::new(),
                    });
                }
                // A write+fdatasync pair is done when its fdatasync is.
                if expect_sync && !is_sync {
                    continue;
                }
                let now = Instant::now();
                let us = now.duration_since(started[slot]).as_micros().max(1) as u64;
                latency_us.saturating_record(us);
                ops += 1;
                bytes += block as u64;
                in_flight -= 1;
                started[slot] = now;
                issue(self, slot, &mut in_flight)?;
            }
        }
        Ok(RunStats {
            ops,
            bytes,
            elapsed: start.elapsed(),
            latency_us,
        })
    }
}
