//! Write-through: [`write_through`] uploads a file to the UFS and fills the
//! cache with its pages, so a checkpoint written by one process is read
//! back by another from the cache (`PUT /v1/write?path=<url>` is its HTTP
//! front, `routes/write.rs`).
//!
//! Design:
//! - **Confinement first.** The caller confines the URL to the mounts (403
//!   before a byte is read from the body or sent to the UFS); a URL naming
//!   a directory is refused here.
//! - **Bounded memory.** The body is streamed: a body of at most
//!   [`SINGLE_PUT_MAX`] bytes is sent with one PUT; a larger one becomes a
//!   multipart upload of [`PART_SIZE`] parts with at most [`PARTS_IN_FLIGHT`]
//!   parts uploading at once. The bytes are also appended to a spool file
//!   in the first cache directory, never held whole in memory; its bytes
//!   count against that directory's capacity (a body that does not fit is
//!   uploaded without filling the cache).
//! - **Never stale, never corrupt.** Pages are keyed by the object version
//!   the read path uses, which is only known once the upload is complete.
//!   So the pages are stored *after* the upload: the worker HEADs the
//!   object and keeps the pages only when the HEAD's ETag is the one the
//!   upload returned and the size is the number of bytes received (another
//!   writer may have replaced the object in between). Otherwise the path is
//!   only invalidated. A failed upload (body cut, UFS error) is aborted and
//!   leaves no pages. A multipart upload to S3 is recorded in the cache
//!   directory while open, so that one a killed worker left open is
//!   aborted when it starts again ([`crate::ufs_uploads`]).
//! - **Invalidation.** Metadata of the path and its parent listing are
//!   forgotten before the upload and again after it; pages of any other
//!   version of the path are dropped. The client tells the other workers
//!   to forget the path (`/v1/invalidate`).

use crate::cache::ReadThrough;
use crate::error::{Result, WorkerError};
use crate::meta::CachedInfo;
use crate::store::PageStore;
use crate::ufs::ObjectVersion;
use crate::ufs_uploads::{JournaledUpload, UfsUploads};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::multipart::MultipartStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Bodies up to this size are uploaded with a single PUT.
pub const SINGLE_PUT_MAX: usize = 8 << 20;
/// Part size of multipart uploads.
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploading at once (memory: about this many parts).
pub const PARTS_IN_FLIGHT: usize = 4;

/// What a write answers (JSON).
#[derive(Debug, serde::Serialize)]
pub struct WriteOutcome {
    /// The normalized URL written.
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// The version of the new object ("" when it could not be learned).
    pub version: String,
    /// Whether the cache now holds the written pages.
    pub populated: bool,
    /// Pages stored in the cache.
    pub pages_cached: u64,
    /// Why the pages were not kept (empty when they were).
    pub reason: String,
}

/// A spool file deleted when dropped. It lives in the first cache
/// directory and its bytes are reserved against that directory's capacity
/// as they come ([`PageStore::reserve_scratch`]), so that the directory's
/// files stay within it; when they do not fit (a body larger than the
/// cache) the spool is given up and the write goes on without filling the
/// cache. Each page stored from it gives its bytes back at once (the
/// spool's blocks are freed with a hole punched), so a page takes the place
/// of its spooled bytes rather than both taking the capacity.
struct Spool {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    store: Arc<PageStore>,
    /// Bytes of the capacity held for this file.
    reserved: u64,
    /// Bytes appended.
    written: u64,
    /// Why the spool was given up (the pages will not be kept).
    given_up: Option<String>,
}

impl Spool {
    fn create(dir: &std::path::Path, store: Arc<PageStore>) -> Result<Spool> {
        std::fs::create_dir_all(dir)
            .map_err(|e| WorkerError::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(uuid::Uuid::new_v4().to_string());
        let file = std::fs::File::create(&path)
            .map_err(|e| WorkerError::io(format!("cannot create {}", path.display()), e))?;
        Ok(Spool {
            path,
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            store,
            reserved: 0,
            written: 0,
            given_up: None,
        })
    }

    async fn append(&mut self, data: &[u8]) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let need = self.written + data.len() as u64;
        if need > self.reserved {
            // More than the directory holds: give up before evicting for it.
            let fits = self.store.scratch_capacity().is_none_or(|c| need <= c);
            // Reserving may evict and flush the index: off the async threads.
            let store = self.store.clone();
            let want = need - self.reserved;
            let got = if fits {
                tokio::task::spawn_blocking(move || store.reserve_scratch_step(want))
                    .await
                    .unwrap_or(0)
            } else {
                0
            };
            if got > 0 {
                self.reserved += got;
            } else {
                self.give_up("the body does not fit in the cache".into());
                return Ok(());
            }
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(data)
                .map_err(|e| WorkerError::io(format!("spool {}", self.path.display()), e))?;
        }
        self.written = need;
        Ok(())
    }

    /// Stop spooling: the file goes, its reservation is given back.
    fn give_up(&mut self, reason: String) {
        self.file = None;
        let _ = std::fs::remove_file(&self.path);
        self.store.release_scratch(self.reserved);
        self.reserved = 0;
        self.given_up = Some(reason);
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()
                .map_err(|e| WorkerError::io(format!("spool {}", self.path.display()), e))?;
        }
        Ok(())
    }

    /// Bytes `off..off + len` were read back: free their blocks and give
    /// their reservation back (kept when the file system cannot punch holes).
    fn consumed(&mut self, file: &std::fs::File, off: u64, len: u64) {
        use rustix::fs::{fallocate, FallocateFlags};
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if fallocate(file, flags, off, len).is_ok() {
            let back = len.min(self.reserved);
            self.store.release_scratch(back);
            self.reserved -= back;
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.path);
        self.store.release_scratch(self.reserved);
    }
}

/// The upload in progress: small bodies are gathered for one PUT, larger
/// ones stream through a multipart upload.
enum Upload {
    Gathering(Vec<Bytes>, usize),
    Multipart(WriteMultipart),
}

fn ufs_err(url: &str, source: object_store::Error) -> WorkerError {
    WorkerError::Ufs {
        path: url.to_string(),
        source,
    }
}

/// ETags as the HEAD and the PUT answers give them, compared without
/// quotes or a weak prefix.
fn same_etag(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    norm(a) == norm(b)
}

/// Upload `body` to the UFS as `url` (confined already) and fill the cache
/// with its pages: see the module documentation. An error means nothing of
/// the write was kept (no page of the path stays behind); a complete upload
/// whose pages could not be kept answers `populated: false` with the reason.
pub async fn write_through<S, E>(
    cache: &Arc<ReadThrough>,
    url: &str,
    body: S,
) -> Result<WriteOutcome>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    if url.ends_with('/')
        || alluxiofs_core::path::split_url(url).key.is_empty()
        || cache.ufs().mounts().iter().any(|m| m == url)
    {
        return Err(WorkerError::BadRequest(format!(
            "{url}: a write names a file, not a directory"
        )));
    }
    let (store, multipart, path) = cache.ufs().locate_multipart(url)?;
    let target = Target {
        store,
        multipart: multipart.map(|m| (m, cache.uploads().clone())),
        path,
    };
    cache.forget(url, None).await;
    let mut spool = Spool::create(cache.spool_dir(), cache.store().clone())?;
    let started = std::time::Instant::now();
    let (size, put) = match upload(&target, url, body, &mut spool).await {
        Ok(r) => r,
        Err(e) => {
            // Whatever happened, no page of this path may stay behind.
            cache.forget(url, None).await;
            return Err(e);
        }
    };
    let uploaded = started.elapsed();
    let outcome = match populate(cache, url, size, put.e_tag.as_deref(), spool).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(url, "written, but the cache was not filled: {e}");
            cache.forget(url, None).await;
            WriteOutcome {
                path: url.to_string(),
                size,
                version: String::new(),
                populated: false,
                pages_cached: 0,
                reason: e.to_string(),
            }
        }
    };
    tracing::info!(
        url,
        size,
        pages = outcome.pages_cached,
        populated = outcome.populated,
        upload_ms = uploaded.as_millis() as u64,
        populate_ms = (started.elapsed() - uploaded).as_millis() as u64,
        "write-through done"
    );
    Ok(outcome)
}

/// Where a write goes: the store, the object, and for a store whose upload
/// ids the worker keeps, that store and the journal of open uploads.
struct Target {
    store: Arc<dyn ObjectStore>,
    multipart: Option<(Arc<dyn MultipartStore>, Arc<UfsUploads>)>,
    path: object_store::path::Path,
}

impl Target {
    /// Begin a multipart upload. With a [`MultipartStore`] the upload is
    /// created with its own id and recorded before its first part is sent,
    /// so that a killed worker aborts it at its next start
    /// ([`crate::ufs_uploads`]); otherwise the store's `put_multipart`.
    async fn begin_multipart(
        &self,
        url: &str,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        match &self.multipart {
            Some((store, journal)) => Ok(Box::new(
                JournaledUpload::create(store.clone(), journal.clone(), url, &self.path).await?,
            )),
            None => self.store.put_multipart(&self.path).await,
        }
    }
}

/// Stream `body` to the UFS object of `target` and to the spool; returns
/// the bytes written and the upload's result.
async fn upload<S, E>(
    target: &Target,
    url: &str,
    body: S,
    spool: &mut Spool,
) -> Result<(u64, object_store::PutResult)>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(body);
    let mut up = Some(Upload::Gathering(Vec::new(), 0));
    let mut total: u64 = 0;
    let result: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| WorkerError::BadRequest(format!("{url}: body ended early: {e}")))?;
            if chunk.is_empty() {
                continue;
            }
            total += chunk.len() as u64;
            spool.append(&chunk).await?;
            let Some(current) = up.take() else {
                return Err(WorkerError::Internal("upload state lost".into()));
            };
            up = Some(match current {
                Upload::Gathering(mut parts, n) if n + chunk.len() <= SINGLE_PUT_MAX => {
                    let n = n + chunk.len();
                    parts.push(chunk);
                    Upload::Gathering(parts, n)
                }
                Upload::Gathering(parts, _) => {
                    let mp = target
                        .begin_multipart(url)
                        .await
                        .map_err(|e| ufs_err(url, e))?;
                    let mut w = WriteMultipart::new_with_chunk_size(mp, PART_SIZE);
                    for p in parts {
                        w.put(p);
                    }
                    w.put(chunk);
                    Upload::Multipart(w)
                }
                Upload::Multipart(mut w) => {
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        let _ = w.abort().await;
                        return Err(ufs_err(url, e));
                    }
                    w.put(chunk);
                    Upload::Multipart(w)
                }
            });
        }
        spool.finish()
    }
    .await;
    if let Err(e) = result {
        if let Some(Upload::Multipart(w)) = up {
            let _ = w.abort().await;
        }
        return Err(e);
    }
    let put = match up.ok_or_else(|| WorkerError::Internal("upload state lost".into()))? {
        Upload::Gathering(parts, _) => {
            let payload: PutPayload = parts.into_iter().collect();
            target.store.put(&target.path, payload).await
        }
        Upload::Multipart(w) => w.finish().await,
    }
    .map_err(|e| match e {
        // Some stores (Garage) refuse to complete a multipart upload once a
        // newer write of the same key has landed: the other writer won.
        object_store::Error::NotFound { .. } => WorkerError::Changed {
            path: url.to_string(),
            expected: "the version being written".into(),
            found: "a concurrent write of the same path that completed first; \
                    nothing of this write was kept"
                .into(),
        },
        e => ufs_err(url, e),
    })?;
    Ok((total, put))
}

/// After a complete upload of `size` bytes: learn the version the read
/// path will key on and store the spooled pages under it when it is the
/// uploaded object.
async fn populate(
    cache: &Arc<ReadThrough>,
    url: &str,
    size: u64,
    put_etag: Option<&str>,
    spool: Spool,
) -> Result<WriteOutcome> {
    let head = cache.ufs().head(url).await?;
    let mut outcome = WriteOutcome {
        path: url.to_string(),
        size,
        version: head.as_ref().map(|v| v.version.clone()).unwrap_or_default(),
        populated: false,
        pages_cached: 0,
        reason: String::new(),
    };
    let Some(v) = head else {
        outcome.reason = "the object is gone".into();
        cache.forget(url, None).await;
        return Ok(outcome);
    };
    let ours = match (put_etag, v.e_tag.as_deref()) {
        (Some(p), Some(h)) => same_etag(p, h),
        _ => false,
    };
    if !ours || v.size != size {
        outcome.reason = if put_etag.is_none() {
            "the UFS gave no ETag for the upload".into()
        } else {
            "the object was replaced by another writer".into()
        };
        cache.forget(url, None).await;
        return Ok(outcome);
    }
    if let Some(reason) = spool.given_up.clone() {
        outcome.reason = reason;
        cache.forget(url, None).await;
        return Ok(outcome);
    }
    let stored = store_pages(cache, &v, spool).await?;
    // Pages of any other version (a read that raced the write) go; the
    // metadata cache learns the new version.
    cache.forget(url, Some(v.version.clone())).await;
    cache.meta().put_info(
        url,
        CachedInfo {
            info: v.file_info(),
            version: Some(v.clone()),
        },
    );
    outcome.populated = true;
    outcome.pages_cached = stored;
    Ok(outcome)
}

/// Read the spool page by page into the store under version `v`.
async fn store_pages(cache: &ReadThrough, v: &ObjectVersion, mut spool: Spool) -> Result<u64> {
    let store = cache.store().clone();
    let v = v.clone();
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let page = store.page_size() as usize;
        // Writable too: the holes punched as pages are stored.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&spool.path)
            .map_err(|e| WorkerError::io(format!("cannot open {}", spool.path.display()), e))?;
        let pages = v.size.div_ceil(page as u64);
        let mut stored = 0;
        for i in 0..pages {
            let len = (v.size - i * page as u64).min(page as u64) as usize;
            let mut buf = vec![0u8; len];
            file.read_exact(&mut buf)
                .map_err(|e| WorkerError::io(format!("spool {}", spool.path.display()), e))?;
            // The page takes the place of its spooled bytes.
            spool.consumed(&file, i * page as u64, len as u64);
            let key = store.key(v.url.clone(), v.version.clone(), i);
            match store.put(&key, &Bytes::from(buf)) {
                Ok(true) => stored += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!("written page not cached: {e}"),
            }
        }
        drop(spool);
        Ok(stored)
    })
    .await
    .map_err(|e| WorkerError::Internal(format!("page store task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_without_quotes() {
        assert!(same_etag("\"abc-2\"", "abc-2"));
        assert!(same_etag("W/\"x\"", "\"x\""));
        assert!(!same_etag("\"a\"", "\"b\""));
    }
}
