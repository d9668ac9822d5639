//! The gateway's OpenAPI 3.1 document, generated from the code: the handlers' `#[utoipa::path]`
//! attributes and the wire types' `ToSchema` derives. Served at `GET /openapi.json` without a
//! credential; it holds routes and shapes only, never configuration, model names or secrets.
//!
//! The paths come from the router's one route table (`router.rs`): a route is registered with
//! its description or not at all, so the document lists exactly the routes served, and the
//! absent model-management routes (`/api/pull`, ...) stay absent from it too.

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};
use wardgate_api::{ollama, openai};

/// The name of the one security scheme: `Authorization: Bearer <wg_ API key or JWT>`.
pub const BEARER: &str = "bearer";

/// The error answers an authenticated route of one front can give whatever it does: the
/// credential checks (400 for credentials in the URL, 401, 403, 429 lockout) and a store that
/// does not answer (503). Route-specific ones (404, 413, 502, 504) are listed per route.
macro_rules! error_responses {
    ($errors:ident, $not_found:ident, $too_large:ident, $backend:ident, $body:ty) => {
        #[derive(IntoResponses)]
        pub enum $errors {
            /// The request is malformed (the body names the field), or it carries credentials
            /// in the URL.
            #[response(status = 400)]
            BadRequest($body),
            /// The credential is missing, unknown, expired or revoked.
            #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
            Unauthorized($body),
            /// The credential's roles do not allow this route, or a break-glass credential sent
            /// no reason.
            #[response(status = 403)]
            Forbidden($body),
            /// A rate limit, or a lockout after repeated failed authentications.
            #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait.")))]
            TooManyRequests($body),
            /// A store, the audit log or every backend is unavailable for now.
            #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait.")))]
            Unavailable($body),
        }

        #[derive(IntoResponses)]
        pub enum $not_found {
            /// No such model for this credential (or no such object in the caller's scope).
            #[response(status = 404)]
            NotFound($body),
        }

        #[derive(IntoResponses)]
        pub enum $too_large {
            /// The body is over `limits.max_body_bytes`.
            #[response(status = 413)]
            PayloadTooLarge($body),
            /// The body is not labelled `Content-Type: application/json`.
            #[response(status = 415)]
            UnsupportedMediaType($body),
        }

        #[derive(IntoResponses)]
        pub enum $backend {
            /// The model server failed or sent an invalid answer.
            #[response(status = 502)]
            BadGateway($body),
            /// The model server did not answer in time.
            #[response(status = 504)]
            GatewayTimeout($body),
        }
    };
}

error_responses!(
    OpenAiErrors,
    OpenAiNotFound,
    OpenAiTooLarge,
    OpenAiBackendErrors,
    openai::ErrorBody
);
error_responses!(
    OllamaErrors,
    OllamaNotFound,
    OllamaTooLarge,
    OllamaBackendErrors,
    ollama::ErrorBody
);

/// Adds the bearer scheme every authenticated operation names.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("wg_ API key or JWT")
                    .description(Some(
                        "A wardgate API key (`wg_<prefix>_<secret>`) or a JWT from a trusted \
                         issuer, in the `Authorization` header only (one header; credentials in \
                         the URL are refused).",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wardgate",
        description = "An LLM gateway that speaks the OpenAI and Ollama APIs in front of private \
                       model servers. Errors on `/v1/*` and `/admin/*` have the OpenAI shape; \
                       errors elsewhere have the Ollama shape. Model-management routes \
                       (`/api/pull`, `/api/push`, `/api/create`, `/api/delete`, `/api/copy`, \
                       `/api/blobs/*`) do not exist.",
    ),
    // Stream chunks are not a response body of their own (they ride in SSE `data:` fields);
    // they are listed so the stream descriptions can point at them. The error bodies are
    // referenced from the shared error answers above.
    components(schemas(openai::ChatChunkOut, openai::ErrorBody, ollama::ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "openai", description = "The OpenAI-compatible front."),
        (name = "ollama", description = "The Ollama-compatible front."),
        (name = "admin", description = "Keys, tenants (`admin`) and the audit log (`auditor`)."),
        (name = "probes", description = "Unauthenticated liveness, readiness and this document."),
    )
)]
pub struct ApiDoc;

/// The document, rendered once when the router is built from its route table.
#[derive(Debug)]
pub struct Document(String);

impl Document {
    /// Renders `doc`, writing axum's catch-all segments (`{*id}`) as OpenAPI path parameters
    /// (`{id}`).
    pub fn render(mut doc: utoipa::openapi::OpenApi) -> Document {
        let paths = std::mem::take(&mut doc.paths.paths);
        doc.paths.paths = paths
            .into_iter()
            .map(|(path, item)| (path.replace("{*", "{"), item))
            .collect();
        Document(doc.to_json().unwrap_or_default())
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "probes",
    responses((status = 200, description = "The OpenAPI 3.1 document of this service.", content_type = "application/json", body = Object))
)]
pub async fn serve(Extension(doc): Extension<Arc<Document>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0.clone()).into_response()
}
