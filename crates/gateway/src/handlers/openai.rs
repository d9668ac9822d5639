//! The OpenAI-compatible front: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/models`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use wardgate_api::openai::{self, ChatChunkWriter};

use super::{Job, begin, run_generation, unix_now, with_clamp_header};
use crate::error::OpenAiError;
use crate::identity::principal::Principal;
use crate::middleware::record::RequestRecord;
use crate::openapi::{OpenAiBackendErrors, OpenAiErrors, OpenAiNotFound, OpenAiTooLarge};
use crate::pipeline::extract::Json;
use crate::pipeline::policy;
use crate::pipeline::stream::{self, OpenAiChat, OpenAiText};
use crate::state::AppState;

type Result<T> = std::result::Result<T, OpenAiError>;

// The OpenAPI descriptions below are the document at `/openapi.json` (see `crate::openapi`).

/// Chat completions, whole or streamed.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = openai::ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer: one `chat.completion` object, or with `stream: true` \
            an SSE stream whose `data:` fields are `ChatChunkOut` objects, ending with `data: [DONE]`. \
            `x-wardgate-clamped: max_tokens` says a cap lowered the requested tokens.",
            content(
                (openai::ChatCompletionOut = "application/json"),
                (String = "text/event-stream")
            )),
        OpenAiErrors, OpenAiNotFound, OpenAiTooLarge, OpenAiBackendErrors,
    ),
    security(("bearer" = []))
)]
pub async fn chat(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Json(body): Json<openai::ChatCompletionRequest>,
) -> Result<Response> {
    let streaming = body.wants_stream();
    let include_usage = body.include_usage();
    let public = body.model.clone();
    let route = begin(&state, &p, &record, &public).await?;
    let mut job = Job::Chat(body.into_canonical()?);
    let (events, drive, checked) =
        run_generation(&state, &p, &record, &route, &mut job, policy::OPENAI).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    if streaming {
        let writer = ChatChunkWriter::new(id, created, public, include_usage);
        let resp = stream::stream_response(events, OpenAiChat(writer), drive, stream::SSE);
        return Ok(with_clamp_header(resp, checked, "max_tokens"));
    }
    let c = stream::collect(events, &drive).await?;
    let body = openai::chat_completion(
        &id,
        created,
        &public,
        &c.content,
        &c.tool_calls,
        c.reason,
        c.usage,
    );
    Ok(with_clamp_header(
        axum::Json(body).into_response(),
        checked,
        "max_tokens",
    ))
}

/// Legacy text completions, whole or streamed.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    request_body = openai::CompletionRequestIn,
    responses(
        (status = 200, description = "The answer: one `text_completion` object, or with `stream: true` \
            an SSE stream of `TextCompletionOut` chunks ending with `data: [DONE]`.",
            content(
                (openai::TextCompletionOut = "application/json"),
                (String = "text/event-stream")
            )),
        OpenAiErrors, OpenAiNotFound, OpenAiTooLarge, OpenAiBackendErrors,
    ),
    security(("bearer" = []))
)]
pub async fn completions(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Json(body): Json<openai::CompletionRequestIn>,
) -> Result<Response> {
    let streaming = body.wants_stream();
    let include_usage = body.include_usage();
    let public = body.model.clone();
    let route = begin(&state, &p, &record, &public).await?;
    let mut job = Job::Complete(body.into_canonical()?);
    let (events, drive, checked) =
        run_generation(&state, &p, &record, &route, &mut job, policy::OPENAI).await?;
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    if streaming {
        let enc = OpenAiText {
            id,
            created,
            model: public,
            include_usage,
        };
        let resp = stream::stream_response(events, enc, drive, stream::SSE);
        return Ok(with_clamp_header(resp, checked, "max_tokens"));
    }
    let c = stream::collect(events, &drive).await?;
    let body = openai::text_completion(
        &id,
        created,
        &public,
        &c.content,
        Some(c.reason),
        Some(Some(c.usage)),
    );
    let resp = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    Ok(with_clamp_header(resp, checked, "max_tokens"))
}

/// Embeddings, as floats or base64.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    request_body = openai::EmbeddingRequestIn,
    responses(
        (status = 200, description = "One vector per input.", body = openai::EmbeddingsOut),
        OpenAiErrors, OpenAiNotFound, OpenAiTooLarge, OpenAiBackendErrors,
    ),
    security(("bearer" = []))
)]
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(record): Extension<Arc<RequestRecord>>,
    Json(body): Json<openai::EmbeddingRequestIn>,
) -> Result<Response> {
    let encoding = body.encoding()?;
    let public = body.model.clone();
    let req = body.into_canonical()?;
    let resp = super::run_embedding(&state, &p, &record, req).await?;
    Ok(axum::Json(openai::embeddings(
        &public,
        &resp.embeddings,
        encoding,
        resp.prompt_tokens,
    ))
    .into_response())
}

/// The models this credential may use.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "The models this credential may use.", body = openai::ModelListOut),
        OpenAiErrors,
    ),
    security(("bearer" = []))
)]
pub async fn models(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Response> {
    let list: Vec<(String, i64, String)> = state
        .visible_models(&p)
        .into_iter()
        .map(|(name, route)| (name, route.created, "wardgate".to_owned()))
        .collect();
    Ok(axum::Json(openai::model_list(&list)).into_response())
}

/// One model, if this credential may use it.
#[utoipa::path(
    get,
    path = "/v1/models/{*id}",
    tag = "openai",
    params(("id" = String, Path, description = "The public model name; it may contain `/`.")),
    responses(
        (status = 200, description = "The model.", body = openai::ModelOut),
        OpenAiErrors, OpenAiNotFound,
    ),
    security(("bearer" = []))
)]
pub async fn model(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response> {
    let route = state.route_for(&p, &id)?;
    Ok(axum::Json(openai::model_object(&id, route.created, "wardgate")).into_response())
}
