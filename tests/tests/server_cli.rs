//! The server binary's command line: help that explains every setting, clear errors on bad input.

use corekv_tests::run;

#[test]
fn help_explains_every_setting() {
    let out = run("corekv-server", &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--shards",
        "--cores",
        "--durability",
        "--metrics",
        "--config",
        "--log-format",
        "--log-level",
        "--idle-poll-us",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    assert!(
        help.contains("periodic:MS"),
        "durability modes are not explained:\n{help}"
    );
}

#[test]
fn bad_flags_fail_with_a_clear_message_and_exit_code_2() {
    for (args, needle) in [
        (&["--durability", "maybe"][..], "periodic:MS"),
        (&["--cores", "3-1"][..], "backwards"),
        (&["--shards", "100000"][..], "one shard per core"),
        (
            &["--listen", "not-an-address"][..],
            "invalid socket address",
        ),
        (
            &["--idle-poll-us", "5000000"][..],
            "`idle_poll_us` is 5000000",
        ),
        (
            &["--config", "/nonexistent/corekv.toml"][..],
            "cannot read config file",
        ),
    ] {
        let out = run("corekv-server", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}:\n{err}"
        );
    }
}
