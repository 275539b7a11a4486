//! Tests of the receiving side: chunk order, checksums, file names, and the bounds on a stream.

#![allow(clippy::unwrap_used)]

use super::*;

fn incoming(dir: &Path) -> Incoming {
    Incoming {
        owner: Weak::new(),
        index: 9,
        term: 2,
        dir: dir.to_path_buf(),
        file: None,
        done: Vec::new(),
        reserve: 0,
        complete: false,
        handed_over: true,
    }
}

/// Runs `f` on a glommio executor of its own (the stream's file I/O goes through io_uring).
fn on_executor<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn chunk(file: &str, offset: u64, data: &[u8], last: bool, crc32c: u32) -> SnapshotChunk {
    SnapshotChunk {
        index: 9,
        term: 2,
        file: file.into(),
        offset,
        data: data.to_vec(),
        last,
        crc32c,
    }
}

#[test]
fn a_snapshot_is_bounded_in_bytes_and_files() {
    on_executor(|| async {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let data = [5u8; 10];

        // Each chunk must leave the reserve free on the disk.
        let mut a = incoming(dir.path());
        a.write(chunk("000001.sst", 0, &data, false, 0))
            .await
            .unwrap();
        a.reserve = u64::MAX / 2;
        let e = a
            .write(chunk("000001.sst", 10, &data, false, 0))
            .await
            .unwrap_err();
        assert!(e.contains("free"), "{e}");

        let mut b = incoming(dir.path());
        b.done = (0..FILES_MAX).map(|i| (format!("{i}"), 0)).collect();
        let e = b
            .write(chunk("000002.sst", 0, &data, true, crc32c::crc32c(&data)))
            .await
            .unwrap_err();
        assert!(e.contains("files"), "{e}");

        // A descriptor is read whole: it is bounded before it is.
        let mut c = incoming(dir.path());
        c.file = Some(OpenFile {
            name: CHECKPOINT_FILE.into(),
            file: BufferedFile::create(dir.path().join("descriptor"))
                .await
                .unwrap(),
            offset: DESCRIPTOR_BYTES_MAX - 5,
            crc: 0,
        });
        let e = c
            .write(chunk(
                CHECKPOINT_FILE,
                DESCRIPTOR_BYTES_MAX - 5,
                &data,
                false,
                0,
            ))
            .await
            .unwrap_err();
        assert!(e.contains("descriptor over"), "{e}");
    });
}

#[test]
fn file_names_cannot_leave_the_snapshot_directory() {
    for good in ["CHECKPOINT", "000012.sst", "12345678901234567890.sst"] {
        assert!(valid_file_name(good), "{good}");
    }
    for bad in [
        "../CHECKPOINT",
        "12.sst",
        "00001a.sst",
        "/000012.sst",
        "x/000012.sst",
        "",
    ] {
        assert!(!valid_file_name(bad), "{bad}");
    }
}

#[test]
fn chunks_out_of_order_of_another_snapshot_or_with_a_bad_checksum_are_refused() {
    on_executor(|| async {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let data = b"0123456789";
        let crc = crc32c::crc32c(data);

        let mut a = incoming(dir.path());
        a.write(chunk("000001.sst", 0, &data[..4], false, 0))
            .await
            .unwrap();
        let e = a
            .write(chunk("000001.sst", 5, &data[5..], true, crc))
            .await
            .unwrap_err();
        assert!(e.contains("offset"), "{e}");
        let e = a
            .write(chunk("000002.sst", 0, data, true, crc))
            .await
            .unwrap_err();
        assert!(e.contains("before"), "{e}");
        let mut other = chunk("000001.sst", 4, &data[4..], true, crc);
        other.term = 3;
        assert!(a.write(other).await.is_err(), "another snapshot's chunk");
        let e = a
            .write(chunk("000001.sst", 4, &data[4..], true, crc ^ 1))
            .await
            .unwrap_err();
        assert!(e.contains("checksum"), "{e}");

        let mut b = incoming(dir.path());
        b.write(chunk("000003.sst", 0, data, true, crc))
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("000003.sst")).unwrap(), data);
        let e = b
            .write(chunk("000003.sst", 0, data, true, crc))
            .await
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert!(
            b.write(chunk("../x.sst", 0, data, true, crc))
                .await
                .is_err()
        );
        // A descriptor that does not decode, or names tables that did not arrive, is refused.
        let e = b
            .write(chunk(
                CHECKPOINT_FILE,
                0,
                b"junk",
                true,
                crc32c::crc32c(b"junk"),
            ))
            .await
            .unwrap_err();
        assert!(e.contains("descriptor"), "{e}");
        assert!(!b.complete);
    });
}

/// A replica's snapshots over a fresh engine and log in `dir`.
async fn snapshots_in(dir: &Path) -> Rc<Snapshots> {
    let options = corekv_storage::Options::default();
    let engine = Engine::open_applying(dir, options.clone(), corekv_storage::OpenHooks::default())
        .await
        .unwrap();
    let log = RaftLog::open(dir, &options, &[1, 2, 3], 0).await.unwrap();
    Snapshots::new(dir, engine, log, 1, (0, 1), 7, Vec::new())
}

fn temp_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// A stream dropped half way leaves its directory for the blocking thread (its `Drop` does
/// not unlink a shard's worth of tables on the shard's thread); the directory then goes.
#[test]
fn a_dropped_streams_directory_is_removed_off_the_shards_thread() {
    on_executor(|| async {
        let dir = temp_dir();
        let snapshots = snapshots_in(dir.path()).await;
        let mut conn = None;
        snapshots
            .chunk(&mut conn, 2, chunk("000001.sst", 0, b"x", false, 0))
            .await
            .unwrap();
        let stream_dir = conn.as_ref().unwrap().dir.clone();
        assert!(stream_dir.is_dir());
        drop(conn);
        assert_eq!(snapshots.receiving.get(), 0);
        assert_eq!(
            snapshots.graveyard.buried(),
            std::slice::from_ref(&stream_dir)
        );
        assert!(
            stream_dir.is_dir(),
            "removed in Drop, on the shard's thread"
        );
        snapshots.graveyard.empty().await;
        assert!(!stream_dir.exists());
        assert!(snapshots.graveyard.buried().is_empty());
    });
}

/// Streams that start together are counted before any waits for its directory: one beyond
/// [`RECEIVING_MAX`] is refused even while the others still wait.
#[test]
fn streams_starting_together_count_against_the_limit_at_once() {
    on_executor(|| async {
        let dir = temp_dir();
        let snapshots = snapshots_in(dir.path()).await;
        let n = RECEIVING_MAX as usize + 1;
        let mut conns: Vec<Option<Incoming>> = (0..n).map(|_| None).collect();
        let starts = conns.iter_mut().enumerate().map(|(i, conn)| {
            let snapshots = snapshots.clone();
            async move {
                snapshots
                    .chunk(conn, 2 + i as u64, chunk("000001.sst", 0, b"x", false, 0))
                    .await
            }
        });
        let results = futures::future::join_all(starts).await;
        let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(refused.len(), 1, "{results:?}");
        assert!(refused[0].contains("being received already"), "{refused:?}");
        assert_eq!(snapshots.receiving.get(), RECEIVING_MAX);
        drop(conns);
        assert_eq!(snapshots.receiving.get(), 0);
    });
}
