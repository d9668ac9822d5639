//! The Ollama native API: liveness, version, tags, show, chat and generate (NDJSON streams,
//! streamed by default) and both embedding routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::{MockError, Proto};
use crate::reply::{self, Reply};
use crate::routes::{self, MODIFIED_AT, begin, streamed};
use crate::state::Shared;
use crate::stream::{self, Render};

/// Fixed mock durations, in nanoseconds.
const LOAD_DURATION_NS: u64 = 1_000;
const PROMPT_EVAL_NS_PER_TOKEN: u64 = 10_000;

pub(crate) async fn root() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Ollama is running",
    )
}

pub(crate) async fn version() -> Json<Value> {
    Json(json!({"version": "0.0.0-mock"}))
}

fn details() -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "135M",
        "quantization_level": "Q4_1",
    })
}

pub(crate) async fn tags(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let models: Vec<Value> = shared
        .config()
        .models
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "model": name,
                "modified_at": MODIFIED_AT,
                "size": 91_739_413u64,
                "digest": reply::digest(name),
                "details": details(),
            })
        })
        .collect();
    Json(json!({"models": models}))
}

pub(crate) async fn show(State(shared): State<Arc<Shared>>, raw: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&raw) {
        Ok(body) => body,
        Err(error) => {
            return MockError::bad_request(format!("invalid JSON: {error}"))
                .on(Proto::Ollama)
                .into_response();
        }
    };
    // `name` is the deprecated spelling of `model`.
    let model = match ["model", "name"]
        .iter()
        .find_map(|key| body.get(key).and_then(Value::as_str))
    {
        Some(model) if !model.is_empty() => model,
        Some(_) | None => {
            return MockError::bad_request("model is required")
                .on(Proto::Ollama)
                .into_response();
        }
    };
    if let Err(error) = routes::check_model(&shared.config(), model) {
        return error.on(Proto::Ollama).into_response();
    }
    Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details(),
        "model_info": {"general.architecture": "llama", "llama.context_length": 4096},
        "capabilities": ["completion"],
        "modified_at": MODIFIED_AT,
    }))
    .into_response()
}

pub(crate) async fn chat(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let inference = match begin(&shared, Proto::Ollama, &uri, &headers, &raw) {
        Ok(inference) => inference,
        Err(error) => return error.into_response(),
    };
    let messages = inference
        .field("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (prompt_tokens, last_user) = reply::read_messages(messages);
    let reply = match reply::first_tool_name(inference.field("tools")) {
        Some(name) => Reply::ToolCall { name },
        None => Reply::text(
            &last_user,
            inference.config.tokens,
            num_predict(inference.field("options")),
        ),
    };
    let render = OllamaReply {
        endpoint: Endpoint::Chat,
        model: inference.model.clone(),
        reply,
        prompt_tokens,
    };
    let streamed = streamed(&inference, true);
    stream::respond(render, streamed, inference.timing, &shared).await
}

pub(crate) async fn generate(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let inference = match begin(&shared, Proto::Ollama, &uri, &headers, &raw) {
        Ok(inference) => inference,
        Err(error) => return error.into_response(),
    };
    let prompt = inference
        .field("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let render = OllamaReply {
        endpoint: Endpoint::Generate,
        model: inference.model.clone(),
        reply: Reply::text(
            prompt,
            inference.config.tokens,
            num_predict(inference.field("options")),
        ),
        prompt_tokens: reply::word_count(prompt),
    };
    let streamed = streamed(&inference, true);
    stream::respond(render, streamed, inference.timing, &shared).await
}

pub(crate) async fn embed(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let inference = match begin(&shared, Proto::Ollama, &uri, &headers, &raw) {
        Ok(inference) => inference,
        Err(error) => return error.into_response(),
    };
    let inputs: Vec<&str> = match inference.field("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) => match items.iter().map(Value::as_str).collect() {
            Some(texts) => texts,
            None => return bad_request("invalid input type"),
        },
        Some(_) => return bad_request("invalid input type"),
    };
    stream::sleep(inference.timing.first_token_delay).await;
    let dim = inference.config.embedding_dim;
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|t| reply::embedding(t, dim)).collect();
    let prompt_tokens: u64 = inputs.iter().map(|t| reply::word_count(t)).sum();
    let elapsed = nanos(inference.timing.started.elapsed());
    Json(json!({
        "model": inference.model,
        "embeddings": embeddings,
        "total_duration": LOAD_DURATION_NS + elapsed,
        "load_duration": LOAD_DURATION_NS,
        "prompt_eval_count": prompt_tokens,
    }))
    .into_response()
}

/// The legacy single-prompt embedding route.
pub(crate) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let inference = match begin(&shared, Proto::Ollama, &uri, &headers, &raw) {
        Ok(inference) => inference,
        Err(error) => return error.into_response(),
    };
    let prompt = match inference.field("prompt") {
        None | Some(Value::Null) => "",
        Some(Value::String(prompt)) => prompt.as_str(),
        Some(_) => return bad_request("prompt must be a string"),
    };
    stream::sleep(inference.timing.first_token_delay).await;
    let embedding = if prompt.is_empty() {
        Vec::new()
    } else {
        reply::embedding(prompt, inference.config.embedding_dim)
    };
    Json(json!({"embedding": embedding})).into_response()
}

fn bad_request(message: &str) -> Response {
    MockError::bad_request(message)
        .on(Proto::Ollama)
        .into_response()
}

/// `options.num_predict`; negative values mean "no limit", as in Ollama.
fn num_predict(options: Option<&Value>) -> Option<usize> {
    routes::limit(options?.get("num_predict"))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Generate,
}

struct OllamaReply {
    endpoint: Endpoint,
    model: String,
    reply: Reply,
    prompt_tokens: u64,
}

impl OllamaReply {
    /// An object with `message` (chat) or `response` (generate) holding `content`, and the
    /// tool call when there is one and `with_tool_call` asks for it.
    fn object(&self, content: String, with_tool_call: bool, done: bool) -> Value {
        let mut object = json!({"model": self.model, "created_at": routes::rfc3339_now()});
        match self.endpoint {
            Endpoint::Chat => {
                let mut message = json!({"role": "assistant", "content": content});
                if let (true, Reply::ToolCall { name }) = (with_tool_call, &self.reply) {
                    message["tool_calls"] = json!([
                        {"function": {"name": name, "arguments": {"city": "Paris"}}}
                    ]);
                }
                object["message"] = message;
            }
            Endpoint::Generate => object["response"] = Value::String(content),
        }
        object["done"] = Value::Bool(done);
        object
    }

    fn final_object(&self, content: String, with_tool_call: bool, elapsed: Duration) -> Value {
        let mut object = self.object(content, with_tool_call, true);
        let done_reason = match &self.reply {
            Reply::Text { finish, .. } => finish.as_str(),
            // Ollama keeps "stop" for tool calls; its OpenAI layer maps it to "tool_calls".
            Reply::ToolCall { .. } => "stop",
        };
        let prompt_eval = PROMPT_EVAL_NS_PER_TOKEN * self.prompt_tokens.max(1);
        let eval = nanos(elapsed);
        object["done_reason"] = json!(done_reason);
        object["total_duration"] = json!(LOAD_DURATION_NS + prompt_eval + eval);
        object["load_duration"] = json!(LOAD_DURATION_NS);
        object["prompt_eval_count"] = json!(self.prompt_tokens);
        object["prompt_eval_duration"] = json!(prompt_eval);
        object["eval_count"] = json!(self.reply.completion_tokens());
        object["eval_duration"] = json!(eval);
        object
    }
}

fn line(value: &Value) -> Bytes {
    Bytes::from(format!("{value}\n"))
}

impl Render for OllamaReply {
    const STREAM_CONTENT_TYPE: &'static str = "application/x-ndjson";

    fn units(&self) -> usize {
        match &self.reply {
            Reply::Text { tokens, .. } => tokens.len(),
            Reply::ToolCall { .. } => 1,
        }
    }

    fn open(&mut self) -> Option<Bytes> {
        None
    }

    fn unit(&mut self, index: usize) -> Bytes {
        match &self.reply {
            Reply::Text { tokens, .. } => line(&self.object(tokens.text(index), false, false)),
            Reply::ToolCall { .. } => line(&self.object(String::new(), true, false)),
        }
    }

    fn close(&mut self, elapsed: Duration) -> Bytes {
        line(&self.final_object(String::new(), false, elapsed))
    }

    fn whole(&self, elapsed: Duration) -> Value {
        match &self.reply {
            Reply::Text { tokens, .. } => self.final_object(tokens.full_text(), false, elapsed),
            Reply::ToolCall { .. } => self.final_object(String::new(), true, elapsed),
        }
    }
}
