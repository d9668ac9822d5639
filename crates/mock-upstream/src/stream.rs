//! The lazy streaming body shared by both protocols: it sleeps and renders each frame only
//! when hyper polls for it, cuts the connection for `drop_after`, and owns the guard that
//! counts the stream as completed or cancelled.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::MockConfig;
use crate::state::{Shared, StreamGuard};

/// How one protocol renders one reply, streamed or whole.
pub(crate) trait Render: Send + 'static {
    /// The `Content-Type` of the streamed body.
    const STREAM_CONTENT_TYPE: &'static str;
    /// Frames between the opening and the final message: tokens, or tool-call pieces.
    fn units(&self) -> usize;
    /// A frame sent after the first-token delay, before unit 0.
    fn open(&mut self) -> Option<Bytes>;
    fn unit(&mut self, index: usize) -> Bytes;
    /// The final message(s), all in one frame; `elapsed` is the time since the request came.
    fn close(&mut self, elapsed: Duration) -> Bytes;
    /// The non-streamed reply.
    fn whole(&self, elapsed: Duration) -> Value;
}

/// The timing knobs of one reply, taken from the config when the request arrived.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub started: Instant,
    pub first_token_delay: Duration,
    pub token_delay: Duration,
    pub drop_after: Option<usize>,
    /// A whole reply is pretty-printed (`ignore_stream`): one JSON document over many lines.
    pub pretty: bool,
}

impl Timing {
    pub(crate) fn new(started: Instant, config: &MockConfig) -> Self {
        Self {
            started,
            first_token_delay: config.first_token_delay,
            token_delay: config.token_delay,
            drop_after: config.drop_after,
            pretty: config.ignore_stream,
        }
    }
}

/// Answers with `render`, streamed or whole.
pub(crate) async fn respond<R: Render>(
    render: R,
    streamed: bool,
    timing: Timing,
    shared: &Arc<Shared>,
) -> Response {
    if streamed {
        // Headers go out at once; the first-token delay happens inside the body.
        let body = Body::from_stream(futures::stream::unfold(
            Lazy {
                render,
                timing,
                guard: StreamGuard::new(Arc::clone(shared)),
                next: 0,
                phase: Phase::Start,
            },
            Lazy::step,
        ));
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(R::STREAM_CONTENT_TYPE),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return response;
    }
    sleep(timing.first_token_delay).await;
    if timing.drop_after.is_some() {
        return cut_json_body();
    }
    let whole = render.whole(timing.started.elapsed());
    if timing.pretty {
        let text = serde_json::to_string_pretty(&whole).unwrap_or_default();
        return ([(CONTENT_TYPE, "application/json")], text).into_response();
    }
    axum::Json(whole).into_response()
}

/// `200` JSON headers and then a body that fails at once: the connection is cut with nothing
/// (or, over HTTP/1.1 chunked, an unfinished body) delivered.
pub(crate) fn cut_json_body() -> Response {
    let body = Body::from_stream(futures::stream::once(async {
        // Let hyper flush the headers first (see `Lazy::step`).
        tokio::task::yield_now().await;
        Err::<Bytes, io::Error>(dropped())
    }));
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn dropped() -> io::Error {
    io::Error::other("mock-upstream: connection dropped on purpose (drop_after)")
}

pub(crate) async fn sleep(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

enum Phase {
    Start,
    Units,
    Done,
}

struct Lazy<R> {
    render: R,
    timing: Timing,
    guard: StreamGuard,
    next: usize,
    phase: Phase,
}

impl<R: Render> Lazy<R> {
    async fn step(mut self) -> Option<(Result<Bytes, io::Error>, Self)> {
        loop {
            match self.phase {
                Phase::Start => {
                    sleep(self.timing.first_token_delay).await;
                    self.phase = Phase::Units;
                    if let Some(frame) = self.render.open() {
                        return Some((Ok(frame), self));
                    }
                }
                Phase::Units => {
                    let units = self.render.units();
                    if let Some(n) = self.timing.drop_after
                        && self.next >= n.min(units)
                    {
                        self.guard.abort();
                        self.phase = Phase::Done;
                        // hyper does not flush its write buffer before acting on a body error,
                        // so yield once: hyper flushes the frames so far while the body is
                        // pending. The error then makes it close the connection without
                        // finishing the body: no final message, no chunked terminator.
                        tokio::task::yield_now().await;
                        return Some((Err(dropped()), self));
                    }
                    if self.next < units {
                        if self.next > 0 {
                            sleep(self.timing.token_delay).await;
                        }
                        let frame = self.render.unit(self.next);
                        self.next += 1;
                        return Some((Ok(frame), self));
                    }
                    let frame = self.render.close(self.timing.started.elapsed());
                    self.guard.finish();
                    self.phase = Phase::Done;
                    return Some((Ok(frame), self));
                }
                Phase::Done => return None,
            }
        }
    }
}
