//! Fallback down a chain, timeouts, mid-stream failures, client disconnects and circuit
//! breaking, against mock servers that misbehave on purpose.
use std::time::{Duration, Instant};

use crate::support::*;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use mock_upstream::MockConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// Model `m` with a chain over two backends of `kind`, the first at `first_url`.
fn two_link_toml(kind: &str, first_url: &str, second_url: &str, extra: &str) -> String {
    format!(
        r#"{extra}
[[backends]]
name = "first"
kind = "{kind}"
url = "{first_url}"

[[backends]]
name = "second"
kind = "{kind}"
url = "{second_url}"

[[models]]
name = "m"
chain = [{{ backend = "first", model = "tiny" }}, {{ backend = "second", model = "tiny" }}]
"#
    )
}

async fn pair(kind: &str, first: MockConfig, extra: &str) -> Harness {
    let ms = mocks(vec![first, mock_cfg()]).await;
    let toml = two_link_toml(
        kind,
        &backend_url(kind, &ms[0]),
        &backend_url(kind, &ms[1]),
        extra,
    );
    Harness::from_toml(&toml, ms).await
}

#[tokio::test]
async fn falls_back_on_refused_connection_5xx_and_slow_first_token() {
    for kind in KINDS {
        // Refused connection.
        let ms = mocks(vec![mock_cfg()]).await;
        let toml = two_link_toml(kind, &dead_url(), &backend_url(kind, &ms[0]), "");
        let h = Harness::from_toml(&toml, ms).await;
        let r = h.post("/v1/chat/completions", chat_body("m", "hi")).await;
        assert_eq!(r.status, StatusCode::OK, "{kind} refused: {}", r.text());
        assert_eq!(h.mocks[0].stats().inference_requests, 1);

        // 5xx.
        let h = pair(
            kind,
            MockConfig {
                fail_status: Some(500),
                ..mock_cfg()
            },
            "",
        )
        .await;
        let r = h.post("/api/chat", json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(r.status, StatusCode::OK, "{kind} 500");
        assert_eq!(
            (
                h.mocks[0].stats().inference_requests,
                h.mocks[1].stats().inference_requests
            ),
            (1, 1)
        );

        // Slow first token (headers come at once, the first token does not).
        let slow = MockConfig {
            first_token_delay: Duration::from_secs(5),
            ..mock_cfg()
        };
        let h = pair(kind, slow, "[server]\nfirst_token_timeout = \"300ms\"\n").await;
        let t = Instant::now();
        let r = h.post("/v1/chat/completions", chat_body("m", "hi")).await;
        assert_eq!(r.status, StatusCode::OK, "{kind} slow");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{kind}: fell back after the first-token limit"
        );
        assert_eq!(h.mocks[1].stats().inference_requests, 1);
    }
}

#[tokio::test]
async fn client_errors_are_not_retried_on_the_next_link() {
    let h = pair(
        "openai",
        MockConfig {
            fail_status: Some(400),
            ..mock_cfg()
        },
        "",
    )
    .await;
    let r = h.post("/v1/chat/completions", chat_body("m", "hi")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.mocks[1].stats().inference_requests, 0);
}

#[tokio::test]
async fn once_a_token_is_sent_a_failure_is_reported_in_band_and_never_retried() {
    for kind in KINDS {
        let h = pair(
            kind,
            MockConfig {
                drop_after: Some(2),
                ..mock_cfg()
            },
            "",
        )
        .await;
        let r = h.post("/v1/chat/completions", json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(r.status, StatusCode::OK);
        let frames = r.frames();
        let text: String = frames
            .iter()
            .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "tok0 tok1 ", "{kind}");
        let last = frames.last().unwrap();
        assert!(last["error"]["message"].is_string(), "{kind}: {last}");
        assert!(
            !frames.iter().any(|f| f == "[DONE]"),
            "a cut stream does not claim completion"
        );

        let r = h
            .post("/api/generate", json!({"model": "m", "prompt": "hi"}))
            .await;
        let lines = r.frames();
        assert!(
            lines.last().unwrap()["error"].is_string(),
            "{kind}: {}",
            r.text()
        );
        assert!(!lines.iter().any(|l| l["done"] == true));
        assert_eq!(
            h.mocks[1].stats().inference_requests,
            0,
            "{kind}: no retry after a token"
        );

        // Non-streaming clients get a 502, and nothing of the partial answer.
        let r = h.post("/v1/chat/completions", chat_body("m", "hi")).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{kind}");
        assert!(!r.text().contains("tok0"));
    }
}

#[tokio::test]
async fn the_request_deadline_gives_504_with_a_generic_message() {
    let slow = MockConfig {
        headers_delay: Duration::from_secs(5),
        ..mock_cfg()
    };
    let h = Harness::single_with(
        "ollama",
        slow,
        "[server]\nrequest_timeout = \"400ms\"\nfirst_token_timeout = \"400ms\"\n",
    )
    .await;
    let t = Instant::now();
    let r = h
        .post("/v1/chat/completions", chat_body("tiny", "secret prompt"))
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(t.elapsed() < Duration::from_secs(2));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "timeout");
    assert!(!r.text().contains("secret") && !r.text().contains("127.0.0.1"));

    // A stream that outlives the deadline ends in-band.
    let dribble = MockConfig {
        token_delay: Duration::from_millis(150),
        tokens: 50,
        ..mock_cfg()
    };
    let h = Harness::single_with(
        "openai",
        dribble,
        "[server]\nrequest_timeout = \"500ms\"\nfirst_token_timeout = \"500ms\"\n",
    )
    .await;
    let r = h.post("/api/chat", chat_body("tiny", "hi")).await;
    assert_eq!(r.status, StatusCode::OK);
    let last = r.frames().pop().unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("in time"),
        "{last}"
    );
}

#[tokio::test]
async fn upstream_error_text_is_never_passed_to_clients() {
    for kind in KINDS {
        let h = Harness::single_with(
            kind,
            MockConfig {
                fail_status: Some(500),
                ..mock_cfg()
            },
            "",
        )
        .await;
        let r = h
            .post(
                "/v1/chat/completions",
                chat_body("tiny", "PATIENT-NAME-XYZ"),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{kind}");
        let body = r.text();
        assert!(!body.contains("PATIENT"), "{body}");
        assert!(
            !body.to_lowercase().contains("mock"),
            "no upstream wording: {body}"
        );
        assert_eq!(r.json()["error"]["type"], "server_error");
    }
}

#[tokio::test]
async fn dropping_the_response_cancels_the_upstream_request_quickly() {
    for kind in KINDS {
        let slow = MockConfig {
            tokens: 1000,
            token_delay: Duration::from_millis(20),
            ..mock_cfg()
        };
        let h = Harness::single_with(kind, slow, "").await;
        let resp = h
            .app
            .clone()
            .oneshot(post_as(
                "/api/chat",
                &chat_body("tiny", "hi").to_string(),
                Some(&h.key),
            ))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        let dropped = Instant::now();
        drop(body);
        assert!(
            h.mocks[0].wait_for_cancel(Duration::from_secs(2)).await,
            "{kind}"
        );
        let took = dropped.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "{kind}: upstream cancelled after {took:?}"
        );
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_upstream_within_100ms() {
    let slow = MockConfig {
        tokens: 1000,
        token_delay: Duration::from_millis(20),
        ..mock_cfg()
    };
    let h = Harness::single_with("openai", slow, "").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gateway = h.gateway.clone();
    let server = tokio::spawn(async move {
        let _ = gateway.run(listener, std::future::pending()).await;
    });
    let body =
        json!({"model": "tiny", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        h.key,
        body.len(),
        body
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("tok1") {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let closed = Instant::now();
    drop(sock);
    assert!(h.mocks[0].wait_for_cancel(Duration::from_secs(2)).await);
    let took = closed.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "upstream cancelled {took:?} after the client left"
    );
    server.abort();
}

#[tokio::test]
async fn a_failing_backend_is_skipped_by_its_breaker_and_taken_back_when_it_recovers() {
    let extra = "[circuit_breaker]\nfailure_threshold = 2\ncooldown = \"1s\"\n";
    // 500: the backend is broken (a 503 only says it is busy; see below).
    let h = pair(
        "ollama",
        MockConfig {
            fail_status: Some(500),
            ..mock_cfg()
        },
        extra,
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            h.post("/v1/chat/completions", chat_body("m", "hi"))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(h.mocks[0].stats().inference_requests, 2);
    for _ in 0..3 {
        assert_eq!(
            h.post("/v1/chat/completions", chat_body("m", "hi"))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(
        h.mocks[0].stats().inference_requests,
        2,
        "open breaker: the first link is skipped"
    );

    // A busy backend (503) is tried, found full and passed over, but its breaker stays shut.
    let busy = pair(
        "ollama",
        MockConfig {
            fail_status: Some(503),
            ..mock_cfg()
        },
        extra,
    )
    .await;
    for _ in 0..4 {
        let r = busy
            .post("/v1/chat/completions", chat_body("m", "hi"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(
        busy.mocks[0].stats().inference_requests,
        4,
        "busy is not broken"
    );

    // The backend recovers. Requests opened its breaker, and a backend can pass its probes
    // while failing every request, so a passing probe does not close it: after the cooldown
    // the next request is its trial, which does.
    h.mocks[0].set_config(mock_cfg());
    wardgate_gateway::app::refresh_backends(&h.state).await;
    let first = &h.state.catalog.backends()[0];
    assert!(first.is_healthy() && first.breaker.is_open());
    let served = poll_until(
        Duration::from_secs(5),
        || async {
            let r = h.post("/v1/chat/completions", chat_body("m", "hi")).await;
            assert_eq!(r.status, StatusCode::OK);
            h.mocks[0].stats().inference_requests
        },
        |&n| n > 2,
    )
    .await;
    assert_eq!(served, 3, "back in rotation after one trial");
    assert!(!first.breaker.is_open());
}

#[tokio::test]
async fn all_links_down_gives_503_and_a_flaky_backend_recovers() {
    let h = pair(
        "openai",
        MockConfig {
            fail_first: 1,
            ..mock_cfg()
        },
        "",
    )
    .await;
    // First request: link 1 fails once (flaky), link 2 answers.
    assert_eq!(
        h.post("/v1/chat/completions", chat_body("m", "hi"))
            .await
            .status,
        StatusCode::OK
    );
    // Second: link 1 answers again.
    assert_eq!(
        h.post("/v1/chat/completions", chat_body("m", "hi"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(h.mocks[0].stats().inference_requests, 2);

    let toml = two_link_toml("ollama", &dead_url(), &dead_url(), "");
    let h = Harness::from_toml(&toml, vec![]).await;
    let r = h.post("/v1/chat/completions", chat_body("m", "hi")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "backend_unavailable");
}

#[tokio::test]
async fn discovered_models_appear_under_their_own_names() {
    let ms = mocks(vec![MockConfig {
        models: vec!["alpha:1b".into(), "beta".into()],
        ..mock_cfg()
    }])
    .await;
    for kind in KINDS {
        let toml = format!(
            "[[backends]]\nname = \"d\"\nkind = \"{kind}\"\nurl = \"{}\"\ndiscover = true\n",
            backend_url(kind, &ms[0])
        );
        let h = Harness::from_toml(&toml, vec![]).await;
        let r = h
            .post("/v1/chat/completions", chat_body("alpha:1b", "hi"))
            .await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{kind}: not yet discovered, so perhaps there"
        );
        assert_eq!(r.json()["error"]["code"], "backend_unavailable");
        wardgate_gateway::app::refresh_backends(&h.state).await;
        let ids: Vec<String> = h.get("/v1/models").await.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["alpha:1b", "beta"], "{kind}");
        let r = h.post("/api/chat", json!({"model": "alpha:1b", "stream": false, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        let r = h.post("/api/chat", chat_body("gamma", "hi")).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{kind}: once the list is known, unknown is unknown"
        );
    }
}

/// Issue 16: a backend that ignores `stream: true` and answers one whole JSON completion (as
/// some OpenAI-compatible servers do; the mock pretty-prints it over many lines) is served as
/// a one-chunk stream on every front, streamed or not, where it answered 502 and tripped the
/// backend's breaker.
#[tokio::test]
async fn i16_a_backend_that_answers_a_stream_whole_is_served_as_one_chunk() {
    const TEXT: &str = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 ";
    let extra = "[circuit_breaker]\nfailure_threshold = 1\ncooldown = \"1h\"\n";
    for kind in KINDS {
        let cfg = MockConfig {
            ignore_stream: true,
            ..mock_cfg()
        };
        let h = Harness::single_with(kind, cfg, extra).await;
        let streamed = json!({"model": "tiny", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let r = h.post("/v1/chat/completions", streamed).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        let frames = r.frames();
        let text: String = frames
            .iter()
            .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, TEXT, "{kind}");
        assert_eq!(frames.last().unwrap(), "[DONE]", "{kind}");

        let r = h
            .post(
                "/api/chat",
                json!({"model": "tiny", "stream": false,
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        assert_eq!(r.json()["message"]["content"], TEXT, "{kind}");
        assert_eq!(r.json()["done"], true, "{kind}");

        let r = h
            .post("/v1/completions", json!({"model": "tiny", "prompt": "hi"}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        assert_eq!(r.json()["choices"][0]["text"], TEXT, "{kind}");

        assert_eq!(h.mocks[0].stats().inference_requests, 3, "{kind}");
        assert!(
            !h.state.catalog.backends()[0].breaker.is_open(),
            "{kind}: a whole answer is not a fault"
        );
    }
}

/// Issue 16: embeddings over a chain of slow links end at the request deadline, as chat
/// does, with the same 504; each link used to get the whole remaining time, so three slow
/// links took three times the deadline.
#[tokio::test]
async fn i16_embeddings_over_a_slow_chain_end_at_the_request_deadline() {
    let slow = || MockConfig {
        first_token_delay: Duration::from_secs(10),
        ..mock_cfg()
    };
    let deadline = Duration::from_millis(600);
    for kind in KINDS {
        let ms = mocks(vec![slow(), slow(), slow()]).await;
        let toml = format!(
            r#"[server]
request_timeout = "{}ms"

[[backends]]
name = "a"
kind = "{kind}"
url = "{}"

[[backends]]
name = "b"
kind = "{kind}"
url = "{}"

[[backends]]
name = "c"
kind = "{kind}"
url = "{}"

[[models]]
name = "m"
chain = [{{ backend = "a", model = "tiny" }}, {{ backend = "b", model = "tiny" }}, {{ backend = "c", model = "tiny" }}]
"#,
            deadline.as_millis(),
            backend_url(kind, &ms[0]),
            backend_url(kind, &ms[1]),
            backend_url(kind, &ms[2]),
        );
        let h = Harness::from_toml(&toml, ms).await;
        for (path, body) in [
            ("/v1/embeddings", json!({"model": "m", "input": ["a", "b"]})),
            ("/api/embed", json!({"model": "m", "input": "a"})),
        ] {
            let t = Instant::now();
            let r = h.post(path, body).await;
            let took = t.elapsed();
            assert_eq!(
                r.status,
                StatusCode::GATEWAY_TIMEOUT,
                "{kind} {path}: {}",
                r.text()
            );
            assert!(
                took < deadline + Duration::from_millis(400),
                "{kind} {path}: answered after {took:?}, past the {deadline:?} deadline"
            );
            if path.starts_with("/v1/") {
                assert_eq!(r.json()["error"]["code"], "timeout", "{kind}");
            }
        }
    }
}
