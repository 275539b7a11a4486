//! `corekv-tune disk` end to end on a small file: it measures with io_uring + O_DIRECT on the
//! real disk, prints every figure, writes an io-properties file the server's reader accepts,
//! and leaves no probe file behind. The figures themselves are checked for consistency, not
//! speed (speed is measured by hand, see docs/BENCHMARKS.md); the run is kept short with a
//! tiny file and a short --seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use corekv_server::io_properties::{IO_PROPERTIES_FILE, IoProperties};

#[test]
fn probe_writes_properties_the_server_reads() {
    // Under the target directory: a real disk (O_DIRECT does not work on tmpfs).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
        .args([
            "disk",
            "--file-size-bytes",
            "8388608",
            "--seconds",
            "0.05",
            "--json",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let p = IoProperties::load(dir.path())
        .unwrap()
        .expect("io-properties written");
    assert_eq!(v["properties"]["io_concurrency"], p.io_concurrency);
    assert_eq!(p.file_size_bytes, 8 << 20);
    assert!(p.seq_write_mib_per_sec > 0.0);
    assert!(p.randread_4k_qd1_iops > 0.0 && p.randread_4k_qd32_iops > 0.0);
    assert!(p.write_4k_fdatasync_per_sec > 0.0);
    assert!(p.write_4k_fdatasync_latency_us_p50 >= 1);
    assert!(p.write_4k_fdatasync_latency_us_p50 <= p.write_4k_fdatasync_latency_us_p99);
    assert_eq!(p.randread_4k_depths, [1, 2, 4, 8, 16, 32, 64]);
    assert!(p.randread_4k_depths.contains(&p.io_concurrency));
    // Only the properties file is left.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, [IO_PROPERTIES_FILE]);
}

#[test]
fn probe_refuses_memory_filesystems_and_missing_directories_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
        .args(["disk", "--dir", "/nonexistent/corekv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("create it first"));

    if std::path::Path::new("/dev/shm").is_dir() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
            .args([
                "disk",
                "--file-size-bytes",
                "8388608",
                "--seconds",
                "0.01",
                "--dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("tmpfs") && err.contains("data disk"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe file left behind"
        );
    }
}

#[test]
fn a_single_test_prints_its_figures_and_writes_no_properties() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
        .args([
            "disk",
            "--tests",
            "fdatasync",
            "--file-size-bytes",
            "8388608",
            "--seconds",
            "0.05",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("write_4k_fdatasync_per_s="), "{stdout}");
    assert!(
        !stdout.contains("seq_write") && !stdout.contains("randread"),
        "{stdout}"
    );
    assert!(stderr.contains("io-properties not written"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
