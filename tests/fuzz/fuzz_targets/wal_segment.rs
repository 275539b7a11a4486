//! cargo-fuzz target: `corekv_storage::fuzz::wal_segment` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv_storage::fuzz::wal_segment(data));
