//! `corekv-tune disk` writes the data directory's io-properties file; `corekv-server` started on
//! that directory makes every shard's io_uring rings `io_concurrency` deep, and
//! `--io-concurrency` overrides the file. The ring depth is read back from the kernel
//! (`/proc/PID/fdinfo` of the process's io_uring descriptors), not from the server's own log.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corekv_tests::{Server, ServerOptions, bin_path, test_dir};

/// Submission-queue entries of every io_uring instance `pid` holds open.
fn ring_depths(pid: u32) -> Vec<u64> {
    let mut depths = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        if target.to_string_lossy() != "anon_inode:[io_uring]" {
            continue;
        }
        let fd = entry.file_name();
        let path = format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy());
        let Some(mask) = sq_mask(&path) else {
            continue; // closed meanwhile
        };
        depths.push(mask + 1);
    }
    depths
}

/// The `SqMask:` of one io_uring descriptor's fdinfo, or `None` if the descriptor is gone.
///
/// Recent kernels print an io_uring's fdinfo only when they can take the ring's lock without
/// waiting (`mutex_trylock`); while the owning thread is inside `io_uring_enter` submitting, the
/// file reads back empty. So an empty read is retried (a bounded number of times): the lock is
/// held only for the length of a submission.
fn sq_mask(path: &str) -> Option<u64> {
    let mut last = String::new();
    for _ in 0..2000 {
        let info = std::fs::read_to_string(path).ok()?;
        if let Some(mask) = info.lines().find_map(|l| l.strip_prefix("SqMask:")) {
            return Some(u64::from_str_radix(mask.trim().trim_start_matches("0x"), 16).unwrap());
        }
        last = info;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("{path} never showed SqMask in 2000 reads; last read: {last:?}");
}

fn io_concurrency_in(file: &str) -> u32 {
    file.lines()
        .find_map(|l| l.strip_prefix("io_concurrency = "))
        .expect("io_concurrency in the io-properties file")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_server_sizes_its_rings_from_the_measured_disk() {
    let dir = test_dir("io-concurrency");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A short probe on a small file: the figures are not the point, the file is.
    let probe = std::process::Command::new(bin_path("corekv-tune"))
        .args([
            "disk",
            "--file-size-bytes",
            "8388608",
            "--seconds",
            "0.05",
            "--dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let measured =
        io_concurrency_in(&std::fs::read_to_string(data.join("io-properties.toml")).unwrap());
    // The server raises a depth below 8 to 8: its rings also carry network operations.
    let expected = u64::from(measured.max(8));

    let shards = 2.min(corekv_tests::cpus());
    let mut server = Server::start_with_data(&data, ServerOptions::shards(shards));
    let depths = ring_depths(server.pid().unwrap());
    assert!(
        depths.len() >= shards,
        "expected io_uring rings for {shards} shards, found {depths:?}"
    );
    assert!(
        depths.iter().all(|&d| d == expected),
        "measured io_concurrency {measured}: rings {depths:?}"
    );
    assert!(
        server
            .log()
            .contains("from the io-properties file (measured io_concurrency"),
        "{}",
        server.log()
    );
    assert!(server.terminate().success());

    // The flag wins over the file; pick a depth the probe did not choose.
    let flag = if expected == 16 { 32 } else { 16 };
    let server = Server::start_with_data(
        &data,
        ServerOptions::shards(shards).args(&["--io-concurrency", &flag.to_string()]),
    );
    let depths = ring_depths(server.pid().unwrap());
    assert!(
        !depths.is_empty() && depths.iter().all(|&d| d == flag),
        "--io-concurrency {flag}: rings {depths:?}"
    );
}
