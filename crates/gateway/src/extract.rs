//! The JSON body extractor of every endpoint: a bounded read (413 past the limit, chunked
//! bodies included), then serde with its recursion limit (deep nesting is a 400, never a
//! stack overflow), and errors in the shape of the route's front.

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Front};
use crate::state::AppState;

/// A parsed JSON body.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// A refused body, rendered for the front it was sent to.
#[derive(Debug)]
pub struct BodyRejection {
    front: Front,
    error: ApiError,
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        self.error.to_response(self.front)
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let front = Front::of_path(req.uri().path());
        let reject = |error| BodyRejection { front, error };
        let limit = state.config.limits.max_body_bytes;
        // The Content-Type is not checked: Ollama accepts any, and curl's `-d` labels JSON as a
        // form. The body is parsed strictly as JSON whatever the label says.
        let bytes = crate::record::body_bytes(req.into_body(), limit)
            .await
            .map_err(|_| reject(ApiError::PayloadTooLarge { limit }))?;
        if bytes.is_empty() {
            return Err(reject(ApiError::InvalidJson("missing request body".into())));
        }
        serde_json::from_slice::<T>(&bytes)
            .map(Json)
            .map_err(|e| reject(ApiError::InvalidJson(describe(&e))))
    }
}

/// serde's message, which names the field and position but never quotes values back.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io | Category::Eof => "the body ended early".into(),
        Category::Syntax => format!("syntax error at line {} column {}", e.line(), e.column()),
        Category::Data => {
            let msg = e.to_string();
            // serde's data errors read like "missing field `model` at line 1 column 2" or
            // "invalid type: string \"...\", expected u32"; drop any quoted value.
            match msg.split_once(": string \"") {
                Some((head, _)) => format!("{head}: wrong type"),
                None => msg,
            }
        }
    }
}
