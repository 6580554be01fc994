//! Liveness and metrics: `GET /healthz` (open, without the auth token) and
//! `GET /metrics` (Prometheus text, `docs/metrics.md`).

use crate::http::json;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The health and metrics routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
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
        "mounts": state.cache.ufs().mounts(),
        "page_size": state.cache.page_size(),
        "worker_id": state.identity.uuid().to_string(),
        "cluster": state.config.cluster_name,
        "registration": state.registration.borrow().as_str(),
        "local_socket": state.local_socket.get().map(|p| p.display().to_string()),
        "s3_port": state.s3_port.get(),
        "boot_id": alluxiofs_core::local::boot_id(),
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let cache = &state.cache;
    let text = cache
        .metrics()
        .render(cache.store().gauges(), cache.meta().gauges());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
