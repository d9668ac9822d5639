//! Rate limiting behind a trait, so the in-process limiter (embedded default) and the shared
//! Redis one (several gateway instances, one global limit) are interchangeable. Both run the
//! same algorithm, GCRA (the "virtual scheduling" form of a token bucket): one timestamp per
//! bucket, no timers, a burst of up to the per-minute allowance.
//!
//! Buckets are named by the caller (`key:<id>`, `tenant:<name>`), each with its own rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Over the limit: try again after this long.
    RetryAfter(Duration),
    /// The limiter itself failed (Redis unreachable). The request is refused, never let
    /// through unlimited.
    Unavailable,
}

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from `bucket`'s allowance of `per_minute` requests a minute.
    async fn acquire(&self, bucket: &str, per_minute: u32) -> Result<(), Refused>;
}

/// The GCRA step, shared by both implementations' tests: with `tat` the bucket's theoretical
/// arrival time, admit at `now` or say how long to wait. Times are microseconds.
fn gcra(tat: Option<u64>, now: u64, per_minute: u32) -> Result<u64, u64> {
    let interval = 60_000_000 / u64::from(per_minute.max(1));
    let tolerance = interval * u64::from(per_minute.saturating_sub(1));
    let tat = tat.unwrap_or(now).max(now);
    let allow_at = tat.saturating_sub(tolerance);
    if now < allow_at {
        return Err(allow_at - now);
    }
    Ok(tat + interval)
}

/// In-process: exact under concurrency because each decision holds the lock briefly.
#[derive(Debug)]
pub struct InProcessLimiter {
    epoch: Instant,
    tat: Mutex<HashMap<String, u64>>,
}

/// Most buckets kept in process; past it, buckets whose time has passed are dropped first.
const MAX_BUCKETS: usize = 200_000;

impl Default for InProcessLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessLimiter {
    pub fn new() -> Self {
        InProcessLimiter {
            epoch: Instant::now(),
            tat: Mutex::new(HashMap::new()),
        }
    }

    pub fn check_at(&self, bucket: &str, per_minute: u32, now: Instant) -> Result<(), Refused> {
        let now_us = u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX);
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        if tat.len() >= MAX_BUCKETS {
            tat.retain(|_, t| *t > now_us);
        }
        match gcra(tat.get(bucket).copied(), now_us, per_minute) {
            Ok(next) => {
                tat.insert(bucket.to_owned(), next);
                Ok(())
            }
            Err(wait) => Err(Refused::RetryAfter(Duration::from_micros(wait))),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for InProcessLimiter {
    async fn acquire(&self, bucket: &str, per_minute: u32) -> Result<(), Refused> {
        self.check_at(bucket, per_minute, Instant::now())
    }
}

/// GCRA in one Lua script, so the read-decide-write is atomic in Redis however many gateway
/// instances share it, and every instance uses Redis's clock (`TIME`), not its own. Returns 0
/// when admitted, else the wait in microseconds. The key expires once its time has passed.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return allow_at - now end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return 0
";

/// The shared limiter: every instance pointed at the same Redis enforces one limit.
pub struct RedisLimiter {
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    namespace: String,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects (and checks the connection) to `url`; bucket keys are `<namespace>:<bucket>`.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisLimiter, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_connection_manager().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(RedisLimiter {
            conn,
            script: redis::Script::new(GCRA_SCRIPT),
            namespace: namespace.to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(&self, bucket: &str, per_minute: u32) -> Result<(), Refused> {
        let interval = 60_000_000 / u64::from(per_minute.max(1));
        let tolerance = interval * u64::from(per_minute.saturating_sub(1));
        let mut conn = self.conn.clone();
        let wait: Result<u64, _> = self
            .script
            .key(format!("{}:{bucket}", self.namespace))
            .arg(interval)
            .arg(tolerance)
            .invoke_async(&mut conn)
            .await;
        match wait {
            Ok(0) => Ok(()),
            Ok(us) => Err(Refused::RetryAfter(Duration::from_micros(us))),
            Err(e) => {
                tracing::error!(error = %e, "rate limiter (Redis) failed; request refused");
                Err(Refused::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_a_wait() {
        let l = InProcessLimiter::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check_at("k", 3, t0), Ok(()));
        }
        let Err(Refused::RetryAfter(wait)) = l.check_at("k", 3, t0) else {
            panic!("fourth request in the same instant must be refused");
        };
        assert!(wait.abs_diff(Duration::from_secs(20)) < Duration::from_millis(1));
        assert_eq!(
            l.check_at("other", 3, t0),
            Ok(()),
            "buckets are independent"
        );
        assert_eq!(l.check_at("k", 3, t0 + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn each_bucket_has_its_own_rate() {
        let l = InProcessLimiter::new();
        let t0 = Instant::now();
        assert_eq!(l.check_at("tenant:a", 1, t0), Ok(()));
        assert!(l.check_at("tenant:a", 1, t0).is_err());
        for _ in 0..5 {
            assert_eq!(l.check_at("key:a", 5, t0), Ok(()));
        }
    }
}
