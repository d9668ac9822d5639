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
    /// The Redis instances share (`rate_limit.backend = "redis"`): `up` when it answers a
    /// `PING` and no command has failed in the last second, `down` otherwise, `not configured`
    /// without one. While it is down, `ready` is false where rate limits or quotas are on
    /// (those requests are refused with 503), and true but `degraded` where Redis only
    /// carries what falls back to this instance alone.
    pub redis: RedisStatus,
    /// Queued events of the shared audit log wait while no instance sequences them (the alert
    /// `audit_sequencing_stalled`): committed, but not yet signed or witnessed. The instance
    /// still serves (its own events are queued), so `ready` stays as it is, and `degraded`
    /// is true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub audit_sequencing_stalled: bool,
    /// Ready, but serving without what instances share through Redis: failed log-ins are
    /// counted and locked out per instance, a key revoked elsewhere is refused within
    /// `auth.key_cache_ttl_unconfirmed` rather than at once, and `wardgate llm` checks nonces
    /// against its own cache only.
    pub degraded: bool,
}

/// The shared Redis as `GET /ready` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub enum RedisStatus {
    #[serde(rename = "up")]
    Up,
    #[serde(rename = "down")]
    Down,
    #[serde(rename = "not configured")]
    NotConfigured,
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

/// Storage answers, every configured model has at least one healthy backend (with no
/// configured models: at least one backend is healthy), and the shared Redis answers where
/// requests need it to be admitted (rate limits or quotas on with `rate_limit.backend =
/// "redis"`); where they do not, a Redis that is down leaves the service ready but degraded.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "probes",
    responses(
        (status = 200, description = "Ready to serve (`degraded`: without the state instances share through Redis, which falls back to this instance alone).", body = Readiness),
        (status = 503, description = "Not ready; the body says which condition fails.", body = Readiness),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (storage, redis) = tokio::join!(state.store_health.ping(), redis_status(&state));
    let storage = storage.is_ok();
    let mut configured = state.catalog.configured_routes().peekable();
    let models = if configured.peek().is_some() {
        configured.all(|r| r.is_ready())
    } else {
        state.catalog.backends().iter().any(|b| b.is_healthy())
    };
    let preloaded = state.preloaded.load(std::sync::atomic::Ordering::Relaxed);
    let audit_fault = state.audit.fault().map(wardgate_audit::AuditFault::as_str);
    let redis_down = redis == RedisStatus::Down;
    let stalled = state.audit.sequencing_stalled();
    let admits = !(redis_down && state.config.admission_needs_redis());
    let ready = storage && models && preloaded && admits && audit_fault.is_none();
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
        redis,
        audit_sequencing_stalled: stalled,
        degraded: ready && (redis_down || stalled),
    };
    (status, axum::Json(body)).into_response()
}

async fn redis_status(state: &AppState) -> RedisStatus {
    match &state.redis {
        None => RedisStatus::NotConfigured,
        Some(r) if r.is_up().await => RedisStatus::Up,
        Some(_) => RedisStatus::Down,
    }
}
