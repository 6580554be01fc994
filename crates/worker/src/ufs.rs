//! UFS access through `object_store`: confinement, metadata, listings and
//! version-checked ranged reads.
//!
//! - **Confinement first.** Every URL goes through [`Ufs::confine`]
//!   (core's `normalize_url`, which refuses dot segments also when
//!   percent-encoded, then `is_under` some mount) before anything touches
//!   the UFS or the disk.
//! - **No decoding.** The key of a normalized URL becomes an
//!   `object_store::path::Path` with [`Path::parse`], which keeps the text
//!   as is: an encoded `%2e%2e` stays three literal characters.
//! - **One store per (scheme, authority)**, built lazily on first use and
//!   cached. S3, GCS and Azure start from their `from_env()` builders, then
//!   `ufs_options`, then the options of the mounts on that bucket.
//! - **Versions.** An object's version is its ETag when the UFS has one,
//!   else `<mtime_ms>-<size>`. A read names the version it expects: with an
//!   ETag the GET carries `If-Match`; in every case the version of the
//!   answer is compared, so bytes always belong to the expected version.
//! - **A cold read is one GET.** [`Ufs::info_and_read`] answers what
//!   [`Ufs::info`] answers plus the bytes of a range, from one ranged GET
//!   with no condition: the version and size are read off the GET's answer
//!   (ETag, Last-Modified, Content-Range), which carries what a HEAD does.
//!   It falls back to a HEAD only when the GET could not say (an empty
//!   object's 416, a range past the end, an error).
//! - **Outages.** Each remote store retries a request at most
//!   [`UFS_RETRIES`] times within [`UFS_RETRY_TIMEOUT`] (`object_store`'s
//!   own defaults, 10 retries within 3 minutes, made a dead UFS cost a
//!   reader tens of seconds). A request that still could not reach the
//!   store begins an outage ([`crate::outage`]): requests to that store
//!   fail at once with `ufs_unreachable` until it is tried again.

use crate::config::WorkerConfig;
use crate::error::{caused_by_request, client_kind_of, Result, WorkerError};
use crate::metrics::{Metrics, UfsOp};
use crate::outage::{is_outage, Outages};
use alluxiofs_core::info::{human_size, FileInfo, FileType};
use alluxiofs_core::path::{file_name, is_under, normalize_url, split_url};
use bytes::Bytes;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// What the worker knows about one file's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The normalized URL.
    pub url: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, ms since the epoch.
    pub mtime_ms: i64,
    /// The version string (ETag or `<mtime_ms>-<size>`).
    pub version: String,
    /// The ETag, when the UFS gave one (used for `If-Match`).
    pub e_tag: Option<String>,
}

impl ObjectVersion {
    /// Build from `object_store` metadata.
    pub fn from_meta(url: &str, meta: &ObjectMeta) -> Self {
        let mtime_ms = meta.last_modified.timestamp_millis();
        let version = match &meta.e_tag {
            Some(t) if !t.is_empty() => t.clone(),
            _ => format!("{mtime_ms}-{}", meta.size),
        };
        ObjectVersion {
            url: url.to_string(),
            size: meta.size,
            mtime_ms,
            version,
            e_tag: meta.e_tag.clone().filter(|t| !t.is_empty()),
        }
    }

    /// Rebuild from a file info (a listing entry). The version is taken as
    /// an ETag unless it has the `<mtime_ms>-<size>` form.
    pub fn from_info(info: &FileInfo) -> Self {
        let fallback = format!("{}-{}", info.mtime_ms, info.length);
        let e_tag = (!info.content_hash.is_empty() && info.content_hash != fallback)
            .then(|| info.content_hash.clone());
        ObjectVersion {
            url: info.ufs_path.clone(),
            size: info.length,
            mtime_ms: info.mtime_ms,
            version: if info.content_hash.is_empty() {
                fallback
            } else {
                info.content_hash.clone()
            },
            e_tag,
        }
    }

    /// The file info of this version (`in_cache_percent` left at 0).
    pub fn file_info(&self) -> FileInfo {
        FileInfo {
            kind: FileType::File,
            name: file_name(&self.url).to_string(),
            path: namespace_path(&self.url),
            ufs_path: self.url.clone(),
            mtime_ms: self.mtime_ms,
            length: self.size,
            human_size: human_size(self.size),
            content_hash: self.version.clone(),
            in_cache_percent: 0,
        }
    }
}

/// Alluxio's namespace path of a normalized URL: `/authority/key`
/// (`/key` for `file:`).
pub fn namespace_path(url: &str) -> String {
    let p = split_url(url);
    match (p.authority.is_empty(), p.key.is_empty()) {
        (true, _) => format!("/{}", p.key),
        (false, true) => format!("/{}", p.authority),
        (false, false) => format!("/{}/{}", p.authority, p.key),
    }
}

fn dir_info(url: &str) -> FileInfo {
    FileInfo {
        kind: FileType::Directory,
        name: file_name(url).to_string(),
        path: namespace_path(url),
        ufs_path: url.to_string(),
        mtime_ms: 0,
        length: 0,
        human_size: human_size(0),
        content_hash: String::new(),
        in_cache_percent: 0,
    }
}

/// One configured mount.
#[derive(Clone)]
struct Mount {
    url: String,
    options: BTreeMap<String, String>,
}

/// Access to the mounted UFS prefixes.
pub struct Ufs {
    mounts: Vec<Mount>,
    ufs_options: BTreeMap<String, String>,
    stores: Mutex<HashMap<(String, String), Store>>,
    metrics: Arc<Metrics>,
    outages: Outages,
}

/// One built store: the `ObjectStore` every request uses and, for stores
/// whose multipart uploads have ids the worker can keep (S3), the same
/// client as a [`MultipartStore`] (see [`crate::ufs_uploads`]).
#[derive(Clone)]
struct Store {
    store: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
}

/// Retries of one UFS request (after the first try) by `object_store`.
pub const UFS_RETRIES: usize = 3;
/// No retry of a UFS request starts later than this after its first try.
pub const UFS_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn ufs_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: UFS_RETRIES,
        retry_timeout: UFS_RETRY_TIMEOUT,
        ..Default::default()
    }
}

/// The outage key of `url`'s store: `scheme://authority`.
fn store_of(url: &str) -> String {
    let p = split_url(url);
    format!("{}://{}", p.scheme, p.authority)
}

impl std::fmt::Debug for Ufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ufs")
            .field("mounts", &self.mounts())
            .finish()
    }
}

/// The URL schemes a mount (and so a UFS path) may have.
pub const SUPPORTED_SCHEMES: [&str; 6] = ["file", "s3", "gs", "az", "http", "https"];

impl Ufs {
    /// Check the mounts of `config` (normalized, supported scheme).
    pub fn new(config: &WorkerConfig, metrics: Arc<Metrics>) -> Result<Self> {
        let mut mounts = Vec::new();
        for m in &config.mounts {
            let url = alluxiofs_core::path::normalize_mount(&m.url)
                .map_err(|e| WorkerError::Config(format!("mount {:?}: {e}", m.url)))?;
            let scheme = split_url(&url).scheme;
            if !SUPPORTED_SCHEMES.contains(&scheme) {
                return Err(WorkerError::Config(format!(
                    "mount {:?}: unsupported scheme {scheme:?} (supported: {})",
                    m.url,
                    SUPPORTED_SCHEMES.join(", ")
                )));
            }
            mounts.push(Mount {
                url,
                options: m.options.clone(),
            });
        }
        let ufs = Ufs {
            mounts,
            ufs_options: config.ufs_options.clone(),
            stores: Mutex::new(HashMap::new()),
            metrics,
            outages: Outages::default(),
        };
        // Build every mount's client now (no network): bad options fail at
        // start, not on the first request.
        for m in &ufs.mounts {
            ufs.locate(&m.url)?;
        }
        Ok(ufs)
    }

    /// The normalized mount URLs.
    pub fn mounts(&self) -> Vec<String> {
        self.mounts.iter().map(|m| m.url.clone()).collect()
    }

    /// Normalize `raw` and check that it lies under a mount. Nothing else
    /// may touch the UFS or the disk for a URL that did not pass here.
    pub fn confine(&self, raw: &str) -> Result<String> {
        let url = normalize_url(raw)?;
        if self.mounts.iter().any(|m| is_under(&url, &m.url)) {
            Ok(url)
        } else {
            Err(WorkerError::Forbidden {
                path: raw.to_string(),
                reason: "outside the worker's mounts".into(),
            })
        }
    }

    /// The store serving `url` (built on first use) and the object path of
    /// `url` in it.
    pub(crate) fn locate(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let (s, path) = self.locate_store(url)?;
        Ok((s.store, path))
    }

    /// [`Self::locate`], plus the store as a [`MultipartStore`] when it is
    /// one whose upload ids the worker keeps (S3; `None` otherwise).
    #[allow(clippy::type_complexity)]
    pub(crate) fn locate_multipart(
        &self,
        url: &str,
    ) -> Result<(Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>, Path)> {
        let (s, path) = self.locate_store(url)?;
        Ok((s.store, s.multipart, path))
    }

    fn locate_store(&self, url: &str) -> Result<(Store, Path)> {
        let parts = split_url(url);
        let path =
            Path::parse(parts.key).map_err(|e| WorkerError::BadRequest(format!("{url}: {e}")))?;
        if parts.scheme == "file" {
            self.check_local(url, &path)?;
        }
        let key = (parts.scheme.to_string(), parts.authority.to_string());
        if let Err(e) = self.outages.admit(&store_of(url), url) {
            Metrics::add(&self.metrics.ufs_fail_fast, 1);
            return Err(e);
        }
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| WorkerError::Internal("store table lock poisoned".into()))?;
        if let Some(s) = stores.get(&key) {
            return Ok((s.clone(), path));
        }
        let store = self.build_store(parts.scheme, parts.authority)?;
        stores.insert(key, store.clone());
        Ok((store, path))
    }

    /// The checks of a `file:` URL that [`Self::confine`] cannot make from
    /// the text alone:
    ///
    /// - what exists of the path on disk must resolve inside a local mount:
    ///   a symbolic link in a mount may point within the mounts, never out
    ///   of them (nor dangle, as a write would then create its target);
    /// - the local store refuses names ending in `#<digits>` (the names of
    ///   its own upload temp files): they get a clear 400 here rather than
    ///   the store's error.
    ///
    /// A link swapped in between this check and the store's open is not
    /// caught: whoever can write the mount's directory on the worker's host
    /// is trusted (docs/security.md).
    fn check_local(&self, url: &str, path: &Path) -> Result<()> {
        if let Some(name) = path.filename() {
            if let Some((_, tail)) = name.split_once('#') {
                if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(WorkerError::BadRequest(format!(
                        "{url}: a file:// mount cannot hold names ending in '#<digits>' \
                         (the local store's own temporary files)"
                    )));
                }
            }
        }
        let local = std::path::PathBuf::from(format!("/{}", split_url(url).key));
        let resolved = resolve_existing(&local).map_err(|reason| WorkerError::Forbidden {
            path: url.to_string(),
            reason,
        })?;
        let inside = self.mounts.iter().any(|m| {
            let p = split_url(&m.url);
            if p.scheme != "file" {
                return false;
            }
            let root = std::path::PathBuf::from(format!("/{}", p.key));
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            resolved.starts_with(&root)
        });
        if inside {
            Ok(())
        } else {
            // Where the link leads is the host's business, not the client's.
            tracing::debug!(url, to = %resolved.display(), "symbolic link out of the mounts");
            Err(WorkerError::Forbidden {
                path: url.to_string(),
                reason: "a symbolic link leads outside the worker's mounts".into(),
            })
        }
    }

    /// Whether the child `url` of a listed local directory may be listed:
    /// anything but a symbolic link that [`Self::check_local`] refuses.
    fn listable_local(&self, url: &str) -> bool {
        let local = std::path::PathBuf::from(format!("/{}", split_url(url).key));
        let is_link = local
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        !is_link || Path::parse(split_url(url).key).is_ok_and(|p| self.check_local(url, &p).is_ok())
    }

    fn options_for(&self, scheme: &str, authority: &str) -> BTreeMap<String, String> {
        let mut opts = self.ufs_options.clone();
        for m in &self.mounts {
            let p = split_url(&m.url);
            if p.scheme == scheme && (p.authority == authority || p.authority.is_empty()) {
                opts.extend(m.options.clone());
            }
        }
        opts
    }

    fn build_store(&self, scheme: &str, authority: &str) -> Result<Store> {
        let opts = self.options_for(scheme, authority);
        let bad = |k: &str, e: &dyn std::fmt::Display| {
            WorkerError::Config(format!("{scheme}://{authority}: option {k:?}: {e}"))
        };
        fn built<T>(scheme: &str, authority: &str, r: object_store::Result<T>) -> Result<T> {
            r.map_err(|e| WorkerError::Config(format!("{scheme}://{authority}: {e}")))
        }
        let mut multipart: Option<Arc<dyn MultipartStore>> = None;
        let store: Arc<dyn ObjectStore> = match scheme {
            "file" => Arc::new(object_store::local::LocalFileSystem::new()),
            "s3" => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(authority)
                    .with_retry(ufs_retry());
                for (k, v) in &opts {
                    let key: AmazonS3ConfigKey = k.parse().map_err(|e| bad(k, &e))?;
                    b = b.with_config(key, v);
                }
                let s3 = Arc::new(built(scheme, authority, b.build())?);
                multipart = Some(s3.clone());
                s3
            }
            "gs" => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(authority)
                    .with_retry(ufs_retry());
                for (k, v) in &opts {
                    let key: GoogleConfigKey = k.parse().map_err(|e| bad(k, &e))?;
                    b = b.with_config(key, v);
                }
                // GCS's XML multipart API: an upload left by a killed worker
                // is aborted at its next start, as on S3.
                let gcs = Arc::new(built(scheme, authority, b.build())?);
                multipart = Some(gcs.clone());
                gcs
            }
            "az" => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(authority)
                    .with_retry(ufs_retry());
                for (k, v) in &opts {
                    let key: AzureConfigKey = k.parse().map_err(|e| bad(k, &e))?;
                    b = b.with_config(key, v);
                }
                // Blocks put and never committed: Azure drops them itself
                // after 7 days and has no abort call (object_store's abort is
                // a no-op), so the journal only records and forgets them.
                let azure = Arc::new(built(scheme, authority, b.build())?);
                multipart = Some(azure.clone());
                azure
            }
            "http" | "https" => {
                use object_store::http::HttpBuilder;
                use object_store::ClientConfigKey;
                let mut b = HttpBuilder::new()
                    .with_url(format!("{scheme}://{authority}"))
                    .with_retry(ufs_retry());
                for (k, v) in &opts {
                    let key: ClientConfigKey = k.parse().map_err(|e| bad(k, &e))?;
                    b = b.with_config(key, v);
                }
                Arc::new(built(scheme, authority, b.build())?)
            }
            other => {
                return Err(WorkerError::Forbidden {
                    path: format!("{other}://{authority}"),
                    reason: format!("unsupported scheme {other:?}"),
                })
            }
        };
        tracing::debug!(scheme, authority, "built UFS store");
        Ok(Store { store, multipart })
    }

    fn ufs_err(&self, op: UfsOp, url: &str, e: object_store::Error) -> WorkerError {
        if !matches!(e, object_store::Error::NotFound { .. }) && !caused_by_request(&e) {
            self.metrics.ufs_error(op);
        }
        if is_outage(&e) {
            let store = store_of(url);
            let reason = e.to_string();
            if self.outages.failed(&store, &reason) {
                Metrics::add(&self.metrics.ufs_outages, 1);
                tracing::warn!(
                    store,
                    "UFS unreachable: {reason}; failing its requests fast, trying again in {:?}",
                    crate::outage::FIRST_WAIT
                );
            }
            return WorkerError::UfsUnreachable {
                path: url.to_string(),
                reason,
            };
        }
        self.answered(url);
        match e {
            object_store::Error::NotFound { .. } => WorkerError::not_found(url),
            source => WorkerError::Ufs {
                path: url.to_string(),
                source,
            },
        }
    }

    /// The store of `url` answered (whatever it said): an outage of it is
    /// over.
    fn answered(&self, url: &str) {
        let store = store_of(url);
        if let Some(lasted) = self.outages.answered(&store) {
            tracing::warn!(
                store,
                "UFS reachable again after {:.1} s",
                lasted.as_secs_f64()
            );
        }
    }

    /// Whether the store of `url` is in an outage.
    pub fn in_outage(&self, url: &str) -> bool {
        self.outages.is_down(&store_of(url))
    }

    /// HEAD `url`: its current version, or `None` when no object is there.
    pub async fn head(&self, url: &str) -> Result<Option<ObjectVersion>> {
        if split_url(url).key.is_empty() {
            return Ok(None);
        }
        let (store, path) = self.locate(url)?;
        self.metrics.ufs_request(UfsOp::Head);
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match store.get_opts(&path, opts).await {
            Ok(r) => {
                self.answered(url);
                Ok(Some(ObjectVersion::from_meta(url, &r.meta)))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.answered(url);
                Ok(None)
            }
            Err(e) => Err(self.ufs_err(UfsOp::Head, url, e)),
        }
    }

    /// List the direct children of `url` (as a directory), and whether a
    /// directory marker (an empty object whose key is the directory's own
    /// key plus `/`, as the S3 console and Hadoop's S3A write) stands for it.
    /// Markers are never listed as children: a directory with only a marker
    /// is an empty directory.
    async fn list_children(&self, url: &str) -> Result<(Vec<FileInfo>, bool)> {
        let (store, path) = self.locate(url)?;
        self.metrics.ufs_request(UfsOp::List);
        let prefix = (!path.as_ref().is_empty()).then_some(&path);
        let listing = match store.list_with_delimiter(prefix).await {
            Ok(l) => {
                self.answered(url);
                l
            }
            Err(object_store::Error::NotFound { .. }) => return Ok((Vec::new(), false)),
            Err(e) => return Err(self.ufs_err(UfsOp::List, url, e)),
        };
        let base = url.strip_suffix('/').unwrap_or(url);
        let mut out = Vec::with_capacity(listing.objects.len() + listing.common_prefixes.len());
        for p in &listing.common_prefixes {
            if let Some(name) = p.filename() {
                out.push(dir_info(&format!("{base}/{name}")));
            }
        }
        let mut marker = false;
        for meta in &listing.objects {
            let key = meta.location.as_ref();
            if key.trim_end_matches('/') == path.as_ref() {
                marker = true; // the directory's own marker
                continue;
            }
            if key.ends_with('/') {
                continue; // a subdirectory's marker: the subdirectory is a common prefix
            }
            if let Some(name) = meta.location.filename() {
                let child = format!("{base}/{name}");
                if child == url {
                    continue;
                }
                out.push(ObjectVersion::from_meta(&child, meta).file_info());
            }
        }
        if split_url(url).scheme == "file" {
            // A symbolic link out of the mounts is not listed: reading it would be refused.
            out.retain(|child| self.listable_local(&child.ufs_path));
        }
        out.sort_by(|a, b| a.ufs_path.cmp(&b.ufs_path));
        Ok((out, marker))
    }

    /// Whether a local directory exists at a `file:` URL (empty directories
    /// have no objects under them, but still exist).
    async fn local_dir_exists(url: &str) -> bool {
        let parts = split_url(url);
        if parts.scheme != "file" {
            return false;
        }
        let p = std::path::PathBuf::from(format!("/{}", parts.key));
        tokio::fs::metadata(p)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false)
    }

    /// The info of `url`: a file (HEAD), else a directory when anything
    /// lies under it, else not found.
    pub async fn info(&self, url: &str) -> Result<(FileInfo, Option<ObjectVersion>)> {
        if let Some(v) = self.head(url).await? {
            return Ok((v.file_info(), Some(v)));
        }
        Ok((self.info_not_file(url).await?, None))
    }

    /// The info of `url` once the UFS said no object is there: a directory
    /// when anything lies under it (or a local directory), else not found.
    async fn info_not_file(&self, url: &str) -> Result<FileInfo> {
        if split_url(url).key.is_empty() || Self::local_dir_exists(url).await {
            return Ok(dir_info(url));
        }
        let (children, marker) = self.list_children(url).await?;
        if marker || !children.is_empty() {
            return Ok(dir_info(url));
        }
        Err(WorkerError::not_found(url))
    }

    /// The info of `url` as [`Self::info`] answers it, plus the bytes of
    /// `range` (page-aligned by the caller) when `url` is a file, from ONE
    /// unconditional ranged GET: the version and the size come from the
    /// GET's own answer (ETag, Last-Modified, the total of Content-Range),
    /// so they are exactly what a HEAD gives.
    ///
    /// The bytes start at `range.start` and are cut at the end of the
    /// object; they are empty when nothing of `range` lies inside it. No
    /// object there (404): the directory / not-found answer of
    /// [`Self::info`], with no HEAD. A GET that fails otherwise (a range
    /// starting at or past the end, as for an empty object: S3's 416, the
    /// local store's invalid range; or any other error) falls back to
    /// [`Self::info`], and its answer is returned without bytes: the reader
    /// then reads through the usual version-checked [`Self::read`]. The
    /// failed GET counts as a UFS error only when the HEAD shows the range
    /// was satisfiable.
    pub async fn info_and_read(
        &self,
        url: &str,
        range: Range<u64>,
    ) -> Result<(FileInfo, Option<ObjectVersion>, Bytes)> {
        if range.is_empty() || split_url(url).key.is_empty() {
            let (info, v) = self.info(url).await?;
            return Ok((info, v, Bytes::new()));
        }
        let (store, path) = self.locate(url)?;
        self.metrics.ufs_request(UfsOp::Get);
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        let err = match store.get_opts(&path, opts).await {
            Ok(result) => {
                self.answered(url);
                let v = ObjectVersion::from_meta(url, &result.meta);
                let got = result.range.clone();
                let data = match result.bytes().await {
                    Ok(d) => d,
                    Err(e) => {
                        // The version is known; the bytes are read again
                        // through the checked path.
                        let e = self.ufs_err(UfsOp::Get, url, e);
                        tracing::debug!(url, "cold GET body failed: {e}");
                        return Ok((v.file_info(), Some(v), Bytes::new()));
                    }
                };
                Metrics::add(&self.metrics.ufs_bytes, data.len() as u64);
                let expected = range.start..range.end.min(v.size);
                if got != expected || data.len() as u64 != got.end - got.start {
                    tracing::debug!(url, ?got, ?expected, len = data.len(), "odd cold GET");
                    return Ok((v.file_info(), Some(v), Bytes::new()));
                }
                return Ok((v.file_info(), Some(v), data));
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.answered(url);
                return Ok((self.info_not_file(url).await?, None, Bytes::new()));
            }
            // No HEAD after it: that would only wait out the same outage.
            Err(e) if is_outage(&e) => return Err(self.ufs_err(UfsOp::Get, url, e)),
            Err(e) => e,
        };
        let (info, v) = self.info(url).await?;
        match &v {
            Some(found) if found.size > range.start => {
                let e = self.ufs_err(UfsOp::Get, url, err);
                tracing::info!(url, "cold GET failed, reading after a HEAD: {e}");
            }
            _ => tracing::debug!(url, "cold GET past the end of the object: {err}"),
        }
        Ok((info, v, Bytes::new()))
    }

    /// The direct children of `url`; a file lists as itself.
    pub async fn list(&self, url: &str) -> Result<Vec<FileInfo>> {
        let (children, marker) = self.list_children(url).await?;
        if marker || !children.is_empty() {
            return Ok(children);
        }
        if let Some(v) = self.head(url).await? {
            return Ok(vec![v.file_info()]);
        }
        if split_url(url).key.is_empty() || Self::local_dir_exists(url).await {
            return Ok(Vec::new());
        }
        Err(WorkerError::not_found(url))
    }

    /// Read `range` of `expected.url`, guaranteeing the bytes belong to
    /// `expected.version` (else [`WorkerError::Changed`] or a UFS
    /// precondition error, see [`WorkerError::is_changed`]).
    pub async fn read(&self, expected: &ObjectVersion, range: Range<u64>) -> Result<Bytes> {
        let url = expected.url.as_str();
        let (store, path) = self.locate(url)?;
        self.metrics.ufs_request(UfsOp::Get);
        let opts = GetOptions {
            if_match: expected.e_tag.clone(),
            range: Some(GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        let result = store
            .get_opts(&path, opts)
            .await
            .map_err(|e| self.ufs_err(UfsOp::Get, url, e))?;
        self.answered(url);
        let found = ObjectVersion::from_meta(url, &result.meta);
        if found.version != expected.version {
            return Err(WorkerError::Changed {
                path: url.to_string(),
                expected: expected.version.clone(),
                found: found.version,
            });
        }
        let data = result
            .bytes()
            .await
            .map_err(|e| self.ufs_err(UfsOp::Get, url, e))?;
        Metrics::add(&self.metrics.ufs_bytes, data.len() as u64);
        if data.len() as u64 != range.end - range.start {
            return Err(WorkerError::Changed {
                path: url.to_string(),
                expected: format!("{} ({} bytes)", expected.version, expected.size),
                found: format!("a short read of {} bytes", data.len()),
            });
        }
        Ok(data)
    }
}

/// Changes to the UFS made by a client of it (the FUSE mount's `--write`),
/// each on a confined URL. Nothing here touches the cache: callers tell the
/// workers to forget what changed.
impl Ufs {
    /// Delete the object `url` (a file).
    pub async fn delete(&self, url: &str) -> Result<()> {
        let url = self.confine(url)?;
        let (store, path) = self.locate(&url)?;
        store.delete(&path).await.map_err(|e| change_err(&url, e))
    }

    /// Rename the object `from` to `to` (a copy then a delete where the UFS
    /// has no rename); with `no_replace`, fail with the UFS's
    /// `AlreadyExists` error when `to` exists.
    pub async fn rename(&self, from: &str, to: &str, no_replace: bool) -> Result<()> {
        let from = self.confine(from)?;
        let to = self.confine(to)?;
        let (store, src) = self.locate(&from)?;
        let (other, dst) = self.locate(&to)?;
        if !Arc::ptr_eq(&store, &other) {
            return Err(WorkerError::BadRequest(format!(
                "{from} -> {to}: a rename stays within one bucket"
            )));
        }
        let r = if no_replace {
            store.rename_if_not_exists(&src, &dst).await
        } else {
            store.rename(&src, &dst).await
        };
        r.map_err(|e| change_err(&from, e))
    }

    /// The local path of a confined `file://` URL; `None` for other schemes.
    pub fn local_path(&self, url: &str) -> Result<Option<std::path::PathBuf>> {
        let url = self.confine(url)?;
        let parts = split_url(&url);
        if parts.scheme != "file" {
            return Ok(None);
        }
        let path =
            Path::parse(parts.key).map_err(|e| WorkerError::BadRequest(format!("{url}: {e}")))?;
        self.check_local(&url, &path)?;
        Ok(Some(std::path::PathBuf::from(format!("/{}", parts.key))))
    }

    /// Start an upload of the object `url` (replacing it when it exists):
    /// one PUT for a small object, a multipart upload for a larger one.
    pub fn upload(&self, url: &str) -> Result<Upload> {
        let url = self.confine(url)?;
        let (store, path) = self.locate(&url)?;
        Ok(Upload {
            url,
            writer: object_store::buffered::BufWriter::new(store, path),
        })
    }
}

/// `path` with its symbolic links resolved, as far as it exists: the
/// canonical form of its longest existing ancestor, then the rest as given.
/// A dangling link is refused (its target is unknown until it is created).
fn resolve_existing(path: &std::path::Path) -> std::result::Result<std::path::PathBuf, String> {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        match std::fs::canonicalize(&cur) {
            Ok(mut real) => {
                real.extend(rest.iter().rev());
                return Ok(real);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if cur.symlink_metadata().is_ok() {
                    return Err("a dangling symbolic link is on the path".into());
                }
                match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
                    (Some(name), Some(parent)) => {
                        rest.push(name);
                        cur = parent.to_path_buf();
                    }
                    _ => return Ok(path.to_path_buf()),
                }
            }
            // Not a directory, too long, a loop: the store's own call gets
            // the same error and answers it.
            Err(_) => return Ok(path.to_path_buf()),
        }
    }
}

/// A UFS error of a change (not counted in the read path's UFS metrics).
fn change_err(url: &str, e: object_store::Error) -> WorkerError {
    match e {
        object_store::Error::NotFound { .. } => WorkerError::not_found(url),
        source => WorkerError::Ufs {
            path: url.to_string(),
            source,
        },
    }
}

/// An upload in progress ([`Ufs::upload`]): nothing is visible at the UFS
/// before [`Upload::finish`]; [`Upload::abort`] (or a drop) keeps nothing.
pub struct Upload {
    url: String,
    writer: object_store::buffered::BufWriter,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("url", &self.url).finish()
    }
}

impl Upload {
    /// Append `data`.
    pub async fn put(&mut self, data: Bytes) -> Result<()> {
        self.writer.put(data).await.map_err(|e| WorkerError::Ufs {
            path: self.url.clone(),
            source: e,
        })
    }

    /// Complete the upload: the object is at the UFS when this returns.
    pub async fn finish(mut self) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.writer
            .shutdown()
            .await
            .map_err(|e| match client_kind_of(&e) {
                Some(alluxiofs_core::error::ErrorKind::IsADirectory) => WorkerError::IsADirectory {
                    path: self.url.clone(),
                },
                Some(alluxiofs_core::error::ErrorKind::AlreadyExists) => {
                    WorkerError::Conflict(format!(
                        "{}: a file stands where a directory of the path would go",
                        self.url
                    ))
                }
                Some(_) => WorkerError::BadRequest(format!("{}: {e}", self.url)),
                None => WorkerError::Internal(format!("{}: completing the upload: {e}", self.url)),
            })
    }

    /// Give up: nothing of the upload is kept.
    pub async fn abort(mut self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(url = %self.url, "aborting the upload: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ufs_for(mounts: &[&str]) -> Ufs {
        let cfg = WorkerConfig::with_mounts(mounts.iter().copied());
        Ufs::new(&cfg, Arc::new(Metrics::new())).unwrap()
    }

    #[test]
    fn confinement() {
        let ufs = ufs_for(&["s3://bucket/data", "/srv/files"]);
        assert_eq!(
            ufs.confine("s3://bucket/data//x/").unwrap(),
            "s3://bucket/data/x"
        );
        assert_eq!(ufs.confine("/srv/files/a").unwrap(), "file:///srv/files/a");
        for bad in [
            "s3://bucket/database/x",
            "s3://other/data/x",
            "gs://bucket/data/x",
            "/srv/files/../etc/passwd",
            "/srv/files/%2e%2e/etc/passwd",
            "/srv/files/%252e%252e/etc/passwd",
            "/etc/passwd",
        ] {
            let err = ufs.confine(bad).unwrap_err();
            assert_eq!(err.status().as_u16(), 403, "{bad}: {err}");
        }
    }

    #[test]
    fn namespace_paths() {
        assert_eq!(namespace_path("s3://b/x/y"), "/b/x/y");
        assert_eq!(namespace_path("s3://b"), "/b");
        assert_eq!(namespace_path("file:///tmp/a"), "/tmp/a");
    }

    #[tokio::test]
    async fn symbolic_links_stay_inside_the_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(mnt.join("data")).unwrap();
        std::fs::write(mnt.join("data/a.bin"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        let link =
            |to: &std::path::Path, name: &str| std::os::unix::fs::symlink(to, mnt.join(name));
        link(&dir.path().join("secret"), "to-secret").unwrap();
        link(dir.path(), "to-parent").unwrap();
        link(&mnt.join("data/a.bin"), "to-inside").unwrap();
        link(&dir.path().join("gone"), "dangling").unwrap();
        let root = mnt.to_str().unwrap().to_string();
        let ufs = ufs_for(&[&root]);
        let base = ufs.confine(&root).unwrap();
        let v = ufs
            .head(&format!("{base}/to-inside"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ufs.read(&v, 0..6).await.unwrap(),
            Bytes::from_static(b"inside")
        );
        for bad in [
            "to-secret",
            "to-parent/secret",
            "to-parent/new.bin",
            "dangling",
        ] {
            let url = format!("{base}/{bad}");
            let err = ufs.head(&url).await.unwrap_err();
            assert_eq!(err.status().as_u16(), 403, "{bad}: {err}");
            assert!(ufs.upload(&url).is_err(), "{bad}");
            assert!(ufs.local_path(&url).is_err(), "{bad}");
            assert!(ufs.delete(&url).await.is_err(), "{bad}");
        }
        assert!(!dir.path().join("new.bin").exists());
        assert_eq!(
            std::fs::read(dir.path().join("secret")).unwrap(),
            b"outside"
        );
        let names: Vec<_> = ufs
            .list(&base)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["data", "to-inside"]);
        // The names of the local store's own temp files get a clear 400.
        let err = ufs.head(&format!("{base}/part#1")).await.unwrap_err();
        assert_eq!(err.status().as_u16(), 400, "{err}");
        assert!(ufs.head(&format!("{base}/part#x")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn local_head_list_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.bin"), b"hello world").unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let ufs = ufs_for(&[&root]);
        let base = ufs.confine(&root).unwrap();
        let file = format!("{base}/a.bin");
        let v = ufs.head(&file).await.unwrap().unwrap();
        assert_eq!(v.size, 11);
        assert!(!v.version.is_empty());
        assert_eq!(
            ufs.read(&v, 6..11).await.unwrap(),
            Bytes::from_static(b"world")
        );
        let (info, _) = ufs.info(&format!("{base}/sub")).await.unwrap();
        assert!(info.is_dir());
        let children = ufs.list(&base).await.unwrap();
        let names: Vec<_> = children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a.bin", "sub"]);
        assert_eq!(children[0].length, 11);
        assert!(ufs
            .head(&format!("{base}/missing"))
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            ufs.info(&format!("{base}/missing"))
                .await
                .unwrap_err()
                .status()
                .as_u16(),
            404
        );
        // A changed object is refused, never read as the old version.
        std::fs::write(dir.path().join("a.bin"), b"HELLO WORLD!").unwrap();
        let err = ufs.read(&v, 0..5).await.unwrap_err();
        assert!(err.is_changed(), "{err}");
    }

    #[tokio::test]
    async fn one_get_gives_the_version_a_head_gives_and_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x"), b"x").unwrap();
        std::fs::write(dir.path().join("a.bin"), b"hello world").unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let ufs = ufs_for(&[&root]);
        let m = ufs.metrics.clone();
        let base = ufs.confine(&root).unwrap();
        let file = format!("{base}/a.bin");

        // Wider than the file: cut at its end, the version of a HEAD.
        let (info, v, data) = ufs.info_and_read(&file, 0..4096).await.unwrap();
        let v = v.unwrap();
        assert_eq!(&data[..], b"hello world");
        assert_eq!((v.size, info.length), (11, 11));
        assert_eq!(
            (m.ufs_requests(UfsOp::Get), m.ufs_requests(UfsOp::Head)),
            (1, 0)
        );
        assert_eq!(ufs.head(&file).await.unwrap().unwrap(), v);
        assert_eq!(info, v.file_info());
        // Inside the file.
        let (_, _, data) = ufs.info_and_read(&file, 6..9).await.unwrap();
        assert_eq!(&data[..], b"wor");

        // Past the end (and an empty file): the HEAD answers, no bytes, no error.
        let before = (m.ufs_requests(UfsOp::Get), m.ufs_requests(UfsOp::Head));
        let (_, past, data) = ufs.info_and_read(&file, 4096..8192).await.unwrap();
        assert_eq!((past.unwrap().size, data.len()), (11, 0));
        let empty = format!("{base}/empty");
        let (info, ev, data) = ufs.info_and_read(&empty, 0..4096).await.unwrap();
        assert_eq!((info.length, ev.unwrap().size, data.len()), (0, 0, 0));
        assert_eq!(
            (m.ufs_requests(UfsOp::Get), m.ufs_requests(UfsOp::Head)),
            (before.0 + 2, before.1 + 2),
            "an unsatisfiable range falls back to a HEAD"
        );
        assert_eq!(m.ufs_errors(UfsOp::Get), 0, "not counted as errors");

        // A directory and a missing path answer as `info` does, with no HEAD.
        let heads = m.ufs_requests(UfsOp::Head);
        let (info, none, data) = ufs
            .info_and_read(&format!("{base}/sub"), 0..4096)
            .await
            .unwrap();
        assert!(info.is_dir() && none.is_none() && data.is_empty());
        let err = ufs
            .info_and_read(&format!("{base}/missing"), 0..4096)
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 404, "{err}");
        assert_eq!(m.ufs_requests(UfsOp::Head), heads);

        // Bytes read later under the version the cold GET gave.
        assert_eq!(&ufs.read(&v, 0..5).await.unwrap()[..], b"hello");
    }
}
