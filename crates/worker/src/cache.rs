//! The read-through engine: [`ReadThrough`] owns the UFS, the page store,
//! the metadata cache and the counters, and answers "which version of this
//! file, and its bytes" for every front end (the HTTP routes today; a FUSE
//! mount, an S3 endpoint or a same-node fast path would call the same
//! methods).
//!
//! Design:
//! - **No HTTP here.** Methods take confined URLs, versions and byte ranges
//!   and return [`WorkerError`]s, file infos, bytes and byte streams; status
//!   codes, headers and query strings are the routes' business.
//! - **Versions.** Every read names an [`ObjectVersion`]. Metadata comes
//!   from the metadata cache unless expired; concurrent misses of one URL
//!   share one UFS lookup, and a new version drops the pages of older ones.
//! - **One UFS request per cold read.** A read that says which bytes it
//!   wants ([`ReadThrough::with_version_at`]) and misses the metadata of a
//!   file the worker has no pages of makes its lookup a ranged GET of those
//!   pages ([`Ufs::info_and_read`]) instead of a HEAD: version and size
//!   come from the GET's answer, the pages are stored under that version
//!   before the lookup resolves, and the read then finds them cached. Where
//!   pages are probably cached (the last version seen, kept past the TTL by
//!   [`MetaCache::seen`], has the first wanted page, or pages were on disk
//!   at start) the lookup stays a HEAD, so an expired TTL never re-fetches
//!   cached bytes. Concurrent cold reads of one URL share the one lookup.
//! - **One retry on change.** When the UFS answers that the object is no
//!   longer the version being read, [`ReadThrough::with_version`] refreshes
//!   the metadata and tries once more with the new version (or answers 412
//!   when the caller pinned the old one). Every reader (page, range, load)
//!   goes through it, so the rule lives in one place.
//! - The page machinery (single flight, streaming) is [`crate::read`]'s.

use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::meta::{CachedInfo, MetaCache, Seen};
use crate::metrics::Metrics;
use crate::read::{share, PageReader, SharedErr};
use crate::store::{DirSpec, PageKey, PageStore, StoreOptions};
use crate::ufs::{ObjectVersion, Ufs};
use crate::ufs_uploads::{UfsUploads, UPLOADS_FILE};
use alluxiofs_core::error::ErrorKind;
use alluxiofs_core::info::FileInfo;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::read::{MAX_RUN_BYTES, READ_AHEAD};

/// How often the TTL sweep of the page store runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A metadata lookup in flight, awaited by every request that needs it.
type SharedInfo = Shared<BoxFuture<'static, std::result::Result<CachedInfo, SharedErr>>>;

/// A lookup in flight and how many requests joined it.
type InflightInfo = (SharedInfo, Arc<AtomicU64>);

/// Teach `meta` the `path_id` of every URL with pages on disk, so that
/// page requests by bare path id (Alluxio's Python client sends no
/// `ufsFullPath`) work for files cached before a restart. It reads the
/// names file, so it runs only when a request first asks for a path id the
/// map does not know (see [`ReadThrough::url_of_path_id`]), never at
/// start: a worker that is only read with `ufsFullPath` never pays for it.
/// A names file up to [`SYNC_NAMES_BYTES`] (about 200,000 URLs) is read
/// at once, the asking request waiting; a larger one on a thread of its
/// own, since for millions of files it takes seconds (the map keeps only
/// its memory share of them anyway).
fn remember_cached_urls(store: &Arc<PageStore>, meta: &Arc<MetaCache>) {
    if store.names_bytes() <= SYNC_NAMES_BYTES {
        store.for_each_url(&mut |_, url| {
            meta.remember(url);
        });
        return;
    }
    let (store, meta) = (Arc::downgrade(store), Arc::downgrade(meta));
    let spawned = std::thread::Builder::new()
        .name("alluxiofs-path-ids".into())
        .spawn(move || {
            let Some(s) = store.upgrade() else { return };
            let mut n = 0u64;
            s.for_each_url(&mut |_, url| {
                if let Some(m) = meta.upgrade() {
                    m.remember(url);
                    n += 1;
                }
            });
            tracing::debug!(urls = n, "path ids of cached files learnt");
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot learn the path ids of cached files: {e}");
    }
}

/// Names files up to this size are read before the worker serves.
const SYNC_NAMES_BYTES: u64 = 16 << 20;

/// The page store options of `config`: policy, pin quota, and the mount
/// quotas normalized and checked to lie inside the mounts.
pub fn store_options(config: &WorkerConfig, ufs: &Ufs) -> Result<StoreOptions> {
    let mut mount_quotas = Vec::new();
    for (url, bytes) in &config.mount_quotas {
        let normalized = ufs.confine(url).map_err(|e| {
            WorkerError::Config(format!(
                "mount quota {url:?}: {e} (mounts: {:?})",
                ufs.mounts()
            ))
        })?;
        mount_quotas.push((normalized, *bytes));
    }
    Ok(StoreOptions {
        policy: config.eviction_policy,
        pin_quota: config.pin_quota,
        mount_quotas,
        ..Default::default()
    })
}

/// The read-through cache of one worker.
#[derive(Debug)]
pub struct ReadThrough {
    ufs: Arc<Ufs>,
    store: Arc<PageStore>,
    meta: Arc<MetaCache>,
    metrics: Arc<Metrics>,
    pages: Arc<PageReader>,
    meta_inflight: Mutex<HashMap<String, InflightInfo>>,
    spool_dir: PathBuf,
    /// The UFS multipart uploads open (see [`crate::ufs_uploads`]).
    uploads: Arc<UfsUploads>,
    /// Set once the path ids of the cached URLs were learnt from disk.
    ids_learnt: std::sync::Once,
    /// See [`WorkerConfig::stale_if_error`].
    stale_if_error: Duration,
}

impl ReadThrough {
    /// Open the cache of `config` (validated already): check the mounts,
    /// open (and scan) the cache directories, start the TTL sweeper.
    /// Blocking (disk scan).
    pub fn open(config: &WorkerConfig) -> Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::new());
        let ufs = Arc::new(Ufs::new(config, metrics.clone())?);
        let dirs = config
            .cache_dirs
            .iter()
            .map(|d| DirSpec {
                path: d.path.clone(),
                capacity: d.capacity.unwrap_or(config.capacity),
            })
            .collect();
        let store = Arc::new(PageStore::open_with(
            dirs,
            config.memory_capacity,
            config.page_size,
            metrics.clone(),
            store_options(config, &ufs)?,
        )?);
        store.start_sweeper(SWEEP_EVERY);
        store.start_persister(store.persist_interval());
        let meta = Arc::new(MetaCache::new(
            config.metadata_ttl,
            config.metadata_capacity,
        ));
        let first_dir = config
            .cache_dirs
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_else(std::env::temp_dir);
        let spool_dir = first_dir.join(".writes");
        let uploads = Arc::new(UfsUploads::open(first_dir.join(UPLOADS_FILE)));
        Ok(Arc::new(ReadThrough {
            pages: Arc::new(PageReader::new(ufs.clone(), store.clone(), metrics.clone())),
            ufs,
            store,
            meta,
            metrics,
            meta_inflight: Mutex::new(HashMap::new()),
            spool_dir,
            uploads,
            ids_learnt: std::sync::Once::new(),
            stale_if_error: config.stale_if_error,
        }))
    }

    /// UFS access (confinement, listings, heads).
    pub fn ufs(&self) -> &Ufs {
        &self.ufs
    }

    /// The page store.
    pub fn store(&self) -> &Arc<PageStore> {
        &self.store
    }

    /// The metadata cache and `path_id` map.
    pub fn meta(&self) -> &MetaCache {
        &self.meta
    }

    /// The URL of `path_id`: from the map, else (the first time an unknown
    /// id is asked for) after learning the ids of the URLs cached on disk.
    pub fn url_of_path_id(&self, id: &str) -> Option<String> {
        if let Some(url) = self.meta.url_of(id) {
            return Some(url);
        }
        if self.ids_learnt.is_completed() {
            return None;
        }
        self.ids_learnt
            .call_once(|| remember_cached_urls(&self.store, &self.meta));
        self.meta.url_of(id)
    }

    /// The worker's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Bytes per page.
    pub fn page_size(&self) -> u64 {
        self.store.page_size()
    }

    /// Where write-through spools bodies (`<first cache dir>/.writes`).
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// The journal of the UFS multipart uploads open.
    pub fn uploads(&self) -> &Arc<UfsUploads> {
        &self.uploads
    }

    /// Abort, in the background, the UFS multipart uploads an earlier run
    /// left open (once, after serving starts).
    pub fn abort_leftover_uploads(&self) {
        self.uploads
            .abort_leftovers(self.ufs.clone(), self.metrics.clone());
    }

    /// Normalize `raw` and check it lies under a mount (403 otherwise).
    pub fn confine(&self, raw: &str) -> Result<String> {
        self.ufs.confine(raw)
    }

    /// Bytes of page `index` of `v` (the last page may be short).
    pub fn page_len(&self, v: &ObjectVersion, index: u64) -> u64 {
        self.pages.page_len(v, index)
    }

    /// Metadata of `url`, from the cache unless `fresh` or expired.
    /// Concurrent misses of one URL share one UFS lookup (a `fresh` lookup,
    /// made after a change was detected, never joins an older one).
    pub async fn lookup_info(self: &Arc<Self>, url: &str, fresh: bool) -> Result<CachedInfo> {
        self.lookup(url, fresh, None).await
    }

    /// [`Self::lookup_info`] for a read of bytes `want` (`None`: no bytes
    /// wanted), which a miss may answer with one GET bringing the pages too
    /// (see [`Self::cold_range`]).
    async fn lookup(
        self: &Arc<Self>,
        url: &str,
        fresh: bool,
        want: Option<Range<u64>>,
    ) -> Result<CachedInfo> {
        match self.lookup_ufs(url, fresh, want).await {
            Err(e) if e.kind() == ErrorKind::UfsUnreachable => {
                match self.meta.stale_info(url, self.stale_if_error) {
                    Some(c) => {
                        self.served_stale(url);
                        Ok(c)
                    }
                    None => Err(e),
                }
            }
            r => r,
        }
    }

    /// Count (and log at debug) metadata served past its TTL because the
    /// UFS is unreachable.
    fn served_stale(&self, url: &str) {
        Metrics::add(&self.metrics.ufs_stale_served, 1);
        tracing::debug!(url, "UFS unreachable: serving the last verified metadata");
    }

    /// [`Self::lookup`] before the stale-if-error fallback.
    async fn lookup_ufs(
        self: &Arc<Self>,
        url: &str,
        fresh: bool,
        want: Option<Range<u64>>,
    ) -> Result<CachedInfo> {
        if fresh {
            Metrics::add(&self.metrics.metadata_misses, 1);
            return Ok(self.fetch_info(url, want).await?.0);
        }
        if let Some(c) = self.meta.info(url) {
            Metrics::add(&self.metrics.metadata_hits, 1);
            return Ok(c);
        }
        Metrics::add(&self.metrics.metadata_misses, 1);
        let lookup = {
            let mut inflight = self.meta_inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(url) {
                Some((f, joined)) => {
                    joined.fetch_add(1, Ordering::Relaxed);
                    f.clone()
                }
                None => {
                    let cache = self.clone();
                    let u = url.to_string();
                    let joined = Arc::new(AtomicU64::new(0));
                    let waiters = joined.clone();
                    let f = async move {
                        let r = cache.fetch_info(&u, want).await;
                        cache
                            .meta_inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&u);
                        // Nobody joins any more: the joiners serve the pages
                        // this lookup stored as coalesced, not as hits.
                        r.map(|(cached, keys)| {
                            cache
                                .pages
                                .owe_coalesced(&keys, waiters.load(Ordering::Relaxed));
                            cached
                        })
                        .map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    inflight.insert(url.to_string(), (f.clone(), joined));
                    f
                }
            }
        };
        lookup.await.map_err(share)
    }

    /// The page-aligned bytes a lookup of `url` for a read of `want` should
    /// GET (at most [`MAX_RUN_BYTES`], one page at least), or `None` when a
    /// HEAD is the better lookup: nothing wanted, or pages of `url` are
    /// probably cached (the first wanted page of the last version seen, or
    /// pages of an unknown version found on disk at start).
    fn cold_range(&self, url: &str, want: Option<Range<u64>>) -> Option<Range<u64>> {
        let want = want.filter(|w| !w.is_empty())?;
        let p = self.page_size();
        let first = want.start / p;
        match self.meta.seen(url) {
            // Pages of a version not known yet (cached before a restart).
            Seen::Never | Seen::Pages if self.store.has_pages(url) => return None,
            Seen::Never | Seen::Pages => {}
            Seen::Version(v) => {
                if self.store.contains(&self.store.key(url, v, first)) {
                    return None;
                }
            }
        }
        let start = first.checked_mul(p)?;
        let max_pages = (MAX_RUN_BYTES / p).max(1);
        let pages = want
            .end
            .div_ceil(p)
            .saturating_sub(first)
            .clamp(1, max_pages);
        Some(start..start.saturating_add(pages.saturating_mul(p)))
    }

    /// Ask the UFS for the metadata of `url` and cache it. A new version
    /// drops the pages of older ones. For a cold read of `want` (see
    /// [`Self::cold_range`]) the lookup is one GET whose bytes are stored
    /// as pages of the version it found before the metadata is cached.
    /// Returns the keys of the pages stored so.
    async fn fetch_info(
        &self,
        url: &str,
        want: Option<Range<u64>>,
    ) -> Result<(CachedInfo, Vec<PageKey>)> {
        let mut keys = Vec::new();
        let (info, version) = match self.cold_range(url, want) {
            Some(range) => {
                let (info, version, data) = self.ufs.info_and_read(url, range.clone()).await?;
                if let Some(v) = &version {
                    keys = self.pages.store_fetched(v, range.start, &data).await;
                    tracing::debug!(
                        url,
                        pages = keys.len(),
                        "cold read: metadata and pages from one GET"
                    );
                }
                (info, version)
            }
            None => self.ufs.info(url).await?,
        };
        if let Some(v) = &version {
            let store = self.store.clone();
            let (u, keep) = (v.url.clone(), v.version.clone());
            // Best effort, off the request path.
            tokio::task::spawn_blocking(move || {
                let n = store.remove_url(&u, Some(&keep));
                if n > 0 {
                    tracing::info!(url = %u, pages = n, "dropped pages of an older version");
                }
            });
        }
        let cached = CachedInfo { info, version };
        self.meta.put_info(url, cached.clone());
        Ok((cached, keys))
    }

    /// The version of `url` to read: `pinned` when given (412 when the
    /// object no longer has it), else the current one.
    pub async fn file_version(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
    ) -> Result<ObjectVersion> {
        self.file_version_at(url, pinned, None).await
    }

    /// [`Self::file_version`] for a read of bytes `want`.
    async fn file_version_at(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
        want: Option<Range<u64>>,
    ) -> Result<ObjectVersion> {
        let mut cached = self.lookup(url, false, want.clone()).await?;
        if let Some(p) = pinned {
            if cached.version.as_ref().is_some_and(|v| v.version != p) {
                cached = self.lookup(url, true, want).await?;
            }
        }
        let v = cached.version.ok_or_else(|| WorkerError::IsADirectory {
            path: url.to_string(),
        })?;
        if let Some(p) = pinned {
            if v.version != p {
                return Err(WorkerError::Changed {
                    path: url.to_string(),
                    expected: p.to_string(),
                    found: v.version,
                });
            }
        }
        Ok(v)
    }

    /// After a read found the object changed: refresh its metadata and
    /// return the new version (or 412 when the caller pinned one).
    pub async fn refresh_after_change(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
        err: WorkerError,
    ) -> Result<ObjectVersion> {
        self.refresh_at(url, pinned, None, err).await
    }

    /// [`Self::refresh_after_change`] for a read of bytes `want` (the
    /// refresh may then bring the new version's pages in the same GET).
    async fn refresh_at(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
        want: Option<Range<u64>>,
        err: WorkerError,
    ) -> Result<ObjectVersion> {
        tracing::info!(url, "object changed while reading: {err}");
        self.meta.invalidate(url, false);
        let cached = self.lookup(url, true, want).await?;
        let v = cached.version.ok_or_else(|| WorkerError::not_found(url))?;
        match pinned {
            Some(p) if v.version != p => Err(WorkerError::Changed {
                path: url.to_string(),
                expected: p.to_string(),
                found: v.version,
            }),
            _ => Ok(v),
        }
    }

    /// Run `read` on the version of `url` to read ([`Self::file_version`]);
    /// when it fails because the object changed, refresh the metadata and
    /// run it once more on the new version. Returns the version read with
    /// the result.
    pub async fn with_version<T, F, Fut>(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
        read: F,
    ) -> Result<(ObjectVersion, T)>
    where
        F: FnMut(ObjectVersion) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.with_version_at(url, pinned, None, read).await
    }

    /// [`Self::with_version`] for a read of bytes `want` (cut to the file
    /// by `read` itself; `u64::MAX` as the end means "to the end"): a
    /// metadata miss on a cold file is then one GET that also brings the
    /// first pages of `want` (see `cold_range`), so a cold read of
    /// a small file costs one UFS request.
    pub async fn with_version_at<T, F, Fut>(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
        want: Option<Range<u64>>,
        mut read: F,
    ) -> Result<(ObjectVersion, T)>
    where
        F: FnMut(ObjectVersion) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut v = self.file_version_at(url, pinned, want.clone()).await?;
        let mut retried = false;
        loop {
            match read(v.clone()).await {
                Ok(t) => return Ok((v, t)),
                Err(e) if e.is_changed() && !retried => {
                    retried = true;
                    v = self.refresh_at(url, pinned, want.clone(), e).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Page `index` of `v`: from the cache, else read through (empty past
    /// the end of the file).
    pub async fn read_page(&self, v: &ObjectVersion, index: u64) -> Result<Bytes> {
        self.pages.read_page(v, index).await
    }

    /// Stream bytes `range` of `v` (already cut to the file size). The first
    /// page or run is read before this returns, so its errors come back here.
    pub async fn read_range(
        &self,
        v: &ObjectVersion,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        self.pages.read_range(v, range).await
    }

    /// Share of the pages of `v` held in the cache, 0-100.
    pub fn cached_percent(&self, v: &ObjectVersion) -> u8 {
        let p = self.store.page_size();
        let total = v.size.div_ceil(p);
        if total == 0 {
            return 100;
        }
        let cached = self.store.cached_pages(&v.url, &v.version).min(total);
        (cached * 100 / total) as u8
    }

    /// `info` with its `in_cache_percent` filled in (files only).
    pub fn with_percent(&self, mut info: FileInfo) -> FileInfo {
        if !info.is_dir() {
            info.in_cache_percent = self.cached_percent(&ObjectVersion::from_info(&info));
        }
        info
    }

    /// The info of `url` (file or directory), with its cached share.
    pub async fn info(self: &Arc<Self>, url: &str) -> Result<FileInfo> {
        let cached = self.lookup_info(url, false).await?;
        Ok(self.with_percent(cached.info))
    }

    /// The entries of directory `url`, from the metadata cache unless
    /// expired, each with its cached share.
    pub async fn list(&self, url: &str) -> Result<Vec<FileInfo>> {
        let children = match self.meta.list(url) {
            Some(c) => {
                Metrics::add(&self.metrics.metadata_hits, 1);
                c
            }
            None => {
                Metrics::add(&self.metrics.metadata_misses, 1);
                match self.ufs.list(url).await {
                    Ok(c) => {
                        self.meta.put_list(url, &c);
                        c
                    }
                    Err(e) if e.kind() == ErrorKind::UfsUnreachable => {
                        match self.meta.stale_list(url, self.stale_if_error) {
                            Some(c) => {
                                self.served_stale(url);
                                c
                            }
                            None => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(children.into_iter().map(|c| self.with_percent(c)).collect())
    }

    /// Forget the metadata and the pages of `url` (with `recursive`, of
    /// everything under it). Returns (metadata entries, pages) forgotten.
    pub async fn invalidate(&self, url: &str, recursive: bool) -> Result<(usize, usize)> {
        let entries = self.meta.invalidate(url, recursive);
        let store = self.store.clone();
        let u = url.to_string();
        let pages = tokio::task::spawn_blocking(move || {
            if recursive {
                store.remove_under(&u)
            } else {
                store.remove_url(&u, None)
            }
        })
        .await
        .map_err(|e| WorkerError::Internal(format!("invalidate task: {e}")))?;
        Ok((entries, pages))
    }

    /// Forget the metadata of `url` (and its parent listing) and its pages
    /// but those of version `keep` (all of them when `None`). Best effort.
    pub async fn forget(&self, url: &str, keep: Option<String>) {
        self.meta.invalidate(url, false);
        let store = self.store.clone();
        let u = url.to_string();
        let _ = tokio::task::spawn_blocking(move || store.remove_url(&u, keep.as_deref())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheDirConfig;
    use crate::metrics::UfsOp;
    use alluxiofs_core::error::ErrorKind;
    use futures::StreamExt;

    const PAGE: u64 = 4096;

    fn open(ufs: &Path, cache: &Path, ttl: Duration) -> Arc<ReadThrough> {
        let config = WorkerConfig {
            cache_dirs: vec![CacheDirConfig::new(cache)],
            page_size: PAGE,
            metadata_ttl: ttl,
            port: 0,
            ..WorkerConfig::with_mounts([ufs.to_str().unwrap()])
        };
        config.validate().unwrap();
        ReadThrough::open(&config).unwrap()
    }

    /// A whole-file read as `/v1/range` makes it: bytes wanted `[0, ∞)`.
    async fn read_all(cache: &Arc<ReadThrough>, url: &str) -> Result<(String, Vec<u8>)> {
        let (v, mut stream) = cache
            .with_version_at(url, None, Some(0..u64::MAX), |v| async move {
                cache.read_range(&v, 0..v.size).await
            })
            .await?;
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok((v.version, out))
    }

    fn requests(cache: &ReadThrough) -> (u64, u64) {
        let m = cache.metrics();
        (m.ufs_requests(UfsOp::Get), m.ufs_requests(UfsOp::Head))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cold_read_is_one_get_shared_by_concurrent_readers() {
        let dir = tempfile::tempdir().unwrap();
        let (ufs, cache_dir) = (dir.path().join("ufs"), dir.path().join("cache"));
        std::fs::create_dir_all(&ufs).unwrap();
        let cache = open(&ufs, &cache_dir, Duration::from_secs(60));
        let data: Vec<u8> = (0..(2 * PAGE + 100)).map(|i| (i % 251) as u8).collect();
        std::fs::write(ufs.join("a.bin"), &data).unwrap();
        std::fs::write(ufs.join("b.bin"), &data[..10]).unwrap();
        let base = cache.confine(ufs.to_str().unwrap()).unwrap();
        let (a, b) = (format!("{base}/a.bin"), format!("{base}/b.bin"));

        let (version, got) = read_all(&cache, &a).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(requests(&cache), (1, 0), "one GET, no HEAD");
        let m = cache.metrics();
        let counts = || (Metrics::get(&m.cache_misses), Metrics::get(&m.cache_hits));
        assert_eq!(
            counts(),
            (3, 0),
            "each page from the UFS is a miss, not a hit"
        );
        assert_eq!(
            cache.ufs().head(&a).await.unwrap().unwrap().version,
            version
        );
        let (_, again) = read_all(&cache, &a).await.unwrap();
        assert_eq!(again, data);
        assert_eq!(
            requests(&cache),
            (1, 1),
            "warm: no UFS request (one HEAD above)"
        );
        assert_eq!(counts(), (3, 3));

        let readers: Vec<_> = (0..16)
            .map(|_| {
                let (cache, b) = (cache.clone(), b.clone());
                tokio::spawn(async move { read_all(&cache, &b).await.unwrap().1 })
            })
            .collect();
        for r in readers {
            assert_eq!(r.await.unwrap(), &data[..10]);
        }
        assert_eq!(
            requests(&cache),
            (2, 1),
            "16 concurrent cold readers, one GET"
        );
        // One miss; each other reader either waited on the lookup
        // (coalesced) or came after it (a hit): never a second miss.
        let (misses, hits) = counts();
        let coalesced = Metrics::get(&m.coalesced_pages);
        assert_eq!((misses, hits + coalesced), (4, 3 + 15));
    }

    #[tokio::test]
    async fn after_the_ttl_a_head_revalidates_and_a_change_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (ufs, cache_dir) = (dir.path().join("ufs"), dir.path().join("cache"));
        std::fs::create_dir_all(&ufs).unwrap();
        let cache = open(&ufs, &cache_dir, Duration::from_millis(50));
        std::fs::write(ufs.join("f"), b"first version").unwrap();
        let base = cache.confine(ufs.to_str().unwrap()).unwrap();
        let f = format!("{base}/f");
        let (v1, got) = read_all(&cache, &f).await.unwrap();
        assert_eq!(&got[..], b"first version");
        assert_eq!(requests(&cache), (1, 0));
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (again, got) = read_all(&cache, &f).await.unwrap();
        assert_eq!((&again, &got[..]), (&v1, &b"first version"[..]));
        assert_eq!(
            requests(&cache),
            (1, 1),
            "expired metadata: a HEAD, and the pages of the cold GET match it"
        );
        // Rewritten behind the cache's back: seen once the TTL is over.
        std::fs::write(ufs.join("f"), b"the second version").unwrap();
        let (stale, got) = read_all(&cache, &f).await.unwrap();
        assert_eq!(
            (&stale, &got[..]),
            (&v1, &b"first version"[..]),
            "within the TTL"
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (v2, got) = read_all(&cache, &f).await.unwrap();
        assert_ne!(v2, v1);
        assert_eq!(&got[..], b"the second version");
        // A pinned old version is refused, whatever the lookup.
        let err = cache
            .with_version_at(&f, Some(&v1), Some(0..u64::MAX), |_| async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 412, "{err}");
    }

    #[tokio::test]
    async fn empty_missing_and_directory_answer_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let (ufs, cache_dir) = (dir.path().join("ufs"), dir.path().join("cache"));
        std::fs::create_dir_all(ufs.join("sub")).unwrap();
        std::fs::write(ufs.join("sub/x"), b"x").unwrap();
        std::fs::write(ufs.join("empty"), b"").unwrap();
        let cache = open(&ufs, &cache_dir, Duration::from_secs(60));
        let base = cache.confine(ufs.to_str().unwrap()).unwrap();
        let (_, got) = read_all(&cache, &format!("{base}/empty")).await.unwrap();
        assert!(got.is_empty());
        let kind = |r: Result<(String, Vec<u8>)>| r.unwrap_err().kind();
        let missing = read_all(&cache, &format!("{base}/missing")).await;
        assert_eq!(kind(missing), ErrorKind::NotFound);
        let through = read_all(&cache, &format!("{base}/sub/x/y")).await;
        assert_eq!(kind(through), ErrorKind::NotFound, "a path through a file");
        let sub = read_all(&cache, &format!("{base}/sub")).await;
        assert_eq!(kind(sub), ErrorKind::IsADirectory);
    }
}
