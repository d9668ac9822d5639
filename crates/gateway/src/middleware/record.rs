//! One record per request: who asked, for which model, what served it, how it ended. The
//! `observe` middleware creates it, handlers fill it in, and it is written to the request log
//! exactly once, when the response body is finished or dropped — so a streamed answer is logged
//! with its final token counts, and a client that went away is logged as `client_abort`.
//!
//! The same moment produces the request's one terminal audit event. The last frame of the
//! body (or its end) is held back until that event is committed, so a client never holds a
//! complete response whose audit event could still be lost; if the commit fails, the body
//! ends in an error instead (fail closed).
//!
//! A client can also leave before there is a response at all (while the handler waits for a
//! backend, or for the audit log); the server then drops the request's future, and the
//! handler never finishes. `observe` holds an [`EndGuard`] for exactly that time: dropped
//! before the response exists, it ends the record itself, as `client_abort`. Whichever path
//! ends the record first writes the log line and the terminal event; the other does nothing.
//!
//! Invariant: no field here ever holds prompt or completion text.
//! Invariant: a request that authenticated ends with exactly one terminal audit event,
//! however and whenever it ends.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::FutureExt as _;
use http_body::Body as _;
use tracing::Instrument as _;

use wardgate_audit::{ActorKind, AuditEvent, Auditor, AuthMethod, EventType, Timestamp};

use crate::error::{ApiError, ErrorReason, Front};
use crate::guards::ratelimit::Settled;
use crate::state::AppState;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (2xx/3xx).
    Allow,
    /// Refused before reaching a backend (4xx).
    Deny,
    /// Failed on our or the backend's side (5xx, or an in-band stream error).
    Error,
    /// The client went away before the answer was complete.
    ClientAbort,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::ClientAbort => "client_abort",
        }
    }

    fn audit(self) -> wardgate_audit::Outcome {
        match self {
            Outcome::Allow => wardgate_audit::Outcome::Allow,
            Outcome::Deny => wardgate_audit::Outcome::Deny,
            Outcome::Error => wardgate_audit::Outcome::Error,
            Outcome::ClientAbort => wardgate_audit::Outcome::ClientAbort,
        }
    }
}

/// Routes that touch nothing and are polled by orchestrators every few seconds: they are
/// logged but not audited.
const UNAUDITED_ROUTES: [&str; 2] = ["/health", "/ready"];

#[derive(Debug, Default)]
struct Fields {
    key_id: Option<String>,
    tenant: Option<String>,
    model: Option<String>,
    backend: Option<String>,
    upstream_model: Option<String>,
    attempts: u32,
    tokens_in: u64,
    tokens_out: u64,
    status: u16,
    reason: Option<&'static str>,
    stream_failed: bool,
    /// The model name resolved to a route the principal may use.
    model_resolved: bool,
    /// The salted digest of the prompt as the client sent it.
    prompt_sha256: Option<wardgate_audit::Hash>,
    /// How the principal authenticated.
    auth_method: Option<AuthMethod>,
    /// The key prefix presented, for an attempt that did not authenticate.
    attempt: Option<String>,
    /// What the terminal event is, when not a plain `request` (an admin action, an audit
    /// read, break-glass access).
    event_type: Option<EventType>,
    /// The terminal event's `detail`.
    detail: Option<String>,
    /// A failed authentication whose audit event is folded into its address's count for the
    /// window (`lockout.rs`): the log line is written, the audit event is not.
    audit_folded: bool,
    /// The request's start was audited and its backend walk began (a GenAI operation, for
    /// the metrics).
    dispatched: bool,
    /// The kind of the replica that answered (`ollama`, `openai`, `embedded`).
    backend_kind: Option<&'static str>,
    /// Time spent waiting on backends: each attempt, and each event of the answer.
    backend_wait: std::time::Duration,
    /// When the first content of a streamed answer was read.
    first_token: Option<Instant>,
    /// How the answer ended (`stop`, `length`, ...), for the trace.
    finish_reason: Option<&'static str>,
}

#[derive(Debug)]
pub struct RequestRecord {
    pub request_id: String,
    pub method: String,
    pub route: String,
    pub started: Instant,
    pub source_ip: Option<IpAddr>,
    /// The request's trace span (`crate::telemetry`); disabled when traces are not exported.
    pub span: tracing::Span,
    fields: Mutex<Fields>,
    /// What the request holds against its quotas, settled when it ends.
    lease: Mutex<Option<crate::guards::ratelimit::Lease>>,
    /// Set by whichever path ends the request first (the response body, or the guard of a
    /// request dropped before its response): the log line and the terminal event are
    /// written once.
    ended: AtomicBool,
}

/// How a request ended, as its record sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The response body was sent to its end (or failed in-band).
    Complete,
    /// The response had started, and the client went away before its end.
    Aborted,
    /// The client went away before there was a response: the request's future was dropped
    /// (waiting for a backend, the audit log, the body, ...).
    BeforeResponse,
}

impl RequestRecord {
    fn lock(&self) -> std::sync::MutexGuard<'_, Fields> {
        self.fields.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who the request runs as; an empty `tenant` is none (`wardgate llm`'s one client, the
    /// gateway, acts for no tenant of its own).
    pub fn set_principal(&self, key_id: &str, tenant: &str, method: AuthMethod) {
        let mut f = self.lock();
        f.key_id = Some(key_id.to_owned());
        f.tenant = (!tenant.is_empty()).then(|| tenant.to_owned());
        f.auth_method = Some(method);
    }

    pub fn set_lease(&self, lease: crate::guards::ratelimit::Lease) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
    }

    /// Gives back the request's places in flight and charges its tokens to its quotas; the
    /// answer's end waits for the returned settlement.
    fn settle(&self) -> Settled {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        match lease {
            Some(lease) => {
                let tokens = {
                    let f = self.lock();
                    f.tokens_in.saturating_add(f.tokens_out)
                };
                lease.settle(tokens)
            }
            None => Settled::done(),
        }
    }

    pub fn set_model(&self, model: &str) {
        self.lock().model = Some(model.to_owned());
    }

    /// The model name is a real one this principal may use (so it is not client free text).
    pub fn set_model_resolved(&self) {
        self.lock().model_resolved = true;
    }

    /// Marks the request as break-glass access with its stated reason: its terminal event is
    /// a `break_glass` event, whatever else the handler records.
    ///
    /// The reason is typed by a person in a hurry and may name a patient, and the audit log
    /// keeps it for good: it is stored only after the detector's most recall-oriented
    /// redaction ([`Detector::high_recall`](wardgate_phi::Detector::high_recall)), cut to
    /// [`STORED_REASON_CHARS`] characters.
    pub fn set_break_glass(&self, reason: &str) {
        let reason = stored_reason(reason);
        let mut f = self.lock();
        f.event_type = Some(EventType::BreakGlass);
        f.detail = Some(bounded(&format!("reason: {reason}")));
    }

    /// What the request did, for its terminal audit event (`key_created`, `audit_access`, ...)
    /// with a detail in wardgate's words. Break-glass marking is kept: it is the more severe.
    pub fn set_action(&self, event_type: EventType, detail: Option<String>) {
        let mut f = self.lock();
        if f.event_type == Some(EventType::BreakGlass) {
            return;
        }
        f.event_type = Some(event_type);
        f.detail = detail.map(|d| bounded(&d));
    }

    /// This failed authentication is counted in its address's `suppressed: N` summary event
    /// instead of being written on its own.
    pub fn fold_audit(&self) {
        self.lock().audit_folded = true;
    }

    /// The prefix of the key presented (before it is verified).
    pub fn set_attempt(&self, prefix: &str) {
        self.lock().attempt = Some(format!("key_prefix:{prefix}"));
    }

    pub fn set_prompt_digest(&self, digest: wardgate_audit::Hash) {
        self.lock().prompt_sha256 = Some(digest);
    }

    pub fn set_served(
        &self,
        backend: &str,
        upstream_model: &str,
        attempts: u32,
        kind: &'static str,
    ) {
        let mut f = self.lock();
        f.backend = Some(backend.to_owned());
        f.upstream_model = Some(upstream_model.to_owned());
        f.attempts = attempts;
        f.backend_kind = Some(kind);
    }

    /// The kind of backend the request is meant for, before one answers (`set_served`
    /// replaces it with the kind of the replica that did).
    pub fn set_backend_kind(&self, kind: &'static str) {
        self.lock().backend_kind.get_or_insert(kind);
    }

    /// The request's start is audited and its backend is about to be called.
    pub fn set_dispatched(&self) {
        self.lock().dispatched = true;
    }

    /// Adds time spent waiting on a backend (the gateway's overhead is the rest).
    pub fn add_backend_wait(&self, waited: std::time::Duration) {
        let mut f = self.lock();
        f.backend_wait = f.backend_wait.saturating_add(waited);
    }

    /// The first content of a streamed answer was read now (only the first call counts).
    pub fn set_first_token(&self) {
        self.lock().first_token.get_or_insert_with(Instant::now);
    }

    /// How the answer ended, in OpenAI's words (`stop`, `length`, `tool_calls`, ...).
    pub fn set_finish_reason(&self, reason: &'static str) {
        self.lock().finish_reason = Some(reason);
    }

    pub fn set_tokens(&self, tokens_in: u64, tokens_out: u64) {
        let mut f = self.lock();
        f.tokens_in = tokens_in;
        f.tokens_out = tokens_out;
    }

    /// A stream that had started failed in-band.
    pub fn set_stream_failed(&self, reason: &'static str) {
        let mut f = self.lock();
        f.stream_failed = true;
        f.reason = Some(reason);
    }

    /// An audit event of this request as known now.
    pub fn audit_event(&self, event_type: EventType) -> AuditEvent {
        let f = self.lock();
        self.event_from(&f, event_type, None)
    }

    fn event_from(
        &self,
        f: &Fields,
        event_type: EventType,
        outcome: Option<Outcome>,
    ) -> AuditEvent {
        let method = f.auth_method.unwrap_or(AuthMethod::ApiKey);
        let (actor, kind) = match (&f.key_id, method) {
            // A token's subject is a person; a key is held by an application.
            (Some(k), AuthMethod::Jwt) => (k.as_str(), ActorKind::User),
            (Some(k), _) => (k.as_str(), ActorKind::Service),
            (None, _) => (
                f.attempt.as_deref().unwrap_or("anonymous"),
                ActorKind::Anonymous,
            ),
        };
        let mut e = AuditEvent::new(Timestamp::now(), event_type, actor, kind);
        e.auth_method = f.key_id.is_some().then_some(method);
        e.tenant = f.tenant.clone();
        // Tokens and certificates name a subject, not a wardgate key.
        e.key_id = f
            .key_id
            .clone()
            .filter(|_| matches!(method, AuthMethod::ApiKey | AuthMethod::BreakGlass));
        e.source_ip = self.source_ip;
        e.request_id = Some(self.request_id.clone());
        e.route = Some(self.route.clone());
        // Only a model name that resolved is recorded: a client-typed unknown name could hold
        // anything.
        e.model = f.model.clone().filter(|_| f.model_resolved);
        e.backend = f.backend.clone().filter(|b| !b.is_empty());
        e.prompt_sha256 = f.prompt_sha256;
        if event_type != EventType::RequestStart {
            e.detail = f.detail.clone();
        }
        if let Some(o) = outcome {
            e.outcome = Some(o.audit());
            e.http_status = Some(f.status);
            e.deny_reason = f.reason.map(str::to_owned);
            e.tokens_in = Some(f.tokens_in);
            e.tokens_out = Some(f.tokens_out);
            e.latency_ms =
                Some(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
        e
    }

    /// Ends the request, once: gives back its quota places and charges its tokens (the
    /// settlement to wait for), writes the log line and returns the terminal audit event
    /// (none for unaudited routes; nothing when already ended).
    fn end(&self, ending: Ending) -> (Option<AuditEvent>, Settled) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return (None, Settled::done());
        }
        let settled = self.settle();
        let event = RequestFinished {
            record: self,
            ending,
        }
        .emit();
        (event, settled)
    }
}

/// The event of a request's end, as `events.rs` has one type per security event: its `emit`
/// writes the request's one log line and returns its terminal audit event (none for unaudited
/// routes), from the same fields, so the two cannot disagree; the request metrics count here
/// too. It lives beside the record because it reads the whole record.
struct RequestFinished<'a> {
    record: &'a RequestRecord,
    ending: Ending,
}

impl RequestFinished<'_> {
    fn emit(self) -> Option<AuditEvent> {
        let (record, ending) = (self.record, self.ending);
        let f = record.lock();
        // A client that went away mid-body left before any answer, like one that left while
        // the request waited: its answer was written to no one.
        let ending = if f.reason == Some(crate::error::CLIENT_GONE) {
            Ending::BeforeResponse
        } else {
            ending
        };
        let outcome = if ending != Ending::Complete {
            Outcome::ClientAbort
        } else if f.stream_failed || f.status >= 500 {
            Outcome::Error
        } else if f.status >= 400 {
            Outcome::Deny
        } else {
            Outcome::Allow
        };
        let elapsed = record.started.elapsed();
        record_metrics(record, &f, outcome, elapsed);
        record_trace(record, &f, outcome);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "wardgate::request",
            request_id = %record.request_id,
            method = %record.method,
            route = %record.route,
            status = f.status,
            outcome = outcome.as_str(),
            reason = f.reason.unwrap_or(""),
            key_id = f.key_id.as_deref().unwrap_or(""),
            tenant = f.tenant.as_deref().unwrap_or(""),
            model = f.model.as_deref().unwrap_or(""),
            backend = f.backend.as_deref().unwrap_or(""),
            upstream_model = f.upstream_model.as_deref().unwrap_or(""),
            attempts = f.attempts,
            tokens_in = f.tokens_in,
            tokens_out = f.tokens_out,
            latency_ms = format_args!("{latency_ms:.3}"),
            "request"
        );
        if UNAUDITED_ROUTES.contains(&record.route.as_str()) || f.audit_folded {
            return None;
        }
        // A request dropped before it authenticated has done nothing that needs a trail, and
        // auditing it would let anyone who hangs up write to the log.
        if ending == Ending::BeforeResponse && f.key_id.is_none() {
            return None;
        }
        let event_type = match f.event_type {
            Some(t) => t,
            None if f.key_id.is_none() && (f.status == 401 || f.reason == Some("locked_out")) => {
                EventType::AuthFailure
            }
            None => EventType::Request,
        };
        let mut event = record.event_from(&f, event_type, Some(outcome));
        if ending == Ending::BeforeResponse {
            // No response was sent, so there is no status to record.
            event.http_status = None;
        }
        Some(event)
    }
}

/// The request's metrics (`crate::metrics`), from the same fields as its log line.
fn record_metrics(
    record: &RequestRecord,
    f: &Fields,
    outcome: Outcome,
    elapsed: std::time::Duration,
) {
    if !crate::metrics::installed() {
        return;
    }
    let failed = match outcome {
        Outcome::Allow | Outcome::Deny => None,
        Outcome::Error => Some(f.reason),
        Outcome::ClientAbort => Some(Some(crate::error::CLIENT_GONE)),
    };
    let route = (record.route != UNMATCHED_ROUTE).then_some(record.route.as_str());
    crate::metrics::request_finished(&crate::metrics::Finished {
        route,
        model: f.model.as_deref().filter(|_| f.model_resolved),
        named_model: f.model.is_some(),
        status: f.status,
        tenant: f.tenant.as_deref(),
        elapsed,
        backend_wait: f.backend_wait,
        gen_ai: f.dispatched.then(|| crate::metrics::GenAi {
            kind: f.backend_kind,
            failed,
            first_token: f
                .first_token
                .map(|t| t.saturating_duration_since(record.started)),
            tokens_in: f.tokens_in,
            tokens_out: f.tokens_out,
        }),
    });
}

/// The request's trace span's attributes, from the same fields as its log line and metrics.
fn record_trace(record: &RequestRecord, f: &Fields, outcome: Outcome) {
    if record.span.is_disabled() {
        return;
    }
    let failed = matches!(outcome, Outcome::Error | Outcome::ClientAbort);
    let error_type = match outcome {
        Outcome::Allow => None,
        Outcome::Deny => Some(f.reason.unwrap_or("_OTHER")),
        Outcome::Error | Outcome::ClientAbort => Some(crate::metrics::error_type(
            if outcome == Outcome::ClientAbort {
                Some(crate::error::CLIENT_GONE)
            } else {
                f.reason
            },
        )),
    };
    // As in the metrics: a model name the client typed is kept only when it resolved.
    let model = match (&f.model, f.model_resolved) {
        (Some(m), true) => Some(m.as_str()),
        (Some(_), false) => Some("_unknown"),
        (None, _) => None,
    };
    crate::telemetry::finish_request(
        &record.span,
        &crate::telemetry::Finished {
            request_id: &record.request_id,
            operation: crate::metrics::operation(&record.route),
            model,
            backend_kind: f.backend_kind,
            response_model: f.upstream_model.as_deref(),
            tokens_in: f.tokens_in,
            tokens_out: f.tokens_out,
            finish_reason: f.finish_reason,
            first_token: f
                .first_token
                .map(|t| t.saturating_duration_since(record.started)),
            status: f.status,
            error_type,
            failed,
            dispatched: f.dispatched,
        },
    );
}

/// The route of a request that matched none.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The most characters of a break-glass reason the audit log keeps (after redaction): enough
/// to say why ("ED trauma bay 2, unconscious, no consent possible"), short enough that a
/// log nothing can delete holds as little free text as possible.
pub const STORED_REASON_CHARS: usize = 100;

/// A break-glass reason as the audit log keeps it: identifiers redacted with the most
/// recall-oriented detector, then cut to [`STORED_REASON_CHARS`] characters (redacting first,
/// so a cut never leaves part of an identifier the detector would no longer recognise).
fn stored_reason(reason: &str) -> String {
    static DETECTOR: std::sync::LazyLock<wardgate_phi::Detector> =
        std::sync::LazyLock::new(wardgate_phi::Detector::high_recall);
    let redacted = DETECTOR.redact(reason);
    match redacted.char_indices().nth(STORED_REASON_CHARS) {
        Some((end, _)) => redacted[..end].to_owned(),
        None => redacted,
    }
}

/// `text` cut to the audit log's field bound, on a character boundary.
fn bounded(text: &str) -> String {
    let max = wardgate_audit::event::MAX_FIELD_LEN;
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Middleware: creates the record, tags the response with `x-request-id`, and ties the log
/// line to the end of the response body.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let front = Front::of_path(req.uri().path());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    // The trace context this request continues, when its router allowed one (`telemetry`).
    let parent = req.extensions_mut().remove::<crate::telemetry::Parent>();
    let span = crate::telemetry::request_span(req.method().as_str(), &route, parent);
    let record = Arc::new(RequestRecord {
        request_id: uuid::Uuid::now_v7().simple().to_string(),
        method: req.method().as_str().to_owned(),
        route,
        started: Instant::now(),
        source_ip: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| {
            crate::identity::net::client_ip(
                c.0.ip(),
                req.headers().get_all("x-forwarded-for").iter(),
                &state.config.server.trusted_proxies,
            )
        }),
        span: span.clone(),
        fields: Mutex::new(Fields::default()),
        lease: Mutex::new(None),
        ended: AtomicBool::new(false),
    });
    req.extensions_mut().insert(record.clone());
    let may_leave_body_unread = req.version() <= Version::HTTP_11
        && (req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"));
    // Until the response exists, a client that leaves drops this future (and the handler's)
    // wherever it waits: the guard then ends the record as `client_abort`.
    let mut guard = EndGuard {
        record: Some(record.clone()),
        audit: state.audit.clone(),
        panicked: false,
    };
    let mut resp = match AssertUnwindSafe(next.run(req).instrument(span))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(panic) => {
            // `CatchPanicLayer` above turns the panic into a generic 500; the record ends (when
            // this future is dropped) as that error, not as a client that left.
            guard.panicked = true;
            std::panic::resume_unwind(panic);
        }
    };
    // From here the response body ends the record.
    guard.disarm();
    // A refusal (bad key, unknown route, body too large) may leave the request body unread,
    // and hyper then closes the connection; say so, or a client reusing the pooled connection
    // fails its next, unrelated request.
    if may_leave_body_unread && (resp.status().is_client_error() || resp.status().is_server_error())
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    {
        let mut f = record.lock();
        f.status = resp.status().as_u16();
        if let Some(ErrorReason(r)) = resp.extensions().get::<ErrorReason>() {
            f.reason = Some(r);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&record.request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let audit = state.audit.clone();
    // Only an answer carrying data waits for its audit event: a refusal has nothing to hold
    // back, and waiting would let a flood of refusals queue on the audit log.
    let hold_last_frame = resp.status().is_success();
    if hold_last_frame
        && let Some(len) = resp.body().size_hint().exact()
        && len <= MAX_COMMIT_BEFORE_HEADERS
    {
        return commit_before_headers(resp, record, &audit, front).await;
    }
    resp.map(|body| {
        Body::new(LoggedBody {
            inner: body,
            record: Some(record),
            audit,
            hold_last_frame,
            held: None,
            pending: None,
            inner_done: false,
        })
    })
}

/// The largest answer whose audit event is committed before its status line is sent.
const MAX_COMMIT_BEFORE_HEADERS: u64 = 16 * 1024 * 1024;

/// A successful answer of known length (a whole JSON answer, not a stream) waits for its audit
/// event before anything is sent, so when the commit fails the client gets a 503 it can retry
/// rather than a 200 whose body breaks off. Bigger answers and streams hold back their last
/// frame instead ([`LoggedBody`]).
async fn commit_before_headers(
    resp: Response,
    record: Arc<RequestRecord>,
    audit: &Auditor,
    front: Front,
) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_COMMIT_BEFORE_HEADERS as usize).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // The body failed before its end: the answer is an error, as a stream's would be.
            record.set_stream_failed("body_error");
            let (event, _settling) = record.end(Ending::Complete);
            if let Some(event) = event {
                // Queued at once; nobody waits for the commit of an answer that failed anyway.
                drop(commit(audit, event, &record.span));
            }
            tracing::error!(error = %e, "a response body failed before it was sent");
            return ApiError::Internal.to_response(front);
        }
    };
    let (event, settled) = record.end(Ending::Complete);
    let Some(event) = event else {
        settled.await;
        return Response::from_parts(parts, Body::from(bytes));
    };
    let (committed, ()) = futures::join!(commit(audit, event, &record.span), settled);
    match committed {
        Ok(()) => Response::from_parts(parts, Body::from(bytes)),
        Err(e) => {
            // Fail closed: the client must not hold an answer that the audit log does not.
            tracing::error!(error = %e, "audit commit failed; the answer was replaced by a 503");
            let mut resp = ApiError::AuditUnavailable.to_response(front);
            if let Ok(v) = HeaderValue::from_str(&record.request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
    }
}

/// Ends the record of a request whose future is dropped before it has a response (the client
/// left while the handler waited), unless disarmed first.
struct EndGuard {
    record: Option<Arc<RequestRecord>>,
    audit: Auditor,
    /// The handler panicked: the client gets a 500, and the record says so.
    panicked: bool,
}

impl EndGuard {
    /// The response exists: its body ends the record from now on.
    fn disarm(mut self) {
        self.record = None;
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        let ending = if self.panicked {
            let mut f = record.lock();
            f.status = 500;
            f.reason = Some("panic");
            Ending::Complete
        } else {
            Ending::BeforeResponse
        };
        // Nobody is left to wait for the settlement: it finishes by itself.
        let (event, _settling) = record.end(ending);
        if let Some(event) = event {
            let audit = &self.audit;
            // Queued now, before the connection's task ends (and so before a shutdown stops
            // the writer); nobody is left to wait for the commit.
            if let Err(e) = audit.submit_detached(event) {
                tracing::error!(error = %crate::causes::Causes(&e), "audit: a client abort could not be recorded");
            }
        }
    }
}

type Commit = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Queues an event for the audit log at once (so it is in the writer's queue before the
/// response ends, and before any shutdown that follows), returning the wait for its commit.
/// Dropping the wait does not withdraw the event; a full queue is waited on in the background.
fn commit(audit: &Auditor, event: AuditEvent, parent: &tracing::Span) -> Commit {
    // The wait for the commit is the request's `audit commit` span (when traces are on).
    let span =
        tracing::info_span!(target: crate::telemetry::TARGET, parent: parent, "audit commit");
    match audit.submit(event) {
        Ok(pending) => Box::pin(
            async move { pending.await.map(drop).map_err(|e| e.to_string()) }
                .instrument(span)
                // The request's span lasts until its end is committed.
                .instrument(parent.clone()),
        ),
        Err(e) => Box::pin(std::future::ready(Err(e.to_string()))),
    }
}

/// A response body that writes the request's log line and audit event when it ends or is
/// dropped, and holds its last frame until the audit event is committed.
struct LoggedBody {
    inner: Body,
    record: Option<Arc<RequestRecord>>,
    audit: Auditor,
    /// Whether the end of the body waits for the audit commit (successful answers).
    hold_last_frame: bool,
    /// The last data frame, waiting for the audit commit.
    held: Option<http_body::Frame<Bytes>>,
    pending: Option<Commit>,
    inner_done: bool,
}

impl LoggedBody {
    /// Ends the record: the log line now, and the audit commit to wait for.
    fn finish(&mut self, completed: bool) {
        let ending = if completed {
            Ending::Complete
        } else {
            Ending::Aborted
        };
        let Some(r) = self.record.take() else {
            return;
        };
        let (event, settled) = r.end(ending);
        let committing = event.map(|e| commit(&self.audit, e, &r.span));
        // A successful answer's last frame waits for its audit event; every answer's waits
        // for its settlement, so the client's next request finds its place free and its
        // tokens charged, at whichever instance it goes to.
        let committing = committing.filter(|_| self.hold_last_frame);
        self.pending = match (committing, settled.is_done()) {
            (None, true) => None,
            (Some(c), true) => Some(c),
            (c, false) => Some(Box::pin(async move {
                let committed = async {
                    match c {
                        Some(c) => c.await,
                        None => Ok(()),
                    }
                };
                let (committed, ()) = futures::join!(committed, settled);
                committed
            })),
        };
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(p) = this.pending.as_mut() {
                let committed = std::task::ready!(p.as_mut().poll(cx));
                this.pending = None;
                if let Err(e) = committed {
                    // Fail closed: the client must not see a complete answer that the audit
                    // log does not hold.
                    this.held = None;
                    this.inner_done = true;
                    tracing::error!(error = %e, "audit commit failed; response aborted");
                    return Poll::Ready(Some(Err(axum::Error::new(e))));
                }
                if let Some(frame) = this.held.take() {
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
            if this.inner_done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.inner_done = true;
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if this.record.is_some() && this.inner.is_end_stream() {
                        // The last frame: held until the record's audit event is committed.
                        this.inner_done = true;
                        this.held = Some(frame);
                        this.finish(true);
                        if this.pending.is_none() {
                            return Poll::Ready(this.held.take().map(Ok));
                        }
                    } else {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(r) = this.record.as_ref() {
                        r.set_stream_failed("body_error");
                    }
                    this.finish(true);
                    // The error ends the body anyway; its audit event commits on its own.
                    this.pending = None;
                    this.inner_done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.record.is_none()
            && self.pending.is_none()
            && self.held.is_none()
            && (self.inner_done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(record) = &self.record {
            // Hyper drops a body it has fully sent without polling it to the end when the
            // size was known up front; only an unfinished body is an abort. The body of an
            // answer to HEAD is never sent (axum drops it unread): that is no abort either.
            let complete = self.inner_done
                || self.inner.is_end_stream()
                || record.method == axum::http::Method::HEAD.as_str();
            // The commit runs on its own task; nobody waits for it any more.
            self.finish(complete);
        }
    }
}
