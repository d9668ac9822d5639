//! The bad-input and attack cases every release must survive (`shared/design/attack-cases.md`),
//! one test per case, named `case_NN_*` after the document's numbering. Each asserts the status,
//! the error shape of the route's front (OpenAI `{"error":{"message","type","param","code"}}` on
//! `/v1/*` and `/admin/*`, Ollama `{"error":"..."}` on `/api/*`), that no prompt text, secret or
//! stack trace leaks into the body (and, where cheap, into captured logs), the request's terminal
//! audit event, and that the server still serves a normal request afterwards.
//!
//! The connection-layer and quota features these cases exercise have their own, broader tests
//! in `transport.rs` and `quotas.rs`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::jwt::*;
use crate::support::logs::{Logs, capture_logs};
use crate::support::*;
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64_STD, URL_SAFE_NO_PAD as B64};
use jsonwebtoken::Algorithm;
use mock_upstream::MockConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use wardgate_api::signing::{self, SigningKey, Verifier};
use wardgate_audit::{AuditEvent, EventType, Outcome};
use wardgate_store::Role;

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

async fn harness(kind: &str, extra: &str) -> Harness {
    Harness::single_with(kind, mock_cfg(), extra).await
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

/// Serves the harness's state on a real socket (for what only a socket shows).
async fn serve_on_socket(h: &Harness) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gateway = h.gateway.clone();
    let server = tokio::spawn(async move {
        let _ = gateway.run(listener, std::future::pending()).await;
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
// JWT support: key pairs and signing in `crate::support::jwt`.

const SUBJECT: &str = "alice@example.test";

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": SUBJECT, "tenant": "acme",
           "iat": now(), "exp": now() + 600})
}

/// An audited harness trusting one issuer (`issuer_toml`), with API keys still working.
async fn jwt_harness(issuer_toml: &str) -> Harness {
    harness("openai", issuer_toml).await
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
    let app = wardgate_gateway::llm::llm_router(h.state.clone(), verifier, None);
    (h, app)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn send_to(app: &axum::Router, req: Request<Body>) -> Resp {
    crate::support::send_to(app.clone(), req).await
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
    use wardgate_gateway::middleware::events::COUNTERS;
    let (auth_failures, lockouts) = (&COUNTERS.auth_failures, &COUNTERS.lockouts);
    let h = harness(
        "openai",
        // Every failure audited on its own (no folding per window), to check each event.
        "[auth]\nlockout_threshold = 3\nlockout_duration = \"10m\"\nfailure_audit_window = \"0s\"\n",
    )
    .await;
    let attacker = [192, 0, 2, 66];
    let guess = format!("wg_abcdefghijkl_{}", "A".repeat(43));
    let (failures_before, lockouts_before) = (
        auth_failures.load(Ordering::Relaxed),
        lockouts.load(Ordering::Relaxed),
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
        lockouts.load(Ordering::Relaxed) > lockouts_before,
        "the lockout metric"
    );
    assert!(auth_failures.load(Ordering::Relaxed) >= failures_before + 3);

    // Locked: a failing credential from that source is refused, on both fronts, with a wait
    // and an audit event ...
    for (path, body) in [
        ("/v1/chat/completions", chat_body("tiny", "hi")),
        ("/api/chat", ollama_chat("tiny", "hi")),
    ] {
        let other_guess = format!("wg_zyxwvutsrqpo_{}", "A".repeat(43));
        let r = h
            .send(from_ip(
                post_as(path, &body.to_string(), Some(&other_guess)),
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
        // ... while a valid key is served from it all the same (issue 15, item 8): lockout
        // slows guessing, it does not deny service to everyone behind the address.
        let r = h
            .send(from_ip(
                post_as(path, &body.to_string(), Some(&h.key)),
                attacker,
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
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
            // The trickle's pace (the attack itself), not a wait for anything.
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
            // The trickle's pace (the attack itself), not a wait for anything.
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
    let h = // Every 429 audited on its own, to check each one's event (folding is
        // `i15_attack_a_keys_429s_are_folded_in_the_audit_log`).
        Harness::single_with(
            "openai",
            slow,
            "[rate_limit]\nconcurrent_requests = 2\n[limits]\nrefusal_audit_window = \"0s\"\n",
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
    // The streams' places come back when their clients drop them: a one-token request of the
    // same key is admitted again (waited for, not assumed after a fixed pause).
    drop(a);
    drop(b);
    let one_token =
        json!({"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]});
    let r = poll_until(
        Duration::from_secs(10),
        || {
            h.send(post_as(
                "/v1/chat/completions",
                &one_token.to_string(),
                Some(&h.key),
            ))
        },
        |r| r.status != StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
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
    // Every 429 audited on its own, to check each one's event.
    let rl = harness(
        "ollama",
        "[rate_limit]\nrequests_per_minute = 2\n[limits]\nrefusal_audit_window = \"0s\"\n",
    )
    .await;
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
    let locked = raw_exchange(addr, request("198.51.100.77", bad).as_bytes()).await;
    assert!(
        locked.starts_with("HTTP/1.1 429"),
        "a spoofed header escaped the lockout: {locked}"
    );
    // A valid key is served from a locked-out address (issue 15, item 8).
    let ok = raw_exchange(addr, request("198.51.100.78", &h.key).as_bytes()).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
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
        let h = Harness::single_with("openai", slow, "").await;
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
    let h = Harness::single_with(
        "ollama",
        slow,
        "[server]\nrequest_timeout = \"300ms\"\nfirst_token_timeout = \"300ms\"\n\
         [circuit_breaker]\ncooldown = \"500ms\"\n",
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
    // Its breaker opened on the timeouts; after the cooldown a trial request closes it
    // (resilience.rs).
    wardgate_gateway::app::refresh_backends(&h.state).await;
    let r = poll_until(
        Duration::from_secs(5),
        || h.post("/v1/chat/completions", chat_body("tiny", "hello")),
        |r| r.status == StatusCode::OK,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
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
            let h = Harness::from_toml(&toml, vec![]).await;
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
    // Requests: one a minute; every 429 audited on its own, to check each one's event.
    let h = harness(
        "openai",
        "[rate_limit]\nrequests_per_minute = 1\n[limits]\nrefusal_audit_window = \"0s\"\n",
    )
    .await;
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
    let auditor = h.state.audit.clone();
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

// ==== issue 15, D: items 7, 8, 9, low: metrics scope, JWT tenants and duplicate claims, config maxima ====

/// The failed authentications an address's audit events stand for: one per request event, and
/// `N` per `suppressed: N` summary (which belongs to no request).
fn failures_audited(events: &[AuditEvent], ip: std::net::IpAddr) -> (u64, usize) {
    let mine: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.source_ip == Some(ip))
        .filter(|e| matches!(e.event_type, EventType::AuthFailure | EventType::Lockout))
        .collect();
    (crate::support::refusals_counted(&mine), mine.len())
}

#[tokio::test]
async fn i15_7_a_credentialless_flood_is_counted_folded_in_the_audit_log_and_blocks_no_one() {
    let auth_failures = &wardgate_gateway::middleware::events::COUNTERS.auth_failures;
    let h = harness("openai", "[auth]\nfailure_audit_window = \"2s\"\n").await;
    let flooder = [192, 0, 2, 99];
    let ip = std::net::IpAddr::from(flooder);
    let before = auth_failures.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut refused_cheaply = 0;
    for i in 0..2_000 {
        let r = h.send(from_ip(get_as("/v1/models", None), flooder)).await;
        match r.status.as_u16() {
            401 => {}
            429 => {
                assert!(r.headers.contains_key("retry-after"), "request {i}");
                refused_cheaply += 1;
            }
            s => panic!("request {i}: {s} {}", r.text()),
        }
        if i == 1_000 {
            // Meanwhile a valid key from another address is served.
            let ok = h
                .send(from_ip(
                    get_as("/v1/models", Some(&h.key)),
                    [192, 0, 2, 100],
                ))
                .await;
            assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        }
    }
    let elapsed = start.elapsed();
    assert!(
        refused_cheaply >= 1_800,
        "past the allowance the flood is answered 429: {refused_cheaply}"
    );
    assert!(
        auth_failures.load(Ordering::Relaxed) >= before + 2_000,
        "a missing credential is an authentication failure in the metric"
    );
    // The summaries of the ended windows are written within about 1.5 windows.
    let (total, events) = poll_until(
        Duration::from_secs(6),
        || async { failures_audited(&h.audit_events().await, ip) },
        |(total, _)| *total >= 2_000,
    )
    .await;
    assert_eq!(
        total, 2_000,
        "the audit events' counts add up to the failures"
    );
    // Per 2 s window: the first failure, one summary; plus the lockout after 10 failures.
    let windows = usize::try_from(elapsed.as_secs() / 2).unwrap() + 1;
    assert!(
        events <= 2 * windows + 1,
        "{events} audit events for 2,000 failures in {elapsed:?}"
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn i15_7_metadata_routes_take_from_the_keys_request_rate() {
    let h = harness("openai", "[rate_limit]\nrequests_per_minute = 3\n").await;
    for path in ["/v1/models", "/api/tags", "/v1/models/tiny"] {
        let r = h.send(get_as(path, Some(&h.key))).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
    for (path, req) in [
        ("/v1/models", get_as("/v1/models", Some(&h.key))),
        ("/api/tags", get_as("/api/tags", Some(&h.key))),
        (
            "/api/show",
            post_as(
                "/api/show",
                &json!({"model": "tiny"}).to_string(),
                Some(&h.key),
            ),
        ),
        (
            "/v1/chat/completions",
            post_as(
                "/v1/chat/completions",
                &chat_body("tiny", "hi").to_string(),
                Some(&h.key),
            ),
        ),
    ] {
        let r = h.send(req).await;
        assert_front_error(path, &r, 429, Some("rate_limit_exceeded"));
        assert!(r.headers.contains_key("retry-after"), "{path}");
    }
}

#[tokio::test]
async fn i15_8_an_address_locked_out_by_failures_is_still_served_with_a_valid_key() {
    let h = harness("openai", "").await;
    let nat = [198, 51, 100, 40];
    for i in 0..10 {
        let guess = format!("wg_{:0>12}_{}", i, "A".repeat(43));
        let r = h.send(from_ip(chat(&guess), nat)).await;
        assert_openai_error(&r, 401, Some("invalid_api_key"));
    }
    // Locked out: a failing credential gets 429 with a wait ...
    let r = h
        .send(from_ip(
            chat(&format!("wg_zzzzzzzzzzzz_{}", "A".repeat(43))),
            nat,
        ))
        .await;
    assert_openai_error(&r, 429, Some("too_many_failed_authentications"));
    assert!(r.headers.contains_key("retry-after"));
    let r = h.send(from_ip(get_as("/v1/models", None), nat)).await;
    assert_openai_error(&r, 429, Some("too_many_failed_authentications"));
    // ... and a valid key behind the same address is served, on both fronts.
    for (path, body) in [
        ("/v1/chat/completions", chat_body("tiny", "hi")),
        ("/api/chat", ollama_chat("tiny", "hi")),
    ] {
        let r = h
            .send(from_ip(post_as(path, &body.to_string(), Some(&h.key)), nat))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
}

#[tokio::test]
async fn i15_8_a_prefix_locked_out_by_failures_is_still_served_with_the_real_key() {
    let h = harness("openai", "").await;
    // The prefix is not secret: it is in listings and audit records.
    let prefix = h.key.split('_').nth(1).unwrap().to_owned();
    let wrong = format!("wg_{prefix}_{}", "A".repeat(43));
    assert_ne!(wrong, h.key);
    for i in 0..10u8 {
        let r = h.send(from_ip(chat(&wrong), [203, 0, 113, i])).await;
        assert_eq!(r.status.as_u16(), 401, "{}", r.text());
    }
    let r = h.send(from_ip(chat(&wrong), [203, 0, 113, 200])).await;
    assert_openai_error(&r, 429, Some("too_many_failed_authentications"));
    let r = h.send(from_ip(chat(&h.key), [203, 0, 113, 201])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h.send(from_ip(chat(&h.key), [203, 0, 113, 5])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn i15_9_only_operator_admins_grant_auditor_and_break_glass() {
    let h = harness("openai", "").await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    let mint = |roles: Value, tenant: &str| {
        json!({"tenant": tenant, "roles": roles, "expires_in": "1h"}).to_string()
    };
    for roles in [
        json!(["auditor"]),
        json!(["break_glass"]),
        json!(["user", "auditor"]),
    ] {
        let r = h
            .send(post_as(
                "/admin/keys",
                &mint(roles.clone(), "acme"),
                Some(&admin),
            ))
            .await;
        assert_openai_error(&r, 403, Some("permission_denied"));
        let r = h
            .send(post_as(
                "/admin/keys",
                &mint(roles.clone(), "acme"),
                Some(&operator),
            ))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{roles}: {}", r.text());
    }
    for roles in [json!(["user"]), json!(["admin"]), json!([])] {
        let r = h
            .send(post_as(
                "/admin/keys",
                &mint(roles.clone(), "acme"),
                Some(&admin),
            ))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{roles}: {}", r.text());
    }
    // A rotation mints a key with the old one's roles: the same rule.
    let (auditor_id, _) = h.key_with_roles("acme", &[Role::Auditor], None).await;
    let path = format!("/admin/keys/{auditor_id}/rotate");
    let r = h.send(post_as(&path, "{}", Some(&admin))).await;
    assert_openai_error(&r, 403, Some("permission_denied"));
    let r = h.send(post_as(&path, "{}", Some(&operator))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn i15_9_keys_for_a_tenant_that_does_not_exist_are_refused() {
    let h = harness("openai", "").await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    let r = h
        .send(post_as(
            "/admin/keys",
            &json!({"tenant": "nosuchtenant"}).to_string(),
            Some(&operator),
        ))
        .await;
    let e = assert_openai_error(&r, 400, None);
    assert_eq!(e["param"], "tenant", "{e}");
    let tenants = h
        .send(get_as("/admin/tenants", Some(&operator)))
        .await
        .text();
    assert!(!tenants.contains("nosuchtenant"), "{tenants}");
    // Created on purpose first, it works.
    let r = h
        .send(post_as(
            "/admin/tenants",
            &json!({"name": "nosuchtenant"}).to_string(),
            Some(&operator),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = h
        .send(post_as(
            "/admin/keys",
            &json!({"tenant": "nosuchtenant"}).to_string(),
            Some(&operator),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn i15_metrics_are_for_the_operator_tenant_only() {
    let h = harness("openai", "").await;
    for roles in [&[Role::Admin][..], &[Role::Auditor][..]] {
        let (_, tenant_key) = h.key_with_roles("acme", roles, None).await;
        let r = h.send(get_as("/admin/metrics", Some(&tenant_key))).await;
        assert_openai_error(&r, 403, Some("permission_denied"));
        let (_, operator_key) = h.key_with_roles("operator", roles, None).await;
        let r = h.send(get_as("/admin/metrics", Some(&operator_key))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.text().contains("wardgate_auth_failures_total"));
    }
}

/// A validly signed token whose claims segment is `payload` exactly as given.
fn sign_raw(s: &Signer, payload: &str) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": s.kid});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &s.key, Algorithm::EdDSA).unwrap();
    format!("{input}.{sig}")
}

#[tokio::test]
async fn i15_jwt_a_claim_names_the_operator_tenant_only_where_listed() {
    let signer = ed25519("k1");
    let operator_claims = json!({"iss": ISS, "aud": AUD, "sub": SUBJECT, "tenant": "operator",
        "roles": "admin", "iat": now(), "exp": now() + 600});
    let (h, _dir) = file_issuer_harness(&[&signer], "\"EdDSA\"").await;
    let r = h
        .send(get_as(
            "/admin/keys",
            Some(&sign(&signer, &operator_claims)),
        ))
        .await;
    assert_openai_error(&r, 401, Some("invalid_api_key"));
    // Other tenants keep working without a list.
    let r = h.send(chat(&sign(&signer, &claims()))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Listed, the operator tenant is allowed, and tenants not listed are refused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&signer])).unwrap();
    let h = jwt_harness(&format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"EdDSA\"]\n\
         jwks_file = \"{}\"\nallowed_tenants = [\"operator\"]\n",
        path.display()
    ))
    .await;
    let r = h
        .send(get_as(
            "/admin/keys",
            Some(&sign(&signer, &operator_claims)),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h.send(chat(&sign(&signer, &claims()))).await;
    assert_openai_error(&r, 401, Some("invalid_api_key"));
}

#[tokio::test]
async fn i15_jwt_tokens_with_repeated_claims_are_refused() {
    let signer = ed25519("k1");
    let (h, _dir) = file_issuer_harness(&[&signer], "\"EdDSA\"").await;
    let (iat, exp) = (now(), now() + 600);
    let clean = format!(
        r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"{SUBJECT}","tenant":"acme","iat":{iat},"exp":{exp}}}"#
    );
    let r = h.send(chat(&sign_raw(&signer, &clean))).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the raw signer works: {}",
        r.text()
    );
    for payload in [
        format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"{SUBJECT}","tenant":"acme","tenant":"globex","iat":{iat},"exp":{exp}}}"#
        ),
        format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"{SUBJECT}","sub":"mallory","tenant":"acme","iat":{iat},"exp":{exp}}}"#
        ),
        format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"{SUBJECT}","tenant":"acme","roles":{{"a":1,"a":2}},"iat":{iat},"exp":{exp}}}"#
        ),
    ] {
        let r = h.send(chat(&sign_raw(&signer, &payload))).await;
        assert_openai_error(&r, 401, Some("invalid_api_key"));
    }
}

#[test]
fn i15_config_values_past_their_maximum_name_the_key_and_the_bound() {
    use wardgate_gateway::config::{Config, parse_toml};
    let cases = [
        ("[engine]\nslots = 4294967295\n", "engine.slots", "256"),
        (
            "[auth]\nkey_cache_ttl = \"100000000d\"\n",
            "auth.key_cache_ttl",
            "5m",
        ),
        (
            "[circuit_breaker]\ncooldown = \"3650d\"\n",
            "circuit_breaker.cooldown",
            "1h",
        ),
        (
            "[server]\nbody_read_timeout = \"30d\"\n",
            "server.body_read_timeout",
            "1h",
        ),
        (
            "[server]\nheader_read_timeout = \"1d\"\n",
            "server.header_read_timeout",
            "5m",
        ),
        (
            "[server]\nrequest_timeout = \"400d\"\n",
            "server.request_timeout",
            "1h",
        ),
        (
            "[limits]\nmax_body_bytes = 1099511627776\n",
            "limits.max_body_bytes",
            "268435456",
        ),
        (
            "[engine]\nslot_ctx = 4294967295\n",
            "engine.slot_ctx",
            "1048576",
        ),
        ("[engine]\nqueue = 1000000000\n", "engine.queue", "100000"),
        (
            "[engine]\nmemory_budget_mib = 100000000000\n",
            "engine.memory_budget_mib",
            "16777216",
        ),
        (
            "[rate_limit]\nrequests_per_minute = 4294967295\n",
            "rate_limit.requests_per_minute",
            "1000000",
        ),
        (
            "[auth]\nlockout_duration = \"1000d\"\n",
            "auth.lockout_duration",
            "1day",
        ),
        (
            "[audit]\ncheckpoint_every = 100000000000\n",
            "audit.checkpoint_every",
            "10000000",
        ),
    ];
    for (toml, key, max) in cases {
        let raw = parse_toml(toml).unwrap();
        let err = Config::from_raw(raw, &|_| None)
            .err()
            .unwrap_or_else(|| panic!("{key}: accepted"));
        assert_eq!(err.key, key, "{err}");
        assert!(
            err.reason.contains("at most") && err.reason.contains(max),
            "{key}: {err}"
        );
    }
    // The defaults and the values at their maximum pass.
    let ok = "[engine]\nslots = 256\n[auth]\nkey_cache_ttl = \"5m\"\n[circuit_breaker]\ncooldown = \"1h\"\n";
    Config::from_raw(parse_toml(ok).unwrap(), &|_| None).unwrap();
    Config::from_raw(parse_toml("").unwrap(), &|_| None).unwrap();
}

// ==== issue 15, C: items 4, 10, low: forged placeholders, low: fixed text redacted as PHI ====

/// A model server that takes `delay` before its first token (streams send their headers
/// first), so a request is still waiting on it when its client leaves.
fn slow_mock(delay: Duration) -> MockConfig {
    MockConfig {
        first_token_delay: delay,
        ..mock_cfg()
    }
}

/// No request-rate or concurrency limit: 50 requests of one key at once all reach a handler.
const NO_RATE_LIMITS: &str = "[rate_limit]\nrequests_per_minute = 0\nconcurrent_requests = 0\n";

/// Sends one POST with `key` on a fresh connection, waits for `leave`, and closes the
/// connection without reading anything: a client that leaves before the answer.
async fn send_and_leave(
    addr: SocketAddr,
    key: &str,
    body: &str,
    leave: impl std::future::Future<Output = ()>,
) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(raw.as_bytes()).await.unwrap();
    leave.await;
    drop(sock);
}

/// Every request id of `actor`'s events, each with its events in log order.
fn requests_of(
    events: &[AuditEvent],
    actor: &str,
) -> std::collections::BTreeMap<String, Vec<AuditEvent>> {
    let mut out: std::collections::BTreeMap<String, Vec<AuditEvent>> = Default::default();
    for e in events.iter().filter(|e| e.actor_id == actor) {
        if let Some(id) = &e.request_id {
            out.entry(id.clone()).or_default().push(e.clone());
        }
    }
    out
}

/// How 50 clients of one key leave.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// Once every request waits on the backend.
    WhileWaiting,
    /// This long after sending: the server may not even have read the request by then.
    After(Duration),
}

/// 50 requests of `key` at once, each client leaving as `leave` says.
async fn clients_leave(h: &Harness, addr: SocketAddr, key: &str, body: &str, leave: Leave) {
    const N: u64 = 50;
    let before = h.mocks[0].stats().inference_requests;
    let (go, gone) = tokio::sync::watch::channel(false);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..N {
        let (key, body, mut gone) = (key.to_owned(), body.to_owned(), gone.clone());
        clients.spawn(async move {
            send_and_leave(addr, &key, &body, async move {
                match leave {
                    Leave::WhileWaiting => drop(gone.wait_for(|v| *v).await),
                    // Leaving at this moment is the case under test, not a wait.
                    Leave::After(d) => tokio::time::sleep(d).await,
                }
            })
            .await
        });
    }
    if let Leave::WhileWaiting = leave {
        eventually(
            Duration::from_secs(10),
            "every request reaches the backend",
            || h.mocks[0].stats().inference_requests >= before + N,
        )
        .await;
        go.send(true).unwrap();
    }
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
}

/// Polls the audit log (bounded) until `actor` has `n` requests with a terminal event;
/// returns the log as it then is.
async fn settled(h: &Harness, actor: &str, n: usize) -> Vec<AuditEvent> {
    let ended = |events: &Vec<AuditEvent>| {
        requests_of(events, actor)
            .values()
            .filter(|evs| evs.iter().any(|e| e.event_type != EventType::RequestStart))
            .count()
    };
    poll_until(
        Duration::from_secs(10),
        || h.audit_events(),
        |events| ended(events) >= n,
    )
    .await
}

/// Each request of `actor` has exactly one terminal event, the last of its events, a
/// `client_abort` with no status (no response was sent), after at most one start.
fn assert_one_abort_each(
    what: &str,
    requests: &std::collections::BTreeMap<String, Vec<AuditEvent>>,
) {
    for (id, evs) in requests {
        let terminal: Vec<&AuditEvent> = evs
            .iter()
            .filter(|e| e.event_type != EventType::RequestStart)
            .collect();
        assert_eq!(
            terminal.len(),
            1,
            "{what}: one terminal event for {id}: {evs:#?}"
        );
        let t = terminal[0];
        assert_eq!(t.event_type, EventType::Request, "{what}: {t:#?}");
        assert_eq!(t.outcome, Some(Outcome::ClientAbort), "{what}: {t:#?}");
        assert_eq!(t.http_status, None, "{what}: no response was sent: {t:#?}");
        // A request dropped before its start committed has the terminal event alone, like
        // any request refused before a backend; one with a start has it first.
        assert!(evs.len() <= 2, "{what}: {evs:#?}");
        assert_eq!(
            evs.last().unwrap().event_type,
            EventType::Request,
            "{what}: {evs:#?}"
        );
    }
}

#[tokio::test]
async fn i15_4_a_client_that_leaves_before_the_answer_leaves_one_terminal_event() {
    // The model server takes 10 s to answer: every request below is still waiting (on its
    // body, the audit log's start commit, or the backend) when its client leaves.
    let h =
        Harness::single_with("openai", slow_mock(Duration::from_secs(10)), NO_RATE_LIMITS).await;
    let (logs, _guard) = capture_logs();
    let (addr, _server) = serve_on_socket(&h).await;
    let plain = chat_body("tiny", "hello").to_string();
    let mut streamed = chat_body("tiny", "hello");
    streamed["stream"] = json!(true);
    let streamed = streamed.to_string();
    // One key per timing, so each timing's requests can be told apart in the log. The clients
    // that leave at once go first: by the time the others are done, the server has seen
    // every one of them go.
    let mut timings = Vec::new();
    for (what, body, leave) in [
        (
            "closed right after sending",
            &plain,
            Leave::After(Duration::ZERO),
        ),
        (
            "stream closed in its first milliseconds",
            &streamed,
            Leave::After(Duration::from_millis(3)),
        ),
        (
            "closed while waiting on the backend",
            &plain,
            Leave::WhileWaiting,
        ),
        (
            "stream closed while waiting for its first token",
            &streamed,
            Leave::WhileWaiting,
        ),
    ] {
        let (id, key) = h.key_for(&[], None).await;
        clients_leave(&h, addr, &key, body, leave).await;
        timings.push((what, id, leave));
    }
    for (what, actor, leave) in &timings {
        let events = match leave {
            // Every one of these reached the backend, so every one has a terminal event.
            Leave::WhileWaiting => settled(&h, actor, 50).await,
            Leave::After(_) => h.audit_events().await,
        };
        let requests = requests_of(&events, actor);
        assert_one_abort_each(what, &requests);
        match leave {
            Leave::WhileWaiting => {
                assert_eq!(requests.len(), 50, "{what}: {requests:#?}");
                assert!(
                    requests
                        .values()
                        .all(|evs| evs[0].event_type == EventType::RequestStart),
                    "{what}: the start committed before the backend call: {requests:#?}"
                );
            }
            Leave::After(_) => {
                // A client that closes before the server has read its request is never seen
                // (hyper reads the end of the connection with the request and drops it); one
                // that closes while the request authenticates has done nothing to audit (its
                // log line says `client_abort`). Every request that authenticated is in the
                // audit log, once.
                let log = logs.text();
                let authenticated = log
                    .lines()
                    .filter(|l| l.contains("wardgate::request") && l.contains(actor.as_str()))
                    .count();
                assert_eq!(requests.len(), authenticated, "{what}: {requests:#?}");
            }
        }
    }
    // The server still serves (the backend answering at once again).
    h.mocks[0].set_config(mock_cfg());
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn i15_4_a_shutdown_closing_a_waiting_request_still_records_its_end() {
    // A request still waiting on the backend at the drain deadline is closed by the server;
    // its terminal event must be in the log before the audit writer stops.
    let h = Harness::single_with(
        "openai",
        slow_mock(Duration::from_secs(5)),
        "[server]\nshutdown_grace = \"300ms\"\n",
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = h.gateway.clone();
    let server = tokio::spawn(async move {
        gateway
            .run(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let body = chat_body("tiny", "hello").to_string();
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        h.key,
        body.len()
    );
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(raw.as_bytes()).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the request reaches the backend",
        || h.mocks[0].stats().inference_requests > 0,
    )
    .await;
    let t = Instant::now();
    stop.send(()).unwrap();
    // `run` returns at the drain deadline, its connections closed, having stopped the audit
    // writer (as `wardgate serve` does).
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("serve returns at the drain deadline")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    let audit = h.state.audit.clone();
    let events = crate::support::stored_events(&audit).await;
    let requests = requests_of(
        &events,
        &events
            .iter()
            .find(|e| e.event_type == EventType::RequestStart)
            .expect("a start")
            .actor_id,
    );
    assert_eq!(requests.len(), 1, "{events:#?}");
    let evs = requests.values().next().unwrap();
    let kinds: Vec<(EventType, Option<Outcome>)> =
        evs.iter().map(|e| (e.event_type, e.outcome)).collect();
    assert_eq!(
        kinds,
        [
            (EventType::RequestStart, None),
            (EventType::Request, Some(Outcome::ClientAbort))
        ],
        "{events:#?}"
    );
    drop(sock);
}

#[tokio::test]
async fn i15_10_a_break_glass_reason_is_stored_without_phi_and_short() {
    let h = harness("openai", "").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let (bg_id, bg) = h
        .key_with_roles("acme", &[Role::BreakGlass], Some(soon))
        .await;
    // Without a reason: refused, and told not to name a patient.
    let r = h.send(chat(&bg)).await;
    let e = assert_openai_error(&r, 403, Some("break_glass_reason_required"));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("Do not name the patient"), "{msg}");
    assert!(msg.contains("x-wardgate-break-glass-reason"), "{msg}");

    // A reason typed in a hurry: a lower-case name after other capitalised words, and more
    // identifiers; long, so the stored copy must be cut.
    let phi = [
        "zelda",
        "quackenbush",
        "00482913",
        "03/14/1931",
        "617-555-0143",
        "zelda.q@example.org",
    ];
    let reason = "Code Blue in ICU, pt zelda quackenbush bed 4, MRN 00482913, DOB 03/14/1931, \
                  call 617-555-0143 or zelda.q@example.org; attending unavailable, consent \
                  impossible, needs history now";
    assert!(reason.chars().count() <= 200);
    let mut req = chat(&bg);
    req.headers_mut()
        .insert("x-wardgate-break-glass-reason", reason.parse().unwrap());
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let e = terminal(&h, &r).await;
    assert_eq!(e.event_type, EventType::BreakGlass);
    assert_eq!(e.actor_id, bg_id);
    let detail = e.detail.clone().expect("the reason is recorded");
    assert!(detail.starts_with("reason: "), "{detail}");
    assert!(detail.contains(" in ICU, pt [PERSON] bed 4, "), "{detail}");
    for v in phi {
        assert!(
            !detail.contains(v),
            "the stored reason holds {v:?}: {detail}"
        );
    }
    assert!(
        detail.chars().count()
            <= "reason: ".len() + wardgate_gateway::middleware::record::STORED_REASON_CHARS,
        "kept short: {} characters: {detail}",
        detail.chars().count()
    );
    assert_audit_clean(&h.audit_events().await, &phi);
}

#[tokio::test]
async fn i15_low_a_placeholder_in_the_prompt_cannot_stand_for_a_real_value() {
    // The client writes the literal `[SSN_1]` and a real SSN; the mock echoes the prompt as
    // the backend saw it.
    for stream in [false, true] {
        let h = harness("openai", "[phi]\nmode = \"deidentify\"\n").await;
        let text = "ref [SSN_1] is not SSN 123-45-6789";
        let mut body = chat_body("tiny", &format!("echo:{text}"));
        body["stream"] = json!(stream);
        let r = h.post("/v1/chat/completions", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        // The backend saw two different placeholders, and no SSN.
        let seen = h.mocks[0].stats().last_body.unwrap()["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!seen.contains("123-45-6789"), "{seen}");
        let tokens: Vec<&str> = seen.split(' ').filter(|w| w.starts_with("[SSN_")).collect();
        assert_eq!(tokens.len(), 2, "{seen}");
        assert_ne!(tokens[0], tokens[1], "one string for two things: {seen}");
        // The answer shows the literal as the client wrote it, and the SSN only where the
        // model echoed its token.
        let answer = if stream {
            r.frames()
                .iter()
                .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
                .collect::<String>()
        } else {
            r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(answer, text, "stream={stream}");
    }
}

#[tokio::test]
async fn i15_low_fixed_error_text_is_not_redacted_but_client_text_is() {
    let h = harness("openai", "").await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    // The gateway's own words: "at most 100 years" reads as written.
    let r = h
        .send(post_as(
            "/admin/keys",
            &json!({"tenant": "acme", "expires_in": "5000y"}).to_string(),
            Some(&admin),
        ))
        .await;
    let e = assert_openai_error(&r, 400, None);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("at most 100 years"), "{msg}");
    assert!(!msg.contains('['), "{msg}");
    // Text from the request in a message is still redacted: a model name that is an SSN...
    let r = h
        .post("/v1/chat/completions", chat_body("123-45-6789", "hi"))
        .await;
    let e = assert_openai_error(&r, 404, Some("model_not_found"));
    let msg = e["message"].as_str().unwrap();
    assert!(
        !msg.contains("123-45-6789") && msg.contains("[SSN]"),
        "{msg}"
    );
    // ... and a parser's detail quoting the body (an unknown variant, a field name).
    let r = h
        .send(post_as(
            "/admin/keys",
            &json!({"tenant": "acme", "ssn 123-45-6789": true}).to_string(),
            Some(&admin),
        ))
        .await;
    let e = assert_openai_error(&r, 400, None);
    let msg = e["message"].as_str().unwrap();
    assert!(
        !msg.contains("123-45-6789") && msg.contains("[SSN]"),
        "{msg}"
    );
}

#[tokio::test]
async fn i15_4_a_handler_that_panics_ends_as_an_error_not_as_a_client_abort() {
    // The guard that ends a dropped request must tell a panic (the client gets a 500) from a
    // client that left.
    let h = harness("openai", "").await;
    let app = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        )
        .layer(
            tower::ServiceBuilder::new()
                .layer(tower_http::catch_panic::CatchPanicLayer::new())
                .layer(axum::middleware::from_fn_with_state(
                    h.state.clone(),
                    wardgate_gateway::middleware::record::observe,
                )),
        )
        .with_state(());
    let r = crate::support::send_to(app, get_as("/boom", None)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let events = h.audit_events().await;
    let boom: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.route.as_deref() == Some("/boom"))
        .collect();
    assert_eq!(boom.len(), 1, "{events:#?}");
    assert_eq!(boom[0].outcome, Some(Outcome::Error), "{:#?}", boom[0]);
    assert_eq!(boom[0].http_status, Some(500));
    assert_eq!(boom[0].deny_reason.as_deref(), Some("panic"));
}

// ==== issue 15, B1: items 2, 3, 5, 11 (second half) ====

/// Item 2: the number of JSON values is bounded before anything is parsed, wherever they
/// are (here in a field no endpoint reads, which serde would skip at any count).
#[tokio::test]
async fn i15_2_too_many_json_values_are_refused_before_parsing() {
    let h = harness("ollama", "[limits]\nmax_json_values = 1000\n").await;
    let many = vec![0; 2_000];
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "x": many}),
        ),
        (
            "/api/chat",
            json!({"model": "tiny", "stream": false,
                   "messages": [{"role": "user", "content": "hi"}], "tools": many}),
        ),
    ] {
        let r = h.post(path, body).await;
        assert_front_error(path, &r, 400, None);
        assert!(r.text().contains("limits.max_json_values"), "{}", r.text());
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
    // Under the bound, the same shape is served.
    let r = h
        .post(
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "x": vec![0; 500]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Item 2: schema-like fields travel as the client wrote them (raw JSON, no tree): the
/// upstream sees the same tools, `tool_choice` and schema, large and deep ones included.
#[tokio::test]
async fn i15_2_raw_fields_are_forwarded_as_written() {
    for kind in KINDS {
        let h = harness(kind, "").await;
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(100),
            "{}".to_owned() + &"}".repeat(100)
        );
        let params: Value = serde_json::from_str(&format!(
            r#"{{"type":"object","properties":{{"x":{{"type":"string","enum":["é","\u00e9"]}}}},"deep":{deep}}}"#
        ))
        .unwrap();
        let tools =
            json!([{"type": "function", "function": {"name": "lookup", "parameters": params}}]);
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 1e3}}});
        let body = json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        });
        let r = h.post("/v1/chat/completions", body).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        let seen = h.mocks[0].stats().last_body.unwrap();
        assert_eq!(seen["tools"], tools, "{kind}");
        match kind {
            "openai" => {
                assert_eq!(seen["response_format"]["json_schema"]["schema"], schema);
                assert_eq!(seen["tool_choice"]["function"]["name"], "lookup");
            }
            _ => assert_eq!(seen["format"], schema),
        }
    }
}

const I15_PHI: [&str; 2] = ["John Smith", "123-45-6789"];
const I15_NOTE: &str = "Patient John Smith SSN 123-45-6789";

/// Every field the fronts forward besides message text, each carrying PHI: what it is, the
/// path, the body (with `marker` in the prompt, to tell this request at the upstream).
fn i15_phi_fields(marker: &str) -> Vec<(&'static str, &'static str, Value)> {
    let n = I15_NOTE;
    let msgs = json!([{"role": "user", "content": marker}]);
    let tools = |f: Value| json!([{"type": "function", "function": f}]);
    let plain = json!({"type": "object", "properties": {"q": {"type": "string"}}});
    let chat = |extra: Value| {
        let mut b = json!({"model": "tiny", "messages": msgs});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let ollama = |extra: Value| {
        let mut b = chat(extra);
        b["stream"] = json!(false);
        b
    };
    let generate = |extra: Value| {
        let mut b = json!({"model": "tiny", "prompt": marker, "stream": false});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let schema =
        json!({"type": "object", "properties": {"who": {"type": "string", "description": n}}});
    let schema_key = json!({"type": "object", "properties": {n: {"type": "string"}}});
    let schema_enum = json!({"type": "object", "properties": {"who": {"enum": [n]}}});
    vec![
        (
            "openai tools[].function.description",
            "/v1/chat/completions",
            chat(
                json!({"tools": tools(json!({"name": "f", "description": n, "parameters": plain}))}),
            ),
        ),
        (
            "openai tools parameter description",
            "/v1/chat/completions",
            chat(json!({"tools": tools(json!({"name": "f", "parameters": schema}))})),
        ),
        (
            "openai tools parameter enum",
            "/v1/chat/completions",
            chat(json!({"tools": tools(json!({"name": "f", "parameters": schema_enum}))})),
        ),
        (
            "openai tools property name",
            "/v1/chat/completions",
            chat(json!({"tools": tools(json!({"name": "f", "parameters": schema_key}))})),
        ),
        (
            "openai tool_choice",
            "/v1/chat/completions",
            chat(
                json!({"tools": tools(json!({"name": "f", "parameters": plain})),
                        "tool_choice": {"type": "function", "function": {"name": n}}}),
            ),
        ),
        (
            "openai stop",
            "/v1/chat/completions",
            chat(json!({"stop": [n]})),
        ),
        (
            "openai response_format schema",
            "/v1/chat/completions",
            chat(json!({"response_format": {"type": "json_schema",
                        "json_schema": {"name": "s", "schema": schema}}})),
        ),
        (
            // Found by the black-box attack after the first fixes: the schema's name (a
            // name may hold only letters, digits, `_` and `-`, which an SSN is).
            "openai response_format schema name",
            "/v1/chat/completions",
            chat(json!({"response_format": {"type": "json_schema",
                        "json_schema": {"name": "123-45-6789", "schema": plain}}})),
        ),
        (
            "openai assistant tool call",
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                  "function": {"name": "f", "arguments": json!({"who": n}).to_string()}}]},
                {"role": "tool", "tool_call_id": "c1", "content": n},
                {"role": "user", "content": marker}]}),
        ),
        (
            "openai completions stop",
            "/v1/completions",
            json!({"model": "tiny", "prompt": marker, "stop": [n]}),
        ),
        (
            "ollama tools",
            "/api/chat",
            ollama(
                json!({"tools": tools(json!({"name": "f", "description": n, "parameters": schema}))}),
            ),
        ),
        (
            "ollama format",
            "/api/chat",
            ollama(json!({"format": schema_key})),
        ),
        (
            "ollama options.stop",
            "/api/chat",
            ollama(json!({"options": {"stop": [n]}})),
        ),
        (
            "ollama generate format",
            "/api/generate",
            generate(json!({"format": schema_enum})),
        ),
        (
            "ollama generate options.stop",
            "/api/generate",
            generate(json!({"options": {"stop": [n]}})),
        ),
    ]
}

/// Item 3: under `deidentify` no forwarded field carries PHI to the upstream, whichever
/// protocol the upstream speaks; under `block` each is refused.
#[tokio::test]
async fn i15_3_phi_in_every_forwarded_field() {
    for kind in KINDS {
        let h = harness(kind, "[phi]\nmode = \"deidentify\"\n").await;
        for i in 0..i15_phi_fields("m").len() {
            let marker = format!("case-{i}-marker");
            let (what, path, body) = i15_phi_fields(&marker).swap_remove(i);
            let r = h.post(path, body).await;
            assert_eq!(r.status, StatusCode::OK, "{kind} {what}: {}", r.text());
            let seen = h.mocks[0].stats().last_body.unwrap().to_string();
            assert!(
                seen.contains(&marker),
                "{kind} {what}: not this request: {seen}"
            );
            for v in I15_PHI {
                assert!(
                    !seen.contains(v),
                    "{kind} {what}: the upstream saw {v:?}: {seen}"
                );
            }
        }
        let h = harness(kind, "[phi]\nmode = \"block\"\n").await;
        for (what, path, body) in i15_phi_fields("m") {
            let r = h.post(path, body).await;
            assert_front_error(path, &r, 400, None);
            assert_no_leak(&r, &I15_PHI);
            let _ = what;
        }
        assert_eq!(h.mocks[0].stats().inference_requests, 0, "{kind}");
    }
}

/// Item 3: a tool name that carried PHI is de-identified on the way out and restored in the
/// answer's tool call (the mock calls the first tool by name).
#[tokio::test]
async fn i15_3_tool_names_are_restored_in_the_answer() {
    let name = "notify 123-45-6789";
    let tools =
        json!([{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}]);
    for kind in KINDS {
        let h = harness(kind, "[phi]\nmode = \"deidentify\"\n").await;
        let r = h
            .post(
                "/v1/chat/completions",
                json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": tools}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        let seen = h.mocks[0].stats().last_body.unwrap().to_string();
        assert!(!seen.contains("123-45-6789"), "{kind}: {seen}");
        let v = r.json();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], name,
            "{kind}: {v}"
        );
        let r = h
            .post(
                "/api/chat",
                json!({"model": "tiny", "stream": false, "messages": [{"role": "user", "content": "hi"}], "tools": tools}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        let v = r.json();
        assert_eq!(
            v["message"]["tool_calls"][0]["function"]["name"], name,
            "{kind}: {v}"
        );
    }
}

/// Item 3: images cannot be scanned: refused under `block` and `deidentify` unless the rule
/// says `allow_images`; passed with `off`.
#[tokio::test]
async fn i15_3_images_are_refused_unless_the_rule_allows_them() {
    let openai = json!({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let ollama = json!({"model": "tiny", "stream": false, "messages": [
        {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}]});
    for (config, expect) in [
        ("[phi]\nmode = \"block\"\n", 400),
        ("[phi]\nmode = \"deidentify\"\n", 400),
        ("[phi]\nmode = \"deidentify\"\nallow_images = true\n", 200),
        (
            "[phi]\nmode = \"block\"\n[[phi.models]]\nname = \"tiny\"\nmode = \"block\"\nallow_images = true\n",
            200,
        ),
        ("", 200),
    ] {
        let h = harness("ollama", config).await;
        for (path, body) in [("/v1/chat/completions", &openai), ("/api/chat", &ollama)] {
            let r = h.post(path, body.clone()).await;
            assert_eq!(r.status.as_u16(), expect, "{config} {path}: {}", r.text());
            if expect == 400 {
                assert_front_error(path, &r, 400, None);
                assert!(r.text().contains("phi.allow_images"), "{}", r.text());
            }
        }
    }
}

/// A gateway over the embedded engine with a tiny random-weight model (`tiny:test`).
async fn i15_embedded(dir: &std::path::Path, engine_toml: &str) -> (axum::Router, String) {
    crate::support::import_tiny_model(dir);
    let toml = format!(
        "[engine]\nmodels_dir = \"{}\"\nthreads = 1\nslot_ctx = 256\n{engine_toml}\n",
        dir.join("store").display()
    );
    let h = Harness::from_toml(&toml, vec![]).await;
    wardgate_gateway::app::refresh_backends(&h.state).await;
    (h.app, h.key)
}

/// `n` optional string properties: llama.cpp's converter recurses once per optional
/// property and its output grows with the square of their number.
fn i15_wide_schema(n: usize) -> Value {
    let props: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    json!({"type": "object", "properties": props})
}

fn i15_small_chat(format: Option<Value>) -> Value {
    let mut b = json!({"model": "tiny:test", "stream": false,
        "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 2}});
    if let Some(f) = format {
        b["format"] = f;
    }
    b
}

/// Item 5: the 5,000-property schema that overflowed a worker's stack is a 400 naming the
/// bound, and the engine keeps serving, on both fronts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_5_a_5000_property_schema_is_refused_and_the_process_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = i15_embedded(dir.path(), "").await;
    let schema = i15_wide_schema(5_000);
    assert!(schema.to_string().len() > 100_000);
    let openai = json!({"model": "tiny:test", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}});
    for (path, body) in [
        ("/api/chat", i15_small_chat(Some(schema.clone()))),
        ("/v1/chat/completions", openai),
    ] {
        let r = send_to(&app, post_as(path, &body.to_string(), Some(&key))).await;
        assert_front_error(path, &r, 400, None);
        assert!(r.text().contains("engine.schema_max_"), "{}", r.text());
    }
    let r = send_to(
        &app,
        post_as("/api/chat", &i15_small_chat(None).to_string(), Some(&key)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The largest schema the default bounds allow converts and is served.
    let r = send_to(
        &app,
        post_as(
            "/api/chat",
            &i15_small_chat(Some(i15_wide_schema(250))).to_string(),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Item 5: a slow conversion runs off the async workers: `/health` answers within 100 ms
/// throughout, on a runtime with a single worker, and an overrun is a 400 naming the limit.
#[tokio::test(flavor = "current_thread")]
async fn i15_5_health_answers_while_a_large_schema_converts() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = i15_embedded(
        dir.path(),
        "schema_max_properties = 1500\nschema_max_bytes = 1048576\nschema_timeout = \"1500ms\"\n",
    )
    .await;
    let body = i15_small_chat(Some(i15_wide_schema(1_500))).to_string();
    let big = {
        let app = app.clone();
        let key = key.clone();
        tokio::spawn(async move { send_to(&app, post_as("/api/chat", &body, Some(&key))).await })
    };
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while !big.is_finished() && started.elapsed() < Duration::from_secs(10) {
        let t = Instant::now();
        let r = send_to(&app, get_as("/health", None)).await;
        assert_eq!(r.status, StatusCode::OK);
        worst = worst.max(t.elapsed());
        probes += 1;
        // The probes' pace: /health is sampled throughout the conversion, not waited on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = big.await.unwrap();
    assert!(
        probes >= 5,
        "the conversion ended too soon to measure: {probes} probes"
    );
    assert!(
        worst < Duration::from_millis(100),
        "/health took {worst:?} during the conversion"
    );
    // It converted in time or was refused (400: the engine names `engine.schema_timeout`);
    // either way not a 5xx, and the process serves on.
    if r.status != StatusCode::OK {
        assert_front_error("/api/chat", &r, 400, None);
    }
    let r = send_to(
        &app,
        post_as("/api/chat", &i15_small_chat(None).to_string(), Some(&key)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Item 11: a `pattern` llama.cpp's converter would silently not enforce (unanchored, or
/// regex features it lacks) is refused with 400 naming the keyword, never quoting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_11_unsupported_patterns_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = i15_embedded(dir.path(), "").await;
    for pattern in [
        "Jane Doe 987-65-4321",
        "^\\d{3}-\\d{2}$",
        "^(?=a)a$",
        "[0-9]+",
    ] {
        let format =
            json!({"type": "object", "properties": {"id": {"type": "string", "pattern": pattern}}});
        let r = send_to(
            &app,
            post_as(
                "/api/chat",
                &i15_small_chat(Some(format)).to_string(),
                Some(&key),
            ),
        )
        .await;
        assert_front_error("/api/chat", &r, 400, None);
        assert!(r.text().contains("`pattern`"), "{}", r.text());
        assert!(
            !r.text().contains("Jane") && !r.text().contains("987-65"),
            "{}",
            r.text()
        );
    }
    let format = json!({"type": "object", "properties": {"id": {"type": "string", "pattern": "^[0-9]{3}$"}}});
    let r = send_to(
        &app,
        post_as(
            "/api/chat",
            &i15_small_chat(Some(format)).to_string(),
            Some(&key),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

// ==== issue 15, B2: items 6, 11 (first half), 12, 13, low (keep_alive validation) ====

/// A tiny random-weight model in a fresh store under `dir`, as `tiny:test`; returns the engine
/// settings' TOML for it.
fn i15_tiny_store(dir: &std::path::Path) -> String {
    let file = dir.join("tiny.gguf");
    wardgate_engine::gguf::write_tiny_llama(
        std::fs::File::create(&file).unwrap(),
        &wardgate_engine::gguf::TinySpec::default(),
    )
    .unwrap();
    format!(
        "[engine]\nmodels_dir = \"{}\"\nslots = 2\nslot_ctx = 256\nthreads = 1\n",
        dir.join("store").display()
    )
}

/// `wardgate llm` over the real engine with the tiny model, on a loopback socket.
async fn i15_llm(dir: &std::path::Path) -> (SocketAddr, axum::Router) {
    let toml = format!(
        // As `wardgate llm` runs: no per-key limits (its one client, the gateway, has them).
        "{}[rate_limit]\nrequests_per_minute = 0\nconcurrent_requests = 0\n",
        i15_tiny_store(dir)
    );
    let config = wardgate_gateway::config::Config::from_raw(
        wardgate_gateway::config::parse_toml(&toml).unwrap(),
        &|_| None,
    )
    .unwrap();
    crate::support::import_tiny_model(dir);
    let service = wardgate_gateway::app::LlmService::build(
        config,
        wardgate_gateway::app::Stores::in_memory().await.unwrap(),
        vec![SigningKey::new(LLM_SECRET).unwrap()],
    )
    .await
    .unwrap();
    wardgate_gateway::app::refresh_backends(&service.state()).await;
    let app = service.router();
    (spawn_app(app.clone()).await, app)
}

/// The gateway in front of the `wardgate llm` at `addr` (signed hop), model `tiny`; the
/// harness key is tenant `acme`'s.
async fn i15_gateway_over_llm(
    addr: SocketAddr,
) -> (Harness, Arc<wardgate_backends::BackendHandle>) {
    use wardgate_backends::{
        BackendHandle, BackendKind, BreakerConfig, Catalog, HttpBackend, HttpBackendConfig,
        ModelEntry, Pool,
    };
    let mut hc = HttpBackendConfig::new("b0", BackendKind::Ollama, format!("http://{addr}"));
    hc.signer = Some(SigningKey::new(LLM_SECRET).unwrap());
    let handle = BackendHandle::new(
        Arc::new(HttpBackend::new(hc).unwrap()),
        BreakerConfig::default(),
    );
    let catalog = Catalog::new(
        vec![Pool::single(handle.clone())],
        &[ModelEntry {
            name: "tiny".into(),
            aliases: vec![],
            chain: vec![("b0".into(), "tiny:test".into())],
            context_window: 256,
        }],
        4096,
        0,
    )
    .unwrap();
    let toml = format!(
        "[[backends]]\nname = \"b0\"\nkind = \"ollama\"\nurl = \"http://{addr}\"\n\
         [[models]]\nname = \"tiny\"\nchain = [{{ backend = \"b0\", model = \"tiny:test\" }}]\n"
    );
    let config = wardgate_gateway::config::Config::from_raw(
        wardgate_gateway::config::parse_toml(&toml).unwrap(),
        &|_| None,
    )
    .unwrap();
    let h = Harness::build_over(config, catalog).await;
    (h, handle)
}

/// Item 6: `keep_alive` as a huge, negative or absurd number or string never panics
/// `wardgate llm`: each is clamped, pins, or is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_6_keep_alive_never_panics_the_llm_service() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = i15_llm(dir.path()).await;
    let cases = [
        (json!(1e308), 200),
        (json!(-1e308), 200),
        (json!(1.5), 200),
        (json!("99999999999h"), 200),
        (json!("99999999999999999999999999h"), 200),
        (json!("1e308"), 200),
        (json!("NaN"), 400),
        (json!("soon"), 400),
    ];
    for (i, (keep, status)) in cases.iter().enumerate() {
        let body = json!({"model": "tiny:test", "prompt": "hello", "stream": false,
            "options": {"num_predict": 2}, "keep_alive": keep})
        .to_string();
        let r = send_to(
            &app,
            signed(
                "/api/generate",
                &body,
                unix_now(),
                &format!("i15-6-keep-alive-nonce-{i}"),
            ),
        )
        .await;
        assert_eq!(r.status.as_u16(), *status, "{keep}: {}", r.text());
        if *status == 400 {
            let m = assert_ollama_error(&r, 400);
            assert!(m.contains("keep_alive"), "{m}");
        }
    }
}

/// Item 6: a schema llama.cpp cannot take (a repetition over its limit) is the client's
/// mistake end to end: 400 in the client's front's shape without the upstream's words, five
/// of them leave the breaker closed, and another tenant is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_6_refused_grammar_is_400_and_does_not_open_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = i15_llm(dir.path()).await;
    let (h, handle) = i15_gateway_over_llm(addr).await;
    let schema = json!({"type": "array", "items": {"type": "integer"}, "minItems": 100000});
    for i in 0..5 {
        let (path, body) = if i % 2 == 0 {
            (
                "/api/chat",
                json!({"model": "tiny", "stream": false, "format": schema,
                    "messages": [{"role": "user", "content": "list"}]}),
            )
        } else {
            (
                "/v1/chat/completions",
                json!({"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "list"}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}),
            )
        };
        let r = h.post(path, body).await;
        assert_front_error(path, &r, 400, None);
        assert!(
            !r.text().contains("repetitions"),
            "upstream words: {}",
            r.text()
        );
        assert!(!handle.breaker.is_open(), "request {i} opened the breaker");
    }
    let (_, other) = h.key_with_roles("globex", &[Role::User], None).await;
    let r = h
        .send(post_as(
            "/api/chat",
            &json!({"model": "tiny", "stream": false, "options": {"num_predict": 2},
                "messages": [{"role": "user", "content": "hello"}]})
            .to_string(),
            Some(&other),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!handle.breaker.is_open());
}

/// Item 6: the gateway passes an upstream 400 through as a 400 (not 502), with its own fixed
/// words, and does not charge the breaker.
#[tokio::test]
async fn i15_6_upstream_400_is_a_400_and_not_a_breaker_failure() {
    for kind in KINDS {
        let cfg = MockConfig {
            fail_status: Some(400),
            ..mock_cfg()
        };
        let h = Harness::single_with(kind, cfg, "").await;
        for path in ["/api/chat", "/v1/chat/completions"] {
            for _ in 0..4 {
                let body = if path == "/api/chat" {
                    ollama_chat("tiny", "hello")
                } else {
                    chat_body("tiny", "hello")
                };
                let r = h.post(path, body).await;
                assert_front_error(path, &r, 400, None);
            }
        }
        let route = h.state.catalog.resolve("tiny").unwrap();
        let replica = route.chain[0].pool.replicas().next().unwrap();
        assert!(!replica.breaker.is_open(), "{kind}");
    }
}

/// Item 13 (and the low item): a non-operator's `keep_alive` is validated (400 in the Ollama
/// shape for a value the engine would refuse), then never reaches the backend (`0` would unload
/// the shared model, `-1` pin it); an operator's does.
#[tokio::test]
async fn i15_13_keep_alive_from_non_operators_does_not_reach_the_backend() {
    let h = harness("ollama", "").await;
    let (_, admin) = h
        .key_with_roles("acme", &[Role::User, Role::Admin], None)
        .await;
    let (_, operator) = h
        .key_with_roles("operator", &[Role::User, Role::Admin], None)
        .await;
    let send = |key: String, keep: Value, path: &'static str| {
        let h = &h;
        async move {
            let mut body = if path == "/api/chat" {
                ollama_chat("tiny", "hello")
            } else {
                json!({"model": "tiny", "prompt": "hello", "stream": false})
            };
            body["keep_alive"] = keep;
            h.send(post_as(path, &body.to_string(), Some(&key))).await
        }
    };
    for key in [h.key.clone(), admin.clone()] {
        for keep in [
            json!(0),
            json!(-1),
            json!("0s"),
            json!("-1m"),
            json!("1h"),
            json!(1e308),
        ] {
            for path in ["/api/chat", "/api/generate"] {
                let r = send(key.clone(), keep.clone(), path).await;
                assert_eq!(r.status, StatusCode::OK, "{keep}: {}", r.text());
                let body = h.mocks[0].stats().last_body.unwrap();
                assert!(
                    body.get("keep_alive").is_none(),
                    "{keep} from a non-operator reached the backend: {body}"
                );
            }
        }
    }
    for keep in [json!(0), json!(-1), json!("10m")] {
        let r = send(operator.clone(), keep.clone(), "/api/chat").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(h.mocks[0].stats().last_body.unwrap()["keep_alive"], keep);
    }
    // The low item: a value the engine cannot parse is a 400 at the gateway, for everyone.
    let before = h.mocks[0].stats().inference_requests;
    for keep in [json!("soon"), json!("5 minutes"), json!(true), json!("NaN")] {
        for key in [h.key.clone(), operator.clone()] {
            let r = send(key, keep.clone(), "/api/chat").await;
            let m = assert_ollama_error(&r, 400);
            assert!(m.contains("keep_alive"), "{m}");
        }
    }
    assert_eq!(h.mocks[0].stats().inference_requests, before);
    // A load acknowledgement (no messages) with keep_alive 0 is not an unload for a client.
    let r = h
        .post(
            "/api/chat",
            json!({"model": "tiny", "messages": [], "keep_alive": 0}),
        )
        .await;
    assert_eq!(r.json()["done_reason"], "load", "{}", r.text());
}

/// Item 13 with a bound: `limits.max_client_keep_alive` lets clients lengthen the time up to
/// it (clamped), still never unload or pin.
#[tokio::test]
async fn i15_13_client_keep_alive_is_clamped_to_the_configured_bound() {
    let h = harness("ollama", "[limits]\nmax_client_keep_alive = \"10m\"\n").await;
    for (keep, sent) in [
        (json!("1h"), Some(json!(600.0))),
        (json!(30), Some(json!(30.0))),
        (json!(0), None),
        (json!(-1), None),
    ] {
        let mut body = ollama_chat("tiny", "hello");
        body["keep_alive"] = keep.clone();
        let r = h.post("/api/chat", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let last = h.mocks[0].stats().last_body.unwrap();
        assert_eq!(last.get("keep_alive").cloned(), sent, "{keep}: {last}");
    }
}

/// Item 13 on the in-process engine: a non-operator's `keep_alive: 0` leaves the shared model
/// loaded, and `-1` does not pin it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_13_embedded_model_stays_loaded_after_a_clients_keep_alive_0() {
    let dir = tempfile::tempdir().unwrap();
    let toml = i15_tiny_store(dir.path());
    let config = wardgate_gateway::config::Config::from_raw(
        wardgate_gateway::config::parse_toml(&toml).unwrap(),
        &|_| None,
    )
    .unwrap();
    crate::support::import_tiny_model(dir.path());
    let stores = wardgate_gateway::app::Stores::in_memory().await.unwrap();
    let h = Harness::build(config, stores, None, vec![]).await;
    let engine = h.state.engine.clone().unwrap();
    wardgate_gateway::app::refresh_backends(&h.state).await;
    let key = h
        .store
        .create_key(wardgate_store::NewKeySpec {
            tenant: "acme".into(),
            models: vec![],
            roles: vec![Role::User, Role::Admin],
            expires_at: None,
            label: None,
        })
        .await
        .unwrap()
        .secret
        .expose()
        .clone();
    let app = h.app.clone();
    for keep in [json!(0), json!(-1)] {
        let body = json!({"model": "tiny:test", "prompt": "hello", "stream": false,
            "options": {"num_predict": 2}, "keep_alive": keep});
        let r = crate::support::send_to(
            app.clone(),
            post_as("/api/generate", &body.to_string(), Some(&key)),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let running = engine.running();
        assert_eq!(running.len(), 1, "{keep} unloaded the shared model");
        assert!(running[0].expires_at().is_some(), "{keep} pinned the model");
    }
}

/// Item 12: the gateway tells `wardgate llm` whose request it is (the tenant, in the signed
/// query), and the hop still verifies.
#[tokio::test]
async fn i15_12_the_gateway_sends_the_tenant_as_the_fairness_key() {
    let mock = mocks(vec![mock_cfg()]).await;
    use wardgate_backends::{Backend, BackendKind, HttpBackend, HttpBackendConfig};
    let mut hc = HttpBackendConfig::new("b0", BackendKind::Ollama, mock[0].url());
    hc.signer = Some(SigningKey::new(LLM_SECRET).unwrap());
    let backend = HttpBackend::new(hc).unwrap();
    let canonical = wardgate_api::canonical::ChatRequest {
        model: "tiny".into(),
        messages: vec![wardgate_api::canonical::Message::new(
            wardgate_api::canonical::Role::User,
            "hello",
        )],
        sampling: Default::default(),
        format: Default::default(),
        tools: vec![],
        tool_choice: None,
        parallel_tool_calls: None,
        keep_alive: None,
        fairness: Some("acme".into()),
    };
    let stream = backend.chat(&canonical).await.unwrap();
    drop(stream);
    let path = mock[0].stats().last_path.unwrap();
    assert_eq!(path, "/api/chat?fairness=61636d65", "{path}");
}

/// Set in the child process of [`i15_11_llama_cpp_stderr_passes_the_redactor`].
const I15_CHILD: &str = "WARDGATE_I15_11_CHILD";

/// Item 11 (first half): what llama.cpp prints to stderr itself (the grammar it refused, the
/// schema converter's warnings, which quote `const` and `pattern` values) goes through the
/// redacting logger. The test runs itself as a child with the binary's logging (the redacting
/// writer over stderr) and reads the child's whole stderr.
#[test]
fn i15_11_llama_cpp_stderr_passes_the_redactor() {
    if std::env::var_os(I15_CHILD).is_some() {
        i15_11_child();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "attack_cases::i15_11_llama_cpp_stderr_passes_the_redactor",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(I15_CHILD, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed:\n{err}");
    assert!(
        err.contains("llama.cpp:") && err.contains("error parsing grammar"),
        "llama.cpp's own stderr lines were not routed to the log:\n{err}"
    );
    assert!(
        err.contains("JSON schema conversion was incomplete"),
        "{err}"
    );
    // (The detector decides what is PHI: a 9xx "SSN" is not one to it, so none is used here.)
    for phi in ["123-45-6789", "234-56-7891", "John Smith", "Jane Doe"] {
        assert!(!err.contains(phi), "stderr holds {phi}:\n{err}");
    }
}

fn i15_11_child() {
    use wardgate_engine::llama_cpp_2;
    let sub = tracing_subscriber::fmt()
        .with_writer(wardgate_gateway::redact_log::RedactingMakeWriter::new(
            std::io::stderr,
        ))
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(sub).unwrap();
    let backend = wardgate_engine::engine::llama_backend().unwrap();
    // The converter warns about a pattern it cannot enforce, quoting it.
    let grammar = llama_cpp_2::json_schema_to_grammar(
        &json!({"type": "object", "properties": {
            "name": {"type": "string", "pattern": "Jane Doe SSN 234-56-7891"},
            "id": {"const": "John Smith SSN 123-45-6789"}}})
        .to_string(),
    )
    .unwrap();
    assert!(grammar.contains("123-45-6789"));
    // The grammar parser refuses a repetition over its limit and prints the whole grammar.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.gguf");
    wardgate_engine::gguf::write_tiny_llama(
        std::fs::File::create(&file).unwrap(),
        &wardgate_engine::gguf::TinySpec::default(),
    )
    .unwrap();
    let model = llama_cpp_2::model::LlamaModel::load_from_file(
        backend,
        &file,
        &llama_cpp_2::model::params::LlamaModelParams::default(),
    )
    .unwrap();
    let refused = format!("{grammar}big ::= \"x\"{{5000}}\n");
    assert!(llama_cpp_2::sampling::LlamaSampler::grammar(&model, &refused, "root").is_err());
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
        // The samples' pace: each one checks another address is served and records how many
        // are open, so the timeline (and the deadline above) is what is asserted.
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
    // The server decides on each connection as it accepts it, in order: once the other
    // address's last two are closed, the proxy's (accepted before) have been decided too.
    eventually(
        Duration::from_secs(5),
        "the other address's connections past its cap are closed",
        || closed_count(&other) >= 2,
    )
    .await;
    assert_eq!(closed_count(&other), 2);
    assert_eq!(closed_count(&proxy), 0);
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
    let app = wardgate_gateway::llm::llm_router(h.state.clone(), verifier, None);
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
    let app = wardgate_gateway::llm::llm_router(h.state.clone(), verifier.clone(), None);
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

// ==== issue 15: what the black-box attack of the merged fixes found ====

/// Stop sequences, tools and `tool_choice` are forwarded beside the prompt (tools become part of
/// it), so they count against the context window like it: 3 MB of any of them is refused at once
/// (before, 4 MB of `stop` was accepted, PHI-scanned on an async worker for seconds, and
/// forwarded), on both fronts, and nothing reaches the backend.
#[tokio::test]
async fn i15_attack_forwarded_fields_count_against_the_context_window() {
    let big = "a".repeat(3 << 20);
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let tool = json!([{"type": "function", "function": {"name": "f", "description": big}}]);
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": msgs, "stop": [big]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": msgs, "tools": tool}),
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "hi", "stop": [big]}),
        ),
        (
            "/api/chat",
            json!({"model": "tiny", "messages": msgs, "stream": false,
                "options": {"stop": [big]}}),
        ),
        (
            "/api/chat",
            json!({"model": "tiny", "messages": msgs, "stream": false, "tools": tool}),
        ),
    ];
    let h = harness("ollama", "").await;
    for (path, body) in &cases {
        let r = h.post(path, body.clone()).await;
        assert_front_error(path, &r, 400, None);
        assert!(r.text().contains("context"), "{path}: {}", r.text());
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
    assert_still_serving(&h).await;
}

// ==== issue 15, second attack (F5): a valid key's 429s at line rate ====

/// The 429s a key's audit events stand for: one per request event, `N` per summary.
fn refusals_audited(events: &[AuditEvent]) -> (u64, usize) {
    let mine: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.deny_reason.as_deref() == Some("rate_limited"))
        .collect();
    (crate::support::refusals_counted(&mine), mine.len())
}

/// Found by the second black-box attack: a valid key sending past its request rate wrote one
/// audit event per 429 (about 600 a second, 14 MB in 4 s) to a log nothing can prune. Now the
/// first 429 of a key in each `limits.refusal_audit_window` is written and the rest are folded
/// into one `suppressed: N` event whose count makes the total add up; every refusal is still
/// answered 429 with `Retry-After`.
#[tokio::test]
async fn i15_attack_a_keys_429s_are_folded_in_the_audit_log() {
    let h = harness(
        "openai",
        "[rate_limit]\nrequests_per_minute = 3\n[limits]\nrefusal_audit_window = \"2s\"\n",
    )
    .await;
    let start = Instant::now();
    let mut refused = 0u64;
    for i in 0..600 {
        let r = h.send(chat(&h.key)).await;
        match r.status.as_u16() {
            200 => assert!(i < 3, "request {i} was served past the rate"),
            429 => {
                assert!(r.headers.contains_key("retry-after"), "request {i}");
                refused += 1;
            }
            s => panic!("request {i}: {s} {}", r.text()),
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(refused, 597);
    let (total, events) = poll_until(
        Duration::from_secs(6),
        || async { refusals_audited(&h.audit_events().await) },
        |(total, _)| *total >= refused,
    )
    .await;
    assert_eq!(
        total, refused,
        "the audit events' counts add up to the 429s"
    );
    // Per 2 s window: the first refusal and one summary.
    let windows = usize::try_from(elapsed.as_secs() / 2).unwrap() + 1;
    assert!(
        events <= 2 * windows,
        "{events} audit events for {refused} refusals in {elapsed:?}"
    );
    // The summaries name the key's tenant and say what was refused.
    let summaries: Vec<AuditEvent> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.deny_reason.as_deref() == Some("rate_limited") && e.request_id.is_none())
        .collect();
    assert!(!summaries.is_empty());
    for s in &summaries {
        assert_eq!(s.http_status, Some(429), "{s:#?}");
        assert!(s.tenant.is_some() && s.key_id.is_some(), "{s:#?}");
    }
    // Other keys are not affected.
    let (_, other) = h.key_for(&[], None).await;
    assert_still_serving_with(&h, &other).await;
}

/// `refusal_audit_window = "0s"` writes every 429 on its own, as before.
#[tokio::test]
async fn i15_attack_a_zero_refusal_window_audits_every_429() {
    let h = harness(
        "openai",
        "[rate_limit]\nrequests_per_minute = 2\n[limits]\nrefusal_audit_window = \"0s\"\n",
    )
    .await;
    for _ in 0..22 {
        h.send(chat(&h.key)).await;
    }
    let (total, events) = refusals_audited(&h.audit_events().await);
    assert_eq!((total, events), (20, 20));
}

// ==== issue 15, second attack (note): a body cut off by the client ====

/// Found by the second black-box attack: a client that sent half its body and closed the
/// connection was audited as `deny` 400 `body_incomplete`, as if it had been answered. It left
/// before any answer: its terminal event is now `client_abort` with no status, like a client
/// that leaves while its request waits. A body with malformed framing is still a 400.
#[tokio::test]
async fn i15_attack_a_body_cut_off_by_the_client_is_a_client_abort() {
    let h = harness("openai", "").await;
    let (id, key) = h.key_for(&[], None).await;
    let (addr, _server) = serve_on_socket(&h).await;
    for _ in 0..5 {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\": \"ti"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        // Half-closed: the server sees the body end at 14 of 1000 bytes.
        sock.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut rest)).await;
    }
    let requests = poll_until(
        Duration::from_secs(5),
        || async { requests_of(&h.audit_events().await, &id) },
        |requests| requests.len() >= 5,
    )
    .await;
    assert_eq!(requests.len(), 5, "{requests:#?}");
    for evs in requests.values() {
        assert_eq!(evs.len(), 1, "{evs:#?}");
        let e = &evs[0];
        assert_eq!(e.event_type, EventType::Request, "{e:#?}");
        assert_eq!(e.outcome, Some(Outcome::ClientAbort), "{e:#?}");
        assert_eq!(e.http_status, None, "{e:#?}");
    }
    // Malformed chunked framing from a client that stays is a 400, as before.
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    let answer = raw_exchange(addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_still_serving(&h).await;
}
