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
//! - concurrent requests: a place taken on entry and given back when the response ends.
//!
//! A request costs the limiter two calls whatever is configured: [`RateLimiter::admit`] checks
//! every bound of the request at once and takes what admission takes (a request from each
//! request rate, a place in each concurrency bound), all or nothing; [`RateLimiter::settle`]
//! gives the places back and charges the tokens when it ends. On Redis each is one Lua script,
//! so one round trip.
//!
//! What a token budget can be overdrawn by: a request is admitted while its budget has
//! allowance left, and charged when it ends, since its size is known only then. So the
//! requests in flight when a budget runs out were all admitted against what was left, and the
//! budget is overdrawn by at most their tokens: at most the concurrency bounds' worth of
//! requests (`concurrent_requests` per key, `tenant_concurrent_requests` per tenant), each at
//! most its context window. A request's tokens are charged before its client has the whole
//! answer (in process at once; on Redis the answer's end waits for the settlement, as it waits
//! for its audit event), so a request sent after another's answer, to any instance, sees that
//! answer's tokens: one client sending requests one after another overdraws by at most its
//! last request. (A settlement Redis fails to take is logged, and its tokens go uncharged:
//! retrying could charge them twice.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// One bound a request must be within to be admitted. A request's bounds are checked in the
/// order given, and the first that refuses names the refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Requests a minute: admission takes one from `bucket`'s allowance.
    Requests { bucket: String, per_minute: u32 },
    /// Tokens a minute: `bucket` must have allowance left; the request's tokens are taken when
    /// it ends ([`Settlement::per_minute`]).
    Tokens { bucket: String, per_minute: u32 },
    /// Tokens a day: `bucket`'s count for the current UTC day must be below `max`; the
    /// request's tokens are added when it ends ([`Settlement::per_day`]).
    TokensPerDay { bucket: String, max: u64 },
    /// Concurrent requests: admission takes one of `max` places in `bucket`, held until the
    /// request ends ([`Settlement::places`]).
    Concurrency { bucket: String, max: u32 },
}

impl Bound {
    pub fn requests(bucket: impl Into<String>, per_minute: u32) -> Bound {
        Bound::Requests {
            bucket: bucket.into(),
            per_minute,
        }
    }

    pub fn tokens(bucket: impl Into<String>, per_minute: u32) -> Bound {
        Bound::Tokens {
            bucket: bucket.into(),
            per_minute,
        }
    }

    pub fn tokens_per_day(bucket: impl Into<String>, max: u64) -> Bound {
        Bound::TokensPerDay {
            bucket: bucket.into(),
            max,
        }
    }

    pub fn concurrency(bucket: impl Into<String>, max: u32) -> Bound {
        Bound::Concurrency {
            bucket: bucket.into(),
            max,
        }
    }

    /// The limit this bound is, for the refusal's message.
    pub fn limit(&self) -> Limit {
        match self {
            Bound::Requests { .. } => Limit::Requests,
            Bound::Tokens { .. } => Limit::Tokens,
            Bound::TokensPerDay { .. } => Limit::TokensPerDay,
            Bound::Concurrency { .. } => Limit::Concurrency,
        }
    }
}

/// A request not admitted: the first of its bounds that refused (the first bound when the
/// limiter could not answer), and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    pub why: Refused,
}

impl Refusal {
    fn unavailable(bounds: &[Bound]) -> Refusal {
        Refusal {
            limit: bounds.first().map_or(Limit::Requests, Bound::limit),
            why: Refused::Unavailable,
        }
    }
}

/// What an admitted request gives back and is charged when it ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// The admission's own name for its places ([`RateLimiter::admit`]).
    pub ticket: u64,
    /// Concurrency buckets whose place this request holds.
    pub places: Vec<String>,
    /// Token buckets (tokens a minute) to charge, with their rates.
    pub per_minute: Vec<(String, u32)>,
    /// Day counters (tokens a day) to charge.
    pub per_day: Vec<String>,
    /// The request's tokens, prompt and completion.
    pub tokens: u64,
}

impl Settlement {
    /// What admission under `bounds` (as `ticket`) holds and will charge.
    pub fn of(bounds: impl IntoIterator<Item = Bound>, ticket: u64) -> Settlement {
        let mut s = Settlement {
            ticket,
            ..Settlement::default()
        };
        for b in bounds {
            match b {
                Bound::Requests { .. } => {}
                Bound::Tokens { bucket, per_minute } => s.per_minute.push((bucket, per_minute)),
                Bound::TokensPerDay { bucket, .. } => s.per_day.push(bucket),
                Bound::Concurrency { bucket, .. } => s.places.push(bucket),
            }
        }
        s
    }

    /// The same settlement, charging `tokens`.
    pub fn charging(self, tokens: u64) -> Settlement {
        Settlement { tokens, ..self }
    }

    /// Whether settling would change nothing (no place held, no tokens to charge).
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
            && (self.tokens == 0 || (self.per_minute.is_empty() && self.per_day.is_empty()))
    }
}

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Admits a request within every one of `bounds`, or refuses it with the first bound (in
    /// the order given) that does not admit it. All or nothing: a refused request takes
    /// nothing; an admitted one takes a request from each [`Bound::Requests`] and a place in
    /// each [`Bound::Concurrency`], a place held for `hold` at most by a holder that never
    /// gives it back (a crashed instance). Returns the ticket that names this admission's
    /// places in its [`Settlement`].
    async fn admit(&self, bounds: &[Bound], hold: Duration) -> Result<u64, Refusal>;
    /// Gives back the places of an admission and charges its tokens (past the allowance if
    /// need be). A place that cannot be given back expires with its hold time.
    async fn settle(&self, settlement: &Settlement) -> Result<(), Refused>;
    /// Settles at once, without waiting, where the limiter can (in-process); false: the caller
    /// must `settle` instead. A request's place is free, and its tokens charged, by the time
    /// its client has the answer, so the client's next request sees them.
    fn settle_now(&self, _settlement: &Settlement) -> bool {
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
    settlement: Option<Settlement>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("settlement", &self.settlement)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The lease of a request `limiter` admitted under `bounds` as `ticket`.
    pub fn admitted(
        limiter: Arc<dyn RateLimiter>,
        bounds: impl IntoIterator<Item = Bound>,
        ticket: u64,
    ) -> Lease {
        Lease {
            limiter,
            settlement: Some(Settlement::of(bounds, ticket)),
        }
    }

    /// Gives back the places and charges `tokens` to the token buckets: at once where the
    /// limiter can, else on a task of its own (on this thread where no runtime is current).
    /// The answer waits for the returned [`Settled`] before its end; dropping it does not
    /// stop the settlement.
    pub fn settle(mut self, tokens: u64) -> Settled {
        self.release(tokens)
    }

    fn release(&mut self, tokens: u64) -> Settled {
        let Some(mut s) = self.settlement.take() else {
            return Settled::done();
        };
        s.tokens = tokens;
        if s.is_empty() || self.limiter.settle_now(&s) {
            return Settled::done();
        }
        let limiter = self.limiter.clone();
        let work = async move {
            // A failure is the limiter's to log; its places expire with their hold time.
            let _ = limiter.settle(&s).await;
        };
        match tokio::runtime::Handle::try_current() {
            // The normal case: on a task, so no async worker waits on the limiter unless it
            // chooses to, and the settlement finishes even if its waiter goes away.
            Ok(rt) => Settled(Some(rt.spawn(work))),
            // Dropped where no runtime is current (a plain thread, or after the runtime has
            // gone): no async worker is blocked here, so settle on this thread, bounded so an
            // unreachable limiter cannot hold it (a place not given back then expires with
            // its hold time, as a crashed instance's does).
            Err(_) => {
                settle_blocking(work);
                Settled::done()
            }
        }
    }
}

/// A lease's settlement: done, or running on a task of its own. An answer waits for it before
/// its end, so the client's next request, at any instance, finds the place free and the tokens
/// charged. Dropping it leaves the settlement to finish by itself.
#[derive(Debug)]
#[must_use = "an answer waits for its lease's settlement; dropping it lets it finish alone"]
pub struct Settled(Option<tokio::task::JoinHandle<()>>);

impl Settled {
    /// Nothing to wait for.
    pub fn done() -> Settled {
        Settled(None)
    }

    /// Whether there is nothing to wait for.
    pub fn is_done(&self) -> bool {
        self.0.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Future for Settled {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match self.0.as_mut() {
            None => std::task::Poll::Ready(()),
            // A settlement that panicked or was cancelled (the runtime shutting down) is
            // waited for no longer.
            Some(h) => std::pin::Pin::new(h).poll(cx).map(drop),
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
        // Nobody is left to wait: the settlement finishes by itself.
        drop(self.release(0));
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

/// The new theoretical arrival time after `amount` units are taken regardless of allowance.
fn gcra_spend(tat: Option<u64>, now: u64, per_minute: u32, amount: u64) -> u64 {
    let interval = 60_000_000 / u64::from(per_minute.max(1));
    tat.unwrap_or(now)
        .max(now)
        .saturating_add(interval.saturating_mul(amount))
}

/// How long a request refused for want of a concurrent place is told to wait.
const PLACE_WAIT: Duration = Duration::from_secs(1);

/// In-process: exact under concurrency because each decision holds the locks briefly.
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

    /// Whether one more unit of `bucket` (of `per_minute` a minute) would be admitted at
    /// `now`, taking none.
    pub fn peek_at(&self, bucket: &str, per_minute: u32, now: Instant) -> Result<(), Refused> {
        let tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        gcra(tat.get(bucket).copied(), self.micros(now), per_minute)
            .map(drop)
            .map_err(|wait| Refused::RetryAfter(Duration::from_micros(wait)))
    }

    /// Takes `amount` units of `bucket` used at `now`, past the allowance if need be.
    pub fn spend_at(&self, bucket: &str, per_minute: u32, amount: u64, now: Instant) {
        let now_us = self.micros(now);
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let next = gcra_spend(tat.get(bucket).copied(), now_us, per_minute, amount);
        tat.insert(bucket.to_owned(), next);
    }

    /// Takes one unit of `bucket` (of `per_minute` a minute) at `now`, or says how long to
    /// wait.
    pub fn check_at(&self, bucket: &str, per_minute: u32, now: Instant) -> Result<(), Refused> {
        let now_us = self.micros(now);
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        if tat.len() >= MAX_BUCKETS {
            tat.retain(|_, t| *t > now_us);
        }
        match gcra(tat.get(bucket).copied(), now_us, per_minute) {
            Ok(next) => {
                set_tat(&mut tat, bucket, next);
                Ok(())
            }
            Err(wait) => Err(Refused::RetryAfter(Duration::from_micros(wait))),
        }
    }

    /// [`RateLimiter::admit`] at a given instant: every bound checked, in order, under the
    /// locks it needs, and what admission takes taken only when all admit.
    pub fn admit_at(&self, bounds: &[Bound], now: Instant) -> Result<(), Refusal> {
        let now_us = self.micros(now);
        let (mut rates, mut days, mut places) = (false, false, false);
        for b in bounds {
            match b {
                Bound::Requests { .. } | Bound::Tokens { .. } => rates = true,
                Bound::TokensPerDay { .. } => days = true,
                Bound::Concurrency { .. } => places = true,
            }
        }
        // Always taken in this order (`settle_now` takes them one at a time).
        let mut tat = rates.then(|| self.tat.lock().unwrap_or_else(|e| e.into_inner()));
        let days = days.then(|| self.days.lock().unwrap_or_else(|e| e.into_inner()));
        let mut places = places.then(|| self.places.lock().unwrap_or_else(|e| e.into_inner()));
        let today = days.as_ref().map(|_| utc_day());
        for b in bounds {
            let refused = match (b, &tat, &days, &places) {
                (
                    Bound::Requests { bucket, per_minute } | Bound::Tokens { bucket, per_minute },
                    Some(tat),
                    _,
                    _,
                ) => gcra(tat.get(bucket.as_str()).copied(), now_us, *per_minute)
                    .err()
                    .map(Duration::from_micros),
                (Bound::TokensPerDay { bucket, max }, _, Some(days), _) => {
                    let (today, until_tomorrow) = today.unwrap_or_else(utc_day);
                    let used = match days.get(bucket.as_str()) {
                        Some((day, n)) if *day == today => *n,
                        _ => 0,
                    };
                    (used >= *max).then_some(until_tomorrow)
                }
                (Bound::Concurrency { bucket, max }, _, _, Some(places)) => {
                    let taken = places.get(bucket.as_str()).copied().unwrap_or(0);
                    (taken >= *max).then_some(PLACE_WAIT)
                }
                // Each kind's lock is held when a bound of that kind is present.
                _ => None,
            };
            if let Some(wait) = refused {
                return Err(Refusal {
                    limit: b.limit(),
                    why: Refused::RetryAfter(wait),
                });
            }
        }
        for b in bounds {
            match (b, &mut tat, &mut places) {
                (Bound::Requests { bucket, per_minute }, Some(tat), _) => {
                    if tat.len() >= MAX_BUCKETS {
                        tat.retain(|_, t| *t > now_us);
                    }
                    if let Ok(next) = gcra(tat.get(bucket.as_str()).copied(), now_us, *per_minute) {
                        set_tat(tat, bucket, next);
                    }
                }
                (Bound::Concurrency { bucket, .. }, _, Some(places)) => {
                    match places.get_mut(bucket.as_str()) {
                        Some(taken) => *taken += 1,
                        None => {
                            places.insert(bucket.clone(), 1);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

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

    fn leave_now(&self, bucket: &str) {
        let mut places = self.places.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(taken) = places.get_mut(bucket) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                places.remove(bucket);
            }
        }
    }
}

/// Sets `bucket`'s theoretical arrival time, allocating its name only for a new bucket.
fn set_tat(tat: &mut HashMap<String, u64>, bucket: &str, next: u64) {
    match tat.get_mut(bucket) {
        Some(t) => *t = next,
        None => {
            tat.insert(bucket.to_owned(), next);
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for InProcessLimiter {
    async fn admit(&self, bounds: &[Bound], _hold: Duration) -> Result<u64, Refusal> {
        // A crashed process takes its places with it: nothing to expire.
        self.admit_at(bounds, Instant::now()).map(|()| 0)
    }

    async fn settle(&self, settlement: &Settlement) -> Result<(), Refused> {
        self.settle_now(settlement);
        Ok(())
    }

    fn settle_now(&self, s: &Settlement) -> bool {
        for bucket in &s.places {
            self.leave_now(bucket);
        }
        if s.tokens > 0 {
            let now = Instant::now();
            for (bucket, rate) in &s.per_minute {
                self.spend_at(bucket, *rate, s.tokens, now);
            }
            for bucket in &s.per_day {
                self.add_today_now(bucket, s.tokens);
            }
        }
        true
    }
}

/// Admission in one Lua script, so the whole decision is atomic in Redis however many gateway
/// instances share it, costs one round trip, and uses Redis's clock (`TIME`), not an
/// instance's. `KEYS` are the request's bounds in order, then the admission's withdrawal mark
/// ([`CANCEL_SCRIPT`]): an admission withdrawn before it runs takes nothing and returns
/// `{-1, 0}`. `ARGV[1]` is how long a place may be
/// held (microseconds), `ARGV[2]` the member naming this request's places, and each bound `i`
/// has a kind `ARGV[2i + 1]` and a number `ARGV[2i + 2]`:
/// - `r` requests a minute (the rate): GCRA, taking one;
/// - `t` tokens a minute (the rate): GCRA, taking none;
/// - `d` tokens today (the most): the day's counter must be below it;
/// - `p` concurrent requests (the most): a sorted set of the places held, each member scored
///   by the time it expires; the expired ones are dropped first, so places held by an instance
///   that died come free after their hold time however busy the set stays.
///
/// Every bound is checked before anything is taken: a refusal returns `{i, wait in µs}` (the
/// first refusing bound, 1-based; the wait is a rate's) having taken nothing; an admission takes a request from each
/// rate and a place in each set, and returns `{0, 0}`. Keys expire once nothing in them counts.
const ADMIT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hold = tonumber(ARGV[1])
local member = ARGV[2]
local bounds = #KEYS - 1
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {-1, 0} end
local tats = {}
for i = 1, bounds do
  local kind = ARGV[2 * i + 1]
  local n = tonumber(ARGV[2 * i + 2])
  local key = KEYS[i]
  if kind == 'd' then
    if tonumber(redis.call('GET', key) or '0') >= n then return {i, 0} end
  elseif kind == 'p' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= n then return {i, 0} end
  else
    local interval = math.floor(60000000 / n)
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local allow_at = tat - interval * (n - 1)
    if now < allow_at then return {i, allow_at - now} end
    if kind == 'r' then tats[i] = tat + interval end
  end
end
local keep = math.ceil(hold / 1000) + 1000
for i = 1, bounds do
  local kind = ARGV[2 * i + 1]
  if kind == 'r' then
    local new = tats[i]
    redis.call('SET', KEYS[i], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1000)
  elseif kind == 'p' then
    redis.call('ZADD', KEYS[i], now + hold, member)
    if redis.call('PTTL', KEYS[i]) < keep then redis.call('PEXPIRE', KEYS[i], keep) end
  end
end
return {0, 0}
";

/// Settlement in one Lua script: `KEYS` are the places (`ARGV[3]` of them), then the token
/// buckets (`ARGV[4]` of them, the j-th with its rate in `ARGV[4 + j]`), then the day
/// counters. Removes the member `ARGV[1]` from each place's set, and takes `ARGV[2]` tokens
/// from each bucket (past the allowance if need be) and adds them to each day counter, which
/// expires a day after its day ends.
const SETTLE_SCRIPT: &str = r"
local member = ARGV[1]
local tokens = tonumber(ARGV[2])
local places = tonumber(ARGV[3])
local minutes = tonumber(ARGV[4])
for i = 1, places do redis.call('ZREM', KEYS[i], member) end
if tokens > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  for j = 1, minutes do
    local key = KEYS[places + j]
    local interval = math.floor(60000000 / tonumber(ARGV[4 + j]))
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local new = tat + interval * tokens
    redis.call('SET', key, string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1000)
  end
  for i = places + minutes + 1, #KEYS do
    redis.call('INCRBY', KEYS[i], tokens)
    redis.call('EXPIRE', KEYS[i], 172800)
  end
end
return 0
";

/// Withdraws an admission the gateway gave up waiting for, in one Lua script: `KEYS` are its
/// places' sets, then its withdrawal mark; removes the member `ARGV[1]` from each set and sets
/// the mark for `ARGV[2]` milliseconds, so the admission takes nothing if it runs after this.
/// Either order comes out the same: nothing held.
///
/// Why: Redis runs the scripts it has queued even when the gateway stopped waiting (a paused
/// or overloaded Redis answers after [`crate::shared::RESPONSE_TIMEOUT`]); each would take a
/// place that no request holds and nothing gives back until its hold time ends, refusing
/// the key with 429 for that long. A deadline checked by the admission script instead would
/// compare the gateway's clock with Redis's (`TIME`), and a skew between them would either
/// refuse good admissions or let late ones take places; a withdrawal needs no clock. The mark
/// makes the order of the two irrelevant, which matters because after a timeout the
/// connection may be replaced, and scripts on two connections run in no set order.
const CANCEL_SCRIPT: &str = r"
local member = ARGV[1]
for i = 1, #KEYS - 1 do redis.call('ZREM', KEYS[i], member) end
redis.call('SET', KEYS[#KEYS], '1', 'PX', ARGV[2])
return 0
";

/// Tries to withdraw one admission at most this many times (until Redis answers one).
const WITHDRAW_ATTEMPTS: u32 = 8;
/// The pause after a withdrawal's first failed try; it doubles up to [`WITHDRAW_MAX_PAUSE`],
/// so the tries span about half a minute.
const WITHDRAW_FIRST_PAUSE: Duration = Duration::from_millis(250);
const WITHDRAW_MAX_PAUSE: Duration = Duration::from_secs(8);
/// Withdrawals under way at most; past it (a long outage) an unanswered admission's places,
/// if it ever runs, expire with their hold time as before.
const MAX_WITHDRAWALS: usize = 1024;

/// The shared limiter: every instance pointed at the same Redis enforces one limit.
pub struct RedisLimiter {
    conn: crate::shared::Conn,
    /// For withdrawals, whose failures are not requests the outage met.
    quiet: crate::shared::Conn,
    admit: redis::Script,
    settle: redis::Script,
    namespace: String,
    /// This instance's name, which with a ticket makes a place's member unique across
    /// instances.
    instance: String,
    next_ticket: AtomicU64,
    withdrawals: Arc<AtomicUsize>,
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
            quiet: redis.conn_uncounted(),
            admit: redis::Script::new(ADMIT_SCRIPT),
            settle: redis::Script::new(SETTLE_SCRIPT),
            namespace: redis.namespace().to_owned(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            next_ticket: AtomicU64::new(1),
            withdrawals: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The mark that withdraws admission `ticket` ([`CANCEL_SCRIPT`]).
    fn withdrawn_key(&self, ticket: u64) -> String {
        format!("{}:withdrawn:{}", self.namespace, self.member(ticket))
    }

    fn key(&self, bucket: &str) -> String {
        format!("{}:{bucket}", self.namespace)
    }

    /// A day counter's key: the bucket's count for UTC day `day`.
    fn day_key(&self, bucket: &str, day: i64) -> String {
        format!("{}:{bucket}:day{day}", self.namespace)
    }

    /// The member naming the places of admission `ticket` in their sets.
    fn member(&self, ticket: u64) -> String {
        format!("{}:{ticket}", self.instance)
    }
}

impl RedisLimiter {
    /// How to withdraw admission `ticket` under `bounds`, if it takes places (a request a
    /// late admission takes from a rate stays taken: the client did send it).
    fn withdrawal(&self, bounds: &[Bound], ticket: u64, hold: Duration) -> Option<Withdrawal> {
        let places: Vec<String> = bounds
            .iter()
            .filter_map(|b| match b {
                Bound::Concurrency { bucket, .. } => Some(self.key(bucket)),
                _ => None,
            })
            .collect();
        if places.is_empty() {
            return None;
        }
        Some(Withdrawal {
            conn: self.quiet.clone(),
            places,
            mark: self.withdrawn_key(ticket),
            member: self.member(ticket),
            // Long enough for any admission still queued in Redis to find it.
            mark_ms: u64::try_from(hold.as_millis())
                .unwrap_or(u64::MAX)
                .max(1000),
            under_way: self.withdrawals.clone(),
        })
    }
}

/// An admission sent to Redis that nobody has had the answer of: dropped armed, it
/// withdraws the admission's places on a task of its own.
struct Unanswered(Option<Withdrawal>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.start();
        }
    }
}

/// The withdrawal of one admission's places ([`CANCEL_SCRIPT`]).
struct Withdrawal {
    conn: crate::shared::Conn,
    places: Vec<String>,
    mark: String,
    member: String,
    mark_ms: u64,
    under_way: Arc<AtomicUsize>,
}

impl Withdrawal {
    /// Sends the withdrawal on a task, tried until Redis answers it, [`WITHDRAW_ATTEMPTS`]
    /// times at most (each try is harmless after one that ran). Without a runtime, or past
    /// [`MAX_WITHDRAWALS`], nothing is sent: the places, if taken, expire with their hold time.
    fn start(self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.under_way.fetch_add(1, Ordering::AcqRel) >= MAX_WITHDRAWALS {
            self.under_way.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        rt.spawn(async move {
            let mut pause = WITHDRAW_FIRST_PAUSE;
            for _ in 0..WITHDRAW_ATTEMPTS {
                // `EVAL`, not `EVALSHA`: a script not loaded yet would make the first try, the
                // one queued right behind the admission, a `NOSCRIPT` that does nothing.
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(CANCEL_SCRIPT).arg(self.places.len() + 1);
                for key in &self.places {
                    cmd.arg(key);
                }
                cmd.arg(&self.mark).arg(&self.member).arg(self.mark_ms);
                let done: Result<u64, _> = cmd.query_async(&mut self.conn.clone()).await;
                if done.is_ok() {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(WITHDRAW_MAX_PAUSE);
            }
            self.under_way.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn admit(&self, bounds: &[Bound], hold: Duration) -> Result<u64, Refusal> {
        if bounds.is_empty() {
            return Ok(0);
        }
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (today, until_tomorrow) = utc_day();
        let mut call = self.admit.prepare_invoke();
        call.arg(u64::try_from(hold.as_micros()).unwrap_or(u64::MAX).max(1))
            .arg(self.member(ticket));
        for b in bounds {
            match b {
                Bound::Requests { bucket, per_minute } => {
                    call.key(self.key(bucket))
                        .arg("r")
                        .arg((*per_minute).max(1));
                }
                Bound::Tokens { bucket, per_minute } => {
                    call.key(self.key(bucket))
                        .arg("t")
                        .arg((*per_minute).max(1));
                }
                Bound::TokensPerDay { bucket, max } => {
                    call.key(self.day_key(bucket, today)).arg("d").arg(*max);
                }
                Bound::Concurrency { bucket, max } => {
                    call.key(self.key(bucket)).arg("p").arg(*max);
                }
            }
        }
        call.key(self.withdrawn_key(ticket));
        // Until Redis answers, the admission may run without anyone waiting for it (the call
        // timed out or failed, or the request was dropped): then its places are withdrawn.
        let mut unanswered = Unanswered(self.withdrawal(bounds, ticket, hold));
        let answer: Result<(i64, u64), _> = call.invoke_async(&mut self.conn.clone()).await;
        let Ok((index, wait)) = answer else {
            // Refused; the outage is logged once by the connection (`shared::RedisHealth`),
            // not per request.
            return Err(Refusal::unavailable(bounds));
        };
        unanswered.0 = None;
        if index < 0 {
            // Withdrawn before it ran: only an admission this instance gave up on is, so this
            // answer has no waiter; refused, in case.
            return Err(Refusal::unavailable(bounds));
        }
        let Some(bound) = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| bounds.get(i))
        else {
            return Ok(ticket);
        };
        let wait = match bound {
            Bound::Requests { .. } | Bound::Tokens { .. } => Duration::from_micros(wait),
            // The day's end by this instance's clock, as the day's counter is named by it.
            Bound::TokensPerDay { .. } => until_tomorrow,
            Bound::Concurrency { .. } => PLACE_WAIT,
        };
        Err(Refusal {
            limit: bound.limit(),
            why: Refused::RetryAfter(wait),
        })
    }

    async fn settle(&self, s: &Settlement) -> Result<(), Refused> {
        if s.is_empty() {
            return Ok(());
        }
        let (today, _) = utc_day();
        let charged = s.tokens > 0;
        let mut call = self.settle.prepare_invoke();
        call.arg(self.member(s.ticket))
            .arg(s.tokens)
            .arg(s.places.len())
            .arg(if charged { s.per_minute.len() } else { 0 });
        for bucket in &s.places {
            call.key(self.key(bucket));
        }
        if charged {
            for (bucket, per_minute) in &s.per_minute {
                call.key(self.key(bucket)).arg((*per_minute).max(1));
            }
            for bucket in &s.per_day {
                call.key(self.day_key(bucket, today));
            }
        }
        let done: Result<u64, _> = call.invoke_async(&mut self.conn.clone()).await;
        // A failure: the places expire with their hold time and the tokens go uncharged; the
        // outage is logged once by the connection (`shared::RedisHealth`), not per request.
        done.map(drop).map_err(|_| Refused::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(60);

    fn requests(bucket: &str, per_minute: u32) -> Bound {
        Bound::requests(bucket, per_minute)
    }

    fn tokens(bucket: &str, per_minute: u32) -> Bound {
        Bound::tokens(bucket, per_minute)
    }

    fn per_day(bucket: &str, max: u64) -> Bound {
        Bound::tokens_per_day(bucket, max)
    }

    fn places(bucket: &str, max: u32) -> Bound {
        Bound::concurrency(bucket, max)
    }

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
        let c2 = [places("c", 2)];
        let leave = |bounds: &[Bound]| Settlement::of(bounds.to_vec(), 0);
        assert_eq!(l.admit(&c2, HOLD).await, Ok(0));
        assert_eq!(l.admit(&c2, HOLD).await, Ok(0));
        assert_eq!(
            l.admit(&c2, HOLD).await,
            Err(Refusal {
                limit: Limit::Concurrency,
                why: Refused::RetryAfter(PLACE_WAIT)
            }),
            "third place refused"
        );
        assert_eq!(
            l.admit(&[places("d", 2)], HOLD).await,
            Ok(0),
            "buckets are independent"
        );
        assert_eq!(l.settle(&leave(&c2)).await, Ok(()));
        assert_eq!(l.admit(&c2, HOLD).await, Ok(0), "a freed place is reused");
        for _ in 0..3 {
            assert_eq!(l.settle(&leave(&c2)).await, Ok(()));
        }
        let c1 = [places("c", 1)];
        assert_eq!(l.admit(&c1, HOLD).await, Ok(0), "never below zero");
        assert!(l.admit(&c1, HOLD).await.is_err());
    }

    #[tokio::test]
    async fn day_counters_add_up_per_bucket_and_refuse_until_tomorrow() {
        let l = InProcessLimiter::new();
        let a = [per_day("a", 100)];
        let charge =
            |bounds: &[Bound], tokens: u64| Settlement::of(bounds.to_vec(), 0).charging(tokens);
        assert_eq!(l.admit(&a, HOLD).await, Ok(0));
        assert_eq!(l.settle(&charge(&a, 70)).await, Ok(()));
        assert_eq!(l.admit(&a, HOLD).await, Ok(0), "70 of 100 used");
        assert_eq!(l.settle(&charge(&a, 30)).await, Ok(()));
        let Err(Refusal {
            limit: Limit::TokensPerDay,
            why: Refused::RetryAfter(wait),
        }) = l.admit(&a, HOLD).await
        else {
            panic!("a spent day refuses");
        };
        assert!(
            wait.abs_diff(utc_day().1) <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(l.admit(&[per_day("b", 1)], HOLD).await, Ok(0));
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

    /// Admission is all or nothing, and a refusal names the first bound, in the order given,
    /// that refused.
    #[test]
    fn a_refused_admission_takes_nothing_and_names_the_first_refusing_bound() {
        let l = InProcessLimiter::new();
        let t0 = Instant::now();
        // One place, taken.
        assert_eq!(l.admit_at(&[places("p", 1)], t0), Ok(()));
        // Refused for the place: neither the request rates nor another place were taken.
        let all = [
            requests("key", 1),
            requests("tenant", 1),
            tokens("tpm", 60),
            per_day("day", 10),
            places("q", 1),
            places("p", 1),
        ];
        for _ in 0..3 {
            assert_eq!(
                l.admit_at(&all, t0).map_err(|r| r.limit),
                Err(Limit::Concurrency)
            );
        }
        assert_eq!(
            l.admit_at(&[requests("key", 1), requests("tenant", 1)], t0),
            Ok(()),
            "the rates' one request a minute each is still there"
        );
        assert_eq!(l.admit_at(&[places("q", 1)], t0), Ok(()), "q's place too");
        // The first refusing bound names the refusal: here the key's rate, though the place
        // would refuse too.
        let Err(r) = l.admit_at(&[requests("key", 1), places("p", 1)], t0) else {
            panic!("both refuse");
        };
        assert_eq!(r.limit, Limit::Requests);
        let Refused::RetryAfter(wait) = r.why else {
            panic!("{r:?}");
        };
        assert!(wait.abs_diff(Duration::from_secs(60)) < Duration::from_millis(1));
        // Tokens a minute are checked, not taken.
        for _ in 0..5 {
            assert_eq!(l.admit_at(&[tokens("tpm", 1)], t0), Ok(()));
        }
    }

    /// A limiter like Redis: nothing is settled at once, only through an async call that
    /// needs a Tokio runtime (its timer, here; Redis its I/O).
    struct Remote(InProcessLimiter);

    #[async_trait::async_trait]
    impl RateLimiter for Remote {
        async fn admit(&self, bounds: &[Bound], hold: Duration) -> Result<u64, Refusal> {
            self.0.admit(bounds, hold).await
        }
        async fn settle(&self, settlement: &Settlement) -> Result<(), Refused> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0.settle(settlement).await
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
        let place = [places("inflight:k", 1)];
        let lease = |day: bool| {
            let mut bounds = place.to_vec();
            if day {
                bounds.push(per_day("day:k", 42));
            }
            let ticket = rt.block_on(limiter.admit(&bounds, HOLD)).unwrap();
            Lease::admitted(limiter.clone(), bounds.clone(), ticket)
        };
        // Dropped unsettled, on a plain thread.
        let dropped = lease(false);
        std::thread::spawn(move || drop(dropped)).join().unwrap();
        assert_eq!(
            rt.block_on(limiter.admit(&place, HOLD)),
            Ok(0),
            "the place came back"
        );
        rt.block_on(limiter.settle(&Settlement::of(place.clone(), 0)))
            .unwrap();
        // Settled with its tokens, on a plain thread.
        let settled = lease(true);
        std::thread::spawn(move || drop(settled.settle(42)))
            .join()
            .unwrap();
        assert_eq!(rt.block_on(limiter.admit(&place, HOLD)), Ok(0));
        assert!(
            rt.block_on(limiter.admit(&[per_day("day:k", 42)], HOLD))
                .is_err(),
            "the 42 tokens were charged"
        );
    }

    /// A lease on a remote limiter is settled on a task the answer waits for: when the wait
    /// ends, the place is free and the tokens are charged (a client's next request, at any
    /// instance, sees both). Dropping the wait does not stop the settlement.
    #[tokio::test]
    async fn a_settlement_waited_for_is_done_and_one_dropped_still_finishes() {
        let limiter = Arc::new(Remote(InProcessLimiter::new()));
        let bounds = [places("p", 1), per_day("d", 10)];
        let lease = Lease::admitted(limiter.clone(), bounds.clone(), 0);
        let settled = lease.settle(10);
        assert!(!settled.is_done(), "a remote limiter settles on a task");
        settled.await;
        assert_eq!(
            limiter.admit(&bounds, HOLD).await.map_err(|r| r.limit),
            Err(Limit::TokensPerDay),
            "charged when the wait ends"
        );
        let ticket = limiter.admit(&[places("p", 1)], HOLD).await;
        assert_eq!(ticket, Ok(0), "and the place was given back");
        drop(Lease::admitted(limiter.clone(), [places("p", 1)], 0).settle(0));
        eventually_admitted(&*limiter, &[places("p", 1)]).await;
    }

    async fn eventually_admitted(l: &dyn RateLimiter, bounds: &[Bound]) {
        for _ in 0..1000 {
            if l.admit(bounds, HOLD).await.is_ok() {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never admitted");
    }
}
