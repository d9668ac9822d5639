//! The state every connection shares: the current config, the failure counter and the stats,
//! plus the guard that counts a streamed body as completed or cancelled.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;
use tokio::sync::watch;

use crate::{MockConfig, Stats};

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Carries `cancelled_streams`, so that waiters wake on the change instead of polling.
    cancelled: watch::Sender<u64>,
}

struct Inner {
    config: MockConfig,
    /// Inference requests with a readable body since the config was last set, for `fail_first`.
    since_config: u64,
    /// Numbers response ids.
    seq: u64,
    /// POST requests holding a [`Slot`].
    active: usize,
    stats: Stats,
}

/// What an inference request learned when it was admitted.
pub(crate) struct Admission {
    pub config: MockConfig,
    /// 0 for the first inference request since the config was set; `None` for a body that was
    /// not JSON, which does not use up a `fail_first` slot.
    pub flaky_index: Option<u64>,
    pub seq: u64,
}

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                config,
                since_config: 0,
                seq: 0,
                active: 0,
                stats: Stats::default(),
            }),
            cancelled: watch::Sender::new(0),
        })
    }

    /// A panic while the lock was held cannot leave the counters half-written, so a poisoned
    /// lock is still safe to use.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_config(&self, config: MockConfig) {
        let mut inner = self.lock();
        inner.config = config;
        inner.since_config = 0;
    }

    pub(crate) fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            active: inner.active,
            ..inner.stats.clone()
        }
    }

    /// Admits a request under `max_concurrent`: `Ok(Some(slot))` for a POST while it is set
    /// (the slot counts it until dropped), `Ok(None)` when there is nothing to count, `Err`
    /// when every slot is taken (the request is counted as a busy refusal).
    pub(crate) fn enter(self: &Arc<Self>, post: bool) -> Result<Option<Slot>, ()> {
        let mut inner = self.lock();
        let Some(max) = inner.config.max_concurrent.filter(|_| post) else {
            return Ok(None);
        };
        if inner.active >= max {
            inner.stats.busy_refusals += 1;
            return Err(());
        }
        inner.active += 1;
        Ok(Some(Slot(Arc::clone(self))))
    }

    pub(crate) fn config(&self) -> MockConfig {
        self.lock().config.clone()
    }

    /// Counts a request of any kind and says how long to hold back its headers.
    pub(crate) fn on_request(&self) -> Duration {
        let mut inner = self.lock();
        inner.stats.requests += 1;
        inner.config.headers_delay
    }

    pub(crate) fn admit_inference(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: Option<Value>,
    ) -> Admission {
        let mut inner = self.lock();
        let flaky_index = body.is_some().then(|| {
            let index = inner.since_config;
            inner.since_config += 1;
            index
        });
        inner.seq += 1;
        let seq = inner.seq;
        let stats = &mut inner.stats;
        stats.inference_requests += 1;
        stats.last_body = body;
        stats.last_path = Some(path.to_owned());
        stats.last_headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Admission {
            config: inner.config.clone(),
            flaky_index,
            seq,
        }
    }

    /// Resolves to true once a stream has been cancelled, or false after `timeout`.
    pub(crate) async fn wait_for_cancel(&self, timeout: Duration) -> bool {
        let mut rx = self.cancelled.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|n| *n > 0)).await,
            Ok(Ok(_))
        )
    }
}

/// One of `max_concurrent` places, held by a request's response body until it is dropped.
pub(crate) struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.active = inner.active.saturating_sub(1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GuardState {
    Running,
    Finished,
    Aborted,
}

/// Owned by a streamed body. When the body is dropped before the final message, the client
/// went away (hyper drops the body when the peer closes), so the drop counts a cancellation.
pub(crate) struct StreamGuard {
    shared: Arc<Shared>,
    state: GuardState,
}

impl StreamGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            state: GuardState::Running,
        }
    }

    /// The final message has been handed to hyper.
    pub(crate) fn finish(&mut self) {
        if self.state == GuardState::Running {
            self.state = GuardState::Finished;
            self.shared.lock().stats.completed_streams += 1;
        }
    }

    /// The mock cut the stream on purpose (`drop_after`); that is not a client cancellation.
    pub(crate) fn abort(&mut self) {
        self.state = GuardState::Aborted;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.state == GuardState::Running {
            let count = {
                let mut inner = self.shared.lock();
                inner.stats.cancelled_streams += 1;
                inner.stats.cancelled_streams
            };
            self.shared.cancelled.send_replace(count);
        }
    }
}
