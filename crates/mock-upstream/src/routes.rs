//! The router, and the steps every inference request takes before its protocol answers it:
//! record, parse, inject the configured failures, check the model.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use crate::MockConfig;
use crate::error::{ApiError, MockError, Proto};
use crate::reply::model_matches;
use crate::state::Shared;
use crate::stream::Timing;
use crate::{ollama, openai};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        // Ollama native.
        .route("/", get(ollama::root))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        // OpenAI-compatible.
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        // The mock's own: what the last inference request carried (the end-to-end suite checks
        // what the gateway forwards, e.g. its `traceparent`). No real backend has this route.
        .route("/_mock/last-request", get(last_request))
        .fallback(no_route)
        // Load tests send big prompts; the mock should not be the thing that rejects them.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// The path and headers of the last inference request, as JSON.
async fn last_request(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> axum::Json<Value> {
    let stats = shared.stats();
    axum::Json(serde_json::json!({
        "inference_requests": stats.inference_requests,
        "path": stats.last_path,
        "headers": stats.last_headers,
    }))
}

async fn no_route(uri: Uri) -> Response {
    let proto = if uri.path().starts_with("/v1/") {
        Proto::OpenAi
    } else {
        Proto::Ollama
    };
    MockError::NoRoute.on(proto).into_response()
}

/// An inference request that passed the common checks.
pub(crate) struct Inference {
    pub body: Map<String, Value>,
    /// The model name as the request spelled it (replies echo it back).
    pub model: String,
    pub config: MockConfig,
    pub seq: u64,
    pub timing: Timing,
}

impl Inference {
    pub(crate) fn field(&self, name: &str) -> Option<&Value> {
        self.body.get(name)
    }
}

/// Records the request, then answers malformed JSON with 400, the configured failures with
/// their status, a missing model with 400 and an unknown one with 404, in that order.
pub(crate) fn begin(
    shared: &Shared,
    proto: Proto,
    uri: &Uri,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<Inference, ApiError> {
    let started = Instant::now();
    let parsed = serde_json::from_slice::<Value>(raw);
    // The query too: what a signed hop puts there (the fairness key) is asserted by tests.
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let admission = shared.admit_inference(path, headers, parsed.as_ref().ok().cloned());
    let body = match parsed {
        Ok(Value::Object(body)) => body,
        Ok(_) => {
            return Err(MockError::bad_request("request body must be a JSON object").on(proto));
        }
        Err(error) => {
            return Err(MockError::bad_request(format!("invalid JSON: {error}")).on(proto));
        }
    };
    let config = admission.config;
    if let Some(status) = config.fail_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(MockError::Injected(status).on(proto));
    }
    if let Some(index) = admission.flaky_index
        && index < config.fail_first as u64
    {
        return Err(MockError::Injected(StatusCode::INTERNAL_SERVER_ERROR).on(proto));
    }
    let model = match body.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => model.to_owned(),
        Some(_) | None => return Err(MockError::bad_field("model is required", "model").on(proto)),
    };
    check_model(&config, &model).map_err(|e| e.on(proto))?;
    Ok(Inference {
        body,
        model,
        timing: Timing::new(started, &config),
        config,
        seq: admission.seq,
    })
}

pub(crate) fn check_model(config: &MockConfig, model: &str) -> Result<(), MockError> {
    if config
        .models
        .iter()
        .any(|known| model_matches(known, model))
    {
        Ok(())
    } else {
        Err(MockError::ModelNotFound(model.to_owned()))
    }
}

/// The `stream` flag, with the protocol's default when it is absent or not a boolean; never
/// set when the mock is told to ignore it.
pub(crate) fn streamed(inference: &Inference, default: bool) -> bool {
    !inference.config.ignore_stream
        && inference
            .body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(default)
}

/// A non-negative integer field read as a token limit.
pub(crate) fn limit(value: Option<&Value>) -> Option<usize> {
    value
        .and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now as RFC 3339 with fractional seconds, as Ollama writes `created_at`.
pub(crate) fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| MODIFIED_AT.to_owned())
}

/// The `modified_at` of every mock model, and the same instant as a Unix time.
pub(crate) const MODIFIED_AT: &str = "2025-01-01T00:00:00.000000000Z";
pub(crate) const MODIFIED_AT_UNIX: u64 = 1_735_689_600;
