//! `corekv-cli` against a model: every command, binary keys and values (escaped and hex), exit
//! statuses (missing key, failed CAS, server errors, unreachable server, bad escapes).

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use corekv_tests::{Server, ServerOptions, bin_path, test_dir};

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[test]
fn every_command_matches_a_model() {
    let dir = test_dir("cli");
    let server = Server::start(dir.path(), ServerOptions::default());
    let mut model: BTreeMap<&str, &str> = BTreeMap::new();
    // Escaped arguments, as a shell user types them.
    let entries = [
        ("user:1", "alice"),
        ("user:2", "bob\\tand\\ttabs"),
        ("bin\\x00\\xff", "\\x01\\x02"),
        ("back\\\\slash", "line\\nbreak"),
    ];
    for (k, v) in entries {
        assert_eq!(ok(server.cli(&["put", k, v])), "OK\n");
        model.insert(k, v);
    }
    for (k, v) in &model {
        assert_eq!(ok(server.cli(&["get", k])), format!("{v}\n"));
    }
    // The scan prints `key<TAB>value` in byte order of the decoded keys.
    let scan = ok(server.cli(&["scan", "", ""]));
    assert_eq!(
        scan,
        "back\\\\slash\tline\\nbreak\nbin\\0\\xff\t\\x01\\x02\nuser:1\talice\nuser:2\tbob\\tand\\ttabs\n"
    );
    assert_eq!(
        ok(server.cli(&["scan", "user:", "user;", "--reverse", "--limit", "1"])),
        "user:2\tbob\\tand\\ttabs\n"
    );
    assert_eq!(ok(server.cli(&["scan", "c", "user:2"])), "user:1\talice\n");

    // Missing key: status 1, nothing on stdout.
    let o = server.cli(&["get", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());

    // CAS: success, mismatch (status 3, prints the current value), absent expectations.
    assert_eq!(
        ok(server.cli(&["cas", "user:1", "--expect", "alice", "--new", "carol"])),
        "OK\n"
    );
    let o = server.cli(&["cas", "user:1", "--expect", "alice", "--new", "dave"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "carol\n");
    let o = server.cli(&["cas", "fresh", "--expect", "x", "--new", "y"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "(absent)\n");
    assert_eq!(
        ok(server.cli(&["cas", "fresh", "--expect-absent", "--new", "y"])),
        "OK\n"
    );
    assert_eq!(
        ok(server.cli(&["cas", "fresh", "--expect", "y", "--delete"])),
        "OK\n"
    );
    assert_eq!(server.cli(&["get", "fresh"]).status.code(), Some(1));

    // Versions: `get --sequence` prints the one `cas --expect-sequence` takes.
    let line = ok(server.cli(&["get", "user:1", "--sequence"]));
    let (sequence, value) = line.trim_end().split_once('\t').unwrap();
    assert_eq!(value, "carol");
    let stale = (sequence.parse::<u64>().unwrap() - 1).to_string();
    let o = server.cli(&["cas", "user:1", "--expect-sequence", &stale, "--new", "x"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        ok(server.cli(&[
            "cas",
            "user:1",
            "--expect-sequence",
            sequence,
            "--new",
            "erin"
        ])),
        "OK\n"
    );
    assert_eq!(ok(server.cli(&["get", "user:1"])), "erin\n");
    let o = server.cli(&[
        "cas",
        "user:1",
        "--expect-sequence",
        "1",
        "--expect",
        "erin",
    ]);
    assert_eq!(o.status.code(), Some(2), "one expectation at a time");

    // Delete, idempotent.
    assert_eq!(ok(server.cli(&["delete", "user:2"])), "OK\n");
    assert_eq!(ok(server.cli(&["delete", "user:2"])), "OK\n");
    assert_eq!(server.cli(&["get", "user:2"]).status.code(), Some(1));

    // Hex mode reads and prints the same bytes.
    assert_eq!(ok(server.cli(&["--hex", "get", "62696e00ff"])), "0102\n");
    assert_eq!(ok(server.cli(&["--hex", "put", "00", "ff00"])), "OK\n");
    assert_eq!(ok(server.cli(&["get", "\\0"])), "\\xff\\0\n");

    // Raw output and a value from stdin (any bytes).
    let raw: Vec<u8> = (0..=255).collect();
    let mut child = Command::new(bin_path("corekv-cli"))
        .args(["--addr", &server.addr.to_string(), "put", "raw", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&raw).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let o = server.cli(&["get", "raw", "--raw"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, raw);

    // Any port works: the server forwards.
    for i in 0..server.shards {
        assert_eq!(
            ok(server.cli_at(server.shard_addr(i), &["get", "user:1"])),
            "erin\n"
        );
    }

    // topology and stats.
    let topo = ok(server.cli(&["topology"]));
    let mut lines = topo.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("shards {} hash fnv1a64-fmix64-jump-v1", server.shards)
    );
    for i in 0..server.shards {
        assert_eq!(
            lines.next().unwrap(),
            format!("{i}\t{}", server.shard_addr(i))
        );
    }
    let stats = ok(server.cli(&["stats"]));
    let puts: u64 = stats
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 3 && f[1] == "put_ops_total").then(|| f[2].parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(puts, 6, "{stats}");
}

#[test]
fn errors_have_their_own_exit_statuses() {
    let dir = test_dir("cli-errors");
    let server = Server::start(dir.path(), ServerOptions::shards(1));
    // A bad escape is a usage error, found before connecting.
    let o = server.cli(&["put", "a\\q", "v"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown escape"));
    let o = server.cli(&["--hex", "get", "xyz"]);
    assert_eq!(o.status.code(), Some(2));
    // A typed server error: status 4, with the server's message.
    let o = server.cli(&["put", "", "v"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("empty_key"),
        "{o:?}"
    );
    let o = server.cli(&["scan", "b", "a"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid_argument"),
        "{o:?}"
    );
    // Nobody listening: status 5.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let o = corekv_tests::run("corekv-cli", &["--addr", &addr.to_string(), "get", "k"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot connect"),
        "{o:?}"
    );
    // Missing arguments: clap's usage error.
    let o = server.cli(&["cas", "k", "--new", "v"]);
    assert_eq!(o.status.code(), Some(2));
}
