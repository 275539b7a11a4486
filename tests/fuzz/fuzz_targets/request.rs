//! cargo-fuzz target: `corekv_proto::fuzz::request` (the server's request decoding) on
//! arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv_proto::fuzz::request(data));
