//! The worker's HTTP API end to end, driven through `oneshot` on a real
//! `file://` mount in a temporary directory (and once over real TCP).

use alluxiofs_core::info::FileInfo;
use alluxiofs_core::path::path_id;
use alluxiofs_worker::app::{app, AppState};
use alluxiofs_worker::config::{CacheDirConfig, WorkerConfig};
use alluxiofs_worker::metrics::{Metrics, UfsOp};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower::ServiceExt;

const PAGE: u64 = 4096;

struct Env {
    _dir: tempfile::TempDir,
    ufs: PathBuf,
    cache: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ufs = dir.path().join("ufs");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(ufs.join("sub")).unwrap();
        // A file outside the mount that must never be readable.
        std::fs::write(dir.path().join("secret"), b"top secret").unwrap();
        Env {
            _dir: dir,
            ufs,
            cache,
        }
    }

    fn config(&self, ttl: Duration, memory: u64) -> WorkerConfig {
        WorkerConfig {
            cache_dirs: vec![CacheDirConfig::new(&self.cache)],
            page_size: PAGE,
            metadata_ttl: ttl,
            memory_capacity: memory,
            port: 0,
            ..WorkerConfig::with_mounts([self.ufs.to_str().unwrap()])
        }
    }

    fn state(&self, ttl: Duration, memory: u64) -> Arc<AppState> {
        AppState::new(self.config(ttl, memory)).unwrap()
    }

    fn url(&self, name: &str) -> String {
        format!("file://{}/{name}", self.ufs.display())
    }

    fn write(&self, name: &str, data: &[u8], mtime_secs: u64) {
        let path = self.ufs.join(name);
        std::fs::write(&path, data).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs))
            .unwrap();
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn call(state: &Arc<AppState>, method: &str, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
    call_with(state, method, uri, None).await
}

async fn call_with(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

fn range_uri(url: &str, offset: u64, length: u64) -> String {
    format!(
        "/v1/range/{}?ufsFullPath={}&offset={offset}&length={length}",
        path_id(url),
        q(url)
    )
}

fn gets(state: &AppState) -> u64 {
    state.cache.metrics().ufs_requests(UfsOp::Get)
}

#[tokio::test]
async fn confinement_refuses_without_touching_ufs_or_disk() {
    let env = Env::new();
    env.write("a.bin", b"inside", 1000);
    let state = env.state(Duration::from_secs(60), 0);
    let root = env.ufs.display().to_string();
    let outside = [
        "/etc/passwd".to_string(),
        format!("{root}/../secret"),
        format!("{root}/%2e%2e/secret"),
        format!("{root}/%2E%2E/secret"),
        format!("{root}/%252e%252e/secret"),
        format!("{root}/sub/..%2f..%2fsecret"),
        format!("file://{root}/../secret"),
        format!("{root}2/x"),
        "s3://bucket/x".to_string(),
        format!("http://127.0.0.1:1{root}/a.bin"),
    ];
    for bad in &outside {
        for uri in [
            format!("/v1/info?path={}", q(bad)),
            format!("/v1/files?path={}", q(bad)),
            format!("/v1/range/{}?ufsFullPath={}", path_id(bad), q(bad)),
            format!("/v1/file/{}/page/0?ufsFullPath={}", path_id(bad), q(bad)),
        ] {
            let (status, _, body) = call(&state, "GET", &uri).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body:?}");
            let msg: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(msg["message"]
                .as_str()
                .unwrap()
                .contains("permission denied"));
        }
        let (status, _, _) = call(&state, "POST", &format!("/v1/invalidate?path={}", q(bad))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    // The same traversal with the dots encoded only once in the raw query.
    let raw = format!("/v1/info?path={root}/%2e%2e/secret");
    assert_eq!(call(&state, "GET", &raw).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        state.cache.metrics().ufs_requests_total(),
        0,
        "the UFS was touched"
    );
    assert_eq!(
        state.cache.store().gauges().pages,
        0,
        "the cache was touched"
    );
    // Sanity: the same worker does serve files inside the mount.
    let url = env.url("a.bin");
    let (status, _, body) = call(&state, "GET", &range_uri(&url, 0, 6)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"inside");
}

#[tokio::test]
async fn random_ranges_match_the_source_and_hit_the_cache_the_second_time() {
    let env = Env::new();
    let data = random_bytes(1, 50_000);
    env.write("data.bin", &data, 1000);
    let url = env.url("data.bin");
    let state = env.state(Duration::from_secs(60), 1 << 20);
    let mut ranges = vec![
        (0u64, 50_000u64),
        (49_999, 10),
        (4095, 2),
        (8192, 4096),
        (60_000, 5),
    ];
    let mut x = 12345u64;
    for _ in 0..40 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 33) % 52_000;
        let len = (x >> 13) % 20_000;
        ranges.push((off, len));
    }
    for (off, len) in &ranges {
        let (status, headers, body) = call(&state, "GET", &range_uri(&url, *off, *len)).await;
        assert_eq!(status, StatusCode::OK);
        let start = (*off as usize).min(data.len());
        let end = (*off + *len).min(data.len() as u64) as usize;
        assert_eq!(&body[..], &data[start..end.max(start)], "range {off}+{len}");
        assert_eq!(headers["x-alluxiofs-file-size"], "50000");
        assert_eq!(
            headers["content-length"],
            (end.max(start) - start).to_string()
        );
        assert!(!headers["x-alluxiofs-version"].is_empty());
    }
    let requests = state.cache.metrics().ufs_requests_total();
    assert!(gets(&state) >= 1);
    for (off, len) in &ranges {
        let (_, _, body) = call(&state, "GET", &range_uri(&url, *off, *len)).await;
        let start = (*off as usize).min(data.len());
        let end = ((*off + *len) as usize).min(data.len()).max(start);
        assert_eq!(&body[..], &data[start..end]);
    }
    assert_eq!(
        state.cache.metrics().ufs_requests_total(),
        requests,
        "a second read must not ask the UFS"
    );
    // Without length: to the end.
    let uri = format!(
        "/v1/range/{}?ufsFullPath={}&offset=49000",
        path_id(&url),
        q(&url)
    );
    let (_, _, body) = call(&state, "GET", &uri).await;
    assert_eq!(&body[..], &data[49_000..]);
}

/// A real, slow HTTP origin (the `http://` UFS): serves one object with an
/// ETag and ranges, holds every request for `delay`, counts GETs (low 32
/// bits) and HEADs (high 32 bits).
async fn slow_origin(data: Bytes, delay: Duration) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    use axum::http::{header, Method};
    use axum::response::IntoResponse;
    let gets = Arc::new(AtomicU64::new(0));
    let counter = gets.clone();
    let handler = move |method: Method, headers: HeaderMap| {
        let data = data.clone();
        let counter = counter.clone();
        async move {
            let size = data.len();
            let common = [
                (header::ETAG, "\"v1\"".to_string()),
                (
                    header::LAST_MODIFIED,
                    "Sun, 22 Nov 2026 00:00:00 GMT".to_string(),
                ),
                (header::ACCEPT_RANGES, "bytes".to_string()),
            ];
            tokio::time::sleep(delay).await;
            if method == Method::HEAD {
                counter.fetch_add(1 << 32, Ordering::SeqCst);
                return (common, [(header::CONTENT_LENGTH, size.to_string())]).into_response();
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
            match range {
                Some((a, b)) => {
                    let b = b.min(size - 1);
                    (
                        StatusCode::PARTIAL_CONTENT,
                        common,
                        [(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"))],
                        data.slice(a..b + 1),
                    )
                        .into_response()
                }
                None => (common, data).into_response(),
            }
        }
    };
    let router = axum::Router::new().route("/data.bin", axum::routing::get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, gets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_misses_make_one_ufs_request() {
    let data = Bytes::from(random_bytes(2, 10 * PAGE as usize + 123));
    let (addr, origin_gets) = slow_origin(data.clone(), Duration::from_millis(300)).await;
    let env = Env::new();
    let mount = format!("http://{addr}");
    let url = format!("{mount}/data.bin");
    let mut config = env.config(Duration::from_secs(60), 0);
    config.mounts = vec![alluxiofs_worker::config::MountConfig::new(&mount)];
    config
        .ufs_options
        .insert("allow_http".into(), "true".into());
    let state = AppState::new(config).unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let state = state.clone();
            // Overlapping ranges: the same pages, different slices.
            let uri = range_uri(&url, i * 100, data.len() as u64);
            tokio::spawn(async move { (i, call(&state, "GET", &uri).await) })
        })
        .collect();
    for t in tasks {
        let (i, (status, _, body)) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], &data[(i * 100) as usize..]);
    }
    let counts = origin_gets.load(Ordering::SeqCst);
    assert_eq!(
        counts & 0xffff_ffff,
        1,
        "16 concurrent readers, one origin GET"
    );
    assert_eq!(
        counts >> 32,
        0,
        "16 concurrent cold readers, no HEAD: the one GET gave the version"
    );
    assert_eq!(gets(&state), 1);
    assert_eq!(Metrics::get(&state.cache.metrics().cache_misses), 11);
    assert_eq!(
        Metrics::get(&state.cache.metrics().coalesced_pages),
        15 * 11
    );
}

#[tokio::test]
async fn a_changed_file_is_never_served_stale() {
    let env = Env::new();
    let old = random_bytes(3, 5 * PAGE as usize);
    let new = random_bytes(4, 5 * PAGE as usize);
    env.write("f.bin", &old, 1000);
    let url = env.url("f.bin");

    // TTL 0: the change is seen at once.
    let state = env.state(Duration::ZERO, 1 << 20);
    let (_, h1, body) = call(&state, "GET", &range_uri(&url, 0, PAGE)).await;
    assert_eq!(&body[..], &old[..PAGE as usize]);
    env.write("f.bin", &new, 2000);
    let (_, h2, body) = call(&state, "GET", &range_uri(&url, 0, PAGE)).await;
    assert_eq!(
        &body[..],
        &new[..PAGE as usize],
        "TTL 0 must see the change"
    );
    assert_ne!(h1["x-alluxiofs-version"], h2["x-alluxiofs-version"]);

    // Pinning the old version now answers 412.
    let old_version = h1["x-alluxiofs-version"].to_str().unwrap();
    let uri = format!("{}&version={}", range_uri(&url, 0, 10), q(old_version));
    let (status, _, _) = call(&state, "GET", &uri).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);

    // Long TTL: a read of pages not cached yet finds the change through the
    // version check of the GET, and never mixes versions.
    let state = env.state(Duration::from_secs(600), 1 << 20);
    let (_, _, body) = call(&state, "GET", &range_uri(&url, 0, PAGE)).await;
    assert_eq!(&body[..], &new[..PAGE as usize]);
    env.write("f.bin", &old, 3000);
    let (status, _, body) = call(&state, "GET", &range_uri(&url, PAGE, 3 * PAGE)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &old[PAGE as usize..4 * PAGE as usize]);
    let (_, _, body) = call(&state, "GET", &range_uri(&url, 0, 5 * PAGE)).await;
    assert_eq!(
        &body[..],
        &old[..],
        "after the refresh every page is the new version"
    );
}

#[tokio::test]
async fn info_files_and_page_endpoints() {
    let env = Env::new();
    let data = random_bytes(5, 3 * PAGE as usize + 10);
    env.write("p.bin", &data, 1000);
    env.write("sub/x.txt", b"x", 1000);
    std::fs::create_dir(env.ufs.join("empty")).unwrap();
    let url = env.url("p.bin");
    let state = env.state(Duration::from_secs(60), 0);
    let id = path_id(&url);

    // Unknown path_id without ufsFullPath: 404 that says what to do.
    let (status, _, body) = call(&state, "GET", &format!("/v1/file/{id}/page/0")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("/v1/info"));

    let (status, _, body) = call(&state, "GET", &format!("/v1/info?path={}", q(&url))).await;
    assert_eq!(status, StatusCode::OK);
    let infos: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].length, data.len() as u64);
    assert_eq!(infos[0].name, "p.bin");
    assert_eq!(infos[0].ufs_path, url);
    assert_eq!(infos[0].in_cache_percent, 0);

    // Now the id is known: pages without ufsFullPath.
    for i in 0..4u64 {
        let (status, headers, body) = call(&state, "GET", &format!("/v1/file/{id}/page/{i}")).await;
        assert_eq!(status, StatusCode::OK);
        let s = (i * PAGE) as usize;
        let e = ((i + 1) * PAGE).min(data.len() as u64) as usize;
        assert_eq!(&body[..], &data[s..e], "page {i}");
        assert_eq!(headers["x-alluxiofs-file-size"], data.len().to_string());
    }
    let (_, _, body) = call(
        &state,
        "GET",
        &format!("/v1/file/{id}/page/1?offset=100&length=50"),
    )
    .await;
    assert_eq!(&body[..], &data[PAGE as usize + 100..PAGE as usize + 150]);
    for far in ["9", "18446744073709551615"] {
        let (status, _, body) = call(&state, "GET", &format!("/v1/file/{id}/page/{far}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty(), "a page past the end is empty");
    }
    let huge = format!(
        "{}&offset=18446744073709551615",
        range_uri(&url, 0, u64::MAX)
    );
    let (status, _, body) = call(&state, "GET", &huge).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    let (_, _, body) = call(&state, "GET", &format!("/v1/info?path={}", q(&url))).await;
    let infos: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
    assert_eq!(infos[0].in_cache_percent, 100);

    // Bad input is a 400 JSON answer, never a panic.
    for uri in [
        format!("/v1/file/{id}/page/x"),
        format!("/v1/file/{id}/page/-1"),
        format!("/v1/file/{id}/page/0?offset=abc"),
        "/v1/file/nothex/page/0".to_string(),
        format!(
            "/v1/file/{}/page/0?ufsFullPath={}",
            path_id("other"),
            q(&url)
        ),
        format!("/v1/range/{id}?ufsFullPath={}&length=-5", q(&url)),
        format!("/v1/range/{id}"),
        "/v1/info".to_string(),
        format!("/v1/info?path={}", q("not a url")),
        format!(
            "/v1/range/{}?ufsFullPath={}",
            path_id(&env.url("sub")),
            q(&env.url("sub"))
        ),
    ] {
        let (status, _, body) = call(&state, "GET", &uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body:?}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["message"].is_string());
    }

    // Listings.
    let root = env.url("").trim_end_matches('/').to_string();
    let (status, _, body) = call(&state, "GET", &format!("/v1/files?path={}", q(&root))).await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
    let names: Vec<(&str, bool)> = list.iter().map(|f| (f.name.as_str(), f.is_dir())).collect();
    assert_eq!(names, [("empty", true), ("p.bin", false), ("sub", true)]);
    let (_, _, body) = call(&state, "GET", &format!("/v1/files?path={}", q(&url))).await;
    let list: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.len(), 1, "a file lists as itself");
    let (status, _, body) = call(
        &state,
        "GET",
        &format!("/v1/files?path={}", q(&env.url("empty"))),
    )
    .await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"[]"[..]));
    let (_, _, body) = call(
        &state,
        "GET",
        &format!("/v1/info?path={}", q(&env.url("sub"))),
    )
    .await;
    let infos: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
    assert!(infos[0].is_dir());
    for missing in ["nope", "sub/nope"] {
        let u = env.url(missing);
        assert_eq!(
            call(&state, "GET", &format!("/v1/info?path={}", q(&u)))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&state, "GET", &format!("/v1/files?path={}", q(&u)))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&state, "GET", &range_uri(&u, 0, 1)).await.0,
            StatusCode::NOT_FOUND
        );
    }

    // Health and metrics.
    let (status, _, body) = call(&state, "GET", "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h["page_size"], PAGE);
    let (_, _, body) = call(&state, "GET", "/metrics").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("alluxiofs_ufs_requests_total{op=\"get\"} "));
    assert!(text.contains("alluxiofs_requests_total{endpoint=\"/v1/info\",status=\"200\"}"));
    assert!(text.contains(&format!("alluxiofs_cache_pages {}", 4)));
    let meta = state.cache.meta().used_bytes();
    assert!(meta > 0, "infos, listings, versions and ids are charged");
    assert!(text.contains(&format!("alluxiofs_metadata_bytes {meta}\n")));
    assert!(text.contains(&format!(
        "alluxiofs_metadata_capacity_bytes {}\n",
        alluxiofs_worker::config::DEFAULT_METADATA_CAPACITY
    )));
}

#[tokio::test]
async fn reads_work_without_a_metadata_cache() {
    let env = Env::new();
    let data = random_bytes(9, 3 * PAGE as usize + 7);
    env.write("z.bin", &data, 1000);
    env.write("sub/y.bin", b"yy", 1000);
    let url = env.url("z.bin");
    let state = AppState::new(WorkerConfig {
        metadata_capacity: 0,
        ..env.config(Duration::from_secs(60), 0)
    })
    .unwrap();
    for round in 0..2 {
        for (off, len) in [(0, data.len() as u64), (PAGE - 3, 10), (3 * PAGE, 100)] {
            let (status, _, body) = call(&state, "GET", &range_uri(&url, off, len)).await;
            assert_eq!(status, StatusCode::OK);
            let (s, e) = (off as usize, ((off + len) as usize).min(data.len()));
            assert_eq!(&body[..], &data[s..e], "round {round}: {off}+{len}");
        }
        let (status, _, body) = call(&state, "GET", &format!("/v1/info?path={}", q(&url))).await;
        assert_eq!(status, StatusCode::OK);
        let infos: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
        assert_eq!(infos[0].length, data.len() as u64);
        let root = env.url("").trim_end_matches('/').to_string();
        let (status, _, body) = call(&state, "GET", &format!("/v1/files?path={}", q(&root))).await;
        assert_eq!(status, StatusCode::OK);
        let list: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
        assert_eq!(list.len(), 2, "z.bin and sub");
    }
    let metrics = state.cache.metrics();
    assert_eq!(Metrics::get(&metrics.metadata_hits), 0, "nothing cached");
    assert_eq!(state.cache.meta().used_bytes(), 0);
    // Without the path_id map, page requests must name their URL.
    let id = path_id(&url);
    let (status, _, _) = call(&state, "GET", &format!("/v1/file/{id}/page/0")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, body) = call(&state, "GET", "/metrics").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("alluxiofs_metadata_bytes 0\n"));
    assert!(text.contains("alluxiofs_metadata_entries 0\n"));
}

#[tokio::test]
async fn invalidate_drops_metadata_and_pages() {
    let env = Env::new();
    let data = random_bytes(6, 2 * PAGE as usize);
    env.write("sub/i.bin", &data, 1000);
    let url = env.url("sub/i.bin");
    let state = env.state(Duration::from_secs(600), 1 << 20);
    call(&state, "GET", &range_uri(&url, 0, 2 * PAGE)).await;
    assert_eq!(state.cache.store().gauges().pages, 2);
    let before = gets(&state);
    let (status, _, body) = call(
        &state,
        "POST",
        &format!("/v1/invalidate?path={}&recursive=true", q(&env.url("sub"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(state.cache.store().gauges().pages, 0);
    assert_eq!(state.cache.store().gauges().memory_pages, 0);
    let (_, _, body) = call(&state, "GET", &range_uri(&url, 0, 2 * PAGE)).await;
    assert_eq!(&body[..], &data[..]);
    assert_eq!(gets(&state), before + 1);
}

#[tokio::test]
async fn auth_token_is_required_except_for_healthz() {
    let env = Env::new();
    env.write("a.bin", b"abc", 1000);
    let mut config = env.config(Duration::from_secs(60), 0);
    let token_file = env.cache.with_file_name("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    config.auth_token_file = Some(token_file);
    let state = AppState::new(config).unwrap();
    let uri = format!("/v1/info?path={}", q(&env.url("a.bin")));
    assert_eq!(call(&state, "GET", &uri).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call_with(&state, "GET", &uri, Some("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_with(&state, "GET", &uri, Some("s3cret")).await.0,
        StatusCode::OK
    );
    assert_eq!(call(&state, "GET", "/healthz").await.0, StatusCode::OK);
    assert_eq!(
        call(&state, "GET", "/metrics").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        state.cache.metrics().ufs_requests_total(),
        1,
        "only the authorized request"
    );
}

/// Flip the last data byte of every page under `cache`; returns how many.
fn corrupt_every_page(cache: &Path) -> usize {
    let spans = alluxiofs_worker::store::page_data_spans(cache);
    for (file, off, len) in &spans {
        let mut raw = std::fs::read(file).unwrap();
        raw[(off + len - 1) as usize] ^= 1;
        std::fs::write(file, raw).unwrap();
    }
    spans.len()
}

/// Wait (a few seconds at most) until `state`'s store holds `n` pages.
async fn wait_for_pages(state: &AppState, n: u64) {
    for _ in 0..200 {
        if state.cache.store().gauges().pages >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pages were never stored");
}

#[tokio::test]
async fn restart_serves_cached_pages_without_ufs_data_requests() {
    let env = Env::new();
    let data = random_bytes(7, 6 * PAGE as usize + 1);
    env.write("r.bin", &data, 1000);
    let url = env.url("r.bin");
    {
        let state = env.state(Duration::from_secs(60), 1 << 20);
        let (_, _, body) = call(&state, "GET", &range_uri(&url, 0, data.len() as u64)).await;
        assert_eq!(&body[..], &data[..]);
        assert_eq!(gets(&state), 1);
        // As a worker's shutdown does (pages are stored off the request
        // path; the index is written every second and at shutdown).
        wait_for_pages(&state, 7).await;
        state.cache.store().flush();
    }
    let state = env.state(Duration::from_secs(60), 1 << 20);
    assert_eq!(state.cache.store().gauges().pages, 7);
    // The path_id map survived: a page by id alone.
    let (status, _, body) =
        call(&state, "GET", &format!("/v1/file/{}/page/6", path_id(&url))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &data[6 * PAGE as usize..]);
    let (_, _, body) = call(&state, "GET", &range_uri(&url, 10, data.len() as u64)).await;
    assert_eq!(&body[..], &data[10..]);
    assert_eq!(gets(&state), 0, "no data GET after a restart");
    assert_eq!(
        state.cache.metrics().ufs_requests(UfsOp::Head),
        1,
        "one metadata request"
    );
}

#[tokio::test]
async fn a_corrupt_page_on_disk_is_read_through_again() {
    let env = Env::new();
    let data = random_bytes(8, PAGE as usize);
    env.write("c.bin", &data, 1000);
    let url = env.url("c.bin");
    let state = env.state(Duration::from_secs(60), 0);
    call(&state, "GET", &range_uri(&url, 0, PAGE)).await;
    assert_eq!(corrupt_every_page(&env.cache), 1);
    let (_, _, body) = call(&state, "GET", &range_uri(&url, 0, PAGE)).await;
    assert_eq!(&body[..], &data[..], "never the corrupt bytes");
    assert_eq!(Metrics::get(&state.cache.metrics().corrupt_pages), 1);
    assert_eq!(gets(&state), 2, "read through again");
    let (_, _, body) = call(&state, "GET", &range_uri(&url, 0, PAGE)).await;
    assert_eq!(&body[..], &data[..]);
    assert_eq!(
        gets(&state),
        2,
        "the rewritten page is served from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_over_tcp() {
    let env = Env::new();
    let data = random_bytes(9, 300_000);
    env.write("t.bin", &data, 1000);
    let url = env.url("t.bin");
    let mut config = env.config(Duration::from_secs(60), 1 << 20);
    let ready = env.cache.with_file_name("ready.json");
    config.ready_file = Some(ready.clone());
    let worker = alluxiofs_worker::start(config).await.unwrap();
    let port = worker.addr().port();
    assert_ne!(port, 0);
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    assert_eq!(info["port"], port);
    assert_eq!(info["url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(info["pid"], std::process::id());

    let client = reqwest::Client::new();
    let base = worker.url();
    for _ in 0..2 {
        let resp = client
            .get(format!("{base}{}", range_uri(&url, 1000, 250_000)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], "250000");
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &data[1000..251_000]);
    }
    assert_eq!(worker.state().cache.metrics().ufs_requests(UfsOp::Get), 1);
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    worker.shutdown().await.unwrap();
    assert!(!ready.exists(), "the ready file goes away on shutdown");
    assert!(client.get(format!("{base}/healthz")).send().await.is_err());
}

#[tokio::test]
async fn a_large_range_streams_as_runs_around_cached_pages() {
    let env = Env::new();
    let max_run = alluxiofs_worker::read::MAX_RUN_BYTES as usize;
    let data = random_bytes(10, max_run + 3 * PAGE as usize + 7);
    env.write("big.bin", &data, 1000);
    let url = env.url("big.bin");
    let state = env.state(Duration::from_secs(60), 0);
    // Cache one page in the middle: the full read is then two runs around it.
    let mid = 2 * PAGE;
    let (_, _, body) = call(&state, "GET", &range_uri(&url, mid + 5, 10)).await;
    assert_eq!(&body[..], &data[mid as usize + 5..mid as usize + 15]);
    assert_eq!(gets(&state), 1);
    let (status, headers, body) = call(&state, "GET", &range_uri(&url, 3, data.len() as u64)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], (data.len() - 3).to_string());
    assert_eq!(body.len(), data.len() - 3);
    assert!(
        body[..] == data[3..],
        "streamed bytes differ from the source"
    );
    // Pages 0..2 (one run), cached page 2, then 3..end: more than
    // MAX_RUN_BYTES, so two runs.
    assert_eq!(gets(&state), 1 + 3);
    assert_eq!(Metrics::get(&state.cache.metrics().cache_hits), 1);
}
