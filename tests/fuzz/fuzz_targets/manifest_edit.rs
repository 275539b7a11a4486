//! cargo-fuzz target: `corekv_storage::fuzz::manifest_edit` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv_storage::fuzz::manifest_edit(data));
