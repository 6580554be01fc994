//! A small in-process cache worker for the client tests: the `/v1/range`,
//! `/v1/info`, `/v1/files` and `/v1/invalidate` endpoints of
//! `docs/http-api.md` over in-memory files, on 127.0.0.1:0, with knobs to
//! make it fail the way real workers do (503, connection dropped mid-body).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alluxiofs_core::client::WorkerAddr;
use alluxiofs_core::info::{human_size, ErrorBody, FileInfo, FileType};
use alluxiofs_core::path::{file_name, path_id};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// What the test worker holds and how it misbehaves.
#[derive(Default)]
pub struct WorkerState {
    /// normalized URL → (content, version)
    pub files: Mutex<HashMap<String, (Bytes, String)>>,
    /// Range requests received (any outcome).
    pub range_requests: AtomicU64,
    /// Lengths asked by range requests, in arrival order.
    pub range_lengths: Mutex<Vec<u64>>,
    /// Metadata requests received.
    pub meta_requests: AtomicU64,
    /// Invalidate requests received.
    pub invalidations: AtomicU64,
    /// Answer 503 to every request.
    pub fail_all: AtomicBool,
    /// Answer 503 the first time each (path, offset) is asked.
    pub fail_first_per_offset: AtomicBool,
    seen_offsets: Mutex<HashSet<(String, u64)>>,
    /// When non-zero: send at most this many body bytes, then break the
    /// connection (the worker "dies" mid-body).
    pub cut_after: AtomicU64,
    /// Delay before answering a range request (a hung worker), ms.
    pub delay_ms: AtomicU64,
    /// Required bearer token, if any.
    pub token: Mutex<Option<String>>,
    /// `/healthz` requests received.
    pub health_requests: AtomicU64,
    /// URLs whose UFS "fails": range and info answer 502 `ufs_failure`, as a
    /// worker does when its UFS errs for one path.
    pub ufs_failing: Mutex<HashSet<String>>,
}

impl WorkerState {
    pub fn put(&self, url: &str, data: Vec<u8>, version: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(url.to_string(), (Bytes::from(data), version.to_string()));
    }
}

/// A running test worker.
pub struct TestWorker {
    pub addr: SocketAddr,
    pub state: Arc<WorkerState>,
    task: tokio::task::JoinHandle<()>,
}

impl TestWorker {
    pub async fn start() -> Self {
        let state = Arc::new(WorkerState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/v1/range/{path_id}", get(range))
            .route("/v1/info", get(info))
            .route("/v1/files", get(files))
            .route("/v1/invalidate", post(invalidate))
            .route("/healthz", get(healthz))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestWorker { addr, state, task }
    }

    pub fn worker_addr(&self) -> WorkerAddr {
        WorkerAddr::from_host_port("127.0.0.1", self.addr.port())
    }

    pub fn range_requests(&self) -> u64 {
        self.state.range_requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens (a dead worker).
pub async fn dead_worker() -> WorkerAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    WorkerAddr::from_host_port("127.0.0.1", port)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody::new(message))).into_response()
}

/// The worker's answer when its UFS failed for `url`, if it does.
fn ufs_failure(state: &WorkerState, url: &str) -> Option<Response> {
    state.ufs_failing.lock().unwrap().contains(url).then(|| {
        let body = ErrorBody {
            message: format!("{url}: UFS error: connection reset"),
            code: Some("ufs_failure".into()),
        };
        (StatusCode::BAD_GATEWAY, Json(body)).into_response()
    })
}

/// The refusal to answer, if the request is refused.
fn check(state: &WorkerState, headers: &HeaderMap) -> Option<Response> {
    if let Some(t) = state.token.lock().unwrap().as_ref() {
        let want = format!("Bearer {t}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&want) {
            return Some(error(StatusCode::UNAUTHORIZED, "token required".into()));
        }
    }
    if state.fail_all.load(Ordering::SeqCst) {
        return Some(error(StatusCode::SERVICE_UNAVAILABLE, "overloaded".into()));
    }
    None
}

fn file_info(url: &str, data: &Bytes, version: &str) -> FileInfo {
    FileInfo {
        kind: FileType::File,
        name: file_name(url).to_string(),
        path: url
            .split_once("://")
            .map(|x| x.1)
            .unwrap_or(url)
            .to_string(),
        ufs_path: url.to_string(),
        mtime_ms: 1,
        length: data.len() as u64,
        human_size: human_size(data.len() as u64),
        content_hash: version.to_string(),
        in_cache_percent: 0,
    }
}

/// 503 while the worker fails everything, else the worker's `ok`.
async fn healthz(State(state): State<Arc<WorkerState>>) -> Response {
    state.health_requests.fetch_add(1, Ordering::SeqCst);
    if state.fail_all.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "failing".into());
    }
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn range(
    State(state): State<Arc<WorkerState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    state.range_requests.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if let Some(r) = check(&state, &headers) {
        return r;
    }
    let Some(url) = q.get("ufsFullPath") else {
        return error(StatusCode::BAD_REQUEST, "ufsFullPath required".into());
    };
    if path_id(url) != id {
        return error(StatusCode::BAD_REQUEST, "path_id mismatch".into());
    }
    if let Some(r) = ufs_failure(&state, url) {
        return r;
    }
    let offset: u64 = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let Some((data, version)) = state.files.lock().unwrap().get(url).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("{url}: not found"));
    };
    let length: u64 = q
        .get("length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(data.len() as u64);
    state.range_lengths.lock().unwrap().push(length);
    if let Some(v) = q.get("version") {
        if *v != version {
            return error(
                StatusCode::PRECONDITION_FAILED,
                format!("{url}: changed, now {version}"),
            );
        }
    }
    if state.fail_first_per_offset.load(Ordering::SeqCst)
        && state
            .seen_offsets
            .lock()
            .unwrap()
            .insert((url.clone(), offset))
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "try again".into());
    }
    let size = data.len() as u64;
    let start = offset.min(size);
    let end = offset.saturating_add(length).min(size);
    let body = data.slice(start as usize..end as usize);
    let cut = state.cut_after.load(Ordering::SeqCst);
    let full_len = body.len();
    let body = if cut > 0 && (cut as usize) < full_len {
        let head = body.slice(..cut as usize);
        // Send the head, give it time to reach the client, then break.
        let s = futures::stream::unfold(0u8, move |step| {
            let head = head.clone();
            async move {
                match step {
                    0 => Some((Ok(head), 1)),
                    1 => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Some((Err(std::io::Error::other("worker died mid-body")), 2))
                    }
                    _ => None,
                }
            }
        });
        Body::from_stream(s)
    } else {
        Body::from(body)
    };
    Response::builder()
        .status(200)
        .header("content-length", full_len)
        .header("x-alluxiofs-file-size", size)
        .header("x-alluxiofs-version", version)
        .body(body)
        .unwrap()
}

async fn info(
    State(state): State<Arc<WorkerState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    state.meta_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = check(&state, &headers) {
        return r;
    }
    let url = q.get("path").cloned().unwrap_or_default();
    if let Some(r) = ufs_failure(&state, &url) {
        return r;
    }
    match state.files.lock().unwrap().get(&url) {
        Some((data, version)) => Json(vec![file_info(&url, data, version)]).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("{url}: not found")),
    }
}

async fn files(
    State(state): State<Arc<WorkerState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    state.meta_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = check(&state, &headers) {
        return r;
    }
    let dir = q.get("path").cloned().unwrap_or_default();
    let prefix = format!("{dir}/");
    let mut out: Vec<FileInfo> = state
        .files
        .lock()
        .unwrap()
        .iter()
        .filter(|(u, _)| u.starts_with(&prefix) && !u[prefix.len()..].contains('/'))
        .map(|(u, (d, v))| file_info(u, d, v))
        .collect();
    if out.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("{dir}: not found"));
    }
    out.sort_by(|a, b| a.ufs_path.cmp(&b.ufs_path));
    Json(out).into_response()
}

async fn invalidate(
    State(state): State<Arc<WorkerState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check(&state, &headers) {
        return r;
    }
    state.invalidations.fetch_add(1, Ordering::SeqCst);
    let path = q.get("path").cloned().unwrap_or_default();
    Json(serde_json::json!({"success": true, "message": format!("invalidated {path}")}))
        .into_response()
}
