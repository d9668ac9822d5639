//! The OpenAI-compatible API: models, chat completions and legacy completions (SSE streams,
//! not streamed by default), and embeddings (float or base64).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::{MockError, Proto};
use crate::reply::{self, Reply, TOOL_ARGUMENT_FRAGMENTS, TOOL_ARGUMENTS, TOOL_CALL_ID};
use crate::routes::{self, MODIFIED_AT_UNIX, begin, streamed};
use crate::state::Shared;
use crate::stream::{self, Render};

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": MODIFIED_AT_UNIX, "owned_by": "mock"})
}

pub(crate) async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let data: Vec<Value> = shared
        .config()
        .models
        .iter()
        .map(|m| model_object(m))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub(crate) async fn model(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match routes::check_model(&shared.config(), &id) {
        Ok(()) => Json(model_object(&id)).into_response(),
        Err(error) => error.on(Proto::OpenAi).into_response(),
    }
}

pub(crate) async fn chat(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let inference = match begin(&shared, Proto::OpenAi, &uri, &headers, &raw) {
        Ok(inference) => inference,
        Err(error) => return error.into_response(),
    };
    let messages = match inference.field("messages").and_then(Value::as_array) {
        Some(messages) if !messages.is_empty() => messages.as_slice(),
        Some(_) | None => return bad_request("'messages' must be a non-empty array", "messages"),
    };
    let (prompt_tokens, last_user) = reply::read_messages(messages);
    let tool = reply::first_tool_name(inference.field("tools"))
        .filter(|_| inference.field("tool_choice").and_then(Value::as_str) != Some("none"));
    let reply = match tool {
        Some(name) => Reply::ToolCall { name },
        None => Reply::text(
            &last_user,
            inference.config.tokens,
            max_tokens(&inference.body),
        ),
    };
    let render = OpenAiReply {
        endpoint: Endpoint::Chat,
        id: format!("chatcmpl-mock-{}", inference.seq),
        created: routes::unix_now(),
        model: inference.model.clone(),
        reply,
        prompt_tokens,
        include_usage: include_usage(&inference.body),
    };
    let streamed = streamed(&inference, false);
    stream::respond(render, streamed, inference.timing, &shared).await
}

pub(crate) async fn completions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let inference = match begin(&shared, Proto::OpenAi, &uri, &headers, &raw) {
        Ok(inference) => inference,
        Err(error) => return error.into_response(),
    };
    // A prompt array is read as its strings: all count as prompt words, the last one may echo.
    let prompts: Vec<&str> = match inference.field("prompt") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(prompt)) => vec![prompt.as_str()],
        Some(Value::Array(items)) => match items.iter().map(Value::as_str).collect() {
            Some(prompts) => prompts,
            None => {
                return bad_request("'prompt' must be a string or an array of strings", "prompt");
            }
        },
        Some(_) => {
            return bad_request("'prompt' must be a string or an array of strings", "prompt");
        }
    };
    let render = OpenAiReply {
        endpoint: Endpoint::Completion,
        id: format!("cmpl-mock-{}", inference.seq),
        created: routes::unix_now(),
        model: inference.model.clone(),
        reply: Reply::text(
            prompts.last().copied().unwrap_or_default(),
            inference.config.tokens,
            max_tokens(&inference.body),
        ),
        prompt_tokens: prompts.iter().map(|p| reply::word_count(p)).sum(),
        include_usage: include_usage(&inference.body),
    };
    let streamed = streamed(&inference, false);
    stream::respond(render, streamed, inference.timing, &shared).await
}

pub(crate) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let inference = match begin(&shared, Proto::OpenAi, &uri, &headers, &raw) {
        Ok(inference) => inference,
        Err(error) => return error.into_response(),
    };
    let inputs: Vec<&str> = match inference.field("input") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => {
            match items.iter().map(Value::as_str).collect() {
                Some(texts) => texts,
                None => return bad_request("invalid input", "input"),
            }
        }
        Some(_) | None => return bad_request("invalid input", "input"),
    };
    let base64 = match inference.field("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad_request(
                &format!(
                    "Invalid value for 'encoding_format' = {other}. Supported values: ['float', 'base64']."
                ),
                "encoding_format",
            );
        }
    };
    stream::sleep(inference.timing.first_token_delay).await;
    let dim = inference.config.embedding_dim;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = reply::embedding(text, dim);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|t| reply::word_count(t)).sum();
    Json(json!({
        "object": "list",
        "data": data,
        "model": inference.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response()
}

fn bad_request(message: &str, param: &'static str) -> Response {
    MockError::bad_field(message, param)
        .on(Proto::OpenAi)
        .into_response()
}

/// `max_completion_tokens` wins over the legacy `max_tokens` when both are present.
fn max_tokens(body: &serde_json::Map<String, Value>) -> Option<usize> {
    routes::limit(body.get("max_completion_tokens"))
        .or_else(|| routes::limit(body.get("max_tokens")))
}

fn include_usage(body: &serde_json::Map<String, Value>) -> bool {
    body.get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

struct OpenAiReply {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    reply: Reply,
    prompt_tokens: u64,
    include_usage: bool,
}

fn event(value: &Value) -> String {
    format!("data: {value}\n\n")
}

impl OpenAiReply {
    fn finish_reason(&self) -> &'static str {
        match &self.reply {
            Reply::Text { finish, .. } => finish.as_str(),
            Reply::ToolCall { .. } => "tool_calls",
        }
    }

    fn usage(&self) -> Value {
        let completion = self.reply.completion_tokens();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    fn object_name(&self, streamed: bool) -> &'static str {
        match (self.endpoint, streamed) {
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// One streamed chunk; with `include_usage`, chunks other than the usage one carry
    /// `"usage": null`, as OpenAI sends them.
    fn chunk(&self, choices: Value) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": self.object_name(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn delta_chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk(json!([
            {"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}
        ]))
    }

    fn text_chunk(&self, text: String, finish_reason: Option<&str>) -> Value {
        self.chunk(json!([
            {"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}
        ]))
    }
}

impl Render for OpenAiReply {
    const STREAM_CONTENT_TYPE: &'static str = "text/event-stream";

    fn units(&self) -> usize {
        match &self.reply {
            Reply::Text { tokens, .. } => tokens.len(),
            // The call's header delta, then the argument fragments.
            Reply::ToolCall { .. } => 1 + TOOL_ARGUMENT_FRAGMENTS.len(),
        }
    }

    fn open(&mut self) -> Option<Bytes> {
        match self.endpoint {
            Endpoint::Chat => Some(Bytes::from(event(
                &self.delta_chunk(json!({"role": "assistant", "content": ""}), None),
            ))),
            Endpoint::Completion => None,
        }
    }

    fn unit(&mut self, index: usize) -> Bytes {
        let chunk = match (&self.reply, self.endpoint) {
            (Reply::Text { tokens, .. }, Endpoint::Chat) => {
                self.delta_chunk(json!({"content": tokens.text(index)}), None)
            }
            (Reply::Text { tokens, .. }, Endpoint::Completion) => {
                self.text_chunk(tokens.text(index), None)
            }
            (Reply::ToolCall { name }, _) => {
                let call = match index.checked_sub(1) {
                    None => json!({
                        "index": 0,
                        "id": TOOL_CALL_ID,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }),
                    Some(fragment) => json!({
                        "index": 0,
                        "function": {
                            "arguments": TOOL_ARGUMENT_FRAGMENTS.get(fragment).copied().unwrap_or_default(),
                        },
                    }),
                };
                self.delta_chunk(json!({"tool_calls": [call]}), None)
            }
        };
        Bytes::from(event(&chunk))
    }

    fn close(&mut self, _elapsed: Duration) -> Bytes {
        let finish = match self.endpoint {
            Endpoint::Chat => self.delta_chunk(json!({}), Some(self.finish_reason())),
            Endpoint::Completion => self.text_chunk(String::new(), Some(self.finish_reason())),
        };
        let mut out = event(&finish);
        if self.include_usage {
            let mut usage = self.chunk(json!([]));
            usage["usage"] = self.usage();
            out.push_str(&event(&usage));
        }
        out.push_str("data: [DONE]\n\n");
        Bytes::from(out)
    }

    fn whole(&self, _elapsed: Duration) -> Value {
        let choice = match (&self.reply, self.endpoint) {
            (Reply::Text { tokens, .. }, Endpoint::Chat) => json!({
                "index": 0,
                "message": {"role": "assistant", "content": tokens.full_text(), "refusal": null},
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
            (Reply::ToolCall { name }, _) => json!({
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "refusal": null,
                    "tool_calls": [{
                        "id": TOOL_CALL_ID,
                        "type": "function",
                        "function": {"name": name, "arguments": TOOL_ARGUMENTS},
                    }],
                },
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
            (Reply::Text { tokens, .. }, Endpoint::Completion) => json!({
                "text": tokens.full_text(),
                "index": 0,
                "logprobs": null,
                "finish_reason": self.finish_reason(),
            }),
        };
        json!({
            "id": self.id,
            "object": self.object_name(false),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": [choice],
            "usage": self.usage(),
        })
    }
}
