//! Data endpoints: `GET /v1/file/{path_id}/page/{index}` (one page, or a
//! slice of it) and `GET /v1/range/{path_id}` (a streamed byte range).
//!
//! Both name the file by its `path_id` (SHA-256 of the normalized URL) and
//! may pin a `version`; the answer carries the file size and the version
//! its bytes belong to. The URL's digest is computed once per request: it
//! both checks `ufsFullPath` against `path_id` and feeds the `path_id` map.

use crate::error::{Result, WorkerError};
use crate::http::{data_headers, Query};
use crate::metrics::Metrics;
use crate::state::AppState;
use alluxiofs_core::path::path_id;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use std::sync::Arc;

/// The data routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/file/{path_id}/page/{index}", get(page))
        .route("/v1/range/{path_id}", get(range))
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
    let cache = &state.cache;
    match q.str("ufsFullPath") {
        Some(raw) => {
            let url = cache.confine(raw)?;
            let expected = path_id(&url);
            if !expected.eq_ignore_ascii_case(id) {
                return Err(WorkerError::BadRequest(format!(
                    "path_id {id} does not match ufsFullPath {url:?} (expected {expected})"
                )));
            }
            cache.meta().remember_as(expected, &url);
            Ok(url)
        }
        None => {
            let url = cache
                .url_of_path_id(id)
                .ok_or_else(|| WorkerError::NotFound {
                    path: id.to_string(),
                    hint: ": unknown path_id; pass ufsFullPath or call /v1/info first".into(),
                })?;
            cache.confine(&url)
        }
    }
}

async fn page(
    State(state): State<Arc<AppState>>,
    Path((id, index)): Path<(String, String)>,
    q: Query,
) -> Result<Response> {
    let index: u64 = index
        .parse()
        .map_err(|_| WorkerError::BadRequest(format!("bad page index {index:?}")))?;
    let url = resolve_url(&state, &id, &q)?;
    let offset = q.u64("offset")?.unwrap_or(0);
    let length = q.u64("length")?;
    let cache = &state.cache;
    let page_size = cache.page_size();
    if offset >= page_size && offset > 0 {
        return Err(WorkerError::BadRequest(format!(
            "offset {offset} is outside the page (page size {page_size})"
        )));
    }
    // The page's bytes: a cold file's lookup GETs them with its metadata.
    let want = index
        .checked_mul(page_size)
        .map(|s| s..s.saturating_add(page_size));
    let (v, data) = cache
        .with_version_at(&url, q.str("version"), want, |v| async move {
            cache.read_page(&v, index).await
        })
        .await?;
    let start = (offset as usize).min(data.len());
    let end = match length {
        Some(l) => start.saturating_add(l as usize).min(data.len()),
        None => data.len(),
    };
    let body = data.slice(start..end);
    Metrics::add(&cache.metrics().bytes_served, body.len() as u64);
    let headers = data_headers(&v, body.len() as u64)?;
    Ok((StatusCode::OK, headers, body).into_response())
}

async fn range(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Query,
) -> Result<Response> {
    q.required("ufsFullPath")?;
    let url = resolve_url(&state, &id, &q)?;
    let offset = q.u64("offset")?.unwrap_or(0);
    let length = q.u64("length")?;
    let cache = &state.cache;
    // The bytes wanted (cut to the file once its size is known): a cold
    // file's lookup GETs their first pages with its metadata.
    let want = offset..length.map_or(u64::MAX, |l| offset.saturating_add(l));
    let (v, (len, stream)) = cache
        .with_version_at(&url, q.str("version"), Some(want), |v| async move {
            let end = match length {
                Some(l) => offset.saturating_add(l).min(v.size),
                None => v.size,
            };
            let start = offset.min(end);
            let stream = cache.read_range(&v, start..end).await?;
            Ok((end - start, stream))
        })
        .await?;
    let headers = data_headers(&v, len)?;
    let body = Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    Ok((StatusCode::OK, headers, body).into_response())
}
