//! Preloading: filling the cache ahead of readers, for the synchronous
//! `POST /v1/load/file` and Alluxio's asynchronous `GET /v1/load` jobs
//! (their HTTP side is `routes/load.rs`).
//!
//! - [`load_range`] reads the missing pages of a file (or a page-aligned
//!   range of it) through the ordinary read-through path
//!   ([`ReadThrough::read_range`], so it shares the single-flight map and
//!   the page store with readers) and discards the bytes; pages already
//!   cached are counted as skipped and never read. Bandwidth limits (bytes/s)
//!   pace its UFS fetches.
//! - An asynchronous job ([`LoadJobs::submit`]) is run by the worker that
//!   receives it: it lists the path recursively from the UFS, then hands the
//!   files to [`alluxiofs_core::load::load_files`], which sends each file to
//!   its owner workers' synchronous endpoint. When the worker is part of an
//!   etcd cluster the owners come from the cluster's membership and
//!   placement (the same as the clients'); without etcd the worker loads
//!   everything into itself. Jobs are kept one per path; a job's progress
//!   report ([`LoadJob::progress`]) is Alluxio's.
//! - Jobs survive a restart: each is saved (fsynced, replaced atomically)
//!   in `<first cache dir>/load-jobs.json` when it starts and when it ends.
//!   At start ([`LoadJobs::resume`]) a job that was running starts again
//!   under its id (pages cached before the restart are skipped, so it
//!   fetches only what it had not), and an ended one answers `progress`
//!   with its last state and counts.

use crate::atomic::{write_atomically, Durability};
use crate::cache::{ReadThrough, MAX_RUN_BYTES};
use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::ufs::ObjectVersion;
use alluxiofs_core::client::{Client, ClientConfig, WorkerAddr};
use alluxiofs_core::discovery::discover;
use alluxiofs_core::info::human_size;
use alluxiofs_core::load::{
    load_files, Bandwidth, FileLoadResult, LoadCounters, LoadOptions, LoadSummary,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The state of an asynchronous load job, as Alluxio names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Listing or loading.
    Running,
    /// Every file loaded (or already cached).
    Succeeded,
    /// Listing failed, or some files failed.
    Failed,
    /// Stopped by `opType=stop`.
    Stopped,
}

impl JobState {
    /// The state of Alluxio's name `s`.
    fn parse(s: &str) -> Option<Self> {
        [
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Stopped,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }

    /// Alluxio's name: `RUNNING`, `SUCCEEDED`, `FAILED`, `STOPPED`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }
}

/// One asynchronous load job.
#[derive(Debug)]
pub struct LoadJob {
    /// Job id (a UUID).
    pub id: String,
    /// The UFS URL being loaded.
    pub path: String,
    /// Bandwidth limit, bytes/s.
    pub bandwidth: Option<u64>,
    /// Live counters.
    pub counters: Arc<LoadCounters>,
    started: Instant,
    inner: Mutex<JobInner>,
    /// What it was asked, as saved.
    opts: SavedOptions,
    journal: Option<Arc<Journal>>,
}

/// The options of a job that are saved with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedOptions {
    recursive: bool,
    replicas: usize,
    concurrency: usize,
    bandwidth: Option<u64>,
}

impl SavedOptions {
    fn of(o: &LoadOptions) -> Self {
        SavedOptions {
            recursive: o.recursive,
            replicas: o.replicas,
            concurrency: o.concurrency,
            bandwidth: o.bandwidth,
        }
    }

    fn options(&self) -> LoadOptions {
        LoadOptions {
            recursive: self.recursive,
            replicas: self.replicas.max(1),
            concurrency: self.concurrency.max(1),
            bandwidth: self.bandwidth.filter(|b| *b > 0),
            ..LoadOptions::default()
        }
    }
}

/// One job as `load-jobs.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedJob {
    id: String,
    path: String,
    #[serde(flatten)]
    opts: SavedOptions,
    state: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    summary: Option<LoadSummary>,
}

/// The saved jobs, one per path, rewritten whole at each change (jobs are
/// few and change rarely).
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    jobs: Mutex<BTreeMap<String, SavedJob>>,
}

/// The file name of the saved jobs in the first cache directory.
pub const JOBS_FILE: &str = "load-jobs.json";

impl Journal {
    /// The journal at `path` and the jobs it held. An unreadable file is
    /// set aside (`.bad`) with a warning: lost jobs are not worth a worker
    /// that will not start.
    fn open(path: PathBuf) -> (Self, Vec<SavedJob>) {
        let saved: Vec<SavedJob> = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, SavedJob>>(&bytes) {
                Ok(m) => m.into_values().collect(),
                Err(e) => {
                    let bad = path.with_extension("json.bad");
                    tracing::warn!(
                        "{}: unreadable ({e}); moved to {}, its load jobs are not resumed",
                        path.display(),
                        bad.display()
                    );
                    let _ = std::fs::rename(&path, &bad);
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!("{}: {e}; load jobs are not resumed", path.display());
                Vec::new()
            }
        };
        let jobs = saved.iter().map(|j| (j.path.clone(), j.clone())).collect();
        (
            Journal {
                path,
                jobs: Mutex::new(jobs),
            },
            saved,
        )
    }

    /// Save `job` (replacing the job of its path).
    fn put(&self, job: SavedJob) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.insert(job.path.clone(), job);
        let written = serde_json::to_vec_pretty(&*jobs)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&self.path, &[&bytes], Durability::Sync));
        if let Err(e) = written {
            tracing::warn!("cannot save the load jobs in {}: {e}", self.path.display());
        }
    }
}

#[derive(Debug)]
struct JobInner {
    state: JobState,
    error: Option<String>,
    summary: Option<LoadSummary>,
    ended: Option<Instant>,
    task: Option<tokio::task::AbortHandle>,
}

/// The jobs of a worker, one per path (the latest), and the worker-wide
/// bandwidth limit of loads.
#[derive(Debug)]
pub struct LoadJobs {
    jobs: Mutex<HashMap<String, Arc<LoadJob>>>,
    config: Arc<WorkerConfig>,
    auth_token: Option<String>,
    bandwidth: OnceLock<Option<Bandwidth>>,
    journal: Option<Arc<Journal>>,
    /// The jobs saved before this start, until [`LoadJobs::resume`].
    saved: Mutex<Vec<SavedJob>>,
}

/// What [`LoadJobs::submit`] did.
#[derive(Debug)]
pub enum Submitted {
    /// A new job started.
    Started(Arc<LoadJob>),
    /// A job of the path is running already (this one).
    AlreadyRunning(Arc<LoadJob>),
}

impl LoadJobs {
    /// No jobs yet, for a worker of `config` (its `load_bandwidth` limits
    /// all loads, its etcd settings name the cluster a job loads into) whose
    /// peers take `auth_token`.
    pub fn new(config: Arc<WorkerConfig>, auth_token: Option<String>) -> Self {
        let (journal, saved) = match config.cache_dirs.first() {
            Some(d) => {
                let (j, saved) = Journal::open(d.path.join(JOBS_FILE));
                (Some(Arc::new(j)), saved)
            }
            None => (None, Vec::new()),
        };
        LoadJobs {
            jobs: Mutex::new(HashMap::new()),
            config,
            auth_token,
            bandwidth: OnceLock::new(),
            journal,
            saved: Mutex::new(saved),
        }
    }

    /// Take up the jobs saved before this start: a running one starts again
    /// under its id, an ended one is kept for `progress`. `this` is how
    /// peers reach this worker now.
    pub fn resume(&self, cache: &Arc<ReadThrough>, this: WorkerAddr) {
        let saved = std::mem::take(&mut *self.saved.lock().unwrap_or_else(|p| p.into_inner()));
        for s in saved {
            let url = match cache.confine(&s.path) {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(path = %s.path, job = %s.id, "saved load job dropped: {e}");
                    continue;
                }
            };
            match JobState::parse(&s.state) {
                Some(JobState::Running) => {
                    tracing::info!(path = %url, job = %s.id, "resuming the load job after a restart");
                    self.start(cache, url, s.opts.options(), this.clone(), s.id);
                }
                Some(state) => {
                    let job = self.job(s.id, url.clone(), &s.opts.options(), state);
                    if let Some(sum) = &s.summary {
                        job.counters.restore(sum);
                    }
                    {
                        let mut inner = job.lock();
                        inner.error = s.error;
                        inner.summary = s.summary;
                        inner.ended = Some(Instant::now());
                    }
                    self.jobs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(url, job);
                }
                None => tracing::warn!(path = %url, job = %s.id, state = %s.state,
                    "saved load job dropped: unknown state"),
            }
        }
    }

    /// A new job record (not started).
    fn job(&self, id: String, url: String, opts: &LoadOptions, state: JobState) -> Arc<LoadJob> {
        Arc::new(LoadJob {
            id,
            path: url,
            bandwidth: opts.bandwidth,
            counters: Arc::new(LoadCounters::default()),
            started: Instant::now(),
            inner: Mutex::new(JobInner {
                state,
                error: None,
                summary: None,
                ended: None,
                task: None,
            }),
            opts: SavedOptions::of(opts),
            journal: self.journal.clone(),
        })
    }

    /// The worker-wide limit of loads, if any (its credit starts at the
    /// first load).
    pub fn limit(&self) -> Option<&Bandwidth> {
        self.bandwidth
            .get_or_init(|| {
                self.config
                    .load_bandwidth
                    .filter(|b| *b > 0)
                    .map(|b| Bandwidth::new(b, b))
            })
            .as_ref()
    }

    /// The job of `path`, if any.
    pub fn get(&self, path: &str) -> Option<Arc<LoadJob>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    /// Stop the running job of `path`; false when there is none.
    pub fn stop(&self, path: &str) -> bool {
        match self.get(path) {
            Some(job) => job.stop(),
            None => false,
        }
    }

    /// Start a job loading `url` (confined) with `opts`, unless one of
    /// `url` is running. `this` is how peers reach this worker (the job's
    /// own endpoint when the worker is not in an etcd cluster).
    pub fn submit(
        &self,
        cache: &Arc<ReadThrough>,
        url: String,
        opts: LoadOptions,
        this: WorkerAddr,
    ) -> Submitted {
        {
            let map = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = map.get(&url) {
                if old.state() == JobState::Running {
                    return Submitted::AlreadyRunning(old.clone());
                }
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        Submitted::Started(self.start(cache, url, opts, this, id))
    }

    /// Start job `id` loading `url`, and save it.
    fn start(
        &self,
        cache: &Arc<ReadThrough>,
        url: String,
        opts: LoadOptions,
        this: WorkerAddr,
        id: String,
    ) -> Arc<LoadJob> {
        let mut map = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let job = self.job(id, url.clone(), &opts, JobState::Running);
        job.save(&job.lock());
        let peers = Peers {
            config: self.config.clone(),
            auth_token: self.auth_token.clone(),
            page_size: cache.page_size(),
            this,
        };
        let task = tokio::spawn(run_job(cache.clone(), job.clone(), opts, peers));
        job.lock().task = Some(task.abort_handle());
        map.insert(url.clone(), job.clone());
        tracing::info!(path = %url, job = %job.id, "load job submitted");
        job
    }
}

// ---- synchronous load ------------------------------------------------------

/// Load pages `[offset, offset + length)` (widened to whole pages, cut at the
/// end of the file) of `url` into this worker's cache, pacing the UFS
/// fetches by every one of `limits`. `url` must be confined already. Pages
/// already cached are skipped without being read.
pub async fn load_range(
    cache: &Arc<ReadThrough>,
    url: &str,
    offset: u64,
    length: Option<u64>,
    limits: &[&Bandwidth],
) -> Result<FileLoadResult> {
    let (_, r) = cache
        .with_version(url, None, |v| {
            load_version(cache, v, offset, length, limits)
        })
        .await?;
    Ok(r)
}

async fn load_version(
    cache: &Arc<ReadThrough>,
    v: ObjectVersion,
    offset: u64,
    length: Option<u64>,
    limits: &[&Bandwidth],
) -> Result<FileLoadResult> {
    let p = cache.page_size();
    let end = match length {
        Some(l) => offset.saturating_add(l).min(v.size),
        None => v.size,
    };
    let mut out = FileLoadResult {
        path: v.url.clone(),
        ..FileLoadResult::default()
    };
    if offset >= end {
        return Ok(out);
    }
    let (first, last) = (offset / p, end.div_ceil(p));
    // Runs of missing pages, each cut to at most MAX_RUN_BYTES.
    let max_pages = (MAX_RUN_BYTES / p).max(1);
    let mut runs: Vec<Range<u64>> = Vec::new();
    for i in first..last {
        let len = cache.page_len(&v, i);
        out.bytes_total += len;
        let key = cache.store().key(v.url.clone(), v.version.clone(), i);
        if cache.store().contains(&key) {
            out.pages_skipped += 1;
            out.bytes_skipped += len;
            continue;
        }
        out.pages_loaded += 1;
        out.bytes_loaded += len;
        match runs.last_mut() {
            Some(r) if r.end == i && r.end - r.start < max_pages => r.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    for r in runs {
        let bytes = (r.start * p)..(r.end * p).min(v.size);
        let n = bytes.end - bytes.start;
        for b in limits {
            b.take(n).await;
        }
        let mut stream = cache.read_range(&v, bytes).await?;
        while let Some(piece) = stream.next().await {
            piece?;
        }
    }
    Ok(out)
}

// ---- asynchronous jobs (Alluxio's /v1/load) -------------------------------

/// What a job needs to reach the workers it loads into.
struct Peers {
    config: Arc<WorkerConfig>,
    auth_token: Option<String>,
    page_size: u64,
    this: WorkerAddr,
}

impl LoadJob {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Save the job as `inner` says it is now.
    fn save(&self, inner: &JobInner) {
        if let Some(j) = &self.journal {
            j.put(SavedJob {
                id: self.id.clone(),
                path: self.path.clone(),
                opts: self.opts.clone(),
                state: inner.state.as_str().to_string(),
                error: inner.error.clone(),
                summary: inner.summary.clone(),
            });
        }
    }

    /// The job's state now.
    pub fn state(&self) -> JobState {
        self.lock().state
    }

    /// Stop a running job; false when it was not running.
    pub fn stop(&self) -> bool {
        let mut inner = self.lock();
        if inner.state != JobState::Running {
            return false;
        }
        self.counters.cancel();
        if let Some(t) = inner.task.take() {
            t.abort();
        }
        inner.state = JobState::Stopped;
        inner.ended = Some(Instant::now());
        self.save(&inner);
        tracing::info!(path = %self.path, job = %self.id, "load job stopped");
        true
    }

    fn finish(&self, state: JobState, error: Option<String>, summary: Option<LoadSummary>) {
        let mut inner = self.lock();
        if inner.state != JobState::Running {
            return; // stopped meanwhile
        }
        inner.state = state;
        inner.error = error;
        inner.summary = summary;
        inner.ended = Some(Instant::now());
        inner.task = None;
        self.save(&inner);
    }
}

async fn run_job(cache: Arc<ReadThrough>, job: Arc<LoadJob>, opts: LoadOptions, peers: Peers) {
    let result = async {
        let files = list_recursive(&cache, &job.path, opts.recursive).await?;
        let client = cluster_client(&peers).await?;
        load_files(&client, &files, &opts, job.counters.clone())
            .await
            .map_err(|e| WorkerError::Internal(e.to_string()))
    }
    .await;
    match result {
        Ok(summary) => {
            let s = if summary.files_failed > 0 {
                JobState::Failed
            } else {
                JobState::Succeeded
            };
            tracing::info!(path = %job.path, job = %job.id, state = s.as_str(),
                files = summary.files_total, loaded = summary.bytes_loaded, "load job ended");
            job.finish(s, None, Some(summary));
        }
        Err(e) => {
            tracing::warn!(path = %job.path, job = %job.id, "load job failed: {e}");
            job.finish(JobState::Failed, Some(e.to_string()), None);
        }
    }
}

/// Every file under `url` from the UFS, as `(url, size)`.
async fn list_recursive(
    cache: &ReadThrough,
    url: &str,
    recursive: bool,
) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    let mut dirs = vec![url.to_string()];
    let mut first = true;
    while let Some(d) = dirs.pop() {
        for e in cache.ufs().list(&d).await? {
            if e.is_dir() {
                if recursive || first {
                    dirs.push(e.ufs_path);
                }
            } else {
                files.push((e.ufs_path, e.length));
            }
        }
        if !recursive {
            break;
        }
        first = false;
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// A client over the cluster this worker belongs to (etcd), else over this
/// worker alone.
async fn cluster_client(peers: &Peers) -> Result<Client> {
    let cfg = &peers.config;
    let mut config = ClientConfig {
        page_size: peers.page_size,
        placement: cfg.placement,
        auth_token: peers.auth_token.clone(),
        tls: cfg.peer_tls(),
        ..ClientConfig::default()
    };
    let workers = if cfg.etcd.is_empty() {
        vec![peers.this.clone()]
    } else {
        let etcd = cfg.etcd_client_config()?;
        let found = discover(&etcd)
            .await
            .map_err(|e| WorkerError::Unavailable(format!("cluster membership: {e}")))?;
        if let Some(p) = found.placement {
            config.placement = p;
        }
        found.workers
    };
    Client::new(config, workers).map_err(|e| WorkerError::Internal(e.to_string()))
}

impl LoadJob {
    /// Alluxio's progress answer of this job,
    /// `{"jobState","path","message","respProperties":{...}}`; `text`
    /// selects Alluxio's TEXT message (else the message is the same
    /// properties as JSON).
    pub fn progress(&self, text: bool) -> serde_json::Value {
        let job = self;
        let inner = job.lock();
        let p = job.counters.snapshot();
        let elapsed = inner
            .ended
            .unwrap_or_else(Instant::now)
            .duration_since(job.started)
            .as_secs_f64();
        let rate = if elapsed > 0.0 {
            (p.bytes_loaded as f64 / elapsed) as u64
        } else {
            0
        };
        let failures: Vec<serde_json::Value> = inner
            .summary
            .as_ref()
            .map(|s| {
                s.failures
                    .iter()
                    .map(|f| json!({"path": f.path, "reason": f.reason}))
                    .collect()
            })
            .unwrap_or_default();
        let (files_loaded, files_skipped) = inner
            .summary
            .as_ref()
            .map(|s| (s.files_loaded, s.files_skipped))
            .unwrap_or((0, 0));
        let mut props: BTreeMap<&str, String> = BTreeMap::new();
        props.insert("jobId", job.id.clone());
        props.insert("jobState", inner.state.as_str().to_string());
        props.insert("listed", p.listed.to_string());
        props.insert("filesTotal", p.files_total.to_string());
        props.insert("filesProcessed", p.files_done.to_string());
        props.insert("filesLoaded", files_loaded.to_string());
        props.insert("filesSkipped", files_skipped.to_string());
        props.insert("filesFailed", p.files_failed.to_string());
        props.insert("bytesTotal", p.bytes_total.to_string());
        props.insert("bytesProcessed", p.bytes_done.to_string());
        props.insert("bytesLoaded", p.bytes_loaded.to_string());
        props.insert("bytesSkipped", p.bytes_skipped.to_string());
        props.insert("throughput", rate.to_string());
        props.insert("elapsedMs", ((elapsed * 1000.0) as u64).to_string());
        props.insert(
            "bandwidth",
            job.bandwidth
                .map(|b| b.to_string())
                .unwrap_or_else(|| "unlimited".into()),
        );
        props.insert("failures", serde_json::Value::from(failures).to_string());
        if let Some(e) = &inner.error {
            props.insert("error", e.clone());
        }
        let message = if text {
            let mut m = format!(
                "Progress for loading path '{}':\n\tSettings:\tbandwidth: {}\n\tJob Id: {}\n\
             \tJob State: {}\n\tFiles Processed: {} of {}\n\tBytes Loaded: {} \
             (skipped, already cached: {})\n\tThroughput: {}/s\n\tFiles Failed: {}\n",
                job.path,
                job.bandwidth
                    .map(|b| format!("{}/s", human_size(b)))
                    .unwrap_or_else(|| "unlimited".into()),
                job.id,
                inner.state.as_str(),
                p.files_done,
                p.files_total,
                human_size(p.bytes_loaded),
                human_size(p.bytes_skipped),
                human_size(rate),
                p.files_failed,
            );
            if let Some(e) = &inner.error {
                m.push_str(&format!("\tError: {e}\n"));
            }
            if let Some(s) = &inner.summary {
                for f in &s.failures {
                    m.push_str(&format!("\tFailed: {}: {}\n", f.path, f.reason));
                }
            }
            m
        } else {
            serde_json::to_string(&props).unwrap_or_default()
        };
        json!({
            "jobState": inner.state.as_str(),
            "path": job.path,
            "message": message,
            "respProperties": props,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::WorkerConfig;

    #[test]
    fn load_bandwidth_from_flag_env_and_yaml() {
        let cfg = WorkerConfig::from_args(["w", "--mount", "s3://b", "--load-bandwidth", "200MiB"])
            .unwrap();
        assert_eq!(cfg.load_bandwidth, Some(200 << 20));
        let env = |k: &str| (k == "ALLUXIOFS_WORKER_LOAD_BANDWIDTH").then(|| "1GiB".to_string());
        let cli = <crate::config::Cli as clap::Parser>::parse_from(["w", "--mount", "s3://b"]);
        let cfg = WorkerConfig::from_cli_and_env(&cli, &env).unwrap();
        assert_eq!(cfg.load_bandwidth, Some(1 << 30));
        let cfg = WorkerConfig::from_args(["w", "--mount", "s3://b"]).unwrap();
        assert_eq!(cfg.load_bandwidth, None);
        let cfg =
            WorkerConfig::from_args(["w", "--mount", "s3://b", "--load-bandwidth", "0"]).unwrap();
        assert_eq!(cfg.load_bandwidth, None);
    }
}
