//! A chain link naming a pool of replicas (`urls = [..]`): load spread over three in-process
//! mock replicas, a killed or busy replica's requests moving to the others with no client
//! error, the turns of a conversation staying on one replica (and one tenant's placement
//! telling nothing of another's), a silent replica taken out and the time silent replicas
//! cost bounded, and the outstanding counts returning to zero however a stream ends.
use std::time::{Duration, Instant};

use crate::support::*;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use mock_upstream::{MockConfig, MockServer};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Model `m` served by a pool of `replicas` mocks of `kind`, rate limits off (the tests send
/// hundreds of requests), probed once as a start probes.
async fn pool(kind: &str, replicas: Vec<MockConfig>) -> Harness {
    pool_with(kind, replicas, "", "", false).await
}

/// As [`pool`], with `extra` sections, `pool_extra` settings of the pool's backend, and when
/// `with_fallback` a second link after the pool: the backend `fallback`, the harness's last
/// mock.
async fn pool_with(
    kind: &str,
    replicas: Vec<MockConfig>,
    extra: &str,
    pool_extra: &str,
    with_fallback: bool,
) -> Harness {
    let n = replicas.len();
    let mut configs = replicas;
    if with_fallback {
        configs.push(mock_cfg());
    }
    let ms = mocks(configs).await;
    let urls: Vec<String> = ms[..n]
        .iter()
        .map(|m| format!("\"{}\"", backend_url(kind, m)))
        .collect();
    let (fallback, chain_tail) = if with_fallback {
        (
            format!(
                "[[backends]]\nname = \"fallback\"\nkind = \"{kind}\"\nurl = \"{}\"\n",
                backend_url(kind, &ms[n])
            ),
            r#", { backend = "fallback", model = "tiny" }"#,
        )
    } else {
        (String::new(), "")
    };
    let toml = format!(
        r#"[rate_limit]
requests_per_minute = 0
concurrent_requests = 0
{extra}
[[backends]]
name = "gpus"
kind = "{kind}"
urls = [{urls}]
{pool_extra}
{fallback}
[[models]]
name = "m"
chain = [{{ backend = "gpus", model = "tiny" }}{chain_tail}]
"#,
        urls = urls.join(", ")
    );
    let h = Harness::from_toml(&toml, ms).await;
    assert_eq!(
        wardgate_gateway::app::refresh_backends(&h.state).await,
        n + usize::from(with_fallback)
    );
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

/// Which replica served the one request `send` makes, from the mocks' counts.
async fn served_by<F: std::future::Future<Output = Resp>>(h: &Harness, send: F) -> usize {
    let before = served(&h.mocks);
    let r = send.await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let after = served(&h.mocks);
    let went: Vec<usize> = (0..before.len())
        .filter(|&i| after[i] > before[i])
        .collect();
    assert_eq!(
        went.len(),
        1,
        "one replica per request: {before:?} -> {after:?}"
    );
    went[0]
}

/// A replica that passes its health checks but never sends a first token (it takes the
/// request and stays silent). Each request that meets it loses one first-token limit and is
/// answered by another replica; after `circuit_breaker.failure_threshold` of them its breaker
/// opens and no request goes to it, though every probe in between passes; a passing probe
/// does not bring it back, only the trial request after the cooldown does.
#[tokio::test]
async fn a_replica_that_never_sends_a_first_token_is_taken_out_and_probes_do_not_bring_it_back() {
    let first_token = Duration::from_millis(300);
    let silent = MockConfig {
        first_token_delay: Duration::from_secs(3600),
        ..mock_cfg()
    };
    let h = pool_with(
        "openai",
        vec![mock_cfg(), silent, mock_cfg()],
        "[server]\nfirst_token_timeout = \"300ms\"\n\
         [circuit_breaker]\nfailure_threshold = 3\ncooldown = \"2s\"\n",
        "",
        false,
    )
    .await;
    let dead = &h.state.catalog.backends()[1];
    let mut i = 0;
    while !dead.breaker.is_open() && i < 90 {
        let t = Instant::now();
        let r = h
            .post("/v1/chat/completions", conversation("openai", i, 0))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(
            t.elapsed() < first_token + Duration::from_millis(700),
            "at most one first-token limit lost: {:?}",
            t.elapsed()
        );
        // The health probe runs between every two requests, and passes.
        assert_eq!(wardgate_gateway::app::refresh_backends(&h.state).await, 3);
        i += 1;
    }
    assert!(
        dead.breaker.is_open(),
        "{i} conversations, the silent replica's breaker never opened"
    );
    assert_eq!(h.mocks[1].stats().inference_requests, 3, "the threshold");
    // Out: no request goes to it, the conversations that lived on it included.
    for i in 100..115 {
        let went = served_by(
            &h,
            h.post("/v1/chat/completions", conversation("openai", i, 0)),
        )
        .await;
        assert_ne!(went, 1);
    }
    assert_eq!(h.mocks[1].stats().inference_requests, 3);
    // It answers again; the probe passes, and does not close what requests opened.
    h.mocks[1].set_config(mock_cfg());
    assert_eq!(wardgate_gateway::app::refresh_backends(&h.state).await, 3);
    assert!(dead.is_healthy() && dead.breaker.is_open());
    assert_eq!(h.mocks[1].stats().inference_requests, 3);
    // After the cooldown a conversation that lives on it is its trial, which closes it.
    let mut i = 200;
    let hr = &h;
    let back = poll_until(
        Duration::from_secs(10),
        move || {
            i += 1;
            let body = conversation("openai", i, 0);
            async move { served_by(hr, hr.post("/v1/chat/completions", body)).await }
        },
        |&went| went == 1,
    )
    .await;
    assert_eq!(back, 1, "the trial went to the recovered replica");
    assert!(!dead.breaker.is_open(), "and closed its breaker");
    assert_eq!(outstanding(&h), [0, 0, 0]);
}

/// Replicas of a pool that all stay silent cost a request `silent_attempts` first-token
/// limits (default 1), not one per replica, before the chain's next link answers.
#[tokio::test]
async fn silent_replicas_cost_a_request_at_most_silent_attempts_first_token_limits() {
    let first_token = Duration::from_millis(400);
    let silent = || MockConfig {
        first_token_delay: Duration::from_secs(3600),
        ..mock_cfg()
    };
    for (silent_attempts, pool_extra) in [(1u32, ""), (2, "silent_attempts = 2")] {
        let h = pool_with(
            "openai",
            vec![silent(), silent(), silent()],
            "[server]\nfirst_token_timeout = \"400ms\"\n",
            pool_extra,
            true,
        )
        .await;
        let t = Instant::now();
        let r = h
            .post("/v1/chat/completions", conversation("openai", 1, 0))
            .await;
        let took = t.elapsed();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(
            h.mocks[3].stats().inference_requests,
            1,
            "the next link answered"
        );
        let lost = first_token * silent_attempts;
        assert!(
            took >= lost && took < lost + first_token / 2 + Duration::from_millis(300),
            "silent_attempts {silent_attempts}: took {took:?}"
        );
        let asked: u64 = h.mocks[..3]
            .iter()
            .map(|m| m.stats().inference_requests)
            .sum();
        assert_eq!(asked, u64::from(silent_attempts));
    }
}

/// A replica that is always full (503 busy) is healthy and never tripped, but after
/// `circuit_breaker.busy_threshold` busy answers in a row its conversations go straight to
/// their next replica for `busy_cooldown`, instead of each paying a round trip to be refused.
#[tokio::test]
async fn a_replica_that_keeps_answering_busy_is_passed_over_for_the_cool_down() {
    let full = MockConfig {
        max_concurrent: Some(0),
        ..mock_cfg()
    };
    let h = pool_with(
        "openai",
        vec![full, mock_cfg(), mock_cfg()],
        "[circuit_breaker]\nbusy_threshold = 2\nbusy_cooldown = \"1h\"\n",
        "",
        false,
    )
    .await;
    let mut homes = Vec::new();
    for i in 0..30 {
        let refused = h.mocks[0].stats().busy_refusals;
        let went = served_by(
            &h,
            h.post("/v1/chat/completions", conversation("openai", i, 0)),
        )
        .await;
        // A refused request's retry goes by load; the others went by affinity.
        if h.mocks[0].stats().busy_refusals == refused {
            homes.push((i, went));
        }
    }
    assert_eq!(
        h.mocks[0].stats().busy_refusals,
        2,
        "two busy answers, then it is passed over"
    );
    assert!(!h.state.catalog.backends()[0].breaker.is_open());
    // The conversations stay where they went, those it would have held included, turn after
    // turn.
    for &(i, home) in &homes {
        let went = served_by(
            &h,
            h.post("/v1/chat/completions", conversation("openai", i, 1)),
        )
        .await;
        assert_eq!(went, home, "conversation {i}");
    }
    assert_eq!(h.mocks[0].stats().busy_refusals, 2);
}

/// The same conversation from two tenants lands on replicas chosen independently (so one
/// tenant cannot aim prompt-cache timing probes at another's conversation), while each
/// tenant's turns stay on one replica.
#[tokio::test]
async fn the_same_conversation_from_two_tenants_is_placed_independently() {
    let h = pool("openai", vec![mock_cfg(), mock_cfg(), mock_cfg()]).await;
    let (_, other) = h.key_with_roles("zeta", &[], None).await;
    let as_other = |body: Value| {
        h.send(post_as(
            "/v1/chat/completions",
            &body.to_string(),
            Some(&other),
        ))
    };
    const N: usize = 150;
    let mut differ = 0;
    for id in 0..N {
        let mine = served_by(
            &h,
            h.post("/v1/chat/completions", conversation("openai", id, 0)),
        )
        .await;
        let theirs = served_by(&h, as_other(conversation("openai", id, 0))).await;
        if mine != theirs {
            differ += 1;
        }
        if id % 10 == 0 {
            for turns in 1..3 {
                let again = served_by(&h, as_other(conversation("openai", id, turns))).await;
                assert_eq!(again, theirs, "conversation {id} moved at turn {turns}");
                let again = served_by(
                    &h,
                    h.post("/v1/chat/completions", conversation("openai", id, turns)),
                )
                .await;
                assert_eq!(again, mine, "conversation {id} moved at turn {turns}");
            }
        }
    }
    // Independent choices among three replicas differ for 2/3 of the conversations: 100 ± 6
    // (one sigma) of 150; the same choice for both tenants would make them differ never.
    assert!(
        (70..=130).contains(&differ),
        "{differ} of {N} conversations placed differently"
    );
}
