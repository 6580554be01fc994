//! The read-through engine driven directly, without HTTP: what a front end
//! other than the routes (a FUSE mount, an S3 endpoint) would see.

use alluxiofs_worker::cache::ReadThrough;
use alluxiofs_worker::config::{CacheDirConfig, WorkerConfig};
use alluxiofs_worker::metrics::{Metrics, UfsOp};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const PAGE: u64 = 4096;

struct Env {
    _dir: tempfile::TempDir,
    ufs: std::path::PathBuf,
    cache: Arc<ReadThrough>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ufs = dir.path().join("ufs");
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir_all(&ufs).unwrap();
    let config = WorkerConfig {
        cache_dirs: vec![CacheDirConfig::new(&cache_dir)],
        page_size: PAGE,
        metadata_ttl: Duration::ZERO,
        port: 0,
        ..WorkerConfig::with_mounts([ufs.to_str().unwrap()])
    };
    config.validate().unwrap();
    let cache = ReadThrough::open(&config).unwrap();
    Env {
        _dir: dir,
        ufs,
        cache,
    }
}

impl Env {
    fn write(&self, name: &str, data: &[u8], mtime_secs: u64) -> String {
        let path = self.ufs.join(name);
        std::fs::write(&path, data).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs))
            .unwrap();
        self.cache
            .confine(&format!("file://{}", path.display()))
            .unwrap()
    }

    async fn read_all(&self, url: &str, pinned: Option<&str>) -> (String, Vec<u8>) {
        let cache = &self.cache;
        let (v, stream) = cache
            .with_version(url, pinned, |v| async move {
                cache.read_range(&v, 0..v.size).await
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        (v.version, out)
    }
}

#[tokio::test]
async fn reads_through_once_then_from_the_cache() {
    let e = env();
    let data: Vec<u8> = (0..(2 * PAGE + 100)).map(|i| (i % 251) as u8).collect();
    let url = e.write("f.bin", &data, 1_000);
    let m = e.cache.metrics();
    let (_, first) = e.read_all(&url, None).await;
    assert_eq!(first, data);
    assert_eq!(Metrics::get(&m.cache_misses), 3);
    let gets = m.ufs_requests(UfsOp::Get);
    assert_eq!(gets, 1, "one run of missing pages, one GET");
    let (_, again) = e.read_all(&url, None).await;
    assert_eq!(again, data);
    assert_eq!(Metrics::get(&m.cache_hits), 3);
    assert_eq!(m.ufs_requests(UfsOp::Get), gets, "warm: no UFS GET");
    let v = e.cache.file_version(&url, None).await.unwrap();
    assert_eq!(e.cache.cached_percent(&v), 100);
    assert_eq!(e.cache.read_page(&v, 2).await.unwrap().len(), 100);
    assert!(
        e.cache.read_page(&v, 3).await.unwrap().is_empty(),
        "past the end"
    );
}

#[tokio::test]
async fn a_changed_file_is_read_at_its_new_version_or_refused_when_pinned() {
    let e = env();
    let url = e.write("f.bin", b"old bytes", 1_000);
    let (old, bytes) = e.read_all(&url, None).await;
    assert_eq!(bytes, b"old bytes");
    e.write("f.bin", b"new bytes, longer", 2_000);
    let (new, bytes) = e.read_all(&url, None).await;
    assert_ne!(new, old);
    assert_eq!(bytes, b"new bytes, longer");
    let err = e.cache.file_version(&url, Some(&old)).await.unwrap_err();
    assert!(err.is_changed(), "{err}");
    let (entries, pages) = e.cache.invalidate(&url, false).await.unwrap();
    assert_eq!(entries, 0, "TTL 0 keeps no metadata");
    assert!(pages >= 1, "the new version's page was cached");
    assert_eq!(e.cache.store().gauges().pages, 0);
}
