//! The page store at tens of millions of pages, measured without HTTP or a
//! UFS (so a 10 M step takes minutes, not an hour):
//!
//! ```sh
//! cargo run --release -p alluxiofs-worker --example store_scale -- [PAGES] [PAGE_BYTES] [DIR]
//! ```
//!
//! Fills one cache directory (default: a temporary one; `DIR` keeps it)
//! with `PAGES` (default 10,000,000) one-page files of `PAGE_BYTES`
//! (default 256) through [`PageStore::put`], under 52-character URLs, from
//! four threads; closes the store; then opens it again in child processes
//! of this program, each measuring itself:
//!
//! - `empty`: a store over an empty directory (the baseline);
//! - `clean`: the filled directory after a clean shutdown;
//! - `crash`: the same with the clean mark removed (what a killed worker
//!   leaves: the names file is checked too).
//!
//! Per open: seconds until `open_with` returns and until the first `get`
//! of a cached page returns its bytes, resident memory (`VmRSS`) added by
//! the open, `alluxiofs_index_memory_bytes`, and the bytes the process read
//! (`rchar`); then the rate of 400,000 `get`s of random cached pages from
//! four threads. Prints one JSON object per line, then a summary with the
//! ratios against the empty baseline.

use alluxiofs_worker::metrics::Metrics;
use alluxiofs_worker::store::{DirSpec, PageKey, PageStore, StoreOptions};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const PAGE_SIZE: u64 = 1 << 20;
const THREADS: u64 = 4;
/// Random gets timed after each open of the filled store.
const WARM_GETS: u64 = 400_000;

fn url(i: u64) -> String {
    // 52 bytes: a dataset of images in directories of 1,000.
    format!(
        "s3://bucket/dataset/train/{:06}/img-{:010}.jpg",
        i / 1000,
        i
    )
}

fn data(i: u64, len: usize) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

fn proc_field(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss() -> u64 {
    proc_field("/proc/self/status", "VmRSS:") * 1024
}

fn open(dir: &Path, capacity: u64) -> (PageStore, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let store = PageStore::open_with(
        vec![DirSpec {
            path: dir.to_path_buf(),
            capacity,
        }],
        0,
        PAGE_SIZE,
        metrics.clone(),
        StoreOptions::default(),
    )
    .expect("open the store");
    (store, metrics)
}

fn capacity_for(pages: u64, bytes: u64) -> u64 {
    // Records are 48 bytes of header plus the data, 8-byte aligned; a
    // quarter more for open segments and compaction's reserve.
    let record = (bytes + 48).div_ceil(8) * 8;
    pages * record / 4 * 5 + (64 << 20)
}

fn fill(dir: &Path, pages: u64, bytes: usize) {
    let (store, _) = open(dir, capacity_for(pages, bytes as u64));
    let store = Arc::new(store);
    let t = Instant::now();
    let before = rss();
    std::thread::scope(|s| {
        for n in 0..THREADS {
            let store = store.clone();
            s.spawn(move || {
                let mut i = n;
                while i < pages {
                    let key = PageKey::new(url(i), "\"v1\"", 0);
                    assert!(
                        store.put(&key, &data(i, bytes)).expect("put"),
                        "page {i} stored"
                    );
                    i += THREADS;
                    if n == 0 && i % 1_000_000 < THREADS {
                        eprintln!("  {i} pages, {:.0} s", t.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let g = store.gauges();
    println!(
        "{{\"phase\":\"fill\",\"pages\":{},\"seconds\":{secs:.2},\"pages_per_s\":{:.0},\"index_memory_bytes\":{},\"rss_added_bytes\":{}}}",
        g.pages,
        pages as f64 / secs,
        g.index_memory_bytes,
        rss().saturating_sub(before)
    );
    drop(store);
}

fn measure_open(dir: &Path, probe: Option<u64>, bytes: usize) {
    let before = rss();
    let read_before = proc_field("/proc/self/io", "rchar:");
    let t = Instant::now();
    let (store, _) = open(dir, u64::MAX / 4);
    let opened = t.elapsed().as_secs_f64();
    let hit = probe.map(|i| {
        let got = store.get(&PageKey::new(url(i), "\"v1\"", 0));
        assert_eq!(got, Some(data(i, bytes)), "page {i} read back");
        t.elapsed().as_secs_f64()
    });
    let g = store.gauges();
    let (rss_added, rchar) = (
        rss().saturating_sub(before),
        proc_field("/proc/self/io", "rchar:") - read_before,
    );
    // Warm reads: WARM_GETS gets of random cached pages from THREADS
    // threads (the pages are in the page cache: this is the index and the
    // record check, not the disk).
    let gets_per_s = probe.map(|_| {
        let store = &store;
        let t = Instant::now();
        std::thread::scope(|s| {
            for n in 0..THREADS {
                s.spawn(move || {
                    let mut x = 0x2545_F491_4F6C_DD1Du64 ^ n;
                    for _ in 0..WARM_GETS / THREADS {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = x % g.pages;
                        let got = store.get(&PageKey::new(url(i), "\"v1\"", 0));
                        assert_eq!(got.map(|b| b.len()), Some(bytes), "page {i}");
                    }
                });
            }
        });
        WARM_GETS as f64 / t.elapsed().as_secs_f64()
    });
    println!(
        "{{\"pages\":{},\"open_s\":{opened:.3},\"first_hit_s\":{},\"rss_added_bytes\":{rss_added},\"index_memory_bytes\":{},\"rchar\":{rchar},\"warm_gets_per_s\":{}}}",
        g.pages,
        hit.map_or("null".into(), |h| format!("{h:.3}")),
        g.index_memory_bytes,
        gets_per_s.map_or("null".into(), |r| format!("{r:.0}")),
    );
    // Exit without the flush and checkpoint of a drop: only the open is
    // measured, and the directory is left as it was.
    std::mem::forget(store);
}

fn child(args: &[&str]) -> serde_json::Value {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .output()
        .expect("run a child");
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    println!("{args:?}: {}", line.trim());
    serde_json::from_str(line.trim()).expect("a JSON line")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("open") {
        let dir = PathBuf::from(&args[2]);
        let probe = args[3]
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .map(|p| p as u64);
        measure_open(&dir, probe, args[4].parse().expect("page bytes"));
        return;
    }
    let pages: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let bytes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = args
        .get(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let (full, empty) = (root.join("full"), root.join("empty"));
    std::fs::create_dir_all(&empty).expect("empty dir");
    eprintln!(
        "filling {pages} pages of {bytes} bytes into {}",
        full.display()
    );
    fill(&full, pages, bytes);
    let b = bytes.to_string();
    let probe = (pages / 2).to_string();
    let base = child(&["open", empty.to_str().unwrap(), "-1", &b]);
    let clean = child(&["open", full.to_str().unwrap(), &probe, &b]);
    let _ = std::fs::remove_file(full.join("index").join("clean"));
    let crash = child(&["open", full.to_str().unwrap(), &probe, &b]);
    let cached = pages as f64 * bytes as f64;
    for (name, r) in [("clean", &clean), ("crash", &crash)] {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "{name}: {} pages, first hit {:.2} s (open {:.2} s), {:.1} B/page resident over the empty store ({:.1} B/page by the index gauge), read {:.1}% of the bytes cached, {:.0} warm gets/s",
            r["pages"],
            f("first_hit_s"),
            f("open_s"),
            (f("rss_added_bytes") - base["rss_added_bytes"].as_f64().unwrap_or(0.0)) / pages as f64,
            f("index_memory_bytes") / pages as f64,
            100.0 * (f("rchar") - base["rchar"].as_f64().unwrap_or(0.0)) / cached,
            f("warm_gets_per_s"),
        );
    }
}
