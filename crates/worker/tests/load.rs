//! Preloading on a real `file://` mount: `POST /v1/load/file` (what it
//! fetches and what it skips) and an Alluxio load job over real TCP.

use alluxiofs_core::load::FileLoadResult;
use alluxiofs_worker::config::{CacheDirConfig, WorkerConfig};
use alluxiofs_worker::metrics::UfsOp;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
        std::fs::create_dir_all(ufs.join("d/e")).unwrap();
        Env {
            _dir: dir,
            ufs,
            cache,
        }
    }

    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            cache_dirs: vec![CacheDirConfig::new(&self.cache)],
            page_size: PAGE,
            memory_capacity: 0,
            port: 0,
            ..WorkerConfig::with_mounts([self.ufs.to_str().unwrap()])
        }
    }

    fn url(&self, name: &str) -> String {
        format!("file://{}/{name}", self.ufs.display())
    }

    fn write(&self, name: &str, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(self.ufs.join(name), &data).unwrap();
        data
    }
}

fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn post_load(base: &str, query: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/load/file?{query}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_file_fetches_only_missing_pages() {
    let env = Env::new();
    let data = env.write("f.bin", (10 * PAGE + 100) as usize);
    let w = alluxiofs_worker::start(env.config()).await.unwrap();
    let base = w.url();
    let url = env.url("f.bin");
    let gets = || w.state().cache.metrics().ufs_requests(UfsOp::Get);
    // A read caches pages 2 and 3.
    let r = reqwest::get(format!(
        "{base}/v1/range/{}?ufsFullPath={}&offset={}&length={}",
        alluxiofs_core::path::path_id(&url),
        q(&url),
        2 * PAGE,
        2 * PAGE
    ))
    .await
    .unwrap();
    assert_eq!(
        r.bytes().await.unwrap(),
        &data[2 * PAGE as usize..4 * PAGE as usize]
    );
    let before = gets();
    let (status, body) = post_load(&base, &format!("path={}", q(&url))).await;
    assert_eq!(status, 200, "{body}");
    let res: FileLoadResult = serde_json::from_value(body).unwrap();
    assert_eq!(res.bytes_total, data.len() as u64);
    assert_eq!((res.pages_loaded, res.pages_skipped), (9, 2));
    assert_eq!(res.bytes_skipped, 2 * PAGE);
    assert_eq!(res.bytes_loaded, data.len() as u64 - 2 * PAGE);
    // Two runs of missing pages: [0, 2) and [4, 11).
    assert_eq!(gets() - before, 2);
    // Again: everything skipped, nothing fetched.
    let before = gets();
    let (_, body) = post_load(&base, &format!("path={}", q(&url))).await;
    let res: FileLoadResult = serde_json::from_value(body).unwrap();
    assert_eq!((res.pages_loaded, res.bytes_loaded), (0, 0));
    assert_eq!(res.bytes_skipped, data.len() as u64);
    assert_eq!(gets(), before);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_file_ranges_and_errors() {
    let env = Env::new();
    env.write("g.bin", (3 * PAGE + 1) as usize);
    let w = alluxiofs_worker::start(env.config()).await.unwrap();
    let base = w.url();
    let url = env.url("g.bin");
    // A range inside page 1 loads page 1 whole.
    let (_, body) = post_load(
        &base,
        &format!("path={}&offset={}&length=10", q(&url), PAGE + 5),
    )
    .await;
    let res: FileLoadResult = serde_json::from_value(body).unwrap();
    assert_eq!((res.bytes_total, res.pages_loaded), (PAGE, 1));
    // The last (1 byte) page, with a length past the end.
    let (_, body) = post_load(
        &base,
        &format!("path={}&offset={}&length={}", q(&url), 3 * PAGE, 10 * PAGE),
    )
    .await;
    let res: FileLoadResult = serde_json::from_value(body).unwrap();
    assert_eq!((res.bytes_total, res.bytes_loaded), (1, 1));
    // Past the end: nothing to do.
    let (_, body) = post_load(&base, &format!("path={}&offset={}", q(&url), 9 * PAGE)).await;
    assert_eq!(body["bytes_total"], 0);
    let (status, body) = post_load(&base, &format!("path={}", q(&env.url("nope")))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_load(&base, &format!("path={}", q(&env.url("d")))).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post_load(&base, "path=file%3A%2F%2F%2Fetc%2Fpasswd").await;
    assert_eq!(status, 403);
    let (status, body) = post_load(&base, "offset=3").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("path"));
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alluxio_load_job_loads_a_tree_into_this_worker() {
    let env = Env::new();
    let names = ["a.bin", "d/b.bin", "d/e/c.bin", "d/e/empty.bin"];
    let sizes = [5 * PAGE as usize + 3, 1, 2 * PAGE as usize, 0];
    let mut total = 0;
    for (n, s) in names.iter().zip(sizes) {
        env.write(n, s);
        total += s as u64;
    }
    let w = alluxiofs_worker::start(env.config()).await.unwrap();
    let base = w.url();
    let root = env.url("");
    let root = root.trim_end_matches('/');
    let (status, body) = get_json(&format!("{base}/v1/load?path={}&opType=submit", q(root))).await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true, "{body}");
    let job = body["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (_, p) = get_json(&format!(
            "{base}/v1/load?path={}&opType=progress&progressFormat=JSON",
            q(root)
        ))
        .await;
        if p["jobState"] != "RUNNING" || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["jobState"], "SUCCEEDED", "{done}");
    let props = &done["respProperties"];
    assert_eq!(props["jobId"], job.as_str());
    assert_eq!(props["filesTotal"], "4");
    assert_eq!(props["filesLoaded"], "3");
    assert_eq!(props["filesSkipped"], "1");
    assert_eq!(props["bytesLoaded"], total.to_string().as_str());
    // Every page is cached: reads of every file fetch nothing.
    let gets = w.state().cache.metrics().ufs_requests(UfsOp::Get);
    for n in names {
        let url = env.url(n);
        let r = reqwest::get(format!(
            "{base}/v1/range/{}?ufsFullPath={}",
            alluxiofs_core::path::path_id(&url),
            q(&url)
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(w.state().cache.metrics().ufs_requests(UfsOp::Get), gets);
    w.shutdown().await.unwrap();
}
