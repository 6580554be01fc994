//! Keeping and letting go over HTTP: pin, unpin, TTL, free and the rules
//! (`docs/http-api.md`, `docs/eviction.md`).
//!
//! Every handler confines its `path` to the worker's mounts (403 outside
//! them) and normalizes it, then acts on the page store (file I/O runs on
//! the blocking pool). Answers are JSON with the pages and bytes affected.
//! A refusal of the store ([`KeepError`]) becomes a [`WorkerError`] (507
//! when a pin would exceed the pin quota, 409 when a free would remove
//! pinned pages without `force=true`), answered like every other error.

use crate::error::{Result, WorkerError};
use crate::http::{json, Query};
use crate::state::AppState;
use crate::store::KeepError;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

/// The keeping routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/pin", post(pin))
        .route("/v1/unpin", post(unpin))
        .route("/v1/ttl", post(ttl))
        .route("/v1/free", post(free))
        .route("/v1/rules", get(rules))
}

/// The error a refusal of the store answers with.
fn refused(e: KeepError) -> WorkerError {
    tracing::info!("keeping request refused: {e}");
    match e {
        KeepError::PinQuota { .. } => WorkerError::QuotaExceeded(e.to_string()),
        KeepError::Pinned { .. } => WorkerError::Conflict(e.to_string()),
        KeepError::Save(_) => WorkerError::Internal(e.to_string()),
    }
}

/// Run the store call `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, KeepError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WorkerError::Internal(format!("keeping task: {e}")))?
        .map_err(refused)
}

/// `POST /v1/pin?path=URL`: pin a path or prefix.
async fn pin(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    let store = state.cache.store().clone();
    let u = url.clone();
    let out = blocking(move || store.pin(&u)).await?;
    let view = state.cache.store().rules();
    Ok(json(&serde_json::json!({
        "path": url,
        "pinned_pages": out.pages,
        "pinned_bytes_added": out.bytes,
        "new_rule": out.new_rule,
        "pinned_bytes": view.pinned_bytes,
        "pin_quota_bytes": view.pin_quota_bytes,
    })))
}

/// `POST /v1/unpin?path=URL&exact=false`: remove the pins at or under a
/// path (with `exact`, only the pin of the path itself).
async fn unpin(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    let store = state.cache.store().clone();
    let u = url.clone();
    let exact = q.bool_or("exact", false)?;
    let (rules, out) = blocking(move || store.unpin(&u, exact)).await?;
    Ok(json(&serde_json::json!({
        "path": url,
        "rules_removed": rules,
        "unpinned_pages": out.pages,
        "unpinned_bytes": out.bytes,
        "pinned_bytes": state.cache.store().rules().pinned_bytes,
    })))
}

/// The longest TTL: 100 years (a longer one is a mistake, or no TTL).
const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

/// `POST /v1/ttl?path=URL&seconds=N`: pages of the path expire N seconds
/// after they were cached; 0 clears the TTL.
async fn ttl(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    q.required("seconds")?;
    let secs = q.u64("seconds")?.unwrap_or(0);
    if secs > MAX_TTL_SECS {
        return Err(WorkerError::BadRequest(format!(
            "seconds={secs}: a TTL is at most {MAX_TTL_SECS} s (100 years); 0 clears it"
        )));
    }
    let ttl = (secs > 0).then(|| Duration::from_secs(secs));
    let store = state.cache.store().clone();
    let u = url.clone();
    blocking(move || store.set_ttl(&u, ttl)).await?;
    Ok(json(
        &serde_json::json!({ "path": url, "ttl_seconds": secs }),
    ))
}

/// `POST /v1/free?path=URL&recursive=true&force=false`: delete cached pages
/// now. `recursive` (default true) covers every file under the path.
async fn free(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    let recursive = q.bool_or("recursive", true)?;
    let force = q.bool_or("force", false)?;
    let store = state.cache.store().clone();
    let u = url.clone();
    let out = blocking(move || store.free(&u, recursive, force)).await?;
    Ok(json(&serde_json::json!({
        "path": url,
        "freed_pages": out.pages,
        "freed_bytes": out.bytes,
    })))
}

/// `GET /v1/rules`: pins, TTLs, quotas and their use.
async fn rules(State(state): State<Arc<AppState>>) -> Response {
    json(&state.cache.store().rules())
}
