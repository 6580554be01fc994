//! The UFS multipart uploads a write-through has open, kept in a journal
//! so that a worker killed mid-upload aborts them when it starts again.
//!
//! A large write-through ([`crate::write`]) is a multipart upload: until it
//! is completed or aborted, the UFS keeps its parts (and bills for them)
//! forever. A failing write aborts its upload; a killed worker cannot. So,
//! for stores that expose their upload ids (`object_store`'s
//! [`MultipartStore`]: S3, GCS through its XML multipart API, and Azure,
//! whose uncommitted blocks have no abort call and are dropped by the
//! service after 7 days), the worker
//!
//! 1. creates the upload, then records (URL, upload id, start time) in
//!    `<first cache dir>/ufs-uploads.json` (rewritten whole and atomically,
//!    fsynced, like `load-jobs.json`) **before** the first part is sent;
//! 2. removes the record when the upload is completed or aborted (an
//!    upload dropped unfinished, say by a cut request, is aborted in the
//!    background);
//! 3. at start, once serving, aborts every upload still recorded, with
//!    retries, logs each and counts it in
//!    `alluxiofs_ufs_uploads_aborted_total`. An upload that could not be
//!    aborted stays recorded for the next start.
//!
//! An unreadable journal is set aside (`.bad`) with a warning and the worker
//! starts with none: a leaked upload costs storage, never a worker that
//! will not start. A journal that cannot be written is logged; the upload
//! goes on (it is still aborted if it fails while the worker lives).
//!
//! The object is never partial: only a completed upload makes it exist,
//! and an upload found in the journal is aborted, never completed.

use crate::atomic::{write_atomically, Durability};
use crate::metrics::Metrics;
use crate::ufs::Ufs;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, PutPayload, PutResult};
use object_store::{MultipartUpload, UploadPart};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The journal's file name in the first cache directory.
pub const UPLOADS_FILE: &str = "ufs-uploads.json";

/// Tries of each abort at start (the first included).
const ABORT_TRIES: u32 = 4;
/// Wait before the second try; doubled before each later one.
const ABORT_FIRST_WAIT: Duration = Duration::from_millis(500);

/// One open upload as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenUpload {
    /// The normalized URL being written.
    pub url: String,
    /// The UFS's id of the upload.
    pub upload_id: String,
    /// When it was created, ms since the epoch.
    pub started_ms: i64,
}

/// The open uploads, keyed by upload id, rewritten whole at each change
/// (uploads are few: one per large write in flight).
#[derive(Debug)]
pub struct UfsUploads {
    path: PathBuf,
    open: Mutex<BTreeMap<String, OpenUpload>>,
}

impl UfsUploads {
    /// The journal at `path` (created on the first upload); the uploads it
    /// held stay recorded until [`Self::abort_leftovers`] aborts them.
    pub fn open(path: PathBuf) -> Self {
        let open = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, OpenUpload>>(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    let bad = path.with_extension("json.bad");
                    tracing::warn!(
                        "{}: unreadable ({e}); moved to {}, the UFS uploads it named are not \
                         aborted",
                        path.display(),
                        bad.display()
                    );
                    let _ = std::fs::rename(&path, &bad);
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(
                    "{}: {e}; the UFS uploads it names are not aborted",
                    path.display()
                );
                BTreeMap::new()
            }
        };
        UfsUploads {
            path,
            open: Mutex::new(open),
        }
    }

    /// The uploads recorded now.
    pub fn recorded(&self) -> Vec<OpenUpload> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, OpenUpload>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, open: &BTreeMap<String, OpenUpload>) -> std::io::Result<()> {
        if open.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(open).map_err(std::io::Error::other)?;
        write_atomically(&self.path, &[&bytes], Durability::Sync)
    }

    /// Record `upload` (durably, before its first part is sent).
    pub fn add(&self, upload: OpenUpload) -> std::io::Result<()> {
        let mut open = self.lock();
        open.insert(upload.upload_id.clone(), upload);
        self.save(&open)
    }

    /// Forget the upload `upload_id` (completed or aborted).
    pub fn remove(&self, upload_id: &str) {
        let mut open = self.lock();
        if open.remove(upload_id).is_none() {
            return;
        }
        if let Err(e) = self.save(&open) {
            tracing::warn!(
                "cannot update {}: {e} (the upload {upload_id} is aborted again at the next start)",
                self.path.display()
            );
        }
    }

    /// Abort, in the background, every upload recorded when the worker
    /// started (see the module note). Call once, after serving starts.
    pub fn abort_leftovers(self: &Arc<Self>, ufs: Arc<Ufs>, metrics: Arc<Metrics>) {
        let leftovers = self.recorded();
        if leftovers.is_empty() {
            return;
        }
        tracing::info!(
            uploads = leftovers.len(),
            "aborting the UFS multipart uploads an earlier run left unfinished"
        );
        let this = self.clone();
        tokio::spawn(async move {
            for up in leftovers {
                match abort_with_retries(&ufs, &up).await {
                    Ok(()) => {
                        this.remove(&up.upload_id);
                        Metrics::add(&metrics.ufs_uploads_aborted, 1);
                        tracing::info!(
                            url = %up.url,
                            upload_id = %up.upload_id,
                            started_ms = up.started_ms,
                            "aborted an unfinished UFS multipart upload of an earlier run"
                        );
                    }
                    Err(e) => tracing::warn!(
                        url = %up.url,
                        upload_id = %up.upload_id,
                        "cannot abort an unfinished UFS multipart upload (tried again at the \
                         next start): {e}"
                    ),
                }
            }
        });
    }
}

/// Abort `up` at its store, trying [`ABORT_TRIES`] times. An upload the
/// store no longer knows counts as aborted.
async fn abort_with_retries(ufs: &Ufs, up: &OpenUpload) -> Result<(), String> {
    let mut wait = ABORT_FIRST_WAIT;
    let mut last = String::new();
    for attempt in 1..=ABORT_TRIES {
        if attempt > 1 {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        let (store, path) = match ufs.locate_multipart(&up.url) {
            Ok((_, Some(store), path)) => (store, path),
            Ok((_, None, _)) => {
                return Err("its store has no multipart uploads (mount changed?)".into())
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        match store.abort_multipart(&path, &up.upload_id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// A multipart upload of a [`MultipartStore`] recorded in [`UfsUploads`]
/// while open: what `WriteMultipart` drives in place of the store's own
/// `put_multipart` upload (same part size and parts in flight), so that
/// the upload id is known.
pub struct JournaledUpload {
    store: Arc<dyn MultipartStore>,
    journal: Arc<UfsUploads>,
    path: Path,
    id: MultipartId,
    next_part: usize,
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
    /// Completed or aborted: nothing left to clean up.
    done: bool,
}

impl std::fmt::Debug for JournaledUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournaledUpload")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("next_part", &self.next_part)
            .finish_non_exhaustive()
    }
}

impl JournaledUpload {
    /// Create an upload of `path` (the object of `url`) and record it.
    pub async fn create(
        store: Arc<dyn MultipartStore>,
        journal: Arc<UfsUploads>,
        url: &str,
        path: &Path,
    ) -> object_store::Result<Self> {
        let id = store.create_multipart(path).await?;
        let record = OpenUpload {
            url: url.to_string(),
            upload_id: id.clone(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        let j = journal.clone();
        let recorded = tokio::task::spawn_blocking(move || j.add(record))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = recorded {
            tracing::warn!(
                url,
                upload_id = %id,
                "cannot record the UFS upload in {}: {e}; a crash before it ends leaves it open",
                journal.path.display()
            );
        }
        Ok(JournaledUpload {
            store,
            journal,
            path: path.clone(),
            id,
            next_part: 0,
            parts: Arc::new(Mutex::new(Vec::new())),
            done: false,
        })
    }

    fn finished(&mut self) {
        self.done = true;
        self.journal.remove(&self.id);
    }
}

#[async_trait::async_trait]
impl MultipartUpload for JournaledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let path = self.path.clone();
        let id = self.id.clone();
        let parts = self.parts.clone();
        Box::pin(async move {
            let part = store.put_part(&path, &id, idx, data).await?;
            let mut parts = parts.lock().unwrap_or_else(|p| p.into_inner());
            if parts.len() <= idx {
                parts.resize(idx + 1, None);
            }
            parts[idx] = Some(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> = {
            let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            (parts.len() == self.next_part)
                .then(|| parts.iter().cloned().collect())
                .flatten()
        };
        let Some(parts) = parts else {
            return Err(object_store::Error::Generic {
                store: "multipart",
                source: "a part of the upload is missing".into(),
            });
        };
        let put = self
            .store
            .complete_multipart(&self.path, &self.id, parts)
            .await?;
        self.finished();
        Ok(put)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        match self.store.abort_multipart(&self.path, &self.id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.finished();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for JournaledUpload {
    /// An upload dropped unfinished (a failed completion, a request whose
    /// task went away) is aborted in the background; if that fails too it
    /// stays recorded for the next start.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let journal = self.journal.clone();
        let path = self.path.clone();
        let id = self.id.clone();
        rt.spawn(async move {
            match store.abort_multipart(&path, &id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => journal.remove(&id),
                Err(e) => tracing::warn!(
                    upload_id = %id,
                    "cannot abort an unfinished UFS upload (aborted at the next start): {e}"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str) -> OpenUpload {
        OpenUpload {
            url: format!("s3://b/{id}.bin"),
            upload_id: id.to_string(),
            started_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(UPLOADS_FILE);
        let j = UfsUploads::open(path.clone());
        assert!(j.recorded().is_empty());
        j.add(up("a")).unwrap();
        j.add(up("b")).unwrap();
        let again = UfsUploads::open(path.clone());
        assert_eq!(again.recorded(), vec![up("a"), up("b")]);
        again.remove("a");
        again.remove("no-such-upload");
        assert_eq!(UfsUploads::open(path.clone()).recorded(), vec![up("b")]);
        again.remove("b");
        assert!(!path.exists(), "an empty journal leaves no file");
        assert!(UfsUploads::open(path.clone()).recorded().is_empty());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(names.is_empty(), "no temporary file left: {names:?}");
    }

    #[test]
    fn a_corrupt_journal_is_set_aside_and_the_worker_starts_with_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(UPLOADS_FILE);
        std::fs::write(&path, b"{\"x\": [not json").unwrap();
        let j = UfsUploads::open(path.clone());
        assert!(j.recorded().is_empty());
        assert!(!path.exists());
        assert!(path.with_extension("json.bad").exists(), "kept for a look");
        // It works as a fresh journal from there.
        j.add(up("c")).unwrap();
        assert_eq!(UfsUploads::open(path).recorded(), vec![up("c")]);
    }

    #[test]
    fn a_journal_that_cannot_be_read_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: not readable as a file.
        let path = dir.path().join(UPLOADS_FILE);
        std::fs::create_dir(&path).unwrap();
        assert!(UfsUploads::open(path).recorded().is_empty());
    }

    #[tokio::test]
    async fn an_upload_is_recorded_while_open_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(UfsUploads::open(dir.path().join(UPLOADS_FILE)));
        let store: Arc<dyn MultipartStore> = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("x/big.bin");
        for finish in [true, false] {
            let mut up = JournaledUpload::create(store.clone(), journal.clone(), "s3://b/x", &path)
                .await
                .unwrap();
            assert_eq!(journal.recorded().len(), 1);
            assert_eq!(
                UfsUploads::open(dir.path().join(UPLOADS_FILE)).recorded()[0].upload_id,
                up.id,
                "on disk before the first part"
            );
            up.put_part(PutPayload::from(vec![1u8; 10])).await.unwrap();
            if finish {
                up.complete().await.unwrap();
            } else {
                up.abort().await.unwrap();
            }
            assert!(journal.recorded().is_empty());
        }
        // Dropped unfinished: aborted (and forgotten) in the background.
        let up = JournaledUpload::create(store.clone(), journal.clone(), "s3://b/x", &path)
            .await
            .unwrap();
        drop(up);
        for _ in 0..100 {
            if journal.recorded().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(journal.recorded().is_empty());
    }
}
