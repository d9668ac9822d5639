//! A per-backend circuit breaker: after enough consecutive failures a backend is skipped for a
//! cooling period, then one trial request (or a passing health check) decides whether it is
//! back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses before letting one trial through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial is in flight; others are refused until it reports.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a request may go to this backend now. Moving from open to half-open hands the
    /// caller the one trial.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    pub fn failure(&self, now: Instant) {
        let mut state = self.lock();
        let open = State::Open {
            until: now + self.config.cooldown,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            State::Closed { .. } | State::HalfOpen | State::Open { .. } => open,
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of a plain enum; the
        // value is still a valid state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_lets_one_trial_through_after_cooldown() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        assert!(b.allow(t0));
        b.failure(t0);
        assert!(b.allow(t0), "one failure is under the threshold");
        b.failure(t0);
        assert!(
            !b.allow(t0 + Duration::from_secs(4)),
            "open during cooldown"
        );
        assert!(b.allow(t0 + Duration::from_secs(5)), "the trial");
        assert!(
            !b.allow(t0 + Duration::from_secs(5)),
            "only one trial at a time"
        );
        b.failure(t0 + Duration::from_secs(5));
        assert!(
            !b.allow(t0 + Duration::from_secs(9)),
            "a failed trial reopens"
        );
        assert!(b.allow(t0 + Duration::from_secs(10)));
        b.success();
        assert!(b.allow(t0 + Duration::from_secs(10)));
        assert!(!b.is_open());
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_secs(5),
        });
        let t0 = Instant::now();
        b.failure(t0);
        b.success();
        b.failure(t0);
        assert!(b.allow(t0));
    }
}
