//! Both fronts over both backend kinds: requests, whole answers, streams and tool calls are
//! converted faithfully in every direction.
use crate::support::*;
use axum::http::StatusCode;
use serde_json::{Value, json};

const TEXT: &str = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 ";

#[tokio::test]
async fn openai_chat_whole_and_streamed_over_both_backends() {
    for kind in KINDS {
        let h = Harness::single(kind).await;
        let r = h
            .post("/v1/chat/completions", chat_body("fast", "hi there"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(
            v["model"], "fast",
            "the public name is echoed, not the upstream one"
        );
        assert_eq!(v["choices"][0]["message"]["content"], TEXT, "{kind}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["completion_tokens"], 8, "{kind}");
        assert_eq!(
            v["usage"]["total_tokens"],
            v["usage"]["prompt_tokens"].as_u64().unwrap() + 8
        );

        let body = json!({"model": "tiny", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]});
        let r = h.post("/v1/chat/completions", body).await;
        assert_eq!(r.headers["content-type"], "text/event-stream");
        let frames = r.frames();
        assert_eq!(frames.last().unwrap(), "[DONE]", "{kind}");
        assert_eq!(frames[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = frames
            .iter()
            .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, TEXT, "{kind}");
        let finish = &frames[frames.len() - 3];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        let usage = &frames[frames.len() - 2];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 8);
        let ids: std::collections::HashSet<&str> =
            frames.iter().filter_map(|f| f["id"].as_str()).collect();
        assert_eq!(ids.len(), 1, "one id for the whole stream");
    }
}

#[tokio::test]
async fn ollama_chat_and_generate_over_both_backends() {
    for kind in KINDS {
        let h = Harness::single(kind).await;
        // Streams by default.
        let r = h.post("/api/chat", chat_body("tiny", "hi")).await;
        assert_eq!(r.headers["content-type"], "application/x-ndjson", "{kind}");
        let lines = r.frames();
        let text: String = lines
            .iter()
            .filter(|l| l["done"] == false)
            .map(|l| l["message"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, TEXT, "{kind}");
        let last = lines.last().unwrap();
        assert_eq!(last["done"], true);
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(last["eval_count"], 8, "{kind}");
        for f in ["total_duration", "prompt_eval_duration", "eval_duration"] {
            assert!(
                last[f].as_u64().unwrap() > 0,
                "{kind} {f}: durations are integer ns"
            );
        }
        assert!(last["created_at"].as_str().unwrap().ends_with('Z'));

        let r = h.post("/api/generate", json!({"model": "tiny", "prompt": "hi", "stream": false, "options": {"num_predict": 3}})).await;
        let v = r.json();
        assert_eq!(v["response"], "tok0 tok1 tok2 ", "{kind}");
        assert_eq!(v["done_reason"], "length", "{kind}");
        assert_eq!(v["done"], true);
        let sent = h.mocks[0].stats().last_body.unwrap();
        match kind {
            "ollama" => assert_eq!(sent["options"]["num_predict"], 3),
            _ => assert_eq!(sent["max_tokens"], 3),
        }
    }
}

#[tokio::test]
async fn sampling_and_format_reach_the_backend_in_its_dialect() {
    for kind in KINDS {
        let h = Harness::single(kind).await;
        let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "top_p": 0.5, "seed": 7, "stop": ["x", "y"], "max_completion_tokens": 5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}});
        assert_eq!(
            h.post("/v1/chat/completions", body).await.status,
            StatusCode::OK
        );
        let sent = h.mocks[0].stats().last_body.unwrap();
        assert_eq!(
            sent["stream"], true,
            "the gateway always streams from backends"
        );
        match kind {
            "ollama" => {
                assert_eq!(sent["options"]["temperature"], 0.2);
                assert_eq!(sent["options"]["seed"], 7);
                assert_eq!(sent["options"]["stop"], json!(["x", "y"]));
                assert_eq!(sent["options"]["num_predict"], 5);
                assert_eq!(sent["format"], json!({"type": "object"}));
            }
            _ => {
                assert_eq!(sent["temperature"], 0.2);
                assert_eq!(sent["max_tokens"], 5);
                assert_eq!(sent["response_format"]["type"], "json_schema");
                assert_eq!(sent["stream_options"]["include_usage"], true);
            }
        }
        let headers = h.mocks[0].stats().last_headers;
        assert!(
            !headers
                .iter()
                .any(|(k, v)| k == "authorization" && v.contains(&h.key)),
            "the client's key never travels to the backend"
        );
    }
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
}

#[tokio::test]
async fn tool_calls_convert_between_string_and_object_arguments() {
    for kind in KINDS {
        let h = Harness::single(kind).await;
        // OpenAI front: arguments are a JSON string, finish_reason tool_calls.
        let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "weather?"}], "tools": tools()});
        let v = h.post("/v1/chat/completions", body.clone()).await.json();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert!(
            call["id"].as_str().unwrap().starts_with("call_"),
            "{kind}: {v}"
        );
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}), "{kind}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{kind}");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);

        // Streamed: fragments glue back into the same arguments.
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        let frames = h.post("/v1/chat/completions", sbody).await.frames();
        let args: String = frames
            .iter()
            .filter_map(|f| {
                f["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris"}),
            "{kind}"
        );
        let fin = frames
            .iter()
            .find(|f| f["choices"][0]["finish_reason"].is_string())
            .unwrap();
        assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls", "{kind}");

        // Ollama front: arguments are an object, whole, also when streamed from fragments.
        for stream in [false, true] {
            let mut obody = body.clone();
            obody["stream"] = json!(stream);
            let lines = h.post("/api/chat", obody).await.frames();
            let with_call = lines
                .iter()
                .find(|l| l["message"]["tool_calls"].is_array())
                .unwrap();
            let c = &with_call["message"]["tool_calls"][0]["function"];
            assert_eq!(c["name"], "get_weather", "{kind} stream={stream}");
            assert_eq!(
                c["arguments"],
                json!({"city": "Paris"}),
                "{kind} stream={stream}"
            );
            assert_eq!(lines.last().unwrap()["done"], true);
        }

        // The conversation continues: tool results go back in the backend's dialect.
        let follow = json!({"model": "tiny", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}]});
        assert_eq!(
            h.post("/v1/chat/completions", follow).await.status,
            StatusCode::OK
        );
        let sent = h.mocks[0].stats().last_body.unwrap();
        let a = &sent["messages"][1]["tool_calls"][0]["function"]["arguments"];
        match kind {
            "ollama" => assert_eq!(*a, json!({"city": "Paris"})),
            _ => assert_eq!(*a, json!("{\"city\":\"Paris\"}")),
        }
        assert_eq!(sent["messages"][2]["tool_call_id"], "call_9");
    }
}

#[tokio::test]
async fn completions_and_embeddings_over_both_backends() {
    for kind in KINDS {
        let h = Harness::single(kind).await;
        let v = h
            .post(
                "/v1/completions",
                json!({"model": "tiny", "prompt": "echo:abcdefg", "max_tokens": 50}),
            )
            .await
            .json();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "abcdefg", "{kind}");
        let frames = h
            .post(
                "/v1/completions",
                json!({"model": "tiny", "prompt": "echo:abcdefg", "stream": true,
            "stream_options": {"include_usage": true}}),
            )
            .await
            .frames();
        let text: String = frames
            .iter()
            .filter_map(|f| f["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "abcdefg", "{kind}");
        assert_eq!(frames.last().unwrap(), "[DONE]");
        assert!(
            frames[frames.len() - 2]["usage"]["completion_tokens"]
                .as_u64()
                .is_some()
        );

        let f = h
            .post(
                "/v1/embeddings",
                json!({"model": "tiny", "input": ["a", "b"]}),
            )
            .await
            .json();
        assert_eq!(f["data"].as_array().unwrap().len(), 2, "{kind}");
        let v: Vec<f64> = f["data"][1]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 8);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{kind}: {norm}");
        let b = h
            .post(
                "/v1/embeddings",
                json!({"model": "tiny", "input": "b", "encoding_format": "base64"}),
            )
            .await
            .json();
        let decoded =
            wardgate_api::base64_f32::decode(b["data"][0]["embedding"].as_str().unwrap()).unwrap();
        let floats: Vec<f32> = v.iter().map(|x| *x as f32).collect();
        assert_eq!(decoded, floats, "{kind}: base64 and float agree");
        assert_eq!(
            h.post(
                "/v1/embeddings",
                json!({"model": "tiny", "input": "b", "encoding_format": "hex"})
            )
            .await
            .status,
            StatusCode::BAD_REQUEST
        );

        let e = h
            .post("/api/embed", json!({"model": "tiny", "input": "b"}))
            .await
            .json();
        assert_eq!(e["embeddings"][0].as_array().unwrap().len(), 8, "{kind}");
        assert_eq!(e["model"], "tiny");
        let legacy = h
            .post("/api/embeddings", json!({"model": "tiny", "prompt": "b"}))
            .await
            .json();
        assert_eq!(legacy["embedding"], e["embeddings"][0]);
        let empty = h
            .post("/api/embed", json!({"model": "tiny", "input": []}))
            .await
            .json();
        assert_eq!(empty["embeddings"], json!([]));
    }
}

#[tokio::test]
async fn ollama_load_requests_are_acknowledged_without_a_backend_call() {
    let h = Harness::single("ollama").await;
    let v = h
        .post("/api/chat", json!({"model": "tiny", "messages": []}))
        .await
        .json();
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
    // `keep_alive: 0` is an unload only from an operator: a client's is ignored (issue 15).
    let v = h
        .post("/api/generate", json!({"model": "tiny", "keep_alive": 0}))
        .await
        .json();
    assert_eq!(v["done_reason"], "load");
    let (_, operator) = h
        .key_with_roles(
            "operator",
            &[wardgate_store::Role::User, wardgate_store::Role::Admin],
            None,
        )
        .await;
    let body = json!({"model": "tiny", "keep_alive": 0}).to_string();
    let v = h
        .send(post_as("/api/generate", &body, Some(&operator)))
        .await
        .json();
    assert_eq!(v["done_reason"], "unload");
    assert_eq!(h.mocks[0].stats().inference_requests, 0);
}
