//! cargo-fuzz target: `corekv_server::replication::commands::fuzz_decode` (a Raft entry's
//! command, Cap'n Proto or plain writes) on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv_server::replication::commands::fuzz_decode(data));
