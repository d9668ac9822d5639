//! End-to-end tests of the mock over real sockets, with a raw HTTP/1.1 client so that the
//! framing (chunked terminator present or not) can be checked too.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use mock_upstream::{MockConfig, MockServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ended as its framing says it should (chunked terminator or full length).
    complete: bool,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn ndjson(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The `data:` payloads of an SSE body, `[DONE]` included as a string.
    fn sse(&self) -> Vec<String> {
        self.text()
            .split_terminator("\n\n")
            .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn request_bytes(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let body = body.unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\nauthorization: Bearer client-secret\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A streamed `/api/generate` on a connection of its own, read until `until` has arrived;
/// the connection is returned open, the stream still going.
async fn open_generate_stream(addr: SocketAddr, until: &[u8]) -> TcpStream {
    let body = json!({"model": "mock-model", "prompt": "go"}).to_string();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&request_bytes(addr, "POST", "/api/generate", Some(&body)))
        .await
        .unwrap();
    let mut received = Vec::new();
    while find(&received, until).is_none() {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended early");
        received.extend_from_slice(&buf[..n]);
    }
    stream
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let body = body.map(Value::to_string);
    send_raw(addr, method, path, body.as_deref()).await
}

async fn send_raw(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&request_bytes(addr, method, path, body))
        .await
        .unwrap();
    let mut buf = Vec::new();
    // A cut connection may end in a reset; what arrived before it is what the tests look at.
    let _ = stream.read_to_end(&mut buf).await;
    parse(&buf)
}

fn parse(buf: &[u8]) -> Reply {
    let split = find(buf, b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&buf[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let rest = &buf[split + 4..];
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
        complete: false,
    };
    if reply.header("transfer-encoding") == Some("chunked") {
        (reply.body, reply.complete) = dechunk(rest);
    } else {
        let length: usize = reply.header("content-length").unwrap().parse().unwrap();
        reply.complete = rest.len() == length;
        reply.body = rest.to_vec();
    }
    reply
}

fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return (body, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (body, rest == b"\r\n");
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..rest.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

#[tokio::test]
async fn ollama_chat_streams_ndjson_then_a_done_object() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let body = json!({"model": "mock-model", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there mock"},
    ]});
    let reply = send(server.addr(), "POST", "/api/chat", Some(&body)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    assert!(reply.complete);
    let lines = reply.ndjson();
    assert_eq!(lines.len(), 9);
    let contents: Vec<&str> = lines[..8]
        .iter()
        .map(|l| {
            assert_eq!(l["done"], false);
            assert_eq!(l["model"], "mock-model");
            assert!(l["created_at"].is_string());
            assert_eq!(l["message"]["role"], "assistant");
            l["message"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(contents, tokens(8));
    let done = &lines[8];
    assert_eq!(done["done"], true);
    assert_eq!(done["done_reason"], "stop");
    assert_eq!(done["message"]["content"], "");
    assert_eq!(done["prompt_eval_count"], 5);
    assert_eq!(done["eval_count"], 8);
    for field in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(done[field].as_u64().unwrap() > 0, "{field}");
    }
    let stats = server.stats();
    assert_eq!(stats.completed_streams, 1);
    assert_eq!(stats.cancelled_streams, 0);
    assert_eq!(stats.last_path.as_deref(), Some("/api/chat"));
    assert_eq!(stats.last_body, Some(body));
    assert!(stats.last_headers.contains(&(
        "authorization".to_owned(),
        "Bearer client-secret".to_owned()
    )));
    server.shutdown().await;
}

#[tokio::test]
async fn ollama_non_streamed_generate_and_chat_tools() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let generate = json!({"model": "mock-model", "prompt": "hi", "stream": false,
        "options": {"num_predict": 3}});
    let reply = send(server.addr(), "POST", "/api/generate", Some(&generate)).await;
    let object = reply.json();
    assert_eq!(object["response"], "tok0 tok1 tok2 ");
    assert_eq!(object["done_reason"], "length");
    assert_eq!(object["eval_count"], 3);

    let echo = json!({"model": "mock-model:latest", "prompt": "echo:héllo!", "stream": false});
    let reply = send(server.addr(), "POST", "/api/generate", Some(&echo)).await;
    assert_eq!(reply.json()["response"], "héllo!");

    let tools = json!({"model": "mock-model", "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]});
    let lines = send(server.addr(), "POST", "/api/chat", Some(&tools))
        .await
        .ndjson();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["message"]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    );
    assert_eq!(lines[0]["message"]["content"], "");
    assert_eq!(lines[1]["done_reason"], "stop");
    server.shutdown().await;
}

#[tokio::test]
async fn openai_chat_sse_order_with_usage_and_done() {
    let server = MockServer::start(MockConfig {
        tokens: 3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let body = json!({"model": "mock-model", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "one two"}]});
    let reply = send(server.addr(), "POST", "/v1/chat/completions", Some(&body)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = reply.sse();
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events[6], "[DONE]");
    let chunks: Vec<Value> = events[..6]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    for (i, chunk) in chunks[1..4].iter().enumerate() {
        assert_eq!(
            chunk["choices"][0]["delta"],
            json!({"content": format!("tok{i} ")})
        );
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})
    );
    assert_eq!(server.stats().completed_streams, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn openai_non_stream_limits_tools_and_embeddings() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let addr = server.addr();
    let body = json!({"model": "mock-model", "max_tokens": 9, "max_completion_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}]});
    let reply = send(addr, "POST", "/v1/chat/completions", Some(&body))
        .await
        .json();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["message"]["content"], "tok0 tok1 ");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["total_tokens"], 3);

    let tools = json!({"model": "mock-model", "stream": true,
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
    let events = send(addr, "POST", "/v1/chat/completions", Some(&tools))
        .await
        .sse();
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(calls.len() >= 3);
    assert_eq!(calls[0]["id"], "call_mock_0");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: String = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let floats = json!({"model": "mock-model", "input": ["a b", "c"]});
    let floats = send(addr, "POST", "/v1/embeddings", Some(&floats))
        .await
        .json();
    assert_eq!(floats["usage"]["prompt_tokens"], 3);
    let first: Vec<f32> = serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(first.len(), 8);
    let encoded = json!({"model": "mock-model", "input": "a b", "encoding_format": "base64"});
    let encoded = send(addr, "POST", "/v1/embeddings", Some(&encoded))
        .await
        .json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, first);
    server.shutdown().await;
}

#[tokio::test]
async fn drop_after_cuts_streams_without_a_final_message() {
    let server = MockServer::start(MockConfig {
        drop_after: Some(3),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let chat = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]});
    let reply = send(server.addr(), "POST", "/api/chat", Some(&chat)).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.complete);
    let lines = reply.ndjson();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["done"] == false));

    let chat = json!({"model": "mock-model", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let reply = send(server.addr(), "POST", "/v1/chat/completions", Some(&chat)).await;
    assert!(!reply.complete);
    let text = reply.text();
    assert!(text.contains("tok2 "));
    assert!(!text.contains("tok3 "));
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("finish_reason\":\"stop"));

    let whole = json!({"model": "mock-model", "stream": false, "prompt": "hi"});
    let reply = send(server.addr(), "POST", "/api/generate", Some(&whole)).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.complete);
    assert!(reply.body.is_empty());

    let stats = server.stats();
    assert_eq!(stats.completed_streams, 0);
    assert_eq!(stats.cancelled_streams, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_counted_as_cancelled() {
    let server = MockServer::start(MockConfig {
        tokens: 1_000_000,
        token_delay: Duration::from_millis(5),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let stream = open_generate_stream(server.addr(), b"tok1 ").await;
    drop(stream);
    assert!(server.wait_for_cancel(Duration::from_secs(1)).await);
    let stats = server.stats();
    assert_eq!(stats.cancelled_streams, 1);
    assert_eq!(stats.completed_streams, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn stream_headers_come_before_the_first_token_delay() {
    let server = MockServer::start(MockConfig {
        first_token_delay: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let body = json!({"model": "mock-model", "prompt": "go"}).to_string();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(&request_bytes(
            server.addr(),
            "POST",
            "/api/generate",
            Some(&body),
        ))
        .await
        .unwrap();
    let mut received = Vec::new();
    while find(&received, b"\r\n\r\n").is_none() {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "no headers");
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert!(!server.wait_for_cancel(Duration::ZERO).await);
    drop(stream);
    assert!(server.wait_for_cancel(Duration::from_secs(1)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn fail_first_then_succeed_and_fail_status() {
    let server = MockServer::start(MockConfig {
        fail_first: 2,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let chat = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]});
    let first = send(server.addr(), "POST", "/v1/chat/completions", Some(&chat)).await;
    assert_eq!(first.status, 500);
    assert_eq!(first.json()["error"]["type"], "server_error");
    assert_eq!(first.json()["error"]["param"], Value::Null);
    let second = send(server.addr(), "POST", "/api/chat", Some(&chat)).await;
    assert_eq!(second.status, 500);
    assert!(second.json()["error"].is_string());
    let third = send(server.addr(), "POST", "/v1/chat/completions", Some(&chat)).await;
    assert_eq!(third.status, 200);
    assert_eq!(server.stats().inference_requests, 3);

    server.set_config(MockConfig {
        fail_status: Some(429),
        ..MockConfig::default()
    });
    let limited = send(
        server.addr(),
        "POST",
        "/v1/embeddings",
        Some(&json!({
            "model": "mock-model", "input": "x"
        })),
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    // Non-inference routes are not failed.
    assert_eq!(
        send(server.addr(), "GET", "/api/tags", None).await.status,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_models_and_bad_json_in_each_protocol_shape() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let addr = server.addr();
    let body =
        json!({"model": "nope", "prompt": "x", "messages": [{"role": "user", "content": "x"}]});
    let ollama = send(addr, "POST", "/api/generate", Some(&body)).await;
    assert_eq!(ollama.status, 404);
    assert_eq!(ollama.json(), json!({"error": "model 'nope' not found"}));
    let openai = send(addr, "POST", "/v1/chat/completions", Some(&body)).await;
    assert_eq!(openai.status, 404);
    let error = &openai.json()["error"];
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], Value::Null);
    assert!(error["message"].as_str().unwrap().contains("nope"));
    assert_eq!(send(addr, "GET", "/v1/models/nope", None).await.status, 404);

    let bad = send_raw(addr, "POST", "/v1/completions", Some("{not json")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let bad = send_raw(addr, "POST", "/api/chat", Some("{not json")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].is_string());
    assert_eq!(server.stats().last_body, None);

    assert_eq!(
        send(addr, "POST", "/api/pull", Some(&json!({})))
            .await
            .status,
        404
    );
    server.shutdown().await;
}

#[tokio::test]
async fn info_routes_and_shutdown() {
    let server = MockServer::start(MockConfig {
        models: vec!["a".into(), "b:7b".into()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let addr = server.addr();
    let root = send(addr, "GET", "/", None).await;
    assert_eq!(root.text(), "Ollama is running");
    assert_eq!(send(addr, "HEAD", "/", None).await.status, 200);
    assert_eq!(
        send(addr, "GET", "/api/version", None).await.json(),
        json!({"version": "0.0.0-mock"})
    );
    let tags = send(addr, "GET", "/api/tags", None).await.json();
    let models = tags["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[1]["model"], "b:7b");
    assert_eq!(models[0]["digest"].as_str().unwrap().len(), 64);
    assert_eq!(models[0]["details"]["quantization_level"], "Q4_1");
    let show = send(addr, "POST", "/api/show", Some(&json!({"model": "a"})))
        .await
        .json();
    assert_eq!(show["model_info"]["llama.context_length"], 4096);
    let list = send(addr, "GET", "/v1/models", None).await.json();
    assert_eq!(list["data"][1]["id"], "b:7b");
    assert_eq!(list["data"][1]["owned_by"], "mock");
    assert_eq!(server.stats().requests, 6);
    assert_eq!(server.stats().inference_requests, 0);

    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn max_concurrent_answers_busy_beyond_k_until_a_body_ends() {
    let server = MockServer::start(MockConfig {
        tokens: 1_000_000,
        token_delay: Duration::from_millis(5),
        max_concurrent: Some(1),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let held = open_generate_stream(server.addr(), b"tok0 ").await;
    assert_eq!(server.stats().active, 1);
    for path in ["/api/chat", "/v1/chat/completions"] {
        let r = send(
            server.addr(),
            "POST",
            path,
            Some(&json!({"model": "mock-model", "messages": []})),
        )
        .await;
        assert_eq!(r.status, 503, "{path}");
    }
    // Not inference: never refused.
    assert_eq!(
        send(server.addr(), "GET", "/api/tags", None).await.status,
        200
    );
    assert_eq!(server.stats().busy_refusals, 2);
    drop(held);
    assert!(server.wait_for_cancel(Duration::from_secs(1)).await);
    // The slot is freed with the body, in the same drop that counted the cancellation.
    assert_eq!(server.stats().active, 0);
    server.set_config(MockConfig {
        max_concurrent: Some(1),
        ..MockConfig::default()
    });
    let r = send(
        server.addr(),
        "POST",
        "/api/generate",
        Some(&json!({"model": "mock-model", "prompt": "go", "stream": false})),
    )
    .await;
    assert_eq!(r.status, 200);
    server.shutdown().await;
}
