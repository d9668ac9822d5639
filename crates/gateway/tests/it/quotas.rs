//! Usage quotas per key and per tenant: tokens a minute, tokens a day, and requests in flight
//! (streams included), each refused with 429, `Retry-After` and OpenAI's
//! `rate_limit_exceeded` shape, without affecting other keys or tenants. Attack cases 21 and
//! 32 are in `attack_cases.rs`; the same quotas on Redis, shared by two limiters, are in
//! `ratelimit.rs`.
use std::time::Duration;

use crate::support::{Harness, Resp, chat, mock_cfg, post_as};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;
use wardgate_store::Role;

fn stream(key: &str) -> Request<Body> {
    let body =
        json!({"model": "tiny", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    post_as("/v1/chat/completions", &body.to_string(), Some(key))
}

fn ollama_chat(key: &str) -> Request<Body> {
    let body =
        json!({"model": "tiny", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
    post_as("/api/chat", &body.to_string(), Some(key))
}

fn assert_rate_limited(r: &Resp, kind: &str, what: &str) -> u64 {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(what), "{message}");
    assert!(!message.contains("hello"), "no prompt text in errors");
    r.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap()
}

#[tokio::test]
async fn a_key_over_its_tokens_per_minute_waits() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[rate_limit]\ntokens_per_minute = 5\n",
    )
    .await;
    let (_, other) = h.key_with_roles("acme", &[Role::User], None).await;
    // A fresh allowance admits the request; its 8 completion tokens overdraw it.
    let r = h.send(chat(&h.key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["usage"]["total_tokens"].as_u64().unwrap() > 5);
    let wait = assert_rate_limited(&h.send(chat(&h.key)).await, "tokens", "tokens per minute");
    assert!((1..=120).contains(&wait), "{wait}");
    // The Ollama front is policed the same way, in its own error shape.
    let r = h.send(ollama_chat(&h.key)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
    // Another key of the same tenant has its own allowance.
    assert_eq!(h.send(chat(&other)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_spent_daily_budget_waits_for_the_next_utc_day() {
    let h = Harness::single_with("openai", mock_cfg(), "[rate_limit]\ntokens_per_day = 5\n").await;
    assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);
    let wait = assert_rate_limited(&h.send(chat(&h.key)).await, "tokens", "tokens per day");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let midnight = (now.div_euclid(86_400) + 1) * 86_400;
    assert!(
        wait.abs_diff(u64::try_from(midnight - now).unwrap()) <= 2,
        "Retry-After {wait} should point at the next UTC midnight"
    );
}

#[tokio::test]
async fn a_tenant_budget_covers_all_its_keys_and_no_other_tenant() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[rate_limit]\ntenant_tokens_per_day = 5\n",
    )
    .await;
    let (_, second) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, foreign) = h.key_with_roles("globex", &[Role::User], None).await;
    assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);
    assert_rate_limited(&h.send(chat(&second)).await, "tokens", "tokens per day");
    assert_eq!(h.send(chat(&foreign)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_streams_past_the_limit_get_429_and_others_are_unaffected() {
    let slow = mock_upstream::MockConfig {
        tokens: 100,
        token_delay: Duration::from_millis(20),
        ..mock_cfg()
    };
    let h = Harness::single_with("openai", slow, "[rate_limit]\nconcurrent_requests = 2\n").await;
    let (_, other) = h.key_with_roles("acme", &[Role::User], None).await;
    // Two streams open, their bodies unread: both places are held.
    let a = h.app.clone().oneshot(stream(&h.key)).await.unwrap();
    let b = h.app.clone().oneshot(stream(&h.key)).await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(b.status(), StatusCode::OK);
    let wait = assert_rate_limited(&h.send(stream(&h.key)).await, "requests", "concurrent");
    assert!(wait >= 1);
    // Another key is served meanwhile.
    assert_eq!(h.send(chat(&other)).await.status, StatusCode::OK);
    // A stream that ends (here: its client goes away) gives its place back.
    drop(a);
    let r = h.send(chat(&h.key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    drop(b);
}

/// A stream its client cuts off is charged for what it delivered, not for nothing: leaving
/// before the end marker must not get around a token budget. (A black-box finding: five cut
/// streams delivered 80 tokens against a 50-token day and left the budget untouched.)
#[tokio::test]
async fn a_stream_cut_off_by_its_client_is_charged_for_what_it_delivered() {
    use http_body_util::BodyExt as _;
    let slow = mock_upstream::MockConfig {
        tokens: 200,
        token_delay: Duration::from_millis(5),
        ..mock_cfg()
    };
    let h = Harness::single_with("openai", slow, "[rate_limit]\ntokens_per_day = 20\n").await;
    let resp = h.app.clone().oneshot(stream(&h.key)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut frames = 0;
    while frames < 40 {
        let frame = body.frame().await.unwrap().unwrap();
        if frame.data_ref().is_some_and(|d| !d.is_empty()) {
            frames += 1;
        }
    }
    // The client goes away with more than the day's budget delivered.
    drop(body);
    // Its settlement runs as the body is dropped; give it a moment, then the very next request
    // (which would itself spend the budget if it were let in) must find the budget spent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_rate_limited(&h.send(chat(&h.key)).await, "tokens", "tokens per day");
}

#[tokio::test]
async fn a_tenant_concurrency_limit_counts_all_its_keys() {
    let slow = mock_upstream::MockConfig {
        tokens: 100,
        token_delay: Duration::from_millis(20),
        ..mock_cfg()
    };
    let h = Harness::single_with(
        "openai",
        slow,
        "[rate_limit]\ntenant_concurrent_requests = 1\n",
    )
    .await;
    let (_, second) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, foreign) = h.key_with_roles("globex", &[Role::User], None).await;
    let held = h.app.clone().oneshot(stream(&h.key)).await.unwrap();
    assert_eq!(held.status(), StatusCode::OK);
    assert_rate_limited(&h.send(stream(&second)).await, "requests", "concurrent");
    let f = h.app.clone().oneshot(stream(&foreign)).await.unwrap();
    assert_eq!(f.status(), StatusCode::OK, "another tenant is not counted");
    drop(held);
    drop(f);
}

#[tokio::test]
async fn a_request_refused_after_admission_gives_its_place_back() {
    // One place: if a refused request (unknown-shape body, refused after the place is taken)
    // kept it, the request after it would get 429.
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[rate_limit]\nconcurrent_requests = 1\n",
    )
    .await;
    for _ in 0..3 {
        let r = h
            .send(post_as(
                "/v1/chat/completions",
                &json!({"model": "tiny", "messages": [], "max_tokens": 1}).to_string(),
                Some(&h.key),
            ))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    }
    assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);
    assert_eq!(
        h.send(chat(&h.key)).await.status,
        StatusCode::OK,
        "and so does a served one"
    );
}

#[test]
fn quota_settings_come_from_the_file_and_the_environment() {
    let raw = wardgate_gateway::config::parse_toml(
        "[rate_limit]\ntokens_per_minute = 100\ntenant_tokens_per_day = 5000\ntenant_concurrent_requests = 9\n",
    )
    .unwrap();
    let env = |k: &str| match k {
        "WARDGATE_RATE_LIMIT_CONCURRENCY" => Some("3".to_owned()),
        "WARDGATE_RATE_LIMIT_TOKENS_PER_DAY" => Some("7000".to_owned()),
        _ => None,
    };
    let c = wardgate_gateway::Config::from_raw(raw, &env).unwrap();
    assert_eq!(c.quotas.key.tokens_per_minute, 100);
    assert_eq!(c.quotas.key.tokens_per_day, 7000);
    assert_eq!(c.quotas.key.concurrent_requests, 3);
    assert_eq!(c.quotas.tenant.tokens_per_day, 5000);
    assert_eq!(c.quotas.tenant.concurrent_requests, 9);
    let d = wardgate_gateway::Config::from_raw(Default::default(), &|_| None).unwrap();
    // The default configuration serves the embedded engine (8 slots): one key may hold half.
    assert_eq!(
        d.quotas.key.concurrent_requests, 4,
        "a safe default bound, below the engine's slots"
    );
    assert_eq!(d.quotas.key.tokens_per_day, 0, "budgets are off by default");
    let bad = |k: &str| (k == "WARDGATE_RATE_LIMIT_TPM").then(|| "lots".to_owned());
    assert_eq!(
        wardgate_gateway::Config::from_raw(Default::default(), &bad)
            .unwrap_err()
            .key,
        "WARDGATE_RATE_LIMIT_TPM"
    );
}
