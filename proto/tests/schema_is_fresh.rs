//! The generated code in `proto/src/generated/` must match `proto/schema/corekv.capnp`.
//!
//! Needs the `capnp` schema compiler (Debian: `apt-get install capnproto`; `.ci/run` installs
//! it). Without it the check cannot run: it is reported as skipped locally and fails under CI.
//! With `COREKV_REGEN_CAPNP=1` the committed file is rewritten instead of compared.

use std::path::Path;
use std::process::Command;

#[test]
fn generated_code_matches_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed_path = root.join("src/generated/corekv_capnp.rs");
    if Command::new("capnp").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the capnp schema compiler (apt-get install capnproto)"
        );
        eprintln!("SKIPPED: `capnp` is not installed, cannot check {committed_path:?}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    capnpc::CompilerCommand::new()
        .src_prefix(root.join("schema"))
        .file(root.join("schema/corekv.capnp"))
        .output_path(out.path())
        .run()
        .expect("capnp compile of proto/schema/corekv.capnp");
    let fresh = std::fs::read_to_string(out.path().join("corekv_capnp.rs")).unwrap();
    if std::env::var_os("COREKV_REGEN_CAPNP").is_some() {
        std::fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{committed_path:?} is stale: run `COREKV_REGEN_CAPNP=1 cargo test -p corekv-proto \
         --test schema_is_fresh` and commit the result"
    );
}
