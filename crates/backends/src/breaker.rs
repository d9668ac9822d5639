//! A per-backend circuit breaker: after enough consecutive failures a backend is skipped for a
//! cooling period, then one trial decides whether it is back; and the softer signal of a
//! backend that keeps answering "busy", which moves it behind the others for a while without
//! taking it out of service.
//!
//! Failures are counted apart by where they were seen. Requests (the data path) and health
//! probes each have their own count, and the breaker remembers which of them opened it: a
//! probe success closes a breaker that probes opened (a backend that answers again is taken
//! back without risking a request), but not one that requests opened. A replica can pass every
//! probe and still fail every request (it accepts a generation and never sends a first token),
//! so only a request — the one trial let through after the cooldown — closes that.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    /// Consecutive failures (of requests, or of probes) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses before letting one trial through.
    pub cooldown: Duration,
    /// Consecutive busy answers (503) after which the backend goes behind its pool's other
    /// replicas for [`BreakerConfig::busy_cooldown`].
    pub busy_threshold: u32,
    /// How long a backend that keeps answering busy is tried last.
    pub busy_cooldown: Duration,
}

/// Default of [`BreakerConfig::busy_threshold`].
pub const DEFAULT_BUSY_THRESHOLD: u32 = 2;
/// Default of [`BreakerConfig::busy_cooldown`]: short, since a full engine frees a slot as soon
/// as one answer ends, and a conversation moved off its replica loses its cached prefix.
pub const DEFAULT_BUSY_COOLDOWN: Duration = Duration::from_secs(2);

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
            busy_threshold: DEFAULT_BUSY_THRESHOLD,
            busy_cooldown: DEFAULT_BUSY_COOLDOWN,
        }
    }
}

/// Who opened a circuit, and so who may close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opener {
    Requests,
    Probes,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed {
        /// Consecutive failed requests.
        failures: u32,
        /// Consecutive failed probes.
        probe_failures: u32,
    },
    Open {
        until: Instant,
        by: Opener,
    },
    /// One trial is in flight; others are refused until it reports.
    HalfOpen {
        by: Opener,
    },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Consecutive busy answers.
    busy: u32,
    /// Tried last until then.
    busy_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// What [`Breaker::allow`] grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The circuit is closed.
    Closed,
    /// The one trial after a cooldown: its outcome must be reported, or the trial given back
    /// with [`Breaker::abandon_trial`].
    Trial,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed {
                    failures: 0,
                    probe_failures: 0,
                },
                busy: 0,
                busy_until: None,
            }),
        }
    }

    /// Whether a request may go to this backend now; `None` while open or while another
    /// trial is in flight. Moving from open to half-open hands the caller the one trial.
    pub fn allow(&self, now: Instant) -> Option<Pass> {
        let mut inner = self.lock();
        match inner.state {
            State::Closed { .. } => Some(Pass::Closed),
            State::Open { until, by } if now >= until => {
                inner.state = State::HalfOpen { by };
                Some(Pass::Trial)
            }
            State::Open { .. } | State::HalfOpen { .. } => None,
        }
    }

    /// Whether [`Breaker::allow`] would let a request through now (closed, or open and
    /// cooled down), without taking the trial.
    pub fn is_available(&self, now: Instant) -> bool {
        match self.lock().state {
            State::Closed { .. } => true,
            State::Open { until, .. } => now >= until,
            State::HalfOpen { .. } => false,
        }
    }

    /// A request succeeded: the circuit closes, whoever opened it, and the counts restart.
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.state = State::Closed {
            failures: 0,
            probe_failures: 0,
        };
        inner.busy = 0;
        inner.busy_until = None;
    }

    /// A request failed for the backend's fault (refused, 5xx, no first token in time).
    pub fn failure(&self, now: Instant) {
        let mut inner = self.lock();
        let open = State::Open {
            until: now + self.config.cooldown,
            by: Opener::Requests,
        };
        inner.state = match inner.state {
            State::Closed {
                failures,
                probe_failures,
            } if failures + 1 < self.config.failure_threshold => State::Closed {
                failures: failures + 1,
                probe_failures,
            },
            State::Closed { .. } | State::HalfOpen { .. } | State::Open { .. } => open,
        };
    }

    /// The trial (a [`Pass::Trial`]) ended without saying whether the backend works: the
    /// request was dropped, cut by its deadline, or answered busy or 4xx. The next request may
    /// take the trial at once.
    pub fn abandon_trial(&self, now: Instant) {
        let mut inner = self.lock();
        if let State::HalfOpen { by } = inner.state {
            inner.state = State::Open { until: now, by };
        }
    }

    /// A health probe passed. It resets the probes' count and closes a circuit that probes
    /// opened; a circuit that requests opened stays as it is, for a trial request to decide.
    pub fn probe_success(&self) {
        let mut inner = self.lock();
        inner.state = match inner.state {
            State::Closed { failures, .. } => State::Closed {
                failures,
                probe_failures: 0,
            },
            State::Open {
                by: Opener::Probes, ..
            } => State::Closed {
                failures: 0,
                probe_failures: 0,
            },
            other @ (State::Open { .. } | State::HalfOpen { .. }) => other,
        };
    }

    /// A health probe failed: counted toward opening, and an open circuit's cooldown starts
    /// again, so no trial request is spent on a backend that does not even answer its probe.
    pub fn probe_failure(&self, now: Instant) {
        let mut inner = self.lock();
        let until = now + self.config.cooldown;
        inner.state = match inner.state {
            State::Closed {
                failures,
                probe_failures,
            } if probe_failures + 1 < self.config.failure_threshold => State::Closed {
                failures,
                probe_failures: probe_failures + 1,
            },
            State::Closed { .. } => State::Open {
                until,
                by: Opener::Probes,
            },
            State::Open { by, .. } => State::Open { until, by },
            other @ State::HalfOpen { .. } => other,
        };
    }

    /// The backend answered busy (503): after [`BreakerConfig::busy_threshold`] such answers
    /// in a row it is tried last for [`BreakerConfig::busy_cooldown`]. Busy is not a fault and
    /// never opens the circuit.
    pub fn busy(&self, now: Instant) {
        let mut inner = self.lock();
        inner.busy = inner.busy.saturating_add(1);
        if inner.busy >= self.config.busy_threshold {
            inner.busy_until = Some(now + self.config.busy_cooldown);
        }
    }

    /// Whether the backend answered busy often enough lately to be tried after the others.
    pub fn is_busy(&self, now: Instant) -> bool {
        self.lock().busy_until.is_some_and(|until| now < until)
    }

    /// The state as a number, for the `wardgate_backend_breaker_state` gauge: 0 closed,
    /// 1 half-open (its one trial is out), 2 open.
    pub fn state_code(&self) -> u8 {
        match self.lock().state {
            State::Closed { .. } => 0,
            State::HalfOpen { .. } => 1,
            State::Open { .. } => 2,
        }
    }

    /// Open or half-open: requests do not reach the backend (but a cooled-down one's trial).
    pub fn is_open(&self) -> bool {
        !matches!(self.lock().state, State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of plain data; the
        // value is still a valid state.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: threshold,
            cooldown: Duration::from_secs(5),
            ..BreakerConfig::default()
        })
    }

    #[test]
    fn opens_after_threshold_and_lets_one_trial_through_after_cooldown() {
        let b = breaker(2);
        let t0 = Instant::now();
        assert_eq!(b.allow(t0), Some(Pass::Closed));
        b.failure(t0);
        assert!(b.allow(t0).is_some(), "one failure is under the threshold");
        b.failure(t0);
        assert_eq!(
            b.allow(t0 + Duration::from_secs(4)),
            None,
            "open during cooldown"
        );
        assert!(!b.is_available(t0 + Duration::from_secs(4)));
        assert!(b.is_available(t0 + Duration::from_secs(5)));
        assert_eq!(b.allow(t0 + Duration::from_secs(5)), Some(Pass::Trial));
        assert_eq!(
            b.allow(t0 + Duration::from_secs(5)),
            None,
            "only one trial at a time"
        );
        b.failure(t0 + Duration::from_secs(5));
        assert_eq!(
            b.allow(t0 + Duration::from_secs(9)),
            None,
            "a failed trial reopens"
        );
        assert_eq!(b.allow(t0 + Duration::from_secs(10)), Some(Pass::Trial));
        b.success();
        assert_eq!(b.allow(t0 + Duration::from_secs(10)), Some(Pass::Closed));
        assert!(!b.is_open());
    }

    #[test]
    fn success_resets_the_count() {
        let b = breaker(2);
        let t0 = Instant::now();
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert!(b.allow(t0).is_some());
    }

    #[test]
    fn a_probe_success_neither_resets_request_failures_nor_closes_what_requests_opened() {
        let b = breaker(3);
        let t0 = Instant::now();
        // A replica that passes its probes and fails every request: probes in between do
        // not wipe the count.
        for _ in 0..3 {
            b.failure(t0);
            b.probe_success();
        }
        assert!(b.is_open(), "three request failures open it, probes or not");
        b.probe_success();
        assert!(b.is_open(), "a probe does not close what requests opened");
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.allow(later), Some(Pass::Trial));
        b.probe_success();
        assert!(b.is_open(), "nor decide the trial");
        b.success();
        assert!(!b.is_open(), "a trial request that succeeds does");
    }

    #[test]
    fn what_probes_opened_a_probe_closes() {
        let b = breaker(2);
        let t0 = Instant::now();
        b.probe_failure(t0);
        b.probe_failure(t0);
        assert!(b.is_open());
        b.probe_failure(t0 + Duration::from_secs(4));
        assert!(
            !b.is_available(t0 + Duration::from_secs(5)),
            "a failing probe restarts the cooldown"
        );
        b.probe_success();
        assert!(!b.is_open(), "the backend answers again");
    }

    #[test]
    fn an_abandoned_trial_is_offered_again_at_once() {
        let b = breaker(1);
        let t0 = Instant::now();
        b.failure(t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.allow(t1), Some(Pass::Trial));
        b.abandon_trial(t1);
        assert_eq!(b.allow(t1), Some(Pass::Trial), "no second cooldown");
        b.probe_success();
        assert!(b.is_open(), "still opened by requests");
    }

    #[test]
    fn repeated_busy_answers_mark_it_busy_for_the_cooldown_and_a_success_clears_it() {
        let b = Breaker::new(BreakerConfig {
            busy_threshold: 2,
            busy_cooldown: Duration::from_secs(2),
            ..BreakerConfig::default()
        });
        let t0 = Instant::now();
        b.busy(t0);
        assert!(!b.is_busy(t0), "one busy answer is a moment's load");
        b.busy(t0);
        assert!(b.is_busy(t0 + Duration::from_secs(1)));
        assert!(!b.is_busy(t0 + Duration::from_secs(2)), "cooled down");
        assert!(!b.is_open(), "busy is never a fault");
        b.busy(t0 + Duration::from_secs(2));
        assert!(
            b.is_busy(t0 + Duration::from_secs(3)),
            "still full: one more busy answer marks it again"
        );
        b.success();
        assert!(!b.is_busy(t0 + Duration::from_secs(3)));
    }
}
