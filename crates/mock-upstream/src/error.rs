//! The mock's errors and how each protocol renders them: Ollama `{"error":"..."}`, OpenAI
//! `{"error":{"message","type","param","code"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which wire protocol a route speaks, and so which error shape it answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Ollama,
    OpenAi,
}

#[derive(Debug)]
pub(crate) enum MockError {
    /// Malformed JSON or a field of the wrong shape; `param` names the field for OpenAI.
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    /// The request names a model the config does not list.
    ModelNotFound(String),
    /// A failure the config asked for (`fail_status`, `fail_first`).
    Injected(StatusCode),
    /// No such route.
    NoRoute,
}

/// A [`MockError`] bound to the protocol of the route that raised it.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub proto: Proto,
    pub error: MockError,
}

impl MockError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        MockError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    pub(crate) fn bad_field(message: impl Into<String>, param: &'static str) -> Self {
        MockError::BadRequest {
            message: message.into(),
            param: Some(param),
        }
    }

    pub(crate) fn on(self, proto: Proto) -> ApiError {
        ApiError { proto, error: self }
    }

    fn status(&self) -> StatusCode {
        match self {
            MockError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            MockError::ModelNotFound(_) | MockError::NoRoute => StatusCode::NOT_FOUND,
            MockError::Injected(status) => *status,
        }
    }

    fn ollama_message(&self) -> String {
        match self {
            MockError::BadRequest { message, .. } => message.clone(),
            MockError::ModelNotFound(model) => format!("model '{model}' not found"),
            MockError::Injected(StatusCode::SERVICE_UNAVAILABLE) => {
                "server busy, please try again.  maximum pending requests exceeded".into()
            }
            MockError::Injected(status) => format!("mock-upstream injected failure ({status})"),
            MockError::NoRoute => "404 page not found".into(),
        }
    }

    fn openai_body(&self) -> Value {
        let mut param = Value::Null;
        let (message, kind, code) = match self {
            MockError::BadRequest {
                message,
                param: field,
            } => {
                param = json!(field);
                (message.clone(), "invalid_request_error", Value::Null)
            }
            MockError::ModelNotFound(model) => (
                format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
                json!("model_not_found"),
            ),
            MockError::Injected(status) => {
                let message = format!("mock-upstream injected failure ({status})");
                match status.as_u16() {
                    429 => (message, "requests", json!("rate_limit_exceeded")),
                    401 => (message, "invalid_request_error", json!("invalid_api_key")),
                    s if s >= 500 => (message, "server_error", Value::Null),
                    _ => (message, "invalid_request_error", Value::Null),
                }
            }
            MockError::NoRoute => (
                "Unknown request URL.".into(),
                "invalid_request_error",
                json!("unknown_url"),
            ),
        };
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        match self.proto {
            Proto::Ollama => match self.error {
                // Ollama's router (gin) answers unknown routes in plain text.
                MockError::NoRoute => (status, self.error.ollama_message()).into_response(),
                MockError::BadRequest { .. }
                | MockError::ModelNotFound(_)
                | MockError::Injected(_) => {
                    (status, Json(json!({"error": self.error.ollama_message()}))).into_response()
                }
            },
            Proto::OpenAi => (status, Json(self.error.openai_body())).into_response(),
        }
    }
}
