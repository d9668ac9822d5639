//! OpenTelemetry traces (`wardgate_gateway::telemetry`), caught in memory: the span tree of a
//! request, its GenAI attributes, the `traceparent` the backend receives, a client's parent
//! continued, and no prompt, completion, key or unknown model name in any span. The OTLP wire
//! itself is tested end to end in tests/e2e/test_traces.py.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::post;
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry::{Array, StringValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;
use wardgate_api::signing;
use wardgate_gateway::telemetry;

use crate::support::{Harness, chat_body, mock_cfg, post_as, send_to};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
/// Identifiers that must never reach a span.
const NAME: &str = "Zebulon Quixotefield";
const MRN: &str = "MRN 4417-2291-XQ";

/// Runs `f` with the trace layer over an in-memory exporter as this thread's subscriber (the
/// tests run on a current-thread runtime, so every task of the request sees it); returns the
/// spans exported.
async fn traced<F: std::future::Future<Output = ()>>(f: F) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(telemetry::layer(provider.tracer("test")));
    let guard = tracing::subscriber::set_default(subscriber);
    f.await;
    drop(guard);
    provider.force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn attrs(span: &SpanData) -> HashMap<String, Value> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.as_str().to_owned(), kv.value.clone()))
        .collect()
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn a_chat_is_one_server_span_with_its_steps_below_and_no_text_in_any() {
    for stream in [false, true] {
        let h = Harness::single_with("ollama", mock_cfg(), "[phi]\nmode = \"deidentify\"\n").await;
        // `echo:` makes the mock answer with the prompt: the completion holds the identifiers
        // too (restored by the gateway), and must not reach a span either.
        let mut body = chat_body("tiny", &format!("echo: Patient {NAME}, {MRN}, chest pain"));
        body["stream"] = stream.into();
        let spans = traced(async {
            let mut req = post_as("/api/chat", &body.to_string(), Some(&h.key));
            req.headers_mut().insert(
                "traceparent",
                format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
                    .parse()
                    .unwrap(),
            );
            let resp = send_to(h.app.clone(), req).await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
            assert!(
                resp.text().contains("Quixotefield"),
                "echoed: {}",
                resp.text()
            );
        })
        .await;

        let server = named(&spans, "chat tiny")
            .into_iter()
            .find(|s| s.span_kind == SpanKind::Server)
            .unwrap_or_else(|| panic!("no server span: {spans:#?}"));
        // The client's trace continues.
        assert_eq!(
            server.span_context.trace_id(),
            TraceId::from_hex(CLIENT_TRACE).unwrap()
        );
        assert_eq!(
            server.parent_span_id,
            SpanId::from_hex(CLIENT_SPAN).unwrap()
        );
        let a = attrs(server);
        for (key, want) in [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.request.model", "tiny"),
            ("gen_ai.provider.name", "ollama"),
            ("gen_ai.response.model", "tiny"),
            ("http.route", "/api/chat"),
        ] {
            assert_eq!(
                a.get(key).map(|v| v.as_str()),
                Some(want.into()),
                "{key}: {a:?}"
            );
        }
        assert_eq!(a["http.response.status_code"], Value::I64(200));
        assert!(
            matches!(a["gen_ai.usage.input_tokens"], Value::I64(n) if n > 0),
            "{a:?}"
        );
        assert!(
            matches!(a["gen_ai.usage.output_tokens"], Value::I64(n) if n > 0),
            "{a:?}"
        );
        assert_eq!(
            a["gen_ai.response.finish_reasons"],
            Value::Array(Array::String(vec![StringValue::from("stop")])),
            "{a:?}"
        );
        // Time to first token is measured on streamed answers.
        assert_eq!(
            a.contains_key("gen_ai.server.time_to_first_token"),
            stream,
            "{a:?}"
        );
        assert!(!a.contains_key("error.type"));

        // Its children: auth, the PHI guard, the two audit commits, the backend attempt.
        let children: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == server.span_context.span_id())
            .collect();
        let mut names: Vec<&str> = children.iter().map(|s| &*s.name).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "audit commit",
                "audit commit",
                "auth",
                "chat tiny",
                "phi guard"
            ],
            "{children:#?}"
        );
        for child in &children {
            assert_eq!(
                child.span_context.trace_id(),
                server.span_context.trace_id()
            );
        }
        let phi = named(&spans, "phi guard")[0];
        assert_eq!(attrs(phi)["wardgate.phi.pseudonymized"], Value::Bool(true));
        let attempt = children
            .iter()
            .find(|s| s.span_kind == SpanKind::Client)
            .expect("the backend attempt");
        let at = attrs(attempt);
        assert_eq!(at["wardgate.backend.name"].as_str(), "b0");
        assert_eq!(at["wardgate.backend.kind"].as_str(), "ollama");
        assert_eq!(at["wardgate.backend.attempt"], Value::I64(1));

        // The backend was sent the attempt's context.
        let sent = h.mocks[0].stats().last_headers;
        let traceparent = sent
            .iter()
            .find(|(k, _)| k == "traceparent")
            .map(|(_, v)| v.clone())
            .expect("a traceparent to the backend");
        assert_eq!(
            traceparent,
            format!(
                "00-{CLIENT_TRACE}-{:016x}-01",
                attempt.span_context.span_id()
            )
        );

        // No identifier, no prompt or answer text, no key, anywhere in any span.
        let dump = format!("{spans:?}");
        for secret in ["Quixotefield", "Zebulon", "4417-2291", "chest pain", &h.key] {
            assert!(!dump.contains(secret), "{secret:?} in a span");
        }
    }
}

#[tokio::test]
async fn an_unknown_model_is_named_as_in_the_metrics_and_a_refusal_is_no_error() {
    let h = Harness::single("openai").await;
    let client_text = "Quixotefield-secret-model";
    let spans = traced(async {
        let resp = h
            .send(post_as(
                "/v1/chat/completions",
                &chat_body(client_text, "hello").to_string(),
                Some(&h.key),
            ))
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text());
        let resp = h
            .send(post_as(
                "/v1/chat/completions",
                &chat_body("tiny", "hello").to_string(),
                Some("wg_not_a_key"),
            ))
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    })
    .await;
    let unknown = named(&spans, "chat _unknown");
    assert_eq!(unknown.len(), 1, "{spans:#?}");
    let a = attrs(unknown[0]);
    assert_eq!(a["gen_ai.request.model"].as_str(), "_unknown");
    assert_eq!(a["http.response.status_code"], Value::I64(404));
    assert!(a.contains_key("error.type"), "{a:?}");
    // A refusal is the client's error, not the server's.
    assert_eq!(unknown[0].status, opentelemetry::trace::Status::Unset);
    // The request that did not authenticate never named a model that resolved.
    assert_eq!(
        named(&spans, "chat _unknown").len() + named(&spans, "chat tiny").len(),
        1
    );
    let refused = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Server
                && attrs(s)["http.response.status_code"] == Value::I64(401)
        })
        .unwrap_or_else(|| panic!("no span for the 401: {spans:#?}"));
    assert_eq!(attrs(refused)["error.type"].as_str(), "unauthenticated");
    assert!(!format!("{spans:?}").contains("Quixotefield"));
}

#[tokio::test]
async fn without_the_trace_layer_a_request_makes_no_span_and_sends_no_traceparent() {
    let h = Harness::single("ollama").await;
    let resp = h.post("/api/chat", chat_body("tiny", "hello")).await;
    assert_eq!(resp.status, StatusCode::OK);
    let sent = h.mocks[0].stats().last_headers;
    assert!(!sent.iter().any(|(k, _)| k == "traceparent"), "{sent:?}");
}

/// `wardgate llm` takes a parent only from a `traceparent` its gateway's signature covers.
#[tokio::test]
async fn the_llm_service_trusts_only_a_signed_traceparent() {
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let verifier = Arc::new(signing::Verifier::new(
        vec![signing::SigningKey::new(SECRET).unwrap()],
        30,
        100,
    ));
    let app = Router::new()
        .route(
            "/api/chat",
            post(|req: Request| async move {
                req.extensions()
                    .get::<telemetry::Parent>()
                    .is_some()
                    .to_string()
            }),
        )
        .layer(from_fn_with_state(verifier, telemetry::signed_parent));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let request = |key: &[u8], nonce: &str, signed: Option<&str>, sent: Option<&str>| {
        let sig = signing::sign_traced(
            &signing::SigningKey::new(key).unwrap(),
            "POST",
            "/api/chat",
            b"{}",
            now,
            nonce,
            signed,
        );
        let mut b = Request::post("/api/chat")
            .header(signing::TIMESTAMP_HEADER, sig.timestamp)
            .header(signing::NONCE_HEADER, sig.nonce)
            .header(signing::SIGNATURE_HEADER, sig.signature)
            .header(signing::BODY_DIGEST_HEADER, sig.body_digest);
        if let Some(tp) = sent {
            b = b.header("traceparent", tp);
        }
        b.body(Body::from("{}")).unwrap()
    };
    let other = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
    let forger: &[u8] = b"fedcba9876543210fedcba9876543210";
    for (what, req, trusted) in [
        (
            "signed",
            request(SECRET, "nonce-0000000000001", Some(TP), Some(TP)),
            true,
        ),
        (
            "changed",
            request(SECRET, "nonce-0000000000002", Some(TP), Some(other)),
            false,
        ),
        (
            "unsigned (v1)",
            request(SECRET, "nonce-0000000000003", None, Some(TP)),
            false,
        ),
        (
            "forged",
            request(forger, "nonce-0000000000004", Some(TP), Some(TP)),
            false,
        ),
        (
            "absent",
            request(SECRET, "nonce-0000000000005", None, None),
            false,
        ),
    ] {
        let resp = send_to(app.clone(), req).await;
        assert_eq!(resp.text(), trusted.to_string(), "{what}");
    }
}
