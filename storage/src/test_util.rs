//! Helpers for the crate's unit tests that need a glommio executor and a real disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};

use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` on a fresh glommio executor with a small io_memory (tests run many in parallel).
pub(crate) fn run<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// A fresh directory on the repository's disk (never tmpfs: O_DIRECT needs a real
/// filesystem), holding a non-empty probe file.
pub(crate) fn test_dir(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/unit-test-tmp");
    std::fs::create_dir_all(&base).unwrap();
    let d = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(base)
        .unwrap();
    std::fs::write(d.path().join("PROBE"), vec![1u8; 4096]).unwrap();
    d
}

/// Opens the probe file with O_DIRECT first (see `Io::probe`): call at the start of every
/// executor that reads DMA files.
pub(crate) async fn probe(dir: &Path) {
    crate::io::Io::default()
        .probe(&dir.join("PROBE"))
        .await
        .unwrap();
}

/// Flips bits of the byte at `offset` of `path` (buffered write, then synced so O_DIRECT
/// reads see it).
pub(crate) fn damage(path: &Path, offset: u64, xor: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= xor;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}
