//! The in-process engine as a backend (`kind = "embedded"`): single-service mode, no HTTP hop.
//! The gateway's chain walk, fallback and bounds apply to it exactly as to remote backends.

use std::sync::Arc;

use futures::StreamExt;
use wardgate_api::canonical::{
    ChatRequest, CompletionRequest, EmbedRequest, EmbedResponse, Event, FinishReason, Timings,
    Usage,
};
use wardgate_engine::{Engine, EngineError, Generation, Loaded, Output, StopReason, StoreError};

use crate::{Backend, BackendError, EventStream, UpstreamKind};

pub struct EmbeddedBackend {
    name: String,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl EmbeddedBackend {
    pub fn new(name: impl Into<String>, engine: Arc<Engine>) -> Self {
        EmbeddedBackend {
            name: name.into(),
            engine,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

/// Maps engine failures onto what they mean for the client, like an HTTP backend's statuses.
pub fn engine_error(e: EngineError) -> BackendError {
    let (status, kind) = match &e {
        EngineError::Store(StoreError::NotFound(_))
        | EngineError::Store(StoreError::BadName(_)) => (404, UpstreamKind::ModelNotFound),
        EngineError::Busy => (503, UpstreamKind::Unavailable),
        EngineError::ContextLength { .. } => (400, UpstreamKind::ContextLength),
        EngineError::BadRequest(_) => (400, UpstreamKind::BadRequest),
        EngineError::OverBudget { .. } => (503, UpstreamKind::Unavailable),
        EngineError::Store(_) | EngineError::Load { .. } | EngineError::Stopped => {
            (500, UpstreamKind::Server)
        }
    };
    BackendError::Status {
        status,
        kind,
        detail: e.to_string(),
    }
}

/// Turns the engine's outputs into events. When the generation ends (or the stream is dropped)
/// the request's keep-alive is applied; dropping the stream closes the receiver, which stops the
/// sequence at the next decode step.
fn events(
    engine: Arc<Engine>,
    loaded: Arc<Loaded>,
    rx: Generation,
    keep: wardgate_engine::KeepAlive,
) -> EventStream {
    struct Release {
        engine: Arc<Engine>,
        loaded: Arc<Loaded>,
        keep: wardgate_engine::KeepAlive,
    }
    impl Drop for Release {
        fn drop(&mut self) {
            self.engine.release(&self.loaded, self.keep);
        }
    }
    let guard = Release {
        engine,
        loaded,
        keep,
    };
    // The attempt's span (when traces are exported): the engine's phases become its children.
    let span = tracing::Span::current();
    let stream = futures::stream::unfold((rx, Some(guard)), move |(mut rx, guard)| {
        let span = span.clone();
        async move {
            guard.as_ref()?;
            match rx.recv().await {
                Some(Output::Text(t)) => Some((Ok(Event::text(t)), (rx, guard))),
                Some(Output::Done(s)) => {
                    crate::trace::engine_phases(&span, s.queued, s.prompt_eval, s.eval);
                    let ns = |d: std::time::Duration| {
                        Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                    };
                    let ev = Event::Finish {
                        reason: match s.reason {
                            StopReason::Stop => FinishReason::Stop,
                            StopReason::Length => FinishReason::Length,
                        },
                        usage: Some(Usage {
                            prompt_tokens: s.prompt_tokens,
                            completion_tokens: s.completion_tokens,
                        }),
                        timings: Timings {
                            total_ns: ns(s.queued + s.prompt_eval + s.eval),
                            load_ns: None,
                            prompt_eval_ns: ns(s.prompt_eval),
                            eval_ns: ns(s.eval),
                        },
                    };
                    Some((Ok(ev), (rx, None)))
                }
                // The model thread refused the request's input (a grammar llama.cpp does not
                // take, a prompt over the slot's context): the client's mistake, a 400, which
                // neither falls back to the next link nor counts against the breaker.
                Some(Output::Rejected(detail)) => Some((
                    Err(BackendError::Status {
                        status: 400,
                        kind: UpstreamKind::BadRequest,
                        detail,
                    }),
                    (rx, None),
                )),
                Some(Output::Error(e)) => Some((
                    Err(BackendError::Status {
                        status: 500,
                        kind: UpstreamKind::Server,
                        detail: e,
                    }),
                    (rx, None),
                )),
                None => Some((
                    Err(BackendError::Protocol(
                        "the model stopped mid-generation".into(),
                    )),
                    (rx, None),
                )),
            }
        }
    });
    Box::pin(stream.fuse())
}

#[async_trait::async_trait]
impl Backend for EmbeddedBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn chat(&self, req: &ChatRequest) -> Result<EventStream, BackendError> {
        let keep = self
            .engine
            .keep_alive(req.keep_alive.as_ref())
            .map_err(engine_error)?;
        let (loaded, rx) = self.engine.chat(req).await.map_err(engine_error)?;
        Ok(events(self.engine.clone(), loaded, rx, keep))
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<EventStream, BackendError> {
        let keep = self
            .engine
            .keep_alive(req.keep_alive.as_ref())
            .map_err(engine_error)?;
        let (loaded, rx) = self.engine.complete(req).await.map_err(engine_error)?;
        Ok(events(self.engine.clone(), loaded, rx, keep))
    }

    async fn embed(&self, req: &EmbedRequest) -> Result<EmbedResponse, BackendError> {
        self.engine.embed(req).await.map_err(engine_error)
    }

    async fn list_models(&self) -> Result<Vec<String>, BackendError> {
        let models = self
            .engine
            .store()
            .list()
            .map_err(|e| engine_error(e.into()))?;
        Ok(models.into_keys().collect())
    }

    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
