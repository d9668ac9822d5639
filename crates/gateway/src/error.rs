//! The one error type at the HTTP edge, its status mapping (an exhaustive `match`), and its
//! rendering in the OpenAI or Ollama error shape, whichever front the route belongs to.
//!
//! Client errors say what to fix without quoting the client's content back. Server errors are
//! generic; their cause is logged once, without upstream text (which may echo a prompt).
//!
//! Invariant: a message is the gateway's own words (`BadRequest` messages included: they name
//! the field and the limit, never the value) plus, where a message must carry something from
//! the request (a parser's detail, a model name), that part passed through the PHI redactor
//! (`client_text`). The fixed words are not redacted, so they read as written.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wardgate_api::BadRequest;
use wardgate_backends::{BackendError, UpstreamKind};

/// Which API a route belongs to, deciding the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    OpenAi,
    Ollama,
}

impl Front {
    /// `/v1/...` is the OpenAI front, and the admin API (`/admin/...`) uses its structured
    /// error shape too; everything else speaks Ollama's shape.
    pub fn of_path(path: &str) -> Front {
        if path == "/v1" || path.starts_with("/v1/") || path.starts_with("/admin/") {
            Front::OpenAi
        } else {
            Front::Ollama
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    BadRequest(BadRequest),
    #[error("missing or invalid credentials")]
    Unauthenticated,
    #[error("credentials must be sent in the Authorization header, not the URL")]
    CredentialsInUrl,
    /// Authenticated, but no role of the principal allows this route or action.
    #[error("permission denied")]
    Forbidden,
    /// A break-glass principal sent no (or an unusable) reason header.
    #[error("break-glass access needs a reason")]
    BreakGlassReasonRequired,
    /// An admin API object (key, tenant) that does not exist or is outside the caller's tenant.
    #[error("not found")]
    ObjectNotFound(&'static str),
    #[error("model `{0}` not found")]
    ModelNotFound(String),
    #[error("not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large (limit {limit} bytes)")]
    PayloadTooLarge { limit: usize },
    /// A JSON route was sent a body labelled as something else, or not labelled.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A configuration reload was refused (settings that need a restart, or none to reload).
    #[error("reload refused: {0}")]
    ReloadRefused(String),
    /// An admin change that conflicts with what is stored (a tenant that exists already, a key
    /// that is no longer live): nothing was changed. The message is the store's, which names
    /// no value.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The client did not finish sending the body within `server.body_read_timeout`.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The body could not be read: malformed framing (e.g. a bad chunk size).
    #[error("request body incomplete")]
    BodyIncomplete,
    /// The client went away mid-body (the connection closed early, or the stream was reset).
    /// The answer reaches no one; the request is audited as a client abort.
    #[error("the client went away before its request body was complete")]
    ClientGone,
    #[error("context length exceeded")]
    ContextLengthExceeded { window: u32, requested: u64 },
    #[error("rate limit exceeded")]
    RateLimited {
        retry_after_secs: u64,
        limit: crate::guards::ratelimit::Limit,
    },
    /// Too many failed authentications from this source or with this key prefix.
    #[error("locked out")]
    LockedOut { retry_after_secs: u64 },
    #[error("no healthy backend")]
    BackendUnavailable,
    #[error("upstream timeout")]
    Timeout,
    #[error("backend error")]
    Backend(#[from] BackendError),
    #[error("storage unavailable")]
    StorageUnavailable,
    /// The shared rate limiter (Redis) could not answer: the request is refused, never let
    /// through unlimited. Its cause is logged once per outage (`shared::RedisHealth`), not
    /// per request.
    #[error("rate limiter unavailable")]
    LimiterUnavailable,
    /// The PHI guard refused the request: the categories found, never the values.
    #[error("the request carries PHI")]
    PhiBlocked(Vec<wardgate_phi::Category>),
    /// The audit log could not commit the start of the request: it fails closed.
    #[error("audit unavailable")]
    AuditUnavailable,
    /// A handler panicked (see [`panic_response`]); nothing about the panic is told.
    #[error("internal error")]
    Internal,
}

impl From<BadRequest> for ApiError {
    fn from(b: BadRequest) -> Self {
        ApiError::BadRequest(b)
    }
}

/// Text that came from the request (a parser's detail, which can quote a value; a model
/// name), redacted where it is put into a message. Only that part is: the gateway's own words
/// around it are no PHI, and the detector would garble them ("at most [AGE] years").
fn client_text(text: &str) -> String {
    wardgate_phi::Detector::shared().redact(text)
}

/// Everything a rendered error needs.
struct Rendered {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<String>,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn render(&self) -> Rendered {
        let r = |status, kind, code, message: String| Rendered {
            status,
            kind,
            code,
            param: None,
            message,
            retry_after: None,
        };
        match self {
            ApiError::InvalidJson(detail) => r(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                format!(
                    "the request body is not valid JSON for this endpoint: {}",
                    client_text(detail)
                ),
            ),
            ApiError::BadRequest(b) => Rendered {
                param: b.param.clone(),
                ..r(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    None,
                    b.message.clone(),
                )
            },
            ApiError::Unauthenticated => r(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Invalid or missing API key. Send it as `Authorization: Bearer <key>`.".into(),
            ),
            ApiError::CredentialsInUrl => r(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("credentials_in_url"),
                self.to_string(),
            ),
            ApiError::Forbidden => r(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                Some("permission_denied"),
                "This credential's roles do not allow this operation.".into(),
            ),
            ApiError::BreakGlassReasonRequired => r(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                Some("break_glass_reason_required"),
                format!(
                    "Break-glass access needs the `{}` header on every request: why access is \
                     needed, 1 to {} printable characters. Do not name the patient or give any \
                     other identifier (MRN, date of birth): the reason is kept in the \
                     permanent audit log.",
                    crate::identity::principal::BREAK_GLASS_REASON_HEADER,
                    crate::identity::principal::MAX_BREAK_GLASS_REASON
                ),
            ),
            ApiError::ObjectNotFound(what) => r(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("not_found"),
                format!("No such {what}."),
            ),
            ApiError::ModelNotFound(m) => Rendered {
                param: Some("model".into()),
                ..r(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    Some("model_not_found"),
                    format!(
                        "The model `{}` does not exist or you do not have access to it.",
                        client_text(m)
                    ),
                )
            },
            ApiError::RouteNotFound => r(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("not_found"),
                "not found".into(),
            ),
            ApiError::MethodNotAllowed => r(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                Some("method_not_allowed"),
                "method not allowed".into(),
            ),
            ApiError::PayloadTooLarge { limit } => r(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("payload_too_large"),
                format!("request body too large: the limit is {limit} bytes"),
            ),
            ApiError::UnsupportedMediaType => r(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                Some("unsupported_media_type"),
                "the request body must be JSON sent with `Content-Type: application/json`".into(),
            ),
            ApiError::ReloadRefused(why) => r(
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("reload_refused"),
                format!("The configuration was not reloaded: {why}. Nothing was changed."),
            ),
            ApiError::Conflict(why) => r(
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("conflict"),
                format!("Refused: {why}."),
            ),
            ApiError::BodyTimeout => r(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                Some("request_timeout"),
                "the request body was not received in time".into(),
            ),
            ApiError::BodyIncomplete | ApiError::ClientGone => r(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("body_incomplete"),
                "the request body ended before it was complete".into(),
            ),
            ApiError::ContextLengthExceeded { window, requested } => Rendered {
                param: Some("messages".into()),
                ..r(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("context_length_exceeded"),
                    format!(
                        "This model's maximum context length is {window} tokens. However, your \
                         request needs about {requested} tokens (prompt estimate plus the tokens \
                         asked for). Please reduce the length of the messages or max_tokens."
                    ),
                )
            },
            ApiError::RateLimited {
                retry_after_secs,
                limit,
            } => Rendered {
                retry_after: Some(*retry_after_secs),
                ..r(
                    StatusCode::TOO_MANY_REQUESTS,
                    limit.kind(),
                    Some("rate_limit_exceeded"),
                    format!(
                        "Rate limit reached for {}. Please try again in {retry_after_secs}s.",
                        limit.describe()
                    ),
                )
            },
            ApiError::LockedOut { retry_after_secs } => Rendered {
                retry_after: Some(*retry_after_secs),
                ..r(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    Some("too_many_failed_authentications"),
                    format!(
                        "Too many failed authentication attempts from this address or key \
                         prefix; this credential was not accepted. A valid credential is still \
                         served; check the key, or try again in {retry_after_secs}s."
                    ),
                )
            },
            ApiError::BackendUnavailable => Rendered {
                retry_after: Some(1),
                ..r(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    Some("backend_unavailable"),
                    "No model server is available for this model right now (busy or down). \
                     Try again shortly."
                        .into(),
                )
            },
            ApiError::Internal => r(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "internal error".into(),
            ),
            ApiError::Timeout => r(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                Some("timeout"),
                "The model server did not answer in time.".into(),
            ),
            ApiError::StorageUnavailable
            | ApiError::LimiterUnavailable
            | ApiError::AuditUnavailable => Rendered {
                retry_after: Some(1),
                ..r(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    None,
                    "The service is temporarily unavailable.".into(),
                )
            },
            ApiError::PhiBlocked(categories) => {
                let names: Vec<&str> = categories.iter().map(|c| c.name()).collect();
                r(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("phi_detected"),
                    format!(
                        "The request contains protected health information ({}), which this \
                         model does not accept. Remove it or use a model approved for PHI.",
                        names.join(", ")
                    ),
                )
            }
            ApiError::Backend(e) => match e {
                BackendError::Timeout => ApiError::Timeout.render(),
                BackendError::CircuitOpen | BackendError::Connect(_) => {
                    ApiError::BackendUnavailable.render()
                }
                BackendError::Protocol(_) => r(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    None,
                    "The model server sent an invalid response.".into(),
                ),
                BackendError::Status { kind, status, .. } => match kind {
                    UpstreamKind::Auth => r(
                        StatusCode::BAD_GATEWAY,
                        "server_error",
                        None,
                        "The model server refused the gateway's credentials.".into(),
                    ),
                    UpstreamKind::ModelNotFound => r(
                        StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        Some("model_not_found"),
                        "The model server does not have this model.".into(),
                    ),
                    UpstreamKind::ContextLength => Rendered {
                        param: Some("messages".into()),
                        ..r(
                            StatusCode::BAD_REQUEST,
                            "invalid_request_error",
                            Some("context_length_exceeded"),
                            "The request does not fit the model's context window. Please \
                             reduce the length of the messages."
                                .into(),
                        )
                    },
                    UpstreamKind::BadRequest => r(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        None,
                        format!(
                            "The model server rejected the request as invalid (status {status}). \
                             Check the response format or JSON schema (the model server may not \
                             support every schema, e.g. very large minItems or unresolved $ref), \
                             the sampling options and keep_alive."
                        ),
                    ),
                    UpstreamKind::RateLimited => Rendered {
                        retry_after: Some(1),
                        ..r(
                            StatusCode::TOO_MANY_REQUESTS,
                            "requests",
                            Some("rate_limit_exceeded"),
                            "The model server is at capacity. Please try again in 1s.".into(),
                        )
                    },
                    UpstreamKind::Unavailable => ApiError::BackendUnavailable.render(),
                    UpstreamKind::Server => r(
                        StatusCode::BAD_GATEWAY,
                        "server_error",
                        None,
                        "The model server failed to answer.".into(),
                    ),
                },
            },
        }
    }

    /// The short reason for logs and metrics: a fixed vocabulary, never client text.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::CredentialsInUrl => "credentials_in_url",
            ApiError::Forbidden => "forbidden",
            ApiError::BreakGlassReasonRequired => "break_glass_reason_required",
            ApiError::ObjectNotFound(_) => "object_not_found",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::ReloadRefused(_) => "reload_refused",
            ApiError::Conflict(_) => "conflict",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::BodyIncomplete => "body_incomplete",
            ApiError::ClientGone => CLIENT_GONE,
            ApiError::ContextLengthExceeded { .. } => "context_length_exceeded",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::LockedOut { .. } => "locked_out",
            ApiError::BackendUnavailable => "backend_unavailable",
            ApiError::Timeout => "timeout",
            ApiError::StorageUnavailable => "storage_unavailable",
            ApiError::LimiterUnavailable => "rate_limiter_unavailable",
            ApiError::PhiBlocked(_) => "phi_blocked",
            ApiError::AuditUnavailable => "audit_unavailable",
            ApiError::Internal => "panic",
            ApiError::Backend(e) => match e {
                BackendError::Connect(_) => "backend_connect",
                BackendError::Timeout => "backend_timeout",
                BackendError::Status { .. } => "backend_status",
                BackendError::Protocol(_) => "backend_protocol",
                BackendError::CircuitOpen => "backend_circuit_open",
            },
        }
    }

    /// The message a stream carries in-band when it fails after it started.
    pub fn stream_message(&self) -> String {
        self.render().message
    }

    pub fn to_response(&self, front: Front) -> Response {
        let r = self.render();
        // A refusal for want of the shared limiter is not logged here: its cause, a Redis
        // outage, is logged once when it starts and once when it ends, and the request's own
        // log line has its reason.
        if r.status.is_server_error() && !matches!(self, ApiError::LimiterUnavailable) {
            // The cause, once, as a fixed reason; upstream text stays out because it can echo
            // the prompt.
            tracing::warn!(
                reason = self.reason(),
                status = r.status.as_u16(),
                "request failed"
            );
        }
        let body = match front {
            Front::OpenAi => serde_json::json!({"error": {
                "message": r.message, "type": r.kind, "param": r.param, "code": r.code,
            }}),
            Front::Ollama => serde_json::json!({"error": r.message}),
        };
        let mut resp = (r.status, axum::Json(body)).into_response();
        if let Some(secs) = r.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if r.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut().insert(ErrorReason(self.reason()));
        resp
    }
}

/// Left on error responses so the request log can say why without parsing the body.
#[derive(Clone, Copy, Debug)]
pub struct ErrorReason(pub &'static str);

/// The reason of a request whose client went away mid-body: its record ends as a client
/// abort, with no status (no answer reached anyone).
pub const CLIENT_GONE: &str = "client_gone";

/// An error on an OpenAI route.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

/// An error on an Ollama route.
#[derive(Debug)]
pub struct OllamaError(pub ApiError);

impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        OpenAiError(e.into())
    }
}

impl<E: Into<ApiError>> From<E> for OllamaError {
    fn from(e: E) -> Self {
        OllamaError(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.to_response(Front::OpenAi)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        self.0.to_response(Front::Ollama)
    }
}

/// Marks the 500 that [`panic_response`] made, so [`panics_in_front_shape`] can write it in
/// the shape of the request's front.
#[derive(Clone, Copy, Debug)]
struct Panicked;

/// The answer to a handler that panicked (for `CatchPanicLayer`): a generic 500. The payload
/// may quote request data; it is neither logged nor returned.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(reason = "panic", "a handler panicked");
    let mut resp = ApiError::Internal.to_response(Front::OpenAi);
    resp.extensions_mut().insert(Panicked);
    resp
}

/// Middleware outside `CatchPanicLayer`: a panic's 500 in the error shape of the request's
/// front (`{"error": "..."}` on Ollama routes), like every other error.
pub async fn panics_in_front_shape(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let front = Front::of_path(req.uri().path());
    let resp = next.run(req).await;
    if resp.extensions().get::<Panicked>().is_some() {
        ApiError::Internal.to_response(front)
    } else {
        resp
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    /// A panic's 500 is written in the error shape of the request's front, as the gateway and
    /// `wardgate llm` layer it, and says nothing of the panic.
    #[tokio::test]
    async fn a_panic_answers_500_in_the_fronts_shape() {
        async fn boom() -> &'static str {
            if std::hint::black_box(true) {
                panic!("handler bug: secret 123-45-6789");
            }
            "unreachable"
        }
        let app = axum::Router::new()
            .route("/v1/boom", axum::routing::get(boom))
            .route("/api/boom", axum::routing::get(boom))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_response,
            ))
            .layer(axum::middleware::from_fn(panics_in_front_shape));
        for (path, want) in [
            (
                "/v1/boom",
                serde_json::json!({"error": {"message": "internal error", "type": "server_error",
                    "param": null, "code": null}}),
            ),
            ("/api/boom", serde_json::json!({"error": "internal error"})),
        ] {
            let req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{path}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(got, want, "{path}");
        }
    }
}
