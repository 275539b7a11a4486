//! `corekv-tests`: a harness for end-to-end tests that start real corekv processes.
//!
//! The binaries are the ones `cargo build --workspace --bins` (run by `tests/run.sh`) puts next
//! to the test executables (`target/<profile>/corekv-server`, ...). Every process a test starts is killed when its
//! handle drops, and every data directory lives on disk (under the target directory, never
//! tmpfs: O_DIRECT needs a real filesystem) and is removed afterwards.

// This crate is test code through and through: a failed set-up step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a workspace binary built alongside this test executable.
///
/// # Panics
/// If the binary has not been built: `bash tests/run.sh` builds every binary before testing
/// (plain `cargo test` does not build other packages' binaries).
pub fn bin_path(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/; binaries in target/<profile>/.
    let exe = std::env::current_exe().expect("path of the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{path:?} is not built: run `bash tests/run.sh`, or `cargo build --workspace --bins` first"
    );
    path
}

/// A directory on disk for one test's data, removed when dropped.
pub fn test_dir(tag: &str) -> tempfile::TempDir {
    let base = std::env::var_os("COREKV_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("corekv-tests"));
    std::fs::create_dir_all(&base).expect("create the test base directory");
    tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir_in(base)
        .expect("create a test directory")
}

/// Runs a binary to completion with `args`, returning its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin_path(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}
