//! Clients other than the test harness: a Python client built with pycapnp from the schema
//! file alone, and the two Rust examples (glommio and tokio) in proto/examples/.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use corekv_tests::{Server, ServerOptions, example_path, repo_root, test_dir};

fn run_pycapnp_client(mode: &[&str]) {
    let dir = test_dir("pycapnp");
    let server = Server::start(dir.path(), ServerOptions::default());
    let script = repo_root().join("tests/python/pycapnp_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .args(mode)
        .output()
        .expect("run python3 (tests/setup.sh installs pycapnp)");
    assert!(
        out.status.success(),
        "pycapnp client failed (install it with `bash tests/setup.sh`):\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn a_pycapnp_client_built_from_the_schema_alone_works() {
    run_pycapnp_client(&[]);
}

/// A reply must fit what a client with default settings reads (64 MiB): a batch of 9 gets of an
/// 8 MiB value, within every request limit, is answered with the gets that fit and
/// `batchTooLarge` for the rest, on a connection that stays usable.
#[test]
fn a_batch_reply_fits_a_pycapnp_client_with_default_limits() {
    run_pycapnp_client(&["big-reply"]);
}

#[test]
fn the_rust_examples_run_on_glommio_and_tokio() {
    let dir = test_dir("examples");
    let server = Server::start(dir.path(), ServerOptions::default());
    for example in ["glommio_client", "tokio_client"] {
        let out = Command::new(example_path(example))
            .arg(server.addr.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{example} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("ok: 100 keys"), "{example}: {stdout}");
    }
}
