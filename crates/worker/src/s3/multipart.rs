//! Multipart uploads, kept on disk until they complete.
//!
//! An upload is a directory `<first cache dir>/.s3-uploads/<upload id>/`
//! holding `target` (the URL being written) and one file per part
//! (`part-00001`, written to a temporary name and renamed, so a part file
//! is always whole) with its MD5 beside it (`part-00001.md5`). Nothing is
//! in memory, so an upload survives a worker restart, and parts may come
//! in any order, concurrently, and be sent again.
//!
//! Completing reads the named parts in order into one stream through the
//! write-through path (the owner's, like a PUT), then removes the
//! directory; aborting removes it. The upload id is a random UUID and is
//! checked to be one, so it never names a path outside the uploads
//! directory. Uploads older than [`STALE_AFTER`] are removed when the
//! endpoint starts; part files left half-written by a crash are removed
//! then too.
//!
//! Parts count against the first cache directory's capacity, as the
//! write-through spool does ([`PageStore::reserve_scratch`]): a part's
//! bytes are reserved as they arrive (pages are evicted for them), given
//! back when the upload completes or is aborted, and reserved again for the
//! uploads found at start. A part that cannot fit is refused
//! (`EntityTooLarge`) rather than letting the directory grow past its
//! capacity.
//!
//! Each upload also keeps `key` (its bucket and key, for
//! ListMultipartUploads); ListParts reads the part files' sizes, times and
//! MD5s.

use crate::error::{Result, WorkerError};
use crate::store::PageStore;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// Most parts of one upload (S3's limit).
pub const MAX_PARTS: i32 = 10_000;

/// Uploads not completed within this long are removed at start.
pub const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The multipart uploads of one worker.
#[derive(Clone)]
pub struct Uploads {
    dir: PathBuf,
    /// The store whose first directory holds [`Self::dir`]; parts reserve
    /// their bytes from its capacity (`None`: no accounting, in unit tests).
    store: Option<Arc<PageStore>>,
    /// Held while a part file replaces another, so that the replaced
    /// part's bytes are given back once.
    replacing: Arc<tokio::sync::Mutex<()>>,
    /// Bytes of the parts found at start that could not be reserved (more
    /// than the capacity): given back to no one, so that releasing them
    /// never lowers the count of the pages' bytes.
    unbacked: Arc<AtomicU64>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One stored part, as ListParts answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// Its number.
    pub number: i32,
    /// Bytes.
    pub size: u64,
    /// Hex MD5 (its ETag).
    pub md5: String,
    /// When it was stored.
    pub modified: SystemTime,
}

/// One upload in progress, as ListMultipartUploads answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// The upload id.
    pub id: String,
    /// The bucket it was created in.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// When it was created.
    pub initiated: SystemTime,
}

/// Bytes of the whole part files in an upload's directory.
fn parts_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| is_part_name(&e.file_name().to_string_lossy()))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// `part-NNNNN` (not its `.md5`, not a temporary file).
fn is_part_name(name: &str) -> bool {
    name.strip_prefix("part-")
        .is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One part as the complete request names it.
#[derive(Debug, Clone)]
pub struct NamedPart {
    /// 1 to [`MAX_PARTS`].
    pub number: i32,
    /// The ETag the client got for it, if it says.
    pub etag: Option<String>,
}

fn io(ctx: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkerError {
    let ctx = ctx.into();
    move |e| WorkerError::io(ctx, e)
}

fn no_such_upload(id: &str) -> WorkerError {
    WorkerError::NotFound {
        path: id.to_string(),
        hint: ": no such multipart upload (completed, aborted or never created)".into(),
    }
}

impl Uploads {
    /// Uploads under `dir`, their parts' bytes reserved from `store`'s
    /// capacity; removes those older than [`STALE_AFTER`] and the
    /// half-written part files of a crash.
    pub fn open(dir: PathBuf, store: Option<Arc<PageStore>>) -> Uploads {
        let mut kept = 0u64;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_AFTER);
                if old {
                    tracing::info!(upload = ?e.file_name(), "removing a stale multipart upload");
                    let _ = std::fs::remove_dir_all(e.path());
                    continue;
                }
                if let Ok(files) = std::fs::read_dir(e.path()) {
                    for f in files.flatten() {
                        if f.file_name().to_string_lossy().ends_with(".tmp") {
                            let _ = std::fs::remove_file(f.path());
                        }
                    }
                }
                kept += parts_size(&e.path());
            }
        }
        let mut unbacked = 0;
        if let Some(store) = &store {
            if kept > 0 && !store.reserve_scratch(kept) {
                unbacked = kept;
                tracing::warn!(
                    bytes = kept,
                    "the parts of the multipart uploads in progress exceed the cache \
                     directory's capacity; new parts are refused until they complete or are aborted"
                );
            }
        }
        Uploads {
            dir,
            store,
            replacing: Arc::default(),
            unbacked: Arc::new(AtomicU64::new(unbacked)),
        }
    }

    /// Reserve at least `want` bytes of the cache directory for a part
    /// (evicting pages for them, off the async threads); returns the bytes
    /// reserved, 0 when they do not fit.
    async fn reserve(&self, want: u64) -> u64 {
        let Some(store) = self.store.clone() else {
            return want;
        };
        tokio::task::spawn_blocking(move || store.reserve_scratch_step(want))
            .await
            .unwrap_or(0)
    }

    fn release(&self, bytes: u64) {
        // What was never reserved goes first.
        let mut unbacked = 0;
        let _ = self
            .unbacked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                unbacked = left.min(bytes);
                Some(left - unbacked)
            });
        let bytes = bytes - unbacked;
        if let Some(store) = &self.store {
            if bytes > 0 {
                store.release_scratch(bytes);
            }
        }
    }

    fn upload_dir(&self, id: &str) -> Result<PathBuf> {
        let ok = uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id);
        if !ok {
            return Err(no_such_upload(id));
        }
        Ok(self.dir.join(id))
    }

    /// Start an upload of `url` (`key` in `bucket`); returns its id.
    pub async fn create(&self, url: &str, bucket: &str, key: &str) -> Result<String> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let dir = self.dir.join(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io(format!("cannot create {}", dir.display())))?;
        // The key first: an upload is listed once `target` exists. The
        // creation time to the nanosecond orders uploads of one key (a file's
        // mtime can be the same for two made a moment apart).
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        tokio::fs::write(dir.join("key"), format!("{created}\n{bucket}\n{key}"))
            .await
            .map_err(io(format!("cannot write {}", dir.display())))?;
        tokio::fs::write(dir.join("target"), url)
            .await
            .map_err(io(format!("cannot write {}", dir.display())))?;
        Ok(id)
    }

    /// The uploads in progress in `bucket` whose keys start with `prefix`,
    /// ordered by key, then by time of creation (as S3 lists them).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<UploadInfo> {
        let dir = self.dir.clone();
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        let mut found = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return found;
            };
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let Ok(initiated) =
                    std::fs::metadata(e.path().join("target")).and_then(|m| m.modified())
                else {
                    continue;
                };
                let Ok(text) = std::fs::read_to_string(e.path().join("key")) else {
                    continue;
                };
                let Some((nanos, rest)) = text.split_once('\n') else {
                    continue;
                };
                let Some((b, k)) = rest.split_once('\n') else {
                    continue;
                };
                let initiated = nanos.parse::<u64>().map_or(initiated, |n| {
                    SystemTime::UNIX_EPOCH + Duration::from_nanos(n)
                });
                if b == bucket && k.starts_with(&prefix) {
                    found.push(UploadInfo {
                        id,
                        bucket: b.to_string(),
                        key: k.to_string(),
                        initiated,
                    });
                }
            }
            found
        })
        .await
        .unwrap_or_default();
        found.sort_by(|a, b| (&a.key, a.initiated, &a.id).cmp(&(&b.key, b.initiated, &b.id)));
        found
    }

    /// The parts of upload `id` stored so far, by number.
    pub async fn parts(&self, id: &str) -> Result<Vec<StoredPart>> {
        let dir = self.upload_dir(id)?;
        if !tokio::fs::try_exists(dir.join("target"))
            .await
            .unwrap_or(false)
        {
            return Err(no_such_upload(id));
        }
        let parts = tokio::task::spawn_blocking(move || {
            let mut parts = Vec::new();
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_part_name(&name) {
                    continue;
                }
                let Ok(number) = name["part-".len()..].parse::<i32>() else {
                    continue;
                };
                let (Ok(meta), Ok(md5)) = (
                    e.metadata(),
                    std::fs::read_to_string(e.path().with_extension("md5")),
                ) else {
                    continue;
                };
                parts.push(StoredPart {
                    number,
                    size: meta.len(),
                    md5,
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
            parts
        })
        .await
        .unwrap_or_default();
        let mut parts = parts;
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    /// The URL upload `id` writes.
    pub async fn target(&self, id: &str) -> Result<String> {
        let dir = self.upload_dir(id)?;
        tokio::fs::read_to_string(dir.join("target"))
            .await
            .map_err(|_| no_such_upload(id))
    }

    fn part_path(dir: &Path, number: i32) -> PathBuf {
        dir.join(format!("part-{number:05}"))
    }

    /// Store part `number` of upload `id` from `body`; returns its MD5 (hex).
    pub async fn put_part<S, E>(&self, id: &str, number: i32, body: S) -> Result<String>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(WorkerError::BadRequest(format!(
                "part number {number} is outside 1 to {MAX_PARTS}"
            )));
        }
        let dir = self.upload_dir(id)?;
        if !tokio::fs::try_exists(dir.join("target"))
            .await
            .unwrap_or(false)
        {
            return Err(no_such_upload(id));
        }
        let part = Self::part_path(&dir, number);
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        let mut reserved = 0u64;
        let result = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(io(format!("cannot create {}", tmp.display())))?;
            let mut md5 = Md5::new();
            let mut written = 0u64;
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let chunk = chunk
                    .map_err(|e| WorkerError::BadRequest(format!("the part's body failed: {e}")))?;
                written += chunk.len() as u64;
                if written > reserved {
                    let got = self.reserve(written - reserved).await;
                    if got == 0 {
                        return Err(WorkerError::BadRequest(format!(
                            "EntityTooLarge: part {number} does not fit in the cache directory \
                             beside the other uploads' parts and the pinned pages"
                        )));
                    }
                    reserved += got;
                }
                md5.update(&chunk);
                f.write_all(&chunk)
                    .await
                    .map_err(io(format!("cannot write {}", tmp.display())))?;
            }
            f.flush().await.map_err(io("flush part"))?;
            // Hold exactly the part's bytes from here on.
            self.release(reserved - written);
            reserved = written;
            let hex: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
            let _one_at_a_time = self.replacing.lock().await;
            let replaced = tokio::fs::metadata(&part).await.map(|m| m.len()).ok();
            tokio::fs::write(part.with_extension("md5"), &hex)
                .await
                .map_err(io("write part checksum"))?;
            tokio::fs::rename(&tmp, &part)
                .await
                .map_err(io(format!("cannot rename to {}", part.display())))?;
            // The part sent again takes the place of the one before.
            self.release(replaced.unwrap_or(0));
            Ok(hex)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
            self.release(reserved);
        }
        result
    }

    /// The part files of `parts` in order, checked: ascending numbers,
    /// each stored, each ETag (when given) its MD5. Returns the paths and
    /// the multipart ETag (`md5(md5s)-N`, as S3 computes it).
    pub async fn check_parts(
        &self,
        id: &str,
        parts: &[NamedPart],
    ) -> Result<(Vec<PathBuf>, String)> {
        let dir = self.upload_dir(id)?;
        if parts.is_empty() {
            return Err(WorkerError::BadRequest(
                "a multipart upload is completed with at least one part".into(),
            ));
        }
        let mut paths = Vec::with_capacity(parts.len());
        let mut all = Md5::new();
        let mut last = 0;
        for p in parts {
            if p.number <= last {
                return Err(WorkerError::Conflict(format!(
                    "InvalidPartOrder: part {} after part {last}",
                    p.number
                )));
            }
            last = p.number;
            let path = Self::part_path(&dir, p.number);
            let md5 = tokio::fs::read_to_string(path.with_extension("md5"))
                .await
                .map_err(|_| {
                    WorkerError::BadRequest(format!(
                        "InvalidPart: part {} was not uploaded",
                        p.number
                    ))
                })?;
            if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                return Err(WorkerError::BadRequest(format!(
                    "InvalidPart: part {} was not uploaded",
                    p.number
                )));
            }
            if let Some(tag) = &p.etag {
                if tag.trim_matches('"') != md5 {
                    return Err(WorkerError::BadRequest(format!(
                        "InvalidPart: part {} has ETag {md5}, not {tag}",
                        p.number
                    )));
                }
            }
            let raw: Vec<u8> = (0..md5.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(md5.get(i..i + 2)?, 16).ok())
                .collect();
            all.update(&raw);
            paths.push(path);
        }
        let hex: String = all.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((paths, format!("{hex}-{}", parts.len())))
    }

    /// Remove upload `id` (after completing or aborting it) and give its
    /// parts' bytes back.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let dir = self.upload_dir(id)?;
        let _one_at_a_time = self.replacing.lock().await;
        let size = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || parts_size(&dir))
                .await
                .unwrap_or(0)
        };
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {
                self.release(size);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(no_such_upload(id)),
            Err(e) => Err(WorkerError::io(
                format!("cannot remove {}", dir.display()),
                e,
            )),
        }
    }
}

/// The bytes of `paths`, one after another, read in 1 MiB chunks.
pub fn concat(paths: Vec<PathBuf>) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::iter(paths)
        .then(|p| async move { tokio::fs::File::open(p).await })
        .map(|f| match f {
            Ok(f) => file_chunks(f).left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        })
        .flatten()
}

/// A file as a stream of chunks.
fn file_chunks(f: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(f), |state| async move {
        let mut f = state?;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_hold_capacity_and_what_was_never_reserved_is_never_given_back() {
        use crate::store::testing::{open, PS};
        let tmp = tempfile::tempdir().unwrap();
        let cap = 16 * PS;
        let store = Arc::new(open(&[(tmp.path(), cap)], 0));
        let ups = tmp.path().join(".s3-uploads");
        let body = |n: usize| futures::stream::iter([Ok::<_, String>(Bytes::from(vec![7u8; n]))]);
        // Within capacity: a part's bytes are reserved while the upload lives,
        // again when the uploads are found at a start, and given back once.
        let u = Uploads::open(ups.clone(), Some(store.clone()));
        let id = u.create("file:///x/y", "b", "x/y").await.unwrap();
        u.put_part(&id, 1, body(4 * PS as usize)).await.unwrap();
        assert_eq!(store.used_per_dir()[0], 4 * PS);
        u.put_part(&id, 1, body(2 * PS as usize)).await.unwrap(); // sent again, smaller
        assert_eq!(store.used_per_dir()[0], 2 * PS);
        drop(u);
        store.release_scratch(2 * PS); // as a restart forgets it
        let u = Uploads::open(ups.clone(), Some(store.clone()));
        assert_eq!(store.used_per_dir()[0], 2 * PS, "reserved again at start");
        assert!(
            u.put_part(&id, 2, body(cap as usize)).await.is_err(),
            "a part that cannot fit is refused"
        );
        assert_eq!(
            store.used_per_dir()[0],
            2 * PS,
            "the refused part holds nothing"
        );
        u.remove(&id).await.unwrap();
        assert_eq!(store.used_per_dir()[0], 0);

        // Parts found at start beyond the capacity cannot be reserved; removing
        // them must not lower the count of what else is reserved.
        let plain = Uploads::open(ups.clone(), None);
        let big = plain.create("file:///x/z", "b", "x/z").await.unwrap();
        plain
            .put_part(&big, 1, body(2 * cap as usize))
            .await
            .unwrap();
        let u = Uploads::open(ups, Some(store.clone()));
        assert_eq!(store.used_per_dir()[0], 0, "nothing could be reserved");
        assert!(store.reserve_scratch(3 * PS));
        u.remove(&big).await.unwrap();
        assert_eq!(store.used_per_dir()[0], 3 * PS);
    }

    #[tokio::test]
    async fn parts_in_order_make_the_object_and_bad_ids_name_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let u = Uploads::open(tmp.path().join("up"), None);
        let id = u.create("file:///x/y", "b", "x/y").await.unwrap();
        assert_eq!(u.target(&id).await.unwrap(), "file:///x/y");
        let body = |s: &'static str| futures::stream::iter([Ok::<_, String>(Bytes::from(s))]);
        let e2 = u.put_part(&id, 2, body("world")).await.unwrap();
        let e1 = u.put_part(&id, 1, body("hello ")).await.unwrap();
        assert_eq!(e1.len(), 32, "hex MD5: {e1}");
        let parts = [
            NamedPart {
                number: 1,
                etag: Some(format!("\"{e1}\"")),
            },
            NamedPart {
                number: 2,
                etag: Some(e2.clone()),
            },
        ];
        let (paths, etag) = u.check_parts(&id, &parts).await.unwrap();
        assert!(etag.ends_with("-2"));
        let bytes: Vec<Bytes> = concat(paths).map(|r| r.unwrap()).collect().await;
        assert_eq!(bytes.concat(), b"hello world");
        let wrong = [NamedPart {
            number: 1,
            etag: Some(e2),
        }];
        assert!(u.check_parts(&id, &wrong).await.is_err());
        let order = [
            NamedPart {
                number: 2,
                etag: None,
            },
            NamedPart {
                number: 1,
                etag: None,
            },
        ];
        assert!(u.check_parts(&id, &order).await.is_err());
        assert!(u.put_part(&id, 0, body("x")).await.is_err());
        u.remove(&id).await.unwrap();
        assert!(u.target(&id).await.is_err());
        for bad in ["../../etc", "x", "", "00000000-0000-0000-0000-00000000000G"] {
            assert!(u.target(bad).await.is_err(), "{bad}");
            assert!(u.remove(bad).await.is_err(), "{bad}");
        }
    }
}
