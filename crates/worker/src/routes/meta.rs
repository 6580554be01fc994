//! Metadata endpoints: `GET /v1/info?path=` (one file or directory),
//! `GET /v1/files?path=` (a directory's entries) and
//! `POST /v1/invalidate?path=[&recursive=]` (forget metadata and pages).

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
