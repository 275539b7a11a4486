//! `corekv-cli` against a model: every command, binary keys and values (escaped and hex), exit
//! statuses (missing key, failed CAS, server errors, not sent, outcome unknown, output failure,
//! bad escapes), JSON output, and the interactive shell driven through its standard input.

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
    assert_eq!(stdout(&o), "", "absence is not a value");
    assert!(String::from_utf8_lossy(&o.stderr).contains("(absent)"));
    // A value that reads "(absent)" prints as a value.
    ok(server.cli(&["put", "odd", "(absent)"]));
    let o = server.cli(&["cas", "odd", "--expect", "x", "--new", "y"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(3), "(absent)\n")
    );
    ok(server.cli(&["delete", "odd"]));
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
    assert_eq!(puts, 7, "{stats}");
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

/// A stand-in server that accepts a connection, reads what the client sends, and then either
/// closes it without answering (`close_after_request`) or keeps it open in silence.
fn silent_server(close_after_request: bool) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 4096];
        // The bootstrap and the call arrive together; read until the client pauses.
        let mut got = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
            if close_after_request && got > 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
                break;
            }
        }
        assert!(got > 0, "the client sent its request");
        if !close_after_request {
            // Silence until the client gives up and closes.
            s.set_read_timeout(None).unwrap();
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    (addr, handle)
}

fn cli_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let o = corekv_tests::run("corekv-cli", &all);
    let text = stdout(&o);
    let value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {text:?}; stderr {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code(), value)
}

/// Each outcome a script must tell apart has its own exit status: not sent (5), refused (4),
/// sent with the outcome unknown (6: the connection dropped after the request, or no answer
/// within --timeout-ms), and the result not written (7).
#[test]
fn outcomes_have_their_own_exit_statuses() {
    // Not sent: nobody listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let (code, v) = cli_json(&["--addr", &addr, "put", "k", "v"]);
    assert_eq!(code, Some(5));
    assert_eq!(v["error"]["outcome"], "not_sent", "{v}");

    // Sent, then the connection dropped without an answer.
    let (addr, server) = silent_server(true);
    let (code, v) = cli_json(&["--addr", &addr.to_string(), "put", "k", "v"]);
    assert_eq!(code, Some(6), "{v}");
    assert_eq!(v["error"]["outcome"], "unknown", "{v}");
    server.join().unwrap();

    // Sent, and no answer within the timeout.
    let (addr, server) = silent_server(false);
    let started = std::time::Instant::now();
    let (code, v) = cli_json(&[
        "--addr",
        &addr.to_string(),
        "--timeout-ms",
        "300",
        "put",
        "k",
        "v",
    ]);
    assert_eq!(code, Some(6), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("300 ms"),
        "{v}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    server.join().unwrap();

    let dir = test_dir("cli-outcomes");
    let server = Server::start(dir.path(), ServerOptions::shards(1));
    let addr = server.addr.to_string();
    // Refused, typed.
    let (code, v) = cli_json(&["--addr", &addr, "put", "", "v"]);
    assert_eq!(code, Some(4));
    assert_eq!(v["error"]["outcome"], "refused");
    assert_eq!(v["error"]["code"], "empty_key", "{v}");
    // Done, but stdout cannot take the result.
    ok(server.cli(&["put", "k", "v"]));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(bin_path("corekv-cli"))
        .args(["--addr", &addr, "get", "k"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{o:?}");
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `--output json` on every command, checked against what was written.
#[test]
fn json_output_of_every_command_matches_a_model() {
    let dir = test_dir("cli-json");
    let server = Server::start(dir.path(), ServerOptions::default());
    let addr = server.addr.to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--addr", &addr, "--hex"];
        all.extend_from_slice(args);
        cli_json(&all)
    };
    let mut model: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for (k, v) in [("a1", "x"), ("a2", "yy"), ("a3", "\u{1}\u{ff}"), ("b", "z")] {
        let (code, r) = run(&["put", &hex(k), &hex(v)]);
        assert_eq!(code, Some(0));
        assert_eq!(r["ok"], true);
        model.insert(k.to_string(), (hex(v), r["sequence"].as_u64().unwrap()));
    }
    for (k, (v, seq)) in &model {
        let (code, r) = run(&["get", &hex(k)]);
        assert_eq!(code, Some(0));
        assert_eq!(r["found"], true);
        assert_eq!(r["value"], v.as_str(), "{k}");
        assert_eq!(r["sequence"], *seq, "{k}");
    }
    let (code, r) = run(&["get", &hex("nope")]);
    assert_eq!((code, &r["found"]), (Some(1), &serde_json::json!(false)));
    // Base64 without --hex.
    let (_, r) = cli_json(&["--addr", &addr, "get", "b"]);
    assert_eq!(r["value"], "eg==");

    // cas: a mismatch says what is there and its version, or null.
    let (a1_value, a1_seq) = model["a1"].clone();
    let (code, r) = run(&[
        "cas",
        &hex("a1"),
        "--expect",
        &hex("nope"),
        "--new",
        &hex("n"),
    ]);
    assert_eq!(code, Some(3));
    assert_eq!(r["succeeded"], false);
    assert_eq!(r["current"], a1_value.as_str());
    assert_eq!(r["sequence"], a1_seq);
    let (code, r) = run(&["cas", &hex("zz"), "--expect", &hex("x"), "--new", &hex("n")]);
    assert_eq!(code, Some(3));
    assert!(r["current"].is_null(), "{r}");
    let seq = a1_seq.to_string();
    let (code, r) = run(&[
        "cas",
        &hex("a1"),
        "--expect-sequence",
        &seq,
        "--new",
        &hex("n"),
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(r["succeeded"], true);
    assert!(r["sequence"].as_u64().unwrap() > a1_seq);

    // delete.
    let (code, r) = run(&["delete", &hex("b")]);
    assert_eq!((code, &r["ok"]), (Some(0), &serde_json::json!(true)));

    // scan: a page cut by --limit says more and where to continue.
    let (code, r) = run(&["scan", &hex("a"), &hex("b"), "--limit", "2"]);
    assert_eq!(code, Some(0));
    let keys: Vec<&str> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [hex("a1"), hex("a2")]);
    assert_eq!(r["more"], true);
    let next = r["continuation"].as_str().unwrap().to_string();
    let (_, r) = run(&["scan", &next, &hex("b")]);
    assert_eq!(r["entries"][0]["key"], hex("a3"));
    assert_eq!(r["entries"][0]["value"], hex("\u{1}\u{ff}"));
    assert_eq!(r["more"], false);
    assert!(r.get("continuation").is_none());

    // stats, topology, info.
    let (_, r) = run(&["stats"]);
    let shards = r["shards"].as_array().unwrap();
    assert_eq!(shards.len(), server.shards);
    let puts: u64 = shards
        .iter()
        .map(|s| s["counters"]["put_ops_total"].as_u64().unwrap())
        .sum();
    assert_eq!(puts, 4);
    let (_, r) = run(&["topology"]);
    assert_eq!(r["shard_count"], server.shards);
    assert_eq!(r["shards"][0]["port"], server.shard_addr(0).port());
    let (_, r) = run(&["info"]);
    assert_eq!(r["durability"], "sync");
    assert_eq!(r["limits"]["key_bytes_max"], 16384);
}

/// With no command, `corekv-cli` is a shell: commands one per line, results as in the one-shot
/// form, a failure reported without ending the session, `quit` leaving.
#[test]
fn the_shell_runs_commands_from_its_input() {
    let dir = test_dir("cli-shell");
    let server = Server::start(dir.path(), ServerOptions::default());
    let mut child = Command::new(bin_path("corekv-cli"))
        .args(["--addr", &server.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = "put user:1 \"alice smith\"\n\
                  get user:1\n\
                  \n\
                  get nobody\n\
                  put '' v\n\
                  frobnicate\n\
                  cas user:1 --expect \"alice smith\" --new bob\n\
                  get user:1 --sequence\n\
                  put 'a\\x00b' '\\xff'\n\
                  scan \"\" \"\"\n\
                  help\n\
                  quit\n\
                  put after quit\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("OK"));
    assert_eq!(lines.next(), Some("alice smith"));
    assert_eq!(lines.next(), Some("OK"), "{out}");
    let versioned = lines.next().unwrap();
    assert!(versioned.ends_with("\tbob"), "{versioned}");
    assert_eq!(lines.next(), Some("OK"));
    assert_eq!(lines.next(), Some("a\\0b\t\\xff"));
    assert_eq!(lines.next(), Some("user:1\tbob"));
    assert!(
        out.contains("Usage:") && out.contains("scan"),
        "help: {out}"
    );
    assert!(err.contains("(not found)"), "{err}");
    assert!(err.contains("empty_key"), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
    assert_eq!(
        server.cli(&["get", "after"]).status.code(),
        Some(1),
        "nothing runs after quit"
    );
}

#[test]
fn column_and_counter_commands_update_in_place() {
    let dir = test_dir("cli-columns");
    let server = Server::start(dir.path(), ServerOptions::default());
    // An `=` in a name is escaped; a value may hold `=`.
    assert_eq!(
        ok(server.cli(&[
            "put-entity",
            "row:1",
            "name=ann",
            "city=Oslo",
            "a\\x3db=x=y"
        ])),
        "OK\n"
    );
    assert_eq!(
        ok(server.cli(&["get-columns", "row:1"])),
        "a=b\tx=y\ncity\tOslo\nname\tann\n"
    );
    assert_eq!(
        ok(server.cli(&["update-columns", "row:1", "city=Rome", "--remove", "name"])),
        "OK\n"
    );
    assert_eq!(
        ok(server.cli(&["get-columns", "row:1", "city", "name", "missing"])),
        "city\tRome\n"
    );
    // A plain get returns the documented encoding; a column operation on a plain value is a
    // typed refusal (status 4) that changes nothing.
    let raw = server.cli(&["get", "row:1", "--raw"]);
    assert!(
        raw.stdout.starts_with(b"\xffENT\x02\x00\x00\x00"),
        "{raw:?}"
    );
    ok(server.cli(&["put", "plain", "v"]));
    let refused = server.cli(&["update-columns", "plain", "a=1"]);
    assert_eq!(refused.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("wrong_type"),
        "{refused:?}"
    );
    assert_eq!(ok(server.cli(&["get", "plain"])), "v\n");
    // Counters: the whole value, or a column; negative steps.
    assert_eq!(ok(server.cli(&["increment", "hits"])), "1\n");
    assert_eq!(ok(server.cli(&["increment", "hits", "--by", "-5"])), "-4\n");
    assert_eq!(ok(server.cli(&["get", "hits"])), "-4\n");
    assert_eq!(
        ok(server.cli(&["increment", "row:1", "--column", "visits", "--by", "3"])),
        "3\n"
    );
    assert_eq!(
        ok(server.cli(&["get-columns", "row:1", "visits"])),
        "visits\t3\n"
    );
    let json = ok(server.cli(&["--output", "json", "increment", "hits"]));
    let json: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(json["value"], -3);
    // Missing entity: status 1.
    assert_eq!(
        server.cli(&["get-columns", "nothing"]).status.code(),
        Some(1)
    );
    assert_eq!(
        server
            .cli(&["put-entity", "row:2", "no-equals-sign"])
            .status
            .code(),
        Some(2)
    );
}
