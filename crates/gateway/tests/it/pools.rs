//! A chain link naming a pool of replicas (`urls = [..]`): load spread over three in-process
//! mock replicas, a killed or busy replica's requests moving to the others with no client
//! error, the turns of a conversation staying on one replica, and the outstanding counts
//! returning to zero however a stream ends.
use std::time::Duration;

use crate::support::*;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use mock_upstream::{MockConfig, MockServer};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Model `m` served by a pool of `replicas` mocks of `kind`, rate limits off (the tests send
/// hundreds of requests), probed once as a start probes.
async fn pool(kind: &str, replicas: Vec<MockConfig>) -> Harness {
    let ms = mocks(replicas).await;
    let urls: Vec<String> = ms
        .iter()
        .map(|m| format!("\"{}\"", backend_url(kind, m)))
        .collect();
    let toml = format!(
        r#"[rate_limit]
requests_per_minute = 0
concurrent_requests = 0

[[backends]]
name = "gpus"
kind = "{kind}"
urls = [{urls}]

[[models]]
name = "m"
chain = [{{ backend = "gpus", model = "tiny" }}]
"#,
        urls = urls.join(", ")
    );
    let h = Harness::from_toml(&toml, ms).await;
    assert_eq!(wardgate_gateway::app::refresh_backends(&h.state).await, 3);
    h
}

fn served(mocks: &[MockServer]) -> Vec<u64> {
    mocks.iter().map(|m| m.stats().inference_requests).collect()
}

fn path(kind: &str) -> &'static str {
    if kind == "ollama" {
        "/api/chat"
    } else {
        "/v1/chat/completions"
    }
}

/// A conversation's opening (system prompt and first question) and `turns` more exchanges.
fn conversation(kind: &str, id: usize, turns: usize) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a careful clinical assistant."}),
        json!({"role": "user", "content": format!("Question {id}: what does this lab value mean?")}),
    ];
    for t in 0..turns {
        messages.push(json!({"role": "assistant", "content": format!("answer {t}")}));
        messages.push(json!({"role": "user", "content": format!("follow-up {t}")}));
    }
    let mut body = json!({"model": "m", "messages": messages});
    if kind == "ollama" {
        body["stream"] = json!(false);
    }
    body
}

fn outstanding(h: &Harness) -> Vec<usize> {
    h.state
        .catalog
        .backends()
        .iter()
        .map(|b| b.outstanding())
        .collect()
}

#[tokio::test]
async fn load_spreads_within_twenty_percent_over_many_conversations() {
    let h = pool("openai", vec![mock_cfg(), mock_cfg(), mock_cfg()]).await;
    const N: u64 = 900;
    for i in 0..N {
        let r = h
            .post(
                "/v1/chat/completions",
                conversation("openai", i as usize, 0),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let counts = served(&h.mocks);
    let share = N / 3;
    // Each replica's count is binomial(900, 1/3): 300 ± 14 (one sigma); ±20 % is 4 sigma.
    for c in &counts {
        assert!(
            c.abs_diff(share) <= share / 5,
            "uneven spread over the replicas: {counts:?}"
        );
    }
    assert_eq!(outstanding(&h), [0, 0, 0]);
}

#[tokio::test]
async fn a_multi_turn_conversation_stays_on_one_replica() {
    for kind in KINDS {
        let h = pool(kind, vec![mock_cfg(), mock_cfg(), mock_cfg()]).await;
        let mut homes = Vec::new();
        for id in 0..12 {
            let mut home = None;
            for turns in 0..4 {
                let before = served(&h.mocks);
                let r = h.post(path(kind), conversation(kind, id, turns)).await;
                assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
                let after = served(&h.mocks);
                let went: Vec<usize> = (0..3).filter(|&i| after[i] > before[i]).collect();
                assert_eq!(went.len(), 1, "{kind}: one replica per turn");
                let now = went[0];
                assert_eq!(
                    *home.get_or_insert(now),
                    now,
                    "{kind}: conversation {id} moved at turn {turns}"
                );
            }
            homes.extend(home);
        }
        homes.sort_unstable();
        homes.dedup();
        assert!(homes.len() > 1, "{kind}: twelve conversations, one replica");
    }
}

#[tokio::test]
async fn a_killed_replica_s_share_moves_to_the_others_with_no_client_error() {
    for kind in KINDS {
        let mut h = pool(kind, vec![mock_cfg(), mock_cfg(), mock_cfg()]).await;
        for i in 0..30 {
            let r = h.post(path(kind), conversation(kind, i, 0)).await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let before = served(&h.mocks);
        assert!(
            before[1] > 0,
            "{kind}: the replica to kill had a share: {before:?}"
        );
        h.mocks.remove(1).shutdown().await;
        // The same conversations again: those that lived on the dead replica move.
        for i in 0..30 {
            let r = h.post(path(kind), conversation(kind, i, 1)).await;
            assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        }
        let after = served(&h.mocks);
        assert_eq!(
            (after[0] - before[0]) + (after[1] - before[2]),
            30,
            "{kind}: every request answered by a live replica, once"
        );
        let dead = &h.state.catalog.backends()[1];
        assert_eq!(dead.name(), "gpus#1");
        assert!(!dead.is_healthy(), "{kind}");
        assert_eq!(outstanding(&h), [0, 0, 0]);
    }
}

#[tokio::test]
async fn a_busy_replica_passes_the_request_on_before_the_first_token() {
    for kind in KINDS {
        // Replica 0 is always full: it answers every inference request 503.
        let full = MockConfig {
            max_concurrent: Some(0),
            ..mock_cfg()
        };
        let h = pool(kind, vec![full, mock_cfg(), mock_cfg()]).await;
        for i in 0..30 {
            let mut body = conversation(kind, i, 0);
            body["stream"] = json!(true);
            let r = h.post(path(kind), body).await;
            assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
            let text = r.text();
            assert!(
                text.contains("tok7") && !text.contains("error"),
                "{kind}: a whole stream: {text}"
            );
        }
        let refused = h.mocks[0].stats().busy_refusals;
        assert!(refused > 0, "{kind}: the busy replica was asked");
        let counts = served(&h.mocks);
        assert_eq!(counts[0], 0);
        assert_eq!(counts[1] + counts[2], 30, "{kind}: {counts:?}");
        let busy = &h.state.catalog.backends()[0];
        assert!(!busy.breaker.is_open(), "{kind}: busy is not broken");
    }
}

#[tokio::test]
async fn outstanding_counts_return_to_zero_after_streams_end_and_after_client_aborts() {
    let h = pool("openai", vec![mock_cfg(), mock_cfg(), mock_cfg()]).await;
    // Streams that end, read to the end.
    for i in 0..6 {
        let mut body = conversation("openai", i, 0);
        body["stream"] = json!(true);
        assert_eq!(
            h.post("/v1/chat/completions", body).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(outstanding(&h), [0, 0, 0], "after streams that ended");

    // Streams whose client goes away after the first frame.
    for m in &h.mocks {
        m.set_config(MockConfig {
            tokens: 1_000,
            token_delay: Duration::from_millis(10),
            ..mock_cfg()
        });
    }
    let mut bodies = Vec::new();
    for i in 0..6 {
        let mut body = conversation("openai", 100 + i, 0);
        body["stream"] = json!(true);
        let resp = h
            .app
            .clone()
            .oneshot(post_as(
                "/v1/chat/completions",
                &body.to_string(),
                Some(&h.key),
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let first = body.frame().await;
        assert!(first.is_some_and(|f| f.is_ok()), "a first frame");
        bodies.push(body);
    }
    assert_eq!(
        outstanding(&h).iter().sum::<usize>(),
        6,
        "six streams in progress"
    );
    drop(bodies);
    eventually(
        Duration::from_secs(5),
        "the outstanding counts back to zero after the clients left",
        || outstanding(&h) == [0, 0, 0],
    )
    .await;
}
