//! Metadata endpoints: `GET /v1/info?path=` (one file or directory),
//! `GET /v1/files?path=` (a directory's entries),
//! `POST /v1/invalidate?path=[&recursive=]` (forget metadata and pages) and
//! `GET /v1/node?path=` (the worker that owns a path: `{"Host",
//! "HttpServerPort"}`, as Alluxio's Python client 1.1 asks before each
//! call, and must when it reaches the workers through one load-balanced
//! name).

use crate::error::Result;
use crate::http::{json, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The metadata routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/files", get(files))
        .route("/v1/invalidate", post(invalidate))
        .route("/v1/node", get(node))
}

/// The owner of `path` by this worker's view of the cluster (the first
/// worker the placement names); this worker when it knows no cluster (no
/// etcd, or membership not read yet).
async fn node(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    let owner = state
        .cluster()?
        .client()
        .and_then(|c| c.workers_for(&url).into_iter().next());
    let (host, port) = match owner {
        Some(w) => (w.host, w.port),
        None => (
            state.config.resolve_advertise_host(),
            state.http_port.get().copied().unwrap_or(state.config.port),
        ),
    };
    Ok(json(
        &serde_json::json!({ "Host": host, "HttpServerPort": port }),
    ))
}

async fn info(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    Ok(json(&[state.cache.info(&url).await?]))
}

async fn files(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    Ok(json(&state.cache.list(&url).await?))
}

async fn invalidate(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    let recursive = q.bool_or("recursive", false)?;
    let (entries, pages) = state.cache.invalidate(&url, recursive).await?;
    Ok(json(&serde_json::json!({
        "success": true,
        "message": format!("{url}: forgot {entries} metadata entries and {pages} cached pages"),
    })))
}
