//! `corekv-tune flamegraph` end to end: perf records a short CPU-bound program
//! (`examples/spin.rs`) with the software clock, and the SVG names its hot function. Nothing
//! here depends on timing: cpu-clock samples the program in proportion to the CPU time it
//! burns, and it burns a fixed amount of work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/spin`, which `cargo test` builds with the tests.
fn spin_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples/spin");
    assert!(
        path.exists(),
        "{path:?} is not built: `cargo test -p corekv-tune` builds the examples; \
         `cargo test --test flamegraph` alone does not (add `--examples` or run `cargo build -p corekv-tune --examples`)"
    );
    path
}

/// perf must be usable; the test says precisely why when it is not, rather than skipping.
fn require_perf() {
    let out = Command::new("perf").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`perf --version` failed: {}; tests/setup.sh installs linux-perf",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            panic!("perf is not installed ({e}); run tests/setup.sh, which installs linux-perf")
        }
    }
}

#[test]
fn flamegraph_of_a_command_names_its_hot_function() {
    require_perf();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let svg = dir.path().join("spin.svg");
    let data = dir.path().join("spin.perf.data");
    for call_graph in ["fp", "dwarf"] {
        let out = Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
            .args(["flamegraph", "--call-graph", call_graph, "--output"])
            .arg(&svg)
            .arg("--keep-data")
            .arg(&data)
            .arg("--")
            .arg(spin_example())
            .arg("20000000")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "corekv-tune flamegraph failed ({call_graph}); if perf cannot open events here, \
             check kernel.perf_event_paranoid (needs root or <= 1):\n{stderr}"
        );
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.starts_with("<?xml"),
            "not an SVG: {}",
            &text[..text.len().min(200)]
        );
        assert!(
            text.contains("spin_marker_for_flamegraph"),
            "{call_graph}: the hot function is missing from the flame graph; stderr:\n{stderr}"
        );
        assert!(data.exists(), "--keep-data did not keep the recording");

        // The kept recording renders again without recording.
        let again = dir.path().join("again.svg");
        let out = Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
            .args(["flamegraph", "--perf-data"])
            .arg(&data)
            .arg("--output")
            .arg(&again)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read_to_string(&again)
                .unwrap()
                .contains("spin_marker_for_flamegraph")
        );
        std::fs::remove_file(&data).unwrap();
    }
}

#[test]
fn flamegraph_refuses_ambiguous_or_missing_targets() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["flamegraph"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("exactly one of --pid"), "{err}");
    let (code, err) = run(&["flamegraph", "--pid", "1", "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("exactly one of --pid"), "{err}");
    let (code, err) = run(&["flamegraph", "--pid", "4294967295"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no process with pid"), "{err}");
}
