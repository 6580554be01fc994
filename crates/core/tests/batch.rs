//! `Client::read_files` against in-process workers that speak the batch
//! route (`POST /v1/batch`, the wire format of `alluxiofs_core::batch`):
//! one request per owner, the rest of large files, per-file errors,
//! failover when a worker breaks off a batch or fails it, and the per-file
//! fallback for a worker without the route, detected once.
//!
//! The workers here are small axum servers on 127.0.0.1:0 over in-memory
//! files, with the range route for the per-file path; the real worker's
//! route is tested in `crates/worker/src/routes/batch.rs` and end to end
//! in `tests/test_batch.py`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alluxiofs_core::batch::{encode_header, BatchRequest, FrameHeader, BATCH_PATH};
use alluxiofs_core::client::{Client, ClientConfig, WorkerAddr};
use alluxiofs_core::path::path_id;
use alluxiofs_core::Error;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::random_bytes;

/// What a batch worker holds and how it misbehaves.
#[derive(Default)]
struct Files {
    /// URL → (content, version).
    files: Mutex<HashMap<String, (Bytes, String)>>,
    /// Batch requests received, and the files each named.
    batches: Mutex<Vec<usize>>,
    /// Range requests received.
    ranges: AtomicU64,
    /// Answer the batch route with 404, as a worker without it does.
    no_route: AtomicBool,
    /// Answer every batch with 503.
    fail_batches: AtomicBool,
    /// When non-zero: send this many frames, then break the connection.
    die_after: AtomicUsize,
    /// URLs whose frame is a `ufs_failure` (502) error.
    ufs_failing: Mutex<Vec<String>>,
}

struct BatchWorker {
    addr: SocketAddr,
    state: Arc<Files>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BatchWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BatchWorker {
    async fn start() -> Self {
        let state = Arc::new(Files::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(BATCH_PATH, post(batch))
            .route("/v1/range/{path_id}", get(range))
            .route("/healthz", get(|| async { "{\"status\":\"ok\"}" }))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        BatchWorker { addr, state, task }
    }

    fn worker_addr(&self) -> WorkerAddr {
        WorkerAddr::from_host_port("127.0.0.1", self.addr.port())
    }

    fn put(&self, url: &str, data: &[u8], version: &str) {
        self.state.files.lock().unwrap().insert(
            url.to_string(),
            (Bytes::copy_from_slice(data), version.into()),
        );
    }

    fn batches(&self) -> Vec<usize> {
        self.state.batches.lock().unwrap().clone()
    }

    fn ranges(&self) -> u64 {
        self.state.ranges.load(Ordering::SeqCst)
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"message": message, "code": code}).to_string();
    (status, body).into_response()
}

/// Frames in reverse request order (completion order is not request
/// order), the data of each file cut at the request's limit.
async fn batch(State(s): State<Arc<Files>>, body: Bytes) -> Response {
    if s.no_route.load(Ordering::SeqCst) {
        return error(StatusCode::NOT_FOUND, "not_found", "endpoint: not found");
    }
    let req: BatchRequest = serde_json::from_slice(&body).unwrap();
    s.batches.lock().unwrap().push(req.files.len());
    if s.fail_batches.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "overloaded");
    }
    let limit = req.limit.unwrap_or(u64::MAX);
    let failing = s.ufs_failing.lock().unwrap().clone();
    let mut pieces: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let die_after = s.die_after.load(Ordering::SeqCst);
    for (sent, (index, f)) in req.files.iter().enumerate().rev().enumerate() {
        if die_after > 0 && sent == die_after {
            pieces.push(Err(std::io::Error::other("worker died mid-batch")));
            break;
        }
        let found = s.files.lock().unwrap().get(&f.path).cloned();
        let (h, data) = match found {
            _ if failing.contains(&f.path) => (
                FrameHeader {
                    index,
                    status: 502,
                    code: Some("ufs_failure".into()),
                    message: Some(format!("{}: UFS error: reset", f.path)),
                    ..FrameHeader::default()
                },
                Bytes::new(),
            ),
            Some((data, version)) => {
                let head = data.slice(..(data.len() as u64).min(limit) as usize);
                (
                    FrameHeader {
                        index,
                        status: 200,
                        size: Some(data.len() as u64),
                        version: Some(version),
                        len: head.len() as u64,
                        ..FrameHeader::default()
                    },
                    head,
                )
            }
            None => (
                FrameHeader {
                    index,
                    status: 404,
                    code: Some("not_found".into()),
                    message: Some(format!("{}: not found", f.path)),
                    ..FrameHeader::default()
                },
                Bytes::new(),
            ),
        };
        pieces.push(Ok(encode_header(&h)));
        pieces.push(Ok(data));
    }
    // One piece at a time with a pause before a break, so the frames sent
    // reach the client before the connection dies.
    let stream = futures::stream::unfold(pieces.into_iter(), |mut it| async move {
        let next = it.next()?;
        if next.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some((next, it))
    });
    Response::builder()
        .status(200)
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn range(
    State(s): State<Arc<Files>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    s.ranges.fetch_add(1, Ordering::SeqCst);
    let url = q.get("ufsFullPath").cloned().unwrap_or_default();
    assert_eq!(path_id(&url), id);
    let Some((data, version)) = s.files.lock().unwrap().get(&url).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{url}: not found"),
        );
    };
    if q.get("version").is_some_and(|v| *v != version) {
        return error(StatusCode::PRECONDITION_FAILED, "object_changed", "changed");
    }
    let num = |k: &str, d: u64| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let size = data.len() as u64;
    let start = num("offset", 0).min(size);
    let end = start.saturating_add(num("length", size)).min(size);
    Response::builder()
        .status(200)
        .header("x-alluxiofs-file-size", size)
        .header("x-alluxiofs-version", version)
        .body(Body::from(data.slice(start as usize..end as usize)))
        .unwrap()
}

fn config() -> ClientConfig {
    ClientConfig {
        page_size: 16 << 10,
        max_chunk: 64 << 10,
        max_parallel: 8,
        retries: 1,
        retry_base: Duration::from_millis(2),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    }
}

/// `n` URLs with their contents put on each of `workers` (all hold every
/// file, as replicas would); sizes cycle through small ones.
fn put_files(workers: &[&BatchWorker], n: usize) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut urls = Vec::new();
    let mut srcs = Vec::new();
    for i in 0..n {
        let url = format!("s3://bucket/small/f{i:04}");
        let src = random_bytes([0, 1, 100, 10_240, 30_000][i % 5], i as u64);
        for w in workers {
            w.put(&url, &src, &format!("v{i}"));
        }
        urls.push(url);
        srcs.push(src);
    }
    (urls, srcs)
}

fn check(out: &[alluxiofs_core::Result<alluxiofs_core::RangeResult>], srcs: &[Vec<u8>]) {
    for (i, src) in srcs.iter().enumerate() {
        let r = out[i].as_ref().unwrap_or_else(|e| panic!("file {i}: {e}"));
        assert!(r.holes.is_empty(), "file {i}");
        assert_eq!(&r.data[..], &src[..], "file {i}");
    }
}

/// Three workers, 300 files: one batch request per worker; a large file's
/// rest comes by range requests pinned to its version; a missing file is
/// that file's error only; `worker_requests` counts each batch once.
#[tokio::test]
async fn one_batch_per_owner_worker() {
    let ws = [
        BatchWorker::start().await,
        BatchWorker::start().await,
        BatchWorker::start().await,
    ];
    let client = Client::new(config(), ws.iter().map(|w| w.worker_addr()).collect()).unwrap();
    let (mut urls, mut srcs) = put_files(&ws.iter().collect::<Vec<_>>(), 300);
    let big = random_bytes(3 * (64 << 10) + 5, 77);
    for w in &ws {
        w.put("s3://bucket/big", &big, "vb");
    }
    urls.push("s3://bucket/big".into());
    srcs.push(big);
    urls.push("s3://bucket/missing".into());

    let out = client.read_files(&urls).await;
    assert_eq!(out.len(), urls.len());
    check(&out, &srcs);
    assert!(
        matches!(out.last().unwrap(), Err(Error::NotFound { path }) if path == "s3://bucket/missing")
    );

    let mut per_owner: HashMap<String, usize> = HashMap::new();
    for u in &urls {
        *per_owner
            .entry(client.workers_for(u)[0].addr())
            .or_default() += 1;
    }
    let mut rest = 0;
    for w in &ws {
        let own = per_owner[&w.worker_addr().addr()];
        assert_eq!(
            w.batches(),
            vec![own],
            "one batch carrying all of its files"
        );
        rest += w.ranges();
    }
    // The big file's rest: 3 chunks of max_chunk, nothing else per file.
    assert_eq!(rest, 3);
    assert_eq!(client.stats().worker_requests, 3 + 3);
}

/// A worker answering 404 on the route gets per-file requests, and is not
/// asked for a batch again.
#[tokio::test]
async fn a_worker_without_the_route_is_read_per_file_once_detected() {
    let w = BatchWorker::start().await;
    w.state.no_route.store(true, Ordering::SeqCst);
    let client = Client::new(config(), vec![w.worker_addr()]).unwrap();
    let (urls, srcs) = put_files(&[&w], 20);
    for round in 0..2 {
        let out = client.read_files(&urls).await;
        check(&out, &srcs);
        assert_eq!(w.ranges(), 20 * (round + 1));
    }
    assert_eq!(
        w.batches(),
        Vec::<usize>::new(),
        "the 404 is not counted as a batch"
    );
    // One batch attempt (the 404), then 40 per-file requests.
    assert_eq!(client.stats().worker_requests, 1 + 40);
    assert!(!client.is_marked_down(&w.worker_addr()));
}

/// A primary that breaks off its batch: the files it had sent are kept,
/// the others come from the replica per file; the primary is marked down.
#[tokio::test]
async fn a_batch_broken_off_completes_from_the_replica() {
    let a = BatchWorker::start().await;
    let b = BatchWorker::start().await;
    let cfg = ClientConfig {
        replicas: 2,
        ..config()
    };
    let client = Client::new(cfg, vec![a.worker_addr(), b.worker_addr()]).unwrap();
    let (urls, srcs) = put_files(&[&a, &b], 200);
    a.state.die_after.store(10, Ordering::SeqCst);
    let on_a = urls
        .iter()
        .filter(|u| client.workers_for(u)[0].identity == a.worker_addr().identity)
        .count();
    assert!(on_a > 20, "{on_a}");

    let out = client.read_files(&urls).await;
    check(&out, &srcs);
    assert_eq!(a.batches(), vec![on_a]);
    assert_eq!(b.batches(), vec![200 - on_a]);
    assert_eq!(
        b.ranges(),
        (on_a - 10) as u64,
        "the rest of a's files, one by one"
    );
    assert_eq!(a.ranges(), 0, "a was marked down: not asked again");
    assert!(client.is_marked_down(&a.worker_addr()));
    assert!(client.stats().fallbacks.is_empty());
}

/// A batch answered 503 is retried, then its files go per file (here the
/// worker's range route still serves them); a file's `ufs_failure` frame
/// sends that file to the next replica.
#[tokio::test]
async fn failed_batches_and_failed_files_take_the_per_file_path() {
    let a = BatchWorker::start().await;
    let b = BatchWorker::start().await;
    let cfg = ClientConfig {
        replicas: 2,
        ..config()
    };
    let client = Client::new(cfg, vec![a.worker_addr(), b.worker_addr()]).unwrap();
    let (urls, srcs) = put_files(&[&a, &b], 60);
    let on_a: Vec<&String> = urls
        .iter()
        .filter(|u| client.workers_for(u)[0].identity == a.worker_addr().identity)
        .collect();
    let on_b = urls.len() - on_a.len();
    a.state.fail_batches.store(true, Ordering::SeqCst);
    let failing = urls
        .iter()
        .find(|u| client.workers_for(u)[0].identity == b.worker_addr().identity)
        .unwrap()
        .clone();
    b.state.ufs_failing.lock().unwrap().push(failing.clone());

    let out = client.read_files(&urls).await;
    check(&out, &srcs);
    // Two attempts (one retry), then a is marked down and its files go to b.
    assert_eq!(a.batches(), vec![on_a.len(), on_a.len()]);
    assert!(client.is_marked_down(&a.worker_addr()));
    assert_eq!(b.batches(), vec![on_b]);
    // On b, per file: a's files, and the failing file once more (the
    // per-file path asks its primary again first; the fake's range route
    // serves it).
    assert_eq!(b.ranges(), on_a.len() as u64 + 1);
    assert!(client.stats().errors[&b.worker_addr().addr()] >= 1);
}

/// Duplicate URLs in one batch each get their bytes.
#[tokio::test]
async fn duplicate_urls_each_get_their_result() {
    let w = BatchWorker::start().await;
    let client = Client::new(config(), vec![w.worker_addr()]).unwrap();
    let (urls, srcs) = put_files(&[&w], 3);
    let twice: Vec<String> = urls.iter().chain(urls.iter()).cloned().collect();
    let out = client.read_files(&twice).await;
    check(&out[..3], &srcs);
    check(&out[3..], &srcs);
    assert_eq!(w.batches(), vec![6]);
}
