//! The JSON body extractor of every endpoint: a `Content-Type: application/json` label (415
//! otherwise), a bounded read (413 past the limit, chunked bodies included), then serde with its recursion limit (deep nesting is a 400, never a
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

/// A JSON body that may be absent (an empty body is `None`), with the same bounds.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

async fn parse<T: DeserializeOwned>(
    req: Request,
    state: &AppState,
) -> Result<Option<T>, BodyRejection> {
    let front = Front::of_path(req.uri().path());
    let reject = |error| BodyRejection { front, error };
    let limit = state.config.limits.max_body_bytes;
    // A body must say it is JSON, as the OpenAI and Ollama clients do (a form or text label,
    // e.g. curl's `-d` default, is refused before the body is read). No body needs no label.
    let empty = http_body::Body::size_hint(req.body()).exact() == Some(0);
    if !empty && !is_json(req.headers().get(axum::http::header::CONTENT_TYPE)) {
        return Err(reject(ApiError::UnsupportedMediaType));
    }
    let bytes = read_body(
        req.into_body(),
        limit,
        state.config.server.body_read_timeout,
    )
    .await
    .map_err(reject)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    // serde's recursion limit guards what is deserialized, but a field the endpoint does
    // not know is skipped without it, at any depth: refuse deep nesting wherever it is.
    let shape = shape(&bytes);
    if shape.depth > MAX_DEPTH {
        return Err(reject(ApiError::InvalidJson(format!(
            "nested deeper than {MAX_DEPTH} levels"
        ))));
    }
    // Parsing cost and memory grow with the number of values, not the bytes: bound them
    // before anything is built.
    let max_values = state.config.limits.max_json_values;
    if shape.values > max_values {
        return Err(reject(ApiError::InvalidJson(format!(
            "more than {max_values} JSON values and keys in one request \
             (limits.max_json_values)"
        ))));
    }
    serde_json::from_slice::<T>(&bytes)
        .map(Some)
        .map_err(|e| reject(ApiError::InvalidJson(describe(&e))))
}

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let front = Front::of_path(req.uri().path());
        match parse(req, state).await? {
            Some(v) => Ok(Json(v)),
            None => Err(BodyRejection {
                front,
                error: ApiError::InvalidJson("missing request body".into()),
            }),
        }
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        parse(req, state).await.map(OptionalJson)
    }
}

/// The whole body within `timeout` (slowloris on the body), refusing it past `limit` bytes
/// (chunked bodies included).
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        // The connection ended (or the HTTP/2 stream was reset) before the body did: the
        // client went away, and nobody will read an answer.
        Ok(Err(e)) if client_went_away(e.as_ref()) => Err(ApiError::ClientGone),
        Ok(Err(_)) => Err(ApiError::BodyIncomplete),
    }
}

/// Whether a body error says the client went away mid-body (the connection ended or was
/// reset before the body did), rather than that it sent something malformed.
fn client_went_away(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            );
        }
        cause = c.source();
    }
    false
}

/// Whether a `Content-Type` names JSON: `application/json`, in any case, with or without
/// parameters such as `charset=utf-8`.
fn is_json(value: Option<&axum::http::HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The deepest nesting accepted, serde_json's own recursion limit.
const MAX_DEPTH: usize = 128;

/// The JSON values and object keys in `bytes`, counted as `limits.max_json_values` counts
/// them (for the memory benchmark, which builds bodies just under and over that bound).
pub fn json_values(bytes: &[u8]) -> usize {
    shape(bytes).values
}

/// What the pre-parse scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    /// The deepest nesting of arrays and objects.
    depth: usize,
    /// JSON values and object keys: containers, strings, and the first byte of each number,
    /// `true`, `false` and `null`.
    values: usize,
}

/// The shape of `bytes`, outside strings (one pass, no allocation; malformed JSON is left to
/// the parser).
fn shape(bytes: &[u8]) -> Shape {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    let mut values = 0usize;
    // The last byte outside strings that is not whitespace: a scalar starts after one of
    // `[`, `,`, `:` or at the very start.
    let mut prev = b',';
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                values += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                values += 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' if matches!(prev, b'[' | b',' | b':') => {
                values += 1;
            }
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            prev = b;
        }
    }
    Shape { depth: max, values }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_recognised_in_any_case_and_with_parameters() {
        let h = |s: &'static str| axum::http::HeaderValue::from_static(s);
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(is_json(Some(&h(ok))), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "application/json-seq",
            "",
        ] {
            assert!(!is_json(Some(&h(bad))), "{bad}");
        }
        assert!(!is_json(None));
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        let depth = |b: &[u8]| shape(b).depth;
        assert_eq!(depth(br#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(depth(br#"{"a":"[[[[{{{\"]]"}"#), 1);
        assert_eq!(depth(b"[[[]]][]"), 3);
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert_eq!(depth(deep.as_bytes()), MAX_DEPTH + 1);
    }

    #[test]
    fn values_and_keys_are_counted_outside_strings() {
        let values = |b: &[u8]| shape(b).values;
        // {} "a" [] 1 {} "b" 2 -> 7; "c" "x,1" -> 2; true null -12.5e3 false -> 4
        assert_eq!(values(br#"{"a":[1,{"b":2}]}"#), 7);
        assert_eq!(values(br#"{"c":"x,1"}"#), 3);
        assert_eq!(values(b"[ true , null,-12.5e3, false ]"), 5);
        assert_eq!(values(b"123"), 1);
    }
}
