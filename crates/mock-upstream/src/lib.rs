//! A mock model server for tests, never shipped: it speaks the Ollama native API and the
//! OpenAI-compatible API, and can be told to be slow, flaky, failing, to drop a stream part-way
//! or to stream a given number of tokens.
//!
//! Code map: `server` owns the socket and the connection tasks, `routes` the router and the
//! steps every inference request shares, `ollama` and `openai` the two wire protocols, `reply`
//! what the "model" says, `stream` the lazy streaming body and `state` the shared config and
//! counters.
//!
//! Invariant: a streamed body is produced lazily as hyper polls it, so a client that goes away
//! mid-stream drops the body, and the body's guard counts the stream as cancelled.

use std::time::Duration;

mod error;
mod ollama;
mod openai;
mod reply;
mod routes;
mod server;
mod state;
mod stream;

pub use server::MockServer;

/// How the mock behaves; [`MockServer::set_config`] swaps it for the requests that follow.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Model names the server knows; any other name gets a 404 in the protocol's shape.
    pub models: Vec<String>,
    /// Tokens streamed per reply (`tok0 `, `tok1 `, ...), unless the prompt asks for an echo.
    pub tokens: usize,
    /// Sleep between two streamed tokens.
    pub token_delay: Duration,
    /// Sleep before the first token, and before a non-streamed reply. Streams send their
    /// `200` headers first and then wait.
    pub first_token_delay: Duration,
    /// Sleep before sending any response headers at all (every route, not only inference).
    pub headers_delay: Duration,
    /// `Some(status)`: every inference request answers `status` with an error body in the
    /// protocol's shape.
    pub fail_status: Option<u16>,
    /// The first `fail_first` inference requests (counted from the last [`MockServer::set_config`],
    /// or from the start) answer 500; later ones succeed.
    pub fail_first: usize,
    /// `Some(n)`: send `n` tokens (at most all of them), then cut the connection without the
    /// final message. A non-streamed reply sends its headers and then cuts the body.
    pub drop_after: Option<usize>,
    /// Length of every embedding vector.
    pub embedding_dim: usize,
    /// Answer every chat, generate and completion request whole, as one pretty-printed
    /// `application/json` document, even when it asks for a stream: some OpenAI-compatible
    /// servers ignore `stream: true` so.
    pub ignore_stream: bool,
    /// `Some(k)`: at most `k` POST requests (inference) at a time, each counted from its
    /// arrival until its response body has been sent or dropped; one more answers 503 at once
    /// in the protocol's shape (a full queue, as Ollama and `wardgate llm` answer). They do
    /// not queue: a pool's router is meant to find a free replica.
    pub max_concurrent: Option<usize>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            models: vec!["mock-model".into()],
            tokens: 8,
            token_delay: Duration::ZERO,
            first_token_delay: Duration::ZERO,
            headers_delay: Duration::ZERO,
            fail_status: None,
            fail_first: 0,
            drop_after: None,
            embedding_dim: 8,
            ignore_stream: false,
            max_concurrent: None,
        }
    }
}

/// A snapshot of what the server has seen, from [`MockServer::stats`].
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Every request, whatever its route or outcome.
    pub requests: u64,
    /// Requests to chat, generate, completions or embeddings routes.
    pub inference_requests: u64,
    /// POST requests answered 503 because `max_concurrent` were in progress.
    pub busy_refusals: u64,
    /// POST requests in progress now (counted only while `max_concurrent` is set).
    pub active: usize,
    /// Streams that delivered their final message.
    pub completed_streams: u64,
    /// Streamed bodies dropped (the client went away) before the final message. Streams cut on
    /// purpose by `drop_after` are not counted here.
    pub cancelled_streams: u64,
    /// The body of the last inference request as received; `None` when it was not valid JSON.
    pub last_body: Option<serde_json::Value>,
    /// The path (with its query) of the last inference request.
    pub last_path: Option<String>,
    /// The headers of the last inference request, names lower-cased, in the order received.
    pub last_headers: Vec<(String, String)>,
}
