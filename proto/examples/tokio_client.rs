//! The corekv Rust client inside a tokio current-thread runtime.
//!
//! ```sh
//! cargo run --release --bin corekv-server &            # a server on 127.0.0.1:7379
//! cargo run --release -p corekv-proto --example tokio_client -- 127.0.0.1:7379
//! ```
//!
//! capnp-rpc is single-threaded, so the client runs inside a `tokio::task::LocalSet`.

use std::process::ExitCode;

use corekv_proto::client::TokioRuntime;
use corekv_proto::{CasOp, Client, Expected};
use futures::future::join_all;

fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7379".to_string());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_client: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(&addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: &str) -> Result<(), corekv_proto::Error> {
    let addr = corekv_proto::client::resolve(addr)?;
    let client = Client::connect(TokioRuntime, addr).await?;
    println!("connected: {} shards", client.topology().shard_count);
    let keys: Vec<String> = (0..100).map(|i| format!("example:tokio:{i:03}")).collect();
    for r in join_all(keys.iter().map(|k| client.put(k.as_bytes(), b"v1"))).await {
        r?;
    }
    // Compare-and-set every key from v1 to v2, concurrently.
    let swaps = join_all(keys.iter().map(|k| {
        client.cas(CasOp {
            key: k.as_bytes().to_vec(),
            expected: Expected::Value(b"v1".to_vec()),
            new: Some(b"v2".to_vec()),
            ttl_ms: 0,
        })
    }))
    .await;
    for (k, r) in keys.iter().zip(swaps) {
        if !r?.succeeded {
            return Err(corekv_proto::Error::Protocol(format!(
                "cas on {k} did not apply"
            )));
        }
    }
    for k in &keys {
        if client.get(k.as_bytes()).await?.as_deref() != Some(b"v2") {
            return Err(corekv_proto::Error::Protocol(format!("{k} is not v2")));
        }
        client.delete(k.as_bytes()).await?;
    }
    let (batches, ops) = client.coalesced_counts();
    println!(
        "ok: {} keys written, swapped, read and deleted; {ops} operations in {batches} batch calls",
        keys.len()
    );
    Ok(())
}
