//! The OpenAI-compatible wire format: requests the front accepts, responses and stream chunks
//! it sends, and the responses an OpenAI-compatible backend sends back.
//!
//! Parsing is lenient where the official clients and peers differ (unknown fields are ignored,
//! `content` may be a string or parts) and strict where a silent misreading would change the
//! answer (`n > 1`, unknown roles, malformed `response_format` are refused).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::canonical::{
    BackendBody, ChatRequest, CompletionRequest, EmbedRequest, FinishReason, Message, RawJson,
    ResponseFormat, Role, Sampling, ToolCall, ToolCallDelta, Usage,
};
use crate::{BadRequest, base64_f32};

// ---------------------------------------------------------------------------------------------
// Requests (front side)

/// `stop`: one string or a list.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct ImageUrl {
    pub url: String,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct FunctionIn {
    #[serde(default)]
    pub name: String,
    /// A JSON-encoded string (OpenAI) or an object, kept as written.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<RawJson>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct ToolCallIn {
    #[serde(default)]
    pub id: Option<String>,
    pub function: FunctionIn,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<MessageIn>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StringOrList>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Kept as raw JSON: its schema is forwarded as written, never built into a tree.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<RawJson>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<RawJson>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<RawJson>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
}

impl ChatCompletionRequest {
    pub fn wants_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// Converts to the neutral shape. `max_completion_tokens` wins over the legacy `max_tokens`.
    pub fn into_canonical(self) -> Result<ChatRequest, BadRequest> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(BadRequest::param("n", "only n=1 is supported"));
        }
        if self.messages.is_empty() {
            return Err(BadRequest::param("messages", "messages must not be empty"));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            messages.push(message_in(m, i)?);
        }
        let stop = self.stop.map(StringOrList::into_vec).unwrap_or_default();
        if stop.len() > 4 {
            return Err(BadRequest::param("stop", "at most 4 stop sequences"));
        }
        Ok(ChatRequest {
            model: self.model,
            messages,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                stop,
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                ..Sampling::default()
            },
            format: response_format(self.response_format.as_ref())?,
            tools: self.tools.unwrap_or_default(),
            tool_choice: self.tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            keep_alive: None,
            fairness: None,
        })
    }
}

fn message_in(m: MessageIn, i: usize) -> Result<Message, BadRequest> {
    let role = Role::parse(&m.role).ok_or_else(|| {
        BadRequest::param(
            format!("messages[{i}].role"),
            "role must be one of system, developer, user, assistant, tool",
        )
    })?;
    let mut msg = Message::new(role, String::new());
    match m.content {
        None => {}
        Some(Content::Text(t)) => msg.content = t,
        Some(Content::Parts(parts)) => {
            for p in parts {
                match p.kind.as_str() {
                    "text" => msg.content.push_str(p.text.as_deref().unwrap_or_default()),
                    "image_url" => {
                        let url = p.image_url.map(|u| u.url).unwrap_or_default();
                        let data = url
                            .strip_prefix("data:")
                            .and_then(|rest| rest.split_once(";base64,"))
                            .map(|(_, b64)| b64.to_owned())
                            .ok_or_else(|| {
                                BadRequest::param(
                                    format!("messages[{i}].content"),
                                    "images must be base64 data: URLs",
                                )
                            })?;
                        msg.images.push(data);
                    }
                    _ => {
                        return Err(BadRequest::param(
                            format!("messages[{i}].content"),
                            "content parts must be text or image_url",
                        ));
                    }
                }
            }
        }
    }
    for (k, c) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
        let arguments = crate::canonical::arguments_text(c.function.arguments.as_ref());
        msg.tool_calls.push(ToolCall {
            id: c.id.unwrap_or_else(|| format!("call_{k}")),
            name: c.function.name,
            arguments,
        });
    }
    msg.tool_call_id = m.tool_call_id;
    if role == Role::Tool {
        msg.tool_name = m.name;
    }
    Ok(msg)
}

/// The parts of `response_format` the gateway reads; the schema itself stays raw.
#[derive(Deserialize)]
struct ResponseFormatParts {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    json_schema: Option<JsonSchemaParts>,
}

#[derive(Deserialize)]
struct JsonSchemaParts {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    schema: Option<RawJson>,
}

fn response_format(v: Option<&RawJson>) -> Result<ResponseFormat, BadRequest> {
    let Some(v) = v else {
        return Ok(ResponseFormat::Text);
    };
    let bad = || {
        BadRequest::param(
            "response_format",
            "response_format must be {\"type\": \"text\" | \"json_object\" | \"json_schema\"}",
        )
    };
    if v.first_byte() != b'{' {
        return Err(bad());
    }
    let parts: ResponseFormatParts = serde_json::from_str(v.get()).map_err(|_| bad())?;
    match parts.kind.as_deref() {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::Json),
        Some("json_schema") => {
            let js = parts.json_schema.ok_or_else(bad)?;
            let name = js.name.unwrap_or_default();
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(BadRequest::param(
                    "response_format.json_schema.name",
                    "name must be 1-64 letters, digits, '_' or '-'",
                ));
            }
            let schema = match js.schema {
                Some(s) if s.first_byte() == b'{' => s,
                None => RawJson::from_value(&Value::Object(Default::default())),
                Some(_) => {
                    return Err(BadRequest::param(
                        "response_format.json_schema.schema",
                        "schema must be a JSON object",
                    ));
                }
            };
            Ok(ResponseFormat::JsonSchema { name, schema })
        }
        _ => Err(bad()),
    }
}

/// `prompt` of `/v1/completions`: a string or a list holding one string.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct CompletionRequestIn {
    pub model: String,
    pub prompt: Prompt,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<StringOrList>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub best_of: Option<u32>,
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
}

impl CompletionRequestIn {
    pub fn wants_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    pub fn into_canonical(self) -> Result<CompletionRequest, BadRequest> {
        if self.n.is_some_and(|n| n != 1) || self.best_of.is_some_and(|n| n != 1) {
            return Err(BadRequest::param(
                "n",
                "only n=1 and best_of=1 are supported",
            ));
        }
        if self.echo == Some(true) {
            return Err(BadRequest::param("echo", "echo is not supported"));
        }
        let prompt = match self.prompt {
            Prompt::One(p) => p,
            Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
            Prompt::Many(_) => {
                return Err(BadRequest::param(
                    "prompt",
                    "prompt must be a string or a list of one string",
                ));
            }
        };
        let stop = self.stop.map(StringOrList::into_vec).unwrap_or_default();
        if stop.len() > 4 {
            return Err(BadRequest::param("stop", "at most 4 stop sequences"));
        }
        Ok(CompletionRequest {
            model: self.model,
            prompt,
            suffix: self.suffix,
            system: None,
            // Legacy completions continue the text as written, with no chat template.
            raw: true,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                stop,
                // OpenAI's documented default for legacy completions.
                max_tokens: Some(self.max_tokens.unwrap_or(16)),
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                ..Sampling::default()
            },
            format: ResponseFormat::Text,
            keep_alive: None,
            fairness: None,
        })
    }
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequestIn {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u32>,
}

/// How embedding vectors are written back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

impl EmbeddingRequestIn {
    pub fn encoding(&self) -> Result<EncodingFormat, BadRequest> {
        match self.encoding_format.as_deref() {
            None | Some("float") => Ok(EncodingFormat::Float),
            Some("base64") => Ok(EncodingFormat::Base64),
            Some(_) => Err(BadRequest::param(
                "encoding_format",
                "encoding_format must be 'float' or 'base64'",
            )),
        }
    }

    pub fn into_canonical(self) -> Result<EmbedRequest, BadRequest> {
        let input = match self.input {
            EmbeddingInput::One(s) => vec![s],
            EmbeddingInput::Many(v) if v.is_empty() => {
                return Err(BadRequest::param("input", "input must not be empty"));
            }
            EmbeddingInput::Many(v) => v,
        };
        Ok(EmbedRequest {
            model: self.model,
            input,
            dimensions: self.dimensions,
            truncate: None,
            keep_alive: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Responses (front side)

/// The `error` member of every OpenAI-front error body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(as = OpenAiErrorObject)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// Every non-2xx answer of the OpenAI front and the admin API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(as = OpenAiErrorBody)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct UsageOut {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        UsageOut {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ToolCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionOut<'a>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatMessageOut<'a> {
    pub role: &'static str,
    pub content: Option<&'a str>,
    pub refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatChoiceOut<'a> {
    pub index: u32,
    pub message: ChatMessageOut<'a>,
    /// Always `null`: log probabilities are not returned.
    #[schema(schema_with = crate::schema::null)]
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatCompletionOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: i64,
    pub model: &'a str,
    pub choices: Vec<ChatChoiceOut<'a>>,
    pub usage: UsageOut,
}

/// The non-streaming chat answer.
pub fn chat_completion(
    id: &str,
    created: i64,
    model: &str,
    content: &str,
    tool_calls: &[ToolCall],
    finish: FinishReason,
    usage: Usage,
) -> Value {
    let finish = if tool_calls.is_empty() {
        finish
    } else {
        FinishReason::ToolCalls
    };
    let body = ChatCompletionOut {
        id,
        object: "chat.completion",
        created,
        model,
        choices: vec![ChatChoiceOut {
            index: 0,
            message: ChatMessageOut {
                role: "assistant",
                content: if content.is_empty() && !tool_calls.is_empty() {
                    None
                } else {
                    Some(content)
                },
                refusal: None,
                tool_calls: tool_calls
                    .iter()
                    .map(|c| ToolCallOut {
                        index: None,
                        id: Some(&c.id),
                        kind: Some("function"),
                        function: FunctionOut {
                            name: Some(&c.name),
                            arguments: &c.arguments,
                        },
                    })
                    .collect(),
            },
            logprobs: None,
            finish_reason: finish.openai(),
        }],
        usage: usage.into(),
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChunkChoiceOut<'a> {
    pub index: u32,
    pub delta: DeltaOut<'a>,
    /// Always `null`: log probabilities are not returned.
    #[schema(schema_with = crate::schema::null)]
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatChunkOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: i64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoiceOut<'a>>,
    /// Present (as `null` or the totals) only when the client asked for usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<UsageOut>)]
    pub usage: Option<Option<UsageOut>>,
}

/// Writes the SSE `data` of chat stream chunks. It keeps what every chunk repeats (id, created,
/// model) and whether a tool call was seen, which turns the finish reason into `tool_calls`.
#[derive(Debug)]
pub struct ChatChunkWriter {
    pub id: String,
    pub created: i64,
    pub model: String,
    pub include_usage: bool,
    saw_tool_calls: bool,
}

impl ChatChunkWriter {
    pub fn new(id: String, created: i64, model: String, include_usage: bool) -> Self {
        ChatChunkWriter {
            id,
            created,
            model,
            include_usage,
            saw_tool_calls: false,
        }
    }

    fn chunk(&self, delta: DeltaOut<'_>, finish: Option<&'static str>) -> String {
        let chunk = ChatChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: vec![ChunkChoiceOut {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None),
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    /// The opening chunk that names the role.
    pub fn role(&self) -> String {
        self.chunk(
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                tool_calls: Vec::new(),
            },
            None,
        )
    }

    pub fn delta(&mut self, content: &str, tool_calls: &[ToolCallDelta]) -> String {
        if !tool_calls.is_empty() {
            self.saw_tool_calls = true;
        }
        self.chunk(
            DeltaOut {
                role: None,
                content: (!content.is_empty() || tool_calls.is_empty()).then_some(content),
                tool_calls: tool_calls
                    .iter()
                    .map(|d| ToolCallOut {
                        index: Some(d.index),
                        id: d.id.as_deref(),
                        kind: d.id.as_ref().map(|_| "function"),
                        function: FunctionOut {
                            name: d.name.as_deref(),
                            arguments: &d.arguments,
                        },
                    })
                    .collect(),
            },
            None,
        )
    }

    /// The closing chunk (empty delta, finish reason) and, if asked for, the usage chunk.
    pub fn finish(&self, reason: FinishReason, usage: Usage) -> Vec<String> {
        let reason = if self.saw_tool_calls {
            FinishReason::ToolCalls
        } else {
            reason
        };
        let mut out = vec![self.chunk(
            DeltaOut {
                role: None,
                content: None,
                tool_calls: Vec::new(),
            },
            Some(reason.openai()),
        )];
        if self.include_usage {
            let chunk = ChatChunkOut {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: Vec::new(),
                usage: Some(Some(usage.into())),
            };
            out.push(serde_json::to_string(&chunk).unwrap_or_default());
        }
        out
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TextChoiceOut<'a> {
    pub text: &'a str,
    pub index: u32,
    /// Always `null`: log probabilities are not returned.
    #[schema(schema_with = crate::schema::null)]
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TextCompletionOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: i64,
    pub model: &'a str,
    pub choices: Vec<TextChoiceOut<'a>>,
    /// Always present on a whole answer; on stream chunks only when the client asked for
    /// usage (`null` until the last chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<UsageOut>)]
    pub usage: Option<Option<UsageOut>>,
}

/// The body of a legacy completion, whole or as one stream chunk.
pub fn text_completion(
    id: &str,
    created: i64,
    model: &str,
    text: &str,
    finish: Option<FinishReason>,
    usage: Option<Option<Usage>>,
) -> String {
    let body = TextCompletionOut {
        id,
        object: "text_completion",
        created,
        model,
        choices: vec![TextChoiceOut {
            text,
            index: 0,
            logprobs: None,
            finish_reason: finish.map(FinishReason::openai),
        }],
        usage: usage.map(|u| u.map(UsageOut::from)),
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// The final usage-only chunk of a legacy completion stream.
pub fn text_completion_usage(id: &str, created: i64, model: &str, usage: Usage) -> String {
    let body = TextCompletionOut {
        id,
        object: "text_completion",
        created,
        model,
        choices: Vec::new(),
        usage: Some(Some(usage.into())),
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// One vector: floats, or base64 of little-endian `f32` when `encoding_format` is `base64`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EmbeddingOut {
    /// Always `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct EmbeddingUsageOut {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// The answer of `/v1/embeddings`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EmbeddingsOut<'a> {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<EmbeddingOut>,
    pub model: &'a str,
    pub usage: EmbeddingUsageOut,
}

/// The embeddings answer, vectors as floats or base64 of little-endian f32.
pub fn embeddings(
    model: &str,
    vectors: &[Vec<f32>],
    encoding: EncodingFormat,
    tokens: u64,
) -> Value {
    let data = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| EmbeddingOut {
            object: "embedding",
            index,
            embedding: match encoding {
                EncodingFormat::Float => EmbeddingVector::Float(v.clone()),
                EncodingFormat::Base64 => EmbeddingVector::Base64(base64_f32::encode(v)),
            },
        })
        .collect();
    let body = EmbeddingsOut {
        object: "list",
        data,
        model,
        usage: EmbeddingUsageOut {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// One entry of `GET /v1/models`, and the answer of `GET /v1/models/{id}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelOut<'a> {
    pub id: &'a str,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    pub owned_by: &'a str,
}

/// The answer of `GET /v1/models`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelListOut<'a> {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<ModelOut<'a>>,
}

/// `GET /v1/models`.
pub fn model_list(models: &[(String, i64, String)]) -> Value {
    let body = ModelListOut {
        object: "list",
        data: models
            .iter()
            .map(|(id, created, owned_by)| ModelOut {
                id,
                object: "model",
                created: *created,
                owned_by,
            })
            .collect(),
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

pub fn model_object(id: &str, created: i64, owner: &str) -> Value {
    let body = ModelOut {
        id,
        object: "model",
        created,
        owned_by: owner,
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------------
// Backend side: what the gateway sends to an OpenAI-compatible server and reads back.

/// The request body for an OpenAI-compatible backend. The gateway always streams from
/// backends: one code path for both kinds of client, and the first-token deadline can be
/// enforced on the stream.
pub fn backend_chat_body(req: &ChatRequest) -> BackendBody {
    let messages: Vec<Value> = req.messages.iter().map(message_out).collect();
    let mut fields = serde_json::json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    sampling_into(&mut fields, &req.sampling);
    if let Some(p) = req.parallel_tool_calls {
        fields["parallel_tool_calls"] = Value::Bool(p);
    }
    let mut body = BackendBody::new(fields);
    format_into(&mut body, &req.format);
    if !req.tools.is_empty() {
        body.set_raw_array("tools", &req.tools);
    }
    if let Some(tc) = &req.tool_choice {
        body.set_raw("tool_choice", tc.clone());
    }
    body
}

pub fn backend_completion_body(req: &CompletionRequest) -> Value {
    let prompt = match &req.system {
        Some(system) if !req.raw => format!("{system}\n\n{}", req.prompt),
        _ => req.prompt.clone(),
    };
    let mut body = serde_json::json!({
        "model": req.model,
        "prompt": prompt,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(s) = &req.suffix {
        body["suffix"] = Value::String(s.clone());
    }
    sampling_into(&mut body, &req.sampling);
    body
}

pub fn backend_embed_body(req: &EmbedRequest) -> Value {
    let mut body = serde_json::json!({
        "model": req.model,
        "input": req.input,
        "encoding_format": "float",
    });
    if let Some(d) = req.dimensions {
        body["dimensions"] = d.into();
    }
    body
}

fn message_out(m: &Message) -> Value {
    let mut v = serde_json::json!({"role": m.role.as_str(), "content": m.content});
    if !m.images.is_empty() {
        let mut parts = vec![serde_json::json!({"type": "text", "text": m.content})];
        for img in &m.images {
            parts.push(serde_json::json!({
                "type": "image_url",
                "image_url": {"url": format!("data:image/png;base64,{img}")},
            }));
        }
        v["content"] = Value::Array(parts);
    }
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })
            })
            .collect();
        if m.content.is_empty() {
            v["content"] = Value::Null;
        }
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = Value::String(id.clone());
    }
    v
}

fn sampling_into(body: &mut Value, s: &Sampling) {
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body[k] = v;
        }
    };
    set("temperature", s.temperature.map(Value::from));
    set("top_p", s.top_p.map(Value::from));
    set("seed", s.seed.map(Value::from));
    set("max_tokens", s.max_tokens.map(Value::from));
    set("presence_penalty", s.presence_penalty.map(Value::from));
    set("frequency_penalty", s.frequency_penalty.map(Value::from));
    // llama.cpp and vLLM understand these extensions; OpenAI ignores them.
    set("top_k", s.top_k.map(Value::from));
    set("min_p", s.min_p.map(Value::from));
    set("repeat_penalty", s.repeat_penalty.map(Value::from));
    if !s.stop.is_empty() {
        body["stop"] = serde_json::json!(s.stop);
    }
}

fn format_into(body: &mut BackendBody, f: &ResponseFormat) {
    match f {
        ResponseFormat::Text => {}
        ResponseFormat::Json => {
            body.fields["response_format"] = serde_json::json!({"type": "json_object"})
        }
        ResponseFormat::JsonSchema { name, schema } => {
            // Written around the raw schema text: the schema is never built into a tree.
            let text = format!(
                r#"{{"type":"json_schema","json_schema":{{"name":{},"schema":{}}}}}"#,
                Value::String(name.clone()),
                schema.get()
            );
            if let Ok(raw) = RawJson::from_string(text) {
                body.set_raw("response_format", raw);
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct UsageIn {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FunctionDeltaIn {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ToolCallDeltaIn {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDeltaIn>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct DeltaIn {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDeltaIn>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChoiceIn {
    #[serde(default)]
    pub delta: Option<DeltaIn>,
    /// A whole (non-streamed) chat completion carries `message` instead: a server that ignores
    /// `stream: true` answers so, and its answer is read as a one-chunk stream.
    #[serde(default)]
    pub message: Option<DeltaIn>,
    /// Legacy completions carry `text` instead of a delta.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One chunk of a backend stream (chat or legacy completion).
#[derive(Clone, Debug, Deserialize)]
pub struct ChunkIn {
    #[serde(default)]
    pub choices: Vec<ChoiceIn>,
    #[serde(default)]
    pub usage: Option<UsageIn>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// What one backend chunk says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkParts {
    pub content: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish: Option<FinishReason>,
    pub usage: Option<Usage>,
}

impl ChunkIn {
    pub fn into_parts(self) -> ChunkParts {
        let mut parts = ChunkParts {
            usage: self.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            }),
            ..ChunkParts::default()
        };
        // Only choice 0 exists: the gateway never asks for n > 1.
        if let Some(choice) = self.choices.into_iter().next() {
            if let Some(text) = choice.text {
                parts.content.push_str(&text);
            }
            if let Some(delta) = choice.delta.or(choice.message) {
                if let Some(c) = delta.content {
                    parts.content.push_str(&c);
                }
                for (k, d) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    let f = d.function.unwrap_or(FunctionDeltaIn {
                        name: None,
                        arguments: None,
                    });
                    parts.tool_calls.push(ToolCallDelta {
                        index: d.index.unwrap_or(k as u32),
                        id: d.id,
                        name: f.name,
                        arguments: f.arguments.unwrap_or_default(),
                    });
                }
            }
            parts.finish = choice.finish_reason.as_deref().map(FinishReason::parse);
        }
        parts
    }
}

/// Reads an OpenAI-compatible backend's error body (OpenAI, vLLM current and flat, llama.cpp)
/// into (type, code) strings for classification; the message is returned separately and is
/// never shown to clients for server errors.
pub fn parse_backend_error(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None, None);
    };
    let obj = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let kind = obj.get("type").and_then(Value::as_str).map(str::to_owned);
    let code = match obj.get("code") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = obj
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| v.get("error").and_then(Value::as_str))
        .map(str::to_owned);
    (kind, code, message)
}

/// Backend embeddings response: floats, or base64 if a server ignored our `float` request.
pub fn parse_backend_embeddings(v: &Value) -> Option<(Vec<Vec<f32>>, u64)> {
    let data = v.get("data")?.as_array()?;
    let mut indexed: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        let idx = item
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        let vec = match item.get("embedding")? {
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()?,
            Value::String(s) => base64_f32::decode(s)?,
            _ => return None,
        };
        indexed.push((idx, vec));
    }
    indexed.sort_by_key(|(i, _)| *i);
    let tokens = v
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some((indexed.into_iter().map(|(_, v)| v).collect(), tokens))
}

/// Backend model list: the ids.
pub fn parse_model_list(v: &Value) -> Vec<String> {
    v.get("data")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use serde_json::json;

    fn chat(v: Value) -> Result<ChatRequest, BadRequest> {
        serde_json::from_value::<ChatCompletionRequest>(v)
            .unwrap()
            .into_canonical()
    }

    #[test]
    fn chat_request_converts_parts_tools_and_limits() {
        let req = chat(json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look: "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"}
            ],
            "max_tokens": 10, "max_completion_tokens": 20, "stop": "END", "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "unknown_field": true
        }))
        .unwrap();
        assert_eq!(req.messages[0].role, Role::System);
        assert_eq!(req.messages[1].content, "look: ");
        assert_eq!(req.messages[1].images, ["AAAA"]);
        assert_eq!(req.messages[2].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(req.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(req.sampling.max_tokens, Some(20));
        assert_eq!(req.sampling.stop, ["END"]);
        assert!(matches!(req.format, ResponseFormat::JsonSchema { ref name, .. } if name == "x"));
    }

    #[test]
    fn chat_request_refusals_name_the_param() {
        let cases = [
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
                "n",
            ),
            (
                json!({"model": "m", "stop": ["a","b","c","d","e"], "messages": [{"role": "user", "content": "x"}]}),
                "stop",
            ),
            (
                json!({"model": "m", "response_format": {"type": "yaml"}, "messages": [{"role": "user", "content": "x"}]}),
                "response_format",
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "../x"}}, "messages": [{"role": "user", "content": "x"}]}),
                "response_format.json_schema.name",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}),
                "messages[0].content",
            ),
        ];
        for (body, param) in cases {
            let err = chat(body.clone()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn stream_writer_emits_openai_order() {
        let mut w = ChatChunkWriter::new("chatcmpl-1".into(), 5, "m".into(), true);
        let role: Value = serde_json::from_str(&w.role()).unwrap();
        assert_eq!(
            role["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(role["usage"], Value::Null);
        let d: Value = serde_json::from_str(&w.delta("Hi", &[])).unwrap();
        assert_eq!(d["choices"][0]["delta"], json!({"content": "Hi"}));
        assert_eq!(d["choices"][0]["finish_reason"], Value::Null);
        let t: Value = serde_json::from_str(&w.delta(
            "",
            &[ToolCallDelta {
                index: 0,
                id: Some("c".into()),
                name: Some("f".into()),
                arguments: String::new(),
            }],
        ))
        .unwrap();
        assert_eq!(
            t["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]})
        );
        let fin = w.finish(
            FinishReason::Stop,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
            },
        );
        let f0: Value = serde_json::from_str(&fin[0]).unwrap();
        assert_eq!(f0["choices"][0]["delta"], json!({}));
        assert_eq!(f0["choices"][0]["finish_reason"], "tool_calls");
        let f1: Value = serde_json::from_str(&fin[1]).unwrap();
        assert_eq!(f1["choices"], json!([]));
        assert_eq!(
            f1["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
        );
    }

    #[test]
    fn writer_without_usage_leaves_the_key_out() {
        let w = ChatChunkWriter::new("c".into(), 1, "m".into(), false);
        let v: Value = serde_json::from_str(&w.role()).unwrap();
        assert!(v.get("usage").is_none());
        assert_eq!(w.finish(FinishReason::Length, Usage::default()).len(), 1);
    }

    #[test]
    fn backend_chunks_parse_into_parts() {
        let c: ChunkIn = serde_json::from_value(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_x", "function": {"name": "f", "arguments": "{"}}]}, "finish_reason": null}]})).unwrap();
        let p = c.into_parts();
        assert_eq!(p.tool_calls[0].index, 1);
        assert_eq!(p.tool_calls[0].arguments, "{");
        let u: ChunkIn = serde_json::from_value(json!({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}})).unwrap();
        assert_eq!(
            u.into_parts().usage,
            Some(Usage {
                prompt_tokens: 4,
                completion_tokens: 9
            })
        );
        let t: ChunkIn =
            serde_json::from_value(json!({"choices": [{"text": "ab", "finish_reason": "length"}]}))
                .unwrap();
        let tp = t.into_parts();
        assert_eq!(
            (tp.content.as_str(), tp.finish),
            ("ab", Some(FinishReason::Length))
        );
    }

    #[test]
    fn backend_errors_of_every_peer_are_read() {
        type Case<'a> = (&'a str, (Option<&'a str>, Option<&'a str>));
        let cases: [Case<'_>; 4] = [
            (
                r#"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
                (Some("invalid_request_error"), Some("model_not_found")),
            ),
            (
                r#"{"error":{"code":400,"message":"m","type":"exceed_context_size_error"}}"#,
                (Some("exceed_context_size_error"), Some("400")),
            ),
            (
                r#"{"object":"error","message":"m","type":"NotFoundError","param":null,"code":404}"#,
                (Some("NotFoundError"), Some("404")),
            ),
            ("not json", (None, None)),
        ];
        for (body, (kind, code)) in cases {
            let (k, c, _) = parse_backend_error(body.as_bytes());
            assert_eq!((k.as_deref(), c.as_deref()), (kind, code), "{body}");
        }
    }

    #[test]
    fn embeddings_roundtrip_base64_and_order() {
        let v = embeddings(
            "m",
            &[vec![1.0, -0.5], vec![0.25]],
            EncodingFormat::Base64,
            3,
        );
        let (vecs, tokens) = parse_backend_embeddings(&v).unwrap();
        assert_eq!(vecs, vec![vec![1.0, -0.5], vec![0.25]]);
        assert_eq!(tokens, 3);
        let shuffled =
            json!({"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]});
        assert_eq!(
            parse_backend_embeddings(&shuffled).unwrap().0,
            vec![vec![1.0], vec![2.0]]
        );
    }
}
