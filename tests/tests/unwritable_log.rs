//! A server whose log cannot be written (stderr on a full disk) keeps serving. Regression test:
//! tracing-subscriber reported the failed log write with `eprintln!`, which panicked on the
//! same full stderr, so the server died (exit 101) at its first log line.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corekv_proto::Client;
use corekv_proto::client::TokioRuntime;
use corekv_tests::{PROCESS_DEADLINE, bin_path, block_on, free_ports, test_dir};

/// Kills the server if the test panics before it stopped it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_server_logging_to_a_full_disk_keeps_serving_and_stops_cleanly() {
    let dir = test_dir("unwritable-log");
    // /dev/full fails every write with ENOSPC, like a log file on a full disk.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let port = free_ports(2);
    let addr = format!("127.0.0.1:{port}");
    let mut guard = KillOnDrop(
        Command::new(bin_path("corekv-server"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen",
                &addr,
                "--shards",
                "1",
                "--io-memory-bytes",
                "1048576",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(full)
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let deadline = Instant::now() + PROCESS_DEADLINE;
    let served = block_on(async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("the server exited with {status}"));
            }
            if let Ok(client) = Client::connect(TokioRuntime, addr.parse().unwrap()).await {
                client.put(b"k", b"v").await.unwrap();
                assert_eq!(client.get(b"k").await.unwrap(), Some(b"v".to_vec()));
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the server never answered".to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if let Err(e) = served {
        panic!("{e}");
    }
    // SAFETY: kill has no memory-safety preconditions; the child is ours and not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            panic!("the server did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "a clean stop despite the unwritable log"
    );
}
