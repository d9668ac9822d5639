//! Request handlers, one module per front, plus the unauthenticated probes.

pub mod ollama;
pub mod openai;
pub mod probes;

use std::sync::Arc;
use std::time::Instant;

use wardgate_backends::{Route, Served};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::record::RequestRecord;
use crate::state::AppState;
use crate::stream::Drive;

/// The deadline of a request: its start plus the configured hard limit.
pub(crate) fn deadline(state: &AppState, record: &RequestRecord) -> Instant {
    record.started + state.config.request_timeout
}

/// The first-token limit, never past the request deadline.
pub(crate) fn first_token_limit(state: &AppState, deadline: Instant) -> std::time::Duration {
    state
        .config
        .first_token_timeout
        .min(deadline.saturating_duration_since(Instant::now()))
}

pub(crate) fn drive(state: &AppState, record: &Arc<RequestRecord>, prompt_estimate: u64) -> Drive {
    Drive {
        deadline: deadline(state, record),
        record: record.clone(),
        prompt_estimate,
    }
}

pub(crate) fn note_served(record: &RequestRecord, route: &Route, served: &Served) {
    record.set_model(&route.name);
    record.set_served(&served.backend, &served.upstream_model, served.attempts);
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Takes one request from the key's rate allowance.
pub(crate) async fn check_rate(state: &AppState, p: &Principal) -> Result<(), ApiError> {
    if let Some(l) = &state.limiter {
        if let Err(r) = l.acquire(&p.key_id).await {
            return Err(ApiError::RateLimited {
                retry_after_secs: r.0.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
    }
    Ok(())
}
