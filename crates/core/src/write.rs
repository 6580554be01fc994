//! Write-through from the client: a file's bytes are streamed to its owner
//! worker's `PUT /v1/write`, which uploads them to the UFS and keeps the
//! pages in its cache (`docs/http-api.md`).
//!
//! Design:
//! - **The owner.** The first preferred worker of the URL that is not
//!   marked down receives the write, so the pages land where reads of the
//!   path are routed.
//! - **Bounded memory.** The caller hands chunks to a [`Writer`]; they go
//!   through a channel of [`CHANNEL_CHUNKS`] chunks into the request body,
//!   so a slow upload makes the writer wait instead of buffering the file.
//! - **No retries.** A body cannot be sent twice without keeping it; a
//!   failure mid-stream is returned, and the worker aborts the upload
//!   (nothing is written, no pages stay). Callers that want a fallback
//!   check the worker first ([`Client::write_owner`]).
//! - **Other workers forget.** After a write the other workers are told to
//!   invalidate the path (metadata, parent listing, pages), as a write to
//!   the UFS directly would require.

use crate::client::{enc, parse_answer, Client, Req, WorkerAddr};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks queued between the writer and the request body.
pub const CHANNEL_CHUNKS: usize = 4;
/// Upper bound on one whole write request (the body streams under it).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a worker answers for a write.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct WriteResult {
    /// The normalized URL written.
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// The new object's version ("" when unknown).
    #[serde(default)]
    pub version: String,
    /// Whether the worker's cache holds the written pages.
    #[serde(default)]
    pub populated: bool,
    /// Pages stored in the cache.
    #[serde(default)]
    pub pages_cached: u64,
    /// Why the pages were not kept (empty when they were).
    #[serde(default)]
    pub reason: String,
    /// `host:port` of the worker that took the write.
    #[serde(default)]
    pub worker: String,
}

/// A write in progress; see the module documentation.
#[derive(Debug)]
pub struct Writer {
    client: Arc<Client>,
    url: String,
    worker: WorkerAddr,
    tx: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    task: Option<JoinHandle<Result<WriteResult>>>,
    sent: u64,
    runtime: tokio::runtime::Handle,
}

impl Client {
    /// The worker that takes writes of `url`: its first preferred worker
    /// that is not marked down and answers `GET /healthz`. A worker fault
    /// (or no worker at all) is an error the caller may fall back on.
    pub async fn write_owner(&self, url: &str) -> Result<WorkerAddr> {
        let prefs = self.workers_for(url);
        let mut last = None;
        for w in prefs {
            if self.is_skipped(&w) {
                continue;
            }
            match self.send_text(&w, Req::get("/healthz", url)).await {
                Ok(_) => return Ok(w),
                Err(e) if e.is_worker_fault() => {
                    self.note_failure(&w, &e);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoWorkers(format!("no worker takes writes of {url}"))))
    }

    /// Tell every worker but `except` to forget `url`. Unreachable workers
    /// are counted and skipped (they will refresh metadata on their own
    /// after the metadata TTL).
    pub async fn invalidate_others(&self, url: &str, except: &WorkerAddr) -> Result<()> {
        let q = format!("/v1/invalidate?path={}&recursive=false", enc(url));
        let others: Vec<WorkerAddr> = self
            .workers()
            .into_iter()
            .filter(|w| w.addr() != except.addr())
            .collect();
        let results = self.post_to_each(&others, &q, url).await;
        for r in results {
            match r {
                Err(e) if !e.is_worker_fault() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Writer {
    /// Start writing `url` through `worker`. Must be called inside the
    /// client's tokio runtime (the request runs as a task).
    pub fn start(client: Arc<Client>, url: &str, worker: WorkerAddr) -> Writer {
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_CHUNKS);
        let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let q = format!("/v1/write?path={}", enc(url));
        let c = client.clone();
        let w = worker.clone();
        let about = url.to_string();
        let task = tokio::spawn(async move {
            let req = Req::new(reqwest::Method::PUT, &q, &about)
                .timeout(WRITE_TIMEOUT)
                .body(reqwest::Body::wrap_stream(body));
            let text = c.send_text(&w, req).await?;
            let mut r: WriteResult = parse_answer(&w, &about, "write answer", &text)?;
            r.worker = w.addr();
            Ok(r)
        });
        Writer {
            client,
            url: url.to_string(),
            worker,
            tx: Some(tx),
            task: Some(task),
            sent: 0,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The worker taking this write (`host:port`).
    pub fn worker(&self) -> String {
        self.worker.addr()
    }

    /// Bytes handed to the writer so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Queue `data` (waits while [`CHANNEL_CHUNKS`] chunks are queued). When
    /// the request has already ended, returns its error.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let n = data.len() as u64;
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("write after close".into()))?;
        if tx.send(Ok(data)).await.is_err() {
            // The request ended early: its outcome says why.
            self.tx = None;
            return Err(match self.finish_request().await {
                Err(e) => e,
                Ok(_) => Error::WorkerUnavailable {
                    worker: self.worker.addr(),
                    reason: format!("{}: the write ended before its body", self.url),
                },
            });
        }
        self.sent += n;
        Ok(())
    }

    async fn finish_request(&mut self) -> Result<WriteResult> {
        let task = self
            .task
            .take()
            .ok_or_else(|| Error::InvalidArgument("write already finished".into()))?;
        match task.await {
            Ok(r) => r,
            Err(e) => Err(Error::WorkerUnavailable {
                worker: self.worker.addr(),
                reason: format!("write task: {e}"),
            }),
        }
    }

    /// End the body, wait for the worker's answer, then tell the other
    /// workers to forget the path.
    pub async fn finish(mut self) -> Result<WriteResult> {
        self.tx = None;
        let r = self.finish_request().await?;
        if r.size != self.sent {
            return Err(Error::WorkerUnavailable {
                worker: self.worker.addr(),
                reason: format!(
                    "{}: the worker wrote {} bytes, {} were sent",
                    self.url, r.size, self.sent
                ),
            });
        }
        self.client.mark_ok(&self.worker);
        self.client
            .invalidate_others(&self.url, &self.worker)
            .await?;
        Ok(r)
    }

    /// Give up: the request is cut, so the worker aborts the upload and
    /// nothing is written.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A writer dropped without `finish` must not complete the upload
        // with a truncated body: the body ends with an error (the request
        // is cut, never ended cleanly), then the request task is stopped.
        if let Some(tx) = self.tx.take() {
            let task = self.task.take();
            self.runtime.spawn(async move {
                let _ = tx.send(Err(std::io::Error::other("write abandoned"))).await;
                drop(tx);
                if let Some(t) = task {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    t.abort();
                }
            });
        } else if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
