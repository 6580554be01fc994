//! The worker's router: every route group of [`crate::routes`] merged over
//! one shared [`AppState`], behind one guard (auth, shutdown, request
//! metrics), with a JSON 404 for unknown endpoints.
//!
//! Tests drive [`app`] with `tower::ServiceExt::oneshot`; the server adds
//! only the listener.

use crate::error::WorkerError;
use crate::routes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub use crate::state::AppState;
pub use alluxiofs_core::protocol::{FILE_SIZE_HEADER, VERSION_HEADER};

/// The worker's router.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(routes::data::router())
        .merge(routes::batch::router())
        .merge(routes::meta::router())
        .merge(routes::health::router())
        .merge(routes::write::router())
        .merge(routes::stats::router())
        .merge(routes::manage::router())
        .merge(routes::load::router())
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
        .cache
        .metrics()
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
