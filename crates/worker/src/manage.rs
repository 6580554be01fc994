//! Keeping and letting go over HTTP: pin, unpin, TTL, free and the rules
//! (`docs/http-api.md`, `docs/eviction.md`).
//!
//! Every handler confines its `path` to the worker's mounts (403 outside
//! them) and normalizes it, then acts on the page store (file I/O runs on
//! the blocking pool). Answers are JSON with the pages and bytes affected.
//! Refusals answer `{"message"}`: 507 when a pin would exceed the pin
//! quota, 409 when a free would remove pinned pages without `force=true`.

use crate::app::AppState;
use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::store::{KeepError, StoreOptions};
use crate::ufs::Ufs;
use alluxiofs_core::info::ErrorBody;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the TTL sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The page store options of `config`: policy, pin quota, and the mount
/// quotas normalized and checked to lie inside the mounts.
pub fn store_options(config: &WorkerConfig, ufs: &Ufs) -> Result<StoreOptions> {
    let mut mount_quotas = Vec::new();
    for (url, bytes) in &config.mount_quotas {
        let normalized = ufs.confine(url).map_err(|e| {
            WorkerError::Config(format!(
                "mount quota {url:?}: {e} (mounts: {:?})",
                ufs.mounts()
            ))
        })?;
        mount_quotas.push((normalized, *bytes));
    }
    Ok(StoreOptions {
        policy: config.eviction_policy,
        pin_quota: config.pin_quota,
        mount_quotas,
    })
}

fn query(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn flag(q: &HashMap<String, String>, name: &str, default: bool) -> Result<bool> {
    match q.get(name).map(|s| s.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) if v == "true" || v == "1" => Ok(true),
        Some(v) if v == "false" || v == "0" => Ok(false),
        Some(v) => Err(WorkerError::BadRequest(format!(
            "query parameter {name:?} must be true or false, got {v:?}"
        ))),
    }
}

/// The confined, normalized `path` parameter.
fn path(state: &AppState, q: &HashMap<String, String>) -> Result<String> {
    let raw = q
        .get("path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| WorkerError::BadRequest("missing query parameter \"path\"".into()))?;
    state.ufs.confine(raw)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn refused(e: KeepError) -> Response {
    let status = match e {
        KeepError::PinQuota { .. } => StatusCode::INSUFFICIENT_STORAGE,
        KeepError::Pinned { .. } => StatusCode::CONFLICT,
        KeepError::Save(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = e.to_string();
    tracing::info!(
        status = status.as_u16(),
        "keeping request refused: {message}"
    );
    let body = serde_json::to_vec(&ErrorBody::new(message)).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WorkerError::Internal(format!("keeping task: {e}")))
}

/// `POST /v1/pin?path=URL`: pin a path or prefix.
pub async fn pin(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Result<Response> {
    let q = query(raw);
    let url = path(&state, &q)?;
    let store = state.store.clone();
    let u = url.clone();
    Ok(match blocking(move || store.pin(&u)).await? {
        Ok(out) => {
            let view = state.store.rules();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "path": url,
                    "pinned_pages": out.pages,
                    "pinned_bytes_added": out.bytes,
                    "pinned_bytes": view.pinned_bytes,
                    "pin_quota_bytes": view.pin_quota_bytes,
                }),
            )
        }
        Err(e) => refused(e),
    })
}

/// `POST /v1/unpin?path=URL`: remove the pins at or under a path.
pub async fn unpin(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = query(raw);
    let url = path(&state, &q)?;
    let store = state.store.clone();
    let u = url.clone();
    Ok(match blocking(move || store.unpin(&u)).await? {
        Ok((rules, out)) => json(
            StatusCode::OK,
            &serde_json::json!({
                "path": url,
                "rules_removed": rules,
                "unpinned_pages": out.pages,
                "unpinned_bytes": out.bytes,
                "pinned_bytes": state.store.rules().pinned_bytes,
            }),
        ),
        Err(e) => refused(e),
    })
}

/// `POST /v1/ttl?path=URL&seconds=N`: pages of the path expire N seconds
/// after they were cached; 0 clears the TTL.
pub async fn ttl(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Result<Response> {
    let q = query(raw);
    let url = path(&state, &q)?;
    let raw_secs = q
        .get("seconds")
        .ok_or_else(|| WorkerError::BadRequest("missing query parameter \"seconds\"".into()))?;
    let secs: u64 = raw_secs.trim().parse().map_err(|_| {
        WorkerError::BadRequest(format!(
            "query parameter \"seconds\" must be a non-negative integer, got {raw_secs:?}"
        ))
    })?;
    let ttl = (secs > 0).then(|| Duration::from_secs(secs));
    let store = state.store.clone();
    let u = url.clone();
    Ok(match blocking(move || store.set_ttl(&u, ttl)).await? {
        Ok(()) => json(
            StatusCode::OK,
            &serde_json::json!({ "path": url, "ttl_seconds": secs }),
        ),
        Err(e) => refused(e),
    })
}

/// `POST /v1/free?path=URL&recursive=true&force=false`: delete cached pages
/// now. `recursive` (default true) covers every file under the path.
pub async fn free(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Result<Response> {
    let q = query(raw);
    let url = path(&state, &q)?;
    let recursive = flag(&q, "recursive", true)?;
    let force = flag(&q, "force", false)?;
    let store = state.store.clone();
    let u = url.clone();
    Ok(
        match blocking(move || store.free(&u, recursive, force)).await? {
            Ok(out) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "path": url,
                    "freed_pages": out.pages,
                    "freed_bytes": out.bytes,
                }),
            ),
            Err(e) => refused(e),
        },
    )
}

/// `GET /v1/rules`: pins, TTLs, quotas and their use.
pub async fn rules(State(state): State<Arc<AppState>>) -> Response {
    match serde_json::to_value(state.store.rules()) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => WorkerError::Internal(format!("JSON encoding: {e}")).into_response(),
    }
}
