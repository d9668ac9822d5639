//! `wardgate llm`: the private LLM service. It speaks the Ollama API with the same handlers as
//! the gateway's Ollama front, over the in-process engine, and authenticates its one client —
//! the gateway — by HMAC signature instead of API keys. Model management is not exposed.
//!
//! Several replicas (behind one load balancer URL, or named one by one in a gateway's pool)
//! must not let a request signed once be served twice. They share their replay cache through
//! Redis when it is configured (`rate_limit.backend = "redis"`): a nonce one replica has served
//! is refused as `replayed` by every other. The target's authority is not signed, because
//! replicas behind one URL share it; `identity::replay` says why in full, and why a replica
//! falls back to its own cache, rather than refusing, while Redis is unreachable.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument as _;
use wardgate_api::signing::{self, Verifier};

use crate::error::{ApiError, ErrorReason, Front, OllamaError};
use crate::handlers::{ollama, probes};
use crate::identity::lockout::Lockout;
use crate::identity::principal::Principal;
use crate::identity::replay::SharedNonces;
use crate::middleware::events::AuthFailed;
use crate::middleware::record::{self, RequestRecord};
use crate::pipeline::extract::Json;
use crate::state::AppState;

/// The principal every verified request runs as.
const GATEWAY_PRINCIPAL: &str = "gateway";

#[derive(Clone)]
struct Auth {
    verifier: Arc<Verifier>,
    max_body: usize,
    body_timeout: std::time::Duration,
    /// Early evictions from the replay cache already reported in the log.
    reported_evictions: Arc<std::sync::atomic::AtomicU64>,
    /// Folds refusals per source address into one audit event per
    /// `auth.failure_audit_window`, as the gateway does (its lockout and allowance are not
    /// applied here: the llm's one client is the gateway, refused by nothing but its signature).
    failures: Arc<Lockout>,
    /// Where the folded windows' `suppressed: N` summaries are written.
    audit: wardgate_audit::Auditor,
    /// The nonces every replica sharing the Redis has seen (`identity::replay`); `None`
    /// without Redis, where each replica's own cache is the only one.
    shared_nonces: Option<Arc<SharedNonces>>,
}

impl Auth {
    /// Logs, once per power of two, that the replay cache forgets nonces before they expire:
    /// the service takes more signed requests than `llm.max_request_rate` was set for, and a
    /// request captured on the hop could be replayed within its skew window.
    fn warn_if_evicting(&self) {
        use std::sync::atomic::Ordering;
        let now = self.verifier.evicted_early();
        let reported = self.reported_evictions.load(Ordering::Relaxed);
        if now == 0 || now < reported.saturating_mul(2).max(1) {
            return;
        }
        if self
            .reported_evictions
            .compare_exchange(reported, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                target: "wardgate::llm::auth",
                evicted = now,
                "the replay cache is full of unexpired nonces and forgot the oldest; raise \
                 llm.max_request_rate (WARDGATE_LLM_MAX_REQUEST_RATE) to the signed request rate"
            );
        }
    }
}

/// The service's router: `verifier` checks each request's signature and this replica's replay
/// cache, `shared_nonces` (when Redis is configured) the replay cache of every replica.
pub fn llm_router(
    state: AppState,
    verifier: Arc<Verifier>,
    shared_nonces: Option<Arc<SharedNonces>>,
) -> Router {
    let auth = Auth {
        verifier: verifier.clone(),
        max_body: state.config.limits.max_body_bytes,
        body_timeout: state.config.server.body_read_timeout,
        reported_evictions: Arc::default(),
        // The state's, so `app::run_service` flushes its open windows at shutdown.
        failures: state.lockout.clone(),
        audit: state.audit.clone(),
        shared_nonces,
    };
    let signed = Router::new()
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/tags", get(tags))
        .route("/api/show", post(show))
        .route("/api/ps", get(ps))
        .route("/api/version", get(ollama::version))
        .route("/", get(ollama::root))
        .fallback(not_found)
        // Every route above, and unknown paths, need a valid signature.
        .layer(from_fn_with_state(auth, verify));
    Router::new()
        .route("/health", get(probes::health))
        .route("/ready", get(probes::ready))
        .merge(signed)
        .with_state(state.clone())
        // One record and one log line per request; above the signature check, so refusals
        // are logged with their reason too.
        .layer(from_fn_with_state(state, record::observe))
        // A `traceparent` is the parent of the request's trace span only under the gateway's
        // signature; above the record, which starts that span.
        .layer(from_fn_with_state(
            verifier,
            crate::telemetry::signed_parent,
        ))
        // Outermost, as on the gateway: a panic anywhere below becomes a generic 500 (and its
        // record says so), never a stack trace in a body or a dropped connection.
        .layer(CatchPanicLayer::custom(crate::error::panic_response))
        .layer(axum::middleware::from_fn(
            crate::error::panics_in_front_shape,
        ))
}

async fn not_found() -> Response {
    ApiError::RouteNotFound.to_response(Front::Ollama)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "unauthorized"})),
    )
        .into_response()
}

/// Checks the signature over method, path, timestamp, nonce and body digest from the headers
/// alone, and the nonce against this replica's replay cache and then the one shared by every
/// replica (when Redis is configured), so a request without a valid, fresh signature is refused
/// before a byte of its body is read; then reads the body (at most the body limit) and checks it against the signed digest. Each
/// refusal is logged with its reason.
async fn verify(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    // The signature check (and the signed body's read) is the request's `auth` span (when
    // traces are exported); the rest of the request is not.
    let span = tracing::info_span!(target: crate::telemetry::TARGET, "auth");
    match check(&auth, req).instrument(span).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// The checks of [`verify`]: the request with its body read and its principal attached, or
/// the answer that refuses it.
async fn check(auth: &Auth, req: Request) -> Result<Request, Response> {
    let (mut parts, body) = req.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let head = signing::SignedHead {
        method: parts.method.as_str(),
        path,
        timestamp: header(signing::TIMESTAMP_HEADER),
        nonce: header(signing::NONCE_HEADER),
        signature: header(signing::SIGNATURE_HEADER),
        body_digest: header(signing::BODY_DIGEST_HEADER),
        traceparent: header(crate::telemetry::TRACEPARENT),
    };
    let verdict = auth.verifier.verify_head(&head, now);
    auth.warn_if_evicting();
    let verified = match verdict {
        Ok(v) => v,
        Err(reason) => return Err(refuse(auth, &parts, reason)),
    };
    // Fresh to this replica: fresh to every replica sharing the Redis, too?
    if let Some(shared) = &auth.shared_nonces
        && !shared
            .claim(verified.nonce_id(), verified.nonce_expires(), now)
            .await
    {
        return Err(refuse(auth, &parts, signing::VerifyError::Replayed));
    }
    // Signed by the gateway: only now is the body read, within the same bounds as anywhere.
    let bytes =
        match crate::pipeline::extract::read_body(body, auth.max_body, auth.body_timeout).await {
            Ok(b) => b,
            Err(e) => return Err(e.to_response(Front::Ollama)),
        };
    if let Err(reason) = verified.check_body(&bytes) {
        return Err(refuse(auth, &parts, reason));
    }
    if let Some(rec) = parts.extensions.get::<Arc<RequestRecord>>() {
        rec.set_principal(GATEWAY_PRINCIPAL, "", wardgate_audit::AuthMethod::ApiKey);
    }
    parts.extensions.insert(forwarded(&parts.uri));
    parts.extensions.insert(Principal {
        key_id: GATEWAY_PRINCIPAL.to_owned(),
        tenant: String::new(),
        models: Vec::new(),
        // The gateway in front runs inference on its clients' behalf, nothing else.
        roles: vec![wardgate_store::Role::User],
        method: wardgate_audit::AuthMethod::ApiKey,
    });
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// What the gateway said about a verified request: its fairness key (the tenant, hex-encoded
/// in the signed query), taken as the opaque string it is.
fn forwarded(uri: &axum::http::Uri) -> crate::handlers::Forwarded {
    let fairness = uri.query().and_then(|q| {
        q.split('&').find_map(|kv| {
            kv.strip_prefix(wardgate_backends::http::FAIRNESS_QUERY)
                .and_then(|v| v.strip_prefix('='))
                .filter(|v| !v.is_empty() && v.len() <= 256)
                .map(str::to_owned)
        })
    });
    crate::handlers::Forwarded { fairness }
}

/// The answer to a request whose signature is missing or does not verify: logged with its reason,
/// counted, and audited on its own only when it is its peer address's first in the audit window
/// (the rest are folded into the window's `suppressed: N` event, see `identity::lockout`), so a
/// flood of unsigned requests cannot grow the audit log at line rate.
fn refuse(
    auth: &Auth,
    parts: &axum::http::request::Parts,
    reason: signing::VerifyError,
) -> Response {
    // The peer itself: the llm has no trusted proxies, so no forwarded address is honoured.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let folded = !auth
        .failures
        .fold(peer, std::time::Instant::now(), &auth.audit);
    let record = parts.extensions.get::<Arc<RequestRecord>>();
    AuthFailed { folded }.emit(record.map(|r| &**r));
    tracing::warn!(
        target: "wardgate::llm::auth",
        reason = %reason,
        method = %parts.method,
        path = parts.uri.path(),
        "refused an unsigned or badly signed request"
    );
    let mut r = unauthorized();
    // For the request log line and the audit event (`record::observe`).
    r.extensions_mut().insert(ErrorReason(reason_code(reason)));
    // The body, if any, is left unread: an HTTP/1 connection is closed rather than drained
    // (HTTP/2 resets just the stream).
    if parts.version <= axum::http::Version::HTTP_11 {
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    r
}

/// The request log's `reason` for a refused signature: what an operator needs to tell a
/// misconfigured gateway (missing, malformed, invalid) from a clock off (stale) or an attack
/// (replayed, altered).
fn reason_code(reason: signing::VerifyError) -> &'static str {
    use signing::VerifyError;
    match reason {
        VerifyError::Missing => "signature_missing",
        VerifyError::Malformed => "signature_malformed",
        VerifyError::Stale => "signature_stale",
        VerifyError::Replayed => "replayed",
        VerifyError::BadSignature => "signature_invalid",
        VerifyError::BodyAltered => "body_altered",
    }
}

fn details(e: &wardgate_engine::ModelEntry) -> wardgate_api::ollama::Details {
    ollama::details(Some(e))
}

fn engine(state: &AppState) -> Result<&Arc<wardgate_engine::Engine>, ApiError> {
    state.engine.as_ref().ok_or(ApiError::BackendUnavailable)
}

async fn tags(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let models = engine(&state)?
        .store()
        .list()
        .map_err(|_| ApiError::StorageUnavailable)?;
    let list: Vec<Value> = models
        .iter()
        .map(|(name, e)| {
            json!({"name": name, "model": name, "modified_at": e.modified_at, "size": e.size,
                "digest": e.digest, "details": details(e)})
        })
        .collect();
    Ok(axum::Json(json!({"models": list})).into_response())
}

async fn ps(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let now = std::time::Instant::now();
    let wall = time::OffsetDateTime::now_utc();
    let list: Vec<Value> = engine(&state)?
        .running()
        .iter()
        .map(|l| {
            let expires = match l.expires_at() {
                Some(t) => wall + t.saturating_duration_since(now),
                None => wall + time::Duration::days(365 * 100),
            };
            json!({"name": l.name, "model": l.name, "size": l.entry.size, "digest": l.entry.digest,
                "details": details(&l.entry), "expires_at": wardgate_api::rfc3339(expires),
                "size_vram": 0, "context_length": l.context_length()})
        })
        .collect();
    Ok(axum::Json(json!({"models": list})).into_response())
}

async fn show(
    State(state): State<AppState>,
    Json(body): Json<wardgate_api::ollama::ShowRequestIn>,
) -> Result<Response, OllamaError> {
    let Some(name) = body.model() else {
        return Err(ApiError::BadRequest(wardgate_api::BadRequest::param(
            "model",
            "model is required",
        ))
        .into());
    };
    let e = engine(&state)?
        .store()
        .get(name)
        .map_err(|_| ApiError::ModelNotFound(name.to_owned()))?;
    let mut caps = vec!["completion"];
    if e.has_chat_template {
        caps.push("chat");
    }
    Ok(axum::Json(json!({
        "modelfile": "", "parameters": "", "template": "", "license": "",
        "details": details(&e),
        "model_info": {
            "general.architecture": e.family,
            format!("{}.context_length", e.family): e.context_length,
        },
        "capabilities": caps,
        "modified_at": e.modified_at,
    }))
    .into_response())
}
