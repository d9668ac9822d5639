//! Single-service mode in-process: the gateway's fronts over the embedded engine (a tiny
//! random-weight GGUF), including the queue-full answer.
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::{Harness, import_tiny_model};

async fn gateway(dir: &std::path::Path, engine_toml: &str) -> (axum::Router, String) {
    import_tiny_model(dir);
    let toml = format!(
        "[engine]\nmodels_dir = \"{}\"\nthreads = 1\n{engine_toml}\n",
        dir.join("store").display()
    );
    let h = Harness::from_toml(&toml, vec![]).await;
    wardgate_gateway::app::refresh_backends(&h.state).await;
    (h.app, h.key)
}

fn post(path: &str, key: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_fronts_serve_the_embedded_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = gateway(dir.path(), "slot_ctx = 256").await;
    let resp = app
        .clone()
        .oneshot(post(
            "/v1/chat/completions",
            &key,
            serde_json::json!({"model": "tiny:test", "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "user", "content": "hello"}]}),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 5, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let resp = app
        .clone()
        .oneshot(post("/api/generate", &key, serde_json::json!({"model": "tiny:test", "prompt": "hello", "options": {"num_predict": 3}})))
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["eval_count"], 3, "{text}");
    assert!(last["prompt_eval_duration"].as_u64().unwrap() > 0);
    // A prompt over the engine's per-request context is the client's fault.
    let resp = app
        .clone()
        .oneshot(post("/v1/completions", &key, serde_json::json!({"model": "tiny:test", "prompt": "hello world ".repeat(100), "max_tokens": 4})))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // Listings carry the store's details for engine-served models.
    let resp = app
        .clone()
        .oneshot(
            Request::get("/api/tags")
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let tags: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let m = &tags["models"][0];
    assert_eq!(m["name"], "tiny:test");
    assert_eq!(m["details"]["family"], "llama");
    assert_eq!(m["details"]["quantization_level"], "F32");
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);
    assert!(m["size"].as_u64().unwrap() > 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_the_others_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = gateway(
        dir.path(),
        // One key may hold half the slots by default; this test wants one key to fill the
        // queue.
        "slots = 1\nqueue = 1\nslot_ctx = 256\n[rate_limit]\nconcurrent_requests = 0",
    )
    .await;
    let body = serde_json::json!({"model": "tiny:test", "max_tokens": 150, "temperature": 0,
        "messages": [{"role": "user", "content": "hello"}]});
    let mut handles = Vec::new();
    for _ in 0..5 {
        let (app, req) = (
            app.clone(),
            post("/v1/chat/completions", &key, body.clone()),
        );
        handles.push(tokio::spawn(async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let retry = resp.headers().get("retry-after").cloned();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, retry, body)
        }));
    }
    let mut ok = 0;
    let mut busy = 0;
    for h in handles {
        let (status, retry, body) = h.await.unwrap();
        match status {
            StatusCode::OK => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(
                    v["usage"]["completion_tokens"], 150,
                    "accepted requests complete in full"
                );
                ok += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    retry.is_some(),
                    "503 carries Retry-After: {}",
                    String::from_utf8_lossy(&body)
                );
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(
        ok >= 2,
        "the running and the queued request complete: {ok} ok, {busy} busy"
    );
    assert!(
        busy >= 1,
        "past one slot and one queue place, requests are refused: {ok} ok, {busy} busy"
    );
    assert_eq!(ok + busy, 5, "nothing is dropped silently");
}

/// Issue 16: Ollama embeds with any model, so clients that embed with their chat model keep
/// working: both fronts answer vectors (unit length, the model's width) for the tiny chat
/// model, where they answered 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i16_both_fronts_embed_with_a_chat_model() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = gateway(dir.path(), "slot_ctx = 256").await;
    let width = wardgate_engine::gguf::TinySpec::default().n_embd as usize;
    let unit = |v: &serde_json::Value| {
        let v: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), width);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    };
    let cases = [
        (
            "/api/embed",
            serde_json::json!({"model": "tiny:test", "input": ["hello world", "the capital"]}),
        ),
        (
            "/v1/embeddings",
            serde_json::json!({"model": "tiny:test", "input": ["hello world", "the capital"]}),
        ),
        (
            "/api/embeddings",
            serde_json::json!({"model": "tiny:test", "prompt": "hello world"}),
        ),
    ];
    for (path, body) in cases {
        let resp = app.clone().oneshot(post(path, &key, body)).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        match path {
            "/api/embed" => {
                let e = v["embeddings"].as_array().unwrap();
                assert_eq!(e.len(), 2, "{v}");
                e.iter().for_each(unit);
                assert_ne!(e[0], e[1]);
                assert!(v["prompt_eval_count"].as_u64().unwrap() > 0, "{v}");
            }
            "/v1/embeddings" => {
                let d = v["data"].as_array().unwrap();
                assert_eq!(d.len(), 2, "{v}");
                d.iter().for_each(|e| unit(&e["embedding"]));
            }
            _ => unit(&v["embedding"]),
        }
    }
}
