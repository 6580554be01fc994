#![no_main]
//! `cargo fuzz run query`: see `fuzz/harness.rs` for what it checks.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::query(data));
