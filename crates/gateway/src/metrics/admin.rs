//! `GET /admin/metrics`: the security counters in the Prometheus text format (version 0.0.4), for
//! `admin` and `auditor` principals of the operator tenant (`auth.operator_tenant`; a scraper
//! authenticates with a key like any client). The counters are process-wide, across every
//! tenant, so another tenant's admin or auditor is refused with 403 rather than shown them.
//!
//! The counters are process-wide atomics ([`COUNTERS`], here) that each security event of
//! `middleware::events` counts as it is emitted: failed authentications, lockouts, break-glass requests, and
//! refusals by each rate limit or quota. The metrics listener serves them too, under the same
//! names ([`mirror_security_counters`] copies them into the recorder when a scrape comes).
//! Here they are rendered by hand, five counters of four lines each, so that this route works
//! whether or not the process records metrics (`metrics.listen` empty).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::guards::ratelimit::Limit;

/// The process-wide security counters, counted by `middleware::events` alone.
#[derive(Debug)]
pub struct Counters {
    pub auth_failures: AtomicU64,
    /// Failed authentications folded into `suppressed: N` summaries instead of being written.
    pub auth_failures_folded: AtomicU64,
    pub lockouts: AtomicU64,
    pub break_glass: AtomicU64,
    /// Requests refused by each bound, in [`Limit::ALL`] order.
    pub rate_limited: [AtomicU64; 4],
}

pub static COUNTERS: Counters = Counters {
    auth_failures: AtomicU64::new(0),
    auth_failures_folded: AtomicU64::new(0),
    lockouts: AtomicU64::new(0),
    break_glass: AtomicU64::new(0),
    rate_limited: [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ],
};

fn limit_label(l: Limit) -> &'static str {
    match l {
        Limit::Requests => "requests_per_minute",
        Limit::Tokens => "tokens_per_minute",
        Limit::TokensPerDay => "tokens_per_day",
        Limit::Concurrency => "concurrent_requests",
    }
}

/// The security counters' names and help texts, in the order they are rendered.
pub const SECURITY_COUNTERS: &[(&str, &str)] = &[
    (
        "wardgate_auth_failures_total",
        "Requests refused for a missing, unknown, revoked, expired or invalid credential.",
    ),
    (
        "wardgate_auth_failures_folded_total",
        "Failed authentications audited in a per-address `suppressed: N` summary event instead of one by one.",
    ),
    (
        "wardgate_lockouts_total",
        "Client addresses or key prefixes locked out after repeated failed authentications.",
    ),
    (
        "wardgate_break_glass_requests_total",
        "Requests made with break-glass (emergency) access, refused ones included.",
    ),
    (
        "wardgate_rate_limited_total",
        "Requests refused with 429 by a rate limit or quota, by the bound that refused them.",
    ),
];

/// The counters' values now, without labels (each but the last of [`SECURITY_COUNTERS`]).
fn plain_counters() -> [u64; 4] {
    [
        COUNTERS.auth_failures.load(Ordering::Relaxed),
        COUNTERS.auth_failures_folded.load(Ordering::Relaxed),
        COUNTERS.lockouts.load(Ordering::Relaxed),
        COUNTERS.break_glass.load(Ordering::Relaxed),
    ]
}

/// Copies the security counters into the metrics recorder (each series exists from the first
/// scrape, at 0 until something is counted).
pub fn mirror_security_counters() {
    for ((name, _), n) in SECURITY_COUNTERS.iter().zip(plain_counters()) {
        metrics::counter!(*name).absolute(n);
    }
    for (l, n) in Limit::ALL.iter().zip(&COUNTERS.rate_limited) {
        metrics::counter!(SECURITY_COUNTERS[4].0, "limit" => limit_label(*l))
            .absolute(n.load(Ordering::Relaxed));
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
    for ((name, help), n) in SECURITY_COUNTERS.iter().zip(plain_counters()) {
        counter(&mut out, name, help, &[("", n)]);
    }
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
    let (name, help) = SECURITY_COUNTERS[4];
    counter(&mut out, name, help, &samples);
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
