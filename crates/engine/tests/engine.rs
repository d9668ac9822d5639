//! The engine on a tiny random-weight GGUF written by the test: the real llama.cpp loading,
//! tokenizing, templating, batching and sampling code runs; only the weights are fake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use wardgate_api::canonical::{
    ChatRequest, CompletionRequest, Message, ResponseFormat, Role, Sampling,
};
use wardgate_engine::gguf::{TinySpec, write_tiny_llama};
use wardgate_engine::{Engine, EngineConfig, EngineError, KeepAlive, Output, StopReason, Summary};

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
}

fn fixture(slots: u32, queue: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.gguf");
    write_tiny_llama(
        std::io::BufWriter::new(std::fs::File::create(&file).unwrap()),
        &TinySpec::default(),
    )
    .unwrap();
    let mut cfg = EngineConfig::new(dir.path().join("models"));
    cfg.slots = slots;
    cfg.queue = queue;
    cfg.slot_ctx = 256;
    cfg.threads = 1;
    let engine = Engine::new(cfg).unwrap();
    engine.store().import(&file, "tiny:test").unwrap();
    Fixture {
        _dir: dir,
        engine: Arc::new(engine),
    }
}

fn greedy(max: u32) -> Sampling {
    Sampling {
        temperature: Some(0.0),
        max_tokens: Some(max),
        ..Sampling::default()
    }
}

fn completion(prompt: &str, sampling: Sampling) -> CompletionRequest {
    CompletionRequest {
        model: "tiny:test".into(),
        prompt: prompt.into(),
        suffix: None,
        system: None,
        raw: true,
        sampling,
        format: ResponseFormat::Text,
        keep_alive: None,
        fairness: None,
    }
}

async fn drain(mut rx: wardgate_engine::Generation) -> (String, Summary) {
    let mut text = String::new();
    loop {
        match rx
            .recv()
            .await
            .expect("the generation ended without a summary")
        {
            Output::Text(t) => text.push_str(&t),
            Output::Done(s) => return (text, s),
            Output::Error(e) | Output::Rejected(e) => panic!("generation failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_generates_exactly_n_tokens_and_reports_counts() {
    let f = fixture(2, 4);
    let (_, rx) = f
        .engine
        .complete(&completion("What is the capital of France?", greedy(12)))
        .await
        .unwrap();
    let (text, s) = drain(rx).await;
    assert_eq!(s.completion_tokens, 12, "{s:?}");
    assert_eq!(s.reason, StopReason::Length);
    assert!(s.prompt_tokens >= 5, "{s:?}");
    assert!(!text.is_empty());
    // Greedy decoding is deterministic.
    let (_, rx) = f
        .engine
        .complete(&completion("What is the capital of France?", greedy(12)))
        .await
        .unwrap();
    assert_eq!(drain(rx).await.0, text);
    assert_eq!(f.engine.running().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_uses_the_models_template_and_reuses_the_cached_prefix() {
    let f = fixture(1, 4);
    let mut req = ChatRequest {
        model: "tiny:test".into(),
        messages: vec![
            Message::new(Role::System, "be brief"),
            Message::new(Role::User, "hello world"),
        ],
        sampling: greedy(4),
        format: ResponseFormat::Text,
        tools: vec![],
        tool_choice: None,
        parallel_tool_calls: None,
        keep_alive: None,
        fairness: None,
    };
    let (l, rx) = f.engine.chat(&req).await.unwrap();
    assert!(l.has_chat_template());
    let rendered = f.engine.render_chat(&l, &req.messages).unwrap();
    assert!(
        rendered.contains("<|im_start|>user\nhello world<|im_end|>"),
        "{rendered}"
    );
    let (first, s1) = drain(rx).await;
    assert_eq!(s1.cached_tokens, 0);
    // The next turn starts with the same messages: their tokens are found in the slot.
    req.messages.push(Message::new(Role::Assistant, first));
    req.messages.push(Message::new(Role::User, "the capital"));
    let (_, rx) = f.engine.chat(&req).await.unwrap();
    let (_, s2) = drain(rx).await;
    assert!(
        s2.cached_tokens >= s1.prompt_tokens - 2,
        "prefix reused: {s1:?} then {s2:?}"
    );
}

/// A cached prompt prefix is reused only for the tenant (fairness key) whose request cached
/// it: another tenant sending the same opening gets no reuse (no `cached_tokens`, no faster
/// first token that would tell it what the first tenant sent), and the first tenant's next
/// turn after that starts cold too, since its cache was given up to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_prefix_is_reused_only_for_the_tenant_that_cached_it() {
    let f = fixture(1, 4);
    let chat = |tenant: &str, messages: Vec<Message>| ChatRequest {
        model: "tiny:test".into(),
        messages,
        sampling: greedy(4),
        format: ResponseFormat::Text,
        tools: vec![],
        tool_choice: None,
        parallel_tool_calls: None,
        keep_alive: None,
        fairness: Some(tenant.to_owned()),
    };
    let opening = vec![
        Message::new(Role::System, "be brief"),
        Message::new(Role::User, "the patient's name is Ada Lovelace"),
    ];
    let (_, rx) = f.engine.chat(&chat("a", opening.clone())).await.unwrap();
    let (_, first) = drain(rx).await;
    assert_eq!(first.cached_tokens, 0);

    let (_, rx) = f.engine.chat(&chat("b", opening.clone())).await.unwrap();
    let (_, other) = drain(rx).await;
    assert_eq!(
        other.cached_tokens, 0,
        "tenant b reused a's prefix: {other:?}"
    );

    // b's prompt now fills the one slot; b's own next request reuses it.
    let (_, rx) = f.engine.chat(&chat("b", opening.clone())).await.unwrap();
    let (_, again) = drain(rx).await;
    assert!(
        again.cached_tokens >= other.prompt_tokens - 2,
        "b's own prefix reused: {again:?}"
    );
    let (_, rx) = f.engine.chat(&chat("a", opening)).await.unwrap();
    let (_, back) = drain(rx).await;
    assert_eq!(back.cached_tokens, 0, "a reused b's cache: {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_end_the_text_before_them() {
    let f = fixture(1, 4);
    let (_, rx) = f
        .engine
        .complete(&completion("hello", greedy(24)))
        .await
        .unwrap();
    let (full, _) = drain(rx).await;
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 8, "{full:?}");
    let stop: String = chars[4..7].iter().collect();
    let before = &full[..full.find(&stop).unwrap()];
    let mut sampling = greedy(24);
    sampling.stop = vec![stop.clone()];
    let (_, rx) = f
        .engine
        .complete(&completion("hello", sampling))
        .await
        .unwrap();
    let (text, s) = drain(rx).await;
    assert_eq!(text, before, "stop {stop:?} in {full:?}");
    assert_eq!(s.reason, StopReason::Stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sequences_batch_and_match_sequential_output() {
    let f = fixture(4, 8);
    let prompts = [
        "hello world",
        "What is the capital of France?",
        "a b c",
        "Paris is",
    ];
    let mut sequential = Vec::new();
    for p in prompts {
        let (_, rx) = f.engine.complete(&completion(p, greedy(16))).await.unwrap();
        sequential.push(drain(rx).await.0);
    }
    let mut handles = Vec::new();
    for p in prompts {
        let e = f.engine.clone();
        handles.push(tokio::spawn(async move {
            let (_, rx) = e.complete(&completion(p, greedy(16))).await.unwrap();
            drain(rx).await.0
        }));
    }
    let mut batched = Vec::new();
    for h in handles {
        batched.push(h.await.unwrap());
    }
    assert_eq!(
        batched, sequential,
        "batching must not change what each sequence generates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_frees_its_slot() {
    let f = fixture(1, 4);
    let (_, mut rx) = f
        .engine
        .complete(&completion("hello", greedy(200)))
        .await
        .unwrap();
    assert!(matches!(rx.recv().await, Some(Output::Text(_))));
    drop(rx);
    // With one slot, this only completes if the abandoned sequence was stopped.
    let (_, rx) = f
        .engine
        .complete(&completion("world", greedy(3)))
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), drain(rx)).await;
    assert_eq!(
        done.expect("the slot was never freed").1.completion_tokens,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_not_dropped() {
    let f = fixture(1, 1);
    let (_, running) = f
        .engine
        .complete(&completion("hello", greedy(200)))
        .await
        .unwrap();
    // The slot is taken; one may wait in the queue; the next is refused at once.
    let mut outcomes = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..3 {
        match f.engine.complete(&completion("world", greedy(2))).await {
            Ok((_, rx)) => waiting.push(rx),
            Err(e) => outcomes.push(e),
        }
    }
    assert!(!outcomes.is_empty(), "some request must be refused");
    assert!(
        outcomes.iter().all(|e| matches!(e, EngineError::Busy)),
        "{outcomes:?}"
    );
    drop(running);
    for rx in waiting {
        let (_, s) = tokio::time::timeout(Duration::from_secs(10), drain(rx))
            .await
            .unwrap();
        assert_eq!(s.completion_tokens, 2, "every accepted request completes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_constrains_output_with_a_grammar() {
    let f = fixture(1, 4);
    let mut req = completion("give json", greedy(40));
    req.format = ResponseFormat::JsonSchema {
        name: "s".into(),
        schema: wardgate_api::canonical::RawJson::from_value(
            &serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
        ),
    };
    let (_, rx) = f.engine.complete(&req).await.unwrap();
    let (text, s) = drain(rx).await;
    if s.reason == StopReason::Stop {
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(v["a"].is_i64(), "{text}");
    } else {
        assert!(text.trim_start().starts_with("{\"a\""), "{text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_unloads_and_the_budget_refuses_big_models() {
    let f = fixture(1, 4);
    let l = f
        .engine
        .load("tiny:test", KeepAlive::For(Duration::from_secs(60)))
        .await
        .unwrap();
    f.engine.release(&l, KeepAlive::For(Duration::ZERO));
    assert!(f.engine.running().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.gguf");
    write_tiny_llama(std::fs::File::create(&file).unwrap(), &TinySpec::default()).unwrap();
    let mut cfg = EngineConfig::new(dir.path().join("models"));
    cfg.memory_budget = 1000;
    let small = Engine::new(cfg).unwrap();
    small.store().import(&file, "tiny").unwrap();
    let err = small.load("tiny", KeepAlive::Forever).await.unwrap_err();
    assert!(matches!(err, EngineError::OverBudget { .. }), "{err}");
    assert!(err.to_string().contains("budget"));
    assert!(matches!(
        f.engine.load("nosuch", KeepAlive::Forever).await,
        Err(EngineError::Store(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_prompts_are_refused_before_queueing() {
    let f = fixture(1, 4);
    let long = "hello world ".repeat(400);
    let err = f
        .engine
        .complete(&completion(&long, greedy(4)))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ContextLength { .. }), "{err}");
}

/// Issue 15, item 5: a schema past the bounds (here the 5,000 properties that overflowed a
/// worker's stack in llama.cpp's converter) is a client error naming the bound, refused before
/// any conversion or load, and the engine keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_5_schemas_past_the_bounds_are_refused_and_the_engine_keeps_serving() {
    let f = fixture(1, 4);
    let props: serde_json::Map<String, serde_json::Value> = (0..5_000)
        .map(|i| (format!("p{i}"), serde_json::json!({"type": "string"})))
        .collect();
    let mut req = completion("give json", greedy(4));
    req.format = ResponseFormat::JsonSchema {
        name: "s".into(),
        schema: wardgate_api::canonical::RawJson::from_value(
            &serde_json::json!({"type": "object", "properties": props}),
        ),
    };
    match f.engine.complete(&req).await {
        Err(EngineError::BadRequest(m)) => assert!(m.contains("engine.schema_max_"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a 5,000-property schema was accepted"),
    }
    let (_, rx) = f
        .engine
        .complete(&completion("hi", greedy(2)))
        .await
        .unwrap();
    let (_, s) = drain(rx).await;
    assert_eq!(s.completion_tokens, 2);
}

// ==== issue 15, B2: items 6, 12 ====

/// Item 6: `keep_alive: 1e308` panicked the request's worker; now it is clamped to the
/// configured maximum, and a negative one pins the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_6_huge_keep_alive_is_clamped_not_a_panic() {
    let f = fixture(1, 4);
    for v in [
        serde_json::json!(1e308),
        serde_json::json!("99999999999h"),
        serde_json::json!(-1e308),
    ] {
        let mut req = completion("hello", greedy(2));
        req.keep_alive = Some(v.clone());
        let (l, rx) = f.engine.complete(&req).await.unwrap();
        drain(rx).await;
        let max = f.engine.config().max_keep_alive;
        match l.expires_at() {
            Some(t) => assert!(
                t <= std::time::Instant::now() + max,
                "{v}: kept past the maximum"
            ),
            None => assert!(v.as_f64().is_some_and(|s| s < 0.0), "{v} pinned the model"),
        }
    }
    let mut req = completion("hello", greedy(2));
    req.keep_alive = Some(serde_json::json!("forever"));
    assert!(matches!(
        f.engine.complete(&req).await,
        Err(EngineError::BadRequest(_))
    ));
}

/// Item 6: a grammar llama.cpp refuses (a repetition over its limit) is the client's mistake:
/// refused before it runs (`BadRequest`) or by the model thread as `Rejected`, never as a
/// server `Error`, and the slot serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_6_a_grammar_llama_cpp_refuses_is_rejected_not_a_server_error() {
    let f = fixture(1, 4);
    let mut req = completion("give json", greedy(4));
    req.format = ResponseFormat::JsonSchema {
        name: "s".into(),
        schema: wardgate_api::canonical::RawJson::from_value(
            &serde_json::json!({"type": "array", "items": {"type": "integer"}, "minItems": 100000}),
        ),
    };
    match f.engine.complete(&req).await {
        Err(EngineError::BadRequest(_)) => {}
        Err(e) => panic!("not a client error: {e}"),
        Ok((_, mut rx)) => match rx.recv().await {
            Some(Output::Rejected(_)) => {}
            other => panic!("expected Rejected, got {other:?}"),
        },
    }
    let (_, rx) = f
        .engine
        .complete(&completion("hello", greedy(2)))
        .await
        .unwrap();
    assert_eq!(drain(rx).await.1.completion_tokens, 2);
}

/// Item 12: with one slot held by tenant A and A's backlog queued, tenant B's request, queued
/// after all of A's, runs as soon as the slot frees, before the rest of A's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_12_a_second_tenant_runs_at_the_next_free_slot() {
    let f = fixture(1, 16);
    let job = |tenant: &str, n: u32| {
        let mut r = completion("hello", greedy(n));
        r.fairness = Some(tenant.to_owned());
        r
    };
    // The scenario needs the first request still holding the slot once everything is queued;
    // a random-weight model may end it early (end of text), so it is tried again then.
    for _attempt in 0..5 {
        let (_, mut first) = f.engine.complete(&job("a", 240)).await.unwrap();
        assert!(matches!(first.recv().await, Some(Output::Text(_))));
        let mut rxs = Vec::new();
        for i in 0..4 {
            // Long enough that the order the drains below observe is the order of admission
            // even on a loaded machine (one slot: each runs alone).
            let (_, rx) = f.engine.complete(&job("a", 48)).await.unwrap();
            rxs.push((format!("a{}", i + 1), rx));
        }
        let (_, rx) = f.engine.complete(&job("b", 2)).await.unwrap();
        rxs.push(("b0".to_owned(), rx));
        let still_running = loop {
            match first.try_recv() {
                Ok(Output::Text(_)) => continue,
                Ok(_) | Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break false,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break true,
            }
        };
        let (b0, a_jobs) = {
            let mut rxs = rxs;
            let (_, b0) = rxs.pop().unwrap();
            (b0, rxs)
        };
        // A dropped receiver stops its sequence at the next step, which frees the slot.
        drop(first);
        // B's short request ends first if it got the freed slot: A's backlog can then have
        // run a1 at most. With first-come order instead, all of A's four (48 tokens each) would
        // have ended before it. Judged from the states of a2..a4 when b0 ends, not from the
        // order tasks observe completions in (a loaded machine can delay a task's wake-up by
        // more than a short generation).
        tokio::time::timeout(Duration::from_secs(30), drain(b0))
            .await
            .unwrap();
        let mut ended = Vec::new();
        let mut a_jobs: Vec<(String, wardgate_engine::Generation)> = a_jobs;
        for (name, rx) in &mut a_jobs {
            let finished = loop {
                match rx.try_recv() {
                    Ok(Output::Text(_)) => continue,
                    Ok(_) | Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        break true;
                    }
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break false,
                }
            };
            if finished {
                ended.push(name.clone());
            }
        }
        for (_, rx) in a_jobs {
            let _ = tokio::time::timeout(Duration::from_secs(30), async move {
                let mut rx = rx;
                while rx.recv().await.is_some() {}
            })
            .await;
        }
        if !still_running {
            continue;
        }
        assert!(
            ended.iter().all(|n| n == "a1"),
            "A's backlog ran before B's request: {ended:?} had ended when b0 did"
        );
        return;
    }
    panic!("the first request never held its slot until the others were queued");
}

/// Item 6: huge sampling numbers (an `f64` like 1e308 is an infinite `f32`) are clamped, and the
/// request completes like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i15_6_huge_sampling_numbers_complete() {
    let f = fixture(1, 4);
    for (t, pen) in [(1e308, 1e308), (1e308, -1e308), (-1e308, 1e308)] {
        let sampling = Sampling {
            temperature: Some(t),
            top_k: Some(u32::MAX),
            top_p: Some(1e308),
            min_p: Some(-1e308),
            repeat_penalty: Some(pen),
            presence_penalty: Some(pen),
            frequency_penalty: Some(-pen),
            seed: Some(i64::MIN),
            max_tokens: Some(3),
            ..Sampling::default()
        };
        let (_, rx) = f
            .engine
            .complete(&completion("hello hello hello", sampling))
            .await
            .unwrap();
        let (_, s) = tokio::time::timeout(Duration::from_secs(10), drain(rx))
            .await
            .unwrap();
        assert_eq!(s.completion_tokens, 3);
    }
}
