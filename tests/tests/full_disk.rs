//! A full disk, for real: the server's data lives on a small loop-mounted ext4 filesystem
//! (`corekv_tests::fs`) that the test fills up. Writes then fail cleanly (`io`, then
//! `read_only`; nothing acknowledged that is not on disk), reads keep working, a restart on the
//! still-full disk serves every acknowledged write, and once space is freed a restart writes
//! again. Where a loop mount is impossible (not root, no loop device) the same test runs with
//! `ENOSPC` injected through the storage I/O seam instead, and says so.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use corekv_proto::client::TokioRuntime;
use corekv_proto::ops::counter_total;
use corekv_proto::{Client, Error, ErrorCode};
use corekv_tests::fs::SmallFs;
use corekv_tests::{Server, ServerOptions, block_on, cpus, test_dir};

/// Size of the filesystem.
const FS_BYTES: u64 = 96 << 20;
/// Room left for the server once the filler is written.
const ROOM_BYTES: u64 = 6 << 20;

struct Outcome {
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    unknown: BTreeMap<Vec<u8>, Vec<u8>>,
    refused: usize,
}

/// Writes 4 KiB values until every shard has refused writes, reading back acknowledged keys
/// as it goes.
async fn fill(client: &Client, shards: u32) -> Outcome {
    let mut out = Outcome {
        acked: BTreeMap::new(),
        unknown: BTreeMap::new(),
        refused: 0,
    };
    let mut refused_by = vec![0usize; shards as usize];
    for i in 0..100_000u32 {
        if refused_by.iter().all(|&n| n >= 10) {
            break;
        }
        let key = format!("k{i:06}").into_bytes();
        let value = vec![b'a' + (i % 26) as u8; 4096];
        let shard = client.shard_of(&key) as usize;
        match client.put(&key, &value).await {
            Ok(_) => {
                assert_eq!(
                    refused_by[shard], 0,
                    "shard {shard} took a write after refusing"
                );
                out.acked.insert(key, value);
            }
            Err(Error::Server(e)) if e.code == ErrorCode::Io => {
                assert!(
                    e.message.contains("No space left") || e.message.contains("I/O"),
                    "{e}"
                );
                out.unknown.insert(key, value);
            }
            Err(Error::Server(e)) if e.code == ErrorCode::ReadOnly => {
                refused_by[shard] += 1;
                out.refused += 1;
            }
            Err(e) => panic!("unexpected error on a full disk: {e}"),
        }
        if i % 50 == 0 && !out.acked.is_empty() {
            let (k, v) = out.acked.iter().nth(i as usize % out.acked.len()).unwrap();
            assert_eq!(client.get(k).await.unwrap().as_ref(), Some(v));
        }
    }
    assert!(
        refused_by.iter().all(|&n| n >= 10),
        "the disk never filled up for every shard: {refused_by:?}"
    );
    out
}

async fn check_all(client: &Client, out: &Outcome, what: &str) {
    for (k, v) in &out.acked {
        assert_eq!(
            client.get(k).await.unwrap().as_ref(),
            Some(v),
            "{what}: acknowledged {} lost",
            String::from_utf8_lossy(k)
        );
    }
    for (k, v) in &out.unknown {
        let got = client.get(k).await.unwrap();
        assert!(got.is_none() || got.as_ref() == Some(v), "{what}");
    }
}

#[test]
fn a_full_disk_fails_writes_cleanly_and_keeps_reads_working() {
    let dir = test_dir("full-disk");
    let shards = 2.min(cpus());
    let fs = SmallFs::mount(dir.path(), FS_BYTES);
    let (data, filler, fault_args): (PathBuf, Option<PathBuf>, Vec<String>) = match &fs {
        Ok(fs) => {
            // Leave ROOM_BYTES free: the server's preallocated WAL segments take some, then
            // the next segment's preallocation (or a flush) hits ENOSPC.
            let filler = fs.path().join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0xEEu8; 1 << 20];
            while fs.available_bytes() > ROOM_BYTES + (1 << 20) {
                f.write_all(&chunk).unwrap();
            }
            f.sync_all().unwrap();
            eprintln!(
                "full disk: a real ext4 filesystem with {} KiB free",
                fs.available_bytes() >> 10
            );
            (fs.path().join("data"), Some(filler), Vec::new())
        }
        Err(why) => {
            eprintln!("full disk: no loop mount ({why}); injecting ENOSPC through the I/O seam");
            (
                dir.path().join("data"),
                None,
                vec![
                    "--debug-fault-injection".to_string(),
                    "allocate=enospc@3+,create=enospc@3+,write=enospc@2000+".to_string(),
                ],
            )
        }
    };
    let mut base = ServerOptions::shards(shards).args(&["--wal-segment-size-bytes", "1048576"]);
    base.log_dir = Some(dir.path().to_path_buf());
    let full = base
        .clone()
        .args(&fault_args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut server = Server::start_with_data(&data, full.clone());
    let out = block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        let out = fill(&client, shards as u32).await;
        assert!(out.acked.len() > 100, "only {} writes fit", out.acked.len());
        assert!(out.refused >= 10);
        // Reads of everything acknowledged still work on the full disk, and so do scans.
        check_all(&client, &out, "full disk, same process").await;
        let stats = client.stats().await.unwrap();
        assert_eq!(counter_total(&stats, "read_only"), shards as u64);
        out
    });
    server.kill9();

    // Still full: the restarted server serves every acknowledged write.
    let server = match Server::try_start_retrying(&data, &full) {
        Ok(s) => s,
        Err(log) => panic!("the server cannot start on a full disk:\n{log}"),
    };
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        check_all(&client, &out, "restart on the full disk").await;
    });
    drop(server);

    // Space freed (or the fault gone): writes work again, nothing was lost.
    if let Some(filler) = filler {
        std::fs::remove_file(filler).unwrap();
    }
    let mut server = Server::start_with_data(&data, base);
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        check_all(&client, &out, "restart with free space").await;
        for i in 0..200 {
            client
                .put(format!("after/{i}").as_bytes(), &[7u8; 4096])
                .await
                .unwrap();
        }
    });
    assert_eq!(server.terminate().code(), Some(0), "{}", server.log());
    drop(fs);
}
