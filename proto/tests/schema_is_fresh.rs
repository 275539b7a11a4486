//! The generated code in `proto/src/generated/` must match the schemas in `proto/schema/`:
//! `corekv.capnp` (the client protocol) and `peer.capnp` (Raft messages between nodes).
//!
//! Needs the `capnp` schema compiler (Debian: `apt-get install capnproto`; `.ci/run` installs
//! it). Without it the check cannot run: it is reported as skipped locally and fails under CI.
//! With `COREKV_REGEN_CAPNP=1` the committed files are rewritten instead of compared.

use std::path::Path;
use std::process::Command;

/// Each schema file and the generated file committed for it.
const SCHEMAS: [(&str, &str); 2] = [
    ("corekv.capnp", "corekv_capnp.rs"),
    ("peer.capnp", "peer_capnp.rs"),
];

#[test]
fn generated_code_matches_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if Command::new("capnp").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the capnp schema compiler (apt-get install capnproto)"
        );
        eprintln!("SKIPPED: `capnp` is not installed, cannot check proto/src/generated/");
        return;
    }
    let regenerate = std::env::var_os("COREKV_REGEN_CAPNP").is_some();
    let mut stale = Vec::new();
    for (schema, generated) in SCHEMAS {
        let committed_path = root.join("src/generated").join(generated);
        let out = tempfile::tempdir().unwrap();
        capnpc::CompilerCommand::new()
            .src_prefix(root.join("schema"))
            .file(root.join("schema").join(schema))
            .output_path(out.path())
            .run()
            .unwrap_or_else(|e| panic!("capnp compile of proto/schema/{schema}: {e}"));
        let fresh = std::fs::read_to_string(out.path().join(generated)).unwrap();
        if regenerate {
            std::fs::write(&committed_path, &fresh).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        if committed != fresh {
            stale.push(committed_path);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} stale: run `COREKV_REGEN_CAPNP=1 cargo test -p corekv-proto \
         --test schema_is_fresh` and commit the result"
    );
}
