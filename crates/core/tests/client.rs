//! The client against real HTTP workers on loopback (tests/common).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use alluxiofs_core::client::{Client, ClientConfig, WorkerAddr};
use alluxiofs_core::Error;
use common::{dead_worker, random_bytes, TestWorker};

const URL: &str = "s3://bucket/dir/data.bin";
const SIZE: usize = 3 * (1 << 20) + 12_345;

fn config() -> ClientConfig {
    ClientConfig {
        page_size: 64 << 10,
        max_chunk: 256 << 10,
        max_parallel: 8,
        retry_base: Duration::from_millis(5),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    }
}

/// Cheap deterministic sequence for test offsets.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[tokio::test]
async fn random_ranges_equal_source() {
    let w = TestWorker::start().await;
    let src = random_bytes(SIZE, 1);
    w.state.put(URL, src.clone(), "v1");
    let client = Client::new(config(), vec![w.worker_addr()]).unwrap();
    let mut rng = Lcg(7);
    for _ in 0..60 {
        let off = rng.below(SIZE as u64 + 1000);
        let len = 1 + rng.below(1 << 20) as usize;
        let mut buf = vec![0xAAu8; len];
        let out = client
            .read_into(URL, Some("v1"), off, &mut buf)
            .await
            .unwrap();
        let want_end = (off as usize + len).min(SIZE);
        let want = if (off as usize) < SIZE {
            &src[off as usize..want_end]
        } else {
            &[][..]
        };
        assert!(out.holes.is_empty(), "{:?}", out.holes);
        assert_eq!(out.filled, want.len(), "off {off} len {len}");
        assert_eq!(&buf[..out.filled], want);
        // Bytes past the end of the file are not touched.
        assert!(buf[out.filled..].iter().all(|&b| b == 0xAA));
    }
    // One large read is split into max_chunk requests.
    let before = w.range_requests();
    let mut all = vec![0u8; SIZE];
    let out = client.read_into(URL, None, 0, &mut all).await.unwrap();
    assert_eq!(out.filled, SIZE);
    assert_eq!(all, src);
    let requests = w.range_requests() - before;
    assert_eq!(requests, (SIZE as u64).div_ceil(256 << 10));
    assert!(w
        .state
        .range_lengths
        .lock()
        .unwrap()
        .iter()
        .all(|&l| l <= 256 << 10));
    let stats = client.stats();
    assert!(stats.bytes_read >= SIZE as u64);
    assert!(stats.fallbacks.is_empty() && stats.errors.is_empty());
    // read_range: a new buffer, cut at the end of the file.
    let r = client
        .read_range(URL, None, SIZE as u64 - 10, SIZE as u64 + 10)
        .await
        .unwrap();
    assert_eq!(&r.data[..], &src[SIZE - 10..]);
    assert!(client
        .read_range(URL, None, 5, 5)
        .await
        .unwrap()
        .data
        .is_empty());
}

#[tokio::test]
async fn read_ranges_coalesces_and_slices_back() {
    let w = TestWorker::start().await;
    let a = random_bytes(SIZE, 2);
    let b = random_bytes(500_000, 3);
    let url_b = "s3://bucket/other";
    w.state.put(URL, a.clone(), "v1");
    w.state.put(url_b, b.clone(), "v2");
    let cfg = ClientConfig {
        coalesce_gap: 4096,
        ..config()
    };
    let client = Client::new(cfg, vec![w.worker_addr()]).unwrap();
    let mut reqs = Vec::new();
    // Many small nearby ranges of `a` (one merged fetch), a far one, ranges
    // of `b` including one past its end, an empty and a duplicate range.
    for i in 0..20u64 {
        reqs.push((URL.to_string(), 1000 + i * 3000, 1000 + i * 3000 + 500));
    }
    reqs.push((URL.to_string(), 2_000_000, 2_900_000));
    reqs.push((url_b.to_string(), 10, 20));
    reqs.push((url_b.to_string(), 499_000, 600_000));
    reqs.push((URL.to_string(), 7, 7));
    reqs.push((URL.to_string(), 1000, 1500));
    let before = w.range_requests();
    let results = client.read_ranges(&reqs).await;
    let requests = w.range_requests() - before;
    assert_eq!(results.len(), reqs.len());
    for ((url, s, e), r) in reqs.iter().zip(&results) {
        let src = if url == URL { &a } else { &b };
        let r = r.as_ref().unwrap();
        let end = (*e as usize).min(src.len());
        let start = (*s as usize).min(end);
        assert_eq!(&r.data[..], &src[start..end], "{url} {s}..{e}");
        assert!(r.holes.is_empty());
    }
    // 20 nearby + duplicate → 1 fetch; far range 900 KB → 4 chunks of 256 KiB
    // pages; b: 2 fetches. Far fewer requests than the 25 ranges.
    assert!(requests <= 8, "{requests} requests");
}

#[tokio::test]
async fn transient_503_is_retried() {
    let w = TestWorker::start().await;
    let src = random_bytes(SIZE, 4);
    w.state.put(URL, src.clone(), "v1");
    w.state.fail_first_per_offset.store(true, Ordering::SeqCst);
    let client = Client::new(config(), vec![w.worker_addr()]).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let out = client.read_into(URL, None, 100, &mut buf).await.unwrap();
    assert!(out.holes.is_empty());
    assert_eq!(buf, src[100..100 + (1 << 20)]);
    let stats = client.stats();
    let chunks = 5; // [100, 256Ki), three of 256 KiB, the tail
    assert_eq!(stats.retries, chunks);
    assert_eq!(stats.errors.values().sum::<u64>(), chunks);
    assert_eq!(stats.worker_requests, 2 * chunks);
    assert!(stats.fallbacks.is_empty());
}

#[tokio::test]
async fn failing_worker_leaves_holes_and_is_skipped() {
    let w = TestWorker::start().await;
    w.state.put(URL, random_bytes(SIZE, 5), "v1");
    w.state.fail_all.store(true, Ordering::SeqCst);
    let cfg = ClientConfig {
        retries: 1,
        ..config()
    };
    let client = Client::new(cfg, vec![w.worker_addr()]).unwrap();
    let mut buf = vec![0u8; 600_000];
    let out = client.read_into(URL, None, 50_000, &mut buf).await.unwrap();
    // Nothing known about the end of the file: the whole range is a hole.
    assert_eq!(out.filled, 600_000);
    assert_eq!(out.holes, vec![50_000..650_000]);
    assert!(
        matches!(&out.fault, Some(Error::WorkerUnavailable { reason, .. }) if reason.contains("503")),
        "{:?}",
        out.fault
    );
    let stats = client.stats();
    let addr = w.worker_addr().addr();
    assert!(stats.fallbacks[&addr] >= 1);
    assert!(stats.errors[&addr] >= 1);
    // The worker is now skipped: the next read asks it nothing.
    let before = w.range_requests();
    let out = client.read_into(URL, None, 0, &mut buf).await.unwrap();
    assert_eq!(out.holes, vec![0..600_000]);
    assert_eq!(w.range_requests(), before);
    // Metadata: every preferred worker faulty → WorkerUnavailable.
    let err = client.info(URL).await.unwrap_err();
    assert!(matches!(err, Error::WorkerUnavailable { .. }), "{err}");
}

#[tokio::test]
async fn one_paths_ufs_failure_does_not_skip_the_worker() {
    let w = TestWorker::start().await;
    let bad = "s3://bucket/broken";
    w.state.put(bad, random_bytes(SIZE, 6), "v1");
    w.state.put(URL, random_bytes(SIZE, 7), "v1");
    w.state.ufs_failing.lock().unwrap().insert(bad.to_string());
    let client = Client::new(config(), vec![w.worker_addr()]).unwrap();
    let mut buf = vec![0u8; 100_000];
    // The broken path: a hole for the UFS fallback, the fault says why, and
    // the worker is asked once (it retried its UFS itself).
    let out = client.read_into(bad, None, 0, &mut buf).await.unwrap();
    assert_eq!(out.holes, vec![0..100_000]);
    assert!(
        matches!(&out.fault, Some(Error::UfsFailure { path, .. }) if path == bad),
        "{:?}",
        out.fault
    );
    assert_eq!(w.range_requests(), 1);
    let err = client.info(bad).await.unwrap_err();
    assert!(matches!(err, Error::UfsFailure { .. }), "{err}");
    // The worker is not marked down: the next path is served by it.
    assert!(!client.is_marked_down(&w.worker_addr()));
    let want = random_bytes(SIZE, 7);
    let out = client.read_into(URL, None, 0, &mut buf).await.unwrap();
    assert!(out.holes.is_empty(), "{:?}", out.holes);
    assert_eq!(&buf[..], &want[..100_000]);
    assert_eq!(w.range_requests(), 2);
}

/// A URL whose primary (of 2 replicas) is `bad`.
fn url_with_primary(client: &Client, bad: &WorkerAddr) -> String {
    (0..1000)
        .map(|i| format!("s3://bucket/f{i}"))
        .find(|u| client.workers_for(u)[0].identity == bad.identity)
        .expect("some URL maps to the bad worker first")
}

#[tokio::test]
async fn next_replica_serves_when_primary_fails() {
    for dead in [false, true] {
        let good = TestWorker::start().await;
        let bad_server = TestWorker::start().await;
        bad_server.state.fail_all.store(true, Ordering::SeqCst);
        let bad = if dead {
            dead_worker().await
        } else {
            bad_server.worker_addr()
        };
        let cfg = ClientConfig {
            replicas: 2,
            ..config()
        };
        let client = Client::new(cfg, vec![bad.clone(), good.worker_addr()]).unwrap();
        let url = url_with_primary(&client, &bad);
        assert_eq!(client.workers_for(&url).len(), 2);
        let src = random_bytes(700_000, 6);
        good.state.put(&url, src.clone(), "v1");
        bad_server.state.put(&url, src.clone(), "v1");
        let mut buf = vec![0u8; 700_000];
        let out = client.read_into(&url, None, 0, &mut buf).await.unwrap();
        assert!(out.holes.is_empty(), "dead={dead}");
        assert_eq!(buf, src);
        let stats = client.stats();
        assert!(stats.errors[&bad.addr()] >= 1);
        assert!(stats.fallbacks.is_empty());
        assert_eq!(client.info(&url).await.unwrap().length, 700_000);
    }
}

#[tokio::test]
async fn worker_dying_mid_body_keeps_what_arrived() {
    let w = TestWorker::start().await;
    let src = random_bytes(SIZE, 8);
    w.state.put(URL, src.clone(), "v1");
    w.state.cut_after.store(100_000, Ordering::SeqCst);
    let cfg = ClientConfig {
        max_chunk: 8 << 20, // one request for the whole read
        retries: 2,
        ..config()
    };
    let client = Client::new(cfg, vec![w.worker_addr()]).unwrap();
    let mut buf = vec![0u8; 500_000];
    let out = client.read_into(URL, None, 1000, &mut buf).await.unwrap();
    // Each of the 3 attempts delivered 100 000 more bytes before dying.
    assert_eq!(out.filled, 500_000);
    assert_eq!(out.holes, vec![301_000..501_000]);
    assert_eq!(&buf[..300_000], &src[1000..301_000]);
    assert_eq!(
        w.state.range_lengths.lock().unwrap().clone(),
        vec![500_000, 400_000, 300_000]
    );
    assert_eq!(client.stats().fallbacks[&w.worker_addr().addr()], 1);
}

#[tokio::test]
async fn request_errors_are_errors() {
    let w = TestWorker::start().await;
    w.state.put(URL, random_bytes(1000, 9), "v1");
    let client = Client::new(config(), vec![w.worker_addr()]).unwrap();
    let missing = "s3://bucket/missing";
    let mut buf = vec![0u8; 10];
    match client.read_into(missing, None, 0, &mut buf).await {
        Err(Error::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.info(missing).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        client.read_into(URL, Some("old"), 0, &mut buf).await,
        Err(Error::ObjectChanged { .. })
    ));
    // One missing file fails only its own ranges.
    let res = client
        .read_ranges(&[
            (missing.to_string(), 0, 5),
            (URL.to_string(), 0, 5),
            (missing.to_string(), 7, 9),
        ])
        .await;
    assert!(matches!(res[0], Err(Error::NotFound { .. })));
    assert_eq!(res[1].as_ref().unwrap().data.len(), 5);
    assert!(matches!(res[2], Err(Error::NotFound { .. })));
    // No fault was counted for request errors.
    assert!(client.stats().errors.is_empty());
}

#[tokio::test]
async fn auth_token_is_sent() {
    let w = TestWorker::start().await;
    w.state.put(URL, random_bytes(1000, 10), "v1");
    *w.state.token.lock().unwrap() = Some("s3cret".into());
    let anon = Client::new(config(), vec![w.worker_addr()]).unwrap();
    assert!(matches!(
        anon.info(URL).await,
        Err(Error::PermissionDenied { .. })
    ));
    let cfg = ClientConfig {
        auth_token: Some("s3cret".into()),
        ..config()
    };
    let client = Client::new(cfg, vec![w.worker_addr()]).unwrap();
    assert_eq!(client.info(URL).await.unwrap().length, 1000);
    let mut buf = vec![0u8; 1000];
    assert_eq!(
        client
            .read_into(URL, None, 0, &mut buf)
            .await
            .unwrap()
            .filled,
        1000
    );
}

#[tokio::test]
async fn metadata_list_and_invalidate() {
    let w1 = TestWorker::start().await;
    let w2 = TestWorker::start().await;
    for w in [&w1, &w2] {
        w.state.put("s3://bucket/d/a", vec![1; 10], "va");
        w.state.put("s3://bucket/d/b c", vec![2; 20], "vb");
        w.state.put("s3://bucket/d/sub/x", vec![3; 5], "vx");
    }
    let client = Client::new(config(), vec![w1.worker_addr(), w2.worker_addr()]).unwrap();
    let info = client.info("s3://bucket/d/b c").await.unwrap();
    assert_eq!((info.length, info.content_hash.as_str()), (20, "vb"));
    let names: Vec<String> = client
        .list("s3://bucket/d")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["a", "b c"]);
    client.invalidate("s3://bucket/d", true).await.unwrap();
    assert_eq!(w1.state.invalidations.load(Ordering::SeqCst), 1);
    assert_eq!(w2.state.invalidations.load(Ordering::SeqCst), 1);
    // A dead worker does not fail the invalidation of the others.
    let dead = dead_worker().await;
    client.set_workers(vec![w1.worker_addr(), dead.clone()]);
    client.invalidate("s3://bucket/d/a", false).await.unwrap();
    assert_eq!(w1.state.invalidations.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().errors[&dead.addr()], 1);
    // get_text reaches any endpoint with the auth header.
    let body = client
        .get_text(&w1.worker_addr(), "/v1/info?path=s3%3A%2F%2Fbucket%2Fd%2Fa")
        .await
        .unwrap();
    assert!(body.contains("\"mLength\":10"), "{body}");
}

#[tokio::test]
async fn hung_worker_costs_one_timeout_then_is_skipped() {
    let w = TestWorker::start().await;
    w.state.put(URL, random_bytes(SIZE, 11), "v1");
    w.state.delay_ms.store(5_000, Ordering::SeqCst);
    let cfg = ClientConfig {
        request_timeout: Duration::from_millis(200),
        retries: 0,
        ..config()
    };
    let client = Client::new(cfg, vec![w.worker_addr()]).unwrap();
    let mut buf = vec![0u8; 100_000];
    let t = std::time::Instant::now();
    let out = client.read_into(URL, None, 0, &mut buf).await.unwrap();
    let first = t.elapsed();
    assert_eq!(out.holes, vec![0..100_000]);
    assert!(
        first >= Duration::from_millis(200) && first < Duration::from_secs(3),
        "{first:?}"
    );
    // The hole says why: the request timed out, under request_timeout.
    assert!(
        matches!(&out.fault, Some(Error::Timeout(d, _)) if *d == Duration::from_millis(200)),
        "{:?}",
        out.fault
    );
    let t = std::time::Instant::now();
    let out = client.read_into(URL, None, 0, &mut buf).await.unwrap();
    assert_eq!(out.holes, vec![0..100_000]);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "skipped worker still waited"
    );
    // Skipped, the worker still reports the timeout that marked it down.
    assert!(
        matches!(&out.fault, Some(Error::Timeout(..))),
        "{:?}",
        out.fault
    );
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let w = TestWorker::start().await;
    w.state.put(URL, random_bytes(1000, 12), "v1");
    w.state.fail_all.store(true, Ordering::SeqCst);
    let cfg = ClientConfig {
        retries: 1000,
        retry_base: Duration::from_millis(20),
        retry_deadline: Duration::from_millis(300),
        ..config()
    };
    let client = Client::new(cfg, vec![w.worker_addr()]).unwrap();
    let mut buf = vec![0u8; 1000];
    let t = std::time::Instant::now();
    let out = client.read_into(URL, None, 0, &mut buf).await.unwrap();
    assert_eq!(out.holes, vec![0..1000]);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    let retries = client.stats().retries;
    // 20, 40, 80, 160 ms (jittered down to half) fit in 300 ms; 320 does not.
    assert!((2..=5).contains(&retries), "{retries} retries");
    assert_eq!(w.range_requests(), retries + 1);
}

/// Loopback throughput of one large read (run with
/// `cargo test --release -p alluxiofs-core --test client -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let w = TestWorker::start().await;
    let size = 256 << 20;
    w.state.put(URL, random_bytes(size, 13), "v1");
    let client = Client::new(ClientConfig::default(), vec![w.worker_addr()]).unwrap();
    let mut buf = vec![0u8; size];
    client.read_into(URL, None, 0, &mut buf).await.unwrap(); // warm the pool
    let t = std::time::Instant::now();
    let rounds = 4;
    for _ in 0..rounds {
        let out = client.read_into(URL, None, 0, &mut buf).await.unwrap();
        assert_eq!(out.filled, size);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "read_into 256 MiB x{rounds}: {:.0} MiB/s ({} requests)",
        (rounds * 256) as f64 / secs,
        client.stats().worker_requests
    );
}

#[tokio::test]
async fn replica_resumes_where_a_dying_primary_stopped() {
    let good = TestWorker::start().await;
    let bad = TestWorker::start().await;
    bad.state.cut_after.store(70_000, Ordering::SeqCst);
    let cfg = ClientConfig {
        replicas: 2,
        retries: 0,
        ..config()
    };
    let client = Client::new(cfg, vec![bad.worker_addr(), good.worker_addr()]).unwrap();
    let url = url_with_primary(&client, &bad.worker_addr());
    let src = random_bytes(1 << 20, 14);
    good.state.put(&url, src.clone(), "v1");
    bad.state.put(&url, src.clone(), "v1");
    let mut buf = vec![0u8; 1 << 20];
    let out = client.read_into(&url, None, 0, &mut buf).await.unwrap();
    assert!(out.holes.is_empty());
    assert!(buf == src);
    // Four 256 KiB chunks started on the primary; each got 70 000 bytes
    // before it died, and the replica was asked only for the rest.
    let mut asked = good.state.range_lengths.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, vec![(256 << 10) - 70_000; 4]);
}

#[tokio::test]
async fn read_files_one_request_per_small_file() {
    let w = TestWorker::start().await;
    let chunk = config().max_chunk as usize;
    let sizes = [0usize, 1, 5000, chunk - 1, chunk, chunk + 1, 3 * chunk + 77];
    let mut urls = Vec::new();
    let mut srcs = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let url = format!("s3://bucket/files/f{i}");
        let src = random_bytes(*size, i as u64 + 100);
        w.state.put(&url, src.clone(), &format!("v{i}"));
        urls.push(url);
        srcs.push(src);
    }
    urls.push("s3://bucket/files/missing".into());
    let client = Client::new(config(), vec![w.worker_addr()]).unwrap();
    let out = client.read_files(&urls).await;
    assert_eq!(out.len(), urls.len());
    for (i, src) in srcs.iter().enumerate() {
        let r = out[i].as_ref().unwrap();
        assert!(r.holes.is_empty());
        assert_eq!(&r.data[..], &src[..], "file {i} of {} bytes", src.len());
    }
    assert!(matches!(out.last().unwrap(), Err(Error::NotFound { .. })));
    // One request per file up to max_chunk, plus ceil(rest / max_chunk) for
    // the larger ones, and no metadata request at all.
    let rest = |s: usize| s.saturating_sub(chunk).div_ceil(chunk) as u64;
    let expected: u64 = sizes.iter().map(|&s| 1 + rest(s)).sum::<u64>() + 1;
    assert_eq!(w.range_requests(), expected);
    assert_eq!(w.state.meta_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn read_files_reports_unavailable_workers() {
    let w = TestWorker::start().await;
    w.state.put("s3://bucket/x", random_bytes(1000, 3), "v1");
    w.state.fail_all.store(true, Ordering::SeqCst);
    let client = Client::new(
        ClientConfig {
            retries: 1,
            ..config()
        },
        vec![w.worker_addr()],
    )
    .unwrap();
    let out = client.read_files(&["s3://bucket/x".to_string()]).await;
    assert!(
        matches!(out[0], Err(Error::WorkerUnavailable { .. })),
        "{:?}",
        out[0]
    );
    assert_eq!(client.stats().fallbacks.values().sum::<u64>(), 1);
    // The retry happened: two attempts on the one worker.
    assert_eq!(w.range_requests(), 2);
}

#[tokio::test]
async fn failed_worker_is_probed_and_used_again_once_healthy() {
    let primary = TestWorker::start().await;
    let replica = TestWorker::start().await;
    let cfg = ClientConfig {
        replicas: 2,
        retries: 0,
        ..config()
    };
    let client = Client::new(cfg, vec![primary.worker_addr(), replica.worker_addr()]).unwrap();
    let url = url_with_primary(&client, &primary.worker_addr());
    let src = random_bytes(300_000, 11);
    primary.state.put(&url, src.clone(), "v1");
    replica.state.put(&url, src.clone(), "v1");

    primary.state.fail_all.store(true, Ordering::SeqCst);
    let mut buf = vec![0u8; 300_000];
    let out = client.read_into(&url, None, 0, &mut buf).await.unwrap();
    // The next preferred worker served it.
    assert!(out.holes.is_empty());
    assert_eq!(buf, src);
    assert!(client.is_marked_down(&primary.worker_addr()));
    let failed_at = std::time::Instant::now();

    // While it still fails, the probe (503) does not clear the mark, and
    // reads keep going to the replica.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(primary.state.health_requests.load(Ordering::SeqCst) >= 1);
    assert!(client.is_marked_down(&primary.worker_addr()));
    let replica_before = replica.range_requests();
    client.read_into(&url, None, 0, &mut buf).await.unwrap();
    assert!(replica.range_requests() > replica_before);

    // It recovers: the next probe (1.5 s after the failure) clears the mark
    // with no read asking it anything.
    primary.state.fail_all.store(false, Ordering::SeqCst);
    let deadline = failed_at + Duration::from_millis(2500);
    while client.is_marked_down(&primary.worker_addr()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!client.is_marked_down(&primary.worker_addr()));
    let primary_before = primary.range_requests();
    let out = client.read_into(&url, None, 0, &mut buf).await.unwrap();
    assert!(out.holes.is_empty());
    assert_eq!(buf, src);
    assert!(
        primary.range_requests() > primary_before,
        "primary not used again"
    );
}
