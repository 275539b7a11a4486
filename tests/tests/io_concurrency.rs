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
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()))
        else {
            continue;
        };
        let mask = info
            .lines()
            .find_map(|l| l.strip_prefix("SqMask:"))
            .expect("io_uring fdinfo has SqMask");
        let mask = u64::from_str_radix(mask.trim().trim_start_matches("0x"), 16).unwrap();
        depths.push(mask + 1);
    }
    depths
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
