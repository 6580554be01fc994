//! The HTTP routes of the worker (`docs/http-api.md`), as an axum
//! [`Router`] over one shared [`AppState`].
//!
//! Tests drive [`app`] with `tower::ServiceExt::oneshot`; the server adds
//! only the listener. Every handler parses its input by hand (no panics, a
//! 400 JSON answer on bad input) and confines the URL before anything else.

use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::membership::{resolve_identity, Registration};
use crate::meta::MetaCache;
use crate::metrics::Metrics;
use crate::read::{SharedInfo, SharedPage};
use crate::store::{DirSpec, PageKey, PageStore};
use crate::ufs::{ObjectVersion, Ufs};
use alluxiofs_core::info::FileInfo;
use alluxiofs_core::path::path_id;
use alluxiofs_core::ring::WorkerIdentity;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

pub use alluxiofs_core::protocol::{FILE_SIZE_HEADER, VERSION_HEADER};

/// Everything a request handler needs.
pub struct AppState {
    /// The merged configuration.
    pub config: WorkerConfig,
    /// UFS access.
    pub ufs: Ufs,
    /// Pages on disk and in memory.
    pub store: Arc<PageStore>,
    /// Metadata cache and `path_id` map.
    pub meta: MetaCache,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Bearer token required on every endpoint but `/healthz`.
    pub auth_token: Option<String>,
    /// Set when shutdown begins: new requests get 503.
    pub shutting_down: AtomicBool,
    /// This worker's persistent identity (see [`crate::membership`]).
    pub identity: WorkerIdentity,
    /// Where the worker stands with etcd.
    pub registration: watch::Sender<Registration>,
    pub(crate) inflight: Mutex<HashMap<PageKey, SharedPage>>,
    /// Counter snapshots for `/v1/stats` (see [`crate::history`]).
    pub history: crate::history::History,
    pub(crate) meta_inflight: Mutex<HashMap<String, SharedInfo>>,
    /// Load jobs and the load bandwidth limit (see [`crate::load`]).
    pub loads: crate::load::LoadJobs,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("ufs", &self.ufs)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Build the state: check mounts, open (and scan) the cache directories,
    /// read the auth token. Blocking (disk scan).
    pub fn new(config: WorkerConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new());
        let ufs = Ufs::new(&config, metrics.clone())?;
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
            crate::manage::store_options(&config, &ufs)?,
        )?);
        store.start_sweeper(crate::manage::SWEEP_EVERY);
        let meta = MetaCache::new(config.metadata_ttl);
        for url in store.urls() {
            meta.remember(&url);
        }
        let auth_token = config.resolve_auth_token()?;
        let identity = resolve_identity(&config)?;
        let registration = watch::Sender::new(if config.etcd.is_empty() {
            Registration::Disabled
        } else {
            Registration::Connecting
        });
        let state = Arc::new(AppState {
            identity,
            registration,
            config,
            ufs,
            store,
            meta,
            metrics,
            auth_token,
            shutting_down: AtomicBool::new(false),
            inflight: Mutex::new(HashMap::new()),
            meta_inflight: Mutex::new(HashMap::new()),
            loads: crate::load::LoadJobs::new(None),
            history: crate::history::History::new(),
        });
        crate::history::spawn_sampler(&state);
        Ok(state)
    }

    /// Share of the pages of `v` held in the cache, 0-100.
    fn cached_percent(&self, v: &ObjectVersion) -> u8 {
        let p = self.store.page_size();
        let total = v.size.div_ceil(p);
        if total == 0 {
            return 100;
        }
        let cached = self.store.cached_pages(&v.url, &v.version).min(total);
        (cached * 100 / total) as u8
    }

    fn with_percent(&self, mut info: FileInfo) -> FileInfo {
        if !info.is_dir() {
            info.in_cache_percent = self.cached_percent(&ObjectVersion::from_info(&info));
        }
        info
    }
}

/// The worker's router.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/file/{path_id}/page/{index}", get(page))
        .route("/v1/range/{path_id}", get(range))
        .route("/v1/info", get(info))
        .route("/v1/files", get(files))
        .route("/v1/invalidate", post(invalidate))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/write", axum::routing::put(crate::write::write))
        .route("/v1/stats", get(crate::history::stats))
        .route("/v1/pin", post(crate::manage::pin))
        .route("/v1/unpin", post(crate::manage::unpin))
        .route("/v1/ttl", post(crate::manage::ttl))
        .route("/v1/free", post(crate::manage::free))
        .route("/v1/rules", get(crate::manage::rules))
        .route("/v1/load", get(crate::load::alluxio_load))
        .route("/v1/load/file", post(crate::load::load_file))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Auth, shutdown and request metrics around every route.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    let open = endpoint == "/healthz";
    let response = if !open && state.shutting_down.load(Ordering::Relaxed) {
        WorkerError::Unavailable("shutting down".into()).into_response()
    } else if !open && !authorized(&state, req.headers()) {
        WorkerError::Unauthorized.into_response()
    } else {
        next.run(req).await
    };
    state
        .metrics
        .request(&endpoint, response.status().as_u16(), started.elapsed());
    response
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.auth_token else {
        return true;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare without an early exit on the first differing byte.
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> WorkerError {
    WorkerError::NotFound {
        path: "endpoint".into(),
        hint: " (see docs/http-api.md)".into(),
    }
}

/// Decoded query parameters.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<String>) -> Self {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.str(name)
            .ok_or_else(|| WorkerError::BadRequest(format!("missing query parameter {name:?}")))
    }

    fn u64(&self, name: &str) -> Result<Option<u64>> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                WorkerError::BadRequest(format!(
                    "query parameter {name:?} must be a non-negative integer, got {v:?}"
                ))
            }),
        }
    }

    fn bool(&self, name: &str) -> Result<bool> {
        match self.str(name).map(|s| s.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(WorkerError::BadRequest(format!(
                "query parameter {name:?} must be true or false, got {v:?}"
            ))),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => WorkerError::Internal(format!("JSON encoding: {e}")).into_response(),
    }
}

fn check_path_id(id: &str) -> Result<()> {
    if id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(WorkerError::BadRequest(format!(
            "path_id {id:?} is not a SHA-256 hex digest"
        )))
    }
}

/// The URL of a data request: `ufsFullPath` (confined, and matching
/// `path_id`), else the URL learned earlier for `path_id`.
fn resolve_url(state: &AppState, id: &str, q: &Query) -> Result<String> {
    check_path_id(id)?;
    match q.str("ufsFullPath") {
        Some(raw) => {
            let url = state.ufs.confine(raw)?;
            if !path_id(&url).eq_ignore_ascii_case(id) {
                return Err(WorkerError::BadRequest(format!(
                    "path_id {id} does not match ufsFullPath {url:?} (expected {})",
                    path_id(&url)
                )));
            }
            state.meta.remember(&url);
            Ok(url)
        }
        None => {
            let url = state.meta.url_of(id).ok_or_else(|| WorkerError::NotFound {
                path: id.to_string(),
                hint: ": unknown path_id; pass ufsFullPath or call /v1/info first".into(),
            })?;
            state.ufs.confine(&url)
        }
    }
}

fn data_headers(v: &ObjectVersion, len: u64) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(FILE_SIZE_HEADER, HeaderValue::from(v.size));
    let version = HeaderValue::from_str(&v.version).map_err(|_| {
        WorkerError::Internal(format!(
            "version {:?} is not a valid header value",
            v.version
        ))
    })?;
    h.insert(VERSION_HEADER, version);
    Ok(h)
}

async fn page(
    State(state): State<Arc<AppState>>,
    Path((id, index)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = Query::parse(raw);
    let index: u64 = index
        .parse()
        .map_err(|_| WorkerError::BadRequest(format!("bad page index {index:?}")))?;
    let url = resolve_url(&state, &id, &q)?;
    let offset = q.u64("offset")?.unwrap_or(0);
    let length = q.u64("length")?;
    let page_size = state.store.page_size();
    if offset >= page_size && offset > 0 {
        return Err(WorkerError::BadRequest(format!(
            "offset {offset} is outside the page (page size {page_size})"
        )));
    }
    let pinned = q.str("version");
    let mut v = state.file_version(&url, pinned).await?;
    let mut retried = false;
    let data = loop {
        if state.page_len(&v, index) == 0 {
            break bytes::Bytes::new();
        }
        match state.read_page(&v, index).await {
            Ok(d) => break d,
            Err(e) if e.is_changed() && !retried => {
                retried = true;
                v = state.refresh_after_change(&url, pinned, e).await?;
            }
            Err(e) => return Err(e),
        }
    };
    let start = (offset as usize).min(data.len());
    let end = match length {
        Some(l) => start.saturating_add(l as usize).min(data.len()),
        None => data.len(),
    };
    let body = data.slice(start..end);
    Metrics::add(&state.metrics.bytes_served, body.len() as u64);
    let headers = data_headers(&v, body.len() as u64)?;
    Ok((StatusCode::OK, headers, body).into_response())
}

async fn range(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = Query::parse(raw);
    q.required("ufsFullPath")?;
    let url = resolve_url(&state, &id, &q)?;
    let offset = q.u64("offset")?.unwrap_or(0);
    let length = q.u64("length")?;
    let pinned = q.str("version");
    let mut v = state.file_version(&url, pinned).await?;
    let mut retried = false;
    loop {
        let end = match length {
            Some(l) => offset.saturating_add(l).min(v.size),
            None => v.size,
        };
        let start = offset.min(end);
        match state.read_range(&v, start..end).await {
            Ok(stream) => {
                let headers = data_headers(&v, end - start)?;
                let body = Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
                return Ok((StatusCode::OK, headers, body).into_response());
            }
            Err(e) if e.is_changed() && !retried => {
                retried = true;
                v = state.refresh_after_change(&url, pinned, e).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn info(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Result<Response> {
    let q = Query::parse(raw);
    let url = state.ufs.confine(q.required("path")?)?;
    let cached = state.lookup_info(&url, false).await?;
    Ok(json(&[state.with_percent(cached.info)]))
}

async fn files(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Result<Response> {
    let q = Query::parse(raw);
    let url = state.ufs.confine(q.required("path")?)?;
    let children = match state.meta.list(&url) {
        Some(c) => {
            Metrics::add(&state.metrics.metadata_hits, 1);
            c
        }
        None => {
            Metrics::add(&state.metrics.metadata_misses, 1);
            let c = state.ufs.list(&url).await?;
            state.meta.put_list(&url, &c);
            c
        }
    };
    let out: Vec<FileInfo> = children
        .into_iter()
        .map(|c| state.with_percent(c))
        .collect();
    Ok(json(&out))
}

async fn invalidate(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = Query::parse(raw);
    let url = state.ufs.confine(q.required("path")?)?;
    let recursive = q.bool("recursive")?;
    let entries = state.meta.invalidate(&url, recursive);
    let store = state.store.clone();
    let u = url.clone();
    let pages = tokio::task::spawn_blocking(move || {
        if recursive {
            store.remove_under(&u)
        } else {
            store.remove_url(&u, None)
        }
    })
    .await
    .map_err(|e| WorkerError::Internal(format!("invalidate task: {e}")))?;
    Ok(json(&serde_json::json!({
        "success": true,
        "message": format!("{url}: forgot {entries} metadata entries and {pages} cached pages"),
    })))
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let status = if state.shutting_down.load(Ordering::Relaxed) {
        "shutting_down"
    } else {
        "ok"
    };
    json(&serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "mounts": state.ufs.mounts(),
        "page_size": state.store.page_size(),
        "worker_id": state.identity.uuid().to_string(),
        "cluster": state.config.cluster_name,
        "registration": state.registration.borrow().as_str(),
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.store.gauges());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
