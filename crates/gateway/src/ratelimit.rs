//! Rate limiting behind a trait, so the in-process limiter (embedded default) and a shared
//! Redis one (scale-out) are interchangeable. This is the per-key request rate; token budgets
//! and concurrency caps build on the same trait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refused: try again after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from `key`'s allowance.
    async fn acquire(&self, key: &str) -> Result<(), RetryAfter>;
}

/// A GCRA limiter (the "virtual scheduling" form of a token bucket): one timestamp per key, no
/// timers, exact under concurrency because each decision holds the lock briefly.
#[derive(Debug)]
pub struct InProcessLimiter {
    /// Time between requests at the sustained rate.
    interval: Duration,
    /// How far ahead of schedule a key may run (the burst).
    tolerance: Duration,
    tat: Mutex<HashMap<String, Instant>>,
}

impl InProcessLimiter {
    /// `per_minute` requests a minute, with bursts of up to `per_minute` at once.
    pub fn per_minute(per_minute: u32) -> Self {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        InProcessLimiter {
            interval,
            tolerance: interval * per_minute.saturating_sub(1),
            tat: Mutex::new(HashMap::new()),
        }
    }

    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let t = tat.get(key).copied().unwrap_or(now).max(now);
        let allow_at = t.checked_sub(self.tolerance).unwrap_or(now);
        if now < allow_at {
            return Err(RetryAfter(allow_at - now));
        }
        tat.insert(key.to_owned(), t + self.interval);
        Ok(())
    }
}

#[async_trait::async_trait]
impl RateLimiter for InProcessLimiter {
    async fn acquire(&self, key: &str) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_a_wait() {
        let l = InProcessLimiter::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("k", t0), Ok(()));
        }
        let Err(RetryAfter(wait)) = l.check_at("k", t0) else {
            panic!("fourth request in the same instant must be refused");
        };
        assert_eq!(wait, Duration::from_secs(20));
        assert_eq!(l.check_at("other", t0), Ok(()), "keys are independent");
        assert_eq!(l.check_at("k", t0 + Duration::from_secs(20)), Ok(()));
    }
}
