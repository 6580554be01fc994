//! Preloading: warm the cache with a file or a whole prefix.
//!
//! [`load`] lists `url` (recursively by default, through the workers'
//! listing API), places every file on its owner workers (`replicas` of them,
//! the same placement reads use) and asks each worker to load its share with
//! `POST /v1/load/file`, page-aligned chunk by chunk. Each worker gets at
//! most `concurrency` requests at once; all workers work in parallel. An
//! optional bandwidth limit (a token bucket over the bytes requested) paces
//! the whole load. Workers skip pages they already hold, so a second load is
//! nearly free and an interrupted load resumes where it stopped.
//!
//! Progress is kept in [`LoadCounters`] (atomics the caller may poll from
//! another thread); the result is a [`LoadSummary`] with one line per failed
//! file. See `docs/load.md`.

use crate::client::{enc, parse_answer, Client, Req, WorkerAddr};
use crate::error::{Error, Result};
use crate::info::FileInfo;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest piece of a file asked of a worker in one request.
pub const DEFAULT_CHUNK: u64 = 64 << 20;
/// Directories listed at once while walking a prefix.
const LIST_PARALLEL: usize = 8;
/// Attempts per chunk when the worker is at fault (unreachable, 5xx).
const ATTEMPTS: u32 = 3;

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Walk sub-directories. Default true.
    pub recursive: bool,
    /// Workers that load each file (the first `replicas` of its preferred
    /// workers). Default 1.
    pub replicas: usize,
    /// Requests in flight per worker. Default 4.
    pub concurrency: usize,
    /// Bytes per second for the whole load; `None` = unlimited.
    pub bandwidth: Option<u64>,
    /// Largest range asked of a worker in one request (rounded to pages).
    /// Default [`DEFAULT_CHUNK`]; smaller under a bandwidth limit so that the
    /// pacing is smooth.
    pub chunk: u64,
    /// Time allowed for one chunk request. Default 10 minutes.
    pub request_timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            recursive: true,
            replicas: 1,
            concurrency: 4,
            bandwidth: None,
            chunk: DEFAULT_CHUNK,
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// Live progress of a load, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Files to load (known once listing ended).
    pub files_total: AtomicU64,
    /// Files finished (loaded, skipped or failed).
    pub files_done: AtomicU64,
    /// Files that failed.
    pub files_failed: AtomicU64,
    /// Bytes to load: file sizes times replicas.
    pub bytes_total: AtomicU64,
    /// Bytes finished: fetched from the UFS or found cached.
    pub bytes_done: AtomicU64,
    /// Bytes fetched from the UFS by the workers.
    pub bytes_loaded: AtomicU64,
    /// Bytes the workers already held.
    pub bytes_skipped: AtomicU64,
    /// Listing has ended and `*_total` are final.
    pub listed: AtomicBool,
    /// Set to stop: no new chunk is started.
    pub cancelled: AtomicBool,
}

/// A copy of [`LoadCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoadProgress {
    /// Files to load.
    pub files_total: u64,
    /// Files finished.
    pub files_done: u64,
    /// Files that failed.
    pub files_failed: u64,
    /// Bytes to load.
    pub bytes_total: u64,
    /// Bytes finished.
    pub bytes_done: u64,
    /// Bytes fetched from the UFS.
    pub bytes_loaded: u64,
    /// Bytes already cached.
    pub bytes_skipped: u64,
    /// Whether the totals are final.
    pub listed: bool,
}

impl LoadCounters {
    /// Set the counters to what `s` reports of an ended load (a load job
    /// taken up again after a restart of its worker).
    pub fn restore(&self, s: &LoadSummary) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.files_total, s.files_total);
        set(&self.files_done, s.files_total);
        set(&self.files_failed, s.files_failed);
        set(&self.bytes_total, s.bytes_total);
        set(&self.bytes_done, s.bytes_loaded + s.bytes_skipped);
        set(&self.bytes_loaded, s.bytes_loaded);
        set(&self.bytes_skipped, s.bytes_skipped);
        self.listed.store(true, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> LoadProgress {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoadProgress {
            files_total: g(&self.files_total),
            files_done: g(&self.files_done),
            files_failed: g(&self.files_failed),
            bytes_total: g(&self.bytes_total),
            bytes_done: g(&self.bytes_done),
            bytes_loaded: g(&self.bytes_loaded),
            bytes_skipped: g(&self.bytes_skipped),
            listed: self.listed.load(Ordering::Relaxed),
        }
    }

    /// Ask the load to stop (chunks in flight finish).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// One file that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFailure {
    /// The UFS URL.
    pub path: String,
    /// The first error seen for it.
    pub reason: String,
}

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Files listed.
    pub files_total: u64,
    /// Files of which at least one page was fetched from the UFS.
    pub files_loaded: u64,
    /// Files entirely cached already (nothing fetched).
    pub files_skipped: u64,
    /// Files that failed on at least one of their workers.
    pub files_failed: u64,
    /// Bytes to load (sizes times replicas).
    pub bytes_total: u64,
    /// Bytes fetched from the UFS.
    pub bytes_loaded: u64,
    /// Bytes found cached.
    pub bytes_skipped: u64,
    /// The failed files with their reasons.
    pub failures: Vec<LoadFailure>,
    /// Whether the load was stopped before the end.
    pub cancelled: bool,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The answer of a worker's `POST /v1/load/file`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLoadResult {
    /// The UFS URL loaded.
    #[serde(default)]
    pub path: String,
    /// Bytes of the requested range (inside the file).
    pub bytes_total: u64,
    /// Bytes fetched from the UFS.
    pub bytes_loaded: u64,
    /// Bytes already cached.
    pub bytes_skipped: u64,
    /// Pages fetched from the UFS.
    pub pages_loaded: u64,
    /// Pages already cached.
    pub pages_skipped: u64,
}

/// A token bucket over bytes: `take(n)` returns once `n` bytes fit in the
/// rate. Debt based: a take larger than the bucket waits for its share.
#[derive(Debug)]
pub struct Bandwidth {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Bandwidth {
    /// `rate` bytes per second, holding at most `burst` bytes of credit
    /// (and starting empty, so a load never beats `bytes / rate`).
    pub fn new(rate: u64, burst: u64) -> Self {
        Bandwidth {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            state: tokio::sync::Mutex::new((0.0, Instant::now())),
        }
    }

    /// Wait until `n` bytes may go.
    pub async fn take(&self, n: u64) {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
        s.1 = now;
        s.0 -= n as f64;
        if s.0 < 0.0 {
            // Holding the lock while waiting keeps takers in order.
            tokio::time::sleep(Duration::from_secs_f64(-s.0 / self.rate)).await;
            s.0 = 0.0;
            s.1 = Instant::now();
        }
    }

    /// Give back `n` bytes taken but not used (pages found cached).
    pub async fn refund(&self, n: u64) {
        let mut s = self.state.lock().await;
        s.0 = (s.0 + n as f64).min(self.burst);
    }
}

/// Every file under `url` (the file itself when it is one), with sizes.
/// [`Error::NotFound`] when nothing is there.
pub async fn list_files(client: &Client, url: &str, recursive: bool) -> Result<Vec<FileInfo>> {
    let top = client.list(url).await?;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for e in top {
        if e.is_dir() {
            dirs.push(e.ufs_path);
        } else {
            files.push(e);
        }
    }
    while recursive && !dirs.is_empty() {
        let batch = std::mem::take(&mut dirs);
        let lists: Vec<Result<Vec<FileInfo>>> = stream::iter(batch)
            .map(|d| async move { client.list(&d).await })
            .buffered(LIST_PARALLEL)
            .collect()
            .await;
        for l in lists {
            for e in l? {
                if e.is_dir() {
                    dirs.push(e.ufs_path);
                } else {
                    files.push(e);
                }
            }
        }
    }
    files.sort_by(|a, b| a.ufs_path.cmp(&b.ufs_path));
    files.dedup_by(|a, b| a.ufs_path == b.ufs_path);
    Ok(files)
}

/// Load everything under `url` (see the module documentation). Errors of
/// the listing (not found, permission) are returned; errors of single files
/// are in [`LoadSummary::failures`].
pub async fn load(
    client: &Client,
    url: &str,
    opts: &LoadOptions,
    counters: Arc<LoadCounters>,
) -> Result<LoadSummary> {
    let started = Instant::now();
    let files = list_files(client, url, opts.recursive).await?;
    let files: Vec<(String, u64)> = files.into_iter().map(|f| (f.ufs_path, f.length)).collect();
    let mut summary = load_files(client, &files, opts, counters).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Per-file totals while a load runs.
#[derive(Default, Clone)]
struct FileAcc {
    loaded: u64,
    skipped: u64,
    pending: u64,
    error: Option<String>,
}

/// One request: a page-aligned range of a file, for one worker.
struct Chunk {
    file: usize,
    offset: u64,
    length: u64,
}

/// Load `files` (`(url, size)`), already listed. See [`load`].
pub async fn load_files(
    client: &Client,
    files: &[(String, u64)],
    opts: &LoadOptions,
    counters: Arc<LoadCounters>,
) -> Result<LoadSummary> {
    let started = Instant::now();
    let workers = client.workers();
    if workers.is_empty() {
        return Err(Error::NoWorkers("nothing to load into".into()));
    }
    let page = client.config().page_size.max(1);
    let mut chunk = opts.chunk.max(page);
    if let Some(bw) = opts.bandwidth {
        // Four requests per second of budget at most, so pacing is smooth.
        chunk = chunk.min((bw / 4).max(page));
    }
    let chunk = chunk.div_ceil(page) * page;
    let replicas = opts.replicas.max(1).min(workers.len());
    let ids: Vec<_> = workers.iter().map(|w| w.identity).collect();
    let placer = client.placement().build(&ids);
    let by_id: HashMap<_, WorkerAddr> = workers.iter().map(|w| (w.identity, w.clone())).collect();

    // Group the chunks by worker.
    let mut queues: HashMap<String, (WorkerAddr, Vec<Chunk>)> = HashMap::new();
    let mut accs = vec![FileAcc::default(); files.len()];
    let mut bytes_total = 0u64;
    for (i, (url, size)) in files.iter().enumerate() {
        let owners: Vec<WorkerAddr> = placer
            .pick(url, replicas)
            .iter()
            .filter_map(|id| by_id.get(id).cloned())
            .collect();
        for w in owners {
            let q = queues
                .entry(w.addr())
                .or_insert_with(|| (w.clone(), Vec::new()));
            // An empty file is still one request: it caches its metadata.
            let mut off = 0;
            loop {
                let len = chunk.min(size - off);
                q.1.push(Chunk {
                    file: i,
                    offset: off,
                    length: len,
                });
                accs[i].pending += 1;
                off += len;
                if off >= *size {
                    break;
                }
            }
            bytes_total += size;
        }
    }
    counters
        .files_total
        .store(files.len() as u64, Ordering::Relaxed);
    counters.bytes_total.store(bytes_total, Ordering::Relaxed);
    counters.listed.store(true, Ordering::Relaxed);
    let ctx = Ctx {
        client,
        timeout: opts.request_timeout,
        bucket: opts.bandwidth.map(|bw| Bandwidth::new(bw, chunk.max(bw))),
        accs: Mutex::new(accs),
        counters: counters.clone(),
        files,
    };
    let concurrency = opts.concurrency.max(1);
    let per_worker = queues.into_values().map(|(w, chunks)| {
        let ctx = &ctx;
        async move {
            stream::iter(chunks)
                .for_each_concurrent(concurrency, |c| {
                    let w = &w;
                    async move { ctx.run_chunk(w, c).await }
                })
                .await
        }
    });
    futures::future::join_all(per_worker).await;

    let accs = ctx.accs.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut s = LoadSummary {
        files_total: files.len() as u64,
        bytes_total,
        cancelled: counters.is_cancelled(),
        ..LoadSummary::default()
    };
    for (i, a) in accs.iter().enumerate() {
        s.bytes_loaded += a.loaded;
        s.bytes_skipped += a.skipped;
        if let Some(e) = &a.error {
            s.files_failed += 1;
            s.failures.push(LoadFailure {
                path: files[i].0.clone(),
                reason: e.clone(),
            });
        } else if a.pending > 0 {
            // Not finished: the load was stopped.
        } else if a.loaded > 0 {
            s.files_loaded += 1;
        } else {
            s.files_skipped += 1;
        }
    }
    s.seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

struct Ctx<'a> {
    client: &'a Client,
    /// Time allowed for one chunk request.
    timeout: Duration,
    bucket: Option<Bandwidth>,
    accs: Mutex<Vec<FileAcc>>,
    counters: Arc<LoadCounters>,
    files: &'a [(String, u64)],
}

impl Ctx<'_> {
    async fn run_chunk(&self, w: &WorkerAddr, c: Chunk) {
        if self.counters.is_cancelled() {
            return;
        }
        let url = &self.files[c.file].0;
        if let Some(b) = &self.bucket {
            b.take(c.length).await;
            if self.counters.is_cancelled() {
                return;
            }
        }
        let mut attempt = 0;
        let result = loop {
            let r = load_chunk(self.client, w, url, c.offset, c.length, self.timeout).await;
            match r {
                Err(e) if e.is_worker_fault() && attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                r => break r,
            }
        };
        let (loaded, skipped, error) = match result {
            Ok(r) => (r.bytes_loaded, r.bytes_skipped, None),
            Err(e) => (0, 0, Some(e.to_string())),
        };
        if let Some(b) = &self.bucket {
            b.refund(skipped).await;
        }
        let done_bytes = if error.is_some() {
            c.length
        } else {
            loaded + skipped
        };
        self.counters
            .bytes_loaded
            .fetch_add(loaded, Ordering::Relaxed);
        self.counters
            .bytes_skipped
            .fetch_add(skipped, Ordering::Relaxed);
        self.counters
            .bytes_done
            .fetch_add(done_bytes, Ordering::Relaxed);
        let mut accs = self.accs.lock().unwrap_or_else(|p| p.into_inner());
        let a = &mut accs[c.file];
        let failed_before = a.error.is_some();
        a.loaded += loaded;
        a.skipped += skipped;
        a.pending -= 1;
        if let Some(e) = error {
            a.error.get_or_insert(format!("{}: {e}", w.addr()));
        }
        if a.error.is_some() && !failed_before {
            self.counters.files_failed.fetch_add(1, Ordering::Relaxed);
        }
        if a.pending == 0 {
            self.counters.files_done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Ask `w` to load `[offset, offset + length)` of `url` into its cache
/// (`POST /v1/load/file`), allowing `timeout` for the answer. Sent through
/// the client's request path; not counted in its [`crate::Stats`].
pub async fn load_chunk(
    client: &Client,
    w: &WorkerAddr,
    url: &str,
    offset: u64,
    length: u64,
    timeout: Duration,
) -> Result<FileLoadResult> {
    let q = format!(
        "/v1/load/file?path={}&offset={offset}&length={length}",
        enc(url)
    );
    let req = Req::post(&q, url).timeout(timeout).uncounted();
    let body = client.send_text(w, req).await?;
    parse_answer(w, url, "load answer", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bandwidth_paces_takes() {
        let b = Bandwidth::new(1_000_000, 100_000);
        let t = Instant::now();
        for _ in 0..5 {
            b.take(100_000).await;
        }
        // 500 kB at 1 MB/s from an empty bucket: about 0.5 s.
        let s = t.elapsed().as_secs_f64();
        assert!((0.45..1.5).contains(&s), "{s}");
    }

    #[tokio::test]
    async fn refund_gives_credit_back() {
        let b = Bandwidth::new(1_000_000, 1_000_000);
        b.take(200_000).await;
        b.refund(1_000_000).await;
        let t = Instant::now();
        b.take(500_000).await;
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
