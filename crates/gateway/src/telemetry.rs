//! OpenTelemetry traces: which spans wardgate makes, what they may carry, and whose trace
//! context it continues. The exporter itself (OTLP, from the standard `OTEL_*` variables) is
//! set up by the binary (`crates/wardgate/src/cmd/telemetry.rs`); this module is what the
//! binary and the tests share, so both build the same layer.
//!
//! Every span is a `tracing` span of target [`TARGET`]. The OpenTelemetry layer sees those
//! spans and nothing else — no log event, so no log message (redacted or not) can reach a
//! trace — and the log sees everything but those spans, so the log lines are the same with
//! tracing on or off. With no exporter configured no layer enables [`TARGET`], every span
//! here is a disabled callsite, and the helpers return at once.
//!
//! The tree of one request: a server span `{operation} {model}` (`record::observe`), with
//! children `auth`, `phi guard`, `audit commit` (the start, and the end) and one client span
//! per backend attempt (`wardgate_backends::trace`); an attempt on the engine has `queue wait`,
//! `prompt eval` and `generation` below it.
//!
//! Whose parent: on the public gateway a client's W3C `traceparent` is taken as the request
//! span's parent ([`client_parent`]), as any W3C server does — it carries two ids and a flag,
//! nothing else, and a client could as well make its own trace. `wardgate llm` takes a
//! `traceparent` only when the gateway's HMAC signature covers it ([`signed_parent`]), so no
//! one else can graft spans onto the gateway's traces through the private hop.
//!
//! Invariant: no span or attribute holds prompt or completion text, a credential, or a
//! client's free text (a model name the client typed is `_unknown` unless it resolved, as in
//! the metrics); message content capture does not exist here, so it cannot be turned on.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Array, StringValue, Value};
use tracing::Subscriber;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::registry::LookupSpan;

pub use wardgate_backends::trace::{TARGET, TRACEPARENT};

/// Whether `meta` is one of wardgate's trace spans.
fn is_trace_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == TARGET
}

fn is_not_trace_span(meta: &tracing::Metadata<'_>) -> bool {
    !is_trace_span(meta)
}

/// The filter for the log's layer: everything but the trace spans, so that log lines are the
/// same whether traces are exported or not.
pub fn log_filter() -> FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
    FilterFn::new(is_not_trace_span as fn(&tracing::Metadata<'_>) -> bool)
}

/// The layer that exports wardgate's spans (and nothing else: no event, no other crate's span)
/// through `tracer`.
pub fn layer<S, T>(tracer: T) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: opentelemetry::trace::Tracer + 'static,
    T::Span: Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // No source locations, thread names, targets, levels or busy/idle times: the
        // attributes are the ones set here, and nothing else.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_error_events_to_status(false)
        .with_error_events_to_exceptions(false)
        .with_filter(FilterFn::new(
            is_trace_span as fn(&tracing::Metadata<'_>) -> bool,
        ))
}

/// The parent a request's span continues, as its router allowed it (see the module's doc).
#[derive(Clone)]
pub struct Parent(pub opentelemetry::Context);

/// Middleware of the public gateway, above `record::observe`: a client's valid `traceparent`
/// is the parent of the request's span.
pub async fn client_parent(mut req: Request, next: Next) -> Response {
    if let Some(cx) = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(wardgate_backends::trace::parse)
    {
        req.extensions_mut().insert(Parent(cx));
    }
    next.run(req).await
}

/// Middleware of `wardgate llm`, above `record::observe`: a `traceparent` is the parent of
/// the request's span only when a valid, fresh gateway signature covers it. The signature is
/// checked again (and the nonce spent) by the service's own verification below; this one
/// only decides the parent, and runs only for requests that carry the header.
pub async fn signed_parent(
    State(verifier): State<Arc<wardgate_api::signing::Verifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    let parent = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        header(TRACEPARENT).and_then(|tp| {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let head = wardgate_api::signing::SignedHead {
                method: req.method().as_str(),
                path,
                timestamp: header(wardgate_api::signing::TIMESTAMP_HEADER),
                nonce: header(wardgate_api::signing::NONCE_HEADER),
                signature: header(wardgate_api::signing::SIGNATURE_HEADER),
                body_digest: header(wardgate_api::signing::BODY_DIGEST_HEADER),
                traceparent: Some(tp),
            };
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            verifier
                .signs_traceparent(&head, now)
                .then(|| wardgate_backends::trace::parse(tp))
                .flatten()
        })
    };
    if let Some(cx) = parent {
        req.extensions_mut().insert(Parent(cx));
    }
    next.run(req).await
}

/// The server span of one request, named `{method} {route}` until its GenAI operation is
/// known. `route` is the router's template (or `unmatched`), never the client's path.
pub fn request_span(method: &str, route: &str, parent: Option<Parent>) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(Parent(cx)) = parent {
        // Before the span is first entered, so this cannot fail for that reason; a parent
        // that cannot be set leaves the span a root, which is no error.
        let _ = span.set_parent(cx);
    }
    span.record("otel.name", format!("{method} {route}").as_str());
    span.set_attribute("http.request.method", method.to_owned());
    span.set_attribute("http.route", route.to_owned());
    span
}

/// What a request's span says at its end (built by the request's record).
#[derive(Debug)]
pub struct Finished<'a> {
    pub request_id: &'a str,
    /// `gen_ai.operation.name` of the route; `None` for routes that are no GenAI operation.
    pub operation: Option<&'static str>,
    /// The public model name as the metrics label it: the name when it resolved, `_unknown`
    /// when the client named one that did not, `None` when it named none.
    pub model: Option<&'a str>,
    /// The kind of the replica that answered (`ollama`, `openai`, `embedded`).
    pub backend_kind: Option<&'static str>,
    /// The model's name on the replica that answered (configuration, not the client's text).
    pub response_model: Option<&'a str>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub finish_reason: Option<&'static str>,
    /// From arrival to the first content of a streamed answer.
    pub first_token: Option<std::time::Duration>,
    pub status: u16,
    /// The failure's `error.type` (wardgate's reason code), when the request failed or was
    /// refused.
    pub error_type: Option<&'static str>,
    /// The request failed on wardgate's or the backend's side (the span's status is error).
    pub failed: bool,
    /// Whether the backend was called (the GenAI attributes apply).
    pub dispatched: bool,
}

/// Sets the request's span's name and attributes at the request's end.
pub fn finish_request(span: &tracing::Span, f: &Finished<'_>) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("wardgate.request.id", f.request_id.to_owned());
    span.set_attribute("http.response.status_code", i64::from(f.status));
    if let Some(op) = f.operation {
        let model = f.model.unwrap_or("_none");
        // The span has started by now: its name is changed on the span itself (recording
        // `otel.name` renames only a span not yet started).
        span.context().span().update_name(format!("{op} {model}"));
        span.set_attribute("gen_ai.operation.name", op);
        span.set_attribute("gen_ai.request.model", model.to_owned());
        if let Some(kind) = f.backend_kind {
            span.set_attribute(
                "gen_ai.provider.name",
                wardgate_backends::trace::provider(kind),
            );
        }
        if let Some(m) = f.response_model.filter(|m| !m.is_empty()) {
            span.set_attribute("gen_ai.response.model", m.to_owned());
        }
        if f.dispatched {
            span.set_attribute("gen_ai.usage.input_tokens", clamp(f.tokens_in));
            if op != "embeddings" {
                span.set_attribute("gen_ai.usage.output_tokens", clamp(f.tokens_out));
            }
        }
        if let Some(reason) = f.finish_reason {
            span.set_attribute(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec![StringValue::from(reason)])),
            );
        }
        if let Some(first) = f.first_token {
            span.set_attribute("gen_ai.server.time_to_first_token", first.as_secs_f64());
        }
    }
    if let Some(e) = f.error_type {
        span.set_attribute("error.type", e);
    }
    if f.failed {
        span.record("otel.status_code", "error");
    }
    // The exporting layer ends a span at its last exit: entered once more now, the span lasts
    // to the request's end (a streamed body is sent outside it), or to its audit commit's end
    // (`record::commit` enters it while it waits).
    drop(span.enter());
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
