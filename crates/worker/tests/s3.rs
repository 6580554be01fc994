//! The worker against a real S3 API (moto_server on a loopback port picked
//! at run time). `make test` puts the project's virtual environment, which
//! has `moto_server`, on the PATH; without it the test fails and says how to
//! get it (`pip install 'moto[server]'`).

use alluxiofs_core::info::FileInfo;
use alluxiofs_core::path::path_id;
use alluxiofs_worker::app::{app, AppState};
use alluxiofs_worker::config::{CacheDirConfig, MountConfig, WorkerConfig};
use alluxiofs_worker::metrics::UfsOp;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let mut child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "moto_server not on the PATH ({e}): run `make test`, or \
                 `pip install 'moto[server]'` and put it on the PATH"
            )
        });
    let stderr = child.stderr.take().expect("moto_server's stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(at) = line.find("http://127.0.0.1:") {
                let url: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(url);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(endpoint) => Some(Moto { child, endpoint }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

const KEY_ID: &str = "testing";
const SECRET: &str = "testing";

fn client(endpoint: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name("bkt")
            .with_region("us-east-1")
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

async fn call(state: &Arc<AppState>, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
    let resp = app(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (
        status,
        headers,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn q(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

fn range_uri(url: &str, offset: u64, length: u64) -> String {
    format!(
        "/v1/range/{}?ufsFullPath={}&offset={offset}&length={length}",
        path_id(url),
        q(url)
    )
}

fn bytes_of(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_from_s3() {
    let moto = start_moto().expect("moto_server did not say where it listens");
    // Create the bucket (moto accepts an unsigned request), then objects.
    let resp = reqwest::Client::new()
        .put(format!("{}/bkt", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "create bucket: {}",
        resp.status()
    );
    let s3 = client(&moto.endpoint);
    let data = bytes_of(1, 3 * 65536 + 17);
    s3.put(
        &ObjPath::parse("ds/a.bin").unwrap(),
        PutPayload::from(data.clone()),
    )
    .await
    .unwrap();
    s3.put(
        &ObjPath::parse("ds/sub/b.txt").unwrap(),
        PutPayload::from_static(b"b"),
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut mount = MountConfig::new("s3://bkt/ds");
    for (k, v) in [
        ("endpoint", moto.endpoint.as_str()),
        ("region", "us-east-1"),
        ("access_key_id", KEY_ID),
        ("secret_access_key", SECRET),
        ("allow_http", "true"),
    ] {
        mount.options.insert(k.into(), v.into());
    }
    let config = WorkerConfig {
        mounts: vec![mount],
        cache_dirs: vec![CacheDirConfig::new(dir.path())],
        page_size: 65536,
        ..Default::default()
    };
    let state = AppState::new(config).unwrap();
    let url = "s3://bkt/ds/a.bin";

    let (status, _, body) = call(&state, &format!("/v1/files?path={}", q("s3://bkt/ds"))).await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
    let names: Vec<_> = list.iter().map(|f| (f.name.as_str(), f.is_dir())).collect();
    assert_eq!(names, [("a.bin", false), ("sub", true)]);
    assert_eq!(list[0].length, data.len() as u64);
    assert!(
        list[0].content_hash.starts_with('"'),
        "S3 ETag: {}",
        list[0].content_hash
    );
    assert_eq!(list[0].path, "/bkt/ds/a.bin");

    let (status, headers, body) = call(&state, &range_uri(url, 1000, 150_000)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &data[1000..151_000]);
    let etag = headers["x-alluxiofs-version"].to_str().unwrap().to_string();
    assert_eq!(etag, list[0].content_hash);
    let get_count = state.cache.metrics().ufs_requests(UfsOp::Get);
    assert_eq!(get_count, 1, "one ranged GET for the three pages");
    let (_, _, body) = call(&state, &range_uri(url, 1000, 150_000)).await;
    assert_eq!(&body[..], &data[1000..151_000]);
    assert_eq!(
        state.cache.metrics().ufs_requests_total(),
        2,
        "one list and one GET in all"
    );

    // The object changes: a page not cached yet is read with If-Match,
    // which fails, so the worker refreshes and serves the new object.
    let new = bytes_of(2, 4 * 65536);
    s3.put(
        &ObjPath::parse("ds/a.bin").unwrap(),
        PutPayload::from(new.clone()),
    )
    .await
    .unwrap();
    let (status, headers, body) = call(&state, &range_uri(url, 3 * 65536, 100)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &new[3 * 65536..3 * 65536 + 100]);
    assert_ne!(headers["x-alluxiofs-version"].to_str().unwrap(), etag);
    assert_eq!(
        state.cache.metrics().ufs_errors(UfsOp::Get),
        1,
        "the failed If-Match"
    );
    let pinned = format!("{}&version={}", range_uri(url, 0, 10), q(&etag));
    assert_eq!(
        call(&state, &pinned).await.0,
        StatusCode::PRECONDITION_FAILED
    );

    let missing = "s3://bkt/ds/missing.bin";
    assert_eq!(
        call(&state, &format!("/v1/info?path={}", q(missing)))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, _, body) = call(&state, &format!("/v1/info?path={}", q("s3://bkt/ds/sub"))).await;
    assert_eq!(status, StatusCode::OK);
    let info: Vec<FileInfo> = serde_json::from_slice(&body).unwrap();
    assert!(info[0].is_dir());
    assert_eq!(
        call(&state, &format!("/v1/info?path={}", q("s3://bkt/other")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}
