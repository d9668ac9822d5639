//! `wardgate llm` in-process: the Ollama handlers over the real engine (a tiny random-weight
//! GGUF) behind HMAC verification. Unsigned, stale, replayed and altered requests are refused,
//! and each refusal is logged with its reason.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use wardgate_api::signing::{self, SigningKey};
use wardgate_gateway::app::{LlmService, Stores};
use wardgate_gateway::config::{Config, parse_toml};

use crate::support::{LLM_SECRET, import_tiny_model, signed};

async fn app(models: &std::path::Path) -> axum::Router {
    import_tiny_model(models);
    let toml = format!(
        "[engine]\nmodels_dir = \"{}\"\nslots = 2\nslot_ctx = 256\nthreads = 1\n[rate_limit]\nrequests_per_minute = 0\n",
        models.join("store").display()
    );
    let config = Config::from_raw(parse_toml(&toml).unwrap(), &|_| None).unwrap();
    let keys = vec![SigningKey::new(LLM_SECRET).unwrap()];
    let service = LlmService::build(config, Stores::in_memory().await.unwrap(), keys)
        .await
        .unwrap();
    wardgate_gateway::app::refresh_backends(&service.state()).await;
    service.router()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn only_fresh_signed_unaltered_requests_are_served() {
    let (logs, _guard) = crate::support::logs::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = r#"{"model":"tiny:test","prompt":"hello","stream":false,"options":{"num_predict":4,"temperature":0}}"#;

    let (status, text) = send(
        &app,
        signed("/api/generate", body, now, "nonce-valid-000000001"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["done"], true);
    assert_eq!(v["eval_count"], 4);

    // Replayed: the same signed request again.
    let (status, _) = send(
        &app,
        signed("/api/generate", body, now, "nonce-valid-000000001"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Stale and from the future.
    for at in [now - 120, now + 120] {
        let (status, _) = send(
            &app,
            signed("/api/generate", body, at, &format!("nonce-stale-{at}-0000")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Altered after signing: the body changes, the signature does not.
    let mut altered = signed("/api/generate", body, now, "nonce-altered-00000001");
    *altered.body_mut() = Body::from(body.replace("hello", "HELLO"));
    let (status, _) = send(&app, altered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Signed for another path.
    let mut moved = signed("/api/chat", body, now, "nonce-moved-0000000001");
    *moved.uri_mut() = "/api/generate".parse().unwrap();
    assert_eq!(send(&app, moved).await.0, StatusCode::UNAUTHORIZED);
    // Unsigned, on every route, known or not.
    for path in ["/api/generate", "/api/chat", "/api/tags", "/api/pull", "/"] {
        let (status, text) = send(&app, Request::post(path).body(Body::from(body)).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            text, r#"{"error":"unauthorized"}"#,
            "no detail for the caller"
        );
    }
    // Probes need no signature and say nothing about models.
    let (status, text) = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, text.contains("tiny")), (StatusCode::OK, false));

    let logged = logs.text();
    for reason in [
        "nonce already used",
        "timestamp outside the allowed skew",
        "signature does not match",
        "missing signature headers",
    ] {
        assert!(logged.contains(reason), "`{reason}` not logged:\n{logged}");
    }
    assert_eq!(
        logged
            .matches("refused an unsigned or badly signed request")
            .count(),
        10,
        "{logged}"
    );
    assert!(!logged.contains("hello"), "the prompt is never logged");
}

#[tokio::test]
async fn signed_requests_reach_the_engine_through_every_ollama_route() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let chat = r#"{"model":"tiny:test","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":3,"seed":7}}"#;
    let (status, text) = send(
        &app,
        signed("/api/chat", chat, now, "nonce-chat-00000000001"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(
        (last["done"].clone(), last["eval_count"].clone()),
        (serde_json::json!(true), serde_json::json!(3))
    );
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 0);

    let get = |path: &str, nonce: &str| {
        crate::support::signed_request(LLM_SECRET, "GET", path, "", now, nonce)
    };
    let (_, tags) = send(&app, get("/api/tags", "nonce-tags-00000000001")).await;
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["models"][0]["name"], "tiny:test");
    assert_eq!(tags["models"][0]["details"]["family"], "llama");
    assert_eq!(tags["models"][0]["digest"].as_str().unwrap().len(), 64);
    let (_, ps) = send(&app, get("/api/ps", "nonce-ps-0000000000001")).await;
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(
        ps["models"][0]["name"], "tiny:test",
        "loaded by the chat above"
    );
    let (status, show) = send(
        &app,
        signed(
            "/api/show",
            r#"{"model":"tiny:test"}"#,
            now,
            "nonce-show-00000000001",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{show}");
    assert!(show.contains("\"llama.context_length\":512"), "{show}");
    let (status, _) = send(
        &app,
        signed(
            "/api/pull",
            r#"{"model":"x"}"#,
            now,
            "nonce-pull-00000000001",
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "model management is not exposed"
    );
}

/// A backend with a bug: every generation panics.
struct Panics;

#[async_trait::async_trait]
impl wardgate_backends::Backend for Panics {
    fn name(&self) -> &str {
        "buggy"
    }
    fn kind(&self) -> &'static str {
        "ollama"
    }
    async fn chat(
        &self,
        _: &wardgate_api::canonical::ChatRequest,
    ) -> Result<wardgate_backends::EventStream, wardgate_backends::BackendError> {
        panic!("backend bug")
    }
    async fn complete(
        &self,
        _: &wardgate_api::canonical::CompletionRequest,
    ) -> Result<wardgate_backends::EventStream, wardgate_backends::BackendError> {
        panic!("backend bug")
    }
    async fn embed(
        &self,
        _: &wardgate_api::canonical::EmbedRequest,
    ) -> Result<wardgate_api::canonical::EmbedResponse, wardgate_backends::BackendError> {
        panic!("backend bug")
    }
    async fn list_models(&self) -> Result<Vec<String>, wardgate_backends::BackendError> {
        Ok(vec![])
    }
    async fn health(&self) -> Result<(), wardgate_backends::BackendError> {
        Ok(())
    }
}

/// `wardgate llm` over one model, `m`, served by [`Panics`].
async fn buggy_app() -> axum::Router {
    use wardgate_backends::{BackendHandle, BreakerConfig, Catalog, ModelEntry, Pool};
    let config = Config::from_raw(parse_toml("").unwrap(), &|_| None).unwrap();
    let handle = BackendHandle::new(Arc::new(Panics), BreakerConfig::default());
    let model = ModelEntry {
        name: "m".into(),
        aliases: vec![],
        chain: vec![("buggy".into(), "m".into())],
        context_window: 4096,
    };
    let catalog = Catalog::new(vec![Pool::single(handle)], &[model], 4096, 0).unwrap();
    let keys = vec![SigningKey::new(LLM_SECRET).unwrap()];
    LlmService::build_over(config, Stores::in_memory().await.unwrap(), keys, catalog)
        .await
        .unwrap()
        .router()
}

/// The `reason` field of each `wardgate::request` log line, in order.
fn request_reasons(logged: &str) -> Vec<String> {
    logged
        .lines()
        .filter(|l| l.contains("wardgate::request"))
        .map(|l| {
            l.split_once(" reason=")
                .map(|(_, rest)| {
                    let value = rest.split(' ').next().unwrap_or("");
                    value.trim_matches('"').to_owned()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Issue 16: each refusal of `wardgate llm` says why in its request log line, as the
/// gateway's refusals do, so an operator can tell a misconfigured gateway from a clock off or
/// a replay without matching the separate warning line.
#[tokio::test]
async fn i16_a_refused_signature_logs_its_reason_on_the_request_line() {
    let (logs, _guard) = crate::support::logs::capture_logs();
    let app = buggy_app().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = r#"{"model":"m","prompt":"hi","stream":false}"#;
    let ok_nonce = "nonce-i16-reason-00001";
    // Missing: no signature at all.
    let unsigned = Request::post("/api/generate")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    // Invalid: signed with another secret.
    let other = crate::support::signed_post(
        b"another-secret-of-32-bytes-or-more!!",
        "/api/generate",
        body,
        now,
        "nonce-i16-reason-00002",
    );
    // Stale: signed two minutes ago.
    let stale = signed("/api/generate", body, now - 120, "nonce-i16-reason-00003");
    // Altered: the body changes after signing.
    let mut altered = signed("/api/generate", body, now, "nonce-i16-reason-00004");
    *altered.body_mut() = Body::from(body.replace("hi", "HI"));
    // Replayed: a nonce the service has seen (its first use is served).
    let version = || {
        let sig = signing::sign(
            &SigningKey::new(LLM_SECRET).unwrap(),
            "GET",
            "/api/version",
            b"",
            now,
            ok_nonce,
        );
        Request::get("/api/version")
            .header(signing::TIMESTAMP_HEADER, sig.timestamp)
            .header(signing::NONCE_HEADER, sig.nonce)
            .header(signing::SIGNATURE_HEADER, sig.signature)
            .header(signing::BODY_DIGEST_HEADER, sig.body_digest)
            .body(Body::empty())
            .unwrap()
    };
    let (first, replayed) = (version(), version());
    let mut statuses = Vec::new();
    for req in [unsigned, other, stale, altered, first, replayed] {
        statuses.push(send(&app, req).await.0);
    }
    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::UNAUTHORIZED,
            S::UNAUTHORIZED,
            S::UNAUTHORIZED,
            S::UNAUTHORIZED,
            S::OK,
            S::UNAUTHORIZED
        ]
    );
    let logged = logs.text();
    assert_eq!(
        request_reasons(&logged),
        [
            "signature_missing",
            "signature_invalid",
            "signature_stale",
            "body_altered",
            "",
            "replayed"
        ],
        "{logged}"
    );
}

/// Issue 16: a handler that panics behind `wardgate llm` answers a generic 500 (and its
/// request log line says `panic`), as on the gateway, instead of dropping the connection.
#[tokio::test]
async fn i16_a_panicking_handler_answers_500() {
    let (logs, _guard) = crate::support::logs::capture_logs();
    let app = buggy_app().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = r#"{"model":"m","prompt":"hi","stream":false}"#;
    let (status, text) = send(
        &app,
        signed("/api/generate", body, now, "nonce-i16-panic-000001"),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    assert_eq!(text, r#"{"error":"internal error"}"#);
    let logged = logs.text();
    assert!(!logged.contains("backend bug"), "the payload is not logged");
    assert_eq!(request_reasons(&logged), ["panic"], "{logged}");
}

/// `wardgate llm` keeps an audit log of its own (issue 16: the audit log is a required part of
/// every role's state): a signed request it serves leaves its start and its terminal event,
/// run as the gateway with no tenant, and a request with a bad signature an `auth_failure`.
#[tokio::test]
async fn i16_the_llm_service_audits_what_it_serves_and_refuses() {
    use wardgate_audit::{EventType, Outcome};
    let h = crate::support::Harness::single("ollama").await;
    let keys = vec![SigningKey::new(LLM_SECRET).unwrap()];
    let service = LlmService::build(
        (*h.state.config).clone(),
        Stores::in_memory().await.unwrap(),
        keys,
    )
    .await
    .unwrap();
    let app = service.router();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = serde_json::json!({"model": "tiny", "prompt": "hi", "stream": false}).to_string();
    let (status, text) = send(
        &app,
        signed("/api/generate", &body, now, "nonce-audit-000000001"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Signed with another key.
    let req = crate::support::signed_post(
        &[7u8; 32],
        "/api/generate",
        &body,
        now,
        "nonce-audit-000000002",
    );
    assert_eq!(send(&app, req).await.0, StatusCode::UNAUTHORIZED);

    let audit = service.state().audit;
    audit.checkpoint().await.unwrap();
    let events = crate::support::stored_events(&audit).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.event_type, e.outcome, e.http_status))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::RequestStart, None, None),
            (EventType::Request, Some(Outcome::Allow), Some(200)),
            (EventType::AuthFailure, Some(Outcome::Deny), Some(401)),
        ],
        "{events:#?}"
    );
    assert!(
        events[..2]
            .iter()
            .all(|e| e.actor_id == "gateway" && e.tenant.is_none())
    );
}

/// The `auth_failure` events of `ip` and the refusals they stand for: one per request event,
/// `N` per `suppressed: N` summary (which belongs to no request).
fn failures_of(events: &[wardgate_audit::AuditEvent], ip: std::net::IpAddr) -> (u64, usize) {
    let mine: Vec<_> = events
        .iter()
        .filter(|e| {
            e.source_ip == Some(ip) && e.event_type == wardgate_audit::EventType::AuthFailure
        })
        .collect();
    (crate::support::refusals_counted(&mine), mine.len())
}

fn from_peer(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            ip, 40_000,
        ))));
    req
}

/// The llm service over the harness's backend, its failed authentications folded per
/// `window`.
async fn folding_service(h: &crate::support::Harness, window: u64) -> LlmService {
    let mut config = (*h.state.config).clone();
    config.lockout.audit_window = std::time::Duration::from_secs(window);
    LlmService::build(
        config,
        Stores::in_memory().await.unwrap(),
        vec![SigningKey::new(LLM_SECRET).unwrap()],
    )
    .await
    .unwrap()
}

/// Found by the black-box attack (finding 2): every unsigned or badly signed request to
/// `wardgate llm` wrote its own permanent `auth_failure` event, so anyone who reaches the
/// private port could grow the undeletable log at line rate. Now they are folded per peer
/// address as on the gateway: the first in each `auth.failure_audit_window` is written, the rest
/// become one `suppressed: N` event, and the counts add up. Every refusal is still answered 401
/// and counted; a valid signature is served and audited all the same.
#[tokio::test]
async fn i16_attack_llm_signature_refusals_are_folded_per_address() {
    use std::sync::atomic::Ordering;
    use wardgate_audit::{EventType, Outcome};
    let counters = &wardgate_gateway::middleware::events::COUNTERS;
    let h = crate::support::Harness::single("ollama").await;
    let service = folding_service(&h, 60).await;
    let app = service.router();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = serde_json::json!({"model": "tiny", "prompt": "hi", "stream": false}).to_string();
    let flooder = [192, 0, 2, 50];
    let other = [192, 0, 2, 51];
    let (failures, folded) = (
        counters.auth_failures.load(Ordering::Relaxed),
        counters.auth_failures_folded.load(Ordering::Relaxed),
    );
    for i in 0..300 {
        let req = if i % 10 == 0 {
            // Signed with the wrong key.
            crate::support::signed_post(
                &[7u8; 32],
                "/api/generate",
                &body,
                now,
                &format!("nonce-forged-{i:09}"),
            )
        } else {
            Request::post("/api/chat")
                .body(Body::from(body.clone()))
                .unwrap()
        };
        let (status, _) = send(&app, from_peer(req, flooder)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "request {i}");
    }
    for _ in 0..3 {
        let req = Request::get("/api/tags").body(Body::empty()).unwrap();
        assert_eq!(
            send(&app, from_peer(req, other)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // The flooder's own valid signature is served and audited on its own.
    let (status, text) = send(
        &app,
        from_peer(
            signed("/api/generate", &body, now, "nonce-fold-0000000001"),
            flooder,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Every refusal is counted; all but each address's first are counted as folded.
    assert!(counters.auth_failures.load(Ordering::Relaxed) - failures >= 303);
    assert!(counters.auth_failures_folded.load(Ordering::Relaxed) - folded >= 301);

    // What a stop writes (`app::run_service` flushes the state's windows).
    let state = service.state();
    state.lockout.flush_folded(&state.audit).await;
    state.audit.checkpoint().await.unwrap();
    let events = crate::support::stored_events(&state.audit).await;
    // One window each: the first refusal and one summary, whose counts add up.
    assert_eq!(
        failures_of(&events, flooder.into()),
        (300, 2),
        "{events:#?}"
    );
    assert_eq!(failures_of(&events, other.into()), (3, 2), "{events:#?}");
    let served: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::Request)
        .collect();
    assert_eq!(served.len(), 1, "{events:#?}");
    assert_eq!(
        (
            served[0].outcome,
            served[0].http_status,
            served[0].actor_id.as_str()
        ),
        (Some(Outcome::Allow), Some(200), "gateway")
    );
}

/// A window still open when `wardgate llm` stops is written by the stop: a flood over a real
/// socket leaves its first refusal and one `suppressed: N` event once the service has run down.
#[tokio::test]
async fn i16_attack_llm_folded_refusals_are_written_at_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = crate::support::Harness::single("ollama").await;
    let service = folding_service(&h, 600).await;
    let state = service.state();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run(listener, async move {
        let _ = stopped.await;
    }));
    for _ in 0..20 {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /api/tags HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sock.read_to_end(&mut answer),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 401"), "{answer:?}");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let events = crate::support::stored_events(&state.audit).await;
    assert_eq!(failures_of(&events, addr.ip()), (20, 2), "{events:#?}");
}
