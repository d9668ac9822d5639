//! One record per request: who asked, for which model, what served it, how it ended. The
//! `observe` middleware creates it, handlers fill it in, and it is written to the request log
//! exactly once, when the response body is finished or dropped — so a streamed answer is logged
//! with its final token counts, and a client that went away is logged as `client_abort`.
//!
//! Invariant: no field here ever holds prompt or completion text.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt as _;

use crate::error::ErrorReason;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (2xx/3xx).
    Allow,
    /// Refused before reaching a backend (4xx).
    Deny,
    /// Failed on our or the backend's side (5xx, or an in-band stream error).
    Error,
    /// The client went away before the answer was complete.
    ClientAbort,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::ClientAbort => "client_abort",
        }
    }
}

#[derive(Debug, Default)]
struct Fields {
    key_id: Option<String>,
    tenant: Option<String>,
    model: Option<String>,
    backend: Option<String>,
    upstream_model: Option<String>,
    attempts: u32,
    tokens_in: u64,
    tokens_out: u64,
    status: u16,
    reason: Option<&'static str>,
    stream_failed: bool,
}

#[derive(Debug)]
pub struct RequestRecord {
    pub request_id: String,
    pub method: String,
    pub route: String,
    pub started: Instant,
    fields: Mutex<Fields>,
}

impl RequestRecord {
    fn lock(&self) -> std::sync::MutexGuard<'_, Fields> {
        self.fields.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_principal(&self, key_id: &str, tenant: &str) {
        let mut f = self.lock();
        f.key_id = Some(key_id.to_owned());
        f.tenant = Some(tenant.to_owned());
    }

    pub fn set_model(&self, model: &str) {
        self.lock().model = Some(model.to_owned());
    }

    pub fn set_served(&self, backend: &str, upstream_model: &str, attempts: u32) {
        let mut f = self.lock();
        f.backend = Some(backend.to_owned());
        f.upstream_model = Some(upstream_model.to_owned());
        f.attempts = attempts;
    }

    pub fn set_tokens(&self, tokens_in: u64, tokens_out: u64) {
        let mut f = self.lock();
        f.tokens_in = tokens_in;
        f.tokens_out = tokens_out;
    }

    /// A stream that had started failed in-band.
    pub fn set_stream_failed(&self, reason: &'static str) {
        let mut f = self.lock();
        f.stream_failed = true;
        f.reason = Some(reason);
    }

    fn emit(&self, completed: bool) {
        let f = self.lock();
        let outcome = if !completed {
            Outcome::ClientAbort
        } else if f.stream_failed || f.status >= 500 {
            Outcome::Error
        } else if f.status >= 400 {
            Outcome::Deny
        } else {
            Outcome::Allow
        };
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "wardgate::request",
            request_id = %self.request_id,
            method = %self.method,
            route = %self.route,
            status = f.status,
            outcome = outcome.as_str(),
            reason = f.reason.unwrap_or(""),
            key_id = f.key_id.as_deref().unwrap_or(""),
            tenant = f.tenant.as_deref().unwrap_or(""),
            model = f.model.as_deref().unwrap_or(""),
            backend = f.backend.as_deref().unwrap_or(""),
            upstream_model = f.upstream_model.as_deref().unwrap_or(""),
            attempts = f.attempts,
            tokens_in = f.tokens_in,
            tokens_out = f.tokens_out,
            latency_ms = format_args!("{latency_ms:.3}"),
            "request"
        );
    }
}

/// Middleware: creates the record, tags the response with `x-request-id`, and ties the log
/// line to the end of the response body.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let record = Arc::new(RequestRecord {
        request_id: uuid::Uuid::now_v7().simple().to_string(),
        method: req.method().as_str().to_owned(),
        route,
        started: Instant::now(),
        fields: Mutex::new(Fields::default()),
    });
    req.extensions_mut().insert(record.clone());
    let may_leave_body_unread = req.version() <= Version::HTTP_11
        && (req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"));
    let mut resp = next.run(req).await;
    // A refusal (bad key, unknown route, body too large) may leave the request body unread,
    // and hyper then closes the connection; say so, or a client reusing the pooled connection
    // fails its next, unrelated request.
    if may_leave_body_unread && (resp.status().is_client_error() || resp.status().is_server_error())
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    {
        let mut f = record.lock();
        f.status = resp.status().as_u16();
        if let Some(ErrorReason(r)) = resp.extensions().get::<ErrorReason>() {
            f.reason = Some(r);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&record.request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp.map(|body| {
        Body::new(LoggedBody {
            inner: body,
            record: Some(record),
        })
    })
}

/// A response body that writes the request's log line when it ends or is dropped.
struct LoggedBody {
    inner: Body,
    record: Option<Arc<RequestRecord>>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(r) = self.record.take() {
                    r.emit(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(r) = self.record.take() {
                    r.set_stream_failed("body_error");
                    r.emit(true);
                }
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            // Hyper drops a body it has fully sent without polling it to the end when the
            // size was known up front; only an unfinished body is an abort.
            let complete = self.inner.is_end_stream();
            r.emit(complete);
        }
    }
}

/// Reads a whole body, refusing it past `limit` bytes (chunked bodies included).
pub async fn body_bytes(body: Body, limit: usize) -> Result<Bytes, axum::Error> {
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(axum::Error::new)
}
