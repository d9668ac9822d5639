//! `GET /admin/metrics`: the security counters in the Prometheus text format (version 0.0.4), for
//! `admin` and `auditor` principals of the operator tenant (`auth.operator_tenant`; a scraper
//! authenticates with a key like any client). The counters are process-wide, across every
//! tenant, so another tenant's admin or auditor is refused with 403 rather than shown them.
//!
//! The counters are process-wide atomics (`middleware::events::COUNTERS`) that each security
//! event counts as it is emitted: failed authentications, lockouts, break-glass requests, and
//! refusals by each rate limit or quota.
//! They are rendered here by hand because there are only a few and the format is four lines
//! each; the `metrics` crate and its Prometheus exporter take over when the gateway gets its
//! full instrumentation (latencies, backends, engine), keeping these names.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::guards::ratelimit::Limit;
use crate::middleware::events::COUNTERS;

fn limit_label(l: Limit) -> &'static str {
    match l {
        Limit::Requests => "requests_per_minute",
        Limit::Tokens => "tokens_per_minute",
        Limit::TokensPerDay => "tokens_per_day",
        Limit::Concurrency => "concurrent_requests",
    }
}

fn counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The exposition text.
pub fn render() -> String {
    let mut out = String::with_capacity(1024);
    counter(
        &mut out,
        "wardgate_auth_failures_total",
        "Requests refused for a missing, unknown, revoked, expired or invalid credential.",
        &[("", COUNTERS.auth_failures.load(Ordering::Relaxed))],
    );
    counter(
        &mut out,
        "wardgate_auth_failures_folded_total",
        "Failed authentications audited in a per-address `suppressed: N` summary event instead of one by one.",
        &[("", COUNTERS.auth_failures_folded.load(Ordering::Relaxed))],
    );
    counter(
        &mut out,
        "wardgate_lockouts_total",
        "Client addresses or key prefixes locked out after repeated failed authentications.",
        &[("", COUNTERS.lockouts.load(Ordering::Relaxed))],
    );
    counter(
        &mut out,
        "wardgate_break_glass_requests_total",
        "Requests made with break-glass (emergency) access, refused ones included.",
        &[("", COUNTERS.break_glass.load(Ordering::Relaxed))],
    );
    let labels: Vec<(String, u64)> = Limit::ALL
        .iter()
        .zip(&COUNTERS.rate_limited)
        .map(|(l, n)| {
            (
                format!("{{limit=\"{}\"}}", limit_label(*l)),
                n.load(Ordering::Relaxed),
            )
        })
        .collect();
    let samples: Vec<(&str, u64)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    counter(
        &mut out,
        "wardgate_rate_limited_total",
        "Requests refused with 429 by a rate limit or quota, by the bound that refused them.",
        &samples,
    );
    out
}

/// `GET /admin/metrics`.
#[utoipa::path(
    get,
    path = "/admin/metrics",
    tag = "admin",
    responses(
        (status = 200, description = "The security counters, Prometheus text format 0.0.4.", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        crate::openapi::OpenAiErrors,
    ),
    security(("bearer" = []))
)]
pub async fn handler(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    axum::Extension(p): axum::Extension<crate::identity::principal::Principal>,
) -> Response {
    if p.tenant != state.config.operator_tenant {
        return crate::error::ApiError::Forbidden.to_response(crate::error::Front::OpenAi);
    }
    let mut resp = render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
