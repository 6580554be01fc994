//! Worker throughput and latency on loopback, reproducible:
//!
//! ```sh
//! cargo run --release -p alluxiofs-worker --example bench -- [SIZE_MIB] [CONCURRENCY]
//! ```
//!
//! Writes a file of random bytes (256 MiB by default) into a temporary
//! `file://` mount, starts a worker with `start()` on 127.0.0.1:0 (memory
//! tier off, so warm reads come from the page files) and reads the file
//! with `CONCURRENCY` (default 4) parallel keep-alive clients in 8 MiB
//! ranges: once cold (read-through), twice warm. Then 1,000 sequential
//! 4 KiB ranges for latency. Prints MiB/s, latencies and the UFS request
//! counts of the worker.

use alluxiofs_core::path::path_id;
use alluxiofs_worker::config::{CacheDirConfig, WorkerConfig};
use alluxiofs_worker::metrics::UfsOp;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RANGE: u64 = 8 << 20;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size_mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let concurrency: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let size = size_mib << 20;

    let dir = tempfile::tempdir().expect("temp dir");
    let ufs = dir.path().join("ufs");
    std::fs::create_dir(&ufs).expect("ufs dir");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(ufs.join("data.bin"), &data).expect("write data");

    let config = WorkerConfig {
        port: 0,
        cache_dirs: vec![CacheDirConfig::new(dir.path().join("cache"))],
        memory_capacity: 0,
        ..WorkerConfig::with_mounts([ufs.to_str().expect("utf-8 path")])
    };
    let worker = alluxiofs_worker::start(config).await.expect("start worker");
    let url = format!("file://{}/data.bin", ufs.display());
    let q: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    let base = Arc::new(format!(
        "{}/v1/range/{}?ufsFullPath={q}",
        worker.url(),
        path_id(&url)
    ));
    let client = reqwest::Client::new();
    println!(
        "file {size_mib} MiB, ranges of {} MiB, {concurrency} parallel clients",
        RANGE >> 20
    );

    for pass in ["cold", "warm", "warm"] {
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|c| {
                let client = client.clone();
                let base = base.clone();
                tokio::spawn(async move {
                    let mut offset = c * RANGE;
                    let mut bytes = 0u64;
                    while offset < size {
                        let body = client
                            .get(format!("{base}&offset={offset}&length={RANGE}"))
                            .send()
                            .await
                            .expect("request")
                            .bytes()
                            .await
                            .expect("body");
                        bytes += body.len() as u64;
                        offset += concurrency * RANGE;
                    }
                    bytes
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        assert_eq!(total, size);
        let secs = started.elapsed().as_secs_f64();
        println!("{pass:>5}: {:8.0} MiB/s", size_mib as f64 / secs);
    }

    let mut lat: Vec<Duration> = Vec::with_capacity(1000);
    for i in 0..1000u64 {
        let offset = (i * 7919 * 4096) % (size - 4096);
        let t = Instant::now();
        let body = client
            .get(format!("{base}&offset={offset}&length=4096"))
            .send()
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body");
        lat.push(t.elapsed());
        assert_eq!(&body[..], &data[offset as usize..offset as usize + 4096]);
    }
    lat.sort();
    println!(
        "warm 4 KiB range: p50 {:?}, p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    let m = worker.state().cache.metrics();
    println!(
        "UFS requests: get {}, head {}, list {}",
        m.ufs_requests(UfsOp::Get),
        m.ufs_requests(UfsOp::Head),
        m.ufs_requests(UfsOp::List)
    );
    worker.shutdown().await.expect("shutdown");
}
