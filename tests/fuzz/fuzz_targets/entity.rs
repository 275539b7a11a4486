//! cargo-fuzz target: `corekv_proto::fuzz::entity` (the entity and counter decoders) on
//! arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv_proto::fuzz::entity(data));
