//! What each fuzz target checks, shared by the `cargo fuzz` targets
//! (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and by the stable replay
//! of the seed corpus in `make test` (`crates/worker/tests/fuzz_corpus.rs`),
//! so both run exactly the same checks.
//!
//! Every function takes arbitrary bytes and panics only when a property
//! fails: parsers must return errors for bad input, never panic, and what
//! they accept must hold the invariants the rest of the code relies on.

// Each fuzz target includes this file for its one function.
#![allow(dead_code)]

use alluxiofs_core::page_file;
use alluxiofs_core::path::{is_under, normalize_mount, normalize_url, split_url};

/// A fuzz target: its checks of one input.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("url", url),
    ("query", query),
    ("page_header", page_header),
    ("parquet_footer", parquet_footer),
    ("etcd_record", etcd_record),
    ("s3_request", s3_request),
];

/// The first line of `data` as text, the rest as another text (targets
/// that need two strings).
fn two_texts(data: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(data);
    match text.split_once('\n') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (text.to_string(), String::new()),
    }
}

/// URL normalization and mount confinement: a normalized URL is a fixed
/// point, has no dot segments (raw or encoded), and `is_under` agrees with
/// its prefix relation to a mount.
pub fn url(data: &[u8]) {
    let (a, b) = two_texts(data);
    for input in [&a, &b] {
        if let Ok(n) = normalize_url(input) {
            assert_eq!(
                normalize_url(&n).ok().as_deref(),
                Some(n.as_str()),
                "{input:?}"
            );
            let parts = split_url(&n);
            assert!(!parts.scheme.is_empty(), "{n:?}");
            for seg in parts.key.split('/') {
                let lower = seg.to_ascii_lowercase();
                assert!(
                    !matches!(
                        lower.as_str(),
                        "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
                    ),
                    "dot segment in {n:?} from {input:?}"
                );
            }
        }
    }
    if let (Ok(target), Ok(mount)) = (normalize_url(&a), normalize_mount(&b)) {
        if is_under(&target, &mount) {
            assert!(target.starts_with(&mount), "{target:?} under {mount:?}");
            let rest = &target[mount.len()..];
            assert!(
                rest.is_empty() || rest.starts_with('/') || mount.ends_with('/'),
                "{target:?} only shares a prefix with {mount:?}"
            );
        }
    }
}

/// The worker's query string and value parsers (numbers, booleans, sizes,
/// durations, times).
pub fn query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let q = alluxiofs_worker::http::Query::parse(Some(&text));
    for name in [
        "path",
        "offset",
        "length",
        "recursive",
        "since",
        "bandwidth",
        "ttl",
        "opType",
    ] {
        let _ = q.str(name);
        let _ = q.required(name);
        let _ = q.u64(name);
        let _ = q.bool_or(name, false);
        let _ = q.size(name);
        let _ = q.unix_seconds(name);
    }
    let _ = alluxiofs_worker::units::parse_size(&text);
    let _ = alluxiofs_worker::units::parse_duration(&text);
    let _ = alluxiofs_worker::rules::parse_mount_quota(&text);
}

/// Page file headers and packed records: decoding never panics; a page
/// encoded from the input decodes to itself and verifies, and one flipped
/// byte of its data never verifies.
pub fn page_header(data: &[u8]) {
    let _ = page_file::decode_header(data);
    let _ = page_file::decode_record_header(data);
    let _ = page_file::text_lens(data);
    let _ = page_file::verify(1 << 20, "s3://b/k", "v", 0, data.to_vec());
    let _ = page_file::verify_record(
        1 << 20,
        "s3://b/k",
        "v",
        0,
        bytes::Bytes::copy_from_slice(data),
    );
    let (url, body) = two_texts(data);
    let url: String = url.chars().take(300).collect();
    let index = data.len() as u64 % 7;
    let mut page = page_file::encode_header(1 << 16, &url, "etag", index, body.as_bytes());
    page.extend_from_slice(body.as_bytes());
    let h = page_file::decode_header(&page).expect("an encoded header decodes");
    assert!(page_file::check_header(&h, 1 << 16, &url, "etag", index).is_ok());
    let ok = page_file::verify(1 << 16, &url, "etag", index, page.clone()).expect("verifies");
    assert_eq!(&ok[..], body.as_bytes());
    if !body.is_empty() {
        let mut bad = page;
        let at = bad.len() - 1 - (data.len() % body.len());
        bad[at] ^= 0x01;
        assert!(
            page_file::verify(1 << 16, &url, "etag", index, bad).is_err(),
            "a flipped byte"
        );
    }
}

/// The Parquet footer parser on untrusted file tails: never panics, and
/// every column chunk it returns lies inside the file.
pub fn parquet_footer(data: &[u8]) {
    let _ = alluxiofs_core::parquet::footer_len(data);
    for size in [data.len() as u64, data.len() as u64 + (1 << 20), u64::MAX] {
        if let Ok(layout) = alluxiofs_core::parquet::parse_tail(data, size) {
            for cols in &layout.row_groups {
                for r in cols {
                    assert!(
                        r.start <= r.end && r.end <= size,
                        "{r:?} in a file of {size}"
                    );
                }
            }
            let _ = layout.chunk_at(0, size.min(1 << 20));
        }
    }
}

/// The worker records clients read from etcd and the placement value:
/// never panic; a record that parses survives a round trip.
pub fn etcd_record(data: &[u8]) {
    use alluxiofs_core::membership::WorkerRecord;
    if let Ok(r) = WorkerRecord::from_json(data) {
        let again = WorkerRecord::from_json(r.to_json().as_bytes()).expect("round trip");
        assert_eq!(again.to_json(), r.to_json());
        let _ = r.worker_identity();
        let _ = alluxiofs_core::discovery::worker_of(&r);
    }
    let _ = alluxiofs_worker::membership::parse_placement_value(data);
    let text = String::from_utf8_lossy(data);
    let _ = alluxiofs_core::discovery::parse_endpoints(&text, 2379);
    let _ = alluxiofs_worker::config::normalize_etcd_endpoint(&text);
}

/// What the S3 endpoint parses from a request before the service runs:
/// the path-style bucket and key, the Range header.
pub fn s3_request(data: &[u8]) {
    let (path, range) = two_texts(data);
    let _ = s3s::path::parse_path_style(&path);
    let _ = s3s::path::parse_virtual_hosted_style(Some("bucket"), &path);
    let _ = s3s::path::check_bucket_name(&path);
    let _ = s3s::dto::Range::parse(range.trim());
}
