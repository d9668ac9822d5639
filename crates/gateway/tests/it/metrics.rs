//! The metrics listener (`metrics.listen`): what a scrape of `/metrics` shows after requests
//! (the catalogue in docs/METRICS.md), that no label holds a key, a prompt or a client's
//! model string, and that the listener serves nothing else. Each test runs in a process of its
//! own (nextest), so the process-wide recorder holds only its own requests.
use std::net::SocketAddr;

use crate::support::*;
use mock_upstream::MockConfig;
use serde_json::json;

/// The scrape's body, after checking its status and content type.
async fn scrape(addr: SocketAddr) -> String {
    let resp = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    resp.text().await.unwrap()
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some((rest, value))
        })
        .find(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

/// Waits (up to 2 s) until the metrics listener accepts connections: it is up once the
/// gateway runs.
async fn listening(metrics: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(metrics).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A gateway over one OpenAI mock with its metrics listener, serving on a socket.
async fn served() -> (Harness, SocketAddr, SocketAddr) {
    let (h, metrics) = Harness::single("openai").await.with_metrics().await;
    let addr = h.listen().await;
    listening(metrics).await;
    (h, addr, metrics)
}

async fn post(addr: SocketAddr, key: &str, path: &str, body: serde_json::Value) -> u16 {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    // The whole answer, so that the request has ended (and been counted) when this returns.
    let _ = resp.bytes().await.unwrap();
    status
}

#[tokio::test]
async fn a_scrape_shows_requests_tokens_latency_and_backends_by_their_labels() {
    let (h, addr, metrics) = served().await;
    let secret_prompt = "Patient Zebulon Quixote-Farnsworth, SSN 457-55-5462";
    assert_eq!(
        post(
            addr,
            &h.key,
            "/v1/chat/completions",
            chat_body("tiny", secret_prompt)
        )
        .await,
        200
    );
    let mut streamed = chat_body("tiny", "hello");
    streamed["stream"] = json!(true);
    assert_eq!(
        post(addr, &h.key, "/v1/chat/completions", streamed).await,
        200
    );
    // A model name a client made up is never a label value.
    assert_eq!(
        post(
            addr,
            &h.key,
            "/v1/chat/completions",
            chat_body("made-up-model-7f3a9", "hi")
        )
        .await,
        404
    );
    // Refused before authentication: no tenant.
    assert_eq!(
        post(
            addr,
            "wg_nonsense",
            "/v1/chat/completions",
            chat_body("tiny", "hi")
        )
        .await,
        401
    );
    let text = scrape(metrics).await;

    let chat = ("route", "/v1/chat/completions");
    assert_eq!(
        sample(
            &text,
            "wardgate_requests_total",
            &[
                chat,
                ("model", "tiny"),
                ("status_class", "2xx"),
                ("tenant", "acme")
            ]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "wardgate_requests_total",
            &[
                chat,
                ("model", "_unknown"),
                ("status_class", "4xx"),
                ("tenant", "acme")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "wardgate_requests_total",
            &[chat, ("status_class", "4xx"), ("tenant", "_none")]
        ),
        Some(1.0),
        "{text}"
    );
    let gen_ai = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_request_model", "tiny"),
        ("gen_ai_provider_name", "openai"),
    ];
    // Only the two requests that reached the backend are GenAI operations.
    assert_eq!(
        sample(
            &text,
            "gen_ai_server_request_duration_seconds_count",
            &gen_ai
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains("gen_ai_server_request_duration_seconds_bucket{")
            && text.contains("le=\"81.92\""),
        "the conventions' buckets: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "gen_ai_server_time_to_first_token_seconds_count",
            &gen_ai
        ),
        Some(1.0),
        "only the streamed answer has a first token: {text}"
    );
    let output = [
        gen_ai[0],
        gen_ai[1],
        gen_ai[2],
        ("gen_ai_token_type", "output"),
    ];
    assert_eq!(
        sample(&text, "gen_ai_client_token_usage_count", &output),
        Some(2.0),
        "{text}"
    );
    assert!(
        sample(&text, "gen_ai_client_token_usage_sum", &output).is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wardgate_gateway_overhead_seconds_count", &[chat]),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "wardgate_backend_up",
            &[("model", "tiny"), ("backend", "b0")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "wardgate_backend_breaker_state",
            &[("model", "tiny"), ("backend", "b0")]
        ),
        Some(0.0),
        "{text}"
    );
    // Known before any event: at 0 from the first scrape.
    assert_eq!(
        sample(
            &text,
            "wardgate_backend_fallbacks_total",
            &[("model", "tiny")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wardgate_auth_failures_total", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "wardgate_lockouts_total", &[]), Some(0.0));
    assert!(
        sample(&text, "wardgate_audit_commit_seconds_count", &[]).is_some_and(|n| n >= 4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wardgate_audit_sequencing_stalled", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "wardgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    for secret in [
        h.key.as_str(),
        "made-up-model-7f3a9",
        "Zebulon",
        "457-55-5462",
        "wg_nonsense",
    ] {
        assert!(!text.contains(secret), "`{secret}` in the metrics");
    }
}

#[tokio::test]
async fn phi_findings_are_counted_by_category_and_mode_only() {
    let (h, metrics) = Harness::single_with("openai", mock_cfg(), "[phi]\nmode = \"deidentify\"\n")
        .await
        .with_metrics()
        .await;
    let addr = h.listen().await;
    let body = chat_body(
        "tiny",
        "Call Zebulon Quixote at 555-867-5309, SSN 457-55-5462.",
    );
    listening(metrics).await;
    assert_eq!(post(addr, &h.key, "/v1/chat/completions", body).await, 200);
    let text = scrape(metrics).await;
    assert_eq!(
        sample(
            &text,
            "wardgate_phi_findings_total",
            &[("category", "SSN"), ("mode", "deidentify")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "wardgate_phi_findings_total",
            &[("category", "PHONE"), ("mode", "deidentify")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "wardgate_phi_findings_total",
            &[("category", "EMAIL"), ("mode", "block")]
        ),
        Some(0.0),
        "every category and mode exists from the start: {text}"
    );
    for value in ["Zebulon", "867-5309", "457-55-5462"] {
        assert!(!text.contains(value), "`{value}` in the metrics");
    }
}

/// A request that every replica failed is still counted under the provider it was sent to
/// (the kind of the route's backend), with its error type; never under `_OTHER`.
#[tokio::test]
async fn a_failed_operation_is_counted_under_its_backends_provider() {
    let failing = MockConfig {
        fail_status: Some(500),
        ..mock_cfg()
    };
    let (h, metrics) = Harness::single_with("ollama", failing, "")
        .await
        .with_metrics()
        .await;
    let addr = h.listen().await;
    listening(metrics).await;
    let status = post(
        addr,
        &h.key,
        "/v1/chat/completions",
        chat_body("tiny", "hi"),
    )
    .await;
    assert_eq!(status, 502);
    let text = scrape(metrics).await;
    assert_eq!(
        sample(
            &text,
            "gen_ai_server_request_duration_seconds_count",
            &[
                ("gen_ai_operation_name", "chat"),
                ("gen_ai_request_model", "tiny"),
                ("gen_ai_provider_name", "ollama"),
                ("error_type", "backend_error"),
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("gen_ai_provider_name=\"_OTHER\""), "{text}");
}

#[tokio::test]
async fn the_listener_serves_metrics_only() {
    let (_h, _addr, metrics) = served().await;
    let client = reqwest::Client::new();
    let other = client
        .get(format!("http://{metrics}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let post = client
        .post(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn an_address_in_use_stops_the_start_naming_it() {
    let (h, metrics) = Harness::single("openai").await.with_metrics().await;
    let _taken = std::net::TcpListener::bind(metrics).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = h
        .gateway
        .clone()
        .run(listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&metrics.to_string()) && err.contains("metrics.listen"),
        "{err}"
    );
}
