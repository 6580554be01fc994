//! Parallel range reads from cache workers over HTTP.
//!
//! A [`Client`] holds the worker list, the consistent hash ring over it and
//! one pooled HTTP client (keep-alive, `TCP_NODELAY`). Every read is planned
//! in pages ([`crate::pages`]) and fetched from the workers that own the
//! path:
//!
//! - **Placement.** The placement ([`crate::placement`]: Alluxio's ring by
//!   default) gives each path an ordered list of `replicas` preferred
//!   workers. A request goes to the first live
//!   one and moves to the next on a worker fault.
//! - **Parallelism.** A read larger than `max_chunk` is cut into page-aligned
//!   chunks fetched concurrently (at most `max_parallel` requests in flight
//!   per call). Each response body is streamed straight into its slice of the
//!   caller's buffer: no intermediate copy of the chunk.
//! - **Retries.** Only worker faults (connect error, timeout, broken body,
//!   5xx, 408, 429) are retried: up to `retries` times per worker with
//!   jittered exponential backoff, never past `retry_deadline` from the start
//!   of the call. A retry after a broken body asks only for the bytes still
//!   missing. Answers that are the request's fault (400, 403, 404, 412) are
//!   returned as errors at once.
//! - **Fail open.** Bytes that no preferred worker could serve are reported
//!   as *holes* (absolute file offsets) for the caller to read from the UFS;
//!   every such fallback is counted in [`Stats`] and the first failure of a
//!   worker is logged. A worker that failed is skipped for a while (1 s,
//!   doubling up to 30 s; cleared by a success) so that a dead worker does
//!   not cost a connect timeout on every read; the next preferred worker
//!   serves its paths meanwhile. A request that finds every preferred
//!   worker skipped reports the fault that marked the last of them down (so
//!   a hung worker keeps giving [`Error::Timeout`], not a vaguer error). A
//!   background probe asks the failed worker `GET /healthz` (after 0.5 s, doubling up to 30 s) and clears the mark
//!   as soon as it answers, so a restarted worker is used again promptly.
//!   The probe ends when the worker answers, leaves the membership or the
//!   client is dropped.
//! - **Coalescing.** [`Client::read_ranges`] merges nearby ranges of a file
//!   ([`crate::pages::coalesce`]), fetches the merged ranges with the same
//!   machinery and slices each input back out of them without copying.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

pub use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::info::FileInfo;
use crate::pages::{coalesce, split_aligned};
use crate::path::path_id;
use crate::placement::{Placement, Placer};
pub use crate::protocol::{DEFAULT_WORKER_PORT, FILE_SIZE_HEADER, VERSION_HEADER};
use crate::ring::WorkerIdentity;

/// The [`Stats::fallbacks`] key of ranges read while no worker is known.
pub const NO_WORKER: &str = "(no worker)";

/// First skip interval of a worker after a failure; doubles per failure.
const SKIP_BASE: Duration = Duration::from_secs(1);
/// Longest skip interval of a failed worker.
const SKIP_MAX: Duration = Duration::from_secs(30);
/// First wait before a failed worker is probed; doubles per failed probe.
const PROBE_BASE: Duration = Duration::from_millis(500);
/// Longest wait between two probes of a failed worker.
const PROBE_MAX: Duration = Duration::from_secs(30);
/// Timeout of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Query values are encoded fully: everything but RFC 3986 unreserved bytes.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(v: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(v, QUERY_VALUE)
}

/// How a walk over the preferred workers ended without success.
enum Failover {
    /// The request itself is at fault (404, 403, 412, 400): no other worker
    /// would answer differently.
    Request(Error),
    /// Every preferred worker failed or was skipped; the last fault, if any.
    Exhausted(Option<Error>),
}

/// A cache worker: where to reach it and its identity on the hash ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerAddr {
    /// Host name or IP address.
    pub host: String,
    /// HTTP port of the worker API.
    pub port: u16,
    /// The worker's identity on the hash ring.
    pub identity: WorkerIdentity,
}

impl WorkerAddr {
    /// A worker of a static host list.
    ///
    /// On Alluxio's default port 28080 the identity is
    /// [`WorkerIdentity::from_hostname`]`(host)`, exactly what Alluxio derives
    /// for a static worker list, so both agree on placement. On any other
    /// port it is `from_hostname("host:port")`, so that several workers on
    /// one host (tests, a single-machine cluster) get distinct identities.
    pub fn from_host_port(host: &str, port: u16) -> Self {
        let identity = if port == DEFAULT_WORKER_PORT {
            WorkerIdentity::from_hostname(host)
        } else {
            WorkerIdentity::from_hostname(&format!("{host}:{port}"))
        };
        WorkerAddr {
            host: host.to_string(),
            port,
            identity,
        }
    }

    /// `host:port` (an IPv6 address in brackets); the key of [`Stats`] maps.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// What [`Client::read_into`] did.
#[derive(Clone, Debug, Default)]
pub struct ReadOutcome {
    /// Length of the prefix of the buffer that the read covers: bytes served
    /// by workers plus the holes inside it. Shorter than the buffer only at
    /// the end of the file.
    pub filled: usize,
    /// Ranges (absolute file offsets, inside the covered prefix, sorted,
    /// disjoint) that no worker could serve: their bytes in the buffer are
    /// not written and must be read from the UFS. When the end of the file
    /// is unknown (no worker answered at all), the covered prefix is the
    /// whole buffer and the UFS read of the last hole may come back short.
    pub holes: Vec<Range<u64>>,
    /// Why the first hole was left to the UFS: the last worker fault for its
    /// bytes ([`Error::Timeout`] when the request timed out, else
    /// [`Error::WorkerUnavailable`] or [`Error::NoWorkers`]). `None` when
    /// there are no holes. A caller that cannot read the UFS raises it.
    pub fault: Option<Error>,
}

/// One result of [`Client::read_ranges`].
#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    /// The bytes of the range (shorter at the end of the file); bytes inside
    /// `holes` are zero. As for [`ReadOutcome`], when no worker answered for
    /// the file its end is unknown: `data` spans the whole range and the UFS
    /// read of the last hole may come back short (then cut `data` there).
    pub data: Bytes,
    /// Ranges (absolute file offsets, inside the range) to read from the UFS.
    pub holes: Vec<Range<u64>>,
    /// Why the holes were left to the UFS, as [`ReadOutcome::fault`].
    pub fault: Option<Error>,
}

/// Counters of a client since it was built.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Bytes received from workers into read buffers.
    pub bytes_read: u64,
    /// HTTP requests sent to workers.
    pub worker_requests: u64,
    /// Retries after worker faults.
    pub retries: u64,
    /// Per worker `host:port` (the path's primary): ranges given up and left
    /// to the UFS ([`NO_WORKER`] while the worker list is empty).
    pub fallbacks: BTreeMap<String, u64>,
    /// Per worker `host:port`: failed requests (worker faults).
    pub errors: BTreeMap<String, u64>,
}

struct Membership {
    workers: Vec<WorkerAddr>,
    by_id: HashMap<WorkerIdentity, WorkerAddr>,
    placement: Placement,
    placer: Placer,
}

impl Membership {
    fn new(workers: Vec<WorkerAddr>, placement: Placement) -> Self {
        let ids: Vec<WorkerIdentity> = workers.iter().map(|w| w.identity).collect();
        let by_id = workers.iter().map(|w| (w.identity, w.clone())).collect();
        Membership {
            placer: placement.build(&ids),
            placement,
            by_id,
            workers,
        }
    }
}

#[derive(Default)]
struct Health {
    failures: u32,
    skip_until: Option<Instant>,
    warned: bool,
    /// A background health probe of this worker is running.
    probing: bool,
    /// The fault that marked the worker down (reported for skipped requests).
    fault: Option<Error>,
}

type HealthMap = Mutex<HashMap<String, Health>>;

/// The client core: worker list, hash ring, pooled HTTP client, counters.
/// `Send + Sync`; share it in an `Arc`.
pub struct Client {
    config: ClientConfig,
    http: reqwest::Client,
    members: RwLock<Membership>,
    health: Arc<HealthMap>,
    stats: Mutex<Stats>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .field("workers", &self.workers())
            .finish()
    }
}

/// One page-aligned piece of a read: which file, which bytes, where to.
struct ChunkJob<'a> {
    url: &'a str,
    version: Option<&'a str>,
    prefs: &'a [WorkerAddr],
    range: Range<u64>,
    buf: &'a mut [u8],
}

/// What happened to one chunk.
#[derive(Debug, Clone)]
struct ChunkOutcome {
    range: Range<u64>,
    /// Bytes written from `range.start` on, contiguous.
    written: u64,
    /// The body ended short without error: the file ends at start+written.
    eof: bool,
    /// The part no worker served.
    hole: Option<Range<u64>>,
    /// The object's size, when a worker said it.
    file_size: Option<u64>,
    /// Why `hole` was left (the last worker fault for it).
    fault: Option<Error>,
}

/// One successful range request.
struct RangeOnce {
    eof: bool,
    file_size: Option<u64>,
}

impl Client {
    /// Build a client for `workers`. [`Error::NoWorkers`] if the list is
    /// empty; [`Error::InvalidArgument`] for a zero page size.
    pub fn new(config: ClientConfig, workers: Vec<WorkerAddr>) -> Result<Self> {
        if workers.is_empty() {
            return Err(Error::NoWorkers("the worker list is empty".into()));
        }
        if config.page_size == 0 {
            return Err(Error::InvalidArgument("page_size must be positive".into()));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(config.max_parallel.max(32))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot build HTTP client: {e}")))?;
        let placement = config.effective_placement();
        if let Placement::Alluxio { vnodes: 0 } = placement {
            return Err(Error::InvalidArgument("vnodes must be at least 1".into()));
        }
        let members = RwLock::new(Membership::new(workers, placement));
        Ok(Client {
            config,
            http,
            members,
            health: Arc::new(Mutex::new(HashMap::new())),
            stats: Mutex::new(Stats::default()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current workers.
    pub fn workers(&self) -> Vec<WorkerAddr> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .workers
            .clone()
    }

    /// Replace the worker list and rebuild the ring. An empty list is
    /// allowed (every read becomes a hole, metadata calls fail with
    /// [`Error::NoWorkers`]) so that membership can follow a cluster that is
    /// momentarily empty.
    pub fn set_workers(&self, workers: Vec<WorkerAddr>) {
        self.forget_health_of_others(&workers);
        let mut guard = self.members.write().unwrap_or_else(|e| e.into_inner());
        let m = Membership::new(workers, guard.placement);
        *guard = m;
    }

    /// Drop the failure marks of workers not in `workers` (their probes
    /// stop); a worker that comes back starts with a clean slate.
    fn forget_health_of_others(&self, workers: &[WorkerAddr]) {
        let keep: std::collections::HashSet<String> = workers.iter().map(|w| w.addr()).collect();
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|addr, _| keep.contains(addr));
    }

    /// Whether `worker` failed and has not answered since (neither a
    /// request nor its health probe). Reads skip it during its skip
    /// interval and retry it after.
    pub fn is_marked_down(&self, worker: &WorkerAddr) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&worker.addr())
            .is_some_and(|h| h.failures > 0)
    }

    /// The placement in use.
    pub fn placement(&self) -> Placement {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .placement
    }

    /// Switch to another placement (the one a cluster publishes) and
    /// rebuild the lookup structure over the current workers.
    pub fn set_placement(&self, placement: Placement) {
        let mut guard = self.members.write().unwrap_or_else(|e| e.into_inner());
        if guard.placement != placement {
            let workers = std::mem::take(&mut guard.workers);
            *guard = Membership::new(workers, placement);
        }
    }

    /// Replace the workers and the placement at once (one rebuild, and no
    /// reader sees the new workers under the old placement).
    pub fn set_membership(&self, workers: Vec<WorkerAddr>, placement: Placement) {
        self.forget_health_of_others(&workers);
        let m = Membership::new(workers, placement);
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = m;
    }

    /// The ordered preferred workers of `url` (normalized):
    /// `min(replicas, number of workers)` of them, primary first.
    pub fn workers_for(&self, url: &str) -> Vec<WorkerAddr> {
        let m = self.members.read().unwrap_or_else(|e| e.into_inner());
        let n = self.config.replicas.max(1).min(m.workers.len());
        m.placer
            .pick(url, n)
            .iter()
            .filter_map(|id| m.by_id.get(id).cloned())
            .collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    // ---- metadata -------------------------------------------------------

    /// File info of `url` (normalized) from its preferred workers.
    /// [`Error::NotFound`] when there is nothing there; a worker fault of
    /// every preferred worker gives [`Error::WorkerUnavailable`] (the caller
    /// asks the UFS instead).
    pub async fn info(&self, url: &str) -> Result<FileInfo> {
        let q = format!("/v1/info?path={}", enc(url));
        let (body, worker) = self.metadata_get(url, &q).await?;
        let mut infos: Vec<FileInfo> = parse_json(&body, url, &worker)?;
        if infos.is_empty() {
            return Err(Error::NotFound {
                path: url.to_string(),
            });
        }
        Ok(infos.swap_remove(0))
    }

    /// The children of directory `url` (normalized); a file lists itself.
    /// Errors as [`Client::info`].
    pub async fn list(&self, url: &str) -> Result<Vec<FileInfo>> {
        let q = format!("/v1/files?path={}", enc(url));
        let (body, worker) = self.metadata_get(url, &q).await?;
        parse_json(&body, url, &worker)
    }

    /// Tell every worker to forget `url` (and everything under it with
    /// `recursive`): metadata and pages. Workers are asked concurrently. An
    /// error that is not a worker fault is returned; unreachable workers
    /// are counted and logged, and their fault is returned only when no
    /// worker could be told.
    pub async fn invalidate(&self, url: &str, recursive: bool) -> Result<()> {
        let workers = self.workers();
        if workers.is_empty() {
            return Err(Error::NoWorkers(format!("cannot invalidate {url}")));
        }
        let q = format!("/v1/invalidate?path={}&recursive={recursive}", enc(url));
        let results = futures::future::join_all(workers.iter().map(|w| async {
            let res = self.send_text(w, reqwest::Method::POST, &q, url).await;
            if let Err(e) = &res {
                if e.is_worker_fault() {
                    self.note_failure(w, e);
                }
            }
            res
        }))
        .await;
        let mut fault = None;
        let mut any_ok = false;
        for r in results {
            match r {
                Ok(_) => any_ok = true,
                Err(e) if e.is_worker_fault() => fault = Some(e),
                Err(e) => return Err(e),
            }
        }
        match fault {
            Some(e) if !any_ok => Err(e),
            _ => Ok(()),
        }
    }

    /// Raw GET of a worker endpoint path (e.g. `"/metrics"`) with the auth
    /// header; returns the body text. One attempt, no retries.
    pub async fn get_text(&self, worker: &WorkerAddr, path: &str) -> Result<String> {
        self.send_text(worker, reqwest::Method::GET, path, path)
            .await
    }

    /// GET `path_and_query` from the preferred workers of `url` in order,
    /// with retries on worker faults.
    /// Returns the body; a body that is not the expected JSON is a fault of
    /// that worker ([`Error::WorkerUnavailable`]).
    async fn metadata_get(&self, url: &str, path_and_query: &str) -> Result<(String, String)> {
        let prefs = self.workers_for(url);
        if prefs.is_empty() {
            return Err(Error::NoWorkers(format!("no worker for {url}")));
        }
        match self
            .on_preferred(&prefs, |w| async move {
                let body = self
                    .send_text(w, reqwest::Method::GET, path_and_query, url)
                    .await?;
                Ok((body, w.addr()))
            })
            .await
        {
            Ok(v) => Ok(v),
            Err(Failover::Request(e)) => Err(e),
            Err(Failover::Exhausted(last)) => Err(exhausted(prefs[0].addr(), last)),
        }
    }

    /// Run `op` on the preferred workers `prefs` in order. Worker faults are
    /// retried with jittered backoff (bounded by `retries` and
    /// `retry_deadline`), then the next worker is tried; a worker marked down
    /// is skipped. Success, or an error that is the request's fault, ends the
    /// walk at once.
    async fn on_preferred<'w, T, F, Fut>(
        &self,
        prefs: &'w [WorkerAddr],
        mut op: F,
    ) -> std::result::Result<T, Failover>
    where
        F: FnMut(&'w WorkerAddr) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.config.retry_deadline;
        let mut last = None;
        for w in prefs {
            if let Some(fault) = self.skip_fault(w) {
                last = Some(fault);
                continue;
            }
            let mut attempt = 0;
            loop {
                match op(w).await {
                    Ok(v) => {
                        self.mark_ok(w);
                        return Ok(v);
                    }
                    Err(e) if !e.is_worker_fault() => {
                        self.mark_ok(w);
                        return Err(Failover::Request(e));
                    }
                    Err(e) => {
                        self.count_error(w);
                        if self.backoff(attempt, deadline).await {
                            attempt += 1;
                            continue;
                        }
                        self.mark_failed(w, &e);
                        last = Some(e);
                        break;
                    }
                }
            }
        }
        Err(Failover::Exhausted(last))
    }

    /// One request with a text answer; a non-2xx answer becomes the error
    /// of its status.
    pub(crate) async fn send_text(
        &self,
        w: &WorkerAddr,
        method: reqwest::Method,
        path_and_query: &str,
        about: &str,
    ) -> Result<String> {
        let url = format!("{}{}", w.base_url(), path_and_query);
        self.count_request();
        let resp = self
            .request(method, &url)
            .send()
            .await
            .map_err(|e| self.transport_error(w, &e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| self.transport_error(w, &e))?;
        if !status.is_success() {
            return Err(status_error(w, status.as_u16(), about, &body));
        }
        Ok(body)
    }

    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.config.auth_token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    // ---- data ------------------------------------------------------------

    /// Read `[offset, offset + buf.len())` of `url` (normalized) into `buf`.
    ///
    /// The range is split into page-aligned chunks of at most `max_chunk`
    /// bytes, fetched in parallel (at most `max_parallel` at once) from the
    /// first live preferred worker, the next replica on a worker fault. Each
    /// body is streamed straight into its slice of `buf`. Bytes past the end
    /// of the file are not written ([`ReadOutcome::filled`] is short).
    /// Ranges that no worker could serve are returned as
    /// [`ReadOutcome::holes`] for the caller to read from the UFS; if a
    /// worker dies mid-body, the bytes already written stay and only the
    /// rest of that chunk is a hole. Errors that are not worker faults
    /// (404, 403, 412, 400) are returned as `Err`.
    ///
    /// `version` (the object's ETag or `mtime-size`) makes the worker answer
    /// 412 ([`Error::ObjectChanged`]) if the object has changed.
    pub async fn read_into(
        &self,
        url: &str,
        version: Option<&str>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<ReadOutcome> {
        if buf.is_empty() {
            return Ok(ReadOutcome::default());
        }
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::InvalidArgument(format!("{url}: range end overflows")))?;
        let prefs = self.workers_for(url);
        let jobs = carve(
            url,
            version,
            &prefs,
            offset,
            buf,
            split_aligned(offset, end, self.config.page_size, self.config.max_chunk),
        );
        let jobs = jobs.into_iter().map(|j| (0, j)).collect();
        let mut outcomes = Vec::new();
        for (_, r) in self.fetch_all(jobs, true).await {
            outcomes.push(r?);
        }
        Ok(assemble(offset, len, outcomes))
    }

    /// Read `[start, end)` of `url` (normalized) into a new buffer: a
    /// convenience over [`Client::read_into`] (for `cat_file`). The data is
    /// cut at the end of the file; holes as in [`RangeResult`].
    pub async fn read_range(
        &self,
        url: &str,
        version: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<RangeResult> {
        if start >= end {
            return Ok(RangeResult::default());
        }
        let len = usize::try_from(end - start)
            .map_err(|_| Error::InvalidArgument(format!("{url}: range too large")))?;
        let mut buf = vec![0u8; len];
        let out = self.read_into(url, version, start, &mut buf).await?;
        buf.truncate(out.filled);
        Ok(RangeResult {
            data: Bytes::from(buf),
            holes: out.holes,
            fault: out.fault,
        })
    }

    /// Read whole files (fsspec `cat` of many paths, `cat_file` without a
    /// range) with one request per file where the file fits in `max_chunk`.
    ///
    /// The first request asks for `[0, max_chunk)`; the worker cuts it at the
    /// end of the file and names the size and version it served, so a small
    /// file costs one round trip and no metadata request. A larger file's
    /// rest is read with [`Client::read_into`] pinned to that version (a
    /// change in between is [`Error::ObjectChanged`], never a mix). Files are
    /// read concurrently, at most `max_parallel` at once; one result per
    /// input, in order. When no preferred worker answers the first request
    /// the file's result is [`Error::WorkerUnavailable`], for the caller to
    /// read it from the UFS; holes in the rest are reported as usual.
    pub async fn read_files(&self, urls: &[String]) -> Vec<Result<RangeResult>> {
        let mut pending = futures::stream::iter(urls.iter().enumerate())
            .map(|(i, url)| async move { (i, self.read_file(url).await) })
            .buffer_unordered(self.config.max_parallel.max(1));
        let mut out: Vec<Option<Result<RangeResult>>> = (0..urls.len()).map(|_| None).collect();
        while let Some((i, r)) = pending.next().await {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::InvalidArgument("read lost".into()))))
            .collect()
    }

    async fn read_file(&self, url: &str) -> Result<RangeResult> {
        let prefs = self.workers_for(url);
        let last = match self.on_preferred(&prefs, |w| self.get_head(w, url)).await {
            Ok((head, size, version)) => return self.read_rest(url, head, size, version).await,
            Err(Failover::Request(e)) => return Err(e),
            Err(Failover::Exhausted(last)) => last,
        };
        let owner = prefs
            .first()
            .map(WorkerAddr::addr)
            .unwrap_or_else(|| NO_WORKER.into());
        *self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fallbacks
            .entry(owner.clone())
            .or_default() += 1;
        Err(exhausted(owner, last))
    }

    /// The first `max_chunk` bytes of `url` from `w`, with the file size and
    /// version the worker reports.
    async fn get_head(
        &self,
        w: &WorkerAddr,
        url: &str,
    ) -> Result<(Vec<u8>, Option<u64>, Option<String>)> {
        let q = format!(
            "{}/v1/range/{}?ufsFullPath={}&offset=0&length={}",
            w.base_url(),
            path_id(url),
            enc(url),
            self.config.max_chunk
        );
        self.count_request();
        let mut resp = self
            .request(reqwest::Method::GET, &q)
            .send()
            .await
            .map_err(|e| self.transport_error(w, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(status_error(w, status.as_u16(), url, &body));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size = header(FILE_SIZE_HEADER).and_then(|v| v.parse::<u64>().ok());
        let version = header(VERSION_HEADER);
        let cap = resp
            .content_length()
            .unwrap_or(0)
            .min(self.config.max_chunk) as usize;
        let mut data = Vec::with_capacity(cap);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(w, &e))?
        {
            data.extend_from_slice(&chunk);
        }
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes_read += data.len() as u64;
        Ok((data, size, version))
    }

    async fn read_rest(
        &self,
        url: &str,
        mut head: Vec<u8>,
        size: Option<u64>,
        version: Option<String>,
    ) -> Result<RangeResult> {
        let have = head.len() as u64;
        let size = match size {
            Some(s) => s,
            // A worker that does not name the size sent the whole file if it
            // sent less than asked for.
            None if have < self.config.max_chunk => have,
            None => self.info(url).await?.length,
        };
        if size <= have {
            head.truncate(size as usize);
            return Ok(RangeResult {
                data: Bytes::from(head),
                holes: Vec::new(),
                fault: None,
            });
        }
        let total = usize::try_from(size)
            .map_err(|_| Error::InvalidArgument(format!("{url}: file too large")))?;
        head.resize(total, 0);
        let out = self
            .read_into(url, version.as_deref(), have, &mut head[have as usize..])
            .await?;
        head.truncate(have as usize + out.filled);
        Ok(RangeResult {
            data: Bytes::from(head),
            holes: out.holes,
            fault: out.fault,
        })
    }

    /// Read many ranges of many files: `(url, start, end)` with `end`
    /// exclusive, already resolved and clamped by the caller.
    ///
    /// Ranges are grouped per file and coalesced (`coalesce_gap`); the merged
    /// ranges are split into page-aligned chunks and all chunks of all files
    /// are fetched concurrently (at most `max_parallel` at once). Each input
    /// gets a zero-copy slice of its merged range. One result per input, in
    /// input order; an error of one file (e.g. not found) fails only that
    /// file's inputs.
    pub async fn read_ranges(&self, reqs: &[(String, u64, u64)]) -> Vec<Result<RangeResult>> {
        // Group non-empty ranges per file.
        let mut files: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut file_of: HashMap<&str, usize> = HashMap::new();
        for (i, (url, start, end)) in reqs.iter().enumerate() {
            if start >= end {
                continue;
            }
            let f = *file_of.entry(url.as_str()).or_insert_with(|| {
                files.push((url.as_str(), Vec::new()));
                files.len() - 1
            });
            files[f].1.push(i);
        }
        // Plan: merged fetch ranges per file.
        struct Fetch {
            file: usize,
            range: Range<u64>,
        }
        let mut fetches: Vec<Fetch> = Vec::new();
        let mut fetch_of_req: Vec<usize> = vec![usize::MAX; reqs.len()];
        let mut prefs: Vec<Vec<WorkerAddr>> = Vec::with_capacity(files.len());
        for (f, (url, idxs)) in files.iter().enumerate() {
            prefs.push(self.workers_for(url));
            let ranges: Vec<Range<u64>> = idxs.iter().map(|&i| reqs[i].1..reqs[i].2).collect();
            let (merged, owner) = coalesce(&ranges, self.config.coalesce_gap);
            let base = fetches.len();
            fetches.extend(merged.into_iter().map(|range| Fetch { file: f, range }));
            for (k, &i) in idxs.iter().enumerate() {
                fetch_of_req[i] = base + owner[k];
            }
        }
        // Fetch every merged range, all chunks of all files in one stream.
        let mut bufs: Vec<Vec<u8>> = fetches
            .iter()
            .map(|f| vec![0u8; (f.range.end - f.range.start) as usize])
            .collect();
        let mut jobs = Vec::new();
        for (k, (fetch, buf)) in fetches.iter().zip(bufs.iter_mut()).enumerate() {
            let url = files[fetch.file].0;
            let chunks = split_aligned(
                fetch.range.start,
                fetch.range.end,
                self.config.page_size,
                self.config.max_chunk,
            );
            for job in carve(
                url,
                None,
                &prefs[fetch.file],
                fetch.range.start,
                buf,
                chunks,
            ) {
                jobs.push((k, job));
            }
        }
        let results = self.fetch_all(jobs, false).await;
        let mut per_fetch: Vec<Vec<ChunkOutcome>> = vec![Vec::new(); fetches.len()];
        let mut file_err: Vec<Option<Error>> = (0..files.len()).map(|_| None).collect();
        for (k, r) in results {
            match r {
                Ok(o) => per_fetch[k].push(o),
                Err(e) => {
                    file_err[fetches[k].file].get_or_insert(e);
                }
            }
        }
        let fetched: Vec<(Bytes, ReadOutcome)> = bufs
            .into_iter()
            .zip(per_fetch)
            .zip(&fetches)
            .map(|((buf, outs), f)| {
                let out = assemble(f.range.start, f.range.end - f.range.start, outs);
                (Bytes::from(buf), out)
            })
            .collect();
        // Slice each input back out.
        reqs.iter()
            .enumerate()
            .map(|(i, (_, start, end))| {
                if start >= end {
                    return Ok(RangeResult::default());
                }
                let k = fetch_of_req[i];
                if let Some(e) = &file_err[fetches[k].file] {
                    return Err(e.clone());
                }
                let (bytes, out) = &fetched[k];
                let base = fetches[k].range.start;
                let covered_end = base + out.filled as u64;
                let s = (*start).min(covered_end);
                let e = (*end).min(covered_end);
                let holes: Vec<Range<u64>> = out
                    .holes
                    .iter()
                    .filter_map(|h| {
                        let r = h.start.max(s)..h.end.min(e);
                        (r.start < r.end).then_some(r)
                    })
                    .collect();
                Ok(RangeResult {
                    data: bytes.slice((s - base) as usize..(e - base) as usize),
                    fault: (!holes.is_empty()).then(|| out.fault.clone()).flatten(),
                    holes,
                })
            })
            .collect()
    }

    /// Fetch `jobs` (each tagged by the caller) with at most `max_parallel`
    /// in flight. With `stop_on_error`, the first error ends the call (the
    /// other fetches are dropped) and is the last result returned.
    async fn fetch_all<'a>(
        &'a self,
        jobs: Vec<(usize, ChunkJob<'a>)>,
        stop_on_error: bool,
    ) -> Vec<(usize, Result<ChunkOutcome>)> {
        let deadline = Instant::now() + self.config.retry_deadline;
        let limit = self.config.max_parallel.max(1);
        let mut pending = jobs.into_iter();
        let mut running = FuturesUnordered::new();
        let mut out = Vec::with_capacity(pending.len());
        for (tag, job) in pending.by_ref().take(limit) {
            running.push(self.fetch_tagged(tag, job, deadline));
        }
        while let Some((tag, r)) = running.next().await {
            let failed = r.is_err();
            out.push((tag, r));
            if failed && stop_on_error {
                break;
            }
            if let Some((tag, job)) = pending.next() {
                running.push(self.fetch_tagged(tag, job, deadline));
            }
        }
        out
    }

    async fn fetch_tagged(
        &self,
        tag: usize,
        job: ChunkJob<'_>,
        deadline: Instant,
    ) -> (usize, Result<ChunkOutcome>) {
        (tag, self.fetch_chunk(job, deadline).await)
    }

    /// Fetch one chunk from the preferred workers in order, retrying worker
    /// faults; what no worker serves becomes the chunk's hole.
    async fn fetch_chunk(&self, job: ChunkJob<'_>, deadline: Instant) -> Result<ChunkOutcome> {
        let ChunkJob {
            url,
            version,
            prefs,
            range,
            buf,
        } = job;
        let mut cur = range.start;
        let mut file_size = None;
        let mut last = None;
        for w in prefs {
            if let Some(fault) = self.skip_fault(w) {
                last = Some(fault);
                continue;
            }
            let mut attempt = 0;
            loop {
                let at = (cur - range.start) as usize;
                let (res, written) = self
                    .get_range_once(w, url, version, cur, range.end, &mut buf[at..])
                    .await;
                cur += written;
                match res {
                    Ok(once) => {
                        self.mark_ok(w);
                        file_size = once.file_size.or(file_size);
                        return Ok(ChunkOutcome {
                            written: cur - range.start,
                            eof: once.eof,
                            hole: None,
                            file_size,
                            fault: None,
                            range,
                        });
                    }
                    Err(e) if !e.is_worker_fault() => {
                        self.mark_ok(w);
                        return Err(e);
                    }
                    Err(e) => {
                        self.count_error(w);
                        if self.backoff(attempt, deadline).await {
                            attempt += 1;
                            continue;
                        }
                        self.mark_failed(w, &e);
                        last = Some(e);
                        break;
                    }
                }
            }
        }
        let owner = prefs
            .first()
            .map(WorkerAddr::addr)
            .unwrap_or_else(|| NO_WORKER.to_string());
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            *s.fallbacks.entry(owner.clone()).or_default() += 1;
        }
        tracing::debug!(url, start = cur, end = range.end, "range left to the UFS");
        let fault = if prefs.is_empty() {
            Error::NoWorkers(format!("no worker known for {url}"))
        } else {
            exhausted(owner, last)
        };
        Ok(ChunkOutcome {
            written: cur - range.start,
            eof: false,
            hole: Some(cur..range.end),
            file_size,
            fault: Some(fault),
            range,
        })
    }

    /// One GET of `/v1/range` for `[start, end)`, streamed into `dst`.
    /// Returns the outcome and, in every case, how many bytes were written
    /// to `dst` (a broken body keeps what arrived).
    async fn get_range_once(
        &self,
        w: &WorkerAddr,
        url: &str,
        version: Option<&str>,
        start: u64,
        end: u64,
        dst: &mut [u8],
    ) -> (Result<RangeOnce>, u64) {
        let mut q = format!(
            "{}/v1/range/{}?ufsFullPath={}&offset={start}&length={}",
            w.base_url(),
            path_id(url),
            enc(url),
            end - start
        );
        if let Some(v) = version {
            q.push_str("&version=");
            q.push_str(&enc(v).to_string());
        }
        self.count_request();
        let mut resp = match self.request(reqwest::Method::GET, &q).send().await {
            Ok(r) => r,
            Err(e) => return (Err(self.transport_error(w, &e)), 0),
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return (Err(status_error(w, status.as_u16(), url, &body)), 0);
        }
        let file_size = resp
            .headers()
            .get(FILE_SIZE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut written = 0usize;
        let result = loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    let n = bytes.len().min(dst.len() - written);
                    dst[written..written + n].copy_from_slice(&bytes[..n]);
                    written += n;
                    if written == dst.len() {
                        break Ok(RangeOnce {
                            eof: false,
                            file_size,
                        });
                    }
                }
                Ok(None) => {
                    break Ok(RangeOnce {
                        eof: true,
                        file_size,
                    })
                }
                Err(e) => break Err(self.transport_error(w, &e)),
            }
        };
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.bytes_read += written as u64;
        }
        (result, written as u64)
    }

    // ---- retries, health, counters ----------------------------------------

    /// Sleep before retry number `attempt + 1` if the policy allows it:
    /// fewer than `retries` retries so far and the jittered backoff ends
    /// before `deadline`. Returns whether to retry.
    async fn backoff(&self, attempt: u32, deadline: Instant) -> bool {
        if attempt >= self.config.retries {
            return false;
        }
        let full = self
            .config
            .retry_base
            .saturating_mul(1u32 << attempt.min(16));
        let delay = full.mul_f64(rand::random_range(0.5..=1.0));
        if Instant::now() + delay >= deadline {
            return false;
        }
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).retries += 1;
        tokio::time::sleep(delay).await;
        true
    }

    pub(crate) fn is_skipped(&self, w: &WorkerAddr) -> bool {
        self.skip_fault(w).is_some()
    }

    /// When `w` is in its skip interval: the fault that marked it down, for
    /// the request that skips it to report.
    fn skip_fault(&self, w: &WorkerAddr) -> Option<Error> {
        let map = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = map.get(&w.addr())?;
        if !matches!(h.skip_until, Some(t) if t > Instant::now()) {
            return None;
        }
        Some(match &h.fault {
            Some(Error::Timeout(d, what)) => {
                Error::Timeout(*d, format!("{what} (skipped after this recent failure)"))
            }
            Some(e) => Error::WorkerUnavailable {
                worker: w.addr(),
                reason: format!("skipped after a recent failure: {e}"),
            },
            None => Error::WorkerUnavailable {
                worker: w.addr(),
                reason: "skipped after recent failures".into(),
            },
        })
    }

    /// A transport failure of a request to `w` under this client's limits.
    fn transport_error(&self, w: &WorkerAddr, e: &reqwest::Error) -> Error {
        transport_error(
            w,
            e,
            self.config.connect_timeout,
            self.config.request_timeout,
        )
    }

    pub(crate) fn mark_ok(&self, w: &WorkerAddr) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.get_mut(&w.addr()) {
            if h.failures > 0 {
                tracing::info!(worker = %w.addr(), "cache worker answers again");
            }
            h.failures = 0;
            h.skip_until = None;
            // Log the next outage again, once.
            h.warned = false;
        }
    }

    /// A worker was given up on: skip it for a while and log its first
    /// failure.
    fn mark_failed(&self, w: &WorkerAddr, e: &Error) {
        let start_probe = {
            let mut map = self.health.lock().unwrap_or_else(|e| e.into_inner());
            let h = map.entry(w.addr()).or_default();
            h.failures = h.failures.saturating_add(1);
            let skip = SKIP_BASE
                .saturating_mul(1u32 << (h.failures - 1).min(8))
                .min(SKIP_MAX);
            h.skip_until = Some(Instant::now() + skip);
            h.fault = Some(e.clone());
            if !h.warned {
                h.warned = true;
                tracing::warn!(worker = %w.addr(), error = %e,
                    "cache worker failed; its paths go to the next preferred worker, \
                     else the UFS, while it is down");
            }
            // Probing needs a runtime to run on; without one (never the
            // case in an async read) the skip interval alone applies.
            let can = !h.probing && tokio::runtime::Handle::try_current().is_ok();
            if can {
                h.probing = true;
            }
            can
        };
        if start_probe {
            tokio::spawn(probe_until_healthy(
                Arc::downgrade(&self.health),
                self.http.clone(),
                self.config.auth_token.clone(),
                w.clone(),
            ));
        }
    }

    /// Count and log a failure of a request that is not retried per chunk
    /// (invalidate).
    pub(crate) fn note_failure(&self, w: &WorkerAddr, e: &Error) {
        self.count_error(w);
        self.mark_failed(w, e);
    }

    fn count_error(&self, w: &WorkerAddr) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *s.errors.entry(w.addr()).or_default() += 1;
    }

    pub(crate) fn count_request(&self) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .worker_requests += 1;
    }
}

/// Probe a failed worker with `GET /healthz` until it answers, then clear
/// its failure mark. Ends early when the mark is cleared otherwise (a read
/// succeeded), the worker left the membership, or the client is gone.
async fn probe_until_healthy(
    health: Weak<HealthMap>,
    http: reqwest::Client,
    token: Option<String>,
    w: WorkerAddr,
) {
    let addr = w.addr();
    let url = format!("{}/healthz", w.base_url());
    let mut delay = PROBE_BASE;
    loop {
        tokio::time::sleep(delay).await;
        {
            let Some(health) = health.upgrade() else {
                return;
            };
            let mut map = health.lock().unwrap_or_else(|e| e.into_inner());
            match map.get_mut(&addr) {
                Some(h) if h.failures > 0 => {}
                Some(h) => {
                    h.probing = false;
                    return;
                }
                None => return,
            }
        }
        let mut req = http.get(&url).timeout(PROBE_TIMEOUT);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let healthy = match req.send().await {
            // A worker that does not know /healthz (an Alluxio Java worker
            // answers 404) is up; one shutting down says so in its body.
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.unwrap_or_default();
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(|s| s == "ok"))
                    .unwrap_or(true)
            }
            Ok(r) => r.status() == reqwest::StatusCode::NOT_FOUND,
            Err(_) => false,
        };
        let Some(health) = health.upgrade() else {
            return;
        };
        let mut map = health.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = map.get_mut(&addr) else {
            return;
        };
        if healthy || h.failures == 0 {
            if h.failures > 0 {
                tracing::info!(worker = %addr, "cache worker answers its health probe again");
            }
            h.failures = 0;
            h.skip_until = None;
            h.warned = false;
            h.probing = false;
            return;
        }
        delay = (delay * 2).min(PROBE_MAX);
    }
}

/// Cut `buf` (holding `[offset, offset + buf.len())`) into the disjoint
/// slices of `chunks`.
fn carve<'a>(
    url: &'a str,
    version: Option<&'a str>,
    prefs: &'a [WorkerAddr],
    offset: u64,
    buf: &'a mut [u8],
    chunks: Vec<Range<u64>>,
) -> Vec<ChunkJob<'a>> {
    let mut rest = buf;
    let mut pos = offset;
    let mut jobs = Vec::with_capacity(chunks.len());
    for range in chunks {
        debug_assert_eq!(range.start, pos);
        let (head, tail) =
            std::mem::take(&mut rest).split_at_mut((range.end - range.start) as usize);
        rest = tail;
        pos = range.end;
        jobs.push(ChunkJob {
            url,
            version,
            prefs,
            range,
            buf: head,
        });
    }
    jobs
}

/// Combine the chunk outcomes of a read of `[offset, offset + len)`: where
/// the file ends (a short body or the size header) and the holes before it.
fn assemble(offset: u64, len: u64, mut outcomes: Vec<ChunkOutcome>) -> ReadOutcome {
    outcomes.sort_by_key(|o| o.range.start);
    let mut end = offset + len;
    for o in &outcomes {
        if let Some(size) = o.file_size {
            end = end.min(size.max(offset));
        }
        if o.eof {
            end = end.min(o.range.start + o.written);
        }
    }
    let mut holes: Vec<Range<u64>> = Vec::new();
    let mut fault = None;
    for o in &mut outcomes {
        if let Some(h) = &o.hole {
            let h = h.start..h.end.min(end);
            if h.start >= h.end {
                continue;
            }
            if fault.is_none() {
                fault = o.fault.take();
            }
            match holes.last_mut() {
                Some(last) if last.end == h.start => last.end = h.end,
                _ => holes.push(h),
            }
        }
    }
    ReadOutcome {
        filled: (end - offset) as usize,
        holes,
        fault,
    }
}

/// The error of a request that no preferred worker served: the last worker
/// fault as it is when it says what happened (unavailable, timed out), else
/// wrapped as [`Error::WorkerUnavailable`] of `owner` (the primary).
fn exhausted(owner: String, last: Option<Error>) -> Error {
    match last {
        Some(e @ (Error::WorkerUnavailable { .. } | Error::Timeout(..))) => e,
        Some(e) => Error::WorkerUnavailable {
            worker: owner,
            reason: e.to_string(),
        },
        None => Error::WorkerUnavailable {
            worker: owner,
            reason: "skipped after recent failures".into(),
        },
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &str, url: &str, worker: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| Error::WorkerUnavailable {
        worker: worker.to_string(),
        reason: format!("{url}: malformed answer: {e}"),
    })
}

/// A non-2xx answer: its JSON body (or raw body) mapped by
/// [`Error::from_response`].
pub(crate) fn status_error(w: &WorkerAddr, status: u16, about: &str, body: &str) -> Error {
    Error::from_response(&w.addr(), status, about, body)
}

/// A transport failure (connect, timeout, broken body) is a worker fault:
/// [`Error::Timeout`] when reqwest reports a timeout (`connect_limit` for a
/// connection that was not made in time, else `request_limit`, the limit of
/// the whole request), [`Error::WorkerUnavailable`] otherwise.
pub(crate) fn transport_error(
    w: &WorkerAddr,
    e: &reqwest::Error,
    connect_limit: Duration,
    request_limit: Duration,
) -> Error {
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        let (limit, what) = if e.is_connect() {
            (connect_limit, "connecting to")
        } else {
            (request_limit, "request to")
        };
        return Error::Timeout(limit, format!("{what} worker {}: {reason}", w.addr()));
    }
    Error::WorkerUnavailable {
        worker: w.addr(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(range: Range<u64>, written: u64, eof: bool, hole: bool) -> ChunkOutcome {
        ChunkOutcome {
            hole: hole.then(|| range.start + written..range.end),
            fault: hole.then(|| Error::NoWorkers(format!("test {}", range.start))),
            range,
            written,
            eof,
            file_size: None,
        }
    }

    #[test]
    fn identity_depends_on_port_only_off_default() {
        let a = WorkerAddr::from_host_port("h1", DEFAULT_WORKER_PORT);
        assert_eq!(a.identity, WorkerIdentity::from_hostname("h1"));
        let b = WorkerAddr::from_host_port("h1", 9000);
        let c = WorkerAddr::from_host_port("h1", 9001);
        assert_ne!(b.identity, c.identity);
        assert_eq!(b.identity, WorkerIdentity::from_hostname("h1:9000"));
        assert_eq!(b.addr(), "h1:9000");
        assert_eq!(b.base_url(), "http://h1:9000");
        assert_eq!(WorkerAddr::from_host_port("::1", 5).addr(), "[::1]:5");
    }

    #[test]
    fn query_values_are_fully_encoded() {
        assert_eq!(
            enc("s3://b/a b/c?d=e&f#g%").to_string(),
            "s3%3A%2F%2Fb%2Fa%20b%2Fc%3Fd%3De%26f%23g%25"
        );
        assert_eq!(enc("a-b.c_d~").to_string(), "a-b.c_d~");
    }

    #[test]
    fn assemble_eof_and_holes() {
        // Three chunks of 10; the second is a hole, the third ends at 25.
        let out = assemble(
            0,
            30,
            vec![
                outcome(20..30, 5, true, false),
                outcome(0..10, 10, false, false),
                outcome(10..20, 3, false, true),
            ],
        );
        assert_eq!(out.filled, 25);
        assert_eq!(out.holes, vec![13..20]);
        assert!(matches!(&out.fault, Some(Error::NoWorkers(m)) if m == "test 10"));
        // Adjacent holes merge, and a hole past the known size is cut; the
        // fault is the first hole's.
        let mut last = outcome(10..20, 0, false, true);
        last.file_size = Some(15);
        let out = assemble(0, 20, vec![last, outcome(0..10, 4, false, true)]);
        assert_eq!(out.filled, 15);
        assert_eq!(out.holes, vec![4..15]);
        assert!(matches!(&out.fault, Some(Error::NoWorkers(m)) if m == "test 0"));
        // No hole, no fault.
        let out = assemble(0, 10, vec![outcome(0..10, 10, false, false)]);
        assert!(out.holes.is_empty() && out.fault.is_none());
    }

    #[test]
    fn exhausted_keeps_timeouts_and_unavailability() {
        let t = exhausted(
            "h:1".into(),
            Some(Error::Timeout(Duration::from_secs(1), "x".into())),
        );
        assert!(matches!(t, Error::Timeout(d, _) if d == Duration::from_secs(1)));
        let u = exhausted(
            "h:1".into(),
            Some(Error::WorkerUnavailable {
                worker: "h:2".into(),
                reason: "refused".into(),
            }),
        );
        assert!(matches!(u, Error::WorkerUnavailable { worker, .. } if worker == "h:2"));
        let other = exhausted("h:1".into(), Some(Error::NoWorkers("none".into())));
        assert!(matches!(other, Error::WorkerUnavailable { worker, .. } if worker == "h:1"));
        assert!(matches!(
            exhausted("h:1".into(), None),
            Error::WorkerUnavailable { .. }
        ));
    }

    #[test]
    fn a_skipped_worker_reports_the_fault_that_marked_it_down() {
        let w = WorkerAddr::from_host_port("127.0.0.1", 1);
        let c = Client::new(ClientConfig::default(), vec![w.clone()]).unwrap();
        assert!(c.skip_fault(&w).is_none());
        c.mark_failed(
            &w,
            &Error::Timeout(Duration::from_millis(300), "request".into()),
        );
        assert!(matches!(c.skip_fault(&w), Some(Error::Timeout(d, _)) if d.as_millis() == 300));
        c.mark_ok(&w);
        assert!(c.skip_fault(&w).is_none());
        c.mark_failed(
            &w,
            &Error::WorkerUnavailable {
                worker: w.addr(),
                reason: "connection refused".into(),
            },
        );
        match c.skip_fault(&w) {
            Some(Error::WorkerUnavailable { reason, .. }) => {
                assert!(reason.contains("connection refused"), "{reason}")
            }
            other => panic!("expected WorkerUnavailable, got {other:?}"),
        }
    }

    #[test]
    fn workers_for_follows_the_ring() {
        use crate::ring::HashRing;
        let ws: Vec<WorkerAddr> = (0..5)
            .map(|i| WorkerAddr::from_host_port("127.0.0.1", 7000 + i))
            .collect();
        let cfg = ClientConfig {
            replicas: 3,
            ..ClientConfig::default()
        };
        let c = Client::new(cfg, ws.clone()).unwrap();
        let ids: Vec<WorkerIdentity> = ws.iter().map(|w| w.identity).collect();
        let ring = HashRing::new(&ids, 5);
        let got: Vec<WorkerIdentity> = c
            .workers_for("s3://b/x")
            .iter()
            .map(|w| w.identity)
            .collect();
        assert_eq!(got, ring.get_multiple("s3://b/x", 3));
        c.set_workers(ws[..1].to_vec());
        assert_eq!(c.workers_for("s3://b/x"), ws[..1].to_vec());
        assert!(matches!(
            Client::new(ClientConfig::default(), vec![]),
            Err(Error::NoWorkers(_))
        ));
    }

    #[test]
    fn placement_is_configurable_and_switchable() {
        let ws: Vec<WorkerAddr> = (0..6)
            .map(|i| WorkerAddr::from_host_port("127.0.0.1", 7100 + i))
            .collect();
        let ids: Vec<WorkerIdentity> = ws.iter().map(|w| w.identity).collect();
        let cfg = ClientConfig {
            replicas: 2,
            placement: Placement::Rendezvous,
            ..ClientConfig::default()
        };
        let c = Client::new(cfg, ws.clone()).unwrap();
        assert_eq!(c.placement(), Placement::Rendezvous);
        let hrw = Placement::Rendezvous.build(&ids);
        let ring = Placement::Alluxio { vnodes: 5 }.build(&ids);
        let keys: Vec<String> = (0..50).map(|i| format!("s3://b/f{i}")).collect();
        let ids_of = |c: &Client, k: &str| -> Vec<WorkerIdentity> {
            c.workers_for(k).iter().map(|w| w.identity).collect()
        };
        for k in &keys {
            assert_eq!(ids_of(&c, k), hrw.pick(k, 2));
        }
        // The two placements differ somewhere, and switching follows.
        assert!(keys.iter().any(|k| hrw.pick(k, 2) != ring.pick(k, 2)));
        c.set_placement(Placement::default());
        assert_eq!(c.workers().len(), 6);
        for k in &keys {
            assert_eq!(ids_of(&c, k), ring.pick(k, 2));
        }
        c.set_membership(ws[..3].to_vec(), Placement::Rendezvous);
        let hrw3 = Placement::Rendezvous.build(&ids[..3]);
        for k in &keys {
            assert_eq!(ids_of(&c, k), hrw3.pick(k, 2));
        }
        // The legacy vnodes knob still sets the Alluxio ring.
        let legacy = ClientConfig {
            vnodes: 50,
            ..ClientConfig::default()
        };
        assert_eq!(
            legacy.effective_placement(),
            Placement::Alluxio { vnodes: 50 }
        );
    }
}

#[cfg(test)]
mod send_tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}

    /// The binding shares one client across threads and may spawn its
    /// futures on a multi-threaded runtime.
    #[test]
    fn client_and_its_futures_are_send() {
        assert_send_sync::<Client>();
        let c = Client::new(
            ClientConfig::default(),
            vec![WorkerAddr::from_host_port("127.0.0.1", 1)],
        )
        .unwrap();
        let reqs = vec![("s3://b/k".to_string(), 0u64, 1u64)];
        let mut buf = [0u8; 4];
        assert_send(&c.read_ranges(&reqs));
        assert_send(&c.read_into("s3://b/k", None, 0, &mut buf));
        assert_send(&c.info("s3://b/k"));
        assert_send(&c.list("s3://b/k"));
        assert_send(&c.invalidate("s3://b/k", false));
    }
}
