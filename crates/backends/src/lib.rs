//! Model backends: the [`Backend`] trait, the HTTP adapters for Ollama-API and OpenAI-API
//! servers, and the routing layer that walks a model's chain with fallback, balances each link
//! over its pool of replicas (with conversation affinity), health checks and circuit breaking.
//! Knows nothing of tenants or keys: the caller names a request's affinity scope (the tenant)
//! as an opaque string.

pub mod affinity;
pub mod breaker;
pub mod catalog;
pub mod embedded;
pub mod handle;
pub mod http;
pub mod pool;
pub mod trace;

use std::pin::Pin;

use futures::Stream;
use wardgate_api::canonical::{ChatRequest, CompletionRequest, EmbedRequest, EmbedResponse, Event};

pub use breaker::{Breaker, BreakerConfig};
pub use catalog::{Budget, Catalog, Link, ModelEntry, Route, Served};
pub use embedded::EmbeddedBackend;
pub use handle::{BackendHandle, InFlight};
pub use http::{HttpBackend, HttpBackendConfig};
pub use pool::{Pool, PoolConfig};

/// Events of one generation, ending with [`Event::Finish`] when it completed. Dropping the
/// stream cancels the upstream request.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, BackendError>> + Send>>;

/// Which wire protocol a backend speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The Ollama native API: Ollama itself and `wardgate llm`.
    Ollama,
    /// The OpenAI-compatible API: vLLM, llama.cpp server, llama-cpp-python.
    Openai,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Ollama => "ollama",
            BackendKind::Openai => "openai",
        }
    }
}

/// What an upstream's error status means for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamKind {
    /// The backend refused the gateway's own credentials (401/403): a misconfiguration.
    Auth,
    ModelNotFound,
    ContextLength,
    BadRequest,
    RateLimited,
    Unavailable,
    Server,
}

/// Why a backend call failed. The `detail` strings are for the (redacted) log only: they may
/// hold upstream text and are never sent to a client.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to the backend: {0}")]
    Connect(String),
    #[error("the backend did not answer in time")]
    Timeout,
    #[error("the backend answered {status}")]
    Status {
        status: u16,
        kind: UpstreamKind,
        detail: String,
    },
    #[error("the backend broke the protocol: {0}")]
    Protocol(String),
    #[error("the backend is marked down")]
    CircuitOpen,
}

impl BackendError {
    /// Whether the next link of a chain may be tried: the backend, not the request, is at
    /// fault (refused connection, 5xx, timeout before the first token).
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Connect(_)
            | BackendError::Timeout
            | BackendError::Protocol(_)
            | BackendError::CircuitOpen => true,
            BackendError::Status { kind, .. } => {
                matches!(
                    kind,
                    UpstreamKind::Unavailable | UpstreamKind::Server | UpstreamKind::Auth
                )
            }
        }
    }

    /// The failure's `error.type` on an attempt's trace span: its kind, never its text.
    pub fn error_type(&self) -> &'static str {
        match self {
            BackendError::Connect(_) => "backend_connect",
            BackendError::Timeout => "timeout",
            BackendError::Status { .. } => "backend_status",
            BackendError::Protocol(_) => "backend_protocol",
            BackendError::CircuitOpen => "backend_circuit_open",
        }
    }

    /// Whether this failure says the backend itself is unwell (counts against its breaker).
    /// A busy backend (503, a full queue) is healthy and merely full: the next link is tried,
    /// but the breaker is not tripped, or load would take a working backend out of service.
    pub fn is_backend_fault(&self) -> bool {
        match self {
            BackendError::CircuitOpen => false,
            busy if busy.is_busy() => false,
            other => other.is_retryable(),
        }
    }

    /// Whether the backend said it is full (503): alive, and tried last for a while when it
    /// keeps saying so ([`BreakerConfig::busy_threshold`]).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            BackendError::Status {
                kind: UpstreamKind::Unavailable,
                ..
            }
        )
    }
}

/// A model server.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// The protocol or kind, for logs: `ollama`, `openai`, `embedded`.
    fn kind(&self) -> &'static str;
    /// Starts a chat generation; returns once the backend accepted it (headers received).
    async fn chat(&self, req: &ChatRequest) -> Result<EventStream, BackendError>;
    async fn complete(&self, req: &CompletionRequest) -> Result<EventStream, BackendError>;
    async fn embed(&self, req: &EmbedRequest) -> Result<EmbedResponse, BackendError>;
    /// The model names the backend serves.
    async fn list_models(&self) -> Result<Vec<String>, BackendError>;
    /// A cheap liveness probe.
    async fn health(&self) -> Result<(), BackendError>;
}

/// A backend whose answers a test sets: for the routing tests, which need no server.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use wardgate_api::canonical::{FinishReason, Message, Role, Timings};

    use super::*;

    /// A chat of `messages` (role, text) for model `m`.
    pub(crate) fn chat(messages: &[(Role, &str)]) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: messages.iter().map(|(r, c)| Message::new(*r, *c)).collect(),
            sampling: Default::default(),
            format: Default::default(),
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            keep_alive: None,
            fairness: None,
        }
    }

    /// What every call of a [`Scripted`] backend does.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Mode {
        /// Streams its own name, then finishes.
        Ok,
        /// 503: full.
        Busy,
        /// The connection is refused.
        Down,
        /// Accepts the generation and never sends a first event.
        Silent,
    }

    pub(crate) struct Scripted {
        name: String,
        pub mode: Mutex<Mode>,
        pub calls: AtomicUsize,
    }

    impl Scripted {
        pub(crate) fn ok(name: &str) -> Scripted {
            Scripted {
                name: name.to_owned(),
                mode: Mutex::new(Mode::Ok),
                calls: AtomicUsize::new(0),
            }
        }

        pub(crate) fn set(&self, mode: Mode) {
            *self
                .mode
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
        }

        fn answer(&self) -> Result<EventStream, BackendError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match *self
                .mode
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                Mode::Ok => Ok(Box::pin(futures::stream::iter(vec![
                    Ok::<_, BackendError>(Event::text(self.name.clone())),
                    Ok(Event::Finish {
                        reason: FinishReason::Stop,
                        usage: None,
                        timings: Timings::default(),
                    }),
                ]))),
                Mode::Busy => Err(BackendError::Status {
                    status: 503,
                    kind: UpstreamKind::Unavailable,
                    detail: "busy".into(),
                }),
                Mode::Down => Err(BackendError::Connect("refused".into())),
                Mode::Silent => Ok(Box::pin(futures::stream::pending())),
            }
        }
    }

    #[async_trait::async_trait]
    impl Backend for Scripted {
        fn name(&self) -> &str {
            &self.name
        }
        fn kind(&self) -> &'static str {
            "scripted"
        }
        async fn chat(&self, _: &ChatRequest) -> Result<EventStream, BackendError> {
            self.answer()
        }
        async fn complete(&self, _: &CompletionRequest) -> Result<EventStream, BackendError> {
            self.answer()
        }
        async fn embed(&self, _: &EmbedRequest) -> Result<EmbedResponse, BackendError> {
            Err(BackendError::Protocol("not scripted".into()))
        }
        async fn list_models(&self) -> Result<Vec<String>, BackendError> {
            Ok(vec![])
        }
        async fn health(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }
}
