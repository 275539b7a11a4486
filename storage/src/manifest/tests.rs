//! Tests of the manifest.

use super::*;

fn meta(n: u64, a: &[u8], b: &[u8]) -> TableMeta {
    TableMeta {
        file_number: n,
        size_bytes: 4096 * n,
        smallest: a.to_vec(),
        largest: b.to_vec(),
        seq_min: n,
        seq_max: n * 10,
        entries: 5,
        tombstones: 1,
        raw_bytes: 99,
    }
}

#[test]
fn edits_round_trip_and_garbage_is_rejected() {
    let e = VersionEdit {
        next_file_number: Some(12),
        last_seq: Some(1 << 40),
        flushed_seq: Some(77),
        applied_index: Some(1 << 33),
        applied_time_ms: Some(1_700_000_000_000),
        deleted: vec![(0, 3), (1, 4)],
        added: vec![(1, meta(9, b"a", b"zz")), (2, meta(10, b"", b"\xff"))],
    };
    assert_eq!(VersionEdit::decode(&e.encode()).unwrap(), e);
    assert_eq!(VersionEdit::decode(&[]).unwrap(), VersionEdit::default());
    assert!(VersionEdit::decode(&[99]).is_err());
    let enc = e.encode();
    assert!(VersionEdit::decode(&enc[..enc.len() - 1]).is_err());
}

#[test]
fn state_rejects_contradictory_edits() {
    let mut s = ManifestState::default();
    let add = VersionEdit {
        added: vec![(0, meta(5, b"a", b"b"))],
        ..VersionEdit::default()
    };
    s.apply(&add, 7).unwrap();
    assert_eq!(s.next_file_number, 6);
    assert!(s.apply(&add, 7).is_err(), "added twice");
    let del = VersionEdit {
        deleted: vec![(1, 5)],
        ..VersionEdit::default()
    };
    assert!(s.apply(&del, 7).is_err(), "wrong level");
    let too_deep = VersionEdit {
        added: vec![(7, meta(6, b"a", b"b"))],
        ..VersionEdit::default()
    };
    assert!(s.apply(&too_deep, 7).is_err());
    let mut replay = ManifestState::default();
    replay.apply(&s.snapshot_edit(), 7).unwrap();
    assert_eq!(replay.levels[0], s.levels[0]);
}

use crate::test_util::{damage, probe, run, test_dir};

fn add(n: u64, level: usize) -> VersionEdit {
    VersionEdit {
        next_file_number: Some(n + 1),
        last_seq: Some(n * 100),
        flushed_seq: Some(n * 90),
        added: vec![(
            level,
            meta(n, format!("k{n}").as_bytes(), format!("k{n}z").as_bytes()),
        )],
        ..VersionEdit::default()
    }
}

/// Opens, applies and appends `edits`, returning the state after them.
async fn append_all(dir: &Path, edits: &[VersionEdit], max: u64) -> ManifestState {
    let (mut m, rec) = Manifest::open(&Io::default(), dir, 7, max).await.unwrap();
    let mut state = rec.state;
    for e in edits {
        state.apply(e, 7).unwrap();
        let mut next = state.next_file_number;
        m.append(e, &state, || {
            next += 1;
            next - 1
        })
        .await
        .unwrap();
        state.next_file_number = state.next_file_number.max(next);
    }
    m.close().await.unwrap();
    state
}

#[test]
fn replay_restores_the_state_and_rotation_keeps_it() {
    let dir = test_dir("manifest-replay");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let (m, rec) = Manifest::open(&Io::default(), &path, 7, 1 << 20)
            .await
            .unwrap();
        assert!(!rec.existed);
        m.close().await.unwrap();
        let mut edits: Vec<VersionEdit> = (2..40).map(|n| add(n, (n % 3) as usize)).collect();
        edits.push(VersionEdit {
            deleted: vec![(0, 3), (1, 4)],
            ..VersionEdit::default()
        });
        let want = append_all(&path, &edits, 1 << 20).await;
        let (m, rec) = Manifest::open(&Io::default(), &path, 7, 1 << 20)
            .await
            .unwrap();
        assert_eq!(rec.state, want);
        assert_eq!((rec.edits, rec.torn_tails_cut), (edits.len() as u64 + 1, 0));
        assert_eq!(want.last_seq, 3900);
        assert_eq!(
            want.levels[0].len() + want.levels[1].len() + want.levels[2].len(),
            36
        );
        m.close().await.unwrap();
        // A small bound forces rotations: the state survives and old logs are removed.
        let more: Vec<VersionEdit> = (40..60).map(|n| add(n, 3)).collect();
        let want = append_all(&path, &more, 8 * 4096).await;
        let (m, rec) = Manifest::open(&Io::default(), &path, 7, 1 << 20)
            .await
            .unwrap();
        assert_eq!(rec.state, want);
        assert!(m.number() > 1);
        let manifests = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("MANIFEST-")
            })
            .count();
        assert_eq!(manifests, 1);
        m.close().await.unwrap();
    });
}

#[test]
fn a_torn_last_edit_is_cut_and_earlier_damage_is_corruption() {
    let dir = test_dir("manifest-torn");
    let path = dir.path().to_path_buf();
    run(move || async move {
        probe(&path).await;
        let edits: Vec<VersionEdit> = (2..10).map(|n| add(n, 1)).collect();
        let before_last = append_all(&path, &edits[..7], 1 << 20).await;
        append_all(&path, &edits[7..], 1 << 20).await;
        let file = path.join(manifest_file_name(1));
        let pristine = std::fs::read(&file).unwrap();
        // Records: header page, initial snapshot page, then one page per edit.
        let last = pristine.len() as u64 - 4096;
        for (off, xor) in [(last, 0xff), (last + 5, 0x01), (last + 20, 0x80)] {
            damage(&file, off, xor);
            let (m, rec) = Manifest::open(&Io::default(), &path, 7, 1 << 20)
                .await
                .unwrap();
            assert_eq!(rec.torn_tails_cut, 1);
            assert_eq!(rec.state, before_last);
            m.close().await.unwrap();
            // The cut is durable and appends continue cleanly.
            assert_eq!(std::fs::metadata(&file).unwrap().len(), last);
            let again = append_all(&path, &edits[7..], 1 << 20).await;
            let (m, rec) = Manifest::open(&Io::default(), &path, 7, 1 << 20)
                .await
                .unwrap();
            assert_eq!((rec.state, rec.torn_tails_cut), (again, 0));
            m.close().await.unwrap();
        }
        // A zeroed (never written) last page is simply the end of the log.
        std::fs::write(&file, [&pristine[..], &[0u8; 4096][..]].concat()).unwrap();
        let (m, rec) = Manifest::open(&Io::default(), &path, 7, 1 << 20)
            .await
            .unwrap();
        assert_eq!(rec.torn_tails_cut, 0);
        m.close().await.unwrap();
        // Damage to an earlier edit, with valid edits after it: corruption at its offset.
        std::fs::write(&file, &pristine).unwrap();
        let third = 4 * 4096;
        damage(&file, third + 9, 0x04);
        match Manifest::open(&Io::default(), &path, 7, 1 << 20).await {
            Err(crate::Error::Corruption {
                file: f, offset, ..
            }) => {
                assert_eq!((f, offset), (file.clone(), third));
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // A damaged CURRENT.
        std::fs::write(&file, &pristine).unwrap();
        std::fs::write(path.join(CURRENT_FILE), vec![b'x'; 4096]).unwrap();
        assert!(matches!(
            Manifest::open(&Io::default(), &path, 7, 1 << 20).await,
            Err(crate::Error::Corruption { offset: 0, .. })
        ));
    });
}
