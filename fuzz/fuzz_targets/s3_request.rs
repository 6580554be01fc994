#![no_main]
//! `cargo fuzz run s3_request`: see `fuzz/harness.rs` for what it checks.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::s3_request(data));
