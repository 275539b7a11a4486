//! The corekv Rust client inside a glommio executor.
//!
//! ```sh
//! cargo run --release --bin corekv-server &            # a server on 127.0.0.1:7379
//! cargo run --release -p corekv-proto --example glommio_client -- 127.0.0.1:7379
//! ```
//!
//! Writes 100 keys concurrently (the client coalesces them into a few `batch` calls, each
//! sent straight to the shard that owns its keys), reads them back, scans them, deletes them.

use std::process::ExitCode;

use corekv_proto::client::GlommioRuntime;
use corekv_proto::{Client, ScanOp};
use futures::future::join_all;
use glommio::{LocalExecutorBuilder, Placement};

fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7379".to_string());
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        // The client does no disk I/O: keep glommio's registered buffer memory small.
        .io_memory(1 << 20)
        .spawn(move || async move { run(&addr).await });
    match executor
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|e| e.to_string()))
    {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) | Err(e) => {
            eprintln!("glommio_client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: &str) -> Result<(), String> {
    let addr = corekv_proto::client::resolve(addr).map_err(|e| e.to_string())?;
    let client = Client::connect(GlommioRuntime, addr)
        .await
        .map_err(|e| e.to_string())?;
    println!("connected: {} shards", client.topology().shard_count);
    let keys: Vec<String> = (0..100)
        .map(|i| format!("example:glommio:{i:03}"))
        .collect();
    for r in join_all(keys.iter().map(|k| client.put(k.as_bytes(), k.as_bytes()))).await {
        r.map_err(|e| e.to_string())?;
    }
    for k in &keys {
        let v = client.get(k.as_bytes()).await.map_err(|e| e.to_string())?;
        if v.as_deref() != Some(k.as_bytes()) {
            return Err(format!("{k}: read back {v:?}"));
        }
    }
    let scan = ScanOp {
        start: b"example:glommio:".to_vec(),
        end: b"example:glommio;".to_vec(),
        limit: 30,
        reverse: false,
    };
    let all = client
        .scan_all(&scan, 1000)
        .await
        .map_err(|e| e.to_string())?;
    if all.len() != keys.len() {
        return Err(format!("scan found {} of {} keys", all.len(), keys.len()));
    }
    for k in &keys {
        client
            .delete(k.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let (batches, ops) = client.coalesced_counts();
    println!(
        "ok: {} keys written, read, scanned and deleted; {ops} operations in {batches} batch calls",
        keys.len()
    );
    Ok(())
}
