//! Bearer JWTs: tokens from configured issuers are accepted with their claims mapped to tenant,
//! roles and models; every other token (wrong issuer, audience, algorithm, key, time, size,
//! lifetime, claims) gets the same 401 as a bad API key. JWKS URLs refresh on an unknown `kid`
//! at most once per cooldown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::jwt::{AUD, ISS, ed25519, jwks, now, p256, rsa, sign};
use crate::support::{Harness, chat_body, get_as, mock_cfg, post_as};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wardgate_audit::{AuthMethod, EventType};
use wardgate_gateway::identity::jwt::JwtVerifier;

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice@example.test", "tenant": "acme",
           "iat": now(), "exp": now() + 600})
}

/// The gateway trusting the issuer of `issuer_toml` (its verifier built from the config,
/// as `wardgate serve` builds it).
async fn harness_with(issuer_toml: &str) -> Harness {
    Harness::single_with("openai", mock_cfg(), issuer_toml).await
}

fn file_issuer(path: &std::path::Path, algorithms: &str) -> String {
    format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [{algorithms}]\n\
         jwks_file = \"{}\"\nmax_lifetime = \"1h\"\nleeway = \"5s\"\n",
        path.display()
    )
}

fn chat_with(token: &str) -> axum::http::Request<axum::body::Body> {
    post_as(
        "/v1/chat/completions",
        &chat_body("tiny", "hello").to_string(),
        Some(token),
    )
}

#[tokio::test]
async fn tokens_from_a_jwks_file_map_claims_to_tenant_roles_and_models() {
    let ed = ed25519("ed-1");
    let ec = p256("ec-1");
    let rs = rsa();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&ed, &ec, &rs])).unwrap();
    let h = harness_with(&file_issuer(&path, "\"EdDSA\", \"ES256\", \"RS256\"")).await;

    for s in [&ed, &ec, &rs] {
        let r = h.send(chat_with(&sign(s, &claims()))).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}: {}", s.alg, r.text());
    }
    // Roles from the claim: an auditor token reads the audit log and cannot chat. Roles
    // wardgate does not know are ignored.
    let mut c = claims();
    c["roles"] = json!(["auditor", "some-other-app-role"]);
    let auditor = sign(&ed, &c);
    assert_eq!(
        h.send(chat_with(&auditor)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.send(get_as("/admin/audit", Some(&auditor))).await.status,
        StatusCode::OK
    );
    // A space-separated roles string works too; a token with no known role can do nothing.
    c["roles"] = json!("user");
    assert_eq!(
        h.send(chat_with(&sign(&ed, &c))).await.status,
        StatusCode::OK
    );
    c["roles"] = json!(["viewer"]);
    assert_eq!(
        h.send(chat_with(&sign(&ed, &c))).await.status,
        StatusCode::FORBIDDEN
    );
    // Models from the claim.
    let mut c = claims();
    c["models"] = json!(["other"]);
    let limited = sign(&ed, &c);
    assert_eq!(
        h.send(chat_with(&limited)).await.status,
        StatusCode::NOT_FOUND
    );
    let models = h.send(get_as("/v1/models", Some(&limited))).await.json();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);

    // The audit log names the person, by subject, as a JWT user.
    let events: Vec<_> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::Request)
        .collect();
    let first = &events[0];
    assert_eq!(first.actor_id, "jwt:alice@example.test");
    assert_eq!(first.auth_method, Some(AuthMethod::Jwt));
    assert_eq!(first.actor_kind, wardgate_audit::ActorKind::User);
    assert_eq!(first.tenant.as_deref(), Some("acme"));
    assert_eq!(first.key_id, None);
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401() {
    let ed = ed25519("ed-1");
    let ec = p256("ec-1");
    let stranger = ed25519("ed-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&ed, &ec])).unwrap();
    // ES256 is in the JWKS but not on this issuer's allowlist.
    let h = harness_with(&file_issuer(&path, "\"EdDSA\"")).await;
    let unauthenticated = h.send(get_as("/v1/models", Some("wg_nope"))).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&ed, &c)
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 60))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 120))),
        (
            "other audience",
            with(&|c| c["aud"] = json!("another-service")),
        ),
        (
            "other issuer",
            with(&|c| c["iss"] = json!("https://evil.test/")),
        ),
        (
            "no subject",
            with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
        ),
        (
            "no exp",
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
        ),
        ("too long-lived", with(&|c| c["exp"] = json!(now() + 7200))),
        ("bad tenant", with(&|c| c["tenant"] = json!("Not A Tenant"))),
        (
            "no tenant",
            with(&|c| drop(c.as_object_mut().unwrap().remove("tenant"))),
        ),
        ("models not a list", with(&|c| c["models"] = json!("tiny"))),
        ("algorithm not allowed", sign(&ec, &claims())),
        ("unknown signer, known kid", sign(&stranger, &claims())),
        ("huge", with(&|c| c["pad"] = json!("x".repeat(10_000)))),
    ];
    let mut unknown_kid = ed25519("ed-404");
    unknown_kid.kid = "ed-404".into();
    cases.push(("unknown kid", sign(&unknown_kid, &claims())));
    // Payload swapped after signing.
    let good = sign(&ed, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let mut evil = claims();
    evil["tenant"] = json!("globex");
    let forged = format!("{}.{}.{}", parts[0], B64.encode(evil.to_string()), parts[2]);
    cases.push(("payload swapped", forged));
    // alg=none, and HS256 "signed" with the public key (algorithm confusion).
    let none_header = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    cases.push((
        "alg none",
        format!("{none_header}.{}.", B64.encode(claims().to_string())),
    ));
    let x = B64.decode(ed.jwk["x"].as_str().unwrap()).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("ed-1".into());
    cases.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &claims(), &EncodingKey::from_secret(&x)).unwrap(),
    ));

    for (what, token) in &cases {
        let r = h.send(chat_with(token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
        assert_eq!(
            r.body, unauthenticated.body,
            "{what}: same body as any bad key"
        );
    }
    // The good token still works (none of the above poisoned anything).
    assert_eq!(h.send(chat_with(&good)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_hs256_issuer_uses_its_shared_secret_only() {
    let secret = "0123456789abcdef0123456789abcdef-test-secret";
    let toml = format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"HS256\"]\n\
         secret_env = \"WG_TEST_JWT_SECRET\"\n"
    );
    let raw = wardgate_gateway::config::parse_toml(&format!(
        "{toml}\n[[backends]]\nname = \"b0\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:9/v1\"\n"
    ))
    .unwrap();
    let config = wardgate_gateway::config::Config::from_raw(raw, &|k| {
        (k == "WG_TEST_JWT_SECRET").then(|| secret.to_owned())
    })
    .unwrap();
    let v = JwtVerifier::start(config.jwt.clone(), config.max_token_bytes)
        .await
        .unwrap();
    let good = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let p = v.verify(&good, now()).await.unwrap();
    assert_eq!(p.tenant, "acme");
    let bad = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"another secret of enough length!!"),
    )
    .unwrap();
    assert!(v.verify(&bad, now()).await.is_err());
    // A short secret is refused at start-up.
    let raw = wardgate_gateway::config::parse_toml(&toml).unwrap();
    let err = wardgate_gateway::config::Config::from_raw(raw, &|k| {
        (k == "WG_TEST_JWT_SECRET").then(|| "short".to_owned())
    })
    .unwrap_err();
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
}

#[test]
fn issuer_configuration_is_checked() {
    let base = |extra: &str| {
        format!("[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\n{extra}\n")
    };
    let cases = [
        (
            base("algorithms = [\"HS256\", \"RS256\"]\nsecret_env = \"S\""),
            "cannot be mixed",
        ),
        (base("algorithms = []\njwks_file = \"j\""), "allowlist"),
        (
            base("algorithms = [\"none\"]\njwks_file = \"j\""),
            "not allowed",
        ),
        (
            base("algorithms = [\"RS384\"]\njwks_file = \"j\""),
            "not allowed",
        ),
        (
            base("algorithms = [\"ES256\"]\njwks_url = \"http://idp.example.test/jwks\""),
            "https",
        ),
        (
            base("algorithms = [\"ES256\"]\njwks_file = \"j\"\njwks_url = \"https://x/\""),
            "exactly one",
        ),
        (
            base("algorithms = [\"ES256\"]\njwks_file = \"j\"\nleeway = \"10m\""),
            "at most 5m",
        ),
        (
            format!(
                "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = []\nalgorithms = [\"ES256\"]\njwks_file = \"j\"\n"
            ),
            "audience",
        ),
    ];
    for (toml, want) in cases {
        let raw = wardgate_gateway::config::parse_toml(&toml).unwrap();
        let err = wardgate_gateway::config::Config::from_raw(raw, &|k| {
            (k == "S").then(|| "x".repeat(40))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(want), "{toml}\n=> {err}");
        assert!(err.contains("auth.jwt[0]"), "{err}");
    }
}

#[tokio::test]
async fn a_jwks_url_refreshes_on_an_unknown_kid_at_most_once_per_cooldown() {
    let old = ed25519("old");
    let new = ed25519("new");
    let served = Arc::new(std::sync::Mutex::new(jwks(&[&old])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let served = served.clone();
        let fetches = fetches.clone();
        axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let body = served.lock().unwrap().clone();
                fetches.fetch_add(1, Ordering::SeqCst);
                async move { body }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let toml = format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"EdDSA\"]\n\
         jwks_url = \"http://{addr}/jwks\"\nrefresh_cooldown = \"1h\"\n"
    );
    let h = harness_with(&toml).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched once at start");
    assert_eq!(
        h.send(chat_with(&sign(&old, &claims()))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "a known kid fetches nothing"
    );

    // The provider rotates: the first token with the new kid triggers one refresh... but the
    // start-up fetch was just now, inside the cooldown, so it does not; a flood of unknown
    // kids costs nothing.
    *served.lock().unwrap() = jwks(&[&old, &new]);
    for _ in 0..5 {
        assert_eq!(
            h.send(chat_with(&sign(&new, &claims()))).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // With a short cooldown the same rotation is picked up by exactly one fetch.
    let toml = toml.replace("refresh_cooldown = \"1h\"", "refresh_cooldown = \"1s\"");
    let h = harness_with(&toml).await;
    let before = fetches.load(Ordering::SeqCst);
    // The 1 s cooldown since the start-up fetch must pass on the wall clock (the verifier
    // reads `std::time::Instant`, which tokio cannot pause): time is the point, not a wait.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let newer = ed25519("newer");
    *served.lock().unwrap() = jwks(&[&old, &new, &newer]);
    assert_eq!(
        h.send(chat_with(&sign(&newer, &claims()))).await.status,
        StatusCode::OK
    );
    for _ in 0..5 {
        let ghost = ed25519("ghost");
        assert_eq!(
            h.send(chat_with(&sign(&ghost, &claims()))).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
}

// ---------------------------------------------------------------------------------------------
// Properties: the verifier called directly (no router), so each case costs one verification.

mod props {
    use std::time::Duration;

    use proptest::prelude::*;
    use wardgate_gateway::identity::jwt::{IssuerSettings, KeySource, looks_like_jwt};

    use super::*;

    fn settings(path: &std::path::Path) -> IssuerSettings {
        IssuerSettings {
            issuer: ISS.into(),
            audiences: vec![AUD.into()],
            algorithms: vec![Algorithm::EdDSA, Algorithm::ES256],
            keys: KeySource::File(path.to_owned()),
            leeway: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(3600),
            refresh_interval: Duration::from_secs(3600),
            refresh_cooldown: Duration::from_secs(60),
            tenant_claim: "tenant".into(),
            tenant: None,
            allowed_tenants: wardgate_gateway::identity::jwt::AllowedTenants::AllBut(
                "operator".into(),
            ),
            roles_claim: "roles".into(),
            models_claim: "models".into(),
        }
    }

    /// One way of damaging a token: a byte changed (to another ASCII byte), the token cut
    /// short, two segments swapped, a segment dropped or repeated, or a character inserted.
    #[derive(Clone, Debug)]
    enum Damage {
        Flip { at: usize, mask: u8 },
        Truncate(usize),
        Swap(usize, usize),
        Drop(usize),
        Repeat(usize),
        Insert { at: usize, ch: char },
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            4 => (any::<usize>(), 1u8..128).prop_map(|(at, mask)| Damage::Flip { at, mask }),
            1 => any::<usize>().prop_map(Damage::Truncate),
            1 => (0usize..3, 0usize..3).prop_map(|(a, b)| Damage::Swap(a, b)),
            1 => (0usize..3).prop_map(Damage::Drop),
            1 => (0usize..3).prop_map(Damage::Repeat),
            1 => (any::<usize>(), prop_oneof![Just('.'), Just('='), Just(' '), Just('A'), Just('é')])
                .prop_map(|(at, ch)| Damage::Insert { at, ch }),
        ]
    }

    fn apply(token: &str, d: &Damage) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        match *d {
            Damage::Flip { at, mask } => {
                let mut bytes = token.as_bytes().to_vec();
                let at = at % bytes.len();
                bytes[at] ^= mask;
                // The token is ASCII and the mask below 128, so the result is ASCII too.
                String::from_utf8(bytes).unwrap()
            }
            Damage::Truncate(at) => token[..at % token.len()].to_owned(),
            Damage::Swap(a, b) => {
                let mut p = parts.clone();
                p.swap(a, b);
                p.join(".")
            }
            Damage::Drop(i) => {
                let mut p = parts.clone();
                p.remove(i);
                p.join(".")
            }
            Damage::Repeat(i) => {
                let mut p = parts.clone();
                p.insert(i, parts[i]);
                p.join(".")
            }
            Damage::Insert { at, ch } => {
                let mut t = token.to_owned();
                t.insert(at % (token.len() + 1), ch);
                t
            }
        }
    }

    /// Token-shaped strings: base64url segments of JSON headers and claims that name the
    /// trusted issuer and a known `kid`, with signatures that are not the key's.
    fn forged() -> impl Strategy<Value = String> {
        let header = prop_oneof![
            Just(json!({"alg": "EdDSA", "kid": "ed-1"})),
            Just(json!({"alg": "ES256", "kid": "ed-1"})),
            Just(json!({"alg": "none"})),
            Just(json!({"alg": "HS256", "kid": "ed-1"})),
            "[ -~]{0,20}".prop_map(|s| json!({"alg": s, "kid": "ed-1"})),
        ];
        let claims = (any::<Option<String>>(), any::<i64>()).prop_map(
            |(sub, exp)| json!({"iss": ISS, "aud": AUD, "sub": sub, "tenant": "acme", "exp": exp}),
        );
        (
            header,
            claims,
            proptest::collection::vec(any::<u8>(), 0..96),
        )
            .prop_map(|(h, c, sig)| {
                format!(
                    "{}.{}.{}",
                    B64.encode(h.to_string()),
                    B64.encode(c.to_string()),
                    B64.encode(sig)
                )
            })
    }

    fn any_token() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "eyJ[A-Za-z0-9_=+/-]{0,60}\\.[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_=-]{0,90}",
            "[.a-zA-Z0-9_-]{0,200}",
            forged(),
        ]
    }

    #[test]
    fn damaged_and_made_up_tokens_are_never_accepted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ed = ed25519("ed-1");
        let ec = p256("ec-1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&ed, &ec])).unwrap();
        let v = rt
            .block_on(JwtVerifier::start(vec![settings(&path)], 8 * 1024))
            .unwrap();
        let good = sign(&ed, &claims());
        let good_ec = sign(&ec, &claims());
        for token in [&good, &good_ec] {
            assert!(looks_like_jwt(token));
            rt.block_on(v.verify(token, now())).unwrap();
        }

        let config = ProptestConfig::with_cases(256);
        proptest!(config, |(d in damage(), ec_token in any::<bool>())| {
            let original = if ec_token { &good_ec } else { &good };
            let token = apply(original, &d);
            prop_assume!(&token != original);
            let verdict = rt.block_on(v.verify(&token, now()));
            prop_assert!(verdict.is_err(), "{:?} accepted: {}", d, token);
        });
        proptest!(config, |(token in any_token())| {
            let _ = looks_like_jwt(&token);
            let verdict = rt.block_on(v.verify(&token, now()));
            prop_assert!(verdict.is_err(), "accepted: {}", token);
        });
        // The good tokens still verify: no case above changed the verifier's state.
        rt.block_on(v.verify(&good, now())).unwrap();
    }
}
