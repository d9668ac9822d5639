//! HTTP adapters for the two backend protocols. One type serves both: the request bodies and
//! stream framings differ, the transport, error classification and bounds do not.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;
use wardgate_api::canonical::{
    ChatRequest, CompletionRequest, EmbedRequest, EmbedResponse, Event, FinishReason, Timings,
    Usage,
};
use wardgate_api::codec::{CodecError, NdjsonDecoder, SseDecoder};
use wardgate_api::signing::{self, SigningKey};
use wardgate_api::{ollama, openai};

use crate::{Backend, BackendError, BackendKind, EventStream, UpstreamKind};

/// The query parameter that carries a request's fairness key (hex of the gateway's tenant) to
/// `wardgate llm`. Part of the signed path, so only the gateway can set it.
pub const FAIRNESS_QUERY: &str = "fairness";

/// Settings of one HTTP backend.
#[derive(Clone, Debug)]
pub struct HttpBackendConfig {
    pub name: String,
    pub kind: BackendKind,
    /// For `ollama`: the server root (`http://host:11434`); for `openai`: the API base
    /// including `/v1`.
    pub base_url: String,
    pub connect_timeout: Duration,
    /// Bound on one stream frame (line or SSE event) from the backend.
    pub max_frame_bytes: usize,
    /// Bound on a non-streamed backend body (errors, embeddings, model lists).
    pub max_body_bytes: usize,
    /// Sent as `Authorization: Bearer` to backends that want a key (vLLM `--api-key`).
    pub api_key: Option<String>,
    /// Signs every request for `wardgate llm` (HMAC over method, path, time, nonce, body).
    pub signer: Option<SigningKey>,
    /// PEM CA certificates that alone are trusted for this backend's TLS (a private CA for
    /// the private hop); `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl HttpBackendConfig {
    pub fn new(name: impl Into<String>, kind: BackendKind, base_url: impl Into<String>) -> Self {
        HttpBackendConfig {
            name: name.into(),
            kind,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            connect_timeout: Duration::from_secs(2),
            max_frame_bytes: 1 << 20,
            max_body_bytes: 64 << 20,
            api_key: None,
            signer: None,
            ca_pem: None,
        }
    }
}

#[derive(Debug)]
pub struct HttpBackend {
    config: HttpBackendConfig,
    client: reqwest::Client,
}

impl HttpBackend {
    pub fn new(config: HttpBackendConfig) -> Result<Self, BackendError> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| BackendError::Connect(format!("CA certificates: {e}")))?;
            if certs.is_empty() {
                return Err(BackendError::Connect(
                    "the CA file holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            // Backends are addressed explicitly; a redirect would be a surprise destination.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| BackendError::Connect(e.to_string()))?;
        Ok(HttpBackend { config, client })
    }

    /// For `wardgate llm` (a signed backend) the request's fairness key travels in the query,
    /// which the signature covers, so the engine can share its slots across the gateway's
    /// tenants; other backends never see it.
    fn fair_path(&self, path: &str, fairness: Option<&str>) -> String {
        match (&self.config.signer, fairness) {
            (Some(_), Some(key)) if !key.is_empty() => {
                format!("{path}?{}={}", FAIRNESS_QUERY, hex::encode(key))
            }
            _ => path.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url)
    }

    /// Builds a request; the body is serialised here (not by reqwest) so it can be signed.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> reqwest::RequestBuilder {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut rb = self.client.request(method.clone(), self.url(path));
        if let Some(key) = &self.config.api_key {
            rb = rb.bearer_auth(key);
        }
        // The attempt's trace context (only when traces are exported); to `wardgate llm` it
        // travels under the signature, which is the only way that service trusts it.
        let traceparent = crate::trace::current_traceparent();
        if let Some(signer) = &self.config.signer {
            // The signed path is the one the server sees: the base URL's path plus ours.
            let full = self.url(path);
            let signed_path = full
                .find("://")
                .and_then(|i| full[i + 3..].find('/').map(|j| &full[i + 3 + j..]))
                .unwrap_or(path);
            let nonce = hex::encode(rand::random::<[u8; 16]>());
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let sig = signing::sign_traced(
                signer,
                method.as_str(),
                signed_path,
                bytes.as_deref().unwrap_or_default(),
                now,
                &nonce,
                traceparent.as_deref(),
            );
            if sig.signature.starts_with("v2=")
                && let Some(tp) = &traceparent
            {
                rb = rb.header(crate::trace::TRACEPARENT, tp);
            }
            rb = rb
                .header(signing::TIMESTAMP_HEADER, sig.timestamp)
                .header(signing::NONCE_HEADER, sig.nonce)
                .header(signing::SIGNATURE_HEADER, sig.signature)
                .header(signing::BODY_DIGEST_HEADER, sig.body_digest);
        } else if let Some(tp) = &traceparent {
            rb = rb.header(crate::trace::TRACEPARENT, tp);
        }
        if let Some(bytes) = bytes {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        rb
    }

    /// Sends a request and returns the response if its status is a success; otherwise reads a
    /// bounded error body and classifies it.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, BackendError> {
        let resp = rb.send().await.map_err(transport_error)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = read_bounded(resp, 64 << 10).await.unwrap_or_default();
        Err(classify(self.config.kind, status.as_u16(), &body))
    }

    async fn get_json(&self, path: &str) -> Result<Value, BackendError> {
        let resp = self
            .send(self.request(reqwest::Method::GET, path, None::<&Value>))
            .await?;
        let body = read_bounded(resp, self.config.max_body_bytes).await?;
        serde_json::from_slice(&body).map_err(|e| BackendError::Protocol(e.to_string()))
    }

    async fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<Value, BackendError> {
        let resp = self
            .send(self.request(reqwest::Method::POST, path, Some(body)))
            .await?;
        let bytes = read_bounded(resp, self.config.max_body_bytes).await?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Protocol(e.to_string()))
    }

    async fn stream(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<EventStream, BackendError> {
        let resp = self
            .send(self.request(reqwest::Method::POST, path, Some(body)))
            .await?;
        let limit = self.config.max_frame_bytes;
        if is_json(&resp) {
            // Some OpenAI-compatible servers ignore `stream: true` and answer one whole
            // completion. It is read as a one-chunk stream, the body bounded as one frame is.
            let body = read_bounded(resp, limit).await?;
            return Ok(Box::pin(futures::stream::iter(whole_answer(
                self.config.kind,
                &body,
            ))));
        }
        let bytes = resp.bytes_stream().map(|r| r.map_err(transport_error));
        Ok(match self.config.kind {
            BackendKind::Ollama => Box::pin(decode(
                bytes,
                NdjsonDecoder::new(limit),
                OllamaLines::default(),
            )),
            BackendKind::Openai => Box::pin(decode(
                bytes,
                SseDecoder::new(limit),
                OpenAiEvents::default(),
            )),
        })
    }
}

#[async_trait::async_trait]
impl Backend for HttpBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn kind(&self) -> &'static str {
        self.config.kind.as_str()
    }

    async fn chat(&self, req: &ChatRequest) -> Result<EventStream, BackendError> {
        match self.config.kind {
            BackendKind::Ollama => {
                let path = self.fair_path("/api/chat", req.fairness.as_deref());
                self.stream(&path, &ollama::backend_chat_body(req)).await
            }
            BackendKind::Openai => {
                self.stream("/chat/completions", &openai::backend_chat_body(req))
                    .await
            }
        }
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<EventStream, BackendError> {
        match self.config.kind {
            BackendKind::Ollama => {
                let path = self.fair_path("/api/generate", req.fairness.as_deref());
                self.stream(&path, &ollama::backend_generate_body(req))
                    .await
            }
            BackendKind::Openai => {
                self.stream("/completions", &openai::backend_completion_body(req))
                    .await
            }
        }
    }

    async fn embed(&self, req: &EmbedRequest) -> Result<EmbedResponse, BackendError> {
        let parsed = match self.config.kind {
            BackendKind::Ollama => {
                let v = self
                    .post_json("/api/embed", &ollama::backend_embed_body(req))
                    .await?;
                ollama::parse_backend_embed(&v)
            }
            BackendKind::Openai => {
                let v = self
                    .post_json("/embeddings", &openai::backend_embed_body(req))
                    .await?;
                openai::parse_backend_embeddings(&v)
            }
        };
        let (embeddings, prompt_tokens) = parsed
            .ok_or_else(|| BackendError::Protocol("unreadable embeddings response".into()))?;
        if embeddings.len() != req.input.len() {
            return Err(BackendError::Protocol(format!(
                "asked for {} embeddings, got {}",
                req.input.len(),
                embeddings.len()
            )));
        }
        Ok(EmbedResponse {
            embeddings,
            prompt_tokens,
        })
    }

    async fn list_models(&self) -> Result<Vec<String>, BackendError> {
        match self.config.kind {
            BackendKind::Ollama => {
                let v = self.get_json("/api/tags").await?;
                let tags: ollama::Tags =
                    serde_json::from_value(v).map_err(|e| BackendError::Protocol(e.to_string()))?;
                Ok(tags
                    .models
                    .into_iter()
                    .map(|m| if m.model.is_empty() { m.name } else { m.model })
                    .collect())
            }
            BackendKind::Openai => Ok(openai::parse_model_list(&self.get_json("/models").await?)),
        }
    }

    async fn health(&self) -> Result<(), BackendError> {
        let path = match self.config.kind {
            BackendKind::Ollama => "/api/version",
            BackendKind::Openai => "/models",
        };
        self.send(self.request(reqwest::Method::GET, path, None::<&Value>))
            .await
            .map(drop)
    }
}

fn transport_error(e: reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout
    } else if e.is_connect() {
        BackendError::Connect(e.to_string())
    } else {
        BackendError::Protocol(e.to_string())
    }
}

/// Whether a response is one JSON document (`application/json`, parameters aside) rather than a
/// stream (`text/event-stream`, `application/x-ndjson`).
fn is_json(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The events of a whole (non-streamed) answer: the protocol reads it as the one frame of a
/// stream, so an answer that does not say it finished is an error, as a cut stream is.
fn whole_answer(kind: BackendKind, body: &[u8]) -> Out {
    let mut out = Out::new();
    let Ok(text) = std::str::from_utf8(body) else {
        out.push_back(Err(BackendError::Protocol(
            "the answer is not UTF-8".into(),
        )));
        return out;
    };
    fn one<P: Protocol>(mut proto: P, text: &str, out: &mut Out) {
        if !proto.frame(text, out) {
            proto.eof(out);
        }
    }
    match kind {
        BackendKind::Ollama => one(OllamaLines::default(), text, &mut out),
        BackendKind::Openai => one(OpenAiEvents::default(), text, &mut out),
    }
    // As in `decode`: nothing follows an error.
    if let Some(i) = out.iter().position(Result::is_err) {
        out.truncate(i + 1);
    }
    out
}

async fn read_bounded(resp: reqwest::Response, limit: usize) -> Result<Bytes, BackendError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(transport_error)?;
        if out.len() + chunk.len() > limit {
            return Err(BackendError::Protocol(format!(
                "backend body over {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Maps a backend's error status and body onto what it means for the client, normalising the
/// peers' different shapes (see `reference/openai-api.md` section 8).
pub fn classify(kind: BackendKind, status: u16, body: &[u8]) -> BackendError {
    let (etype, code, message) = match kind {
        BackendKind::Openai => openai::parse_backend_error(body),
        BackendKind::Ollama => {
            let msg = serde_json::from_slice::<ollama::ErrorBody>(body)
                .map(|b| b.error)
                .ok();
            (None, None, msg)
        }
    };
    let text = |s: &Option<String>| s.as_deref().unwrap_or_default().to_ascii_lowercase();
    let (etype_l, code_l, msg_l) = (text(&etype), text(&code), text(&message));
    let upstream = if code_l == "context_length_exceeded"
        || etype_l == "exceed_context_size_error"
        || msg_l.contains("context length")
        || msg_l.contains("context window")
    {
        UpstreamKind::ContextLength
    } else if status == 401 || status == 403 {
        UpstreamKind::Auth
    } else if status == 404 || code_l == "model_not_found" {
        UpstreamKind::ModelNotFound
    } else if status == 429 {
        UpstreamKind::RateLimited
    } else if status == 503 {
        UpstreamKind::Unavailable
    } else if status >= 500 {
        UpstreamKind::Server
    } else {
        UpstreamKind::BadRequest
    };
    BackendError::Status {
        status,
        kind: upstream,
        detail: message.unwrap_or_default(),
    }
}

/// A stream framing: how bytes become frames.
trait Framing: Send + 'static {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError>;
    fn finish(&mut self) -> Result<Option<String>, CodecError>;
}

impl Framing for NdjsonDecoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError> {
        NdjsonDecoder::feed(self, chunk)
    }
    fn finish(&mut self) -> Result<Option<String>, CodecError> {
        NdjsonDecoder::finish(self)
    }
}

impl Framing for SseDecoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, CodecError> {
        SseDecoder::feed(self, chunk)
    }
    fn finish(&mut self) -> Result<Option<String>, CodecError> {
        SseDecoder::finish(self)
    }
}

type Out = VecDeque<Result<Event, BackendError>>;

/// A stream protocol: what frames mean.
trait Protocol: Send + 'static {
    /// Handles one frame; true when the stream is complete (or failed).
    fn frame(&mut self, data: &str, out: &mut Out) -> bool;
    /// The bytes ended before the protocol said it was complete.
    fn eof(&mut self, out: &mut Out);
}

/// Ollama NDJSON: a line with `done: true` completes the stream; an `error` line fails it.
#[derive(Default)]
struct OllamaLines {
    tool_index: u32,
}

impl Protocol for OllamaLines {
    fn frame(&mut self, data: &str, out: &mut Out) -> bool {
        match serde_json::from_str::<ollama::LineIn>(data) {
            Ok(ollama::LineIn {
                error: Some(detail),
                ..
            }) => {
                out.push_back(Err(BackendError::Status {
                    status: 500,
                    kind: UpstreamKind::Server,
                    detail,
                }));
                true
            }
            Ok(line) => {
                let done = line.done;
                out.extend(line.into_events(&mut self.tool_index).into_iter().map(Ok));
                done
            }
            Err(e) => {
                out.push_back(Err(BackendError::Protocol(e.to_string())));
                true
            }
        }
    }

    fn eof(&mut self, out: &mut Out) {
        out.push_back(Err(BackendError::Protocol(
            "stream ended before done".into(),
        )));
    }
}

/// OpenAI SSE: the finish reason and the usage come in separate chunks (usage last, if at
/// all), so the `Finish` event is emitted at `[DONE]`.
#[derive(Default)]
struct OpenAiEvents {
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl OpenAiEvents {
    fn finish_event(&self, reason: FinishReason) -> Event {
        Event::Finish {
            reason,
            usage: self.usage,
            timings: Timings::default(),
        }
    }
}

impl Protocol for OpenAiEvents {
    fn frame(&mut self, data: &str, out: &mut Out) -> bool {
        if data.trim() == "[DONE]" {
            out.push_back(Ok(
                self.finish_event(self.finish.unwrap_or(FinishReason::Stop))
            ));
            return true;
        }
        match serde_json::from_str::<openai::ChunkIn>(data) {
            Ok(openai::ChunkIn { error: Some(e), .. }) => {
                out.push_back(Err(BackendError::Status {
                    status: 500,
                    kind: UpstreamKind::Server,
                    detail: e.to_string(),
                }));
                true
            }
            Ok(chunk) => {
                let parts = chunk.into_parts();
                self.usage = parts.usage.or(self.usage);
                self.finish = parts.finish.or(self.finish);
                if !parts.content.is_empty() || !parts.tool_calls.is_empty() {
                    out.push_back(Ok(Event::Delta {
                        content: parts.content,
                        tool_calls: parts.tool_calls,
                    }));
                }
                false
            }
            Err(e) => {
                out.push_back(Err(BackendError::Protocol(e.to_string())));
                true
            }
        }
    }

    fn eof(&mut self, out: &mut Out) {
        // Some servers close without `[DONE]` after a finish chunk; accept that as complete,
        // but never a stream that did not say it finished.
        match self.finish {
            Some(reason) => out.push_back(Ok(self.finish_event(reason))),
            None => out.push_back(Err(BackendError::Protocol(
                "stream ended before a finish".into(),
            ))),
        }
    }
}

/// Turns a byte stream into events through a framing and a protocol. Bytes are read only when
/// the consumer asks for the next event, so backpressure reaches the backend; after the end or
/// an error nothing more is read.
fn decode(
    bytes: impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static,
    framing: impl Framing,
    protocol: impl Protocol,
) -> impl Stream<Item = Result<Event, BackendError>> + Send {
    let bytes = Box::pin(bytes);
    let init = (bytes, framing, protocol, Out::new(), false);
    futures::stream::unfold(
        init,
        |(mut bytes, mut framing, mut proto, mut out, mut done)| async move {
            loop {
                if let Some(item) = out.pop_front() {
                    if item.is_err() {
                        out.clear();
                        done = true;
                    }
                    return Some((item, (bytes, framing, proto, out, done)));
                }
                if done {
                    return None;
                }
                let frames = match bytes.next().await {
                    Some(Ok(chunk)) => framing.feed(&chunk),
                    Some(Err(e)) => {
                        out.push_back(Err(e));
                        continue;
                    }
                    None => {
                        done = true;
                        match framing.finish() {
                            Ok(last) => {
                                let complete = last.is_some_and(|f| proto.frame(&f, &mut out));
                                if !complete {
                                    proto.eof(&mut out);
                                }
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                match frames {
                    Ok(frames) => {
                        for f in frames {
                            if proto.frame(&f, &mut out) {
                                done = true;
                                break;
                            }
                        }
                    }
                    Err(e) => out.push_back(Err(BackendError::Protocol(e.to_string()))),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn run(kind: BackendKind, chunks: &[&str]) -> Vec<Result<Event, String>> {
        decode_all(
            kind,
            chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
            1024,
        )
    }

    /// Every event (or error, as text) `decode` yields for `chunks`, frames bounded by `max`.
    pub(super) fn decode_all(
        kind: BackendKind,
        chunks: Vec<Vec<u8>>,
        max: usize,
    ) -> Vec<Result<Event, String>> {
        let s = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        let events: Vec<_> = futures::executor::block_on(async {
            match kind {
                BackendKind::Ollama => {
                    decode(s, NdjsonDecoder::new(max), OllamaLines::default())
                        .collect::<Vec<_>>()
                        .await
                }
                BackendKind::Openai => {
                    decode(s, SseDecoder::new(max), OpenAiEvents::default())
                        .collect::<Vec<_>>()
                        .await
                }
            }
        });
        events
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn sse_stream_finishes_at_done_with_usage() {
        let ev = run(
            BackendKind::Openai,
            &[
                "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n: ping\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"He\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\"llo\"}}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
            ],
        );
        assert_eq!(
            ev,
            vec![
                Ok(Event::text("He")),
                Ok(Event::text("llo")),
                Ok(Event::Finish {
                    reason: FinishReason::Length,
                    usage: Some(Usage {
                        prompt_tokens: 2,
                        completion_tokens: 2
                    }),
                    timings: Timings::default()
                }),
            ]
        );
    }

    #[test]
    fn cut_streams_are_errors_not_answers() {
        let ev = run(
            BackendKind::Openai,
            &["data: {\"choices\":[{\"delta\":{\"content\":\"He\"}}]}\n\n"],
        );
        assert_eq!(ev.len(), 2);
        assert!(ev[1].as_ref().unwrap_err().contains("ended before"));
        let ev = run(
            BackendKind::Ollama,
            &["{\"message\":{\"content\":\"a\"},\"done\":false}\n"],
        );
        assert!(ev[1].as_ref().unwrap_err().contains("ended before"));
    }

    #[test]
    fn in_band_errors_end_the_stream() {
        let ev = run(
            BackendKind::Ollama,
            &[
                "{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"boom\"}\n{\"message\":{\"content\":\"b\"},\"done\":false}\n",
            ],
        );
        assert_eq!(ev.len(), 2);
        assert!(ev[1].is_err());
        let ev = run(
            BackendKind::Openai,
            &["data: {\"error\":{\"message\":\"x\"}}\n\n"],
        );
        assert_eq!(ev.len(), 1);
        assert!(ev[0].is_err());
    }

    #[test]
    fn ndjson_without_trailing_newline_completes() {
        let ev = run(
            BackendKind::Ollama,
            &[
                "{\"response\":\"a\",\"done\":false}\n{\"response\":\"\",\"done\":true,\"done_reason\":\"stop\"}",
            ],
        );
        assert_eq!(ev.len(), 2);
        assert!(matches!(
            ev[1],
            Ok(Event::Finish {
                reason: FinishReason::Stop,
                ..
            })
        ));
    }

    /// Issue 16: a whole answer to a streamed request (a server that ignores `stream`) is read
    /// as a one-chunk stream: text, tool calls, the finish and the usage; one that does not
    /// say it finished, or says it failed, is an error as a cut stream is.
    #[test]
    fn i16_a_whole_answer_is_a_one_chunk_stream() {
        type Item = Result<Event, BackendError>;
        let text = |t: &str| -> Item { Ok(Event::text(t)) };
        let finish = |reason, usage| -> Item {
            Ok(Event::Finish {
                reason,
                usage,
                timings: Timings::default(),
            })
        };
        let usage = Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
        });
        let cases: Vec<(BackendKind, &str, Vec<Item>)> = vec![
            (
                BackendKind::Openai,
                "{\n  \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"Hello\"},\n  \"finish_reason\": \"length\"}],\n  \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 2}\n}",
                vec![text("Hello"), finish(FinishReason::Length, usage)],
            ),
            (
                BackendKind::Openai,
                r#"{"choices":[{"text":"Hi","finish_reason":"stop"}]}"#,
                vec![text("Hi"), finish(FinishReason::Stop, None)],
            ),
            (
                BackendKind::Openai,
                r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
                vec![
                    Ok(Event::Delta {
                        content: String::new(),
                        tool_calls: vec![wardgate_api::canonical::ToolCallDelta {
                            index: 0,
                            id: Some("c1".into()),
                            name: Some("f".into()),
                            arguments: "{}".into(),
                        }],
                    }),
                    finish(FinishReason::ToolCalls, None),
                ],
            ),
            (
                BackendKind::Ollama,
                "{\n  \"message\": {\"role\": \"assistant\", \"content\": \"Hello\"},\n  \"done\": true,\n  \"done_reason\": \"stop\",\n  \"prompt_eval_count\": 3,\n  \"eval_count\": 2\n}",
                vec![text("Hello"), finish(FinishReason::Stop, usage)],
            ),
        ];
        for (kind, body, want) in cases {
            let got: Vec<_> = whole_answer(kind, body.as_bytes()).into_iter().collect();
            assert_eq!(got.len(), want.len(), "{body}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                match (g, w) {
                    (
                        Ok(Event::Finish { reason, usage, .. }),
                        Ok(Event::Finish {
                            reason: r,
                            usage: u,
                            ..
                        }),
                    ) => {
                        assert_eq!((reason, usage), (r, u), "{body}");
                    }
                    (Ok(g), Ok(w)) => assert_eq!(g, w, "{body}"),
                    _ => panic!("{body}: {got:?}"),
                }
            }
        }
        for (kind, body) in [
            (
                BackendKind::Openai,
                r#"{"choices":[{"message":{"content":"cut"}}]}"#,
            ),
            (BackendKind::Openai, r#"{"error":{"message":"boom"}}"#),
            (BackendKind::Openai, "not json"),
            (
                BackendKind::Ollama,
                r#"{"message":{"content":"a"},"done":false}"#,
            ),
            (BackendKind::Ollama, r#"{"error":"boom"}"#),
        ] {
            let got: Vec<_> = whole_answer(kind, body.as_bytes()).into_iter().collect();
            assert!(got.last().is_some_and(Result::is_err), "{body}: {got:?}");
            assert_eq!(got.iter().filter(|e| e.is_err()).count(), 1, "{body}");
        }
    }

    #[test]
    fn error_statuses_are_classified_per_peer() {
        let cases: [(BackendKind, u16, &str, UpstreamKind); 6] = [
            (
                BackendKind::Openai,
                400,
                r#"{"error":{"code":400,"type":"exceed_context_size_error","message":"x"}}"#,
                UpstreamKind::ContextLength,
            ),
            (
                BackendKind::Openai,
                400,
                r#"{"error":{"code":"model_not_found","type":"invalid_request_error","message":"x"}}"#,
                UpstreamKind::ModelNotFound,
            ),
            (
                BackendKind::Ollama,
                404,
                r#"{"error":"model 'x' not found"}"#,
                UpstreamKind::ModelNotFound,
            ),
            (
                BackendKind::Ollama,
                400,
                r#"{"error":"the input length exceeds the context length"}"#,
                UpstreamKind::ContextLength,
            ),
            (
                BackendKind::Ollama,
                503,
                r#"{"error":"server busy"}"#,
                UpstreamKind::Unavailable,
            ),
            (
                BackendKind::Openai,
                500,
                "Traceback ...",
                UpstreamKind::Server,
            ),
        ];
        for (kind, status, body, want) in cases {
            match classify(kind, status, body.as_bytes()) {
                BackendError::Status { kind: k, .. } => assert_eq!(k, want, "{body}"),
                other => panic!("{other:?}"),
            }
        }
    }
}

/// Properties of [`decode`], framing and protocol together: a well-formed upstream stream
/// yields exactly the events it encodes wherever the network cut it, and no byte stream makes
/// it panic or go on after an error.
#[cfg(test)]
mod props {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// What an upstream answer says: text pieces, how it ended, and the usage if reported.
    #[derive(Clone, Debug)]
    struct Answer {
        pieces: Vec<String>,
        reason: FinishReason,
        usage: Option<Usage>,
    }

    fn answer() -> impl Strategy<Value = Answer> {
        (
            proptest::collection::vec(".{1,12}", 0..8),
            prop_oneof![Just(FinishReason::Stop), Just(FinishReason::Length)],
            proptest::option::of((any::<u32>(), any::<u32>())),
        )
            .prop_map(|(pieces, reason, usage)| Answer {
                pieces,
                reason,
                usage: usage.map(|(p, c)| Usage {
                    prompt_tokens: u64::from(p),
                    completion_tokens: u64::from(c),
                }),
            })
    }

    fn expected(a: &Answer) -> Vec<Result<Event, String>> {
        let mut events: Vec<_> = a
            .pieces
            .iter()
            .map(|p| Ok(Event::text(p.clone())))
            .collect();
        events.push(Ok(Event::Finish {
            reason: a.reason,
            usage: a.usage,
            timings: Timings::default(),
        }));
        events
    }

    fn ending() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
    }

    /// The answer as an OpenAI-compatible server streams it, with the line endings, keep-alive
    /// comments and unknown fields a server may add.
    fn sse(a: &Answer, ends: &[&str], done: bool) -> Vec<u8> {
        let mut frames: Vec<String> = a
            .pieces
            .iter()
            .map(|p| json!({"choices": [{"delta": {"content": p}}]}).to_string())
            .collect();
        let finish = a.reason.openai();
        frames.push(json!({"choices": [{"delta": {}, "finish_reason": finish}]}).to_string());
        if let Some(u) = a.usage {
            frames.push(
                json!({"choices": [], "usage": {"prompt_tokens": u.prompt_tokens,
                       "completion_tokens": u.completion_tokens}})
                .to_string(),
            );
        }
        if done {
            frames.push("[DONE]".into());
        }
        let mut out = String::new();
        for (i, f) in frames.iter().enumerate() {
            let end = ends[i % ends.len()];
            if i % 3 == 1 {
                out.push_str(&format!(": keep-alive{end}{end}"));
            }
            out.push_str(&format!("id: {i}{end}data: {f}{end}{end}"));
        }
        out.into_bytes()
    }

    /// The answer as an Ollama server streams it: one JSON line per piece, then the done line,
    /// with or without a final newline.
    fn ndjson(a: &Answer, ends: &[&str], final_newline: bool) -> Vec<u8> {
        let mut lines: Vec<String> = a
            .pieces
            .iter()
            .map(|p| {
                json!({"message": {"role": "assistant", "content": p}, "done": false}).to_string()
            })
            .collect();
        let mut last = json!({"message": {"content": ""}, "done": true,
                              "done_reason": a.reason.ollama()});
        if let Some(u) = a.usage {
            last["prompt_eval_count"] = json!(u.prompt_tokens);
            last["eval_count"] = json!(u.completion_tokens);
        }
        lines.push(last.to_string());
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            out.push_str(l);
            if i + 1 < lines.len() || final_newline {
                out.push_str(ends[i % ends.len()]);
            }
        }
        out.into_bytes()
    }

    /// `bytes` cut at `cuts` (modulo the length, sorted; repeats make empty chunks).
    fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for c in at {
            chunks.push(bytes[start..c].to_vec());
            start = c;
        }
        chunks.push(bytes[start..].to_vec());
        chunks
    }

    fn run_bytes(kind: BackendKind, chunks: Vec<Vec<u8>>) -> Vec<Result<Event, String>> {
        super::tests::decode_all(kind, chunks, 4096)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn sse_answers_decode_the_same_however_cut(
            a in answer(),
            ends in proptest::collection::vec(ending(), 1..4),
            done in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let chunks = cut(&sse(&a, &ends, done), &cuts);
            prop_assert_eq!(run_bytes(BackendKind::Openai, chunks), expected(&a));
        }

        #[test]
        fn ndjson_answers_decode_the_same_however_cut(
            a in answer(),
            ends in proptest::collection::vec(ending(), 1..4),
            final_newline in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let chunks = cut(&ndjson(&a, &ends, final_newline), &cuts);
            prop_assert_eq!(run_bytes(BackendKind::Ollama, chunks), expected(&a));
        }

        /// Whatever comes after the end of an answer is never read, so it cannot turn a
        /// complete answer into an error, wherever the chunks were cut.
        #[test]
        fn bytes_after_the_end_do_not_matter(
            a in answer(),
            junk in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            for (kind, body) in [
                (BackendKind::Openai, sse(&a, &["\n"], true)),
                (BackendKind::Ollama, ndjson(&a, &["\n"], true)),
            ] {
                let mut bytes = body;
                bytes.extend_from_slice(&junk);
                prop_assert_eq!(run_bytes(kind, cut(&bytes, &cuts)), expected(&a));
            }
        }

        /// Any bytes: no panic, and nothing follows an error.
        #[test]
        fn arbitrary_streams_end_at_the_first_error(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..6),
            openai_kind in any::<bool>(),
        ) {
            let kind = if openai_kind { BackendKind::Openai } else { BackendKind::Ollama };
            let events = run_bytes(kind, chunks);
            if let Some(i) = events.iter().position(Result::is_err) {
                prop_assert_eq!(i + 1, events.len());
            }
            let finishes = events
                .iter()
                .position(|e| matches!(e, Ok(Event::Finish { .. })));
            if let Some(i) = finishes {
                prop_assert_eq!(i + 1, events.len(), "nothing after the finish");
            }
        }
    }

    #[test]
    fn the_generators_make_what_they_claim() {
        let a = Answer {
            pieces: vec!["He".into(), "llo".into()],
            reason: FinishReason::Length,
            usage: None,
        };
        let sse = sse(&a, &["\r\n"], true);
        assert!(
            std::str::from_utf8(&sse)
                .unwrap()
                .contains("data: [DONE]\r\n\r\n")
        );
        assert_eq!(run_bytes(BackendKind::Openai, vec![sse]), expected(&a));
        let ndjson = ndjson(&a, &["\n"], false);
        assert!(!ndjson.ends_with(b"\n"));
        assert_eq!(run_bytes(BackendKind::Ollama, vec![ndjson]), expected(&a));
    }
}
