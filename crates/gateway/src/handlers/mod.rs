//! Request handlers, one module per front, plus the unauthenticated probes.

pub mod admin;
pub mod ollama;
pub mod openai;
pub mod probes;

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderValue;
use axum::response::Response;
use tracing::Instrument as _;
use wardgate_api::canonical::{ChatRequest, CompletionRequest, EmbedRequest, EmbedResponse};
use wardgate_backends::{Budget, EventStream, Route, Served};

use crate::error::ApiError;
use crate::guards::phi_guard;
use crate::guards::ratelimit::{Bound, Lease, Limit, Refused};
use crate::identity::principal::Principal;
use crate::middleware::record::RequestRecord;
use crate::pipeline::policy::{self, Checked, ParamNames};
use crate::pipeline::stream::Drive;
use crate::state::AppState;

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
    record.set_served(
        &served.backend,
        &served.upstream_model,
        served.attempts,
        served.kind,
    );
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The principal's request rates: its own, then its tenant's (each when set).
fn rate_bounds(state: &AppState, p: &Principal, bounds: &mut Vec<Bound>) {
    let rates = [
        ("key:", &p.key_id, state.config.requests_per_minute),
        (
            "tenant:",
            &p.tenant,
            state.config.tenant_requests_per_minute,
        ),
    ];
    for (scope, name, per_minute) in rates {
        if per_minute > 0 {
            bounds.push(Bound::requests(format!("{scope}{name}"), per_minute));
        }
    }
}

/// The principal's and its tenant's usage quotas: for each (the key, then the tenant) tokens
/// a day and tokens a minute; then a place in flight for each, taken last so that a refusal
/// by a token quota holds none.
fn quota_bounds(state: &AppState, p: &Principal, bounds: &mut Vec<Bound>) {
    let q = &state.config.quotas;
    let scopes = [
        (format!("key:{}", p.key_id), q.key),
        (format!("tenant:{}", p.tenant), q.tenant),
    ];
    for (scope, set) in &scopes {
        if set.tokens_per_day > 0 {
            bounds.push(Bound::tokens_per_day(
                format!("day:{scope}"),
                set.tokens_per_day,
            ));
        }
        if set.tokens_per_minute > 0 {
            bounds.push(Bound::tokens(format!("tpm:{scope}"), set.tokens_per_minute));
        }
    }
    for (scope, set) in &scopes {
        if set.concurrent_requests > 0 {
            bounds.push(Bound::concurrency(
                format!("places:{scope}"),
                set.concurrent_requests,
            ));
        }
    }
}

/// How long a place in flight may be held by an instance that never gives it back (one that
/// died, `kill -9`): longer than any request may run, which its deadline bounds.
fn place_hold(state: &AppState) -> std::time::Duration {
    state.config.request_timeout + PLACE_MARGIN
}

/// How much longer than `server.request_timeout` a place is held at most. A place's expiry is
/// on Redis's clock and counts from its admission, which comes after the request's start that
/// its deadline counts from, so no two machines' clocks are compared and a place outlives its
/// request's deadline. The margin covers the request's end after its deadline (the stream
/// noticing it, the settlement's round trip: well under a second unless Redis fails, and then
/// the place expires all the same) and a step forward of Redis's clock. It was a minute, which
/// kept a dead instance's places from the key that long (a black-box finding).
pub const PLACE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes one request from the principal's rate allowance, then from its tenant's (when a
/// tenant limit is set). A limiter that cannot answer refuses the request (503).
pub(crate) async fn check_rate(
    state: &AppState,
    p: &Principal,
    record: Option<&RequestRecord>,
) -> Result<(), ApiError> {
    let mut bounds = Vec::with_capacity(2);
    rate_bounds(state, p, &mut bounds);
    if bounds.is_empty() {
        return Ok(());
    }
    match state.limiter.admit(&bounds, place_hold(state)).await {
        Ok(_) => Ok(()),
        Err(r) => Err(refused(state, p, record, r.why, r.limit)),
    }
}

/// Middleware on the metadata routes (model lists and details, the version): one request from
/// the principal's and its tenant's rate allowance, as for the model routes.
pub(crate) async fn metered(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(p) = req.extensions().get::<Principal>()
        && let Err(e) = check_rate(
            &state,
            p,
            req.extensions().get::<Arc<RequestRecord>>().map(|r| &**r),
        )
        .await
    {
        return e.to_response(crate::error::Front::of_path(req.uri().path()));
    }
    next.run(req).await
}

/// The answer to a request the limiter refused. A 429 is counted and logged every time, but
/// audited on its own only when it is the key's first in the refusal audit window; the rest
/// of the window's are folded into one `suppressed: N` event (`audit_fold.rs`), so a client
/// that keeps sending past its limits does not write to the audit log at line rate.
fn refused(
    state: &AppState,
    p: &Principal,
    record: Option<&RequestRecord>,
    e: Refused,
    limit: Limit,
) -> ApiError {
    match e {
        Refused::RetryAfter(wait) => {
            let key = crate::guards::ratelimit::RefusedKey {
                key_id: p.key_id.clone(),
                tenant: p.tenant.clone(),
                method: p.method,
            };
            let folded = !state.refusals.fold(key, Instant::now(), &state.audit);
            crate::middleware::events::RateLimited { limit, folded }.emit(record);
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                limit,
            }
        }
        Refused::Unavailable => ApiError::LimiterUnavailable,
    }
}

/// The common start of every model request: the key's rate allowance, the route for the
/// public model name (which the key must be allowed to use), then the usage quotas, with a
/// place in flight that the record gives back, charging the request's tokens, when the
/// response ends.
///
/// The rates and the quotas are one admission (one limiter call, one Redis round trip), all
/// or nothing. The route is looked up first (in memory) to know whether the quotas apply, but
/// answered in the order the checks have always had: a request over its rate is refused
/// whatever model it names; then an unknown or forbidden model; then the quotas.
pub(crate) async fn begin(
    state: &AppState,
    p: &Principal,
    record: &RequestRecord,
    public: &str,
) -> Result<Arc<Route>, ApiError> {
    let route = state.route_for(p, public);
    let mut bounds = Vec::with_capacity(8);
    rate_bounds(state, p, &mut bounds);
    if route.is_ok() {
        quota_bounds(state, p, &mut bounds);
    }
    let admitted = if bounds.is_empty() {
        Ok(0)
    } else {
        state.limiter.admit(&bounds, place_hold(state)).await
    };
    if let Err(r) = &admitted
        && (r.limit == Limit::Requests || route.is_err())
    {
        return Err(refused(state, p, Some(record), r.why, r.limit));
    }
    record.set_model(public);
    let route = route?;
    record.set_model_resolved();
    if let Some(kind) = route.kind() {
        record.set_backend_kind(kind);
    }
    let ticket = admitted.map_err(|r| refused(state, p, Some(record), r.why, r.limit))?;
    record.set_lease(Lease::admitted(state.limiter.clone(), bounds, ticket));
    Ok(route)
}

/// Marks a request that `wardgate llm` verified as signed by the gateway: the gateway already
/// applied its client policy (keep-alive), and `fairness` is the key it chose (its tenant),
/// under which the engine shares its slots.
#[derive(Clone, Debug)]
pub struct Forwarded {
    pub fairness: Option<String>,
}

/// The engine's fairness key for a request: the tenant, or what the gateway in front said.
pub(crate) fn fairness_key(p: &Principal, forwarded: Option<&Forwarded>) -> String {
    match forwarded {
        Some(f) => f.fairness.clone().unwrap_or_default(),
        None => p.tenant.clone(),
    }
}

/// A generation to run.
pub(crate) enum Job {
    Chat(ChatRequest),
    Complete(CompletionRequest),
}

/// Applies the bounds, walks the route's chain within the request deadline, and returns the
/// backend's event stream with what it is measured against.
pub(crate) async fn run_generation(
    state: &AppState,
    p: &Principal,
    record: &Arc<RequestRecord>,
    route: &Route,
    job: &mut Job,
    names: ParamNames,
) -> Result<(EventStream, Drive, Checked), ApiError> {
    let limits = &state.config.limits;
    // The fair share on the engine is per tenant; a handler that knows better (the LLM
    // service, told by the gateway) has set it already. Clients cannot set it. The same key
    // scopes conversation affinity in a pool: one tenant's conversations are placed apart
    // from another's.
    let scope = match job {
        Job::Chat(r) => r.fairness.get_or_insert_with(|| p.tenant.clone()),
        Job::Complete(r) => r.fairness.get_or_insert_with(|| p.tenant.clone()),
    }
    .clone();
    let checked = match job {
        Job::Chat(r) => policy::check_chat(limits, route, r, names)?,
        Job::Complete(r) => policy::check_completion(limits, route, r, names)?,
    };
    let format = match job {
        Job::Chat(r) => &r.format,
        Job::Complete(r) => &r.format,
    };
    policy::check_schema(&state.config.engine.schema, route, format, names)?;
    let mut texts = match job {
        Job::Chat(r) => phi_guard::chat_texts(r),
        Job::Complete(r) => phi_guard::completion_texts(r),
    };
    note_prompt(state, record, &texts.prompt);
    let rule = state.phi.policy.rule_for(&p.tenant, &route.name);
    // A block: the entered span must not be held across an await.
    let pseudonyms = {
        let phi_span = tracing::info_span!(target: crate::telemetry::TARGET, "phi guard").entered();
        let guarded = state
            .phi
            .apply_texts(rule, &mut texts)
            .map_err(|refused| match refused {
                phi_guard::Refused::Phi(blocked) => ApiError::PhiBlocked(blocked.0),
                phi_guard::Refused::Images => {
                    ApiError::BadRequest(wardgate_api::BadRequest::param(
                        "images",
                        "images cannot be checked for PHI and this model's PHI rule does not allow \
                 them (phi.allow_images); send the text only",
                    ))
                }
            });
        phi_outcome(&phi_span, &guarded);
        guarded
    }?;
    drop(texts);
    before_backend(state, record).await?;
    let deadline = deadline(state, record);
    let budget = Budget {
        first_token: first_token_limit(state, deadline),
        deadline,
    };
    let walk = async {
        match job {
            Job::Chat(r) => route.chat(r, &scope, budget).await,
            Job::Complete(r) => route.complete(r, &scope, budget).await,
        }
    };
    let waiting = Instant::now();
    let walked = tokio::time::timeout_at(deadline.into(), walk).await;
    record.add_backend_wait(waiting.elapsed());
    let (served, events) = walked.map_err(|_| ApiError::Timeout)??;
    note_served(record, route, &served);
    let events = match pseudonyms {
        Some(map) => phi_guard::reidentify(events, map),
        None => events,
    };
    Ok((events, drive(state, record, checked.prompt_tokens), checked))
}

/// Records the salted digest of the texts as the client sent them (before de-identification),
/// so an investigator holding a suspect prompt can tell whether it was sent, while the log
/// itself holds no text.
fn note_prompt(state: &AppState, record: &RequestRecord, texts: &[&mut String]) {
    record.set_prompt_digest(
        state
            .audit
            .prompt_digest(texts.iter().map(|t| t.as_bytes())),
    );
}

/// The PHI guard's rule for this tenant and model, applied to the texts a backend would see.
fn guard(
    state: &AppState,
    p: &Principal,
    route: &Route,
    texts: &mut [&mut String],
) -> Result<Option<Arc<wardgate_phi::Pseudonymizer>>, ApiError> {
    let rule = state.phi.policy.rule_for(&p.tenant, &route.name);
    let span = tracing::info_span!(target: crate::telemetry::TARGET, "phi guard").entered();
    let guarded = state
        .phi
        .apply(rule, texts)
        .map_err(|blocked| ApiError::PhiBlocked(blocked.0));
    phi_outcome(&span, &guarded);
    guarded
}

/// The PHI guard's span says what it did (never what it found): `error.type` when it refused
/// the request, and whether it replaced identifiers with pseudonyms.
fn phi_outcome<T>(span: &tracing::Span, guarded: &Result<Option<T>, ApiError>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() {
        return;
    }
    match guarded {
        Ok(pseudonyms) => span.set_attribute("wardgate.phi.pseudonymized", pseudonyms.is_some()),
        Err(e) => span.set_attribute("error.type", e.reason()),
    }
}

/// The last step before a backend is called: the audit log commits that the request is
/// going out (its `request_start` event), by the request's deadline, or the request fails
/// closed with 503 and the backend is never called. (An event the writer commits after the
/// deadline stays in the log: a start with no backend call after it, and the request's end
/// event says it failed.)
pub(crate) async fn before_backend(
    state: &AppState,
    record: &Arc<RequestRecord>,
) -> Result<(), ApiError> {
    let event = record.audit_event(wardgate_audit::EventType::RequestStart);
    let deadline = deadline(state, record);
    let span = tracing::info_span!(target: crate::telemetry::TARGET, "audit commit");
    let committed = state.audit.append(event).instrument(span);
    match tokio::time::timeout_at(deadline.into(), committed).await {
        Ok(Ok(_)) => {
            record.set_dispatched();
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %crate::causes::Causes(&e), "audit start commit failed; request refused");
            Err(ApiError::AuditUnavailable)
        }
        Err(_) => {
            tracing::error!(
                "audit start commit not done by the request's deadline; request refused"
            );
            Err(ApiError::AuditUnavailable)
        }
    }
}

/// The one pipeline of an embeddings request, for both fronts (as `run_generation` is for
/// chat and completions): the key's rate allowance and the route, the input bounds, the PHI
/// guard and the audit start, then the chain walk within the request deadline. An empty input
/// is answered empty without calling a backend. Pseudonyms in embedding inputs are not
/// restored (a vector has no text to restore them in): the backend embeds the de-identified
/// text.
pub(crate) async fn run_embedding(
    state: &AppState,
    p: &Principal,
    record: &Arc<RequestRecord>,
    mut req: EmbedRequest,
) -> Result<EmbedResponse, ApiError> {
    let route = begin(state, p, record, &req.model).await?;
    check_embed_inputs(state, &route, &req)?;
    if req.input.is_empty() {
        return Ok(EmbedResponse {
            embeddings: Vec::new(),
            prompt_tokens: 0,
        });
    }
    let mut texts = phi_guard::embed_texts(&mut req);
    note_prompt(state, record, &texts);
    guard(state, p, &route, &mut texts)?;
    before_backend(state, record).await?;
    // Each link may take what is left of the deadline, and the walk as a whole ends at it
    // (without the outer bound, a chain of slow links would take the whole time each).
    let deadline = deadline(state, record);
    let waiting = Instant::now();
    let embedded = tokio::time::timeout_at(deadline.into(), route.embed(&req, deadline)).await;
    record.add_backend_wait(waiting.elapsed());
    let (served, resp) = embedded.map_err(|_| ApiError::Timeout)??;
    note_served(record, &route, &served);
    record.set_tokens(resp.prompt_tokens, 0);
    Ok(resp)
}

/// Embedding inputs are bounded in number, and each must fit the window unless the client
/// allows truncation (Ollama's default).
fn check_embed_inputs(state: &AppState, route: &Route, req: &EmbedRequest) -> Result<(), ApiError> {
    let max = state.config.limits.max_embedding_inputs;
    if req.input.len() > max {
        return Err(ApiError::BadRequest(wardgate_api::BadRequest::param(
            "input",
            format!("at most {max} inputs per request"),
        )));
    }
    if req.truncate == Some(false) {
        for s in &req.input {
            let t = crate::pipeline::tokens::estimate_text(s);
            if t >= u64::from(route.context_window) {
                return Err(ApiError::ContextLengthExceeded {
                    window: route.context_window,
                    requested: t,
                });
            }
        }
    }
    Ok(())
}

/// Says in a header that a cap lowered what the client asked for.
pub(crate) fn with_clamp_header(
    mut resp: Response,
    checked: Checked,
    param: &'static str,
) -> Response {
    if checked.clamped {
        resp.headers_mut()
            .insert("x-wardgate-clamped", HeaderValue::from_static(param));
    }
    resp
}
