//! `GET /v1/stats?since=<unix seconds>`: counter deltas since then (since
//! the worker started without `since`), from [`crate::history`].

use crate::error::Result;
use crate::history::MIN_GAP;
use crate::http::{json, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// The stats route.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/stats", get(stats))
}

async fn stats(State(state): State<Arc<AppState>>, q: Query) -> Result<Response> {
    let since = q.unix_seconds("since")?.unwrap_or(0.0);
    let metrics = state.cache.metrics();
    let window = state.history.since(metrics, since);
    state.history.sample(metrics, MIN_GAP);
    Ok(json(&window))
}
