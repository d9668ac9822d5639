//! The Ollama native wire format: requests the front accepts, the NDJSON lines and final
//! objects it writes, and the lines an Ollama-API backend (Ollama, `wardgate llm`) sends back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::BadRequest;
use crate::canonical::{
    BackendBody, ChatRequest, CompletionRequest, EmbedRequest, Event, FinishReason, Message,
    RawJson, ResponseFormat, Role, Sampling, Timings, ToolCall, ToolCallDelta, Usage,
    arguments_text,
};

// ---------------------------------------------------------------------------------------------
// Requests (front side)

/// Runtime options. Unknown keys are ignored, as Ollama does; a known key of the wrong type is
/// a 400 through serde.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaOptions)]
pub struct Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_ctx: Option<u32>,
    /// -1 means "no limit", -2 "fill the context"; both become "up to the cap" here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_predict: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
}

impl Options {
    fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            seed: self.seed,
            stop: self.stop.clone().unwrap_or_default(),
            max_tokens: self
                .num_predict
                .filter(|n| *n >= 0)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repeat_penalty,
            num_ctx: self.num_ctx,
        }
    }

    fn from_sampling(s: &Sampling) -> Options {
        Options {
            num_ctx: s.num_ctx,
            num_predict: s.max_tokens.map(i64::from),
            temperature: s.temperature,
            seed: s.seed,
            stop: (!s.stop.is_empty()).then(|| s.stop.clone()),
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaFunctionCall)]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub name: String,
    /// An object (or, from some peers, a JSON-encoded string), kept as written.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Option<RawJson>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaToolCall)]
pub struct ToolCallWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaMessage)]
pub struct MessageWire {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// The body of `POST /api/chat`. Unknown fields are ignored, as Ollama does.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[schema(as = OllamaChatRequest)]
pub struct ChatRequestIn {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<MessageWire>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<RawJson>>,
    /// `"json"` or a JSON Schema object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub format: Option<RawJson>,
    #[serde(default)]
    pub options: Option<Options>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// A Go duration string (`"5m"`) or a number of seconds.
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub think: Option<RawJson>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
}

impl ChatRequestIn {
    /// Ollama streams unless told otherwise.
    pub fn wants_stream(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    pub fn into_canonical(self) -> Result<ChatRequest, BadRequest> {
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = Role::parse(&m.role).ok_or_else(|| {
                BadRequest::param(
                    format!("messages[{i}].role"),
                    "role must be one of system, user, assistant, tool",
                )
            })?;
            let mut msg = Message::new(role, m.content);
            msg.images = m.images.unwrap_or_default();
            msg.tool_name = m.tool_name;
            msg.tool_call_id = m.tool_call_id;
            for (k, c) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
                msg.tool_calls.push(ToolCall {
                    id: c.id.unwrap_or_else(|| format!("call_{k}")),
                    name: c.function.name,
                    arguments: arguments_text(c.function.arguments.as_ref()),
                });
            }
            messages.push(msg);
        }
        let options = self.options.unwrap_or_default();
        Ok(ChatRequest {
            model: self.model,
            messages,
            sampling: options.sampling(),
            format: format_in(self.format.as_ref())?,
            tools: self.tools.unwrap_or_default(),
            tool_choice: None,
            parallel_tool_calls: None,
            keep_alive: self.keep_alive,
            fairness: None,
        })
    }
}

/// The body of `POST /api/generate`. Unknown fields are ignored, as Ollama does.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[schema(as = OllamaGenerateRequest)]
pub struct GenerateRequestIn {
    pub model: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub context: Option<Vec<i64>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub raw: Option<bool>,
    /// `"json"` or a JSON Schema object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub format: Option<RawJson>,
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// A Go duration string (`"5m"`) or a number of seconds.
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub options: Option<Options>,
}

impl GenerateRequestIn {
    pub fn wants_stream(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    pub fn into_canonical(self) -> Result<CompletionRequest, BadRequest> {
        let raw = self.raw.unwrap_or(false);
        if raw && (self.template.is_some() || self.system.is_some() || self.context.is_some()) {
            return Err(BadRequest::new(
                "raw mode does not support template, system, or context",
            ));
        }
        if self.template.is_some() {
            // A caller-supplied template would be executed by the backend's template engine;
            // the gateway does not forward it.
            return Err(BadRequest::param("template", "template is not supported"));
        }
        if self.context.is_some() {
            return Err(BadRequest::param(
                "context",
                "context is not supported; use /api/chat for conversations",
            ));
        }
        // The completion shape has no images: refused rather than silently dropped, so a
        // client is never told its image was seen when it was not.
        if self.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(BadRequest::param(
                "images",
                "images are not supported on /api/generate; send them in /api/chat messages",
            ));
        }
        let options = self.options.unwrap_or_default();
        Ok(CompletionRequest {
            model: self.model,
            prompt: self.prompt.unwrap_or_default(),
            suffix: self.suffix,
            system: self.system,
            raw,
            sampling: options.sampling(),
            format: format_in(self.format.as_ref())?,
            keep_alive: self.keep_alive,
            fairness: None,
        })
    }
}

fn format_in(v: Option<&RawJson>) -> Result<ResponseFormat, BadRequest> {
    let bad = || BadRequest::param("format", "format must be \"json\" or a JSON schema object");
    let Some(v) = v else {
        return Ok(ResponseFormat::Text);
    };
    match v.first_byte() {
        b'n' => Ok(ResponseFormat::Text),
        b'"' => match serde_json::from_str::<String>(v.get())
            .map_err(|_| bad())?
            .as_str()
        {
            "" => Ok(ResponseFormat::Text),
            "json" => Ok(ResponseFormat::Json),
            _ => Err(bad()),
        },
        b'{' => Ok(ResponseFormat::JsonSchema {
            name: "schema".to_owned(),
            schema: v.clone(),
        }),
        _ => Err(bad()),
    }
}

/// Turns JSON-text arguments into the object Ollama wants, without building a tree; text
/// that is not a JSON object is kept as a string so nothing is lost.
fn arguments_value(s: &str) -> Option<RawJson> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return RawJson::from_string("{}".to_owned()).ok();
    }
    if trimmed.starts_with('{')
        && let Ok(raw) = RawJson::from_string(trimmed.to_owned())
    {
        return Some(raw);
    }
    Some(RawJson::from_value(&Value::String(s.to_owned())))
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

/// The body of `POST /api/embed`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[schema(as = OllamaEmbedRequest)]
pub struct EmbedRequestIn {
    pub model: String,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// A Go duration string (`"5m"`) or a number of seconds.
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

impl EmbedRequestIn {
    pub fn into_canonical(self) -> Result<EmbedRequest, BadRequest> {
        let input = match self.input {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(BadRequest::param("input", "invalid input type")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(BadRequest::param("input", "invalid input type")),
        };
        Ok(EmbedRequest {
            model: self.model,
            input,
            dimensions: self.dimensions,
            truncate: self.truncate,
            keep_alive: self.keep_alive,
        })
    }
}

/// Legacy `/api/embeddings`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[schema(as = OllamaEmbeddingsRequest)]
pub struct EmbeddingsRequestIn {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    /// A Go duration string (`"5m"`) or a number of seconds.
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

/// The body of `POST /api/show`: `model` (or its deprecated alias `name`) is required in
/// practice, but checked by the handler, which answers 400 without either.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[schema(as = OllamaShowRequest)]
pub struct ShowRequestIn {
    #[serde(default)]
    pub model: Option<String>,
    /// Deprecated alias of `model`.
    #[serde(default)]
    pub name: Option<String>,
}

impl ShowRequestIn {
    pub fn model(&self) -> Option<&str> {
        self.model
            .as_deref()
            .or(self.name.as_deref())
            .filter(|m| !m.is_empty())
    }
}

// ---------------------------------------------------------------------------------------------
// Responses (front side)

/// Every non-2xx answer of the Ollama front (and an error line in a stream).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(as = OllamaErrorBody)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaMessageOut)]
pub struct MessageOut<'a> {
    pub role: &'static str,
    pub content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallWire>,
}

/// One line of a chat or generate stream, or the final object.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaLine)]
pub struct LineOut<'a> {
    pub model: &'a str,
    pub created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<&'a str>,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_eval_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_duration: Option<u64>,
}

/// Which Ollama endpoint a line belongs to: chat lines carry `message`, generate lines
/// `response`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Chat,
    Generate,
}

/// The metrics of a final object. Ollama leaves zero metrics out (`omitempty`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub usage: Usage,
    pub timings: Timings,
}

fn nz(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// Chat lines carry a `message`, generate lines a `response`.
fn payload<'a>(
    kind: LineKind,
    content: &'a str,
    tool_calls: &[ToolCall],
) -> (Option<MessageOut<'a>>, Option<&'a str>) {
    match kind {
        LineKind::Chat => (
            Some(MessageOut {
                role: "assistant",
                content,
                tool_calls: tool_calls_out(tool_calls),
            }),
            None,
        ),
        LineKind::Generate => (None, Some(content)),
    }
}

/// A non-final line with new text and/or complete tool calls.
pub fn line(
    kind: LineKind,
    model: &str,
    created_at: &str,
    content: &str,
    tool_calls: &[ToolCall],
) -> String {
    let (message, response) = payload(kind, content, tool_calls);
    let l = LineOut {
        model,
        created_at,
        message,
        response,
        done: false,
        done_reason: None,
        total_duration: None,
        load_duration: None,
        prompt_eval_count: None,
        prompt_eval_duration: None,
        eval_count: None,
        eval_duration: None,
    };
    serde_json::to_string(&l).unwrap_or_default()
}

/// The final `done: true` object. `content` is empty when streaming and the whole text when not.
pub fn final_line(
    kind: LineKind,
    model: &str,
    created_at: &str,
    content: &str,
    tool_calls: &[ToolCall],
    reason: FinishReason,
    m: Metrics,
) -> String {
    let (message, response) = payload(kind, content, tool_calls);
    let l = LineOut {
        model,
        created_at,
        message,
        response,
        done: true,
        done_reason: Some(reason.ollama()),
        total_duration: m.timings.total_ns.and_then(nz),
        load_duration: m.timings.load_ns.and_then(nz),
        prompt_eval_count: nz(m.usage.prompt_tokens),
        prompt_eval_duration: m.timings.prompt_eval_ns.and_then(nz),
        eval_count: nz(m.usage.completion_tokens),
        eval_duration: m.timings.eval_ns.and_then(nz),
    };
    serde_json::to_string(&l).unwrap_or_default()
}

fn tool_calls_out(calls: &[ToolCall]) -> Vec<ToolCallWire> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCallWire {
            id: Some(c.id.clone()),
            function: FunctionCall {
                index: Some(i as u32),
                name: c.name.clone(),
                arguments: arguments_value(&c.arguments),
            },
        })
        .collect()
}

/// The answer of `POST /api/embed`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaEmbedResponse)]
pub struct EmbedOut<'a> {
    pub model: &'a str,
    pub embeddings: &'a [Vec<f32>],
    /// Nanoseconds.
    pub total_duration: u64,
    /// Nanoseconds.
    pub load_duration: u64,
    pub prompt_eval_count: u64,
}

/// The answer of the legacy `POST /api/embeddings`: one vector and nothing else (empty for an
/// empty prompt).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaEmbeddingsResponse)]
pub struct EmbeddingOut {
    pub embedding: Vec<f32>,
}

/// One entry of `GET /api/ps`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaRunningModel)]
pub struct PsModel {
    pub name: String,
    pub model: String,
    pub size: u64,
    pub digest: String,
    pub details: Details,
    /// RFC 3339.
    pub expires_at: String,
    pub size_vram: u64,
    pub context_length: u32,
}

/// The answer of `GET /api/ps`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaRunningModels)]
pub struct Ps {
    pub models: Vec<PsModel>,
}

/// The answer of `POST /api/show`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaShowResponse)]
pub struct ShowOut {
    pub modelfile: String,
    pub parameters: String,
    pub template: String,
    pub license: String,
    pub details: Details,
    /// A flat map of model facts (`wardgate.context_length`).
    pub model_info: Map<String, Value>,
    pub capabilities: Vec<String>,
    /// RFC 3339.
    pub modified_at: String,
}

/// The answer of `GET /api/version`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = OllamaVersion)]
pub struct VersionOut<'a> {
    pub version: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Backend side

/// The `/api/chat` body for an Ollama-API backend. Always streamed (see the OpenAI side).
pub fn backend_chat_body(req: &ChatRequest) -> BackendBody {
    let messages: Vec<MessageWire> = req
        .messages
        .iter()
        .map(|m| MessageWire {
            role: m.role.as_str().to_owned(),
            content: m.content.clone(),
            images: (!m.images.is_empty()).then(|| m.images.clone()),
            tool_calls: (!m.tool_calls.is_empty()).then(|| {
                m.tool_calls
                    .iter()
                    .map(|c| ToolCallWire {
                        id: Some(c.id.clone()),
                        function: FunctionCall {
                            index: None,
                            name: c.name.clone(),
                            arguments: arguments_value(&c.arguments),
                        },
                    })
                    .collect()
            }),
            tool_name: m.tool_name.clone(),
            tool_call_id: m.tool_call_id.clone(),
        })
        .collect();
    let mut body = BackendBody::new(serde_json::json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "options": Options::from_sampling(&req.sampling),
    }));
    if let Some(k) = &req.keep_alive {
        body.fields["keep_alive"] = k.clone();
    }
    format_out(&mut body, &req.format);
    if !req.tools.is_empty() {
        body.set_raw_array("tools", &req.tools);
    }
    body
}

pub fn backend_generate_body(req: &CompletionRequest) -> BackendBody {
    let mut body = serde_json::json!({
        "model": req.model,
        "prompt": req.prompt,
        "stream": true,
        "options": Options::from_sampling(&req.sampling),
    });
    if let Some(s) = &req.suffix {
        body["suffix"] = Value::String(s.clone());
    }
    if let Some(s) = &req.system {
        body["system"] = Value::String(s.clone());
    }
    if req.raw {
        body["raw"] = Value::Bool(true);
    }
    if let Some(k) = &req.keep_alive {
        body["keep_alive"] = k.clone();
    }
    let mut body = BackendBody::new(body);
    format_out(&mut body, &req.format);
    body
}

pub fn backend_embed_body(req: &EmbedRequest) -> Value {
    let mut body = serde_json::json!({"model": req.model, "input": req.input});
    if let Some(d) = req.dimensions {
        body["dimensions"] = d.into();
    }
    if let Some(t) = req.truncate {
        body["truncate"] = t.into();
    }
    if let Some(k) = &req.keep_alive {
        body["keep_alive"] = k.clone();
    }
    body
}

fn format_out(body: &mut BackendBody, f: &ResponseFormat) {
    match f {
        ResponseFormat::Text => {}
        ResponseFormat::Json => body.fields["format"] = Value::String("json".to_owned()),
        ResponseFormat::JsonSchema { schema, .. } => body.set_raw("format", schema.clone()),
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct MessageIn {
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallWire>>,
}

/// One line of an Ollama backend's chat or generate stream.
#[derive(Clone, Debug, Deserialize)]
pub struct LineIn {
    #[serde(default)]
    pub message: Option<MessageIn>,
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub total_duration: Option<u64>,
    #[serde(default)]
    pub load_duration: Option<u64>,
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    #[serde(default)]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default)]
    pub eval_count: Option<u64>,
    #[serde(default)]
    pub eval_duration: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

impl LineIn {
    /// The events one line carries: text and tool calls (Ollama sends tool calls whole, each
    /// becomes one fragment with id, name and all arguments), then the finish if `done`.
    /// `next_tool_index` numbers tool calls across the whole stream.
    pub fn into_events(self, next_tool_index: &mut u32) -> Vec<Event> {
        let mut content = self.response.unwrap_or_default();
        let mut tool_calls = Vec::new();
        if let Some(m) = self.message {
            content.push_str(&m.content);
            for c in m.tool_calls.unwrap_or_default() {
                let index = *next_tool_index;
                *next_tool_index += 1;
                tool_calls.push(ToolCallDelta {
                    index,
                    id: Some(c.id.unwrap_or_else(|| format!("call_{index}"))),
                    name: Some(c.function.name),
                    arguments: arguments_text(c.function.arguments.as_ref()),
                });
            }
        }
        let mut events = Vec::with_capacity(2);
        if !content.is_empty() || !tool_calls.is_empty() {
            events.push(Event::Delta {
                content,
                tool_calls,
            });
        }
        if self.done {
            let reason = self
                .done_reason
                .as_deref()
                .map(FinishReason::parse)
                .unwrap_or(FinishReason::Stop);
            let usage = match (self.prompt_eval_count, self.eval_count) {
                (None, None) => None,
                (p, e) => Some(Usage {
                    prompt_tokens: p.unwrap_or(0),
                    completion_tokens: e.unwrap_or(0),
                }),
            };
            events.push(Event::Finish {
                reason,
                usage,
                timings: Timings {
                    total_ns: self.total_duration,
                    load_ns: self.load_duration,
                    prompt_eval_ns: self.prompt_eval_duration,
                    eval_ns: self.eval_duration,
                },
            });
        }
        events
    }
}

/// Backend `/api/embed` response.
pub fn parse_backend_embed(v: &Value) -> Option<(Vec<Vec<f32>>, u64)> {
    let vecs = v
        .get("embeddings")?
        .as_array()?
        .iter()
        .map(|e| {
            e.as_array()?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
        })
        .collect::<Option<Vec<_>>>()?;
    let tokens = v
        .get("prompt_eval_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some((vecs, tokens))
}

/// Model details as `/api/tags`, `/api/show` and `/api/ps` carry them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaModelDetails)]
pub struct Details {
    #[serde(default)]
    pub parent_model: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub families: Option<Vec<String>>,
    #[serde(default)]
    pub parameter_size: String,
    #[serde(default)]
    pub quantization_level: String,
}

/// One entry of `/api/tags` (a backend's, or the gateway's own).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaTagModel)]
pub struct TagModel {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub modified_at: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub details: Details,
}

/// The answer of `GET /api/tags`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaTags)]
pub struct Tags {
    #[serde(default)]
    pub models: Vec<TagModel>,
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_request_converts_options_tools_and_format() {
        let req: ChatRequestIn = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi", "images": ["AAAA"]},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
                {"role": "tool", "content": "42", "tool_name": "f"}
            ],
            "format": "json",
            "options": {"num_predict": 12, "temperature": 0.0, "stop": ["x"], "num_ctx": 2048, "mirostat": 1},
            "keep_alive": "5m"
        }))
        .unwrap();
        assert!(req.wants_stream());
        let c = req.into_canonical().unwrap();
        assert_eq!(c.sampling.max_tokens, Some(12));
        assert_eq!(c.sampling.num_ctx, Some(2048));
        assert_eq!(c.format, ResponseFormat::Json);
        assert_eq!(c.messages[1].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(c.messages[2].tool_name.as_deref(), Some("f"));
        assert_eq!(c.keep_alive, Some(json!("5m")));
        // And back out to a backend, arguments become an object again.
        let body = backend_chat_body(&c);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["arguments"],
            json!({"a": 1})
        );
        assert_eq!(body["options"]["num_predict"], 12);
        assert_eq!(body["format"], "json");
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn bad_option_types_and_raw_conflicts_are_refused() {
        assert!(
            serde_json::from_value::<ChatRequestIn>(
                json!({"model": "m", "options": {"num_predict": "many"}})
            )
            .is_err()
        );
        let g: GenerateRequestIn =
            serde_json::from_value(json!({"model": "m", "raw": true, "system": "s"})).unwrap();
        assert_eq!(
            g.into_canonical().unwrap_err().message,
            "raw mode does not support template, system, or context"
        );
        let f: GenerateRequestIn =
            serde_json::from_value(json!({"model": "m", "format": 3})).unwrap();
        assert_eq!(
            f.into_canonical().unwrap_err().param.as_deref(),
            Some("format")
        );
        let e: EmbedRequestIn =
            serde_json::from_value(json!({"model": "m", "input": ["a", 1]})).unwrap();
        assert_eq!(
            e.into_canonical().unwrap_err().message,
            "invalid input type"
        );
    }

    #[test]
    fn generate_refuses_images_instead_of_dropping_them() {
        let g: GenerateRequestIn =
            serde_json::from_value(json!({"model": "m", "prompt": "p", "images": ["AAAA"]}))
                .unwrap();
        assert_eq!(
            g.into_canonical().unwrap_err().param.as_deref(),
            Some("images")
        );
        let g: GenerateRequestIn =
            serde_json::from_value(json!({"model": "m", "prompt": "p", "images": []})).unwrap();
        assert!(g.into_canonical().is_ok());
    }

    #[test]
    fn negative_num_predict_means_no_limit() {
        let g: GenerateRequestIn =
            serde_json::from_value(json!({"model": "m", "options": {"num_predict": -1}})).unwrap();
        assert_eq!(g.into_canonical().unwrap().sampling.max_tokens, None);
    }

    #[test]
    fn backend_lines_become_events() {
        let mut idx = 0;
        let l: LineIn = serde_json::from_value(
            json!({"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": false}),
        )
        .unwrap();
        assert_eq!(l.into_events(&mut idx), vec![Event::text("Hi")]);
        let t: LineIn = serde_json::from_value(json!({"message": {"content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"city": "Paris"}}}]}, "done": false})).unwrap();
        let ev = t.into_events(&mut idx);
        assert!(
            matches!(&ev[0], Event::Delta { tool_calls, .. } if tool_calls[0].arguments == "{\"city\":\"Paris\"}" && tool_calls[0].id.as_deref() == Some("call_0"))
        );
        let f: LineIn = serde_json::from_value(
            json!({"response": "", "done": true, "done_reason": "length",
            "total_duration": 10, "prompt_eval_count": 3, "eval_count": 5, "eval_duration": 7}),
        )
        .unwrap();
        assert_eq!(
            f.into_events(&mut idx),
            vec![Event::Finish {
                reason: FinishReason::Length,
                usage: Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 5
                }),
                timings: Timings {
                    total_ns: Some(10),
                    load_ns: None,
                    prompt_eval_ns: None,
                    eval_ns: Some(7)
                },
            }]
        );
    }

    #[test]
    fn final_line_leaves_zero_metrics_out() {
        let s = final_line(
            LineKind::Generate,
            "m",
            "t",
            "",
            &[],
            FinishReason::Stop,
            Metrics {
                usage: Usage {
                    prompt_tokens: 0,
                    completion_tokens: 4,
                },
                timings: Timings {
                    total_ns: Some(9),
                    ..Timings::default()
                },
            },
        );
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            json!({"model": "m", "created_at": "t", "response": "", "done": true,
            "done_reason": "stop", "total_duration": 9, "eval_count": 4})
        );
        let c = line(
            LineKind::Chat,
            "m",
            "t",
            "",
            &[ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments: "not json".into(),
            }],
        );
        let v: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(
            v["message"]["tool_calls"][0]["function"]["arguments"],
            "not json"
        );
    }
}
