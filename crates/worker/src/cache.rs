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
//! - **One retry on change.** When the UFS answers that the object is no
//!   longer the version being read, [`ReadThrough::with_version`] refreshes
//!   the metadata and tries once more with the new version (or answers 412
//!   when the caller pinned the old one). Every reader (page, range, load)
//!   goes through it, so the rule lives in one place.
//! - The page machinery (single flight, streaming) is [`crate::read`]'s.

use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::meta::{CachedInfo, MetaCache};
use crate::metrics::Metrics;
use crate::read::{share, PageReader, SharedErr};
use crate::store::{DirSpec, PageStore, StoreOptions};
use crate::ufs::{ObjectVersion, Ufs};
use alluxiofs_core::info::FileInfo;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::read::{MAX_RUN_BYTES, READ_AHEAD};

/// How often the TTL sweep of the page store runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A metadata lookup in flight, awaited by every request that needs it.
type SharedInfo = Shared<BoxFuture<'static, std::result::Result<CachedInfo, SharedErr>>>;

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
    })
}

/// The read-through cache of one worker.
#[derive(Debug)]
pub struct ReadThrough {
    ufs: Arc<Ufs>,
    store: Arc<PageStore>,
    meta: MetaCache,
    metrics: Arc<Metrics>,
    pages: Arc<PageReader>,
    meta_inflight: Mutex<HashMap<String, SharedInfo>>,
    spool_dir: PathBuf,
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
        let meta = MetaCache::new(config.metadata_ttl);
        for url in store.urls() {
            meta.remember(&url);
        }
        let spool_dir = config
            .cache_dirs
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_else(std::env::temp_dir)
            .join(".writes");
        Ok(Arc::new(ReadThrough {
            pages: Arc::new(PageReader::new(ufs.clone(), store.clone(), metrics.clone())),
            ufs,
            store,
            meta,
            metrics,
            meta_inflight: Mutex::new(HashMap::new()),
            spool_dir,
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
        if fresh {
            Metrics::add(&self.metrics.metadata_misses, 1);
            return self.fetch_info(url).await;
        }
        if let Some(c) = self.meta.info(url) {
            Metrics::add(&self.metrics.metadata_hits, 1);
            return Ok(c);
        }
        Metrics::add(&self.metrics.metadata_misses, 1);
        let lookup = {
            let mut inflight = self.meta_inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(url) {
                Some(f) => f.clone(),
                None => {
                    let cache = self.clone();
                    let u = url.to_string();
                    let f = async move {
                        let r = cache.fetch_info(&u).await;
                        cache
                            .meta_inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&u);
                        r.map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    inflight.insert(url.to_string(), f.clone());
                    f
                }
            }
        };
        lookup.await.map_err(share)
    }

    /// Ask the UFS for the metadata of `url` and cache it. A new version
    /// drops the pages of older ones.
    async fn fetch_info(&self, url: &str) -> Result<CachedInfo> {
        let (info, version) = self.ufs.info(url).await?;
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
        Ok(cached)
    }

    /// The version of `url` to read: `pinned` when given (412 when the
    /// object no longer has it), else the current one.
    pub async fn file_version(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
    ) -> Result<ObjectVersion> {
        let mut cached = self.lookup_info(url, false).await?;
        if let Some(p) = pinned {
            if cached.version.as_ref().is_some_and(|v| v.version != p) {
                cached = self.lookup_info(url, true).await?;
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
        tracing::info!(url, "object changed while reading: {err}");
        self.meta.invalidate(url, false);
        let cached = self.lookup_info(url, true).await?;
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
        mut read: F,
    ) -> Result<(ObjectVersion, T)>
    where
        F: FnMut(ObjectVersion) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut v = self.file_version(url, pinned).await?;
        let mut retried = false;
        loop {
            match read(v.clone()).await {
                Ok(t) => return Ok((v, t)),
                Err(e) if e.is_changed() && !retried => {
                    retried = true;
                    v = self.refresh_after_change(url, pinned, e).await?;
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
                let c = self.ufs.list(url).await?;
                self.meta.put_list(url, &c);
                c
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
