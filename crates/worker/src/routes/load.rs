//! Preloading over HTTP (`docs/load.md`): `POST /v1/load/file` loads one
//! file (or a page-aligned range of it) synchronously into this worker;
//! `GET /v1/load?path=&opType=submit|progress|stop` is Alluxio's
//! asynchronous load job API. The loading itself is [`crate::load`]'s.

use crate::error::{Result, WorkerError};
use crate::http::{json, Query};
use crate::load::{load_range, Submitted};
use crate::state::AppState;
use alluxiofs_core::client::WorkerAddr;
use alluxiofs_core::load::{Bandwidth, LoadOptions};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use std::sync::Arc;

/// The load routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/load", get(alluxio_load))
        .route("/v1/load/file", post(load_file))
}

/// `POST /v1/load/file?path=URL[&offset=&length=][&bandwidth=]`: load a
/// file (or a range of it) into this worker's cache, then answer
/// [`alluxiofs_core::load::FileLoadResult`] as JSON.
async fn load_file(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    state.cache.meta().remember(&url);
    let offset = q.u64("offset")?.unwrap_or(0);
    let length = q.u64("length")?;
    let bw = q
        .size("bandwidth")?
        .filter(|b| *b > 0)
        .map(|b| Bandwidth::new(b, b));
    let limits: Vec<&Bandwidth> = state.loads.limit().into_iter().chain(bw.as_ref()).collect();
    let r = load_range(&state.cache, &url, offset, length, &limits).await?;
    Ok(json(&r))
}

/// `GET /v1/load?path=URL&opType=submit|progress|stop`: Alluxio's load job
/// API. `submit` answers `{"success","jobId","path","message"}`, `stop`
/// `{"success","path","message"}`, `progress`
/// `{"jobState","path","message","respProperties":{...}}`.
async fn alluxio_load(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Query,
) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    let op = q
        .str("opType")
        .map(|s| s.to_ascii_lowercase())
        .ok_or_else(|| {
            WorkerError::BadRequest(
                "missing query parameter \"opType\" (submit, progress or stop)".into(),
            )
        })?;
    match op.as_str() {
        "submit" => submit(&state, &headers, &q, url),
        "progress" => {
            let job = state.loads.get(&url).ok_or_else(|| WorkerError::NotFound {
                path: url.clone(),
                hint: ": no load job for this path on this worker".into(),
            })?;
            let text = !q
                .str("progressFormat")
                .is_some_and(|f| f.eq_ignore_ascii_case("json"));
            Ok(json(&job.progress(text)))
        }
        "stop" => {
            let stopped = state.loads.stop(&url);
            Ok(json(&json!({
                "success": stopped,
                "path": url,
                "message": if stopped {
                    format!("load job of {url} stopped")
                } else {
                    format!("no running load job of {url}")
                },
            })))
        }
        other => Err(WorkerError::BadRequest(format!(
            "opType {other:?} is not one of submit, progress, stop"
        ))),
    }
}

fn submit(state: &Arc<AppState>, headers: &HeaderMap, q: &Query, url: String) -> Result<Response> {
    let bandwidth = q.size("bandwidth")?.filter(|b| *b > 0);
    let replicas = q.u64("replicas")?.unwrap_or(1).max(1) as usize;
    let concurrency = q.u64("concurrency")?.unwrap_or(4).max(1) as usize;
    let recursive = q.str("recursive").is_none_or(|v| v != "false");
    let opts = LoadOptions {
        recursive,
        replicas,
        concurrency,
        bandwidth,
        ..LoadOptions::default()
    };
    let this = self_address(state, headers);
    Ok(
        match state.loads.submit(&state.cache, url.clone(), opts, this) {
            Submitted::AlreadyRunning(old) => json(&json!({
                "success": false,
                "jobId": old.id,
                "path": url,
                "message": format!("a load job of {url} is already running (jobId {})", old.id),
            })),
            Submitted::Started(job) => json(&json!({
                "success": true,
                "jobId": job.id,
                "path": url,
                "message": format!("load job {} of {url} submitted", job.id),
            })),
        },
    )
}

/// How clients reach this worker: the `Host` the request came to, else the
/// configured address.
fn self_address(state: &AppState, headers: &HeaderMap) -> WorkerAddr {
    let from_header = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (host, port) = h.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            Some((host.trim_matches(['[', ']']).to_string(), port))
        });
    let (host, port) =
        from_header.unwrap_or_else(|| (state.config.resolve_advertise_host(), state.config.port));
    WorkerAddr::from_host_port(&host, port)
}
