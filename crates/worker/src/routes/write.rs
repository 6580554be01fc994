//! `PUT /v1/write?path=<url>`: write-through of the request body
//! ([`crate::write::write_through`]), answering its
//! [`crate::write::WriteOutcome`] as JSON and counting the write for
//! `/v1/stats`.

use crate::error::Result;
use crate::http::{json, Query};
use crate::state::AppState;
use crate::write::write_through;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::put;
use axum::Router;
use std::sync::Arc;

/// The write route.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/write", put(write))
}

async fn write(State(state): State<Arc<AppState>>, q: Query, body: Body) -> Result<Response> {
    let url = state.cache.confine(q.required("path")?)?;
    let outcome = write_through(&state.cache, &url, body.into_data_stream()).await?;
    state.history.note_write(outcome.size);
    state.history.note_pages(outcome.pages_cached);
    Ok(json(&outcome))
}
