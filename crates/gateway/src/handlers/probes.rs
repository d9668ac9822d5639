//! Liveness and readiness, the only routes (with `/openapi.json`) that need no credential.
//! They reveal nothing but up/down: no model names, no backend addresses.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The answer of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// The answer of `GET /ready`: each condition, and whether all hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// The store answers.
    pub storage: bool,
    /// Every configured model has a healthy backend (with none configured: some backend is
    /// healthy).
    pub backends: bool,
    /// The embedded engine's preload list is loaded.
    pub models_loaded: bool,
    /// The audit log is this instance's to write: with a shared log, its signing key signed
    /// the log and the log never went back on what it saw (else `audit_fault` says which).
    pub audit: bool,
    /// Why the audit log is not (`signing_key_mismatch`, `rolled_back`); absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_fault: Option<&'static str>,
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/health",
    tag = "probes",
    responses((status = 200, description = "The process is alive.", body = Health))
)]
pub async fn health() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

/// Storage answers and every configured model has at least one healthy backend (with no
/// configured models: at least one backend is healthy).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "probes",
    responses(
        (status = 200, description = "Ready to serve.", body = Readiness),
        (status = 503, description = "Not ready; the body says which condition fails.", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let storage = state.store_health.ping().await.is_ok();
    let mut configured = state.catalog.configured_routes().peekable();
    let models = if configured.peek().is_some() {
        configured.all(|r| r.is_ready())
    } else {
        state.catalog.backends().iter().any(|b| b.is_healthy())
    };
    let preloaded = state.preloaded.load(std::sync::atomic::Ordering::Relaxed);
    let audit_fault = state.audit.fault().map(wardgate_audit::AuditFault::as_str);
    let ready = storage && models && preloaded && audit_fault.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        storage,
        backends: models,
        models_loaded: preloaded,
        audit: audit_fault.is_none(),
        audit_fault,
    };
    (status, axum::Json(body)).into_response()
}
