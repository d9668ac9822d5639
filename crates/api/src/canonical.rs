//! The gateway's own, protocol-neutral shape of a request and of the events that answer it.
//!
//! Each front (OpenAI, Ollama) converts its wire request into these types, and each backend
//! converts them into its own wire request; the answer travels back as a stream of [`Event`]s.
//! Having one middle shape keeps the number of conversions at fronts + backends instead of
//! fronts × backends.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// JSON the gateway does not interpret (tool definitions, schemas, `tool_choice`), kept as the
/// text the client wrote. serde checks that it is well-formed (within the body's depth bound)
/// without building a tree, and backends forward the text unchanged: a 4 MiB schema costs
/// about 4 MiB, not the hundreds of bytes per value a `serde_json::Value` tree takes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Checks that `text` is one JSON value and keeps it.
    pub fn from_string(text: String) -> Result<RawJson, serde_json::Error> {
        RawValue::from_string(text).map(RawJson)
    }

    /// The JSON text as received.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The JSON text of a value the gateway wrote itself (tests, conversions).
    pub fn from_value(v: &Value) -> RawJson {
        // A `Value` always serializes to valid JSON.
        RawJson::from_string(v.to_string()).unwrap_or_else(|_| RawJson(RawValue::NULL.to_owned()))
    }

    /// The first byte of the value: which kind of JSON it is, without parsing it.
    pub fn first_byte(&self) -> u8 {
        self.get().bytes().next().unwrap_or(b'n')
    }
}

/// Two raw values are equal when their texts are: the gateway never reformats them.
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Tool-call arguments as JSON text, whichever way they came: a JSON-encoded string is
/// unwrapped (OpenAI), an object is kept as written (Ollama), absent or `null` is `{}`.
pub fn arguments_text(v: Option<&RawJson>) -> String {
    match v.map(|r| (r.first_byte(), r)) {
        None | Some((b'n', _)) => "{}".to_owned(),
        Some((b'"', r)) => {
            serde_json::from_str::<String>(r.get()).unwrap_or_else(|_| r.get().to_owned())
        }
        Some((_, r)) => r.get().to_owned(),
    }
}

/// A request body for a backend: the gateway's own fields as a small tree, and the client's
/// raw JSON fields (tools, schemas) spliced in as written when it is serialized, so a large
/// schema is never built into a tree on the way out either.
#[derive(Clone, Debug)]
pub struct BackendBody {
    pub fields: Value,
    pub raw: Vec<(&'static str, RawJson)>,
}

impl BackendBody {
    pub fn new(fields: Value) -> BackendBody {
        BackendBody {
            fields,
            raw: Vec::new(),
        }
    }

    /// Adds a raw field (replacing a gateway-written one of the same name).
    pub fn set_raw(&mut self, key: &'static str, v: RawJson) {
        if let Some(o) = self.fields.as_object_mut() {
            o.remove(key);
        }
        self.raw.push((key, v));
    }

    /// Adds a JSON array of raw values.
    pub fn set_raw_array(&mut self, key: &'static str, items: &[RawJson]) {
        let mut text =
            String::with_capacity(items.iter().map(|i| i.get().len() + 1).sum::<usize>() + 2);
        text.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(item.get());
        }
        text.push(']');
        if let Ok(raw) = RawJson::from_string(text) {
            self.set_raw(key, raw);
        }
    }

    pub fn raw(&self, key: &str) -> Option<&RawJson> {
        self.raw.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl std::ops::Index<&str> for BackendBody {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.fields[key]
    }
}

impl Serialize for BackendBody {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(None)?;
        if let Some(o) = self.fields.as_object() {
            for (k, v) in o {
                m.serialize_entry(k, v)?;
            }
        }
        for (k, v) in &self.raw {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// Parses a wire role. `developer` is OpenAI's newer name for `system`; `function` is the
    /// deprecated name for `tool`.
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" | "function" => Some(Role::Tool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A complete tool call made by the assistant.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text. OpenAI sends a JSON-encoded string and Ollama an object; the
    /// text form loses nothing and is what OpenAI clients expect back.
    pub arguments: String,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Base64 images (no `data:` prefix).
    pub images: Vec<String>,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            tool_name: None,
        }
    }
}

/// Sampling and length settings shared by chat and completion requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub min_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    /// Most tokens to generate (`max_tokens`, `max_completion_tokens`, `num_predict`).
    pub max_tokens: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    /// Context window asked for (Ollama `num_ctx`).
    pub num_ctx: Option<u32>,
}

/// What shape the generated text must take.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ResponseFormat {
    #[default]
    Text,
    /// Any JSON value (OpenAI `json_object`, Ollama `format: "json"`).
    Json,
    /// JSON matching a schema (OpenAI `json_schema`, Ollama `format: {schema}`).
    JsonSchema { name: String, schema: RawJson },
}

/// A chat request, whichever front it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The model name as the backend knows it (the router rewrites the public name).
    pub model: String,
    pub messages: Vec<Message>,
    pub sampling: Sampling,
    pub format: ResponseFormat,
    /// Tool definitions in the OpenAI shape, which Ollama shares; passed through as written
    /// (the PHI guard may rewrite string literals in them).
    pub tools: Vec<RawJson>,
    pub tool_choice: Option<RawJson>,
    pub parallel_tool_calls: Option<bool>,
    /// Ollama `keep_alive`, passed through to Ollama backends.
    pub keep_alive: Option<Value>,
    /// Whose request this is (the gateway sets the tenant), so the engine shares its slots
    /// fairly; never read from a client's body, sent only to `wardgate llm`.
    pub fairness: Option<String>,
}

/// A text completion (OpenAI `/v1/completions`, Ollama `/api/generate`).
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: String,
    pub suffix: Option<String>,
    /// Ollama's system-prompt override.
    pub system: Option<String>,
    /// Ollama `raw`: no templating.
    pub raw: bool,
    pub sampling: Sampling,
    pub format: ResponseFormat,
    pub keep_alive: Option<Value>,
    /// As [`ChatRequest::fairness`].
    pub fairness: Option<String>,
}

/// An embedding request.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedRequest {
    pub model: String,
    pub input: Vec<String>,
    pub dimensions: Option<u32>,
    pub truncate: Option<bool>,
    pub keep_alive: Option<Value>,
}

/// Embeddings, one vector per input, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedResponse {
    pub embeddings: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    /// From an OpenAI `finish_reason` or an Ollama `done_reason`. Unknown values count as `Stop`,
    /// which is what clients treat as a normal end.
    pub fn parse(s: &str) -> FinishReason {
        match s {
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Stop,
        }
    }

    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    /// Ollama knows only `stop` and `length`; a tool call ends with `stop` there.
    pub fn ollama(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Stop | FinishReason::ToolCalls | FinishReason::ContentFilter => "stop",
        }
    }
}

/// Token counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Durations in nanoseconds as a backend reported them (Ollama does; OpenAI servers do not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    pub total_ns: Option<u64>,
    pub load_ns: Option<u64>,
    pub prompt_eval_ns: Option<u64>,
    pub eval_ns: Option<u64>,
}

/// A fragment of a tool call as it streams. The first fragment of a call carries `id` and
/// `name`; later ones append to `arguments`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// One step of a generation.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New text and/or tool-call fragments.
    Delta {
        content: String,
        tool_calls: Vec<ToolCallDelta>,
    },
    /// The end. Always the last event of a stream that completed.
    Finish {
        reason: FinishReason,
        usage: Option<Usage>,
        timings: Timings,
    },
}

impl Event {
    pub fn text(content: impl Into<String>) -> Event {
        Event::Delta {
            content: content.into(),
            tool_calls: Vec::new(),
        }
    }
}

/// Glues streamed events into a whole answer: the text, complete tool calls, the finish.
/// Used to answer non-streaming clients from a streaming backend, and by fronts that can only
/// emit complete tool calls (Ollama).
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    pub content: String,
    calls: Vec<ToolCall>,
    pub finish: Option<(FinishReason, Option<Usage>, Timings)>,
}

impl Accumulator {
    pub fn push(&mut self, event: &Event) {
        match event {
            Event::Delta {
                content,
                tool_calls,
            } => {
                self.content.push_str(content);
                for d in tool_calls {
                    self.push_tool_delta(d);
                }
            }
            Event::Finish {
                reason,
                usage,
                timings,
            } => self.finish = Some((*reason, *usage, *timings)),
        }
    }

    /// Adds a tool-call fragment. Fragments are matched by `index`; a fragment carrying an `id`
    /// different from the call at that index starts a new call (some servers reuse index 0).
    pub fn push_tool_delta(&mut self, d: &ToolCallDelta) {
        let idx = d.index as usize;
        let starts_new = match (self.calls.get(idx), &d.id) {
            (None, _) => true,
            (Some(existing), Some(id)) => !existing.id.is_empty() && existing.id != *id,
            (Some(_), None) => false,
        };
        if starts_new {
            let id =
                d.id.clone()
                    .unwrap_or_else(|| format!("call_{}", self.calls.len()));
            self.calls.push(ToolCall {
                id,
                name: d.name.clone().unwrap_or_default(),
                arguments: d.arguments.clone(),
            });
            return;
        }
        if let Some(call) = self.calls.get_mut(idx) {
            if let Some(name) = &d.name
                && call.name.is_empty()
            {
                call.name.clone_from(name);
            }
            call.arguments.push_str(&d.arguments);
        }
    }

    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.calls
    }

    pub fn take_tool_calls(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulator_glues_fragments_by_index() {
        let mut acc = Accumulator::default();
        let frag = |index, id: Option<&str>, name: Option<&str>, args: &str| Event::Delta {
            content: String::new(),
            tool_calls: vec![ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: args.to_owned(),
            }],
        };
        acc.push(&Event::text("Hi"));
        acc.push(&frag(0, Some("call_a"), Some("get_weather"), ""));
        acc.push(&frag(1, Some("call_b"), Some("get_time"), "{}"));
        acc.push(&frag(0, None, None, "{\"city\":"));
        acc.push(&frag(0, None, None, "\"Paris\"}"));
        assert_eq!(acc.content, "Hi");
        assert_eq!(
            acc.tool_calls(),
            &[
                ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "get_time".into(),
                    arguments: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn finish_reasons_map_between_protocols() {
        assert_eq!(FinishReason::parse("length").ollama(), "length");
        assert_eq!(FinishReason::parse("tool_calls").ollama(), "stop");
        assert_eq!(FinishReason::parse("weird").openai(), "stop");
        assert_eq!(Role::parse("Developer"), Some(Role::System));
        assert_eq!(Role::parse("robot"), None);
    }
}
