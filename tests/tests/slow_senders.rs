//! Memory bounded against clients that announce large messages and send them slowly: the
//! RPC layer allocates a message's announced size when its header arrives, so each shard lets
//! large messages in progress take at most `--frame-budget-bytes`; connections whose next
//! message does not fit wait, unread. Ordinary requests need no budget and are served.

// Test code: helpers panic on failed set-up steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use corekv_proto::client::TokioRuntime;
use corekv_proto::ops::counter_total;
use corekv_proto::{Client, Connection};
use corekv_tests::{Server, ServerOptions, block_on, rss_bytes, test_dir};

const SLOW_CONNECTIONS: usize = 200;
/// What each slow connection announces: one segment of 8 Mi words.
const ANNOUNCED_BYTES: u32 = 64 << 20;
const BUDGET_BYTES: u64 = 128 << 20;
/// Room above baseline + budget for everything else 200 connections cost.
const SLACK_BYTES: u64 = 64 << 20;

#[test]
fn slow_senders_of_large_frames_cannot_take_more_than_the_budget() {
    let dir = test_dir("slow-senders");
    let server = Server::start(
        dir.path(),
        ServerOptions::shards(1).args(&["--frame-budget-bytes", &BUDGET_BYTES.to_string()]),
    );
    let pid = server.pid().unwrap();
    block_on(async {
        let conn = Connection::connect(TokioRuntime, server.addr)
            .await
            .unwrap();
        conn.put(b"warm", b"up", 0).await.unwrap();
    });
    let baseline = rss_bytes(pid);
    let bound = baseline + BUDGET_BYTES + SLACK_BYTES;
    let check = |when: &str| {
        let rss = rss_bytes(pid);
        assert!(
            rss <= bound,
            "{when}: RSS {} MiB, over baseline {} MiB + budget {} MiB + {} MiB",
            rss >> 20,
            baseline >> 20,
            BUDGET_BYTES >> 20,
            SLACK_BYTES >> 20
        );
    };
    let mut slow = Vec::with_capacity(SLOW_CONNECTIONS);
    for i in 0..SLOW_CONNECTIONS {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let mut header = Vec::new();
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&(ANNOUNCED_BYTES / 8).to_le_bytes());
        s.write_all(&header).unwrap();
        slow.push(s);
        // Checked as they come, so that a server without a budget fails here, long before
        // it has taken 200 x 64 MiB.
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(20));
            check(&format!("after {} slow connections", i + 1));
        }
    }
    block_on(async {
        let client = Client::connect(TokioRuntime, server.addr).await.unwrap();
        for round in 0..10 {
            // Each slow connection sends a little more of its frame (non-blocking: a
            // connection that is not read fills its socket buffers and is skipped).
            for s in &mut slow {
                s.set_nonblocking(true).unwrap();
                let _ = s.write(&[0u8; 4096]);
            }
            // Ordinary requests are served meanwhile.
            let key = format!("served:{round}").into_bytes();
            client.put(&key, b"yes").await.unwrap();
            assert_eq!(client.get(&key).await.unwrap(), Some(b"yes".to_vec()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            check(&format!("round {round}"));
        }
        let stats = client.stats().await.unwrap();
        assert!(counter_total(&stats, "frame_budget_bytes_in_use") <= BUDGET_BYTES);
        assert!(
            counter_total(&stats, "frame_budget_waits_total") >= (SLOW_CONNECTIONS - 2) as u64,
            "{stats:?}"
        );
    });
    drop(slow);
}
