//! The engine API contract (notes/ENGINE_API.md): every call, its typed errors, and the
//! promise that a rejected write changes nothing.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{open_with_manual_clock, run, test_dir};
use corekv_storage::batch::FRAME_HEAD_BYTES;
use corekv_storage::{
    CasOutcome, Durability, EncodedBatch, Engine, Error, Limit, Options, ScanRange, WriteBatch,
};

fn range(start: &[u8], end: Option<&[u8]>, limit: usize, reverse: bool) -> ScanRange {
    ScanRange {
        start: start.to_vec(),
        end: end.map(<[u8]>::to_vec),
        limit,
        reverse,
    }
}

fn keys(page: &corekv_storage::ScanPage) -> Vec<&[u8]> {
    page.entries.iter().map(|(k, _)| k.as_slice()).collect()
}

#[test]
fn put_get_delete_and_sequence_numbers_grow() {
    let dir = test_dir("api-basic");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, Options::default()).await.unwrap();
        let s1 = e.put(b"a", b"1").await.unwrap();
        let s2 = e.put(b"b", b"2").await.unwrap();
        let s3 = e.put(b"a", b"3").await.unwrap();
        assert!(s1 < s2 && s2 < s3, "{s1} {s2} {s3}");
        assert_eq!(e.get(b"a").await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(e.get(b"b").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(e.get(b"zz").await.unwrap(), None);
        let s4 = e.delete(b"a").await.unwrap();
        assert_eq!(s4, s3 + 1);
        assert_eq!(e.get(b"a").await.unwrap(), None);
        // An empty value is a value, not a delete.
        e.put(b"empty", b"").await.unwrap();
        assert_eq!(e.get(b"empty").await.unwrap(), Some(Vec::new()));
        let st = e.stats();
        assert_eq!(st.writes_total, 5);
        assert_eq!(st.seq_last, st.seq_visible);
        assert_eq!(st.seq_last, 5);
        e.close().await.unwrap();
    });
}

#[test]
fn a_batch_is_atomic_and_numbered_op_by_op() {
    let dir = test_dir("api-batch");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let opts = Options {
            key_size_bytes_max: 8,
            ..Options::default()
        };
        let e = Engine::open(&path, opts).await.unwrap();
        e.put(b"x", b"old").await.unwrap();
        let mut b = WriteBatch::new();
        b.put(b"a", b"1").delete(b"x").put(b"a", b"2");
        let last = e.write(b).await.unwrap();
        assert_eq!(last, 4, "three ops after seq 1");
        assert_eq!(e.get(b"a").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(e.get(b"x").await.unwrap(), None);

        // One bad op rejects the whole batch and changes nothing.
        let mut bad = WriteBatch::new();
        bad.put(b"c", b"3").put(b"waytoolongkey", b"v");
        match e.write(bad).await {
            Err(Error::LimitExceeded {
                limit: Limit::KeySize,
                actual: 13,
                max: 8,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.get(b"c").await.unwrap(), None);
        assert_eq!(e.stats().seq_last, 4);
        assert!(matches!(
            e.write(WriteBatch::new()).await,
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn a_batch_encoded_elsewhere_writes_as_the_batch_would_and_is_logged() {
    let dir = test_dir("api-encoded");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let opts = Options {
            key_size_bytes_max: 8,
            ..Options::default()
        };
        let clock = corekv_storage::Clock::manual(1_000_000);
        let hooks = || corekv_storage::OpenHooks {
            clock: Some(clock.clone()),
            faults: None,
        };
        let e = Engine::open_with_hooks(&path, opts.clone(), hooks())
            .await
            .unwrap();
        e.put(b"x", b"old").await.unwrap();
        let mut b = WriteBatch::new();
        b.put(b"a", b"1")
            .delete(b"x")
            .put_with_ttl(b"t", b"2", Duration::from_secs(3600));
        let framed = b.into_framed([9; FRAME_HEAD_BYTES]).unwrap();
        assert_eq!(&framed[..FRAME_HEAD_BYTES], &[9; FRAME_HEAD_BYTES]);
        let encoded = EncodedBatch::parse(&framed[FRAME_HEAD_BYTES..]).unwrap();
        assert_eq!((encoded.len(), encoded.bad_ttl()), (3, None));
        assert_eq!(
            e.write_encoded(encoded).await.unwrap(),
            4,
            "three ops after seq 1"
        );
        assert_eq!(e.get(b"a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(b"x").await.unwrap(), None);
        assert_eq!(e.get(b"t").await.unwrap(), Some(b"2".to_vec()));

        // The same checks as a batch's: one bad op rejects it all, nothing changes.
        let mut bad = WriteBatch::new();
        bad.put(b"c", b"3").put(b"waytoolongkey", b"v");
        let framed = bad.into_framed([0; FRAME_HEAD_BYTES]).unwrap();
        let encoded = EncodedBatch::parse(&framed[FRAME_HEAD_BYTES..]).unwrap();
        assert!(matches!(
            e.write_encoded(encoded).await,
            Err(Error::LimitExceeded {
                limit: Limit::KeySize,
                ..
            })
        ));
        // A TTL of 0 ms, which `WriteBatch` cannot encode but bytes can hold.
        let mut zero_ttl = WriteBatch::new();
        zero_ttl.put_with_ttl(b"c", b"3", Duration::from_millis(1));
        let mut framed = zero_ttl.into_framed([0; FRAME_HEAD_BYTES]).unwrap();
        let at = framed.len() - 8;
        framed[at..].copy_from_slice(&0u64.to_le_bytes());
        let encoded = EncodedBatch::parse(&framed[FRAME_HEAD_BYTES..]).unwrap();
        assert!(encoded.bad_ttl().is_some());
        assert!(matches!(
            e.write_encoded(encoded).await,
            Err(Error::InvalidArgument(_))
        ));
        let empty = EncodedBatch::parse(&[]).unwrap();
        assert!(matches!(
            e.write_encoded(empty).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            EncodedBatch::parse(&framed[FRAME_HEAD_BYTES..at]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(e.get(b"c").await.unwrap(), None);
        assert_eq!(e.stats().seq_last, 4);
        e.close().await.unwrap();

        // In the engine's own WAL: reopened, the write is there, its TTL with it.
        let e = Engine::open_with_hooks(&path, opts, hooks()).await.unwrap();
        assert_eq!(e.get(b"a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(b"x").await.unwrap(), None);
        assert_eq!(e.get(b"t").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(e.stats().seq_last, 4);
        clock.advance_ms(3_600_000 - 1);
        assert_eq!(e.get(b"t").await.unwrap(), Some(b"2".to_vec()));
        clock.advance_ms(1);
        assert_eq!(e.get(b"t").await.unwrap(), None);
        assert_eq!(e.get(b"a").await.unwrap(), Some(b"1".to_vec()));
        e.close().await.unwrap();
    });
}

#[test]
fn limits_and_bad_arguments_return_typed_errors_and_change_nothing() {
    let dir = test_dir("api-limits");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let opts = Options {
            key_size_bytes_max: 4,
            value_size_bytes_max: 10,
            batch_size_bytes_max: 20,
            memtable_size_bytes_max: 4096,
            ..Options::default()
        };
        let e = Engine::open(&path, opts).await.unwrap();
        assert!(matches!(e.put(b"", b"v").await, Err(Error::EmptyKey)));
        assert!(matches!(e.delete(b"").await, Err(Error::EmptyKey)));
        assert!(matches!(e.get(b"").await, Err(Error::EmptyKey)));
        assert!(matches!(
            e.put(b"12345", b"v").await,
            Err(Error::LimitExceeded {
                limit: Limit::KeySize,
                ..
            })
        ));
        assert!(matches!(
            e.put(b"k", &[0; 11]).await,
            Err(Error::LimitExceeded {
                limit: Limit::ValueSize,
                actual: 11,
                max: 10
            })
        ));
        let mut b = WriteBatch::new();
        b.put(b"k1", &[0; 10]).put(b"k2", &[0; 10]);
        assert!(matches!(
            e.write(b).await,
            Err(Error::LimitExceeded {
                limit: Limit::BatchSize,
                actual: 24,
                max: 20
            })
        ));
        for ttl in [Duration::ZERO, Duration::from_secs(200 * 365 * 24 * 3600)] {
            assert!(matches!(
                e.put_with_ttl(b"k", b"v", ttl).await,
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(matches!(
            e.compare_and_set(b"k", None, None, Some(Duration::from_secs(1)))
                .await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            e.scan(&range(b"", None, 0, false), None).await,
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(e.stats().seq_last, 0, "nothing was written");
        assert!(e.stats().rejected_invalid_total >= 7);

        // A full memtable is no longer an error: it is flushed to a table while writes go on.
        for n in 0..2000u32 {
            e.put(format!("{:04}", n % 10_000).as_bytes(), &[7; 10])
                .await
                .unwrap();
        }
        let st = e.stats();
        assert!(st.flushes_total > 5, "{st:?}");
        assert!(st.memtable_bytes <= 4096);
        for n in (0..2000u32).step_by(97) {
            assert_eq!(
                e.get(format!("{n:04}").as_bytes()).await.unwrap(),
                Some(vec![7; 10])
            );
        }
    });
}

#[test]
fn overwrites_do_not_grow_the_memtable_without_snapshots() {
    let dir = test_dir("api-overwrite");
    let path = dir.path().to_path_buf();
    run(move || async move {
        // Durability is beside the point here: skip the fsyncs.
        let opts = Options {
            durability: Durability::None,
            ..Options::default()
        };
        let e = Engine::open(&path, opts).await.unwrap();
        e.put(b"k", &[1; 100]).await.unwrap();
        let one = e.stats().memtable_bytes;
        for i in 0..1000u32 {
            e.put(b"k", &[(i % 250) as u8; 100]).await.unwrap();
        }
        // At most two versions stay: the newest and the one readers saw when it was written.
        let st = e.stats();
        assert_eq!(st.memtable_versions, 2);
        assert!(
            st.memtable_bytes < 2 * one,
            "{} vs {one}",
            st.memtable_bytes
        );
        // A snapshot pins the version it sees.
        let snap = e.snapshot();
        for v in [&b"new"[..], b"newer", b"newest"] {
            e.put(b"k", v).await.unwrap();
        }
        // The snapshot's version, the one the read point saw, and the newest.
        assert_eq!(e.stats().memtable_versions, 3);
        assert_eq!(
            e.get_at(b"k", &snap).await.unwrap(),
            Some(vec![(999 % 250) as u8; 100])
        );
        drop(snap);
        e.put(b"k", b"last").await.unwrap();
        assert_eq!(e.stats().memtable_versions, 2);
    });
}

#[test]
fn snapshots_see_a_fixed_point_in_time() {
    let dir = test_dir("api-snapshot");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, Options::default()).await.unwrap();
        e.put(b"a", b"1").await.unwrap();
        e.put(b"b", b"1").await.unwrap();
        let snap = e.snapshot();
        assert_eq!(e.stats().snapshots_live, 1);
        e.put(b"a", b"2").await.unwrap();
        e.delete(b"b").await.unwrap();
        e.put(b"c", b"2").await.unwrap();
        assert_eq!(e.get_at(b"a", &snap).await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get_at(b"b", &snap).await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get_at(b"c", &snap).await.unwrap(), None);
        let page = e
            .scan(&range(b"", None, 10, false), Some(&snap))
            .await
            .unwrap();
        assert_eq!(
            page.entries,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"1".to_vec())
            ]
        );
        let now = e.scan(&range(b"", None, 10, false), None).await.unwrap();
        assert_eq!(keys(&now), vec![&b"a"[..], b"c"]);
        // A snapshot from another engine is refused.
        let dir2 = test_dir("api-snapshot-other");
        let other = Engine::open(dir2.path(), Options::default()).await.unwrap();
        assert!(matches!(
            other.get_at(b"a", &snap).await,
            Err(Error::InvalidArgument(_))
        ));
        drop(snap);
        assert_eq!(e.stats().snapshots_live, 0);
    });
}

#[test]
fn scans_go_both_ways_with_limits_and_continuation() {
    let dir = test_dir("api-scan");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let opts = Options {
            scan_entries_max: 3,
            ..Options::default()
        };
        let e = Engine::open(&path, opts).await.unwrap();
        for k in [b"a", b"b", b"c", b"d", b"e", b"f"] {
            e.put(k, k).await.unwrap();
        }
        e.delete(b"c").await.unwrap();
        let p = e
            .scan(&range(b"b", Some(b"f"), 10, false), None)
            .await
            .unwrap();
        assert_eq!(keys(&p), vec![&b"b"[..], b"d", b"e"]);
        assert!(!p.more);
        let p = e
            .scan(&range(b"b", Some(b"f"), 2, true), None)
            .await
            .unwrap();
        assert_eq!(keys(&p), vec![&b"e"[..], b"d"]);
        assert!(p.more);
        // Continue the reverse scan below the last key.
        let p = e
            .scan(&range(b"b", Some(b"d"), 2, true), None)
            .await
            .unwrap();
        assert_eq!(keys(&p), vec![&b"b"[..]]);
        assert!(!p.more);
        // A limit above scan_entries_max is clamped and says `more`.
        let p = e.scan(&range(b"", None, 1000, false), None).await.unwrap();
        assert_eq!(keys(&p), vec![&b"a"[..], b"b", b"d"]);
        assert!(p.more);
        let p = e.scan(&range(b"z", None, 5, false), None).await.unwrap();
        assert!(p.entries.is_empty() && !p.more);
        let p = e
            .scan(&range(b"d", Some(b"a"), 5, false), None)
            .await
            .unwrap();
        assert!(p.entries.is_empty() && !p.more);
        assert_eq!(e.stats().scans_total, 6);
    });
}

#[test]
fn ttl_entries_vanish_when_they_expire() {
    let dir = test_dir("api-ttl");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (e, clock) = open_with_manual_clock(&path, Options::default()).await;
        e.put_with_ttl(b"t", b"v", Duration::from_millis(500))
            .await
            .unwrap();
        e.put(b"u", b"forever").await.unwrap();
        let mut b = WriteBatch::new();
        b.put_with_ttl(b"w", b"batch", Duration::from_secs(2));
        e.write(b).await.unwrap();
        clock.advance_ms(499);
        assert_eq!(e.get(b"t").await.unwrap(), Some(b"v".to_vec()));
        clock.advance_ms(1);
        assert_eq!(e.get(b"t").await.unwrap(), None);
        let p = e.scan(&range(b"", None, 10, false), None).await.unwrap();
        assert_eq!(keys(&p), vec![&b"u"[..], b"w"]);
        clock.advance_ms(1500);
        assert_eq!(e.get(b"w").await.unwrap(), None);
        // An expired key counts as absent for compare-and-set.
        assert_eq!(
            e.compare_and_set(b"t", None, Some(b"again"), None)
                .await
                .unwrap(),
            CasOutcome::Applied(4)
        );
        assert_eq!(e.get(b"t").await.unwrap(), Some(b"again".to_vec()));
    });
}

#[test]
fn compare_and_set_applies_only_on_a_match() {
    let dir = test_dir("api-cas");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, Options::default()).await.unwrap();
        assert_eq!(
            e.compare_and_set(b"k", None, Some(b"1"), None)
                .await
                .unwrap(),
            CasOutcome::Applied(1)
        );
        assert_eq!(
            e.compare_and_set(b"k", None, Some(b"2"), None)
                .await
                .unwrap(),
            CasOutcome::Mismatch {
                current: Some(b"1".to_vec()),
                current_seq: 1,
            }
        );
        assert_eq!(
            e.compare_and_set(b"k", Some(b"1"), Some(b"2"), None)
                .await
                .unwrap(),
            CasOutcome::Applied(2)
        );
        assert_eq!(
            e.compare_and_set(b"k", Some(b"2"), None, None)
                .await
                .unwrap(),
            CasOutcome::Applied(3)
        );
        assert_eq!(e.get(b"k").await.unwrap(), None);
        assert_eq!(
            e.compare_and_set(b"k", Some(b"2"), Some(b"x"), None)
                .await
                .unwrap(),
            CasOutcome::Mismatch {
                current: None,
                current_seq: 0,
            }
        );
        let st = e.stats();
        assert_eq!((st.cas_applied_total, st.cas_mismatch_total), (3, 2));
        assert!(matches!(
            e.compare_and_set(b"", None, Some(b"x"), None).await,
            Err(Error::EmptyKey)
        ));
    });
}

#[test]
fn close_and_locking() {
    let dir = test_dir("api-close");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, Options::default()).await.unwrap();
        match Engine::open(&path, Options::default()).await {
            Err(Error::Locked { path: p }) => assert!(p.ends_with("LOCK")),
            other => panic!("unexpected {other:?}"),
        }
        let clone = e.clone();
        e.close().await.unwrap();
        assert!(matches!(clone.put(b"k", b"v").await, Err(Error::Closed)));
        assert!(matches!(clone.get(b"k").await, Err(Error::Closed)));
        drop(clone);
        // The lock is released with the last handle.
        let again = Engine::open(&path, Options::default()).await.unwrap();
        again.close().await.unwrap();
        let bad = Options {
            wal_segment_size_bytes: 1000,
            ..Options::default()
        };
        assert!(matches!(
            Engine::open(&path, bad).await,
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn counters_have_unique_unit_bearing_names() {
    let dir = test_dir("api-stats");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, Options::default()).await.unwrap();
        e.put(b"k", b"v").await.unwrap();
        e.get(b"k").await.unwrap();
        let counters = e.stats().counters();
        let mut names: Vec<_> = counters.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), counters.len(), "duplicate counter names");
        let get = |name: &str| counters.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(get("writes_total"), 1);
        assert_eq!(get("gets_total"), 1);
        assert_eq!(get("durability_sync"), 1);
        assert_eq!(get("write_payload_bytes_total"), 2);
        assert!(get("memtable_bytes") > 0);
    });
}

/// A read reports the sequence number of the write that stored its value, in the memtable and
/// in tables after a flush and a reopen; a compare-and-set can expect that number, and a change
/// to another value and back (ABA) does not match it.
#[test]
fn versions_are_read_and_compare_and_set_can_expect_them() {
    use corekv_storage::Expect;
    let dir = test_dir("api-versions");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let e = Engine::open(&path, Options::default()).await.unwrap();
        let first = e.put(b"k", b"a").await.unwrap();
        assert_eq!(
            e.get_versioned(b"k").await.unwrap(),
            Some((b"a".to_vec(), first))
        );
        assert_eq!(e.get_versioned(b"missing").await.unwrap(), None);
        // a -> b -> a: the same bytes, another version.
        e.put(b"k", b"b").await.unwrap();
        let again = e.put(b"k", b"a").await.unwrap();
        assert_eq!(
            e.compare_and_set_expecting(b"k", Expect::Sequence(first), Some(b"c"), None)
                .await
                .unwrap(),
            CasOutcome::Mismatch {
                current: Some(b"a".to_vec()),
                current_seq: again,
            }
        );
        // Versions survive a flush into a table and a reopen.
        e.flush().await.unwrap();
        drop(e);
        let e = Engine::open(&path, Options::default()).await.unwrap();
        assert_eq!(
            e.get_versioned(b"k").await.unwrap(),
            Some((b"a".to_vec(), again))
        );
        let CasOutcome::Applied(written) = e
            .compare_and_set_expecting(b"k", Expect::Sequence(again), Some(b"c"), None)
            .await
            .unwrap()
        else {
            panic!("the expected version was the live one");
        };
        assert_eq!(
            e.get_versioned(b"k").await.unwrap(),
            Some((b"c".to_vec(), written))
        );
        // A deleted key has no version to match, except 0, which stands for absence (what a
        // failed compare-and-set reports for it).
        e.delete(b"k").await.unwrap();
        assert!(matches!(
            e.compare_and_set_expecting(b"k", Expect::Sequence(written), None, None)
                .await
                .unwrap(),
            CasOutcome::Mismatch {
                current: None,
                current_seq: 0
            }
        ));
        assert!(matches!(
            e.compare_and_set_expecting(b"k", Expect::Sequence(0), Some(b"back"), None)
                .await
                .unwrap(),
            CasOutcome::Applied(_)
        ));
        assert!(matches!(
            e.compare_and_set_expecting(b"k", Expect::Sequence(0), Some(b"again"), None)
                .await
                .unwrap(),
            CasOutcome::Mismatch { .. }
        ));
        e.close().await.unwrap();
    });
}
