//! Shared helpers for the storage integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod wal;

use std::future::Future;
use std::path::PathBuf;

use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` on a fresh glommio executor with a small io_memory (tests run many in parallel).
pub fn run<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
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

/// A fresh directory on the target's disk (never tmpfs: O_DIRECT needs a real filesystem).
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(base)
        .unwrap()
}

/// True when `COREKV_LONG_TESTS=1`: tests then run their long variants.
pub fn long_tests() -> bool {
    std::env::var("COREKV_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// Options that make a small data set flush and compact like a large one.
pub fn small_tree() -> corekv_storage::Options {
    corekv_storage::Options {
        durability: corekv_storage::Durability::None,
        memtable_size_bytes_max: 1 << 20,
        target_file_size_bytes: 512 << 10,
        level1_size_bytes_max: 1 << 20,
        block_cache_size_bytes: 4 << 20,
        wal_segment_size_bytes: 1 << 20,
        ..corekv_storage::Options::default()
    }
}

/// Opens an engine in `dir` with `faults` injected into its I/O (none: a plain open).
pub async fn open_with_faults(
    dir: &std::path::Path,
    options: corekv_storage::Options,
    faults: Option<corekv_storage::io::FaultInjector>,
) -> corekv_storage::Result<corekv_storage::Engine> {
    let hooks = corekv_storage::OpenHooks {
        faults,
        ..corekv_storage::OpenHooks::default()
    };
    corekv_storage::Engine::open_with_hooks(dir, options, hooks).await
}

/// Opens an engine in `dir` whose clock only moves when the test advances it (TTL tests).
pub async fn open_with_manual_clock(
    dir: &std::path::Path,
    options: corekv_storage::Options,
) -> (corekv_storage::Engine, corekv_storage::Clock) {
    let clock = corekv_storage::Clock::manual(1_000_000);
    let hooks = corekv_storage::OpenHooks {
        clock: Some(clock.clone()),
        faults: None,
    };
    let e = corekv_storage::Engine::open_with_hooks(dir, options, hooks)
        .await
        .unwrap();
    (e, clock)
}
