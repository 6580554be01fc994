//! The readahead reader against a real HTTP worker on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use alluxiofs_core::client::{Client, ClientConfig};
use alluxiofs_core::reader::Reader;
use alluxiofs_core::Error;
use common::{random_bytes, TestWorker};

const URL: &str = "s3://bucket/seq.bin";
const SIZE: usize = 5 * (1 << 20) + 777;

fn config() -> ClientConfig {
    ClientConfig {
        page_size: 16 << 10,
        max_chunk: 64 << 20, // one request per segment: lets the test see them
        readahead_initial: 128 << 10,
        readahead_max: 1 << 20,
        retry_base: Duration::from_millis(5),
        ..ClientConfig::default()
    }
}

async fn setup(cfg: ClientConfig) -> (TestWorker, Arc<Client>, Vec<u8>) {
    let w = TestWorker::start().await;
    let src = random_bytes(SIZE, 42);
    w.state.put(URL, src.clone(), "v1");
    let client = Arc::new(Client::new(cfg, vec![w.worker_addr()]).unwrap());
    (w, client, src)
}

#[tokio::test]
async fn sequential_reads_are_batched_and_equal_source() {
    let (w, client, src) = setup(config()).await;
    let mut r = Reader::new(client.clone(), URL.into(), SIZE as u64, Some("v1".into()));
    assert_eq!(r.size(), SIZE as u64);
    let mut got = Vec::with_capacity(SIZE);
    let mut reads = 0;
    let mut buf = vec![0u8; 50_000];
    loop {
        let out = r.read_at(got.len() as u64, &mut buf).await.unwrap();
        assert!(out.holes.is_empty());
        if out.filled == 0 {
            break;
        }
        reads += 1;
        got.extend_from_slice(&buf[..out.filled]);
    }
    assert_eq!(got.len(), SIZE);
    assert!(got == src, "sequential bytes differ from the source");
    let requests = w.range_requests();
    assert!(reads > 100);
    // Windows 128K, 256K, 512K, then 1M each: about 8 requests for 5 MiB.
    assert!(requests <= 10, "{requests} requests for {reads} reads");
    let lengths = w.state.range_lengths.lock().unwrap().clone();
    assert_eq!(
        *lengths.iter().max().unwrap(),
        1 << 20,
        "window grows to max"
    );
    assert!(lengths.contains(&(128 << 10)) && lengths.contains(&(256 << 10)));
    // Nothing fetched twice: requested bytes ≈ file size.
    let asked: u64 = lengths.iter().sum();
    assert!(
        asked >= SIZE as u64 && asked < SIZE as u64 + (1 << 20),
        "{asked}"
    );
}

#[tokio::test]
async fn random_reads_and_seeks_equal_source() {
    let (w, client, src) = setup(config()).await;
    let mut r = Reader::new(client, URL.into(), SIZE as u64, None);
    let mut x: u64 = 99;
    let mut next = |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        (x >> 33) % n
    };
    let mut pos = 0u64;
    for _ in 0..300 {
        // Mostly sequential with occasional seeks, small skips and reads
        // past the end.
        match next(10) {
            0 => pos = next(SIZE as u64 + 100),
            1 => pos = pos.saturating_sub(next(4000)),
            2 => pos += next(3000),
            _ => {}
        }
        let len = 1 + next(200_000) as usize;
        let mut buf = vec![0u8; len];
        let out = r.read_at(pos, &mut buf).await.unwrap();
        let want_end = (pos as usize + len).min(SIZE);
        let want: &[u8] = if (pos as usize) < SIZE {
            &src[pos as usize..want_end]
        } else {
            &[]
        };
        assert_eq!(out.filled, want.len(), "at {pos} len {len}");
        assert!(&buf[..out.filled] == want, "bytes at {pos} len {len}");
        assert!(out.holes.is_empty());
        pos += out.filled as u64;
    }
    assert!(w.range_requests() > 0);
}

#[tokio::test]
async fn seek_resets_the_window() {
    let (w, client, src) = setup(config()).await;
    let mut r = Reader::new(client, URL.into(), SIZE as u64, None);
    let mut buf = vec![0u8; 10_000];
    for i in 0..40u64 {
        r.read_at(i * 10_000, &mut buf).await.unwrap();
    }
    w.state.range_lengths.lock().unwrap().clear();
    // A far seek: read directly, exactly the asked bytes, no readahead.
    let out = r.read_at(4_000_000, &mut buf).await.unwrap();
    assert_eq!(out.filled, 10_000);
    assert_eq!(buf[..], src[4_000_000..4_010_000]);
    assert_eq!(w.state.range_lengths.lock().unwrap().clone(), vec![10_000]);
    // Sequential again: readahead restarts at the initial window.
    r.read_at(4_010_000, &mut buf).await.unwrap();
    assert_eq!(buf[..], src[4_010_000..4_020_000]);
    assert_eq!(
        w.state.range_lengths.lock().unwrap().clone(),
        vec![10_000, 128 << 10]
    );
}

#[tokio::test]
async fn reader_reports_holes_and_errors() {
    let (w, client, _src) = setup(ClientConfig {
        retries: 0,
        ..config()
    })
    .await;
    w.state.fail_all.store(true, Ordering::SeqCst);
    let mut r = Reader::new(client.clone(), URL.into(), SIZE as u64, None);
    let mut buf = vec![0u8; 20_000];
    let out = r.read_at(1000, &mut buf).await.unwrap();
    assert_eq!(out.filled, 20_000);
    assert_eq!(out.holes, vec![1000..21_000]);
    assert!(client.stats().fallbacks.values().sum::<u64>() >= 1);
    // A changed object is an error, not stale bytes.
    let w2 = TestWorker::start().await;
    w2.state.put(URL, random_bytes(SIZE, 1), "v2");
    let c2 = Arc::new(Client::new(config(), vec![w2.worker_addr()]).unwrap());
    let mut r2 = Reader::new(c2, URL.into(), SIZE as u64, Some("v1".into()));
    assert!(matches!(
        r2.read_at(0, &mut buf).await,
        Err(Error::ObjectChanged { .. })
    ));
}

/// Sequential 64 KiB reads through the reader with default windows (run with
/// `cargo test -p alluxiofs-core --test reader -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sequential_throughput() {
    let w = TestWorker::start().await;
    let size = 256usize << 20;
    w.state.put(URL, random_bytes(size, 5), "v1");
    let client = Arc::new(Client::new(ClientConfig::default(), vec![w.worker_addr()]).unwrap());
    let mut buf = vec![0u8; 64 << 10];
    let t = std::time::Instant::now();
    let mut r = Reader::new(client.clone(), URL.into(), size as u64, None);
    let mut pos = 0u64;
    while pos < size as u64 {
        pos += r.read_at(pos, &mut buf).await.unwrap().filled as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "reader 256 MiB in 64 KiB reads: {:.0} MiB/s, {} reads, {} worker requests",
        256.0 / secs,
        size / buf.len(),
        w.range_requests()
    );
}
