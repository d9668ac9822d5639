//! The bad-input and attack cases every release must survive (`shared/design/attack-cases.md`),
//! one test per case, named `case_NN_*` after the document's numbering. Each asserts the status,
//! the error shape of the route's front (OpenAI `{"error":{"message","type","param","code"}}` on
//! `/v1/*` and `/admin/*`, Ollama `{"error":"..."}` on `/api/*`), that no prompt text, secret or
//! stack trace leaks into the body (and, where cheap, into captured logs), the request's terminal
//! audit event, and that the server still serves a normal request afterwards.
//!
//! The connection-layer and quota features these cases exercise have their own, broader tests
//! in `transport.rs` and `quotas.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64_STD, URL_SAFE_NO_PAD as B64};
use jsonwebtoken::Algorithm;
use mock_upstream::MockConfig;
use serde_json::{Value, json};
use support::jwt::*;
use support::logs::{Logs, capture_logs};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use wardgate_api::signing::{self, SigningKey, Verifier};
use wardgate_audit::{AuditEvent, EventType, MemoryAuditStore, Outcome};
use wardgate_gateway::jwt::JwtVerifier;
use wardgate_store::{KeyStore, Role};

// =============================================================================================
// Shared assertions

/// What only a stack trace, a panic message or an interpreter's traceback would put in a body.
const TRACE_MARKERS: &[&str] = &[
    "panicked at",
    "stack backtrace",
    "RUST_BACKTRACE",
    "Traceback (most recent call last)",
    ".rs:",
    "thread '",
];

/// The OpenAI error shape, exactly: `{"error":{"message","type","param","code"}}`, with the
/// status and (when given) the code. Returns the inner object.
fn assert_openai_error(r: &Resp, status: u16, code: Option<&str>) -> Value {
    assert_eq!(r.status.as_u16(), status, "status: {}", r.text());
    let v = r.json();
    let outer: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(outer, ["error"], "only `error` at the top: {v}");
    let e = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not the OpenAI shape: {v}"));
    let keys: BTreeSet<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["code", "message", "param", "type"]),
        "{v}"
    );
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    assert!(e["param"].is_null() || e["param"].is_string(), "{v}");
    assert!(e["code"].is_null() || e["code"].is_string(), "{v}");
    if let Some(c) = code {
        assert_eq!(e["code"], c, "{v}");
    }
    assert_no_leak(r, &[]);
    v["error"].clone()
}

/// The Ollama error shape, exactly: `{"error":"..."}`. Returns the message.
fn assert_ollama_error(r: &Resp, status: u16) -> String {
    assert_eq!(r.status.as_u16(), status, "status: {}", r.text());
    let v = r.json();
    let keys: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["error"], "only `error`: {v}");
    let m = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not the Ollama shape: {v}"));
    assert!(!m.is_empty());
    assert_no_leak(r, &[]);
    m.to_owned()
}

/// The error shape of the front `path` belongs to; `code` is checked on the OpenAI shape.
fn assert_front_error(path: &str, r: &Resp, status: u16, code: Option<&str>) {
    if path.starts_with("/v1/") || path.starts_with("/admin/") {
        assert_openai_error(r, status, code);
    } else {
        assert_ollama_error(r, status);
    }
}

/// Neither the body nor any header holds one of `secrets` or a stack trace.
fn assert_no_leak(r: &Resp, secrets: &[&str]) {
    let mut text = r.text();
    for (name, value) in &r.headers {
        text.push('\n');
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    assert_clean("response", &text, secrets);
}

/// `text` holds none of `secrets` and no stack-trace marker.
fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "{what} leaks {s:?}:\n{text}");
    }
    for m in TRACE_MARKERS {
        assert!(
            !text.contains(m),
            "{what} holds a stack trace ({m:?}):\n{text}"
        );
    }
}

/// No audit event, serialized as it is stored, holds one of `secrets`.
fn assert_audit_clean(events: &[AuditEvent], secrets: &[&str]) {
    for e in events {
        let text = serde_json::to_string(e).unwrap();
        for s in secrets {
            assert!(!text.contains(s), "an audit event holds {s:?}: {text}");
        }
    }
}

fn ollama_chat(model: &str, content: &str) -> Value {
    json!({"model": model, "stream": false, "messages": [{"role": "user", "content": content}]})
}

/// A normal chat on each front with `key` is answered.
async fn assert_still_serving_with(h: &Harness, key: &str) {
    for (path, body) in [
        ("/v1/chat/completions", chat_body("tiny", "hello")),
        ("/api/chat", ollama_chat("tiny", "hello")),
    ] {
        let r = h.send(post_as(path, &body.to_string(), Some(key))).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{path} after the attack: {}",
            r.text()
        );
    }
}

/// A normal chat on each front with the harness's own key is answered.
async fn assert_still_serving(h: &Harness) {
    assert_still_serving_with(h, &h.key).await;
}

/// The one terminal audit event of the request that got `r`.
async fn terminal(h: &Harness, r: &Resp) -> AuditEvent {
    let id = r
        .headers
        .get("x-request-id")
        .expect("every response has a request id")
        .to_str()
        .unwrap()
        .to_owned();
    let all = h.audit_events().await;
    let mine: Vec<&AuditEvent> = all
        .iter()
        .filter(|e| e.request_id.as_deref() == Some(id.as_str()))
        .filter(|e| e.event_type != EventType::RequestStart)
        .collect();
    assert_eq!(mine.len(), 1, "one terminal event for {id}: {all:#?}");
    mine[0].clone()
}

/// The terminal event's type, outcome, status and reason.
fn assert_event(
    e: &AuditEvent,
    event_type: EventType,
    outcome: Outcome,
    status: u16,
    reason: Option<&str>,
) {
    assert_eq!(e.event_type, event_type, "{e:#?}");
    assert_eq!(e.outcome, Some(outcome), "{e:#?}");
    assert_eq!(e.http_status, Some(status), "{e:#?}");
    assert_eq!(e.deny_reason.as_deref(), reason, "{e:#?}");
}

/// The harness, writing its audit log to memory.
async fn audited(h: Harness) -> Harness {
    h.audited(Arc::new(MemoryAuditStore::new())).await
}

async fn harness(kind: &str, extra: &str) -> Harness {
    audited(Harness::single_with(kind, mock_cfg(), extra).await).await
}

/// A request with `key` from `ip`, as the server would see a socket peer.
fn from_ip(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    let addr = SocketAddr::from((ip, 40_000));
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

/// A change made to a request after it was signed.
type Tamper = Box<dyn Fn(&mut Request<Body>)>;
/// Builds the same request again.
type MakeRequest<'a> = Box<dyn Fn() -> Request<Body> + 'a>;

fn chat(key: &str) -> Request<Body> {
    post_as(
        "/v1/chat/completions",
        &chat_body("tiny", "hello").to_string(),
        Some(key),
    )
}

/// Serves the harness's state on a real socket (for what only a socket shows).
async fn serve_on_socket(h: &Harness) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = h.state.clone();
    let server = tokio::spawn(async move {
        let _ = wardgate_gateway::serve(state, listener, std::future::pending()).await;
    });
    (addr, server)
}

/// Writes `raw` on a fresh connection and reads until the server closes it.
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// A tiny HTTP server for tests: `app`, on a loopback port.
async fn spawn_app(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

// ---------------------------------------------------------------------------------------------
// JWT support: key pairs and signing in `support::jwt`.

const SUBJECT: &str = "alice@example.test";

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": SUBJECT, "tenant": "acme",
           "iat": now(), "exp": now() + 600})
}

/// An audited harness trusting one issuer (`issuer_toml`), with API keys still working.
async fn jwt_harness(issuer_toml: &str) -> Harness {
    let mut h = harness("openai", issuer_toml).await;
    let config = h.state.config.clone();
    let v = JwtVerifier::start(config.jwt.clone(), config.max_token_bytes)
        .await
        .unwrap();
    h.state.jwt = Some(Arc::new(v));
    h.app = wardgate_gateway::router(h.state.clone());
    h
}

/// An issuer whose keys are in a JWKS file holding `signers`; the tempdir must outlive it.
async fn file_issuer_harness(
    signers: &[&Signer],
    algorithms: &str,
) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(signers)).unwrap();
    let toml = format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [{algorithms}]\n\
         jwks_file = \"{}\"\nmax_lifetime = \"1h\"\nleeway = \"5s\"\n",
        path.display()
    );
    (jwt_harness(&toml).await, dir)
}

/// Every token of `cases` gets exactly the 401 a bad API key gets, is audited as an
/// authentication failure by an anonymous actor, and leaves no trace of itself or its subject
/// in the body, the audit log or the logs.
async fn assert_tokens_refused(h: &Harness, logs: &Logs, cases: &[(&str, String)]) {
    let baseline = h.send(chat("wg_nope")).await;
    assert_openai_error(&baseline, 401, Some("invalid_api_key"));
    for (what, token) in cases {
        let r = h.send(chat(token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
        assert_eq!(
            r.body, baseline.body,
            "{what}: the same body as any bad key"
        );
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{what}");
        let signature = token.rsplit('.').next().unwrap_or_default();
        let mut secrets = vec![token.as_str(), SUBJECT];
        if signature.len() >= 8 {
            secrets.push(signature);
        }
        assert_no_leak(&r, &secrets);
        let e = terminal(h, &r).await;
        assert_event(
            &e,
            EventType::AuthFailure,
            Outcome::Deny,
            401,
            Some("unauthenticated"),
        );
        assert_eq!(e.actor_id, "anonymous", "{what}");
        assert_eq!(e.tenant, None, "{what}: no claim is trusted");
    }
    let events = h.audit_events().await;
    let log = logs.text();
    for (what, token) in cases {
        assert_audit_clean(&events, &[token.as_str(), SUBJECT]);
        assert!(!log.contains(token.as_str()), "{what}: the token is logged");
    }
}

// =============================================================================================
// Authentication

#[tokio::test]
async fn case_01_alg_none() {
    let (logs, _guard) = capture_logs();
    let ed = ed25519("ed-1");
    let (h, _dir) = file_issuer_harness(&[&ed], "\"EdDSA\"").await;
    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for header in [
            json!({"alg": alg, "typ": "JWT"}),
            json!({"alg": alg, "kid": "ed-1"}),
        ] {
            // Unsigned, and with a made-up signature.
            let unsigned = forge(&header, &claims(), b"");
            cases.push((alg, unsigned));
            cases.push((alg, forge(&header, &claims(), b"not-a-signature")));
        }
    }
    assert_tokens_refused(&h, &logs, &cases).await;
    // The same claims, properly signed, are fine: it is the algorithm that is refused.
    assert_eq!(
        h.send(chat(&sign(&ed, &claims()))).await.status,
        StatusCode::OK
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_02_hs256_with_the_rsa_public_key_as_secret() {
    let (logs, _guard) = capture_logs();
    let rs = rsa();
    let (h, _dir) = file_issuer_harness(&[&rs], "\"RS256\"").await;
    // Every form an attacker might take the public key in: PKCS#1 DER, PEM, the raw modulus,
    // and the JWK text itself.
    let pair = RsaKeyPair::from_der(&fixture("rsa-test-key.der")).unwrap();
    let der = pair.public_key().as_ref().to_vec();
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        B64_STD
            .encode(&der)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let modulus = B64.decode(rs.jwk["n"].as_str().unwrap()).unwrap();
    let jwk_text = rs.jwk.to_string();
    let mut cases = Vec::new();
    for secret in [
        der.as_slice(),
        pem.as_bytes(),
        modulus.as_slice(),
        jwk_text.as_bytes(),
    ] {
        for header in [
            json!({"alg": "HS256", "typ": "JWT", "kid": rs.kid}),
            json!({"alg": "HS256", "typ": "JWT"}),
        ] {
            cases.push((
                "HS256 keyed with the public key",
                hmac_token(&header, &claims(), secret),
            ));
        }
    }
    assert_tokens_refused(&h, &logs, &cases).await;
    assert!(
        logs.text().contains("algorithm not allowed"),
        "refused for its algorithm, before any key is used"
    );
    assert_eq!(
        h.send(chat(&sign(&rs, &claims()))).await.status,
        StatusCode::OK,
        "the genuine RS256 token works"
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_03_alg_outside_the_allowlist() {
    let (logs, _guard) = capture_logs();
    let ed = ed25519("ed-1");
    let ec = p256("ec-1");
    let rs = rsa();
    // All three keys are in the JWKS; only EdDSA is allowed.
    let (h, _dir) = file_issuer_harness(&[&ed, &ec, &rs], "\"EdDSA\"").await;
    let cases = vec![
        ("ES256", sign(&ec, &claims())),
        ("RS256", sign(&rs, &claims())),
        ("RS384", sign_as(&rs, Algorithm::RS384, &claims())),
        ("PS256", sign_as(&rs, Algorithm::PS256, &claims())),
        (
            "HS256",
            hmac_token(
                &json!({"alg": "HS256", "kid": "ed-1"}),
                &claims(),
                b"0123456789abcdef0123456789abcdef",
            ),
        ),
        (
            "unknown name",
            forge(&json!({"alg": "ES999", "kid": "ed-1"}), &claims(), b"sig"),
        ),
    ];
    assert_tokens_refused(&h, &logs, &cases).await;
    assert_eq!(
        h.send(chat(&sign(&ed, &claims()))).await.status,
        StatusCode::OK
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_04_unknown_kid_or_kid_as_path_or_url() {
    let (logs, _guard) = capture_logs();
    let ed = ed25519("ed-1");
    // The issuer's JWKS URL, counting fetches, and a second server standing for anything a
    // `kid` might point at.
    let jwks_fetches = Arc::new(AtomicUsize::new(0));
    let evil_hits = Arc::new(AtomicUsize::new(0));
    let body = jwks(&[&ed]);
    let idp = {
        let n = jwks_fetches.clone();
        axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                n.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { body }
            }),
        )
    };
    let evil = {
        let n = evil_hits.clone();
        axum::Router::new().fallback(move || {
            n.fetch_add(1, Ordering::SeqCst);
            async { jwks(&[&ed25519("ed-1")]) }
        })
    };
    let idp = spawn_app(idp).await;
    let evil = spawn_app(evil).await;
    let toml = format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"EdDSA\"]\n\
         jwks_url = \"http://{idp}/jwks\"\nrefresh_cooldown = \"1h\"\n"
    );
    let h = jwt_harness(&toml).await;
    assert_eq!(
        jwks_fetches.load(Ordering::SeqCst),
        1,
        "fetched once at start"
    );

    let mut cases = Vec::new();
    for kid in [
        "ed-404".to_owned(),
        "../../../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        "file:///etc/passwd".to_owned(),
        format!("http://{evil}/jwks"),
        format!("https://{evil}/.well-known/jwks.json"),
        "ed-1/../ed-1".to_owned(),
        "ed-1\u{0}".to_owned(),
    ] {
        // Signed by a key of the attacker's, which the kid would have to fetch.
        let mut attacker = ed25519(&kid);
        attacker.kid = kid.clone();
        cases.push(("hostile kid", sign(&attacker, &claims())));
    }
    assert_tokens_refused(&h, &logs, &cases).await;
    assert_eq!(
        evil_hits.load(Ordering::SeqCst),
        0,
        "a kid is never fetched"
    );
    assert_eq!(
        jwks_fetches.load(Ordering::SeqCst),
        1,
        "unknown kids inside the cooldown fetch nothing"
    );
    assert_eq!(
        h.send(chat(&sign(&ed, &claims()))).await.status,
        StatusCode::OK
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_05_expired_future_nbf_or_iat_and_non_integer_exp() {
    let (logs, _guard) = capture_logs();
    let ed = ed25519("ed-1");
    let (h, _dir) = file_issuer_harness(&[&ed], "\"EdDSA\"").await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&ed, &c)
    };
    // The leeway is 5s: each time below is well past it.
    let cases = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 60))),
        (
            "expired long ago",
            with(&|c| {
                c["iat"] = json!(1_000_000);
                c["exp"] = json!(1_000_600);
            }),
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(now() + 120)),
        ),
        (
            "iat in the future",
            with(&|c| c["iat"] = json!(now() + 300)),
        ),
        (
            "exp as a string",
            with(&|c| c["exp"] = json!((now() + 600).to_string())),
        ),
        (
            "exp as a float",
            with(&|c| c["exp"] = json!((now() + 600) as f64 + 0.5)),
        ),
        ("exp negative", with(&|c| c["exp"] = json!(-1))),
        ("nbf as a string", with(&|c| c["nbf"] = json!("0"))),
        ("iat as a string", with(&|c| c["iat"] = json!("0"))),
    ];
    assert_tokens_refused(&h, &logs, &cases).await;
    assert_eq!(
        h.send(chat(&sign(&ed, &claims()))).await.status,
        StatusCode::OK
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_06_wrong_aud_or_iss_and_missing_exp() {
    let (logs, _guard) = capture_logs();
    let ed = ed25519("ed-1");
    let (h, _dir) = file_issuer_harness(&[&ed], "\"EdDSA\"").await;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&ed, &c)
    };
    let cases = vec![
        (
            "other audience",
            with(&|c| c["aud"] = json!("another-service")),
        ),
        (
            "audience list without ours",
            with(&|c| c["aud"] = json!(["a", "b"])),
        ),
        (
            "no audience",
            with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
        ),
        (
            "other issuer",
            with(&|c| c["iss"] = json!("https://evil.test/")),
        ),
        (
            "issuer without its trailing slash",
            with(&|c| c["iss"] = json!("https://idp.example.test")),
        ),
        (
            "no issuer",
            with(&|c| drop(c.as_object_mut().unwrap().remove("iss"))),
        ),
        (
            "no exp",
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
        ),
        ("exp null", with(&|c| c["exp"] = Value::Null)),
    ];
    assert_tokens_refused(&h, &logs, &cases).await;
    assert_eq!(
        h.send(chat(&sign(&ed, &claims()))).await.status,
        StatusCode::OK
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_07_two_authorization_headers() {
    let h = harness("openai", "").await;
    let (_, user) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    for (path, pair) in [
        ("/admin/keys", [&user, &admin]),
        ("/admin/keys", [&admin, &user]),
        ("/v1/models", [&user, &admin]),
        ("/api/tags", [&admin, &user]),
        ("/v1/models", [&user, &user]),
    ] {
        let r = h
            .send(
                Request::get(path)
                    .header("authorization", format!("Bearer {}", pair[0]))
                    .header("authorization", format!("Bearer {}", pair[1]))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert!(
            matches!(r.status.as_u16(), 400 | 401),
            "{path}: never either credential: {}",
            r.text()
        );
        assert_front_error(path, &r, r.status.as_u16(), None);
        assert_no_leak(&r, &[pair[0].as_str(), pair[1].as_str()]);
        let e = terminal(&h, &r).await;
        assert_eq!(e.outcome, Some(Outcome::Deny), "{e:#?}");
        assert_eq!(e.actor_id, "anonymous", "neither key is credited: {e:#?}");
        assert_eq!(e.tenant, None);
    }
    // Both keys in one header value, comma- or space-separated, are not a credential either.
    for value in [
        format!("Bearer {user}, Bearer {admin}"),
        format!("Bearer {admin} {user}"),
        format!("Bearer {admin},{user}"),
    ] {
        let r = h
            .send(
                Request::get("/admin/keys")
                    .header("authorization", value)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_openai_error(&r, 401, Some("invalid_api_key"));
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::AuthFailure,
            Outcome::Deny,
            401,
            Some("unauthenticated"),
        );
    }
    assert_audit_clean(&h.audit_events().await, &[&user, &admin]);
    // Each alone does what its role allows.
    assert_eq!(
        h.send(get_as("/admin/keys", Some(&admin))).await.status,
        StatusCode::OK
    );
    assert_still_serving_with(&h, &user).await;
}

#[tokio::test]
async fn case_08_credentials_in_the_query_string() {
    let (logs, _guard) = capture_logs();
    let h = harness("openai", "").await;
    for (path, with_header) in [
        ("/v1/models?api_key=KEY", false),
        ("/v1/chat/completions?key=KEY", false),
        ("/api/tags?access_token=KEY", false),
        ("/api/chat?TOKEN=KEY", false),
        ("/admin/keys?apikey=KEY", false),
        ("/v1/models?x=1&api-key=KEY", false),
        // Refused even alongside a valid header: a key in a URL is a leaked key.
        ("/v1/models?api_key=KEY", true),
        ("/api/tags?auth=KEY", true),
    ] {
        let uri = path.replace("KEY", &h.key);
        let method = if path.contains("chat") { "POST" } else { "GET" };
        let mut b = Request::builder().method(method).uri(&uri);
        if with_header {
            b = b.header("authorization", format!("Bearer {}", h.key));
        }
        let r = h.send(b.body(Body::empty()).unwrap()).await;
        assert_front_error(&uri, &r, 400, Some("credentials_in_url"));
        assert_no_leak(&r, &[&h.key]);
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::Request,
            Outcome::Deny,
            400,
            Some("credentials_in_url"),
        );
        assert_eq!(e.key_id, None, "{uri}: the key was not used");
    }
    assert_audit_clean(&h.audit_events().await, &[&h.key]);
    assert!(
        !logs.text().contains(&h.key),
        "the key in the URL is logged"
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_09_token_over_8_kib() {
    let (logs, _guard) = capture_logs();
    let ed = ed25519("ed-1");
    let (h, _dir) = file_issuer_harness(&[&ed], "\"EdDSA\"").await;
    // A validly signed token that is simply too big, a JWT-shaped blob, an API-key-shaped one
    // and plain junk; up to 64 KiB.
    let mut fat = claims();
    fat["pad"] = json!("x".repeat(9000));
    let jwt_shaped = format!(
        "{}.{}.{}",
        B64.encode(r#"{"alg":"EdDSA","kid":"ed-1"}"#),
        "A".repeat(64 * 1024),
        "B".repeat(86)
    );
    let cases = vec![
        ("signed but 9 KiB", sign(&ed, &fat)),
        ("64 KiB JWT-shaped", jwt_shaped),
        (
            "wg_ key shaped",
            format!("wg_abcdefghijkl_{}", "A".repeat(9000)),
        ),
        ("junk", "z".repeat(8193)),
    ];
    for (what, token) in &cases {
        let started = Instant::now();
        let r = h.send(chat(token)).await;
        let took = started.elapsed();
        assert!(
            matches!(r.status.as_u16(), 401 | 431),
            "{what}: {}",
            r.status
        );
        assert_openai_error(&r, r.status.as_u16(), None);
        assert_no_leak(&r, &[token.as_str()]);
        assert!(
            took < Duration::from_secs(1),
            "{what}: refusing took {took:?}"
        );
        let e = terminal(&h, &r).await;
        assert_eq!(e.event_type, EventType::AuthFailure, "{what}");
        assert_eq!(e.actor_id, "anonymous", "{what}");
    }
    // The JWTs were refused on their size, before anything was decoded or verified.
    let log = logs.text();
    assert_eq!(
        log.matches("token larger than the limit").count(),
        2,
        "{log}"
    );
    for (_, token) in &cases {
        assert!(!log.contains(token.as_str()));
    }
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_10_truncated_signature_and_bad_base64url() {
    let (logs, _guard) = capture_logs();
    let ed = ed25519("ed-1");
    let (h, _dir) = file_issuer_harness(&[&ed], "\"EdDSA\"").await;
    // A token whose signature holds a '-' or '_', so that its standard-base64 spelling is
    // another string (about one Ed25519 signature in 15 has neither): the `jti` varies the
    // signed bytes until it does.
    let good = (0..1000)
        .map(|jti| {
            let mut c = claims();
            c["jti"] = json!(jti.to_string());
            sign(&ed, &c)
        })
        .find(|t| t.rsplit('.').next().is_some_and(|s| s.contains(['-', '_'])))
        .unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let (hd, pl, sig) = (parts[0], parts[1], parts[2]);
    let cases = vec![
        (
            "signature cut by 4",
            format!("{hd}.{pl}.{}", &sig[..sig.len() - 4]),
        ),
        (
            "signature cut by 1",
            format!("{hd}.{pl}.{}", &sig[..sig.len() - 1]),
        ),
        (
            "signature halved",
            format!("{hd}.{pl}.{}", &sig[..sig.len() / 2]),
        ),
        ("no signature", format!("{hd}.{pl}.")),
        ("two segments", format!("{hd}.{pl}")),
        ("four segments", format!("{good}.{sig}")),
        ("padded signature", format!("{good}==")),
        (
            "standard base64 signature",
            format!("{hd}.{pl}.{}", sig.replace('-', "+").replace('_', "/")),
        ),
        (
            "junk in the signature",
            format!("{hd}.{pl}.{}*!", &sig[..sig.len() - 2]),
        ),
        (
            "junk in the payload",
            format!("{hd}.{}*.{sig}", &pl[..pl.len() - 1]),
        ),
        ("junk in the header", format!("*{hd}.{pl}.{sig}")),
        ("whitespace inside", format!("{hd}.{pl} .{sig}")),
        (
            "payload not JSON",
            format!("{hd}.{}.{sig}", B64.encode("not json")),
        ),
        ("empty parts", "..".to_owned()),
    ];
    assert_tokens_refused(&h, &logs, &cases).await;
    assert_eq!(h.send(chat(&good)).await.status, StatusCode::OK);
    assert_still_serving(&h).await;
}

// ---------------------------------------------------------------------------------------------
// The private hop (`wardgate llm`): HMAC over method, path, time, nonce and body.

const LLM_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-llm";
const LLM_SKEW_SECS: i64 = 30;

/// `wardgate llm`'s router over a mock Ollama backend (the engine is not what these cases are
/// about). Like the real service it keeps no audit log (the gateway in front audits each
/// request): its record of a refusal is the log line naming the reason.
async fn llm_app() -> (Harness, axum::Router) {
    let h = Harness::single("ollama").await;
    let verifier = Arc::new(Verifier::new(
        vec![SigningKey::new(LLM_SECRET).unwrap()],
        LLM_SKEW_SECS,
        1000,
    ));
    let app = wardgate_gateway::llm::llm_router(h.state.clone(), verifier);
    (h, app)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn signed(path: &str, body: &str, at: i64, nonce: &str) -> Request<Body> {
    signed_post(LLM_SECRET, path, body, at, nonce)
}

async fn send_to(app: &axum::Router, req: Request<Body>) -> Resp {
    support::send_to(app.clone(), req).await
}

const LLM_PROMPT: &str = "llm-hop-prompt-5c1e";

fn llm_body() -> String {
    json!({"model": "tiny", "prompt": LLM_PROMPT, "stream": false}).to_string()
}

/// The private hop's refusal: a bare 401 that says nothing, audited as an authentication
/// failure, and no backend call.
async fn assert_hop_refused(
    h: &Harness,
    logs: &Logs,
    app: &axum::Router,
    req: Request<Body>,
    what: &str,
) {
    const REFUSED: &str = "refused an unsigned or badly signed request";
    let before = h.mocks[0].stats().inference_requests;
    let logged = logs.text().matches(REFUSED).count();
    let r = send_to(app, req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
    assert_eq!(r.text(), r#"{"error":"unauthorized"}"#, "{what}: no detail");
    assert_no_leak(&r, &[LLM_PROMPT]);
    assert_eq!(h.mocks[0].stats().inference_requests, before, "{what}");
    assert_eq!(
        logs.text().matches(REFUSED).count(),
        logged + 1,
        "{what}: the refusal is logged once"
    );
}

/// A fresh, correctly signed request is still served.
async fn assert_hop_serves(app: &axum::Router, nonce: &str) {
    let r = send_to(app, signed("/api/generate", &llm_body(), unix_now(), nonce)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["done"], true);
}

#[tokio::test]
async fn case_11_private_hop_timestamp_outside_the_skew() {
    let (logs, _guard) = capture_logs();
    let (h, app) = llm_app().await;
    let now = unix_now();
    let mut n = 0;
    for at in [
        now - LLM_SKEW_SECS - 5,
        now + LLM_SKEW_SECS + 5,
        now - 3600,
        now + 86_400,
        0,
        i64::MIN,
        i64::MAX,
    ] {
        n += 1;
        let req = signed(
            "/api/generate",
            &llm_body(),
            at,
            &format!("nonce-skew-{n:012}"),
        );
        assert_hop_refused(&h, &logs, &app, req, &format!("timestamp {at}")).await;
    }
    // Unparseable timestamps too.
    for ts in ["", "soon", "1e9", "-", "99999999999999999999999"] {
        let mut req = signed("/api/generate", &llm_body(), now, "nonce-badts-0000000001");
        req.headers_mut()
            .insert(signing::TIMESTAMP_HEADER, ts.parse().unwrap());
        assert_hop_refused(&h, &logs, &app, req, &format!("timestamp {ts:?}")).await;
    }
    let log = logs.text();
    assert!(log.contains("timestamp outside the allowed skew"), "{log}");
    assert!(!log.contains(LLM_PROMPT), "the prompt is logged");
    // Inside the window is fine.
    let r = send_to(
        &app,
        signed(
            "/api/generate",
            &llm_body(),
            now - LLM_SKEW_SECS + 10,
            "nonce-inside-00000001",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_hop_serves(&app, "nonce-after-000000001").await;
}

#[tokio::test]
async fn case_12_private_hop_nonce_replayed() {
    let (logs, _guard) = capture_logs();
    let (h, app) = llm_app().await;
    let now = unix_now();
    let nonce = "nonce-replay-00000001";
    let first = send_to(&app, signed("/api/generate", &llm_body(), now, nonce)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let served = h.mocks[0].stats().inference_requests;
    // The captured request, replayed as is, again and again.
    for i in 0..3 {
        assert_hop_refused(
            &h,
            &logs,
            &app,
            signed("/api/generate", &llm_body(), now, nonce),
            &format!("replay {i}"),
        )
        .await;
    }
    // The same nonce on another route or body, signed with the key, is still a replay.
    let other = json!({"model": "tiny", "stream": false,
                       "messages": [{"role": "user", "content": LLM_PROMPT}]})
    .to_string();
    assert_hop_refused(
        &h,
        &logs,
        &app,
        signed("/api/chat", &other, now, nonce),
        "new route",
    )
    .await;
    assert_eq!(h.mocks[0].stats().inference_requests, served);
    let log = logs.text();
    assert_eq!(log.matches("nonce already used").count(), 4, "{log}");
    assert!(!log.contains(LLM_PROMPT));
    assert_hop_serves(&app, "nonce-after-000000002").await;
}

#[tokio::test]
async fn case_13_private_hop_body_changed_after_signing() {
    let (logs, _guard) = capture_logs();
    let (h, app) = llm_app().await;
    let now = unix_now();
    let body = llm_body();
    let variants: Vec<(&str, Tamper)> = vec![
        (
            "body rewritten",
            Box::new(|r: &mut Request<Body>| {
                *r.body_mut() = Body::from(llm_body().replace(LLM_PROMPT, "HIJACKED"))
            }),
        ),
        (
            "body extended",
            Box::new(|r: &mut Request<Body>| {
                *r.body_mut() = Body::from(format!("{} ", llm_body()))
            }),
        ),
        (
            "body emptied",
            Box::new(|r: &mut Request<Body>| *r.body_mut() = Body::empty()),
        ),
        (
            "path moved",
            Box::new(|r: &mut Request<Body>| *r.uri_mut() = "/api/chat".parse().unwrap()),
        ),
        (
            "query added",
            Box::new(|r: &mut Request<Body>| *r.uri_mut() = "/api/generate?x=1".parse().unwrap()),
        ),
        (
            "method changed",
            Box::new(|r: &mut Request<Body>| *r.method_mut() = axum::http::Method::PUT),
        ),
        (
            "signature flipped",
            Box::new(|r: &mut Request<Body>| {
                let s = r.headers()[signing::SIGNATURE_HEADER]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let flipped = format!(
                    "{}{}",
                    &s[..s.len() - 1],
                    if s.ends_with('0') { '1' } else { '0' }
                );
                r.headers_mut()
                    .insert(signing::SIGNATURE_HEADER, flipped.parse().unwrap());
            }),
        ),
        (
            "signature removed",
            Box::new(|r: &mut Request<Body>| {
                drop(r.headers_mut().remove(signing::SIGNATURE_HEADER))
            }),
        ),
    ];
    for (i, (what, tamper)) in variants.iter().enumerate() {
        let mut req = signed("/api/generate", &body, now, &format!("nonce-tamper-{i:08}"));
        tamper(&mut req);
        assert_hop_refused(&h, &logs, &app, req, what).await;
    }
    let log = logs.text();
    assert!(log.contains("signature does not match"), "{log}");
    assert!(!log.contains(LLM_PROMPT) && !log.contains("HIJACKED"));
    assert_hop_serves(&app, "nonce-after-000000003").await;
}

#[tokio::test]
async fn case_14_unknown_and_revoked_keys_answer_alike() {
    let h = harness("openai", "[auth]\nkey_cache_ttl = \"0s\"\n").await;
    let (revoked_id, revoked) = h.key_for(&[], None).await;
    h.store.revoke_key(&revoked_id).await.unwrap();
    // Well-formed keys: one whose prefix exists (revoked), one whose prefix does not.
    let unknown = format!("wg_zzzzzzzzzzzz_{}", "A".repeat(43));
    let mut seen: Vec<(Resp, AuditEvent)> = Vec::new();
    for key in [&revoked, &unknown] {
        for path in ["/v1/models", "/api/tags"] {
            let r = h.send(get_as(path, Some(key))).await;
            assert_front_error(path, &r, 401, Some("invalid_api_key"));
            assert_no_leak(&r, &[key.as_str()]);
            let e = terminal(&h, &r).await;
            assert_event(
                &e,
                EventType::AuthFailure,
                Outcome::Deny,
                401,
                Some("unauthenticated"),
            );
            seen.push((r, e));
        }
    }
    // Same bytes, same headers (but the request id), same audit shape, per front.
    let headers = |r: &Resp| -> Vec<(String, Vec<u8>)> {
        r.headers
            .iter()
            .filter(|(n, _)| n.as_str() != "x-request-id")
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect()
    };
    for front in 0..2 {
        let (a, ea) = &seen[front];
        let (b, eb) = &seen[front + 2];
        assert_eq!(a.body, b.body);
        assert_eq!(headers(a), headers(b));
        assert_eq!(
            (ea.actor_kind, ea.auth_method, &ea.tenant, &ea.key_id),
            (eb.actor_kind, eb.auth_method, &eb.tenant, &eb.key_id)
        );
    }
    assert_audit_clean(&h.audit_events().await, &[&revoked, &unknown]);

    // Constant time, coarsely: verifying an unknown prefix does the same store work as a
    // known one (a lookup and a constant-time hash comparison), so neither is much faster.
    // Interleaved medians with a wide margin: a short cut would be an order of magnitude.
    let t = time::OffsetDateTime::now_utc();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..41 {
        for (key, out) in [(&revoked, &mut a), (&unknown, &mut b)] {
            let started = Instant::now();
            let v = h.state.keys.verify(key, t).await.unwrap();
            out.push(started.elapsed());
            assert!(matches!(v, wardgate_store::KeyVerdict::Rejected(_)));
        }
    }
    a.sort();
    b.sort();
    let (ma, mb) = (a[20].as_secs_f64(), b[20].as_secs_f64());
    assert!(
        ma / mb < 5.0 && mb / ma < 5.0,
        "revoked {:?} vs unknown {:?}",
        a[20],
        b[20]
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_15_repeated_failures_lock_out_audited_with_a_metric() {
    use wardgate_gateway::lockout::{AUTH_FAILURES, LOCKOUTS};
    let h = harness(
        "openai",
        "[auth]\nlockout_threshold = 3\nlockout_duration = \"10m\"\n",
    )
    .await;
    let attacker = [192, 0, 2, 66];
    let guess = format!("wg_abcdefghijkl_{}", "A".repeat(43));
    let (failures_before, lockouts_before) = (
        AUTH_FAILURES.load(Ordering::Relaxed),
        LOCKOUTS.load(Ordering::Relaxed),
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = h.send(from_ip(chat(&guess), attacker)).await;
        assert_openai_error(&r, 401, Some("invalid_api_key"));
        assert!(!r.headers.contains_key("retry-after"), "attempt {i}");
        ids.push(terminal(&h, &r).await);
    }
    // The third failure triggered the lockout, and is the lockout's audit event.
    assert_eq!(ids[0].event_type, EventType::AuthFailure);
    assert_eq!(ids[2].event_type, EventType::Lockout, "{:#?}", ids[2]);
    assert_eq!(ids[2].actor_id, "key_prefix:abcdefghijkl");
    let detail = ids[2].detail.as_deref().unwrap();
    assert!(
        detail.contains("source=192.0.2.66") && detail.contains("key_prefix=abcdefghijkl"),
        "{detail}"
    );
    assert!(
        LOCKOUTS.load(Ordering::Relaxed) > lockouts_before,
        "the lockout metric"
    );
    assert!(AUTH_FAILURES.load(Ordering::Relaxed) >= failures_before + 3);

    // Locked: even the valid key is refused from that source, on both fronts, with a wait.
    for (path, body) in [
        ("/v1/chat/completions", chat_body("tiny", "hi")),
        ("/api/chat", ollama_chat("tiny", "hi")),
    ] {
        let r = h
            .send(from_ip(
                post_as(path, &body.to_string(), Some(&h.key)),
                attacker,
            ))
            .await;
        assert_front_error(path, &r, 429, Some("too_many_failed_authentications"));
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((590..=600).contains(&wait), "{wait}");
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::AuthFailure,
            Outcome::Deny,
            429,
            Some("locked_out"),
        );
    }
    // And the guessed prefix is locked from anywhere.
    let r = h.send(from_ip(chat(&guess), [198, 51, 100, 7])).await;
    assert_openai_error(&r, 429, Some("too_many_failed_authentications"));
    assert_audit_clean(&h.audit_events().await, &[&guess, &h.key]);
    // Another source with a valid key is served.
    for path in ["/v1/chat/completions", "/api/chat"] {
        let body = if path.starts_with("/v1") {
            chat_body("tiny", "hi")
        } else {
            ollama_chat("tiny", "hi")
        };
        let r = h
            .send(from_ip(
                post_as(path, &body.to_string(), Some(&h.key)),
                [192, 0, 2, 67],
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
}

// =============================================================================================
// Resource limits

fn chunked(path: &str, body: String, key: &str) -> Request<Body> {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .into_bytes()
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap()
}

#[tokio::test]
async fn case_16_body_over_the_limit_with_and_without_content_length() {
    let h = harness("ollama", "[limits]\nmax_body_bytes = 4096\n").await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let marker = "oversize-prompt-91d2";
    let big = |path: &str| {
        let filler = format!("{marker} {}", "x".repeat(10_000));
        if path == "/admin/keys" {
            json!({"label": filler}).to_string()
        } else {
            chat_body("tiny", &filler).to_string()
        }
    };
    for path in [
        "/v1/chat/completions",
        "/api/chat",
        "/api/generate",
        "/admin/keys",
    ] {
        let key = if path == "/admin/keys" {
            &admin
        } else {
            &h.key
        };
        for with_length in [true, false] {
            let req = if with_length {
                post_as(path, &big(path), Some(key))
            } else {
                chunked(path, big(path), key)
            };
            assert_eq!(req.headers().contains_key("content-length"), with_length);
            let r = h.send(req).await;
            assert_front_error(path, &r, 413, Some("payload_too_large"));
            assert_no_leak(&r, &[marker]);
            let e = terminal(&h, &r).await;
            assert_eq!(e.outcome, Some(Outcome::Deny), "{e:#?}");
            assert_eq!(e.http_status, Some(413));
            assert_eq!(e.deny_reason.as_deref(), Some("payload_too_large"));
        }
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_17_deeply_nested_json() {
    let h = harness("ollama", "").await;
    let arrays = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let objects = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let in_content = format!(
        r#"{{"model":"tiny","messages":[{{"role":"user","content":{}}}]}}"#,
        "[".repeat(50_000) + &"]".repeat(50_000)
    );
    let in_options = format!(
        r#"{{"model":"tiny","prompt":"x","options":{}}}"#,
        "{\"o\":".repeat(20_000) + "1" + &"}".repeat(20_000)
    );
    for path in [
        "/v1/chat/completions",
        "/api/chat",
        "/api/generate",
        "/v1/embeddings",
    ] {
        for body in [&arrays, &objects, &in_content, &in_options] {
            let r = h.send(post_as(path, body, Some(&h.key))).await;
            assert_front_error(path, &r, 400, None);
            let e = terminal(&h, &r).await;
            assert_eq!(e.outcome, Some(Outcome::Deny));
            assert_eq!(e.http_status, Some(400));
        }
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_18_too_many_messages_and_over_long_content() {
    let h = harness("ollama", "[limits]\nmax_messages = 3\n").await;
    let marker = "long-content-marker-33b0";
    let four = vec![json!({"role": "user", "content": marker}); 4];
    for path in ["/v1/chat/completions", "/api/chat"] {
        let r = h
            .post(
                path,
                json!({"model": "tiny", "stream": false, "messages": four}),
            )
            .await;
        assert_front_error(path, &r, 400, None);
        if path.starts_with("/v1") {
            assert_eq!(r.json()["error"]["param"], "messages");
        } else {
            assert!(r.json()["error"].as_str().unwrap().contains("messages"));
        }
        assert_no_leak(&r, &[marker]);
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::Request,
            Outcome::Deny,
            400,
            Some("bad_request"),
        );

        // One message longer than the model's window (4096 tokens by default).
        let long = format!("{marker} {}", "word ".repeat(6000));
        let body = if path.starts_with("/v1") {
            chat_body("tiny", &long)
        } else {
            ollama_chat("tiny", &long)
        };
        let r = h.post(path, body).await;
        assert_front_error(path, &r, 400, Some("context_length_exceeded"));
        if path.starts_with("/v1") {
            assert_eq!(r.json()["error"]["param"], "messages");
        }
        assert_no_leak(&r, &[marker, "word word"]);
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::Request,
            Outcome::Deny,
            400,
            Some("context_length_exceeded"),
        );
    }
    // Completions: an over-long prompt.
    let r = h
        .post(
            "/api/generate",
            json!({"model": "tiny", "prompt": "word ".repeat(6000), "stream": false}),
        )
        .await;
    assert_ollama_error(&r, 400);
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_19_output_and_context_caps() {
    let h = harness("ollama", "[limits]\nmax_output_tokens = 64\n").await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "max_tokens": 65, "messages": msgs}),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "max_completion_tokens": 1_000_000, "messages": msgs}),
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "max_tokens": 4_000_000_000u32, "prompt": "hi"}),
            "max_tokens",
        ),
        (
            "/api/generate",
            json!({"model": "tiny", "prompt": "hi", "options": {"num_predict": 100}}),
            "num_predict",
        ),
        (
            "/api/chat",
            json!({"model": "tiny", "messages": msgs, "options": {"num_predict": 65}}),
            "num_predict",
        ),
        (
            "/api/chat",
            json!({"model": "tiny", "messages": msgs, "options": {"num_ctx": 100_000}}),
            "num_ctx",
        ),
        (
            "/api/generate",
            json!({"model": "tiny", "prompt": "hi", "options": {"num_ctx": 4097}}),
            "num_ctx",
        ),
    ];
    for (path, body, param) in &cases {
        let r = h.post(path, body.clone()).await;
        assert_front_error(path, &r, 400, None);
        let text = r.text();
        assert!(text.contains(param), "{path}: names {param}: {text}");
        if path.starts_with("/v1") {
            assert_eq!(r.json()["error"]["param"], *param);
        }
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::Request,
            Outcome::Deny,
            400,
            Some("bad_request"),
        );
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 0);

    // Configured to clamp: served at the cap, and the response says so.
    let clamp = harness(
        "ollama",
        "[limits]\nmax_output_tokens = 4\nover_cap = \"clamp\"\n",
    )
    .await;
    for (path, body, header) in [
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "max_tokens": 500, "messages": msgs}),
            "max_tokens",
        ),
        (
            "/api/chat",
            json!({"model": "tiny", "stream": false, "messages": msgs,
                   "options": {"num_predict": 500}}),
            "num_predict",
        ),
    ] {
        let r = clamp.post(path, body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.headers["x-wardgate-clamped"], header, "{path}");
        let asked = clamp.mocks[0].stats().last_body.unwrap();
        assert_eq!(
            asked["options"]["num_predict"], 4,
            "{path}: the backend got the cap"
        );
        let e = terminal(&clamp, &r).await;
        assert_event(&e, EventType::Request, Outcome::Allow, 200, None);
    }
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_20_slowloris() {
    let h = harness(
        "openai",
        "[server]\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\n",
    )
    .await;
    let (addr, _server) = serve_on_socket(&h).await;

    // Headers trickled a line at a time: the connection is closed at the header timeout,
    // with nothing answered (no request reached a handler, so nothing is audited).
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = loop {
        tokio::select! {
            n = sock.read(&mut buf) => break matches!(n, Ok(0) | Err(_)),
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                let _ = sock.write_all(b"x-pad: a\r\n").await;
            }
        }
    };
    assert!(
        closed,
        "the server answered a request whose head never ended"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}, not at the 1 s header timeout"
    );

    // A body trickled a byte at a time: 408 in the front's shape at the body timeout.
    let secret_prompt = "trickled-prompt-7d21";
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{{\"model\":\"tiny\",\"messages\":[{{\"role\":\"user\",\"content\":\"{secret_prompt}",
        h.key
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let started = Instant::now();
    loop {
        tokio::select! {
            n = sock.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                let _ = sock.write_all(b"a").await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no answer to a trickled body"
        );
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 408"), "{text}");
    assert!(head.to_ascii_lowercase().contains("x-request-id"), "{text}");
    let r = Resp {
        status: StatusCode::REQUEST_TIMEOUT,
        headers: Default::default(),
        body: bytes::Bytes::from(body.to_owned()),
    };
    assert_openai_error(&r, 408, Some("request_timeout"));
    assert_no_leak(&r, &[secret_prompt]);
    let events = h.audit_events().await;
    let e = events
        .iter()
        .rev()
        .find(|e| e.http_status == Some(408))
        .expect("the 408 is audited");
    assert_event(
        e,
        EventType::Request,
        Outcome::Deny,
        408,
        Some("body_timeout"),
    );
    assert_audit_clean(&events, &[secret_prompt]);
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_21_concurrent_streams_per_key() {
    let slow = mock_upstream::MockConfig {
        tokens: 100,
        token_delay: Duration::from_millis(20),
        ..mock_cfg()
    };
    let h = audited(
        Harness::single_with("openai", slow, "[rate_limit]\nconcurrent_requests = 2\n").await,
    )
    .await;
    let (_, other) = h.key_with_roles("acme", &[Role::User], None).await;
    let stream = |key: &str, path: &str| {
        let body = if path.starts_with("/v1/") {
            json!({"model": "tiny", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        } else {
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
        };
        post_as(path, &body.to_string(), Some(key))
    };
    let a = h
        .app
        .clone()
        .oneshot(stream(&h.key, "/v1/chat/completions"))
        .await
        .unwrap();
    let b = h
        .app
        .clone()
        .oneshot(stream(&h.key, "/api/chat"))
        .await
        .unwrap();
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    for path in ["/v1/chat/completions", "/api/chat"] {
        let r = h.send(stream(&h.key, path)).await;
        assert_front_error(path, &r, 429, Some("rate_limit_exceeded"));
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(wait >= 1);
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::Request,
            Outcome::Deny,
            429,
            Some("rate_limited"),
        );
    }
    // Other keys are unaffected while the two streams run.
    assert_still_serving_with(&h, &other).await;
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_still_serving(&h).await;
}

// =============================================================================================
// Routing and headers

#[tokio::test]
async fn case_22_hostile_model_names() {
    let h = harness("ollama", "").await;
    let long = "a".repeat(200);
    let names = [
        "../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/x",
        "%2e%2e%2f",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "/abs/path",
        "/etc/passwd",
        "C:\\Windows\\win.ini",
        "a\u{0}b",
        "tiny\u{0}",
        "tiny\r\nx-injected: 1",
        "",
        " ",
        long.as_str(),
        "tiny/../other",
        "http://169.254.169.254/latest",
    ];
    for name in names {
        for path in ["/v1/chat/completions", "/api/chat"] {
            let body = if path.starts_with("/v1") {
                chat_body(name, "hi")
            } else {
                ollama_chat(name, "hi")
            };
            let r = h.post(path, body).await;
            let status = r.status.as_u16();
            assert!(matches!(status, 400 | 404), "{name:?} on {path}: {status}");
            assert_front_error(path, &r, status, None);
            if status == 400 && name.trim().len() > 3 {
                assert!(
                    !r.text().contains(name),
                    "{name:?} is reflected: {}",
                    r.text()
                );
            }
            assert!(!r.headers.contains_key("x-injected"));
            let e = terminal(&h, &r).await;
            assert_eq!(e.outcome, Some(Outcome::Deny));
            assert_eq!(e.model, None, "an unresolved name is not recorded: {e:#?}");
        }
        let r = h.post("/api/show", json!({"model": name})).await;
        assert!(matches!(r.status.as_u16(), 400 | 404), "show {name:?}");
        assert_ollama_error(&r, r.status.as_u16());
    }
    // In the path of /v1/models/{id}, encoded.
    for id in [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "sha256%3Aabc",
        "%00",
        long.as_str(),
    ] {
        let r = h.get(&format!("/v1/models/{id}")).await;
        assert!(matches!(r.status.as_u16(), 400 | 404), "{id}: {}", r.status);
        assert_openai_error(&r, r.status.as_u16(), None);
    }
    assert_eq!(
        h.mocks[0].stats().inference_requests,
        0,
        "no hostile name reached a backend"
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_23_model_management_routes_are_404() {
    let h = harness("ollama", "").await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let routes = [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("HEAD", "/api/blobs/sha256:abc"),
        ("POST", "/api/blobs/sha256:abc"),
        ("GET", "/api/blobs/sha256:abc"),
        ("POST", "/api/pull/"),
        ("POST", "/API/PULL"),
    ];
    for (method, path) in routes {
        for key in [&h.key, &admin] {
            let r = h
                .send(
                    Request::builder()
                        .method(method)
                        .uri(path)
                        .header("authorization", format!("Bearer {key}"))
                        .body(Body::from(r#"{"model":"tiny","name":"tiny"}"#))
                        .unwrap(),
                )
                .await;
            if method == "HEAD" {
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
            } else {
                assert_ollama_error(&r, 404);
            }
            let e = terminal(&h, &r).await;
            assert_event(
                &e,
                EventType::Request,
                Outcome::Deny,
                404,
                Some("route_not_found"),
            );
        }
        // Without a credential they are a 401 like everything else.
        let r = h
            .send(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert_eq!(
        h.mocks[0].stats().requests,
        0,
        "nothing reached the backend"
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_24_both_fronts_are_policed_alike() {
    let h = harness(
        "ollama",
        "[limits]\nmax_body_bytes = 4096\nmax_messages = 2\nmax_output_tokens = 64\n",
    )
    .await;
    let (_, limited) = h.key_for(&["other"], None).await;
    let big = "x".repeat(10_000);
    let three = vec![json!({"role": "user", "content": "x"}); 3];
    // Each scenario in each front's dialect, with the status and audit reason expected of both.
    type Scenario = (
        &'static str,
        Value,
        Value,
        Option<String>,
        u16,
        Option<&'static str>,
    );
    let scenarios: Vec<Scenario> = vec![
        (
            "allowed",
            chat_body("tiny", "same prompt"),
            ollama_chat("tiny", "same prompt"),
            None,
            200,
            None,
        ),
        (
            "no key",
            chat_body("tiny", "hi"),
            ollama_chat("tiny", "hi"),
            Some(String::new()),
            401,
            Some("unauthenticated"),
        ),
        (
            "bad key",
            chat_body("tiny", "hi"),
            ollama_chat("tiny", "hi"),
            Some("wg_bad".into()),
            401,
            Some("unauthenticated"),
        ),
        (
            "too large",
            chat_body("tiny", &big),
            ollama_chat("tiny", &big),
            None,
            413,
            Some("payload_too_large"),
        ),
        (
            "too many messages",
            json!({"model": "tiny", "messages": three}),
            json!({"model": "tiny", "stream": false, "messages": three}),
            None,
            400,
            Some("bad_request"),
        ),
        (
            "over the output cap",
            json!({"model": "tiny", "max_tokens": 65, "messages": [{"role": "user", "content": "x"}]}),
            json!({"model": "tiny", "stream": false, "options": {"num_predict": 65},
                   "messages": [{"role": "user", "content": "x"}]}),
            None,
            400,
            Some("bad_request"),
        ),
        (
            "unknown model",
            chat_body("nosuch", "hi"),
            ollama_chat("nosuch", "hi"),
            None,
            404,
            Some("model_not_found"),
        ),
        (
            "model outside the key's list",
            chat_body("tiny", "hi"),
            ollama_chat("tiny", "hi"),
            Some(limited.clone()),
            404,
            Some("model_not_found"),
        ),
    ];
    for (what, openai, ollama, key, status, reason) in scenarios {
        let key = key.unwrap_or_else(|| h.key.clone());
        let key = (!key.is_empty()).then_some(key);
        let mut events = Vec::new();
        for (path, body) in [("/v1/chat/completions", &openai), ("/api/chat", &ollama)] {
            let r = h
                .send(post_as(path, &body.to_string(), key.as_deref()))
                .await;
            if status == 200 {
                assert_eq!(r.status, StatusCode::OK, "{what} {path}: {}", r.text());
            } else {
                assert_front_error(path, &r, status, None);
            }
            let e = terminal(&h, &r).await;
            assert_eq!(e.deny_reason.as_deref(), reason, "{what} {path}");
            assert_eq!(e.http_status, Some(status), "{what} {path}");
            events.push(e);
        }
        // The same audit record but for the route, request id, time and latency.
        let strip = |e: &AuditEvent| {
            let mut e = e.clone();
            e.route = None;
            e.request_id = None;
            e.ts = events[0].ts;
            e.latency_ms = None;
            e.tokens_out = None;
            e
        };
        assert_eq!(strip(&events[0]), strip(&events[1]), "{what}");
    }
    // One rate allowance for both fronts.
    let rl = harness("ollama", "[rate_limit]\nrequests_per_minute = 2\n").await;
    let mut statuses = Vec::new();
    for path in [
        "/v1/chat/completions",
        "/api/chat",
        "/v1/chat/completions",
        "/api/chat",
    ] {
        let body = if path.starts_with("/v1") {
            chat_body("tiny", "hi")
        } else {
            ollama_chat("tiny", "hi")
        };
        let r = rl.post(path, body).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_front_error(path, &r, 429, Some("rate_limit_exceeded"));
            assert!(r.headers.contains_key("retry-after"));
            let e = terminal(&rl, &r).await;
            assert_event(
                &e,
                EventType::Request,
                Outcome::Deny,
                429,
                Some("rate_limited"),
            );
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_25_crlf_in_header_values() {
    let h = harness("openai", "").await;
    let (addr, server) = serve_on_socket(&h).await;
    let marker = "wg-injected-7f3a";
    let key = &h.key;
    let bad = [
        // A bare CR inside a value.
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nx-note: a\r{marker}: 1\r\n\r\n"
        ),
        // A bare CR inside the reason header a break-glass caller sends.
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nx-wardgate-break-glass-reason: ok\rset-cookie: {marker}\r\n\r\n"
        ),
        // A folded (obs-fold) continuation line smuggling a second value.
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nx-note: a\r\n {marker}: 1\r\n\r\n"
        ),
        // NUL in a value.
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nx-note: a\0{marker}\r\n\r\n"
        ),
        // CR in the request target.
        format!(
            "GET /v1/models\r{marker} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\r\n"
        ),
        // CR inside the Authorization value itself.
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r{marker}\r\n\r\n"
        ),
    ];
    let events_before = h.audit_events().await.len();
    for raw in &bad {
        let answer = raw_exchange(addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{raw:?}\n=> {answer:?}");
        assert!(!answer.contains(marker), "reflected: {answer}");
        assert!(!answer.contains(key.as_str()));
        assert_clean("response", &answer, &[marker]);
    }
    // Refused by the HTTP parser before any route ran: nothing to audit, nothing recorded.
    let events = h.audit_events().await;
    assert_eq!(events.len(), events_before, "{events:#?}");
    assert_audit_clean(&events, &[marker]);
    // The server goes on: a clean request on a new connection is served.
    let ok = raw_exchange(
        addr,
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // In-process the `http` types refuse to even build such a value.
    assert!(axum::http::HeaderValue::from_bytes(b"a\r\nx-injected: 1").is_err());
    assert_still_serving(&h).await;
    server.abort();
}

#[tokio::test]
async fn case_26_underscore_header_names_do_not_carry_identity() {
    let h = harness("openai", "").await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let (globex_id, globex_key) = h.key_with_roles("globex", &[Role::User], None).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let (_, bg) = h
        .key_with_roles("acme", &[Role::BreakGlass], Some(soon))
        .await;
    let bearer_admin = format!("Bearer {admin}");
    let smuggle = |mut req: Request<Body>| {
        for (name, value) in [
            ("x_api_key", admin.as_str()),
            ("authorization_", bearer_admin.as_str()),
            ("x_wardgate_tenant", "globex"),
            ("x_tenant", "globex"),
            ("x_wardgate_key_id", globex_id.as_str()),
            ("x_forwarded_for", "203.0.113.9"),
            ("x_real_ip", "203.0.113.9"),
            ("x_wardgate_break_glass_reason", "smuggled reason"),
            ("x_request_id", "attacker-chosen-id"),
            ("x_remote_user", "root"),
        ] {
            req.headers_mut().append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        from_ip(req, [192, 0, 2, 10])
    };
    // No real credential: still a 401, whatever the underscored headers say.
    let r = h.send(smuggle(get_as("/admin/keys", None))).await;
    assert_openai_error(&r, 401, Some("invalid_api_key"));
    // A user key does not become the admin key.
    let r = h.send(smuggle(get_as("/admin/keys", Some(&h.key)))).await;
    assert_openai_error(&r, 403, Some("permission_denied"));
    // A break-glass key still needs the real reason header.
    let r = h.send(smuggle(chat(&bg))).await;
    assert_openai_error(&r, 403, Some("break_glass_reason_required"));
    // A served request is recorded as who really sent it, from where it really came.
    let r = h.send(smuggle(chat(&h.key))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_ne!(r.headers["x-request-id"], "attacker-chosen-id");
    let e = terminal(&h, &r).await;
    assert_event(&e, EventType::Request, Outcome::Allow, 200, None);
    assert_eq!(e.tenant.as_deref(), Some("acme"));
    assert_ne!(e.key_id.as_deref(), Some(globex_id.as_str()));
    assert_eq!(e.source_ip, Some([192, 0, 2, 10].into()));
    assert_ne!(e.request_id.as_deref(), Some("attacker-chosen-id"));
    assert_audit_clean(
        &h.audit_events().await,
        &[
            "203.0.113.9",
            "smuggled reason",
            "attacker-chosen-id",
            "globex",
        ],
    );
    assert_still_serving_with(&h, &globex_key).await;
}

#[tokio::test]
async fn case_27_spoofed_x_forwarded_for() {
    // No trusted proxy: a client's X-Forwarded-For changes neither the audited source nor
    // the source its failed attempts are counted against.
    let h = harness(
        "openai",
        "[auth]\nlockout_threshold = 2\nlockout_by_prefix = false\n",
    )
    .await;
    let (addr, _server) = serve_on_socket(&h).await;
    let request = |xff: &str, key: &str| {
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nx-forwarded-for: {xff}\r\nconnection: close\r\n\r\n"
        )
    };
    let ok = raw_exchange(addr, request("203.0.113.9", &h.key).as_bytes()).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Each failure claims a new address; the lockout still counts them against the peer.
    let bad = "wg_live_not_a_real_key_00000000000000000000000";
    for i in 0..3 {
        let r = raw_exchange(addr, request(&format!("198.51.100.{i}"), bad).as_bytes()).await;
        assert!(
            r.starts_with("HTTP/1.1 401") || r.starts_with("HTTP/1.1 429"),
            "{r}"
        );
    }
    let locked = raw_exchange(addr, request("198.51.100.77", &h.key).as_bytes()).await;
    assert!(
        locked.starts_with("HTTP/1.1 429"),
        "a spoofed header escaped the lockout: {locked}"
    );
    let events = h.audit_events().await;
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(
            e.source_ip,
            Some("127.0.0.1".parse().unwrap()),
            "the audit source is the peer, never the header: {e:#?}"
        );
    }
    assert_audit_clean(&events, &["203.0.113.9", "198.51.100."]);
}

#[tokio::test]
async fn case_28_host_header_injection() {
    let h = harness("openai", "").await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let evil = "evil.example.test";
    let inject = |mut req: Request<Body>| {
        for (name, value) in [
            ("host", evil.to_owned()),
            ("x-forwarded-host", evil.to_owned()),
            ("x-forwarded-proto", "gopher".to_owned()),
            ("x-forwarded-prefix", format!("//{evil}/")),
            ("forwarded", format!("host={evil};proto=https")),
            ("x-original-url", format!("http://{evil}/")),
        ] {
            req.headers_mut().insert(
                axum::http::HeaderName::from_static(name),
                value.parse().unwrap(),
            );
        }
        req
    };
    let requests: Vec<(&str, MakeRequest)> = vec![
        ("models", Box::new(|| get_as("/v1/models", Some(&h.key)))),
        (
            "model",
            Box::new(|| get_as("/v1/models/tiny", Some(&h.key))),
        ),
        ("tags", Box::new(|| get_as("/api/tags", Some(&h.key)))),
        ("root", Box::new(|| get_as("/", Some(&h.key)))),
        ("chat", Box::new(|| chat(&h.key))),
        (
            "unknown route",
            Box::new(|| get_as("/v1/nope", Some(&h.key))),
        ),
        ("no key", Box::new(|| get_as("/v1/models", None))),
        (
            "admin list",
            Box::new(|| get_as("/admin/keys", Some(&admin))),
        ),
    ];
    for (what, make) in &requests {
        let plain = h.send(make()).await;
        let injected = h.send(inject(make())).await;
        assert_eq!(plain.status, injected.status, "{what}");
        assert_no_leak(&injected, &[evil, "gopher"]);
        // Nothing in the answer depends on the Host: the same bytes, but for generated ids.
        if *what != "chat" && *what != "admin list" {
            assert_eq!(plain.body, injected.body, "{what}");
        }
        let e = terminal(&h, &injected).await;
        assert_eq!(e.http_status, Some(injected.status.as_u16()));
    }
    // Created objects carry no URL built from the Host either.
    let r = h
        .send(inject(post_as("/admin/keys", "{}", Some(&admin))))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_no_leak(&r, &[evil]);
    assert!(!r.headers.contains_key("location"));
    // The backend was addressed by its own configured host, not the client's.
    let seen = h.mocks[0].stats().last_headers;
    let host = seen
        .iter()
        .find(|(n, _)| n == "host")
        .map(|(_, v)| v.clone());
    assert!(
        host.as_deref().is_some_and(|v| v.starts_with("127.0.0.1:")),
        "{seen:?}"
    );
    assert!(!format!("{seen:?}").contains(evil), "{seen:?}");
    assert_audit_clean(&h.audit_events().await, &[evil]);
    assert_still_serving(&h).await;
}

// =============================================================================================
// Streaming, errors, quotas

#[tokio::test]
async fn case_29_client_disconnect_cancels_upstream_and_audits_client_abort() {
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "stream": true,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/api/chat",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let slow = MockConfig {
            tokens: 1000,
            token_delay: Duration::from_millis(20),
            ..mock_cfg()
        };
        let h = audited(Harness::single_with("openai", slow, "").await).await;
        let (addr, server) = serve_on_socket(&h).await;
        let body = body.to_string();
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            h.key,
            body.len(),
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut seen = String::new();
        while !seen.contains("tok1") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "{path}: stream ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let request_id = seen
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("a request id header")
            .trim()
            .to_owned();
        let closed = Instant::now();
        drop(sock);
        assert!(
            h.mocks[0].wait_for_cancel(Duration::from_secs(2)).await,
            "{path}"
        );
        let took = closed.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "{path}: upstream cancelled {took:?} after the client left"
        );
        assert_eq!(h.mocks[0].stats().cancelled_streams, 1);
        // The terminal event says the client went away.
        let all = h.audit_events().await;
        let mine: Vec<&AuditEvent> = all
            .iter()
            .filter(|e| e.request_id.as_deref() == Some(request_id.as_str()))
            .collect();
        assert_eq!(mine.len(), 2, "start and terminal: {all:#?}");
        assert_eq!(mine[0].event_type, EventType::RequestStart);
        assert_eq!(mine[1].event_type, EventType::Request);
        assert_eq!(
            mine[1].outcome,
            Some(Outcome::ClientAbort),
            "{:#?}",
            mine[1]
        );
        assert_eq!(mine[1].http_status, Some(200));
        // Still serving, on the socket too.
        let ok = raw_exchange(
            addr,
            format!(
                "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
                h.key
            )
            .as_bytes(),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        server.abort();
    }
}

#[tokio::test]
async fn case_30_upstream_timeout_is_a_generic_504() {
    let (logs, _guard) = capture_logs();
    let slow = MockConfig {
        headers_delay: Duration::from_secs(5),
        ..mock_cfg()
    };
    let h = audited(
        Harness::single_with(
            "ollama",
            slow,
            "[server]\nrequest_timeout = \"300ms\"\nfirst_token_timeout = \"300ms\"\n",
        )
        .await,
    )
    .await;
    let upstream = h.mocks[0].url();
    let upstream_host = upstream.trim_start_matches("http://").to_owned();
    let prompt = "timeout-prompt-4be1";
    for (path, body) in [
        ("/v1/chat/completions", chat_body("tiny", prompt)),
        ("/api/chat", ollama_chat("tiny", prompt)),
        (
            "/api/generate",
            json!({"model": "tiny", "prompt": prompt, "stream": false}),
        ),
    ] {
        let started = Instant::now();
        let r = h.post(path, body).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
        assert_front_error(path, &r, 504, Some("timeout"));
        assert_no_leak(
            &r,
            &[
                prompt,
                upstream_host.as_str(),
                "reqwest",
                "hyper",
                "elapsed",
            ],
        );
        let e = terminal(&h, &r).await;
        assert_eq!(e.event_type, EventType::Request);
        assert_eq!(e.outcome, Some(Outcome::Error), "{e:#?}");
        assert_eq!(e.http_status, Some(504));
        assert!(
            matches!(
                e.deny_reason.as_deref(),
                Some("timeout" | "backend_timeout")
            ),
            "{e:#?}"
        );
    }
    assert!(!logs.text().contains(prompt), "the prompt is logged");
    // The backend recovers; so does the gateway.
    h.mocks[0].set_config(mock_cfg());
    // Its breaker opened on the timeouts; a health probe closes it (resilience.rs).
    wardgate_gateway::refresh_backends(&h.state).await;
    assert_still_serving(&h).await;
}

/// A model server that fails loudly: each body quotes the request it got and a stack trace.
async fn leaky_upstream(status: u16) -> SocketAddr {
    let leak = move |body: String| async move {
        let text = format!(
            "Traceback (most recent call last): File \"/srv/llm/app.py\", line 42; \
             thread 'main' panicked at src/engine.rs:7:9: UPSTREAM-SECRET-DETAIL while handling {body}"
        );
        let status = StatusCode::from_u16(status).unwrap();
        if status == StatusCode::OK {
            // A 200 whose body is not the protocol at all.
            return (status, text).into_response();
        }
        (status, axum::Json(json!({"error": text}))).into_response()
    };
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route("/api/chat", axum::routing::post(leak))
        .route("/api/generate", axum::routing::post(leak))
        .route("/v1/chat/completions", axum::routing::post(leak))
        .route("/v1/completions", axum::routing::post(leak));
    spawn_app(app).await
}

#[tokio::test]
async fn case_31_5xx_bodies_never_echo_prompts_upstream_text_or_traces() {
    let (logs, _guard) = capture_logs();
    let prompt = "PATIENT-PROMPT-8d4f";
    for upstream_status in [500, 502, 503, 401, 400, 200] {
        for kind in KINDS {
            let addr = leaky_upstream(upstream_status).await;
            let url = match kind {
                "openai" => format!("http://{addr}/v1"),
                _ => format!("http://{addr}"),
            };
            let toml = format!(
                "[[backends]]\nname = \"b0\"\nkind = \"{kind}\"\nurl = \"{url}\"\n\
                 [[models]]\nname = \"tiny\"\nchain = [{{ backend = \"b0\", model = \"tiny\" }}]\n"
            );
            let h = audited(Harness::from_toml(&toml, vec![]).await).await;
            for (path, body) in [
                ("/v1/chat/completions", chat_body("tiny", prompt)),
                ("/api/chat", ollama_chat("tiny", prompt)),
                (
                    "/api/generate",
                    json!({"model": "tiny", "prompt": prompt, "stream": false}),
                ),
            ] {
                let r = h.post(path, body).await;
                let what = format!("{kind} upstream {upstream_status}, {path}");
                assert!(
                    r.status.is_client_error() || r.status.is_server_error(),
                    "{what}: {}",
                    r.status
                );
                assert_front_error(path, &r, r.status.as_u16(), None);
                assert_no_leak(
                    &r,
                    &[
                        prompt,
                        "UPSTREAM-SECRET-DETAIL",
                        "Traceback",
                        "app.py",
                        &addr.to_string(),
                    ],
                );
                let e = terminal(&h, &r).await;
                assert_eq!(e.http_status, Some(r.status.as_u16()), "{what}");
                let want = if r.status.is_server_error() {
                    Outcome::Error
                } else {
                    Outcome::Deny
                };
                assert_eq!(e.outcome, Some(want), "{what}: {e:#?}");
                assert_audit_clean(&[e], &[prompt, "UPSTREAM-SECRET-DETAIL"]);
            }
            // The gateway itself is fine: what does not need the backend is served.
            assert_eq!(h.get("/v1/models").await.status, StatusCode::OK);
            assert_eq!(h.get("/api/tags").await.status, StatusCode::OK);
        }
    }
    let log = logs.text();
    assert!(!log.contains(prompt), "the prompt is logged");
    assert!(
        !log.contains("UPSTREAM-SECRET-DETAIL"),
        "upstream text is logged"
    );
}

#[tokio::test]
async fn case_32_per_key_quotas() {
    // Requests: one a minute.
    let h = harness("openai", "[rate_limit]\nrequests_per_minute = 1\n").await;
    assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);
    for path in ["/v1/chat/completions", "/api/chat"] {
        let body = if path.starts_with("/v1/") {
            chat_body("tiny", "quota-prompt-1")
        } else {
            ollama_chat("tiny", "quota-prompt-1")
        };
        let r = h.send(post_as(path, &body.to_string(), Some(&h.key))).await;
        assert_front_error(path, &r, 429, Some("rate_limit_exceeded"));
        assert!(r.headers.contains_key("retry-after"));
        assert_no_leak(&r, &["quota-prompt-1"]);
        let e = terminal(&h, &r).await;
        assert_event(
            &e,
            EventType::Request,
            Outcome::Deny,
            429,
            Some("rate_limited"),
        );
    }

    // Tokens: a minute's allowance, then a day's budget.
    for (setting, what) in [
        ("tokens_per_minute = 5", "tokens per minute"),
        ("tokens_per_day = 5", "tokens per day"),
    ] {
        let h = harness("openai", &format!("[rate_limit]\n{setting}\n")).await;
        let (_, other) = h.key_with_roles("acme", &[Role::User], None).await;
        assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = h.send(chat(&h.key)).await;
        let e = assert_openai_error(&r, 429, Some("rate_limit_exceeded"));
        assert_eq!(e["type"], "tokens");
        assert!(e["message"].as_str().unwrap().contains(what), "{e}");
        assert!(r.headers.contains_key("retry-after"));
        let ev = terminal(&h, &r).await;
        assert_event(
            &ev,
            EventType::Request,
            Outcome::Deny,
            429,
            Some("rate_limited"),
        );
        // Another key has its own allowance (one request's worth at these tiny limits).
        assert_eq!(h.send(chat(&other)).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn case_33_logprobs_are_stripped() {
    // Neither front passes log-probabilities on: the fields are parsed and dropped, so no
    // backend is asked for them and no answer carries them, whatever the key.
    for kind in KINDS {
        let h = harness(kind, "").await;
        let msgs = json!([{"role": "user", "content": "hi"}]);
        for (path, body) in [
            (
                "/v1/chat/completions",
                json!({"model": "tiny", "messages": msgs, "logprobs": true, "top_logprobs": 20}),
            ),
            (
                "/v1/chat/completions",
                json!({"model": "tiny", "stream": true, "messages": msgs, "logprobs": true,
                       "top_logprobs": 5}),
            ),
            (
                "/v1/completions",
                json!({"model": "tiny", "prompt": "hi", "logprobs": 5}),
            ),
            (
                "/api/chat",
                json!({"model": "tiny", "stream": false, "messages": msgs, "logprobs": true,
                       "top_logprobs": 3}),
            ),
            (
                "/api/generate",
                json!({"model": "tiny", "stream": false, "prompt": "hi", "logprobs": true,
                       "top_logprobs": 3}),
            ),
        ] {
            let r = h.post(path, body).await;
            assert_eq!(r.status, StatusCode::OK, "{kind} {path}: {}", r.text());
            let sent = h.mocks[0].stats().last_body.unwrap().to_string();
            assert!(
                !sent.contains("logprobs"),
                "{kind} {path}: backend asked: {sent}"
            );
            for frame in r.frames() {
                for choice in frame["choices"].as_array().into_iter().flatten() {
                    assert!(choice["logprobs"].is_null(), "{kind} {path}: {frame}");
                }
                assert!(frame["logprobs"].is_null(), "{kind} {path}: {frame}");
            }
            let e = terminal(&h, &r).await;
            assert_event(&e, EventType::Request, Outcome::Allow, 200, None);
        }
        assert_still_serving(&h).await;
    }
}

// =============================================================================================
// Audit

#[tokio::test]
async fn case_34_a_tampered_log_fails_verification_at_the_first_bad_entry() {
    use wardgate_audit::export::write_export;
    use wardgate_audit::merkle::{self, Hash};
    use wardgate_audit::store::AuditEntry;
    use wardgate_audit::verify::{self, ConsistencyError, VerifyError};

    let h = harness("openai", "").await;
    // A real log: allowed, refused and failed requests.
    for req in [
        chat(&h.key),
        chat("wg_bad"),
        post_as(
            "/api/chat",
            &ollama_chat("nosuch", "hi").to_string(),
            Some(&h.key),
        ),
        get_as("/v1/models", Some(&h.key)),
        chat(&h.key),
        get_as("/api/tags", Some(&h.key)),
    ] {
        h.send(req).await;
    }
    let auditor = h.state.audit.clone().unwrap();
    let old = auditor.checkpoint().await.unwrap().checkpoint;
    for _ in 0..3 {
        h.send(chat(&h.key)).await;
    }
    auditor.checkpoint().await.unwrap();
    let store = auditor.store().clone();
    let mut export = Vec::new();
    write_export(store.as_ref(), &mut export).await.unwrap();
    let keys = vec![auditor.verifier().clone()];
    // What `wardgate audit verify --export` runs.
    let check = |bytes: &[u8]| verify::verify_export(bytes, keys.clone(), &[], None);
    let report = check(&export).unwrap();
    let n = report.entries as usize;
    assert!(n >= 12, "{report:?}");
    assert_eq!(report.proven, report.entries);

    let text = String::from_utf8(export.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first_entry = lines
        .iter()
        .position(|l| l.contains("\"leaf_hash\""))
        .unwrap();
    let join = |ls: &[String]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let bad = |ls: Vec<String>| check(join(&ls).as_bytes()).unwrap_err();
    let named = |e: &VerifyError, k: usize| {
        assert_eq!(e.first_bad_seq(), Some(k as u64), "{e}");
        assert!(e.to_string().starts_with(&format!("entry {k}")), "{e}");
    };
    for k in [0, 3, n / 2, n - 2] {
        // Altered: one field of one entry.
        let mut ls = owned.clone();
        let mut v: Value = serde_json::from_str(&ls[first_entry + k]).unwrap();
        v["event"]["actor_id"] = json!("someone-else");
        ls[first_entry + k] = v.to_string();
        named(&bad(ls), k);
        // Removed.
        let mut ls = owned.clone();
        ls.remove(first_entry + k);
        named(&bad(ls), k);
        // Reordered with its successor.
        let mut ls = owned.clone();
        ls.swap(first_entry + k, first_entry + k + 1);
        named(&bad(ls), k);
    }
    // The last entry removed: the final checkpoint covers more than is left.
    let mut ls = owned.clone();
    ls.pop();
    named(&bad(ls), n - 1);

    // An entry rewritten with its leaf hash recomputed: caught by the signed roots.
    let entries = store.read_range(0, 10_000).await.unwrap();
    let mut rewritten = entries.clone();
    let mut forged = rewritten[2].event.clone();
    forged.actor_id = "someone-else".into();
    rewritten[2] = AuditEntry::prepare(2, forged).0;
    let mut ls = owned.clone();
    ls[first_entry + 2] = wardgate_audit::export::entry_line(&rewritten[2]);
    let err = bad(ls);
    assert!(matches!(err, VerifyError::RootMismatch { .. }), "{err}");
    assert!(err.first_bad_seq().unwrap() <= 2, "{err}");

    // An old checkpoint is inconsistent with the rewritten log, and consistent with the honest.
    let honest: Vec<Hash> = entries.iter().map(|e| e.leaf_hash).collect();
    let proof = verify::prove_consistency(&old, &honest).unwrap();
    merkle::verify_consistency(
        old.size,
        proof.new_size,
        &old.root,
        &proof.new_root,
        &proof.proof,
    )
    .unwrap();
    let forged: Vec<Hash> = rewritten.iter().map(|e| e.leaf_hash).collect();
    assert!(
        matches!(
            verify::prove_consistency(&old, &forged),
            Err(ConsistencyError::Rewritten { .. })
        ),
        "the rewrite is shown"
    );
    assert!(matches!(
        verify::prove_consistency(&old, &honest[..old.size as usize - 1]),
        Err(ConsistencyError::Truncated { .. })
    ));
    // The live log itself is intact.
    verify::verify_store(store.as_ref(), keys.clone(), &[], None)
        .await
        .unwrap();
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn case_35_no_phi_in_logs_or_audit() {
    let (logs, _guard) = capture_logs();
    let phi = [
        "Margaret Okonkwo-Hale",
        "078-05-1120",
        "(617) 555-0143",
        "617-555-0143",
        "margaret.hale@example.org",
        "MRN 00482913",
        "1962-03-14",
    ];
    let note = format!(
        "echo:Patient {} (DOB {}, SSN {}, phone {}, alt {}, email {}, {}) reports chest pain.",
        phi[0], phi[6], phi[1], phi[2], phi[3], phi[4], phi[5]
    );
    let h = harness(
        "ollama",
        "[[phi.models]]\nname = \"other\"\nmode = \"block\"\n",
    )
    .await;
    let mut requests: Vec<(&str, Value)> = Vec::new();
    for stream in [false, true] {
        let mut b = chat_body("tiny", &note);
        b["stream"] = json!(stream);
        requests.push(("/v1/chat/completions", b));
        let mut b = ollama_chat("tiny", &note);
        b["stream"] = json!(stream);
        requests.push(("/api/chat", b));
    }
    requests.push((
        "/api/generate",
        json!({"model": "tiny", "prompt": note, "system": note, "stream": false}),
    ));
    requests.push(("/v1/completions", json!({"model": "tiny", "prompt": note})));
    requests.push(("/v1/embeddings", json!({"model": "tiny", "input": [note]})));
    requests.push(("/api/embed", json!({"model": "tiny", "input": note})));
    // Refusals: PHI blocked, a body that is not valid for its endpoint, too many tokens.
    requests.push(("/v1/chat/completions", chat_body("other", &note)));
    requests.push((
        "/v1/chat/completions",
        json!({"model": "tiny", "messages": [{"role": note, "content": note}]}),
    ));
    requests.push((
        "/api/chat",
        json!({"model": "tiny", "messages": [{"role": "user", "content": note}],
               "options": {"num_predict": note}}),
    ));
    requests.push((
        "/v1/chat/completions",
        json!({"model": "tiny", "max_tokens": note, "messages": [{"role": "user", "content": note}]}),
    ));
    let mut statuses = Vec::new();
    for (path, body) in &requests {
        let r = h.post(path, body.clone()).await;
        statuses.push(r.status.as_u16());
        if !r.status.is_success() {
            assert_no_leak(&r, &phi);
        }
    }
    assert_eq!(&statuses[..8], &[200; 8], "{statuses:?}");
    assert!(statuses[8..].iter().all(|s| *s == 400), "{statuses:?}");
    // The answers did carry the values back (the mock echoes): they were really there.
    let events = h.audit_events().await;
    assert!(events.len() >= requests.len(), "{}", events.len());
    assert_audit_clean(&events, &phi);
    assert_audit_clean(&events, &["chest pain"]);
    let log = logs.text();
    assert!(
        log.contains("wardgate::request"),
        "logs were captured: {log}"
    );
    for v in phi.iter().chain(["chest pain"].iter()) {
        assert!(!log.contains(v), "the logs hold {v:?}");
    }
    assert_still_serving(&h).await;
}

// ==== issue 15, A: items 1, 14, 15, low (JSON routes answer 415 to other bodies) ====

/// A loopback connection from `ip` (the whole of 127.0.0.0/8 is this host), so that tests can
/// be two client addresses.
async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((ip, 0))).unwrap();
    sock.connect(addr).await.unwrap()
}

/// `/health` on a fresh connection from `ip`, given one second: its status (0: no answer).
async fn health_from(ip: [u8; 4], addr: SocketAddr) -> u16 {
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        let mut s = connect_from(ip, addr).await;
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
    .unwrap_or_default();
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// How many of `socks` the server has closed (a read sees the end, or an error).
fn closed_count(socks: &[tokio::net::TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    socks
        .iter()
        .filter(|s| match s.try_read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        })
        .count()
}

/// Reads until the server closes the connection, for at most `limit`: how long that took.
async fn closed_after(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_1_silent_connections_from_one_address_neither_starve_others_nor_stay_open() {
    const SILENT: usize = 1100;
    const PER_IP: usize = 256; // server.max_connections_per_ip's default
    let timeout = Duration::from_secs(2);
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[server]\nheader_read_timeout = \"2s\"\n",
    )
    .await;
    let addr = h.listen().await;
    let started = Instant::now();
    // 1,100 connections from 127.0.0.1 that never send a byte (more than the 1,024 slots of
    // `server.max_connections`).
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(connect_from([127, 0, 0, 1], addr).await);
    }
    // Another address is served within a second throughout, until every silent one is gone.
    let mut open_seen = Vec::new();
    loop {
        let at = started.elapsed();
        assert_eq!(
            health_from([127, 0, 0, 2], addr).await,
            200,
            "/health from another address got no answer within 1 s, {at:?} after the flood"
        );
        let open = SILENT - closed_count(&silent);
        open_seen.push((started.elapsed(), open));
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < timeout + Duration::from_secs(3),
            "{open} silent connections are still open after {:?}: {open_seen:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The address held at most its cap (the rest were closed at once, not queued), and the
    // ones it held were closed by the header timeout, not before.
    let most = open_seen.iter().map(|(_, n)| *n).max().unwrap();
    assert_eq!(most, PER_IP, "{open_seen:?}");
    let first_all_closed = open_seen.last().unwrap().0;
    assert!(
        first_all_closed >= timeout - Duration::from_millis(100),
        "closed before the header timeout: {open_seen:?}"
    );
    assert_eq!(health_from([127, 0, 0, 1], addr).await, 200);
}

#[tokio::test]
async fn i15_1_http2_without_a_request_and_idle_keep_alive_are_closed_at_the_header_timeout() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    // HEADERS, END_STREAM | END_HEADERS, stream 1: GET http://x/health in HPACK (indexed
    // :method GET and :scheme http, literal :path and :authority with indexed names).
    const GET_HEALTH: &[u8] = &[
        0, 0, 14, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x44, 7, b'/', b'h', b'e', b'a', b'l', b't', b'h',
        0x41, 1, b'x',
    ];
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[server]\nheader_read_timeout = \"1s\"\n",
    )
    .await;
    let addr = h.listen().await;
    let window = Duration::from_millis(900)..Duration::from_secs(3);
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "the HTTP/2 preface and no request",
            [PREFACE, SETTINGS].concat(),
        ),
        (
            "an HTTP/2 request, then nothing",
            [PREFACE, SETTINGS, GET_HEALTH].concat(),
        ),
        (
            "an HTTP/1.1 request, then nothing",
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let took = closed_after(&mut s, Duration::from_secs(5)).await;
        assert!(
            took.is_some_and(|t| window.contains(&t)),
            "{what}: closed after {took:?}, expected about 1 s"
        );
    }
}

#[test]
fn i15_1_the_per_address_cap_is_configured_with_bounds() {
    let load = |toml: &str| {
        wardgate_gateway::config::Config::from_raw(
            wardgate_gateway::config::parse_toml(toml).unwrap(),
            &|_| None,
        )
    };
    assert_eq!(load("").unwrap().server.max_connections_per_ip, 256);
    assert_eq!(
        load("[server]\nmax_connections_per_ip = 4\n")
            .unwrap()
            .server
            .max_connections_per_ip,
        4
    );
    for bad in [0, 65_537] {
        let e = load(&format!("[server]\nmax_connections_per_ip = {bad}\n")).unwrap_err();
        assert_eq!(e.key, "server.max_connections_per_ip", "{bad}: {e}");
    }
    assert_eq!(load("").unwrap().llm.max_request_rate, 2000);
    assert_eq!(load("").unwrap().llm.replay_cache_size(), 122_000);
    for bad in [0, 50_001] {
        let e = load(&format!("[llm]\nmax_request_rate = {bad}\n")).unwrap_err();
        assert_eq!(e.key, "llm.max_request_rate", "{bad}: {e}");
    }
    let env = |k: &str| (k == "WARDGATE_LLM_MAX_REQUEST_RATE").then(|| "10".to_owned());
    let c = wardgate_gateway::config::Config::from_raw(
        wardgate_gateway::config::parse_toml("").unwrap(),
        &env,
    )
    .unwrap();
    assert_eq!(c.llm.replay_cache_size(), 610);
}

#[tokio::test]
async fn i15_1_a_trusted_proxy_is_not_held_to_the_per_address_cap() {
    // A load balancer's connections all come from its address: listed in trusted_proxies it
    // may hold more than the cap, while any other address is held to it.
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[server]\nmax_connections_per_ip = 2\ntrusted_proxies = [\"127.0.0.3\"]\n",
    )
    .await;
    let addr = h.listen().await;
    let mut proxy = Vec::new();
    let mut other = Vec::new();
    for _ in 0..4 {
        proxy.push(connect_from([127, 0, 0, 3], addr).await);
        other.push(connect_from([127, 0, 0, 4], addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(closed_count(&proxy), 0);
    assert_eq!(closed_count(&other), 2);
    for s in proxy.iter_mut() {
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}

/// `wardgate llm` on a socket, signed requests checked by `verifier`.
async fn llm_on_socket(verifier: Arc<Verifier>) -> (Harness, SocketAddr) {
    let h = Harness::single("ollama").await;
    let app = wardgate_gateway::llm::llm_router(h.state.clone(), verifier);
    let addr = spawn_app(app).await;
    (h, addr)
}

#[tokio::test]
async fn i15_14_the_llm_refuses_unsigned_requests_before_reading_their_body() {
    let (logs, _guard) = capture_logs();
    let verifier = Arc::new(Verifier::new(
        vec![SigningKey::new(LLM_SECRET).unwrap()],
        LLM_SKEW_SECS,
        1000,
    ));
    let (h, addr) = llm_on_socket(verifier).await;
    let now = unix_now();
    let forged = signing::sign(
        &SigningKey::new(&[7u8; 32]).unwrap(),
        "POST",
        "/api/chat",
        b"{}",
        now,
        "nonce-forged-00000001",
    );
    let good = signing::sign(
        &SigningKey::new(LLM_SECRET).unwrap(),
        "POST",
        "/api/chat",
        b"{}",
        now,
        "nonce-good-0000000001",
    );
    let headers = |s: &signing::Signature, drop: &str| {
        [
            (signing::TIMESTAMP_HEADER, s.timestamp.clone()),
            (signing::NONCE_HEADER, s.nonce.clone()),
            (signing::SIGNATURE_HEADER, s.signature.clone()),
            (signing::BODY_DIGEST_HEADER, s.body_digest.clone()),
        ]
        .into_iter()
        .filter(|(n, _)| *n != drop)
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect::<String>()
    };
    let cases = [
        ("no signature headers", String::new()),
        (
            "no body digest (old signing)",
            headers(&good, signing::BODY_DIGEST_HEADER),
        ),
        (
            "a malformed signature",
            headers(&good, signing::SIGNATURE_HEADER) + "x-wardgate-signature: v1=zz\r\n",
        ),
        ("signed with another secret", headers(&forged, "")),
    ];
    for (what, signature) in cases {
        // A 4 MiB body announced, 1 KiB of it sent, and the rest never.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: 4194304\r\n{signature}\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b' '; 1024]).await.unwrap();
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut out))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer while the body is unsent"))
            .unwrap();
        let text = String::from_utf8_lossy(&out[..n]);
        assert!(text.starts_with("HTTP/1.1 401"), "{what}: {text}");
        assert!(
            text.contains(r#"{"error":"unauthorized"}"#),
            "{what}: {text}"
        );
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
    let log = logs.text();
    for reason in [
        "missing signature headers",
        "malformed signature headers",
        "signature does not match",
    ] {
        assert!(log.contains(reason), "{reason}: {log}");
    }
    // A signed request whose body is not the one signed: refused once the body is read.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: 3\r\nconnection: close\r\n{}\r\n{{ }}",
        headers(&good, "")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 401"));
    assert!(
        logs.text()
            .contains("body does not match its signed digest")
    );
}

#[tokio::test]
async fn i15_15_a_full_replay_cache_never_refuses_a_fresh_nonce() {
    const CAPACITY: usize = 50;
    let (logs, _guard) = capture_logs();
    let h = Harness::single("ollama").await;
    let verifier = Arc::new(Verifier::new(
        vec![SigningKey::new(LLM_SECRET).unwrap()],
        LLM_SKEW_SECS,
        CAPACITY,
    ));
    let app = wardgate_gateway::llm::llm_router(h.state.clone(), verifier.clone());
    let now = unix_now();
    let nonce = |i: usize| format!("nonce-fill-{i:010}");
    // Well over the capacity, all within the window: every one is served.
    for i in 0..CAPACITY * 2 + 20 {
        let r = send_to(&app, signed("/api/generate", &llm_body(), now, &nonce(i))).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
    }
    assert_eq!(verifier.evicted_early(), (CAPACITY + 20) as u64);
    assert!(
        logs.text().contains("the replay cache is full"),
        "the early eviction is logged"
    );
    // The recent nonces are still refused as replays.
    for i in [CAPACITY * 2 + 19, CAPACITY + 30] {
        assert_hop_refused(
            &h,
            &logs,
            &app,
            signed("/api/generate", &llm_body(), now, &nonce(i)),
            &format!("replay of nonce {i}"),
        )
        .await;
    }
    assert_hop_serves(&app, "nonce-after-000000015").await;
}

#[tokio::test]
async fn i15_low_json_routes_answer_415_to_bodies_not_labelled_json() {
    let h = harness("openai", "").await;
    let routes = [
        ("/v1/chat/completions", chat_body("tiny", "hello")),
        ("/v1/embeddings", json!({"model": "tiny", "input": "hello"})),
        ("/api/chat", ollama_chat("tiny", "hello")),
        (
            "/api/generate",
            json!({"model": "tiny", "prompt": "hello", "stream": false}),
        ),
        ("/api/show", json!({"model": "tiny"})),
    ];
    for (path, body) in &routes {
        for label in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonp"),
        ] {
            let mut b = Request::post(*path).header("authorization", format!("Bearer {}", h.key));
            if let Some(l) = label {
                b = b.header("content-type", l);
            }
            let r = h.send(b.body(Body::from(body.to_string())).unwrap()).await;
            assert_front_error(path, &r, 415, Some("unsupported_media_type"));
            assert!(
                r.text().contains("application/json"),
                "{path} {label:?}: the answer names the type expected: {}",
                r.text()
            );
        }
        for label in ["Application/JSON", "application/json; charset=utf-8"] {
            let r = h
                .send(
                    Request::post(*path)
                        .header("authorization", format!("Bearer {}", h.key))
                        .header("content-type", label)
                        .body(Body::from(body.to_string()))
                        .unwrap(),
                )
                .await;
            assert!(r.status.is_success(), "{path} {label}: {}", r.text());
        }
    }
    assert_still_serving(&h).await;
}
