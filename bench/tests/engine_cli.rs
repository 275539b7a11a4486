//! `corekv-bench engine` as a user runs it: db_bench lines that parse, with the right counts,
//! group commit visible in the detail lines, and bad flags refused.

// Test code: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use corekv_bench::engine::report::parse_db_bench_line;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corekv-bench"))
        .arg("engine")
        .args(args)
        .output()
        .unwrap()
}

/// Runs `corekv-bench engine ARGS`, which must succeed (stderr shown if not); its stdout.
fn bench_ok(args: &[&str]) -> String {
    let out = bench(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A database directory on the target's disk (O_DIRECT needs a real filesystem).
fn db_dir() -> tempfile::TempDir {
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// The engine runs as in `corekv-server`: transparent huge pages off for the process (the
/// allocator asks for them, and the kernel would zero 2 MiB at each first touch), unless asked.
#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let dir = db_dir();
    let db = format!("--db={}", dir.path().join("db").display());
    let header = |extra: &[&str]| {
        let mut args = vec!["--benchmarks=fillseq", "--num=10", db.as_str()];
        args.extend_from_slice(extra);
        let out = bench_ok(&args);
        out.lines().next().unwrap().to_string()
    };
    let default = header(&[]);
    assert!(default.ends_with("transparent huge pages off"), "{default}");
    let kept = header(&["--transparent-huge-pages"]);
    assert!(kept.ends_with("transparent huge pages allowed"), "{kept}");
}

#[test]
fn prints_db_bench_lines_for_every_benchmark() {
    let dir = db_dir();
    let db = dir.path().join("db");
    let stdout = bench_ok(&[
        "--benchmarks=fillseq,fillrandom,overwrite,readrandom,readseq,seekrandom",
        "--num=2000",
        "--reads=1500",
        "--key_size=16",
        "--value_size=100",
        "--compression_type=none",
        &format!("--db={}", db.display()),
    ]);
    let lines: Vec<_> = stdout.lines().filter_map(parse_db_bench_line).collect();
    let names: Vec<_> = lines.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fillseq",
            "fillrandom",
            "overwrite",
            "readrandom",
            "readseq",
            "seekrandom"
        ]
    );
    let ops = |name: &str| lines.iter().find(|l| l.name == name).unwrap().operations;
    assert_eq!(ops("fillseq"), 2000);
    assert_eq!(ops("overwrite"), 2000);
    assert_eq!(ops("readrandom"), 1500);
    assert_eq!(ops("seekrandom"), 1500);
    // readseq reads every key present: fillrandom + overwrite drew 4000 keys from 2000.
    assert!(
        ops("readseq") > 1000 && ops("readseq") <= 1500,
        "{}",
        ops("readseq")
    );
    assert!(
        lines
            .iter()
            .all(|l| l.ops_per_sec > 0 && l.micros_per_op > 0.0)
    );
    // Reads report how many keys they found, as db_bench does.
    let readrandom = stdout
        .lines()
        .find(|l| l.starts_with("readrandom   :"))
        .unwrap();
    assert!(readrandom.contains(" of 1500 found)"), "{readrandom}");
    // Each result has a detail line with latency percentiles.
    assert_eq!(stdout.matches(": latency_us p50=").count(), 6);
    // A given --db is kept.
    assert!(db.exists());
}

#[test]
fn durable_writers_share_fdatasyncs() {
    let dir = db_dir();
    let stdout = bench_ok(&[
        "--benchmarks=fillrandom",
        "--sync=1",
        "--threads=8",
        "--num=25",
        &format!("--db={}", dir.path().join("db").display()),
    ]);
    let line = stdout.lines().find_map(parse_db_bench_line).unwrap();
    assert_eq!(line.operations, 200);
    let detail = stdout.lines().find(|l| l.contains("latency_us")).unwrap();
    let field = |name: &str| -> f64 {
        let at = detail.find(&format!("{name}=")).unwrap() + name.len() + 1;
        detail[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("records"), 200.0);
    // Eight writers awaiting fdatasync: writes carry several records each.
    assert!(field("syncs") < 200.0, "{detail}");
    assert!(field("group_max") >= 2.0, "{detail}");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for bad in [
        &["--benchmarks=fillseq,nosuch"][..],
        &["--threads=0"],
        &["--key_size=4"],
        &["--sync=2"],
        &["--use_direct_reads=maybe"],
    ] {
        let out = bench(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid option"), "{bad:?}: {err}");
    }
}

#[test]
fn flush_and_compaction_show_in_the_engine_line() {
    let dir = db_dir();
    let stdout = bench_ok(&[
        "--benchmarks=fillrandom,flush,waitforcompaction,readrandom",
        "--num=3000",
        "--reads=500",
        "--write_buffer_size=65536",
        "--cache_size=1048576",
        &format!("--db={}", dir.path().join("db").display()),
    ]);
    // flush and waitforcompaction are steps, not db_bench result lines.
    let names: Vec<_> = stdout
        .lines()
        .filter_map(parse_db_bench_line)
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["fillrandom", "readrandom"]);
    let engine = stdout
        .lines()
        .rfind(|l| l.starts_with("readrandom   : engine since open:"))
        .unwrap();
    let field = |name: &str| -> f64 {
        let at = engine.find(&format!(" {name}=")).unwrap() + name.len() + 2;
        engine[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // 3000 writes of 116 bytes through a 64 KiB memtable: several flushes, tables on disk,
    // write amplification counted, the cache capped at what was asked.
    assert!(field("flushes") >= 2.0, "{engine}");
    assert!(field("flush_MiB") > 0.0, "{engine}");
    assert!(field("wamp_tables") > 0.5, "{engine}");
    assert_eq!(field("cap_MiB"), 1.0, "{engine}");
    assert!(!engine.contains("levels=[]"), "{engine}");
}
