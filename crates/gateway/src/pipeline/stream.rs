//! Turning a backend's event stream into a client's answer: streamed (SSE or NDJSON, one frame
//! per event as it arrives, pulled only as fast as the client reads) or collected whole. Both
//! enforce the request deadline, fill in token counts and durations a backend did not report,
//! and record the outcome on the request record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use wardgate_api::canonical::{
    Accumulator, Event, FinishReason, Timings, ToolCall, ToolCallDelta, Usage,
};
use wardgate_api::codec::{ndjson_line, sse_event};
use wardgate_api::{ollama, openai, rfc3339};
use wardgate_backends::{BackendError, EventStream};

use crate::error::ApiError;
use crate::middleware::record::RequestRecord;

/// Writes a protocol's frames for each step of a generation.
pub trait Encoder: Send + 'static {
    fn open(&mut self) -> Vec<Bytes>;
    fn delta(&mut self, content: &str, tool_calls: &[ToolCallDelta]) -> Vec<Bytes>;
    fn finish(&mut self, reason: FinishReason, usage: Usage, timings: Timings) -> Vec<Bytes>;
    /// The in-band error frame for a stream that already started.
    fn fail(&mut self, err: &ApiError) -> Vec<Bytes>;
}

/// What a generation is measured against.
#[derive(Clone)]
pub struct Drive {
    pub deadline: Instant,
    pub record: Arc<RequestRecord>,
    /// The gateway's prompt estimate, used when the backend reports no usage.
    pub prompt_estimate: u64,
}

/// Counts and clocks kept while events pass, to complete what the backend left out.
#[derive(Debug)]
struct Meter {
    started: Instant,
    first_token: Option<Instant>,
    deltas: u64,
}

impl Meter {
    fn new(started: Instant) -> Self {
        Meter {
            started,
            first_token: None,
            deltas: 0,
        }
    }

    fn saw_delta(&mut self) {
        self.deltas += 1;
        self.first_token.get_or_insert_with(Instant::now);
    }

    fn complete(&self, usage: Option<Usage>, t: Timings, prompt_estimate: u64) -> (Usage, Timings) {
        let usage = usage.unwrap_or(Usage {
            prompt_tokens: prompt_estimate,
            completion_tokens: self.deltas,
        });
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let timings = Timings {
            total_ns: t.total_ns.or(Some(ns(now - self.started))),
            load_ns: t.load_ns,
            prompt_eval_ns: t.prompt_eval_ns.or(Some(ns(first - self.started))),
            eval_ns: t.eval_ns.or(Some(ns(now - first))),
        };
        (usage, timings)
    }
}

/// The next event, or why there is none: the deadline passed, the backend failed, or the
/// stream ended without a finish (which a complete answer always has).
async fn next_event(
    events: &mut EventStream,
    deadline: Instant,
    record: &RequestRecord,
) -> Result<Event, ApiError> {
    let waiting = Instant::now();
    let next = tokio::time::timeout_at(deadline.into(), events.next()).await;
    record.add_backend_wait(waiting.elapsed());
    match next {
        Err(_) => Err(ApiError::Timeout),
        Ok(None) => Err(ApiError::Backend(BackendError::Protocol(
            "stream ended without a finish".into(),
        ))),
        Ok(Some(Err(e))) => Err(ApiError::Backend(e)),
        Ok(Some(Ok(ev))) => Ok(ev),
    }
}

/// The whole answer of a non-streaming request.
#[derive(Debug)]
pub struct Collected {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
}

pub async fn collect(mut events: EventStream, drive: &Drive) -> Result<Collected, ApiError> {
    let mut acc = Accumulator::default();
    let mut meter = Meter::new(drive.record.started);
    loop {
        match next_event(&mut events, drive.deadline, &drive.record).await? {
            Event::Finish {
                reason,
                usage,
                timings,
            } => {
                let (usage, timings) = meter.complete(usage, timings, drive.prompt_estimate);
                drive
                    .record
                    .set_tokens(usage.prompt_tokens, usage.completion_tokens);
                drive.record.set_finish_reason(reason.openai());
                return Ok(Collected {
                    content: std::mem::take(&mut acc.content),
                    tool_calls: acc.take_tool_calls(),
                    reason,
                    usage,
                    timings,
                });
            }
            ev => {
                meter.saw_delta();
                acc.push(&ev);
            }
        }
    }
}

/// A streamed response: frames are produced only as the client reads them, so a slow client
/// slows the backend read (backpressure) and a gone client drops the backend request.
pub fn stream_response(
    events: EventStream,
    encoder: impl Encoder,
    drive: Drive,
    content_type: &'static str,
) -> Response {
    struct St<E> {
        events: EventStream,
        enc: E,
        drive: Drive,
        meter: Meter,
        out: VecDeque<Bytes>,
        done: bool,
    }
    let mut enc = encoder;
    let out: VecDeque<Bytes> = enc.open().into();
    let st = St {
        events,
        enc,
        meter: Meter::new(drive.record.started),
        drive,
        out,
        done: false,
    };
    let ended = Arc::new(AtomicBool::new(false));
    let ends = ended.clone();
    let body = futures::stream::unfold(st, move |mut st| {
        let ends = ends.clone();
        async move {
            loop {
                if let Some(b) = st.out.pop_front() {
                    if st.done && st.out.is_empty() {
                        // The stream's last frame (its end marker, `[DONE]` or `"done":true`):
                        // say so as it goes, so the record holds it until the request's audit
                        // event is committed (`middleware::record`).
                        ends.store(true, Ordering::Release);
                    }
                    return Some((Ok::<Bytes, std::io::Error>(b), st));
                }
                if st.done {
                    return None;
                }
                match next_event(&mut st.events, st.drive.deadline, &st.drive.record).await {
                    Ok(Event::Delta {
                        content,
                        tool_calls,
                    }) => {
                        st.meter.saw_delta();
                        st.drive.record.set_first_token();
                        // What has been delivered so far is what a client that leaves now is
                        // charged (quotas) and recorded for; the finish replaces it with the
                        // backend's own count.
                        st.drive
                            .record
                            .set_tokens(st.drive.prompt_estimate, st.meter.deltas);
                        st.out.extend(st.enc.delta(&content, &tool_calls));
                    }
                    Ok(Event::Finish {
                        reason,
                        usage,
                        timings,
                    }) => {
                        let (usage, timings) =
                            st.meter.complete(usage, timings, st.drive.prompt_estimate);
                        st.drive
                            .record
                            .set_tokens(usage.prompt_tokens, usage.completion_tokens);
                        st.drive.record.set_finish_reason(reason.openai());
                        st.out.extend(st.enc.finish(reason, usage, timings));
                        st.done = true;
                    }
                    Err(e) => {
                        // Once a byte has gone out the status is fixed at 200: report in-band, as
                        // the protocol does, and never retry.
                        tracing::warn!(reason = e.reason(), "stream failed after it started");
                        st.drive.record.set_stream_failed(e.reason());
                        st.out.extend(st.enc.fail(&e));
                        st.done = true;
                    }
                }
            }
        }
    });
    let mut resp = Response::new(Body::new(EndKnown {
        inner: Body::from_stream(body),
        ended,
    }));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell reverse proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// A streamed body that knows when its last frame has gone out: `is_end_stream` turns true
/// with it, not one poll later as a plain stream body's does, so the record can hold that
/// frame back until the request's terminal audit event is committed.
struct EndKnown {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl http_body::Body for EndKnown {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended.load(Ordering::Acquire) || self.inner.is_end_stream()
    }
}

pub const SSE: &str = "text/event-stream";
pub const NDJSON: &str = "application/x-ndjson";

fn openai_error_frame(err: &ApiError) -> Bytes {
    let v = serde_json::json!({"error": {
        "message": err.stream_message(), "type": "server_error", "param": null, "code": err.reason(),
    }});
    sse_event(&v.to_string())
}

/// OpenAI chat chunks.
pub struct OpenAiChat(pub openai::ChatChunkWriter);

impl Encoder for OpenAiChat {
    fn open(&mut self) -> Vec<Bytes> {
        vec![sse_event(&self.0.role())]
    }

    fn delta(&mut self, content: &str, tool_calls: &[ToolCallDelta]) -> Vec<Bytes> {
        vec![sse_event(&self.0.delta(content, tool_calls))]
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage, _: Timings) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = self
            .0
            .finish(reason, usage)
            .iter()
            .map(|c| sse_event(c))
            .collect();
        out.push(sse_event("[DONE]"));
        out
    }

    fn fail(&mut self, err: &ApiError) -> Vec<Bytes> {
        vec![openai_error_frame(err)]
    }
}

/// OpenAI legacy completion chunks.
pub struct OpenAiText {
    pub id: String,
    pub created: i64,
    pub model: String,
    pub include_usage: bool,
}

impl Encoder for OpenAiText {
    fn open(&mut self) -> Vec<Bytes> {
        Vec::new()
    }

    fn delta(&mut self, content: &str, _: &[ToolCallDelta]) -> Vec<Bytes> {
        let usage = self.include_usage.then_some(None);
        vec![sse_event(&openai::text_completion(
            &self.id,
            self.created,
            &self.model,
            content,
            None,
            usage,
        ))]
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage, _: Timings) -> Vec<Bytes> {
        let mut out = vec![sse_event(&openai::text_completion(
            &self.id,
            self.created,
            &self.model,
            "",
            Some(reason),
            self.include_usage.then_some(None),
        ))];
        if self.include_usage {
            out.push(sse_event(&openai::text_completion_usage(
                &self.id,
                self.created,
                &self.model,
                usage,
            )));
        }
        out.push(sse_event("[DONE]"));
        out
    }

    fn fail(&mut self, err: &ApiError) -> Vec<Bytes> {
        vec![openai_error_frame(err)]
    }
}

/// Ollama chat or generate lines. Ollama clients expect whole tool calls, so fragments from an
/// OpenAI-compatible backend are held until the call is complete (at the finish).
pub struct OllamaLines {
    pub kind: ollama::LineKind,
    pub model: String,
    pub calls: Accumulator,
}

impl OllamaLines {
    pub fn new(kind: ollama::LineKind, model: String) -> Self {
        OllamaLines {
            kind,
            model,
            calls: Accumulator::default(),
        }
    }
}

pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

impl Encoder for OllamaLines {
    fn open(&mut self) -> Vec<Bytes> {
        Vec::new()
    }

    fn delta(&mut self, content: &str, tool_calls: &[ToolCallDelta]) -> Vec<Bytes> {
        for d in tool_calls {
            self.calls.push_tool_delta(d);
        }
        if content.is_empty() {
            return Vec::new();
        }
        vec![ndjson_line(&ollama::line(
            self.kind,
            &self.model,
            &now_rfc3339(),
            content,
            &[],
        ))]
    }

    fn finish(&mut self, reason: FinishReason, usage: Usage, timings: Timings) -> Vec<Bytes> {
        let now = now_rfc3339();
        let mut out = Vec::with_capacity(2);
        let calls = self.calls.take_tool_calls();
        if !calls.is_empty() {
            out.push(ndjson_line(&ollama::line(
                self.kind,
                &self.model,
                &now,
                "",
                &calls,
            )));
        }
        out.push(ndjson_line(&ollama::final_line(
            self.kind,
            &self.model,
            &now,
            "",
            &[],
            reason,
            ollama::Metrics { usage, timings },
        )));
        out
    }

    fn fail(&mut self, err: &ApiError) -> Vec<Bytes> {
        let v = serde_json::json!({"error": err.stream_message()});
        vec![ndjson_line(&v.to_string())]
    }
}
