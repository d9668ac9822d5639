//! Rate limiting behind a trait, so the in-process limiter (embedded default) and the shared
//! Redis one (several gateway instances, one global limit) are interchangeable. Both run the
//! same algorithm, GCRA (the "virtual scheduling" form of a token bucket): one timestamp per
//! bucket, no timers, a burst of up to the per-minute allowance.
//!
//! Buckets are named by the caller (`key:<id>`, `tenant:<name>`), each with its own rate.
//!
//! Besides requests a minute, the same trait keeps the usage quotas:
//! - tokens a minute: GCRA again, in tokens. A request is admitted while the bucket has any
//!   allowance left; its tokens (prompt and completion) are taken when it ends, even past the
//!   allowance, so one large answer overdraws the bucket and later requests wait it off;
//! - tokens a day: a counter per UTC day, checked before and added to after each request;
//! - concurrent requests: a counter taken on entry and given back when the response ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// Whether `bucket` (of `per_minute` units a minute) has any allowance left; takes none.
    async fn check(&self, bucket: &str, per_minute: u32) -> Result<(), Refused>;
    /// Takes `amount` units already used, past the allowance if need be.
    async fn spend(&self, bucket: &str, per_minute: u32, amount: u64) -> Result<(), Refused>;
    /// Adds `amount` to `bucket`'s count for the current UTC day and returns the new count
    /// (`amount` 0 reads it).
    async fn add_today(&self, bucket: &str, amount: u64) -> Result<u64, Refused>;
    /// Takes one of `max` concurrent places in `bucket`; `hold` bounds how long a place may
    /// be held by a holder that never gives it back (a crashed instance).
    async fn enter(&self, bucket: &str, max: u32, hold: Duration) -> Result<(), Refused>;
    /// Gives back a place taken by `enter`.
    async fn leave(&self, bucket: &str);
    /// Gives back a place at once, without waiting, where the limiter can (in-process);
    /// false: the caller must `leave` instead. A request's place is free by the time its
    /// client has the answer, so a client that sends one request after another is never
    /// refused by its own previous one.
    fn leave_now(&self, _bucket: &str) -> bool {
        false
    }
    /// Charges `amount` units to each token bucket at once, without waiting, where the limiter
    /// can (in-process); false: the caller must `spend` and `add_today` instead. As with
    /// `leave_now`, a request's tokens are charged by the time its client has the answer, so
    /// the client's next request already sees them.
    fn spend_now(&self, _per_minute: &[(String, u32)], _per_day: &[String], _amount: u64) -> bool {
        false
    }
}

/// Which bound refused a request, for the error message and the OpenAI error `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Requests,
    Tokens,
    TokensPerDay,
    Concurrency,
}

impl Limit {
    /// Every bound, in the order the counters keep them.
    pub const ALL: [Limit; 4] = [
        Limit::Requests,
        Limit::Tokens,
        Limit::TokensPerDay,
        Limit::Concurrency,
    ];

    /// OpenAI's rate-limit error `type` for this bound.
    pub fn kind(self) -> &'static str {
        match self {
            Limit::Requests | Limit::Concurrency => "requests",
            Limit::Tokens | Limit::TokensPerDay => "tokens",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Limit::Requests => "requests per minute",
            Limit::Tokens => "tokens per minute",
            Limit::TokensPerDay => "tokens per day",
            Limit::Concurrency => "concurrent requests",
        }
    }
}

/// The principal whose 429s are folded into one audit event per window
/// (`limits.refusal_audit_window`): a key (or token subject) that keeps sending past its limits
/// writes its first refusal in each window and one `suppressed: N` summary, not one event per
/// request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefusedKey {
    pub key_id: String,
    pub tenant: String,
    pub method: wardgate_audit::AuthMethod,
}

impl crate::guards::audit_fold::FoldSubject for RefusedKey {
    fn summary(subject: Option<&Self>, count: u64, window: Duration) -> wardgate_audit::AuditEvent {
        use wardgate_audit::{ActorKind, AuditEvent, AuthMethod, EventType, Outcome, Timestamp};
        let secs = window.as_secs();
        let mut e = match subject {
            Some(k) => {
                // As on the request events: a token's subject is a person, a key is held by
                // an application, and only wardgate keys are recorded as `key_id`.
                let kind = match k.method {
                    AuthMethod::Jwt => ActorKind::User,
                    _ => ActorKind::Service,
                };
                let mut e = AuditEvent::new(Timestamp::now(), EventType::Request, &k.key_id, kind);
                e.auth_method = Some(k.method);
                e.tenant = Some(k.tenant.clone());
                e.key_id = matches!(k.method, AuthMethod::ApiKey | AuthMethod::BreakGlass)
                    .then(|| k.key_id.clone());
                e.detail = Some(format!(
                    "suppressed: {count} rate-limited requests in a {secs}s window"
                ));
                e
            }
            None => {
                let mut e = AuditEvent::new(
                    Timestamp::now(),
                    EventType::Request,
                    "wardgate",
                    ActorKind::System,
                );
                e.detail = Some(format!(
                    "suppressed: {count} rate-limited requests of keys past the tracking table \
                     in a {secs}s window"
                ));
                e
            }
        };
        e.outcome = Some(Outcome::Deny);
        e.http_status = Some(429);
        e.deny_reason = Some("rate_limited".to_owned());
        e
    }
}

/// What one request holds against its quotas: concurrency places to give back and token
/// buckets to charge, settled once when the request ends. Dropped unsettled (a request
/// refused after admission), it gives its places back and charges nothing.
pub struct Lease {
    limiter: Arc<dyn RateLimiter>,
    pub(crate) places: Vec<String>,
    pub(crate) per_minute: Vec<(String, u32)>,
    pub(crate) per_day: Vec<String>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("places", &self.places)
            .field("per_minute", &self.per_minute)
            .field("per_day", &self.per_day)
            .finish_non_exhaustive()
    }
}

impl Lease {
    pub fn new(limiter: Arc<dyn RateLimiter>) -> Lease {
        Lease {
            limiter,
            places: Vec::new(),
            per_minute: Vec::new(),
            per_day: Vec::new(),
        }
    }

    /// Gives back the places and charges `tokens` to the token buckets, in the background (on
    /// this thread where no runtime is current).
    pub fn settle(mut self, tokens: u64) {
        self.release(tokens);
    }

    fn release(&mut self, tokens: u64) {
        let mut places = std::mem::take(&mut self.places);
        places.retain(|b| !self.limiter.leave_now(b));
        let mut per_minute = std::mem::take(&mut self.per_minute);
        let mut per_day = std::mem::take(&mut self.per_day);
        if tokens > 0 && self.limiter.spend_now(&per_minute, &per_day, tokens) {
            per_minute.clear();
            per_day.clear();
        }
        if places.is_empty() && (tokens == 0 || (per_minute.is_empty() && per_day.is_empty())) {
            return;
        }
        let limiter = self.limiter.clone();
        let work = async move {
            for b in &places {
                limiter.leave(b).await;
            }
            if tokens > 0 {
                for (b, rate) in &per_minute {
                    let _ = limiter.spend(b, *rate, tokens).await;
                }
                for b in &per_day {
                    let _ = limiter.add_today(b, tokens).await;
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            // The normal case: in the background, so no async worker waits on the limiter.
            Ok(rt) => {
                rt.spawn(work);
            }
            // Dropped where no runtime is current (a plain thread, or after the runtime has
            // gone): no async worker is blocked here, so settle on this thread, bounded so an
            // unreachable limiter cannot hold it (a place not given back then expires with
            // its hold time, as a crashed instance's does).
            Err(_) => settle_blocking(work),
        }
    }
}

/// How long a lease settled without a runtime waits for its limiter.
const SETTLE_BLOCKING_WAIT: Duration = Duration::from_secs(5);

/// Runs a lease's settlement to its end on a runtime of its own, on the current thread.
fn settle_blocking(work: impl Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match rt {
        Ok(rt) => {
            // The timer is made inside the runtime, which it needs.
            let bounded = async { tokio::time::timeout(SETTLE_BLOCKING_WAIT, work).await };
            if rt.block_on(bounded).is_err() {
                tracing::warn!(
                    "the rate limiter did not take back a request's places in time; they \
                     expire with their hold time"
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not settle a request's quota lease");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release(0);
    }
}

/// The current UTC day as days since 1970, and the time left until the next one.
pub fn utc_day() -> (i64, Duration) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let day = now.div_euclid(86_400);
    let left = u64::try_from((day + 1) * 86_400 - now).unwrap_or(1);
    (day, Duration::from_secs(left.max(1)))
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

/// With `tat` the bucket's theoretical arrival time: whether one more unit would be admitted
/// at `now` (Err: the wait), without taking it.
fn gcra_check(tat: Option<u64>, now: u64, per_minute: u32) -> Result<(), u64> {
    gcra(tat, now, per_minute).map(drop)
}

/// The new theoretical arrival time after `amount` units are taken regardless of allowance.
fn gcra_spend(tat: Option<u64>, now: u64, per_minute: u32, amount: u64) -> u64 {
    let interval = 60_000_000 / u64::from(per_minute.max(1));
    tat.unwrap_or(now)
        .max(now)
        .saturating_add(interval.saturating_mul(amount))
}

/// In-process: exact under concurrency because each decision holds the lock briefly.
#[derive(Debug)]
pub struct InProcessLimiter {
    epoch: Instant,
    tat: Mutex<HashMap<String, u64>>,
    /// Per-day counters: bucket → (day, count).
    days: Mutex<HashMap<String, (i64, u64)>>,
    /// Places taken per concurrency bucket.
    places: Mutex<HashMap<String, u32>>,
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
            days: Mutex::new(HashMap::new()),
            places: Mutex::new(HashMap::new()),
        }
    }

    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// [`RateLimiter::check`] at a given instant.
    pub fn peek_at(&self, bucket: &str, per_minute: u32, now: Instant) -> Result<(), Refused> {
        let tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        gcra_check(tat.get(bucket).copied(), self.micros(now), per_minute)
            .map_err(|wait| Refused::RetryAfter(Duration::from_micros(wait)))
    }

    /// [`RateLimiter::spend`] at a given instant.
    /// Adds `amount` to `bucket`'s count for the current UTC day; the new count.
    fn add_today_now(&self, bucket: &str, amount: u64) -> u64 {
        let (today, _) = utc_day();
        let mut days = self.days.lock().unwrap_or_else(|e| e.into_inner());
        if days.len() >= MAX_BUCKETS {
            days.retain(|_, (day, _)| *day == today);
        }
        let entry = days.entry(bucket.to_owned()).or_insert((today, 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        entry.1 = entry.1.saturating_add(amount);
        entry.1
    }

    pub fn spend_at(&self, bucket: &str, per_minute: u32, amount: u64, now: Instant) {
        let now_us = self.micros(now);
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let next = gcra_spend(tat.get(bucket).copied(), now_us, per_minute, amount);
        tat.insert(bucket.to_owned(), next);
    }

    pub fn check_at(&self, bucket: &str, per_minute: u32, now: Instant) -> Result<(), Refused> {
        let now_us = self.micros(now);
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

    async fn check(&self, bucket: &str, per_minute: u32) -> Result<(), Refused> {
        self.peek_at(bucket, per_minute, Instant::now())
    }

    async fn spend(&self, bucket: &str, per_minute: u32, amount: u64) -> Result<(), Refused> {
        self.spend_at(bucket, per_minute, amount, Instant::now());
        Ok(())
    }

    async fn add_today(&self, bucket: &str, amount: u64) -> Result<u64, Refused> {
        Ok(self.add_today_now(bucket, amount))
    }

    async fn enter(&self, bucket: &str, max: u32, _hold: Duration) -> Result<(), Refused> {
        let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
        let taken = places.entry(bucket.to_owned()).or_insert(0);
        if *taken >= max {
            return Err(Refused::RetryAfter(Duration::from_secs(1)));
        }
        *taken += 1;
        Ok(())
    }

    async fn leave(&self, bucket: &str) {
        self.leave_now(bucket);
    }

    fn spend_now(&self, per_minute: &[(String, u32)], per_day: &[String], amount: u64) -> bool {
        let now = Instant::now();
        for (bucket, rate) in per_minute {
            self.spend_at(bucket, *rate, amount, now);
        }
        for bucket in per_day {
            self.add_today_now(bucket, amount);
        }
        true
    }

    fn leave_now(&self, bucket: &str) -> bool {
        let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(taken) = places.get_mut(bucket) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                places.remove(bucket);
            }
        }
        true
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

/// GCRA without taking (ARGV[3] = 0: is one more unit admitted?) or taking `ARGV[3]` units
/// unconditionally (usage already happened). Returns the wait in microseconds (0: admitted).
const GCRA_USAGE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if amount == 0 then
  local allow_at = tat - tolerance
  if now < allow_at then return allow_at - now end
  return 0
end
local new = tat + interval * amount
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return 0
";

/// Takes a concurrent place unless `ARGV[1]` are taken; the count expires `ARGV[2]` seconds
/// after the last entry, so places held by a crashed instance are not held forever.
const ENTER_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Gives a place back, never below zero.
const LEAVE_SCRIPT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n <= 1 then redis.call('DEL', KEYS[1]) else redis.call('DECR', KEYS[1]) end
return 0
";

/// Adds to a per-day counter, which expires a day after its day ends.
const DAY_SCRIPT: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return n
";

/// The shared limiter: every instance pointed at the same Redis enforces one limit.
pub struct RedisLimiter {
    conn: crate::shared::Conn,
    script: redis::Script,
    usage: redis::Script,
    enter: redis::Script,
    leave: redis::Script,
    day: redis::Script,
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
        Ok(RedisLimiter::over(
            &crate::shared::SharedRedis::connect(url, namespace).await?,
        ))
    }

    /// Over a connection the instance's other shared state uses too; bucket keys are
    /// `<namespace>:<bucket>`.
    pub fn over(redis: &crate::shared::SharedRedis) -> RedisLimiter {
        RedisLimiter {
            conn: redis.conn(),
            script: redis::Script::new(GCRA_SCRIPT),
            usage: redis::Script::new(GCRA_USAGE_SCRIPT),
            enter: redis::Script::new(ENTER_SCRIPT),
            leave: redis::Script::new(LEAVE_SCRIPT),
            day: redis::Script::new(DAY_SCRIPT),
            namespace: redis.namespace().to_owned(),
        }
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
        waited(wait)
    }

    async fn check(&self, bucket: &str, per_minute: u32) -> Result<(), Refused> {
        self.usage(bucket, per_minute, 0).await
    }

    async fn spend(&self, bucket: &str, per_minute: u32, amount: u64) -> Result<(), Refused> {
        if amount == 0 {
            return Ok(());
        }
        self.usage(bucket, per_minute, amount).await
    }

    async fn add_today(&self, bucket: &str, amount: u64) -> Result<u64, Refused> {
        let (today, _) = utc_day();
        let mut conn = self.conn.clone();
        self.day
            .key(format!("{}:{bucket}:day{today}", self.namespace))
            .arg(amount)
            .invoke_async(&mut conn)
            .await
            .map_err(failed)
    }

    async fn enter(&self, bucket: &str, max: u32, hold: Duration) -> Result<(), Refused> {
        let mut conn = self.conn.clone();
        let taken: u64 = self
            .enter
            .key(format!("{}:{bucket}", self.namespace))
            .arg(max)
            .arg(hold.as_secs().max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        if taken == 1 {
            Ok(())
        } else {
            Err(Refused::RetryAfter(Duration::from_secs(1)))
        }
    }

    async fn leave(&self, bucket: &str) {
        let mut conn = self.conn.clone();
        // A failure: the place expires with the bucket's hold time instead, and the outage
        // is logged once by the connection (`shared::RedisHealth`), not per request.
        let _: Result<u64, _> = self
            .leave
            .key(format!("{}:{bucket}", self.namespace))
            .invoke_async(&mut conn)
            .await;
    }
}

impl RedisLimiter {
    async fn usage(&self, bucket: &str, per_minute: u32, amount: u64) -> Result<(), Refused> {
        let interval = 60_000_000 / u64::from(per_minute.max(1));
        let tolerance = interval * u64::from(per_minute.saturating_sub(1));
        let mut conn = self.conn.clone();
        let wait: Result<u64, _> = self
            .usage
            .key(format!("{}:{bucket}", self.namespace))
            .arg(interval)
            .arg(tolerance)
            .arg(amount)
            .invoke_async(&mut conn)
            .await;
        waited(wait)
    }
}

/// The request is refused; the outage is logged once by the connection
/// (`shared::RedisHealth`), not per request.
fn failed(_: redis::RedisError) -> Refused {
    Refused::Unavailable
}

fn waited(wait: Result<u64, redis::RedisError>) -> Result<(), Refused> {
    match wait {
        Ok(0) => Ok(()),
        Ok(us) => Err(Refused::RetryAfter(Duration::from_micros(us))),
        Err(e) => Err(failed(e)),
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
    fn token_usage_overdraws_the_bucket_and_later_requests_wait_it_off() {
        let l = InProcessLimiter::new();
        let t0 = Instant::now();
        // 600 tokens a minute: 10 a second.
        assert_eq!(l.peek_at("tok", 600, t0), Ok(()), "a fresh bucket admits");
        l.spend_at("tok", 600, 500, t0);
        assert_eq!(l.peek_at("tok", 600, t0), Ok(()), "100 tokens are left");
        l.spend_at("tok", 600, 1_100, t0);
        // 1,600 spent of 600: admitted again once 1,001 have drained, at 10 a second.
        let Err(Refused::RetryAfter(wait)) = l.peek_at("tok", 600, t0) else {
            panic!("an overdrawn bucket must refuse");
        };
        assert!(
            wait.abs_diff(Duration::from_millis(100_100)) < Duration::from_millis(1),
            "{wait:?}"
        );
        assert!(
            l.peek_at("tok", 600, t0 + Duration::from_secs(100))
                .is_err()
        );
        assert_eq!(
            l.peek_at("tok", 600, t0 + Duration::from_millis(100_100)),
            Ok(())
        );
        // Checking takes nothing.
        for _ in 0..1000 {
            assert_eq!(l.peek_at("other", 1, t0), Ok(()));
        }
    }

    #[tokio::test]
    async fn concurrency_places_are_taken_and_given_back() {
        let l = InProcessLimiter::new();
        let hold = Duration::from_secs(60);
        assert_eq!(l.enter("c", 2, hold).await, Ok(()));
        assert_eq!(l.enter("c", 2, hold).await, Ok(()));
        assert!(l.enter("c", 2, hold).await.is_err(), "third place refused");
        assert_eq!(
            l.enter("d", 2, hold).await,
            Ok(()),
            "buckets are independent"
        );
        l.leave("c").await;
        assert_eq!(
            l.enter("c", 2, hold).await,
            Ok(()),
            "a freed place is reused"
        );
        l.leave("c").await;
        l.leave("c").await;
        l.leave("c").await;
        assert_eq!(l.enter("c", 1, hold).await, Ok(()), "never below zero");
        assert!(l.enter("c", 1, hold).await.is_err());
    }

    #[tokio::test]
    async fn day_counters_add_up_per_bucket() {
        let l = InProcessLimiter::new();
        assert_eq!(l.add_today("a", 0).await, Ok(0));
        assert_eq!(l.add_today("a", 70).await, Ok(70));
        assert_eq!(l.add_today("a", 30).await, Ok(100));
        assert_eq!(l.add_today("b", 5).await, Ok(5));
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

    /// A limiter like Redis: nothing is given back at once, only through async calls that
    /// need a Tokio runtime (its timer, here; Redis its I/O).
    struct Remote(InProcessLimiter);

    #[async_trait::async_trait]
    impl RateLimiter for Remote {
        async fn acquire(&self, bucket: &str, per_minute: u32) -> Result<(), Refused> {
            self.0.acquire(bucket, per_minute).await
        }
        async fn check(&self, bucket: &str, per_minute: u32) -> Result<(), Refused> {
            self.0.check(bucket, per_minute).await
        }
        async fn spend(&self, bucket: &str, per_minute: u32, amount: u64) -> Result<(), Refused> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0.spend(bucket, per_minute, amount).await
        }
        async fn add_today(&self, bucket: &str, amount: u64) -> Result<u64, Refused> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0.add_today(bucket, amount).await
        }
        async fn enter(&self, bucket: &str, max: u32, hold: Duration) -> Result<(), Refused> {
            self.0.enter(bucket, max, hold).await
        }
        async fn leave(&self, bucket: &str) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0.leave(bucket).await;
        }
    }

    /// Issue 16: a lease settled or dropped on a thread with no Tokio runtime gives its places
    /// back (and charges its tokens), where it used to keep them silently.
    #[test]
    #[expect(clippy::unwrap_used, reason = "a test")]
    fn i16_a_lease_released_without_a_runtime_gives_its_places_back() {
        let limiter = Arc::new(Remote(InProcessLimiter::new()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let hold = Duration::from_secs(60);
        let lease = |tokens_bucket: bool| {
            rt.block_on(limiter.enter("inflight:k", 1, hold)).unwrap();
            let mut lease = Lease::new(limiter.clone());
            lease.places.push("inflight:k".into());
            if tokens_bucket {
                lease.per_day.push("day:k".into());
            }
            lease
        };
        // Dropped unsettled, on a plain thread.
        let dropped = lease(false);
        std::thread::spawn(move || drop(dropped)).join().unwrap();
        assert_eq!(
            rt.block_on(limiter.enter("inflight:k", 1, hold)),
            Ok(()),
            "the place came back"
        );
        rt.block_on(limiter.leave("inflight:k"));
        // Settled with its tokens, on a plain thread.
        let settled = lease(true);
        std::thread::spawn(move || settled.settle(42))
            .join()
            .unwrap();
        assert_eq!(rt.block_on(limiter.enter("inflight:k", 1, hold)), Ok(()));
        assert_eq!(rt.block_on(limiter.add_today("day:k", 0)), Ok(42));
    }
}
