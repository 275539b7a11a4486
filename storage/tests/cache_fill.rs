//! The block cache fill by flushes (`Options::block_cache_fill_on_table_write`) under write
//! pressure: a flush with another memtable waiting behind it stops filling, so that it ends
//! sooner; a flush that keeps up fills.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run, small_tree, test_dir};
use corekv_storage::{Engine, Options};

fn key(memtable: u64, i: u64) -> Vec<u8> {
    format!("m{memtable}-key{i:08}").into_bytes()
}

#[test]
fn a_flush_with_memtables_waiting_behind_it_stops_filling_the_block_cache() {
    let dir = test_dir("fill-behind");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(
            &path,
            Options {
                // No check-ins: no flush runs while the loop below writes (small memtables
                // fill well before glommio's 100 ms preemption), so two memtables queue.
                background_poll_interval_us: 0,
                memtable_size_bytes_max: 256 << 10,
                memtables_immutable_max: 3,
                block_cache_fill_on_table_write: true,
                block_cache_size_bytes: 32 << 20,
                ..small_tree()
            },
        )
        .await
        .unwrap();
        let value = vec![b'v'; 200];
        // Memtable 0 fills and turns immutable, then memtable 1; the writes to memtable 2 are
        // few enough to leave it active.
        let mut written = [0u64; 3];
        for (memtable, n) in written.iter_mut().enumerate() {
            let memtable = memtable as u64;
            let mut i = 0;
            loop {
                if e.stats().memtables_immutable > memtable || (memtable == 2 && i == 10) {
                    break;
                }
                e.put(&key(memtable, i), &value).await.unwrap();
                i += 1;
            }
            *n = i;
        }
        let st = e.stats();
        assert_eq!((st.memtables_immutable, st.flushes_total), (2, 0), "{st:?}");
        e.wait_for_background().await.unwrap();
        let st = e.stats();
        assert_eq!(st.flushes_total, 2, "{st:?}");
        assert_eq!(st.flush_cache_fill_stops_total, 1, "{st:?}");

        // The first flush (memtable 0, with memtable 1 waiting) filled nothing; the second,
        // with nothing behind it, cached every block it wrote.
        let misses = |before: u64| e.stats().block_cache_misses_total - before;
        let before = e.stats().block_cache_misses_total;
        for i in 0..written[1] {
            assert_eq!(e.get(&key(1, i)).await.unwrap(), Some(value.clone()));
        }
        assert_eq!(misses(before), 0, "the second flush's blocks were cached");
        let before = e.stats().block_cache_misses_total;
        for i in 0..written[0] {
            assert_eq!(e.get(&key(0, i)).await.unwrap(), Some(value.clone()));
        }
        assert!(
            misses(before) > 0,
            "the first flush's blocks were not cached"
        );
        e.close().await.unwrap();
    });
}
