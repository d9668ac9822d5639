//! What the metrics listener serves (`metrics.listen`, `/metrics`): the catalogue in
//! `docs/METRICS.md`, recorded through the `metrics` facade and rendered by
//! `metrics-exporter-prometheus`.
//!
//! One recorder per process, installed by the first role that starts with a metrics listener
//! ([`install`]); without one every recording below is a no-op of the facade, which is what
//! "metrics off" costs. Counters and histograms are recorded where things happen (a request's
//! end in `middleware::record`, a fallback in `wardgate_backends`, a group commit in
//! `wardgate_audit`); gauges that mirror state (backend health, breakers, the engine's slots,
//! the audit queue, certificate expiry) are read when a scrape comes ([`refresh`]), so they
//! cost nothing between scrapes.
//!
//! Invariant: no label holds a key, a prompt, PHI or any string a client chose. Model names
//! are recorded only once they resolved to a configured (or discovered) route, tenants only
//! under the cap of `metrics.tenant_label_limit`, routes only as the router's templates.

pub mod admin;
pub mod listener;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use admin::handler;

use crate::config::MetricsSettings;
use crate::serve::tls::Tls;
use crate::state::AppState;

pub const REQUEST_DURATION: &str = "gen_ai_server_request_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai_server_time_per_output_token_seconds";
pub const TOKEN_USAGE: &str = "gen_ai_client_token_usage";
pub const REQUESTS: &str = "wardgate_requests_total";
pub const OVERHEAD: &str = "wardgate_gateway_overhead_seconds";
pub const BACKEND_UP: &str = "wardgate_backend_up";
pub const BREAKER_STATE: &str = "wardgate_backend_breaker_state";
pub const ENGINE_QUEUE: &str = "wardgate_engine_queue_depth";
pub const ENGINE_SLOTS_BUSY: &str = "wardgate_engine_slots_busy";
pub const ENGINE_SLOTS: &str = "wardgate_engine_slots";
pub const ENGINE_KV_USE: &str = "wardgate_engine_kv_cache_usage_ratio";
pub use wardgate_engine::engine::metrics::{MODEL_LOAD, MODEL_LOAD_FAILURES};
pub const AUDIT_QUEUE: &str = "wardgate_audit_queue_length";
pub const SEQUENCER_LAG: &str = "wardgate_audit_sequencer_lag_seconds";
pub const SEQUENCING_STALLED: &str = "wardgate_audit_sequencing_stalled";
pub use crate::guards::phi_guard::PHI_FINDINGS;
pub const TLS_EXPIRY: &str = "wardgate_tls_certificate_expiry_timestamp_seconds";
pub const BUILD_INFO: &str = "wardgate_build_info";

/// The OpenTelemetry GenAI conventions' bucket boundaries (`ExplicitBucketBoundaries`).
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// wardgate's own: a gateway's cost is tens of microseconds to milliseconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const MODEL_LOAD_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). Called by a
/// role that starts with a metrics listener, before it serves.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (REQUEST_DURATION, DURATION_BUCKETS),
            (TIME_TO_FIRST_TOKEN, TTFT_BUCKETS),
            (TIME_PER_OUTPUT_TOKEN, TPOT_BUCKETS),
            (TOKEN_USAGE, TOKEN_BUCKETS),
            (OVERHEAD, OVERHEAD_BUCKETS),
            (MODEL_LOAD, MODEL_LOAD_BUCKETS),
            (
                wardgate_audit::metrics::COMMIT_SECONDS,
                wardgate_audit::metrics::COMMIT_BUCKETS,
            ),
        ] {
            // Only an empty bucket list is refused, and none of these is.
            builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(metric = name, error = %e, "histogram buckets refused");
                    PrometheusBuilder::new()
                }
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle.clone()
    })
}

/// Whether this process records metrics (a recorder is installed).
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "GenAI operations admitted to a backend: arrival to the last byte of the answer."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Streamed answers: arrival to the first content chunk."
    );
    describe_histogram!(
        TIME_PER_OUTPUT_TOKEN,
        Unit::Seconds,
        "Streamed answers: (duration - time to first token) / (output tokens - 1)."
    );
    describe_histogram!(
        TOKEN_USAGE,
        Unit::Count,
        "Tokens of each GenAI operation, by token type."
    );
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route, model, status class and tenant."
    );
    describe_histogram!(
        OVERHEAD,
        Unit::Seconds,
        "Time a request spent in wardgate itself: total minus the time waiting on the backend."
    );
    describe_counter!(
        wardgate_backends::catalog::FALLBACKS,
        Unit::Count,
        "Requests that moved on to a later link of their model's chain."
    );
    describe_gauge!(
        BACKEND_UP,
        "1 while a model's link on this replica is healthy and its breaker not open."
    );
    describe_gauge!(
        BREAKER_STATE,
        "The replica's circuit breaker: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(ENGINE_QUEUE, "Requests waiting for an engine slot.");
    describe_gauge!(ENGINE_SLOTS_BUSY, "Engine slots generating now.");
    describe_gauge!(
        ENGINE_SLOTS,
        "Slots of the loaded model (0 when not loaded)."
    );
    describe_gauge!(ENGINE_KV_USE, "Share of the model's KV cache cells in use.");
    describe_histogram!(MODEL_LOAD, Unit::Seconds, "Successful model loads.");
    describe_counter!(MODEL_LOAD_FAILURES, Unit::Count, "Model loads that failed.");
    describe_histogram!(
        wardgate_audit::metrics::COMMIT_SECONDS,
        Unit::Seconds,
        "One group commit of the audit writer, from the batch's start to durable."
    );
    describe_counter!(
        wardgate_audit::metrics::COMMIT_FAILURES,
        Unit::Count,
        "Audit group commits that failed (their requests failed closed)."
    );
    describe_gauge!(AUDIT_QUEUE, "Events waiting in the audit writer's queue.");
    describe_gauge!(
        SEQUENCER_LAG,
        Unit::Seconds,
        "Age of the oldest event queued in the shared audit log (PostgreSQL)."
    );
    describe_gauge!(
        SEQUENCING_STALLED,
        "1 while audit_sequencing_stalled is raised, else 0."
    );
    describe_counter!(
        PHI_FINDINGS,
        Unit::Count,
        "PHI findings in requests, by category and by the mode that acted on them."
    );
    describe_gauge!(
        TLS_EXPIRY,
        Unit::Seconds,
        "The serving certificate's notAfter, as Unix time."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the label says which release runs.");
    for (name, help) in admin::SECURITY_COUNTERS {
        describe_counter!(*name, Unit::Count, *help);
    }
}

/// The tenant label's settings, as the running configuration sets them (a reload may change
/// them; tenants already labelled keep their label).
static TENANT_LABEL: AtomicBool = AtomicBool::new(true);
static TENANT_LIMIT: AtomicUsize = AtomicUsize::new(MetricsSettings::DEFAULT_TENANT_LABEL_LIMIT);
static TENANTS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Takes the tenant label's settings from the configuration.
pub fn configure(settings: &MetricsSettings) {
    TENANT_LABEL.store(settings.tenant_label, Ordering::Relaxed);
    TENANT_LIMIT.store(settings.tenant_label_limit, Ordering::Relaxed);
}

/// The `tenant` label for `tenant`: itself while fewer than the limit have been seen, else
/// `_other`; `_all` when the label is off; `_none` for no authenticated tenant.
pub fn tenant_label(tenant: Option<&str>) -> String {
    let Some(tenant) = tenant.filter(|t| !t.is_empty()) else {
        return "_none".to_owned();
    };
    if !TENANT_LABEL.load(Ordering::Relaxed) {
        return "_all".to_owned();
    }
    let mut seen = TENANTS.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.contains(tenant) {
        return tenant.to_owned();
    }
    if seen.len() < TENANT_LIMIT.load(Ordering::Relaxed) {
        seen.insert(tenant.to_owned());
        return tenant.to_owned();
    }
    "_other".to_owned()
}

/// `gen_ai.operation.name` of an inference route; `None` for every other route.
pub fn operation(route: &str) -> Option<&'static str> {
    match route {
        "/v1/chat/completions" | "/api/chat" => Some("chat"),
        "/v1/completions" | "/api/generate" => Some("text_completion"),
        "/v1/embeddings" | "/api/embed" | "/api/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// `gen_ai.provider.name` of a backend kind (the traces name it the same way).
pub use wardgate_backends::trace::provider;

/// `error.type` of a failed request, from its reason (`ApiError::reason`).
pub fn error_type(reason: Option<&str>) -> &'static str {
    match reason {
        Some("timeout" | "backend_timeout" | "body_timeout") => "timeout",
        Some("backend_unavailable" | "backend_circuit_open" | "backend_connect") => {
            "backend_unavailable"
        }
        Some("backend_status" | "backend_protocol") => "backend_error",
        Some("context_length_exceeded") => "context_length_exceeded",
        Some(crate::error::CLIENT_GONE) => "client_gone",
        Some("audit_unavailable") => "audit_unavailable",
        Some("panic") => "internal",
        _ => "_OTHER",
    }
}

/// A request's end, as the metrics see it (built by the request's record).
pub struct Finished<'a> {
    /// The router's template; `None`: no route matched.
    pub route: Option<&'a str>,
    /// The public model name, only when it resolved (never a client's free text).
    pub model: Option<&'a str>,
    /// Whether the request named a model at all.
    pub named_model: bool,
    pub status: u16,
    pub tenant: Option<&'a str>,
    pub elapsed: Duration,
    /// Time spent waiting on backends (every attempt, and each chunk of a stream).
    pub backend_wait: Duration,
    /// Set when the request was admitted to a backend (its start was audited).
    pub gen_ai: Option<GenAi<'a>>,
}

/// The GenAI side of a request admitted to a backend.
pub struct GenAi<'a> {
    /// The kind of the replica that answered (or was tried last); `None` when none was.
    pub kind: Option<&'a str>,
    /// The reason of a failed request; `None` when it succeeded.
    pub failed: Option<Option<&'a str>>,
    /// From arrival to the first content chunk of a streamed answer.
    pub first_token: Option<Duration>,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// Records a request's end. A no-op (but for the label work) when no recorder is installed.
pub fn request_finished(f: &Finished<'_>) {
    if !installed() {
        return;
    }
    let route = f.route.unwrap_or("_unmatched").to_owned();
    let model = match (f.model, f.named_model) {
        (Some(m), _) => m.to_owned(),
        (None, true) => "_unknown".to_owned(),
        (None, false) => "_none".to_owned(),
    };
    let class = match f.status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        5 => "5xx",
        // A client that left before any answer is counted with the client errors (499).
        _ => "4xx",
    };
    counter!(REQUESTS,
        "route" => route.clone(),
        "model" => model.clone(),
        "status_class" => class,
        "tenant" => tenant_label(f.tenant),
    )
    .increment(1);
    histogram!(OVERHEAD, "route" => route.clone())
        .record(f.elapsed.saturating_sub(f.backend_wait).as_secs_f64());
    let (Some(g), Some(operation)) = (&f.gen_ai, f.route.and_then(operation)) else {
        return;
    };
    let provider = g.kind.map_or("_OTHER", provider);
    match g.failed {
        Some(reason) => {
            histogram!(REQUEST_DURATION,
                "gen_ai_operation_name" => operation,
                "gen_ai_request_model" => model.clone(),
                "gen_ai_provider_name" => provider,
                "error_type" => error_type(reason),
            )
            .record(f.elapsed.as_secs_f64());
        }
        None => {
            histogram!(REQUEST_DURATION,
                "gen_ai_operation_name" => operation,
                "gen_ai_request_model" => model.clone(),
                "gen_ai_provider_name" => provider,
            )
            .record(f.elapsed.as_secs_f64());
            if let Some(first) = g.first_token {
                histogram!(TIME_TO_FIRST_TOKEN,
                    "gen_ai_operation_name" => operation,
                    "gen_ai_request_model" => model.clone(),
                    "gen_ai_provider_name" => provider,
                )
                .record(first.as_secs_f64());
                if g.tokens_out >= 2 {
                    let per =
                        f.elapsed.saturating_sub(first).as_secs_f64() / (g.tokens_out - 1) as f64;
                    histogram!(TIME_PER_OUTPUT_TOKEN,
                        "gen_ai_operation_name" => operation,
                        "gen_ai_request_model" => model.clone(),
                        "gen_ai_provider_name" => provider,
                    )
                    .record(per);
                }
            }
        }
    }
    for (kind, n) in [("input", g.tokens_in), ("output", g.tokens_out)] {
        if n > 0 {
            histogram!(TOKEN_USAGE,
                "gen_ai_token_type" => kind,
                "gen_ai_operation_name" => operation,
                "gen_ai_request_model" => model.clone(),
                "gen_ai_provider_name" => provider,
            )
            .record(n as f64);
        }
    }
}

/// Registers, at 0, the counters whose label values are known now, so that each series
/// exists before its first event (`increase()` misses the first event of a series that
/// appears with it, and alerts count single events). Adding 0 changes no value.
fn zero_series(state: &AppState) {
    counter!(wardgate_audit::metrics::COMMIT_FAILURES).increment(0);
    for (name, route) in state.catalog.list() {
        if name == route.name {
            counter!(wardgate_backends::catalog::FALLBACKS, "model" => name).increment(0);
        }
    }
    for mode in ["block", "deidentify"] {
        for c in wardgate_phi::Category::ALL {
            counter!(PHI_FINDINGS, "category" => c.name(), "mode" => mode).increment(0);
        }
    }
    if let Some(engine) = &state.engine {
        for model in engine.running() {
            counter!(MODEL_LOAD_FAILURES, "model" => model.name.clone()).increment(0);
        }
    }
}

/// Sets the gauges that mirror state, and the security counters, as they are now (called
/// when a scrape comes).
pub async fn refresh(state: &AppState, role: &'static str, tls: Option<&Tls>) {
    admin::mirror_security_counters();
    zero_series(state);
    // Every route, discovered ones included (a backend named by `WARDGATE_BACKEND` has only
    // those), each once: aliases list a route again.
    let mut seen = HashSet::new();
    for (_, route) in state.catalog.list() {
        if !seen.insert(route.name.clone()) {
            continue;
        }
        for link in &route.chain {
            for replica in link.pool.replicas() {
                let labels = [
                    ("model", route.name.clone()),
                    ("backend", replica.name().to_owned()),
                ];
                let open = replica.breaker.state_code();
                gauge!(BACKEND_UP, &labels)
                    .set(f64::from(u8::from(replica.is_healthy() && open != 2)));
                gauge!(BREAKER_STATE, &labels).set(f64::from(open));
            }
        }
    }
    if let Some(engine) = &state.engine {
        for model in engine.running() {
            let s = model.stats();
            let labels = [("model", model.name.clone())];
            gauge!(ENGINE_QUEUE, &labels).set(s.queued as f64);
            gauge!(ENGINE_SLOTS_BUSY, &labels).set(s.busy as f64);
            gauge!(ENGINE_SLOTS, &labels).set(s.slots as f64);
            gauge!(ENGINE_KV_USE, &labels).set(s.kv_use);
        }
    }
    gauge!(AUDIT_QUEUE).set(state.audit.queued() as f64);
    gauge!(SEQUENCING_STALLED).set(f64::from(u8::from(state.audit.sequencing_stalled())));
    if let Some(log) = state.audit.shared_log() {
        // A scrape never waits long on the database: the gauge keeps its last value.
        if let Ok(Ok(oldest)) =
            tokio::time::timeout(Duration::from_secs(2), log.oldest_pending_ms()).await
        {
            let now = wardgate_audit::Timestamp::now().unix_millis();
            let lag = oldest.map_or(0, |ms| now.saturating_sub(ms).max(0));
            gauge!(SEQUENCER_LAG).set(lag as f64 / 1000.0);
        }
    }
    if let Some(not_after) = tls.and_then(Tls::not_after) {
        gauge!(TLS_EXPIRY, "listener" => role).set(not_after as f64);
    }
}

/// The exposition text of everything recorded, with the state-mirroring gauges read now.
pub async fn render(state: &AppState, role: &'static str, tls: Option<&Tls>) -> String {
    let handle = install();
    refresh(state, role, tls).await;
    handle.render()
}
