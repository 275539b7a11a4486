//! The `io-properties` file: what the data disk can do, measured by `corekv-tune disk` and read
//! by the server to size its I/O concurrency.
//!
//! It lives in the data directory as [`IO_PROPERTIES_FILE`] and is TOML, one key per figure,
//! names carrying their units:
//!
//! ```toml
//! # corekv io-properties: the data disk as measured by `corekv-tune disk`.
//! format_version = 1                      # this layout; readers refuse other versions
//! device = "vda"                          # kernel name of the disk measured ("" if unknown)
//! measured_at_unix_secs = 1732380000
//! file_size_bytes = 1073741824            # size of the probe's test file
//! seconds_per_test = 8.0
//! seq_write_mib_per_sec = 1510.2          # 1 MiB O_DIRECT writes, queue depth 8
//! randread_4k_qd1_iops = 9120.0
//! randread_4k_qd1_latency_us_p50 = 104
//! randread_4k_qd32_iops = 101234.0
//! randread_4k_depths = [1, 2, 4, 8, 16, 32, 64]       # the queue-depth sweep ...
//! randread_4k_depth_iops = [9120.0, 17000.0, ...]     # ... and the IOPS at each depth
//! write_4k_fdatasync_per_sec = 2950.0     # 4 KiB write + fdatasync, one at a time
//! write_4k_fdatasync_latency_us_p50 = 320
//! write_4k_fdatasync_latency_us_p99 = 910
//! io_concurrency = 16                     # smallest depth reaching 90% of the best IOPS
//! ```
//!
//! `io_concurrency` is the figure the server uses: more requests in flight than that only add
//! queueing latency. Each shard's io_uring rings are made that deep (glommio's `ring_depth`:
//! the requests a shard hands the kernel in one submission, and the reads glommio's
//! `read_many` keeps in flight); `--io-concurrency` overrides it (`config::IoConcurrency`). Unknown keys are refused (a typo must not pass silently); a file from a
//! newer format is refused with the version it has.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the io-properties file inside the data directory.
pub const IO_PROPERTIES_FILE: &str = "io-properties.toml";
/// The format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Upper bound on `io_concurrency`: no disk benefits from more, and a corrupt file must not
/// make the server queue without limit.
pub const IO_CONCURRENCY_MAX: u32 = 1024;

/// Measured properties of the data disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoProperties {
    /// Layout version, [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Kernel name of the disk measured.
    pub device: String,
    /// When, in seconds since the Unix epoch.
    pub measured_at_unix_secs: u64,
    /// Size of the probe's test file.
    pub file_size_bytes: u64,
    /// Duration of each timed test.
    pub seconds_per_test: f64,
    /// Sequential 1 MiB O_DIRECT writes at queue depth 8.
    pub seq_write_mib_per_sec: f64,
    /// 4 KiB random O_DIRECT reads, one at a time.
    pub randread_4k_qd1_iops: f64,
    /// Median latency of those reads.
    pub randread_4k_qd1_latency_us_p50: u64,
    /// 4 KiB random O_DIRECT reads, 32 in flight.
    pub randread_4k_qd32_iops: f64,
    /// Queue depths of the random-read sweep, ascending.
    pub randread_4k_depths: Vec<u32>,
    /// IOPS at each of those depths.
    pub randread_4k_depth_iops: Vec<f64>,
    /// 4 KiB writes each followed by fdatasync, one at a time: durable writes per second.
    pub write_4k_fdatasync_per_sec: f64,
    /// Median latency of a 4 KiB write + fdatasync.
    pub write_4k_fdatasync_latency_us_p50: u64,
    /// 99th percentile of the same.
    pub write_4k_fdatasync_latency_us_p99: u64,
    /// I/O requests worth having in flight on this disk.
    pub io_concurrency: u32,
}

/// An io-properties file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IoPropertiesError {
    /// Reading or writing the file failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML for this format, or a value out of range.
    #[error("{path:?}: {message}; re-run `corekv-tune disk --dir <data dir>` to rewrite it")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl IoProperties {
    /// Parses and checks the file's text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<IoProperties, IoPropertiesError> {
        let invalid = |message: String| IoPropertiesError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // Check the version first, so a newer file is reported as such rather than as
        // unknown keys.
        #[derive(Deserialize)]
        struct Version {
            format_version: Option<u32>,
        }
        let version: Version = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        match version.format_version {
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "format_version {v} is not the {FORMAT_VERSION} this corekv reads"
                )));
            }
            None => return Err(invalid("no format_version".to_string())),
        }
        let p: IoProperties = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        p.check().map_err(invalid)?;
        Ok(p)
    }

    /// Checks every figure is in range.
    pub fn check(&self) -> Result<(), String> {
        if self.io_concurrency == 0 || self.io_concurrency > IO_CONCURRENCY_MAX {
            return Err(format!(
                "io_concurrency {} is outside 1..={IO_CONCURRENCY_MAX}",
                self.io_concurrency
            ));
        }
        for (name, v) in [
            ("seq_write_mib_per_sec", self.seq_write_mib_per_sec),
            ("randread_4k_qd1_iops", self.randread_4k_qd1_iops),
            ("randread_4k_qd32_iops", self.randread_4k_qd32_iops),
            (
                "write_4k_fdatasync_per_sec",
                self.write_4k_fdatasync_per_sec,
            ),
            ("seconds_per_test", self.seconds_per_test),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("{name} = {v} is not a positive number"));
            }
        }
        if self.randread_4k_depths.len() != self.randread_4k_depth_iops.len() {
            return Err(format!(
                "randread_4k_depths has {} entries but randread_4k_depth_iops has {}",
                self.randread_4k_depths.len(),
                self.randread_4k_depth_iops.len()
            ));
        }
        if self.write_4k_fdatasync_latency_us_p50 > self.write_4k_fdatasync_latency_us_p99 {
            return Err("write_4k_fdatasync_latency_us_p50 is above its p99".to_string());
        }
        Ok(())
    }

    /// The file's text, with a header comment.
    pub fn to_toml(&self) -> Result<String, String> {
        let body = toml::to_string(self).map_err(|e| e.to_string())?;
        Ok(format!(
            "# corekv io-properties: the data disk as measured by `corekv-tune disk`.\n\
             # Read by corekv-server to size its I/O concurrency. Format: server/src/io_properties.rs.\n\
             {body}"
        ))
    }

    /// Reads `dir/io-properties.toml`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<IoProperties>, IoPropertiesError> {
        let path = dir.join(IO_PROPERTIES_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => IoProperties::parse(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IoPropertiesError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Writes `dir/io-properties.toml` crash-safely: a temporary file, fsync, rename, fsync of
    /// the directory. Returns the path written.
    pub fn store(&self, dir: &Path) -> Result<PathBuf, IoPropertiesError> {
        use std::io::Write;
        let path = dir.join(IO_PROPERTIES_FILE);
        self.check().map_err(|message| IoPropertiesError::Invalid {
            path: path.clone(),
            message,
        })?;
        let text = self
            .to_toml()
            .map_err(|message| IoPropertiesError::Invalid {
                path: path.clone(),
                message,
            })?;
        let tmp = dir.join(format!("{IO_PROPERTIES_FILE}.tmp"));
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| IoPropertiesError::Io {
                op,
                path: p,
                source,
            }
        };
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io("rename into", &path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", dir))?;
        Ok(path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid file's contents.
    pub(crate) fn sample() -> IoProperties {
        IoProperties {
            format_version: FORMAT_VERSION,
            device: "vda".to_string(),
            measured_at_unix_secs: 1_732_380_000,
            file_size_bytes: 1 << 30,
            seconds_per_test: 8.0,
            seq_write_mib_per_sec: 1510.5,
            randread_4k_qd1_iops: 9120.0,
            randread_4k_qd1_latency_us_p50: 104,
            randread_4k_qd32_iops: 101_234.0,
            randread_4k_depths: vec![1, 32],
            randread_4k_depth_iops: vec![9120.0, 101_234.0],
            write_4k_fdatasync_per_sec: 2950.0,
            write_4k_fdatasync_latency_us_p50: 320,
            write_4k_fdatasync_latency_us_p99: 910,
            io_concurrency: 16,
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(IoProperties::load(dir.path()).unwrap(), None);
        let path = sample().store(dir.path()).unwrap();
        assert_eq!(path, dir.path().join(IO_PROPERTIES_FILE));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# corekv io-properties"), "{text}");
        assert!(text.contains("format_version = 1\n"), "{text}");
        assert_eq!(IoProperties::load(dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join("io-properties.toml.tmp").exists());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let p = Path::new("/d/io-properties.toml");
        let good = sample().to_toml().unwrap();
        let cases = [
            (
                good.replace("format_version = 1", "format_version = 2"),
                "format_version 2",
            ),
            (
                good.replace("format_version = 1\n", ""),
                "no format_version",
            ),
            (
                good.replace("io_concurrency = 16", "io_concurrency = 0"),
                "io_concurrency 0",
            ),
            (
                good.replace("io_concurrency = 16", "io_concurency = 16"),
                "io_concurency",
            ),
            (
                good.replace(
                    "randread_4k_qd32_iops = 101234.0",
                    "randread_4k_qd32_iops = -1.0",
                ),
                "not a positive",
            ),
            ("format_version = 1\n[[[".to_string(), "TOML"),
        ];
        for (text, needle) in cases {
            let e = IoProperties::parse(p, &text).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(
                e.contains("io-properties.toml") && e.contains("corekv-tune disk"),
                "{e}"
            );
        }
    }
}
