//! `PUT /v1/write` and `GET /v1/stats` driven through `oneshot` on a real
//! `file://` mount in a temporary directory.

use alluxiofs_worker::app::{app, AppState};
use alluxiofs_worker::config::{CacheDirConfig, WorkerConfig};
use alluxiofs_worker::metrics::UfsOp;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

const PAGE: u64 = 4096;

struct Env {
    _dir: tempfile::TempDir,
    ufs: PathBuf,
    cache: PathBuf,
    state: Arc<AppState>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ufs = dir.path().join("ufs");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&ufs).unwrap();
    let config = WorkerConfig {
        cache_dirs: vec![CacheDirConfig::new(&cache)],
        page_size: PAGE,
        port: 0,
        ..WorkerConfig::with_mounts([ufs.to_str().unwrap()])
    };
    let state = AppState::new(config).unwrap();
    Env {
        _dir: dir,
        ufs,
        cache,
        state,
    }
}

fn q(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

fn bytes_of(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + seed as u64 * 7 + (i as u64 >> 12)) as u8)
        .collect()
}

async fn send(state: &Arc<AppState>, req: Request<Body>) -> (StatusCode, Bytes) {
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn put(url: &str, chunks: Vec<std::io::Result<Bytes>>) -> Request<Body> {
    Request::builder()
        .method("PUT")
        .uri(format!("/v1/write?path={}", q(url)))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

fn spooled(cache: &std::path::Path) -> usize {
    std::fs::read_dir(cache.join(".writes"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn written_pages_are_served_without_a_ufs_get() {
    let e = env();
    let url = format!("file://{}/ckpt.bin", e.ufs.display());
    let data = bytes_of(1, 3 * PAGE as usize + 100);
    let chunks = data
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (status, body) = send(&e.state, put(&url, chunks)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["populated"], true, "{answer}");
    assert_eq!(answer["pages_cached"], 4);
    assert_eq!(answer["size"], data.len());
    assert_eq!(std::fs::read(e.ufs.join("ckpt.bin")).unwrap(), data);
    assert_eq!(spooled(&e.cache), 0, "spool removed");

    let gets = e.state.cache.metrics().ufs_requests(UfsOp::Get);
    let id = alluxiofs_core::path::path_id(&url);
    let (status, got) = send(
        &e.state,
        get(&format!("/v1/range/{id}?ufsFullPath={}", q(&url))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&got[..], &data[..]);
    assert_eq!(
        e.state.cache.metrics().ufs_requests(UfsOp::Get),
        gets,
        "from the cache"
    );

    let (_, stats) = send(&e.state, get("/v1/stats?since=0")).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(stats["writes"], 1);
    assert_eq!(stats["write_bytes"], data.len());
    assert_eq!(stats["write_pages_cached"], 4);
    assert_eq!(stats["hits"], 4);
    assert_eq!(stats["bytes_served"], data.len());
    assert_eq!(stats["bytes_saved"], data.len());
    assert_eq!(stats["ufs_get_requests"], 0);
    assert_eq!(stats["ufs_requests_saved"], 1);
    let (status, _) = send(&e.state, get("/v1/stats?since=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_overwrite_replaces_the_cached_version() {
    let e = env();
    let url = format!("file://{}/twice.bin", e.ufs.display());
    let id = alluxiofs_core::path::path_id(&url);
    let range = format!("/v1/range/{id}?ufsFullPath={}", q(&url));
    for seed in [2u8, 3] {
        let data = bytes_of(seed, 2 * PAGE as usize);
        let (status, _) = send(&e.state, put(&url, vec![Ok(Bytes::from(data.clone()))])).await;
        assert_eq!(status, StatusCode::OK);
        let (_, got) = send(&e.state, get(&range)).await;
        assert_eq!(&got[..], &data[..], "seed {seed}");
    }
}

#[tokio::test]
async fn large_bodies_go_through_a_multipart_upload() {
    let e = env();
    let url = format!("file://{}/big.bin", e.ufs.display());
    let data = bytes_of(4, (9 << 20) + 17);
    let chunks = data
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (status, body) = send(&e.state, put(&url, chunks)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["size"], data.len());
    assert_eq!(std::fs::read(e.ufs.join("big.bin")).unwrap(), data);
    assert_eq!(answer["populated"], true, "{answer}");
    assert_eq!(answer["pages_cached"], data.len().div_ceil(PAGE as usize));
}

#[tokio::test]
async fn outside_the_mounts_is_refused_before_anything_is_written() {
    let e = env();
    let outside = e.ufs.parent().unwrap().join("outside.bin");
    let url = format!("file://{}", outside.display());
    let (status, _) = send(&e.state, put(&url, vec![Ok(Bytes::from_static(b"x"))])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!outside.exists());
    let sneaky = format!("file://{}/../outside.bin", e.ufs.display());
    let (status, _) = send(&e.state, put(&sneaky, vec![Ok(Bytes::from_static(b"x"))])).await;
    assert!(status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST);
    assert!(!outside.exists());
    let dir = format!("file://{}/", e.ufs.display());
    let (status, _) = send(&e.state, put(&dir, vec![Ok(Bytes::from_static(b"x"))])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_body_that_fails_leaves_no_object_and_no_pages() {
    let e = env();
    let url = format!("file://{}/cut.bin", e.ufs.display());
    // Small (single PUT) and large (multipart under way) bodies.
    for size in [3 * PAGE as usize, 10 << 20] {
        let data = bytes_of(5, size);
        let mut chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        chunks.push(Err(std::io::Error::other("client went away")));
        let (status, _) = send(&e.state, put(&url, chunks)).await;
        assert!(!status.is_success(), "{status}");
        assert!(!e.ufs.join("cut.bin").exists(), "size {size}");
        assert_eq!(e.state.cache.store().gauges().pages, 0, "size {size}");
        assert_eq!(spooled(&e.cache), 0, "spool removed");
    }
}
