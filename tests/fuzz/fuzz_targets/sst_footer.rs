//! cargo-fuzz target: `corekv_storage::fuzz::sst_footer` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv_storage::fuzz::sst_footer(data));
