//! Same-node reads end to end: a real worker (HTTP and its Unix socket) on a
//! `file://` mount, read by the core client, which takes the page file
//! descriptors the worker passes and verifies every page itself.

use alluxiofs_core::{Client, ClientConfig, WorkerAddr};
use alluxiofs_worker::config::{CacheDirConfig, LocalSocket, WorkerConfig};
use alluxiofs_worker::{start, RunningWorker};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const PAGE: u64 = 4096;

struct Env {
    dir: tempfile::TempDir,
    worker: RunningWorker,
    client: Arc<Client>,
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

async fn env_with(socket: Option<&str>, token: Option<&str>, client_token: Option<&str>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ufs")).unwrap();
    let socket = match socket {
        Some("off") => LocalSocket::Off,
        _ => LocalSocket::Path(dir.path().join("w.sock")),
    };
    let config = WorkerConfig {
        cache_dirs: vec![CacheDirConfig::new(dir.path().join("cache"))],
        page_size: PAGE,
        memory_capacity: 0,
        metadata_ttl: Duration::from_secs(60),
        host: "127.0.0.1".into(),
        port: 0,
        local_socket: socket,
        auth_token: token.map(str::to_string),
        ..WorkerConfig::with_mounts([dir.path().join("ufs").to_str().unwrap()])
    };
    let worker = start(config).await.unwrap();
    let addr = WorkerAddr::from_host_port("127.0.0.1", worker.addr().port());
    let client = Client::new(
        ClientConfig {
            page_size: PAGE,
            auth_token: client_token.map(str::to_string),
            ..ClientConfig::default()
        },
        vec![addr],
    )
    .unwrap();
    Env {
        dir,
        worker,
        client: Arc::new(client),
    }
}

async fn env() -> Env {
    env_with(None, None, None).await
}

impl Env {
    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.path().join("ufs").join(name);
        std::fs::write(&p, bytes).unwrap();
        format!("file://{}", p.display())
    }

    async fn read(&self, url: &str, start: u64, end: u64) -> Vec<u8> {
        let r = self.client.read_range(url, None, start, end).await.unwrap();
        assert!(r.holes.is_empty(), "holes {:?}", r.holes);
        r.data.to_vec()
    }

    /// (file, offset, length) of the data of every page on disk.
    fn page_spans(&self) -> Vec<(PathBuf, u64, u64)> {
        alluxiofs_worker::store::page_data_spans(&self.dir.path().join("cache"))
    }

    fn metric(&self, f: impl Fn(&alluxiofs_worker::metrics::Metrics) -> u64) -> u64 {
        f(self.worker.state().cache.metrics())
    }
}

fn local_pages(m: &alluxiofs_worker::metrics::Metrics) -> u64 {
    m.local_pages.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pages_are_read_through_the_socket_and_verified() {
    let e = env().await;
    let body = data(1, (3 * PAGE + 1000) as usize);
    let url = e.write("f.bin", &body);
    // Cold: HTTP reads through (and the first read probes the worker).
    assert_eq!(e.read(&url, 0, body.len() as u64).await, body);
    assert_eq!(e.client.stats().bytes_local, 0);
    // Warm: every byte from the page files.
    assert_eq!(e.read(&url, 0, body.len() as u64).await, body);
    let s = e.client.stats();
    assert_eq!(s.bytes_local, body.len() as u64, "{s:?}");
    assert_eq!(local_pages(e.worker.state().cache.metrics()), 4);
    // Partial pages, a range past the end, and the end of the file.
    assert_eq!(e.read(&url, 100, 5000).await, &body[100..5000]);
    assert_eq!(
        e.read(&url, 3 * PAGE + 10, 1 << 20).await,
        &body[3 * PAGE as usize + 10..]
    );
    assert!(e.read(&url, body.len() as u64, 1 << 20).await.is_empty());
    assert!(e.client.is_local_worker(&e.client.workers()[0]));
    // The healthz names the socket and the boot id.
    let health: serde_json::Value = serde_json::from_str(
        &e.client
            .get_text(&e.client.workers()[0], "/healthz")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        health["local_socket"].as_str().unwrap(),
        e.dir.path().join("w.sock").display().to_string()
    );
    assert_eq!(
        health["boot_id"].as_str(),
        alluxiofs_core::local::boot_id().as_deref()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_socket_is_read_over_http() {
    let e = env_with(Some("off"), None, None).await;
    let body = data(2, 10_000);
    let url = e.write("f.bin", &body);
    for _ in 0..3 {
        assert_eq!(e.read(&url, 0, 10_000).await, body);
    }
    let s = e.client.stats();
    assert_eq!((s.bytes_local, s.bytes_remote), (0, 30_000), "{s:?}");
    assert!(!e.client.is_local_worker(&e.client.workers()[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_page_file_is_never_served_and_fetched_anew() {
    let e = env().await;
    let body = data(3, (2 * PAGE) as usize);
    let url = e.write("f.bin", &body);
    assert_eq!(e.read(&url, 0, 2 * PAGE).await, body);
    assert_eq!(e.read(&url, 0, 2 * PAGE).await, body);
    let spans = e.page_spans();
    assert_eq!(spans.len(), 2);
    // Flip one data byte of each page in place (same inode).
    for (f, off, len) in &spans {
        let mut raw = std::fs::read(f).unwrap();
        raw[(off + len - 7) as usize] ^= 0x20;
        std::fs::write(f, &raw).unwrap();
    }
    let before = e.client.stats().bytes_local;
    assert_eq!(
        e.read(&url, 0, 2 * PAGE).await,
        body,
        "never the corrupt bytes"
    );
    // The client reported page 0 and read the chunk over HTTP, where the
    // worker found page 1 corrupt too: both deleted and fetched anew.
    assert_eq!(e.metric(|m| m.corrupt_pages.load(Ordering::Relaxed)), 2);
    assert_eq!(
        e.client.stats().bytes_local,
        before,
        "no local byte of the corrupt pages"
    );
    // The pages on disk are intact again: reads are local and right.
    for _ in 0..3 {
        assert_eq!(e.read(&url, 0, 2 * PAGE).await, body);
    }
    assert_eq!(e.metric(|m| m.corrupt_pages.load(Ordering::Relaxed)), 2);
    assert_eq!(e.client.stats().bytes_local, before + 6 * PAGE);
}

/// Reads race evictions (`free`), overwrites at the UFS and corruption: every
/// read returns all of one version, never a mix, never corrupt bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_racing_free_overwrite_and_corruption_never_return_wrong_bytes() {
    let e = Arc::new(env().await);
    let len = 6 * PAGE as usize;
    let versions: Vec<Vec<u8>> = (0..4).map(|v| data(10 + v, len)).collect();
    let url = e.write("race.bin", &versions[0]);
    assert_eq!(e.read(&url, 0, len as u64).await, versions[0]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (e, url, versions, stop) = (e.clone(), url.clone(), versions.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A local read never waits on the runtime: let the others run.
                tokio::task::yield_now().await;
                let r = e.client.read_range(&url, None, 0, len as u64).await;
                match r {
                    Ok(r) => {
                        assert!(r.holes.is_empty());
                        assert!(
                            versions.iter().any(|v| v[..] == r.data[..]),
                            "a read returned bytes of no single version"
                        );
                        reads += 1;
                    }
                    // A version change in the middle of a read is refused, never mixed.
                    Err(alluxiofs_core::Error::ObjectChanged { .. }) => {}
                    Err(other) => panic!("{other}"),
                }
            }
            reads
        }));
    }
    let store = e.worker.state().cache.store().clone();
    for round in 0..40 {
        match round % 4 {
            0 => {
                store.remove_url(&url, None);
            }
            1 => {
                let v = &versions[(round / 4) % 4];
                // Replaced whole, as an object store PUT does, with a new
                // mtime: a new version.
                let p = e.dir.path().join("ufs").join("race.bin");
                let tmp = e.dir.path().join("race.tmp");
                std::fs::write(&tmp, v).unwrap();
                let f = std::fs::File::options().write(true).open(&tmp).unwrap();
                f.set_modified(std::time::SystemTime::now() + Duration::from_secs(round as u64))
                    .unwrap();
                std::fs::rename(&tmp, &p).unwrap();
                e.worker.state().cache.meta().invalidate(&url, false);
            }
            2 => {
                for (f, off, len) in e.page_spans() {
                    if let Ok(mut raw) = std::fs::read(&f) {
                        if let Some(b) = raw.get_mut((off + len - 1) as usize) {
                            *b ^= 1;
                            let _ = std::fs::write(&f, &raw);
                        }
                    }
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    assert!(total > 20, "the readers made progress ({total} reads)");
    assert!(e.client.stats().bytes_local > 0, "some reads were local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_goes_with_the_worker_and_reads_fall_back_to_http() {
    let e = env().await;
    let body = data(4, 9000);
    let url = e.write("f.bin", &body);
    assert_eq!(e.read(&url, 0, 9000).await, body);
    assert_eq!(e.read(&url, 0, 9000).await, body);
    assert!(e.client.stats().bytes_local > 0);
    let socket = e.dir.path().join("w.sock");
    assert!(socket.exists());
    let Env {
        dir,
        worker,
        client,
    } = e;
    worker.shutdown().await.unwrap();
    assert!(!socket.exists(), "the socket file is removed at shutdown");
    let _ = (dir, client);
}

#[test]
fn the_default_socket_path_is_per_user_host_and_port() {
    let p = LocalSocket::Auto.resolve("10.0.0.7", 28080).unwrap();
    let uid = rustix_uid();
    assert_eq!(
        p,
        Path::new(&format!("/tmp/alluxiofs-{uid}/10.0.0.7-28080.sock"))
    );
    assert_eq!(
        LocalSocket::Auto
            .resolve("::1", 1)
            .unwrap()
            .file_name()
            .unwrap(),
        "__1-1.sock"
    );
    assert!(LocalSocket::Off.resolve("h", 1).is_none());
    assert_eq!(LocalSocket::parse("off").unwrap(), LocalSocket::Off);
    assert!(LocalSocket::parse(&"x".repeat(200)).is_err());
}

fn rustix_uid() -> u32 {
    // The uid that owns this test's files.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap()
}
