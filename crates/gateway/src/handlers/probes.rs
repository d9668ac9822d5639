//! Liveness and readiness, the only routes that need no credential. They reveal nothing but
//! up/down: no model names, no backend addresses.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// The process is alive.
pub async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Storage answers and every configured model has at least one healthy backend (with no
/// configured models: at least one backend is healthy).
pub async fn ready(State(state): State<AppState>) -> Response {
    let storage = state.store_health.ping().await.is_ok();
    let mut configured = state.catalog.configured_routes().peekable();
    let models = if configured.peek().is_some() {
        configured.all(|r| r.is_ready())
    } else {
        state.catalog.backends().iter().any(|b| b.is_healthy())
    };
    let preloaded = state.preloaded.load(std::sync::atomic::Ordering::Relaxed);
    let ready = storage && models && preloaded;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "storage": storage, "backends": models, "models_loaded": preloaded})),
    )
        .into_response()
}
