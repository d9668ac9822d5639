//! Trace context on the backend side of a request: the span of each attempt on a replica, the
//! W3C `traceparent` that attempt sends, and the engine's phases (queue wait, prompt
//! evaluation, generation) as spans.
//!
//! Spans are `tracing` spans of target [`TARGET`]; only the OpenTelemetry layer sees them (the
//! log leaves them out), and with no exporter configured nothing enables them, so they cost a
//! disabled callsite. The engine's phases are made with the OpenTelemetry API directly, after
//! the fact, from the durations the engine already measures: the model thread does no tracing
//! work at all.
//!
//! Invariant: no span or attribute made here holds prompt or completion text, a key or a
//! client's free text; names and values come from the configuration and the engine's counts.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of every span wardgate exports (and of nothing else).
pub const TARGET: &str = "wardgate::otel";

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// The span of one attempt on one replica: a client span named `{operation} {model}` after
/// the model's name on that replica (configuration, not the client's text).
pub fn attempt_span(
    operation: &'static str,
    upstream_model: &str,
    backend: &str,
    kind: &'static str,
    attempt: u32,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "backend attempt",
        otel.name = tracing::field::Empty,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    span.record(
        "otel.name",
        format!("{operation} {upstream_model}").as_str(),
    );
    span.set_attribute("gen_ai.operation.name", operation);
    span.set_attribute("gen_ai.request.model", upstream_model.to_owned());
    span.set_attribute("gen_ai.provider.name", provider(kind));
    span.set_attribute("wardgate.backend.name", backend.to_owned());
    span.set_attribute("wardgate.backend.kind", kind);
    span.set_attribute("wardgate.backend.attempt", i64::from(attempt));
    span
}

/// Marks an attempt's span as failed, with the kind of failure (never the backend's text).
pub fn attempt_failed(span: &tracing::Span, error_type: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("error.type", error_type);
    span.record("otel.status_code", "error");
}

/// `gen_ai.provider.name` of a backend kind.
pub fn provider(kind: &str) -> &'static str {
    match kind {
        "openai" => "openai",
        "ollama" => "ollama",
        // The in-process engine, and `wardgate llm` itself.
        "embedded" => "wardgate",
        _ => "_OTHER",
    }
}

/// The `traceparent` of the current span, when it is exported (`None` when tracing is off,
/// or the current span is not one of ours).
pub fn current_traceparent() -> Option<String> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format(&sc))
}

/// A span context as a W3C `traceparent` (version 00).
pub fn format(sc: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Parses a W3C `traceparent` into a remote parent context. Strict: version 00 with exactly
/// its four fields (a later version's first four fields are taken, as the spec says), lower
/// case hex, neither id all zeros; anything else is no parent.
pub fn parse(value: &str) -> Option<opentelemetry::Context> {
    let mut parts = value.trim().split('-');
    let (Some(version), Some(trace), Some(span), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let rest = parts.next();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let sc = SpanContext::new(
        trace_id,
        span_id,
        // Only the sampled bit is defined; the others are not passed on.
        TraceFlags::new(flags & 0x01),
        true,
        TraceState::default(),
    );
    Some(opentelemetry::Context::new().with_remote_span_context(sc))
}

/// Records the engine's phases of one generation as three children of `parent` (the attempt
/// on the engine): `queue wait` (for a slot), `prompt eval` (to the first token) and
/// `generation` (to the end), laid back from now, when the generation has just finished.
pub fn engine_phases(
    parent: &tracing::Span,
    queued: Duration,
    prompt_eval: Duration,
    eval: Duration,
) {
    if parent.is_disabled() {
        return;
    }
    let cx = parent.context();
    if !cx.span().span_context().is_sampled() {
        return;
    }
    let tracer = opentelemetry::global::tracer("wardgate");
    let end = SystemTime::now();
    let generation = end.checked_sub(eval).unwrap_or(end);
    let prompt = generation.checked_sub(prompt_eval).unwrap_or(generation);
    let queue = prompt.checked_sub(queued).unwrap_or(prompt);
    for (name, from, to) in [
        ("queue wait", queue, prompt),
        ("prompt eval", prompt, generation),
        ("generation", generation, end),
    ] {
        tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(from)
            .start_with_context(&tracer, &cx)
            .end_with_timestamp(to);
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn traceparents_parse_strictly_and_format_back() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = parse(good).expect("a valid traceparent");
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(format(&sc), good);
        // Unsampled, and flags beyond the sampled bit dropped.
        let cx = parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-fe").expect("valid");
        assert!(!cx.span().span_context().is_sampled());
        // A later version may carry more fields.
        assert!(parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x").is_some());
        for bad in [
            "",
            "garbage",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn without_an_exporter_nothing_is_sent_or_made() {
        // No subscriber enables our target here: no span, no header.
        assert!(attempt_span("chat", "m", "b", "ollama", 1).is_disabled());
        assert_eq!(current_traceparent(), None);
    }
}
