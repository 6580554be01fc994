#![no_main]
//! `cargo fuzz run parquet_footer`: see `fuzz/harness.rs` for what it checks.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::parquet_footer(data));
