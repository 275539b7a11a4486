//! cargo-fuzz target: `corekv_server::replication::wire::fuzz_decode` (a peer frame body
//! decoded into raft-rs messages, re-encoded and decoded again) on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv_server::replication::wire::fuzz_decode(data));
