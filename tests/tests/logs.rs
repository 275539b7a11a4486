//! Logs: human-readable lines by default at `info`, and `--log-level` (an `EnvFilter`) chooses
//! what is written, per target. The JSON format is checked in `lifecycle.rs`
//! (`json_logs_are_one_object_per_line`).

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use corekv_tests::{Server, ServerOptions, test_dir};

/// `(level, target)` of a default-format line: `<RFC 3339 time>  LEVEL thread target: message`.
fn level_and_target(line: &str) -> (&str, &str) {
    let mut words = line.split_whitespace();
    let time = words.next().unwrap();
    assert!(
        time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "not a timestamp at the start of {line:?}"
    );
    let level = words.next().unwrap();
    let _thread = words.next().unwrap();
    let target = words.next().unwrap().trim_end_matches(':');
    (level, target)
}

/// Starts a server with `args`, sends one connection garbage (the server closes it and logs
/// that at `debug`), stops the server and returns its log lines.
fn log_of(tag: &str, args: &[&str]) -> Vec<String> {
    let dir = test_dir(tag);
    let mut server = Server::start(dir.path(), ServerOptions::shards(1).args(args));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    // Read until the server closes the connection (it may send an Abort message first).
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    assert_eq!(server.terminate().code(), Some(0));
    server
        .log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

const PROTOCOL_FAILURE: &str = "closed a connection after a protocol failure";

#[test]
fn default_logs_are_readable_lines_at_info() {
    let lines = log_of("text-logs", &[]);
    assert!(lines.iter().any(|l| l.contains("corekv-server ready")));
    assert!(lines.iter().any(|l| l.contains("engine opened")));
    for line in &lines {
        assert!(!line.starts_with('{'), "JSON by default: {line}");
        let (level, _) = level_and_target(line);
        assert!(
            ["INFO", "WARN", "ERROR"].contains(&level),
            "level {level} below info by default: {line}"
        );
    }
    assert!(!lines.iter().any(|l| l.contains(PROTOCOL_FAILURE)));
}

#[test]
fn the_level_is_set_per_target_at_start() {
    // Debug for the server's network module: the protocol failure is logged, at DEBUG.
    let lines = log_of(
        "debug-logs",
        &["--log-level", "info,corekv_server::net=debug"],
    );
    let failure = lines
        .iter()
        .find(|l| l.contains(PROTOCOL_FAILURE))
        .unwrap_or_else(|| panic!("no debug line:\n{}", lines.join("\n")));
    assert_eq!(
        level_and_target(failure),
        ("DEBUG", "corekv_server::net::connection")
    );
    // `warn` for the storage engine hides its info lines while the server's remain.
    let lines = log_of("quiet-logs", &["--log-level", "info,corekv_storage=warn"]);
    assert!(lines.iter().any(|l| l.contains("corekv-server ready")));
    assert!(
        lines
            .iter()
            .all(|l| !level_and_target(l).1.starts_with("corekv_storage")),
        "{}",
        lines.join("\n")
    );
}
