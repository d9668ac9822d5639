//! The Ollama-compatible front: `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`,
//! `/api/tags`, `/api/show`, `/api/ps`, `/api/version`, `/`. Model management is absent by
//! design (the router answers 404).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wardgate_api::canonical::EmbedRequest;
use wardgate_api::ollama::{self, LineKind};
use wardgate_backends::Route;

use super::{Forwarded, Job, begin, fairness_key, run_generation, with_clamp_header};
use crate::error::{ApiError, OllamaError};
use crate::identity::principal::Principal;
use crate::middleware::record::RequestRecord;
use crate::openapi::{OllamaBackendErrors, OllamaErrors, OllamaNotFound, OllamaTooLarge};
use crate::pipeline::extract::Json;
use crate::pipeline::policy;
use crate::pipeline::stream::{self, OllamaLines, now_rfc3339};
use crate::state::AppState;

type Result<T> = std::result::Result<T, OllamaError>;

/// What a client's `keep_alive` becomes before it goes anywhere. It is first checked as the
/// engine parses it (400 otherwise, whichever backend serves the model). The model is shared
/// by every tenant, so only an operator (an admin of the operator tenant) may unload (`0`) or
/// pin (`-1`) it or set its time freely; others' values are ignored, or with
/// `limits.max_client_keep_alive` above zero, positive ones are clamped to it. A request the
/// gateway forwarded to `wardgate llm` carries the gateway's decision and passes as it is.
pub(crate) fn client_keep_alive(
    state: &AppState,
    p: &Principal,
    forwarded: Option<&Forwarded>,
    v: Option<Value>,
) -> std::result::Result<Option<Value>, ApiError> {
    use wardgate_engine::KeepAlive;
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let max = state.config.engine.max_keep_alive;
    let keep = wardgate_engine::engine::parse_keep_alive(Some(&v), max, max).map_err(|_| {
        ApiError::BadRequest(wardgate_api::BadRequest::param(
            "keep_alive",
            "keep_alive must be a duration like \"5m\" or a number of seconds",
        ))
    })?;
    let operator = p.tenant == state.config.operator_tenant && p.has(wardgate_store::Role::Admin);
    if forwarded.is_some() || operator {
        return Ok(Some(v));
    }
    let cap = state.config.limits.max_client_keep_alive;
    Ok(match keep {
        KeepAlive::For(d) if !cap.is_zero() && !d.is_zero() => {
            Some(Value::from(d.min(cap).as_secs_f64()))
        }
        KeepAlive::For(_) | KeepAlive::Forever => None,
    })
}

/// Ollama's answer to a request with nothing to generate: a load (or, with `keep_alive: 0`,
/// unload) acknowledgement. Models live on the backends, so there is nothing to load here.
fn load_ack(kind: LineKind, model: &str, keep_alive: Option<&Value>) -> Response {
    let unload = matches!(keep_alive, Some(Value::Number(n)) if n.as_f64() == Some(0.0))
        || matches!(keep_alive, Some(Value::String(s)) if s == "0" || s == "0s");
    let mut v = json!({"model": model, "created_at": now_rfc3339(), "done": true,
        "done_reason": if unload { "unload" } else { "load" }});
    match kind {
        LineKind::Chat => v["message"] = json!({"role": "assistant", "content": ""}),
        LineKind::Generate => v["response"] = json!(""),
    }
    axum::Json(v).into_response()
}

/// Chat, streamed (the default) or whole. No messages: a load acknowledgement.
#[utoipa::path(
    post,
    path = "/api/chat",
    tag = "ollama",
    request_body = ollama::ChatRequestIn,
    responses(
        (status = 200, description = "NDJSON lines (`done: false`, then one `done: true` object), \
            or with `stream: false` the final object with the whole text. An error after the \
            stream started is one last `{\"error\": ...}` line.",
            content(
                (ollama::LineOut = "application/x-ndjson"),
                (ollama::LineOut = "application/json")
            )),
        OllamaErrors, OllamaNotFound, OllamaTooLarge, OllamaBackendErrors,
    ),
    security(("bearer" = []))
)]
pub async fn chat(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(record): Extension<Arc<RequestRecord>>,
    forwarded: Option<Extension<Forwarded>>,
    Json(body): Json<ollama::ChatRequestIn>,
) -> Result<Response> {
    let streaming = body.wants_stream();
    let public = body.model.clone();
    let route = begin(&state, &p, &record, &public).await?;
    let mut req = body.into_canonical()?;
    let forwarded = forwarded.map(|Extension(f)| f);
    req.keep_alive = client_keep_alive(&state, &p, forwarded.as_ref(), req.keep_alive.take())?;
    req.fairness = Some(fairness_key(&p, forwarded.as_ref()));
    if req.messages.is_empty() {
        return Ok(load_ack(LineKind::Chat, &public, req.keep_alive.as_ref()));
    }
    let (events, drive, checked) = run_generation(
        &state,
        &p,
        &record,
        &route,
        &mut Job::Chat(req),
        policy::OLLAMA,
    )
    .await?;
    if streaming {
        let enc = OllamaLines::new(LineKind::Chat, public);
        let resp = stream::stream_response(events, enc, drive, stream::NDJSON);
        return Ok(with_clamp_header(resp, checked, "num_predict"));
    }
    let c = stream::collect(events, &drive).await?;
    let line = ollama::final_line(
        LineKind::Chat,
        &public,
        &now_rfc3339(),
        &c.content,
        &c.tool_calls,
        c.reason,
        ollama::Metrics {
            usage: c.usage,
            timings: c.timings,
        },
    );
    Ok(with_clamp_header(json_text(line), checked, "num_predict"))
}

/// Generation from a prompt, streamed (the default) or whole. No prompt: a load
/// acknowledgement.
#[utoipa::path(
    post,
    path = "/api/generate",
    tag = "ollama",
    request_body = ollama::GenerateRequestIn,
    responses(
        (status = 200, description = "NDJSON lines (`done: false`, then one `done: true` object), \
            or with `stream: false` the final object with the whole text.",
            content(
                (ollama::LineOut = "application/x-ndjson"),
                (ollama::LineOut = "application/json")
            )),
        OllamaErrors, OllamaNotFound, OllamaTooLarge, OllamaBackendErrors,
    ),
    security(("bearer" = []))
)]
pub async fn generate(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(record): Extension<Arc<RequestRecord>>,
    forwarded: Option<Extension<Forwarded>>,
    Json(body): Json<ollama::GenerateRequestIn>,
) -> Result<Response> {
    let streaming = body.wants_stream();
    let public = body.model.clone();
    let route = begin(&state, &p, &record, &public).await?;
    let mut req = body.into_canonical()?;
    let forwarded = forwarded.map(|Extension(f)| f);
    req.keep_alive = client_keep_alive(&state, &p, forwarded.as_ref(), req.keep_alive.take())?;
    req.fairness = Some(fairness_key(&p, forwarded.as_ref()));
    if req.prompt.is_empty() && req.suffix.is_none() {
        return Ok(load_ack(
            LineKind::Generate,
            &public,
            req.keep_alive.as_ref(),
        ));
    }
    let mut job = Job::Complete(req);
    let (events, drive, checked) =
        run_generation(&state, &p, &record, &route, &mut job, policy::OLLAMA).await?;
    if streaming {
        let enc = OllamaLines::new(LineKind::Generate, public);
        let resp = stream::stream_response(events, enc, drive, stream::NDJSON);
        return Ok(with_clamp_header(resp, checked, "num_predict"));
    }
    let c = stream::collect(events, &drive).await?;
    let line = ollama::final_line(
        LineKind::Generate,
        &public,
        &now_rfc3339(),
        &c.content,
        &[],
        c.reason,
        ollama::Metrics {
            usage: c.usage,
            timings: c.timings,
        },
    );
    Ok(with_clamp_header(json_text(line), checked, "num_predict"))
}

fn json_text(s: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], s).into_response()
}

/// Embeddings of one or more inputs.
#[utoipa::path(
    post,
    path = "/api/embed",
    tag = "ollama",
    request_body = ollama::EmbedRequestIn,
    responses(
        (status = 200, description = "One vector per input.", body = ollama::EmbedOut),
        OllamaErrors, OllamaNotFound, OllamaTooLarge, OllamaBackendErrors,
    ),
    security(("bearer" = []))
)]
pub async fn embed(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(record): Extension<Arc<RequestRecord>>,
    forwarded: Option<Extension<Forwarded>>,
    Json(body): Json<ollama::EmbedRequestIn>,
) -> Result<Response> {
    let mut req = body.into_canonical()?;
    let forwarded = forwarded.map(|Extension(f)| f);
    req.keep_alive = client_keep_alive(&state, &p, forwarded.as_ref(), req.keep_alive.take())?;
    let model = req.model.clone();
    let started = record.started;
    let resp = super::run_embedding(&state, &p, &record, req).await?;
    let total = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Ok(axum::Json(ollama::EmbedOut {
        model: &model,
        embeddings: &resp.embeddings,
        total_duration: total,
        load_duration: 0,
        prompt_eval_count: resp.prompt_tokens,
    })
    .into_response())
}

/// Legacy `/api/embeddings`: one prompt, one vector, nothing else.
#[utoipa::path(
    post,
    path = "/api/embeddings",
    tag = "ollama",
    request_body = ollama::EmbeddingsRequestIn,
    responses(
        (status = 200, description = "The vector (empty for an empty prompt).", body = ollama::EmbeddingOut),
        OllamaErrors, OllamaNotFound, OllamaTooLarge, OllamaBackendErrors,
    ),
    security(("bearer" = []))
)]
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(record): Extension<Arc<RequestRecord>>,
    forwarded: Option<Extension<Forwarded>>,
    Json(body): Json<ollama::EmbeddingsRequestIn>,
) -> Result<Response> {
    let forwarded = forwarded.map(|Extension(f)| f);
    let keep_alive = client_keep_alive(&state, &p, forwarded.as_ref(), body.keep_alive)?;
    let input = if body.prompt.is_empty() {
        Vec::new()
    } else {
        vec![body.prompt]
    };
    let req = EmbedRequest {
        model: body.model,
        input,
        dimensions: None,
        truncate: None,
        keep_alive,
    };
    let resp = super::run_embedding(&state, &p, &record, req).await?;
    let embedding = resp.embeddings.into_iter().next().unwrap_or_default();
    Ok(axum::Json(ollama::EmbeddingOut { embedding }).into_response())
}

/// Model details: the store's, when the in-process engine serves the model; otherwise empty
/// (a remote backend's details are its own and are not fetched per listing).
pub(crate) fn details(entry: Option<&wardgate_engine::ModelEntry>) -> ollama::Details {
    match entry {
        Some(e) => ollama::Details {
            parent_model: String::new(),
            format: "gguf".into(),
            family: e.family.clone(),
            families: Some(vec![e.family.clone()]),
            parameter_size: e.parameter_size.clone(),
            quantization_level: e.quantization_level.clone(),
        },
        None => ollama::Details::default(),
    }
}

/// The store entry of a route's first link, when that link is the embedded engine.
fn local_entry(state: &AppState, route: &Route) -> Option<wardgate_engine::ModelEntry> {
    let engine = state.engine.as_ref()?;
    let link = route.chain.first()?;
    if link.pool.replicas().next()?.backend.kind() != "embedded" {
        return None;
    }
    engine.store().get(&link.upstream_model).ok()
}

fn modified_at(route: &Route) -> String {
    time::OffsetDateTime::from_unix_timestamp(route.created)
        .map(wardgate_api::rfc3339)
        .unwrap_or_default()
}

/// The models this credential may use.
#[utoipa::path(
    get,
    path = "/api/tags",
    tag = "ollama",
    responses(
        (status = 200, description = "The models this credential may use.", body = ollama::Tags),
        OllamaErrors,
    ),
    security(("bearer" = []))
)]
pub async fn tags(State(state): State<AppState>, Extension(p): Extension<Principal>) -> Response {
    let models = state
        .visible_models(&p)
        .into_iter()
        .map(|(name, route)| {
            let e = local_entry(&state, &route);
            ollama::TagModel {
                model: name.clone(),
                name,
                modified_at: modified_at(&route),
                size: e.as_ref().map_or(0, |e| e.size),
                digest: e.as_ref().map(|e| e.digest.clone()).unwrap_or_default(),
                details: details(e.as_ref()),
            }
        })
        .collect();
    axum::Json(ollama::Tags { models }).into_response()
}

/// The models this credential may use that have a healthy backend now.
#[utoipa::path(
    get,
    path = "/api/ps",
    tag = "ollama",
    responses(
        (status = 200, description = "The usable models.", body = ollama::Ps),
        OllamaErrors,
    ),
    security(("bearer" = []))
)]
pub async fn ps(State(state): State<AppState>, Extension(p): Extension<Principal>) -> Response {
    let far = wardgate_api::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(365));
    let models = state
        .visible_models(&p)
        .into_iter()
        .filter(|(_, route)| route.is_ready())
        .map(|(name, route)| {
            let e = local_entry(&state, &route);
            ollama::PsModel {
                model: name.clone(),
                name,
                size: e.as_ref().map_or(0, |e| e.size),
                digest: e.as_ref().map(|e| e.digest.clone()).unwrap_or_default(),
                details: details(e.as_ref()),
                expires_at: far.clone(),
                size_vram: 0,
                context_length: route.context_window,
            }
        })
        .collect();
    axum::Json(ollama::Ps { models }).into_response()
}

/// One model's details.
#[utoipa::path(
    post,
    path = "/api/show",
    tag = "ollama",
    request_body = ollama::ShowRequestIn,
    responses(
        (status = 200, description = "The model's details.", body = ollama::ShowOut),
        OllamaErrors, OllamaNotFound, OllamaTooLarge,
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Json(body): Json<ollama::ShowRequestIn>,
) -> Result<Response> {
    let Some(name) = body.model() else {
        return Err(ApiError::BadRequest(wardgate_api::BadRequest::param(
            "model",
            "model is required",
        ))
        .into());
    };
    let route = state.route_for(&p, name)?;
    let mut model_info = serde_json::Map::new();
    model_info.insert(
        "wardgate.context_length".into(),
        json!(route.context_window),
    );
    Ok(axum::Json(ollama::ShowOut {
        modelfile: String::new(),
        parameters: String::new(),
        template: String::new(),
        license: String::new(),
        details: details(local_entry(&state, &route).as_ref()),
        model_info,
        capabilities: vec!["completion".into()],
        modified_at: modified_at(&route),
    })
    .into_response())
}

/// The gateway's version.
#[utoipa::path(
    get,
    path = "/api/version",
    tag = "ollama",
    responses(
        (status = 200, description = "The gateway's version.", body = ollama::VersionOut),
        OllamaErrors,
    ),
    security(("bearer" = []))
)]
pub async fn version() -> Response {
    axum::Json(ollama::VersionOut {
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response()
}

/// `GET /` and `HEAD /`. Ollama tools probe for this exact text, so it is kept verbatim.
#[utoipa::path(
    get,
    path = "/",
    tag = "ollama",
    responses(
        (status = 200, description = "The text `Ollama is running`.", body = String, content_type = "text/plain"),
        OllamaErrors,
    ),
    security(("bearer" = []))
)]
pub async fn root() -> &'static str {
    "Ollama is running"
}
