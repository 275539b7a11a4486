//! `corekv-tune inspect` and `plan` as a user runs them: on this machine, where the JSON must
//! say what `/proc` and `/sys` say, and on synthetic trees with known answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use common::fixture::FakeHost;

fn tune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corekv-tune"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "corekv-tune failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn sys(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn inspect_json_on_this_machine_reports_what_sys_says() {
    // A data directory on the same filesystem as the build (a real disk, not tmpfs).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let out = tune(&["inspect", "--json", "--dir", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();

    let online: corekv_server::cpuset::CpuSet =
        sys("/sys/devices/system/cpu/online").parse().unwrap();
    assert_eq!(v["cpus"]["online"], online.to_string());
    assert_eq!(v["cpus"]["logical"], online.len());
    let cores = v["cpus"]["physical_cores"].as_u64().unwrap() as usize;
    assert!(cores >= 1 && cores <= online.len());
    assert_eq!(v["cpus"]["smt_active"], cores < online.len());

    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    if Path::new(thp).exists() {
        let text = sys(thp);
        let active = text.split('[').nth(1).unwrap().split(']').next().unwrap();
        assert_eq!(v["system"]["thp_enabled"], active);
    }
    let limits = sys("/proc/self/limits");
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(v["system"]["open_files"]["soft"].to_string(), nofile[3]);

    // The data directory's device is the one `stat` names, as /sys/dev/block knows it.
    let dev = std::fs::metadata(&dir).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let data = &v["data"];
    assert_eq!(data["dir"], dir.to_str().unwrap());
    assert_eq!(data["mount"]["dev"], format!("{major}:{minor}"));
    if let Ok(real) = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")) {
        let name = real.file_name().unwrap().to_str().unwrap();
        assert_eq!(data["device"], name);
        let disk = &data["disks"][0];
        let whole = if real.join("partition").exists() {
            real.parent().unwrap().to_path_buf()
        } else {
            real.clone()
        };
        if !real
            .join("slaves")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            assert_eq!(disk["name"], whole.file_name().unwrap().to_str().unwrap());
            let rot = sys(whole.join("queue/rotational").to_str().unwrap());
            assert_eq!(disk["rotational"], rot == "1");
            let nr: u64 = sys(whole.join("queue/nr_requests").to_str().unwrap())
                .parse()
                .unwrap();
            assert_eq!(disk["nr_requests"], nr);
        }
    }
    // Every recommendation carries a command.
    for r in v["recommendations"].as_array().unwrap() {
        assert!(!r["command"].as_str().unwrap().is_empty(), "{r}");
    }
}

#[test]
fn inspect_table_has_every_section() {
    let out = tune(&["inspect", "--dir", env!("CARGO_TARGET_TMPDIR")]);
    let text = stdout(&out);
    for section in [
        "CPUs",
        "Kernel and limits",
        "Data directory",
        "Network interrupts",
        "Recommendations",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(section)),
            "no {section:?} section:\n{text}"
        );
    }
}

#[test]
fn plan_on_synthetic_trees_prints_the_server_command() {
    let cases = [
        (
            FakeHost::one_socket(4, false),
            "corekv-server --cores 0-3 --data-dir /srv/kv",
        ),
        (
            FakeHost::one_socket(4, true),
            "corekv-server --cores 0-3 --data-dir /srv/kv",
        ),
        (
            FakeHost::two_nodes(2, true),
            "numactl --localalloc corekv-server --cores 0-3 --data-dir /srv/kv",
        ),
        (
            FakeHost::two_nodes(2, false),
            "numactl --localalloc corekv-server --cores 0-3 --data-dir /srv/kv",
        ),
    ];
    for (h, want) in cases {
        h.file("proc/self/mountinfo", "1 0 8:0 / / rw - ext4 /dev/sda rw\n");
        let root = h.root().to_str().unwrap();
        let text = stdout(&tune(&["plan", "--root", root, "--dir", "/srv/kv"]));
        assert_eq!(text.lines().last().unwrap(), want, "{text}");
        let json = stdout(&tune(&["plan", "--root", root, "--json"]));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["shards"], 4);
    }
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let h = FakeHost::one_socket(2, false);
    let root = h.root().to_str().unwrap();
    let out = tune(&["plan", "--root", root, "--max-shards", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-shards must be at least 1"));

    let out = tune(&["inspect", "--root", "/nonexistent-root"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("/nonexistent-root/sys"),
        "{err}"
    );

    let out = tune(&["plan", "--root", root, "--dir", "relative"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be absolute"));

    let out = tune(&["plan", "--numa", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
}
