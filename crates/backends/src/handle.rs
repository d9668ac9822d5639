//! One model server as the router sees it: the backend, its health, its circuit breaker and
//! the number of requests it has outstanding, counted by a guard that each request holds until
//! its answer ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use wardgate_api::canonical::Event;

use crate::{Backend, BackendError, Breaker, BreakerConfig, EventStream};

/// A backend with its health, its circuit breaker and its outstanding requests.
pub struct BackendHandle {
    pub backend: Arc<dyn Backend>,
    pub breaker: Breaker,
    healthy: AtomicBool,
    outstanding: AtomicUsize,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("name", &self.backend.name())
            .field("healthy", &self.is_healthy())
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

impl BackendHandle {
    pub fn new(backend: Arc<dyn Backend>, breaker: BreakerConfig) -> Arc<Self> {
        Arc::new(BackendHandle {
            backend,
            breaker: Breaker::new(breaker),
            healthy: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
        })
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }

    /// Healthy as of the last probe or request.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Requests sent to this backend whose answer has not ended yet (a stream counts until
    /// its last event is read or it is dropped).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts one more outstanding request until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Runs the health probe and feeds the result to the health flag and the breaker: a
    /// backend that answers again is taken back into service without waiting for a client
    /// request to risk it, unless requests took it out (see [`crate::breaker`]).
    pub async fn probe(&self, timeout: Duration) -> Result<(), BackendError> {
        let result = tokio::time::timeout(timeout, self.backend.health())
            .await
            .unwrap_or(Err(BackendError::Timeout));
        self.record_probe(result.is_ok());
        result
    }

    pub(crate) fn record_probe(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
        if ok {
            self.breaker.probe_success();
        } else {
            self.breaker.probe_failure(Instant::now());
        }
    }

    /// A request's outcome on this backend: an answer (its first event), or a failure that
    /// is the backend's fault.
    pub(crate) fn record_request(&self, ok: bool, now: Instant) {
        self.healthy.store(ok, Ordering::Relaxed);
        if ok {
            self.breaker.success();
        } else {
            self.breaker.failure(now);
        }
    }
}

/// One outstanding request of a backend; dropping it ends the count. The request path never
/// decrements by hand, so an answer that ends early (an error, a timeout, a client that went
/// away and dropped the stream) cannot leave the count high.
#[derive(Debug)]
pub struct InFlight(Arc<BackendHandle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `stream` holding `guard` until its last event has been read, or until it is dropped,
/// whichever comes first.
pub(crate) fn tracked(stream: EventStream, guard: InFlight) -> EventStream {
    Box::pin(Tracked {
        inner: stream,
        guard: Some(guard),
    })
}

struct Tracked {
    inner: EventStream,
    guard: Option<InFlight>,
}

impl Stream for Tracked {
    type Item = Result<Event, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = polled {
            // The answer ended: the backend is done with it even if the caller keeps the
            // stream a while longer.
            self.guard = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::tests_support::Scripted;

    #[tokio::test]
    async fn a_stream_counts_until_it_ends_or_is_dropped() {
        let h = BackendHandle::new(Arc::new(Scripted::ok("a")), BreakerConfig::default());
        let events = || -> EventStream {
            Box::pin(futures::stream::iter(vec![Ok::<_, BackendError>(
                Event::text("x"),
            )]))
        };
        let mut read = tracked(events(), h.start());
        let dropped = tracked(events(), h.start());
        assert_eq!(h.outstanding(), 2);
        assert!(read.next().await.is_some());
        assert_eq!(
            h.outstanding(),
            2,
            "one event read, the stream has not ended"
        );
        assert!(read.next().await.is_none());
        assert_eq!(
            h.outstanding(),
            1,
            "ended: no longer outstanding, though still held"
        );
        drop(dropped);
        assert_eq!(
            h.outstanding(),
            0,
            "dropped before its end (a client that went away)"
        );
        drop(read);
        assert_eq!(h.outstanding(), 0);
    }
}
