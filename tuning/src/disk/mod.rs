//! `corekv-tune disk`: measures the data disk with io_uring and O_DIRECT, the way corekv uses
//! it, and writes the io-properties file the server sizes its I/O concurrency from.
//!
//! The tests mirror `../shared/peers/limits.sh` (fio, io_uring engine, `--direct=1`) so the two
//! can be compared figure by figure:
//!
//! | figure | pattern | fio job |
//! |---|---|---|
//! | `seq_write_mib_per_sec` | 1 MiB sequential writes, depth 8, fresh fallocated file | `seqwrite` |
//! | `randread_4k_qd1_iops` | 4 KiB random reads, depth 1, over a fully written file | `randread1` |
//! | `randread_4k_qd32_iops` | the same, depth 32 | `randread32` |
//! | `write_4k_fdatasync_*` | 4 KiB sequential writes, each + fdatasync, fresh fallocated file | `fdatasync` |
//!
//! A queue-depth sweep (2, 4, 8, 16, 64, a quarter of the time each) adds the points between;
//! `io_concurrency` is the smallest depth reaching 90% of the best random-read IOPS.

pub mod buffer;
pub mod probe;

use std::path::{Path, PathBuf};
use std::time::Duration;

use corekv_server::io_properties::{FORMAT_VERSION, IO_CONCURRENCY_MAX, IoProperties};
use serde::Serialize;

use crate::error::{Error, Result};
use probe::{Engine, Pattern, ProbeFile};

/// Smallest test file: 8 in-flight 1 MiB writes must not overlap.
pub const FILE_SIZE_BYTES_MIN: u64 = 8 << 20;
/// Largest test file.
pub const FILE_SIZE_BYTES_MAX: u64 = 1 << 40;
/// Size of the write+fdatasync file (fio's job uses 256 MiB).
pub const SYNC_FILE_SIZE_BYTES_MAX: u64 = 256 << 20;
/// Longest timed test.
pub const SECONDS_PER_TEST_MAX: f64 = 600.0;
/// Depths of the random-read sweep (1 and 32 are measured at full length).
pub const SWEEP_DEPTHS: [usize; 5] = [2, 4, 8, 16, 64];
/// A depth is "enough" once it reaches this share of the best IOPS.
pub const SATURATION_SHARE: f64 = 0.9;

/// Which tests to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Test {
    /// 1 MiB sequential writes, depth 8.
    SeqWrite,
    /// 4 KiB random reads at depth 1 and 32 (and the sweep).
    Randread,
    /// 4 KiB write + fdatasync, one at a time.
    Fdatasync,
}

/// How to measure.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Size of the main test file (fio: 1 GiB).
    pub file_size_bytes: u64,
    /// Length of each full timed test (fio: 8 s).
    pub seconds_per_test: f64,
    /// Also measure the depths between 1 and 32, and 64.
    pub sweep: bool,
    /// The tests to run; the io-properties file needs all of them.
    pub tests: Vec<Test>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            file_size_bytes: 1 << 30,
            seconds_per_test: 8.0,
            sweep: true,
            tests: vec![Test::SeqWrite, Test::Randread, Test::Fdatasync],
        }
    }
}

/// The figures measured; a test not run leaves its figures `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// 1 MiB sequential writes at depth 8.
    pub seq_write_mib_per_sec: Option<f64>,
    /// 4 KiB random reads at depth 1.
    pub randread_4k_qd1_iops: Option<f64>,
    /// Their median latency.
    pub randread_4k_qd1_latency_us_p50: Option<u64>,
    /// Their 99th percentile.
    pub randread_4k_qd1_latency_us_p99: Option<u64>,
    /// 4 KiB random reads at depth 32.
    pub randread_4k_qd32_iops: Option<f64>,
    /// (depth, IOPS) of the random-read runs, ascending depth.
    pub randread_4k_iops_by_depth: Vec<(u32, f64)>,
    /// 4 KiB writes each followed by fdatasync, per second.
    pub write_4k_fdatasync_per_sec: Option<f64>,
    /// Their median latency.
    pub write_4k_fdatasync_latency_us_p50: Option<u64>,
    /// Their 99th percentile.
    pub write_4k_fdatasync_latency_us_p99: Option<u64>,
}

/// What the probe measured.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    /// Directory measured.
    pub dir: String,
    /// Kernel name of the disk, or empty.
    pub device: String,
    /// Size of the main test file.
    pub file_size_bytes: u64,
    /// Length of each full timed test.
    pub seconds_per_test: f64,
    /// Whether reads and writes used io_uring registered buffers.
    pub registered_buffers: bool,
    /// Every figure measured.
    pub figures: Figures,
    /// The io-properties file's content, when every test ran.
    pub properties: Option<IoProperties>,
}

/// The smallest depth whose IOPS reach [`SATURATION_SHARE`] of the best.
pub fn io_concurrency(points: &[(u32, f64)]) -> u32 {
    let best = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut sorted = points.to_vec();
    sorted.sort_by_key(|p| p.0);
    sorted
        .iter()
        .find(|p| p.1 >= SATURATION_SHARE * best)
        .map_or(1, |p| p.0)
        .clamp(1, IO_CONCURRENCY_MAX)
}

/// Runs every test in `dir` and returns the figures. Test files are created in `dir` and
/// removed afterwards, also on error.
pub fn measure(dir: &Path, opts: &ProbeOptions, device: String) -> Result<DiskReport> {
    if opts.file_size_bytes < FILE_SIZE_BYTES_MIN
        || opts.file_size_bytes > FILE_SIZE_BYTES_MAX
        || opts.file_size_bytes % (1 << 20) != 0
    {
        return Err(Error::Invalid(format!(
            "--file-size-bytes {} must be a multiple of 1 MiB between {} and {}",
            opts.file_size_bytes, FILE_SIZE_BYTES_MIN, FILE_SIZE_BYTES_MAX
        )));
    }
    if !(opts.seconds_per_test > 0.0 && opts.seconds_per_test <= SECONDS_PER_TEST_MAX) {
        return Err(Error::Invalid(format!(
            "--seconds {} must be above 0 and at most {SECONDS_PER_TEST_MAX}",
            opts.seconds_per_test
        )));
    }
    refuse_memory_filesystems(dir)?;
    if opts.tests.is_empty() {
        return Err(Error::Invalid("no test to run".to_string()));
    }
    let full = Duration::from_secs_f64(opts.seconds_per_test);
    let pid = std::process::id();
    let mut eng = Engine::new()?;
    let mut fig = Figures::default();
    let run_seq = opts.tests.contains(&Test::SeqWrite);
    let run_reads = opts.tests.contains(&Test::Randread);

    // Sequential write on a fresh, preallocated file; then finish writing it once so the reads
    // hit real data (reads of unwritten extents never reach the disk).
    let data = if run_seq || run_reads {
        let data = ProbeFile::create(&probe_path(dir, "data", pid), opts.file_size_bytes)?;
        let mut written = 0;
        if run_seq {
            let seq = eng.run(&data, Pattern::SeqWrite { block: 1 << 20 }, 8, full, None)?;
            fig.seq_write_mib_per_sec = Some(round1(seq.mib_per_sec()));
            written = seq.bytes;
        }
        if run_reads && written < data.size_bytes() {
            // Write the whole file once (from the start; simpler than resuming, and untimed).
            let whole = Some(data.size_bytes());
            let forever = Duration::from_secs(3600);
            eng.run(
                &data,
                Pattern::SeqWrite { block: 1 << 20 },
                8,
                forever,
                whole,
            )?;
        }
        Some(data)
    } else {
        None
    };

    if let (true, Some(data)) = (run_reads, &data) {
        let rr1 = eng.run(data, Pattern::RandRead { block: 4096 }, 1, full, None)?;
        let rr32 = eng.run(data, Pattern::RandRead { block: 4096 }, 32, full, None)?;
        let mut points = vec![(1u32, rr1.per_sec()), (32u32, rr32.per_sec())];
        if opts.sweep {
            for depth in SWEEP_DEPTHS {
                let quarter = full / 4;
                let r = eng.run(
                    data,
                    Pattern::RandRead { block: 4096 },
                    depth,
                    quarter,
                    None,
                )?;
                points.push((depth as u32, r.per_sec()));
            }
        }
        points.sort_by_key(|p| p.0);
        fig.randread_4k_qd1_iops = Some(round1(rr1.per_sec()));
        fig.randread_4k_qd1_latency_us_p50 = Some(rr1.latency_us.value_at_quantile(0.5));
        fig.randread_4k_qd1_latency_us_p99 = Some(rr1.latency_us.value_at_quantile(0.99));
        fig.randread_4k_qd32_iops = Some(round1(rr32.per_sec()));
        fig.randread_4k_iops_by_depth = points.iter().map(|p| (p.0, round1(p.1))).collect();
    }

    // The data file is kept until the end, as fio keeps its files: deleting 1 GiB right before
    // the fdatasync test would put its discards (on `-o discard` mounts) into the journal
    // commits that test waits for.
    if opts.tests.contains(&Test::Fdatasync) {
        let sync_size = opts.file_size_bytes.min(SYNC_FILE_SIZE_BYTES_MAX);
        let sync_file = ProbeFile::create(&probe_path(dir, "sync", pid), sync_size)?;
        let sync = eng.run(
            &sync_file,
            Pattern::WriteSync { block: 4096 },
            1,
            full,
            None,
        )?;
        fig.write_4k_fdatasync_per_sec = Some(round1(sync.per_sec()));
        fig.write_4k_fdatasync_latency_us_p50 = Some(sync.latency_us.value_at_quantile(0.5));
        fig.write_4k_fdatasync_latency_us_p99 = Some(sync.latency_us.value_at_quantile(0.99));
    }
    drop(data);

    let properties = properties(&fig, opts, &device)?;
    Ok(DiskReport {
        dir: dir.display().to_string(),
        device,
        file_size_bytes: opts.file_size_bytes,
        seconds_per_test: opts.seconds_per_test,
        registered_buffers: eng.registered(),
        figures: fig,
        properties,
    })
}

/// The io-properties content, when every figure it needs was measured.
fn properties(fig: &Figures, opts: &ProbeOptions, device: &str) -> Result<Option<IoProperties>> {
    let (
        Some(seq),
        Some(rr1),
        Some(rr1_p50),
        Some(rr32),
        Some(sync),
        Some(sync_p50),
        Some(sync_p99),
    ) = (
        fig.seq_write_mib_per_sec,
        fig.randread_4k_qd1_iops,
        fig.randread_4k_qd1_latency_us_p50,
        fig.randread_4k_qd32_iops,
        fig.write_4k_fdatasync_per_sec,
        fig.write_4k_fdatasync_latency_us_p50,
        fig.write_4k_fdatasync_latency_us_p99,
    )
    else {
        return Ok(None);
    };
    let points = &fig.randread_4k_iops_by_depth;
    let p = IoProperties {
        format_version: FORMAT_VERSION,
        device: device.to_string(),
        measured_at_unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        file_size_bytes: opts.file_size_bytes,
        seconds_per_test: opts.seconds_per_test,
        seq_write_mib_per_sec: seq,
        randread_4k_qd1_iops: rr1,
        randread_4k_qd1_latency_us_p50: rr1_p50,
        randread_4k_qd32_iops: rr32,
        randread_4k_depths: points.iter().map(|p| p.0).collect(),
        randread_4k_depth_iops: points.iter().map(|p| p.1).collect(),
        write_4k_fdatasync_per_sec: sync,
        write_4k_fdatasync_latency_us_p50: sync_p50,
        write_4k_fdatasync_latency_us_p99: sync_p99,
        io_concurrency: io_concurrency(points),
    };
    p.check().map_err(Error::Invalid)?;
    Ok(Some(p))
}

/// tmpfs and ramfs live in memory: recent kernels accept O_DIRECT there, and the "disk" would
/// measure RAM. The server must not keep data there either.
fn refuse_memory_filesystems(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{dir:?} contains a NUL byte")))?;
    // SAFETY: `statfs` is plain data; all-zeroes is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid path and `st` a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io("statfs", dir, std::io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between architectures
    let fs_type = st.f_type as i64;
    if fs_type == TMPFS_MAGIC || fs_type == RAMFS_MAGIC {
        return Err(Error::Invalid(format!(
            "{} is on tmpfs/ramfs (memory, not a disk): O_DIRECT would measure RAM and the data \
             would not survive a reboot; pass a directory on the data disk",
            dir.display()
        )));
    }
    Ok(())
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn probe_path(dir: &Path, what: &str, pid: u32) -> PathBuf {
    dir.join(format!(".corekv-tune-probe-{what}-{pid}"))
}

/// Renders the figures beside the names `limits.sh` prints, for side-by-side reading.
pub fn render(r: &DiskReport) -> String {
    let f = &r.figures;
    let mut out = format!(
        "# corekv-tune disk: {} (device {}), {} MiB file, {} s per test, {} buffers\n",
        r.dir,
        if r.device.is_empty() { "?" } else { &r.device },
        r.file_size_bytes >> 20,
        r.seconds_per_test,
        if r.registered_buffers {
            "registered"
        } else {
            "unregistered"
        }
    );
    if let Some(v) = f.seq_write_mib_per_sec {
        out.push_str(&format!("seq_write_MiB_per_s={v:.0}\n"));
    }
    if let (Some(iops), Some(p50), Some(p99)) = (
        f.randread_4k_qd1_iops,
        f.randread_4k_qd1_latency_us_p50,
        f.randread_4k_qd1_latency_us_p99,
    ) {
        out.push_str(&format!(
            "randread_4k_qd1_iops={iops:.0} randread_4k_qd1_lat_us_p50={p50} p99={p99}\n"
        ));
    }
    if let Some(v) = f.randread_4k_qd32_iops {
        out.push_str(&format!("randread_4k_qd32_iops={v:.0}\n"));
        let sweep: Vec<String> = f
            .randread_4k_iops_by_depth
            .iter()
            .map(|(d, i)| format!("qd{d}={i:.0}"))
            .collect();
        out.push_str(&format!("randread_4k_iops_by_depth: {}\n", sweep.join(" ")));
    }
    if let (Some(v), Some(p50), Some(p99)) = (
        f.write_4k_fdatasync_per_sec,
        f.write_4k_fdatasync_latency_us_p50,
        f.write_4k_fdatasync_latency_us_p99,
    ) {
        out.push_str(&format!(
            "write_4k_fdatasync_per_s={v:.0} lat_us_p50={p50} p99={p99}\n"
        ));
    }
    if let Some(p) = &r.properties {
        out.push_str(&format!("io_concurrency={}\n", p.io_concurrency));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_concurrency_is_the_knee() {
        let pts = [
            (1, 10_000.0),
            (2, 19_000.0),
            (4, 35_000.0),
            (8, 60_000.0),
            (16, 95_000.0),
            (32, 100_000.0),
            (64, 101_000.0),
        ];
        assert_eq!(io_concurrency(&pts), 16);
        assert_eq!(io_concurrency(&[(1, 5.0), (32, 5.1)]), 1);
        assert_eq!(io_concurrency(&[]), 1);
    }

    #[test]
    fn bad_options_are_refused_before_touching_the_disk() {
        // Nothing is created, so any directory will do.
        let dir = tempfile::tempdir().unwrap();
        for (opts, needle) in [
            (
                ProbeOptions {
                    file_size_bytes: 1 << 20,
                    ..Default::default()
                },
                "multiple of 1 MiB between",
            ),
            (
                ProbeOptions {
                    file_size_bytes: (8 << 20) + 1,
                    ..Default::default()
                },
                "multiple of 1 MiB",
            ),
            (
                ProbeOptions {
                    seconds_per_test: 0.0,
                    ..Default::default()
                },
                "--seconds",
            ),
        ] {
            let e = measure(dir.path(), &opts, String::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
