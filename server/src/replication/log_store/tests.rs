//! The Raft log's tests: formats, appends, truncations, compactions, snapshots, reopen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use raft::eraftpb::EntryType;

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        data: data.to_vec().into(),
        ..Entry::default()
    }
}

fn options() -> Options {
    Options {
        wal_segment_size_bytes: 64 << 10,
        ..Options::default()
    }
}

fn run(f: impl AsyncFnOnce(&Path) + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(|| async move {
            // On the target's disk, never tmpfs: the WAL writes with O_DIRECT.
            let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
            std::fs::create_dir_all(&base).unwrap();
            let dir = tempfile::tempdir_in(base).unwrap();
            f(dir.path()).await;
        })
        .unwrap()
        .join()
        .unwrap();
}

fn terms(log: &RaftLog) -> Vec<(u64, u64)> {
    let (first, last) = log.bounds();
    log.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
        .iter()
        .map(|e| (e.index, e.term))
        .collect()
}

#[test]
fn entry_and_state_formats_round_trip_and_refuse_damage() {
    let mut e = entry(7, 3, b"data");
    e.context = b"ctx".to_vec().into();
    e.set_entry_type(EntryType::EntryConfChangeV2);
    let bytes = encode_entry(&e);
    assert_eq!(decode_entry(&bytes).unwrap(), e);
    assert!(decode_entry(&bytes[..ENTRY_HEADER_BYTES - 1]).is_err());
    let mut bad = bytes.clone();
    bad[1] = 9;
    assert!(decode_entry(&bad).is_err());
    let mut bad = bytes.clone();
    bad[18..22].copy_from_slice(&1000u32.to_le_bytes());
    assert!(decode_entry(&bad).is_err());
    // Version 2 is written; version 1 (the same layout) is still read; others are refused,
    // as a build that knows only version 1 refuses version 2.
    assert_eq!(bytes[0], 2);
    let mut old = bytes.clone();
    old[0] = 1;
    assert_eq!(decode_entry(&old).unwrap(), e);
    for version in [0, 3] {
        let mut bad = bytes.clone();
        bad[0] = version;
        assert!(
            decode_entry(&bad).unwrap_err().contains("version"),
            "{version}"
        );
    }

    let mut state = PersistedState {
        compacted_index: 10,
        compacted_term: 2,
        voters: vec![1, 2, 3],
        ..PersistedState::default()
    };
    state.hard.term = 4;
    state.hard.vote = 2;
    state.hard.commit = 11;
    let bytes = state.encode();
    assert_eq!(PersistedState::decode(&bytes).unwrap(), state);
    for at in [0, 8, 13, 20, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        assert!(PersistedState::decode(&bad).is_err(), "byte {at}");
    }
    assert!(PersistedState::decode(&bytes[..bytes.len() - 8]).is_err());
}

#[test]
fn appends_truncations_compactions_and_the_hard_state_survive_reopen() {
    run(async |dir: &Path| {
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert_eq!(
            log.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
        assert_eq!(log.bounds(), (1, 0));
        let ten: Vec<Entry> = (1..=10).map(|i| entry(i, 1, b"x")).collect();
        log.append(ten).await.unwrap();
        let hs = HardState {
            term: 2,
            vote: 3,
            commit: 4,
            ..HardState::default()
        };
        log.set_hard_state(&hs).await.unwrap();
        // A new leader's entries replace ours from index 6 on.
        log.append(vec![entry(6, 2, b"y"), entry(7, 2, b"y")])
            .await
            .unwrap();
        assert_eq!(log.bounds(), (1, 7));
        assert_eq!(log.term(6).unwrap(), 2);
        assert_eq!(log.term(5).unwrap(), 1);
        log.close().await.unwrap();
        drop(log);

        // Reopened: the same entries; the commit raised to what the engine applied.
        let log = RaftLog::open(dir, &options(), &[9], 6).await.unwrap();
        let state = log.initial_state().unwrap();
        assert_eq!(
            state.conf_state.voters,
            vec![1, 2, 3],
            "voters come from the file"
        );
        assert_eq!((state.hard_state.term, state.hard_state.vote), (2, 3));
        assert_eq!(state.hard_state.commit, 6);
        let mut expected: Vec<(u64, u64)> = (1..=5).map(|i| (i, 1)).collect();
        expected.extend([(6, 2), (7, 2)]);
        assert_eq!(terms(&log), expected);

        // Compaction: entries up to 5 go; the term of 5 stays known.
        log.compact(5);
        assert_eq!(log.bounds(), (6, 7));
        assert_eq!(log.term(5).unwrap(), 1);
        assert!(matches!(
            log.term(4),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            log.entries(5, 7, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        // The commit bounds compaction: entries not known committed stay.
        log.compact(7);
        assert_eq!(log.bounds(), (7, 7));
        log.close().await.unwrap();
        drop(log);

        // No segment could go, so the state file still has the old compaction point: the
        // entries after it are back, nothing is lost.
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert_eq!(log.bounds(), (1, 7));
        assert_eq!(terms(&log), expected);
        log.append(vec![entry(8, 3, b"z")]).await.unwrap();
        // Entries of 10 KiB fill several 64 KiB segments: a compaction past one deletes it
        // and records its point first.
        let big: Vec<Entry> = (9..=30).map(|i| entry(i, 3, &[5; 10 << 10])).collect();
        log.set_commit(30);
        log.append(big).await.unwrap();
        let segments = || std::fs::read_dir(dir.join(RAFT_LOG_DIR)).unwrap().count();
        let before = segments();
        log.compact(20);
        assert_eq!(log.bounds(), (21, 30));
        // The files go in a task of their own, which the caller does not wait for.
        assert_eq!(segments(), before);
        log.settle().await;
        assert!(
            segments() < before,
            "{} segments of {before} left",
            segments()
        );
        log.close().await.unwrap();
        drop(log);

        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert_eq!(log.bounds(), (21, 30));
        assert_eq!(log.term(20).unwrap(), 3);
        assert_eq!(terms(&log)[0], (21, 3));
        log.close().await.unwrap();
    });
}

#[test]
fn a_snapshot_replaces_the_log_and_an_interrupted_one_is_finished_on_open() {
    run(async |dir: &Path| {
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        let twenty: Vec<Entry> = (1..=20).map(|i| entry(i, 1, b"x")).collect();
        log.append(twenty).await.unwrap();
        // Nothing offered: raft-rs is told to wait, and the group to make one.
        assert!(matches!(
            log.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert!(log.take_snapshot_wanted());
        assert!(!log.take_snapshot_wanted());
        log.offer_snapshot(15, 1);
        let snap = log.snapshot(0, 2).unwrap();
        assert_eq!(
            (snap.get_metadata().index, snap.get_metadata().term),
            (15, 1)
        );
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        assert!(log.snapshot(16, 2).is_err(), "older than asked for");

        // A snapshot before the log's end replaces it all.
        log.begin_snapshot(10, 2).await.unwrap();
        log.finish_snapshot().await.unwrap();
        assert_eq!(log.bounds(), (11, 10));
        // A snapshot at 100 (term 3) replaces everything, even entries after it.
        log.begin_snapshot(100, 3).await.unwrap();
        log.finish_snapshot().await.unwrap();
        assert_eq!(log.bounds(), (101, 100));
        assert_eq!(log.term(100).unwrap(), 3);
        log.append(vec![entry(101, 3, b"y")]).await.unwrap();
        log.close().await.unwrap();
        drop(log);
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 100)
            .await
            .unwrap();
        assert_eq!(log.bounds(), (101, 101));
        assert!(log.hard_state().commit >= 100);

        // Interrupted right after the marker: the open finishes it, state file included,
        // so a second open finds the same log.
        write_marker(dir, 150, 4).unwrap();
        log.close().await.unwrap();
        drop(log);
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert_eq!(log.compacted(), (150, 4));
        log.close().await.unwrap();
        drop(log);
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert_eq!((log.compacted(), log.bounds()), ((150, 4), (151, 150)));

        // Interrupted after its first step: the open finishes it (the old entries go).
        log.begin_snapshot(200, 4).await.unwrap();
        log.close().await.unwrap();
        drop(log);
        assert!(dir.join(SNAPSHOT_MARKER_FILE).exists());
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert!(!dir.join(SNAPSHOT_MARKER_FILE).exists());
        assert_eq!(log.bounds(), (201, 200));
        assert_eq!(log.compacted(), (200, 4));
        log.append(vec![entry(201, 4, b"z")]).await.unwrap();
        log.close().await.unwrap();
    });
}

/// A state file write leaves the shard's thread to other tasks while the disk syncs, and
/// writes asked together leave the newest state in the file.
#[test]
fn state_writes_leave_the_thread_and_the_newest_state() {
    run(async |dir| {
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        let turns = Rc::new(std::cell::Cell::new(0u32));
        let ticker = {
            let turns = Rc::clone(&turns);
            glommio::spawn_local(async move {
                loop {
                    turns.set(turns.get() + 1);
                    glommio::timer::sleep(std::time::Duration::from_micros(1)).await;
                }
            })
        };
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        let before = turns.get();
        let hs = HardState {
            term: 1,
            vote: 2,
            ..HardState::default()
        };
        log.set_hard_state(&hs).await.unwrap();
        assert!(turns.get() > before, "the write held the shard's thread");
        drop(ticker);
        let writes = (2..=20u64).map(|term| {
            let log = log.clone();
            async move {
                let hs = HardState {
                    term,
                    vote: term % 3 + 1,
                    ..HardState::default()
                };
                log.set_hard_state(&hs).await.unwrap();
            }
        });
        futures::future::join_all(writes).await;
        log.close().await.unwrap();
        drop(log);
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        let hs = log.initial_state().unwrap().hard_state;
        assert_eq!((hs.term, hs.vote), (20, 20 % 3 + 1));
    });
}

#[test]
fn the_compaction_point_keeps_what_both_bounds_allow() {
    run(async |dir: &Path| {
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert_eq!(log.compaction_point(0, 0, 0), 0, "an empty log");
        // Entries 1..=10 of 100 data bytes each: 122 with the record header.
        let w = (ENTRY_HEADER_BYTES + 100) as u64;
        let ten: Vec<Entry> = (1..=10).map(|i| entry(i, 1, &[7; 100])).collect();
        log.append(ten).await.unwrap();
        log.set_commit(8);
        // The count alone: 3 entries stay behind 8.
        assert_eq!(log.compaction_point(8, 3, u64::MAX), 5);
        // The bytes alone: 2.5 entries' weight keeps 2 of them.
        assert_eq!(log.compaction_point(8, u64::MAX, w * 5 / 2), 6);
        assert_eq!(log.compaction_point(8, u64::MAX, w * 2), 6);
        assert_eq!(log.compaction_point(8, u64::MAX, w * 2 - 1), 7);
        // Whichever keeps less wins.
        assert_eq!(log.compaction_point(8, 1, w * 5), 7);
        assert_eq!(log.compaction_point(8, 5, w), 7);
        // Both allow more than there is: nothing goes.
        assert_eq!(log.compaction_point(8, 100, w * 100), 0);
        assert_eq!(log.compaction_point(8, u64::MAX, w * 8), 0);
        assert_eq!(log.compaction_point(8, 0, 0), 8);
        // Past the log's end: as at its end.
        assert_eq!(log.compaction_point(50, u64::MAX, w), 9);

        // After a compaction and a suffix replaced by larger entries, the weights follow.
        log.compact(4);
        assert_eq!(log.bounds(), (5, 10));
        log.append(vec![entry(9, 2, &[1; 1000]), entry(10, 2, &[1; 1000])])
            .await
            .unwrap();
        let big = (ENTRY_HEADER_BYTES + 1000) as u64;
        assert_eq!(log.compaction_point(10, u64::MAX, big), 9);
        assert_eq!(log.compaction_point(10, u64::MAX, big * 2 + w), 7);
        assert_eq!(log.compaction_point(10, u64::MAX, big * 2 + 4 * w), 4);
        assert_eq!(
            log.compaction_point(3, 0, 0),
            4,
            "before the compaction point"
        );
        log.close().await.unwrap();
        drop(log);

        // Reopened, the weights are rebuilt from the records.
        let log = RaftLog::open(dir, &options(), &[1, 2, 3], 0).await.unwrap();
        assert_eq!(log.compaction_point(10, u64::MAX, big * 2 + w), 7);
        log.close().await.unwrap();
    });
}
