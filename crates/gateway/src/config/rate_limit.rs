//! `[rate_limit]`: request rates, token quotas and concurrency, per key and per tenant.

use serde::{Deserialize, Serialize};

use super::{ConfigError, words};

// The defaults of `[rate_limit]`, one per field; the doc comments of [`RawRateLimit`] quote
// them.

/// Default of `rate_limit.requests_per_minute`.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 600;
/// Default of `rate_limit.tenant_requests_per_minute`: off.
pub const DEFAULT_TENANT_REQUESTS_PER_MINUTE: u32 = 0;
/// Defaults of the per-key quotas: the token quotas off, and `concurrent_requests` 32 where no
/// embedded backend is configured (else [`default_concurrency`]).
pub const DEFAULT_KEY_QUOTAS: QuotaSet = QuotaSet {
    tokens_per_minute: 0,
    tokens_per_day: 0,
    concurrent_requests: 32,
};
/// Defaults of the per-tenant quotas: all off.
pub const DEFAULT_TENANT_QUOTAS: QuotaSet = QuotaSet {
    tokens_per_minute: 0,
    tokens_per_day: 0,
    concurrent_requests: 0,
};
/// Default of `rate_limit.redis_namespace`.
pub const DEFAULT_REDIS_NAMESPACE: &str = "wardgate:rl";

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Requests per minute per API key (or token subject); 0 turns the limit off. Default 600.
    pub requests_per_minute: Option<u32>,
    /// Requests per minute per tenant, all its keys together; 0 (the default) turns it off.
    pub tenant_requests_per_minute: Option<u32>,
    /// Tokens (prompt and completion) per minute per key; 0 (the default) turns it off.
    pub tokens_per_minute: Option<u32>,
    /// Tokens per minute per tenant; 0 (the default) turns it off.
    pub tenant_tokens_per_minute: Option<u32>,
    /// Tokens per UTC day per key; 0 (the default) turns the budget off.
    pub tokens_per_day: Option<u64>,
    /// Tokens per UTC day per tenant; 0 (the default) turns the budget off.
    pub tenant_tokens_per_day: Option<u64>,
    /// Model requests one key may have in flight at once (streams included). Default: half
    /// the in-process engine's `engine.slots` where an embedded backend is configured, else 32
    /// (set it below the remote engine's slot count); 0 turns the limit off.
    pub concurrent_requests: Option<u32>,
    /// Model requests one tenant may have in flight at once; 0 (the default) turns it off.
    pub tenant_concurrent_requests: Option<u32>,
    /// `memory` (default: this process only) or `redis` (one limit across every instance that
    /// shares the Redis; through it they also share failed-authentication lockouts, announce
    /// key revocations and rotations to each other, and `wardgate llm` replicas share their
    /// replay cache).
    pub backend: Option<RawLimiterKind>,
    /// The Redis URL for `backend = "redis"`, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel wardgate uses (instances that act as one use the
    /// same). Default `wardgate:rl`.
    pub redis_namespace: Option<String>,
}

/// `rate_limit.backend` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum RawLimiterKind {
    Memory,
    Redis,
}

words!(
    RawLimiterKind,
    "`{}` is not memory or redis",
    Memory = "memory",
    Redis = "redis",
);

/// Where rate-limit state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimiterBackend {
    Memory,
    Redis { url: String, namespace: String },
}

/// Usage bounds for one key or one tenant; 0 turns a bound off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaSet {
    pub tokens_per_minute: u32,
    pub tokens_per_day: u64,
    pub concurrent_requests: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    pub key: QuotaSet,
    pub tenant: QuotaSet,
}

/// `[rate_limit]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Per key; 0: off.
    pub requests_per_minute: u32,
    /// Per tenant; 0: off.
    pub tenant_requests_per_minute: u32,
    pub quotas: Quotas,
    pub limiter_backend: LimiterBackend,
}

impl QuotaSet {
    /// Whether every bound of the set is off.
    fn is_off(&self) -> bool {
        *self == QuotaSet::default()
    }
}

impl super::Config {
    /// Whether model requests are admitted only through the shared limiter: Redis is its
    /// backend and some rate limit or quota is on. Such requests are refused (503) while
    /// Redis is down, so `/ready` is false then; otherwise Redis carries only what falls back
    /// to each instance alone (lockout, the revocation broadcast, `wardgate llm`'s nonces).
    pub fn admission_needs_redis(&self) -> bool {
        matches!(self.limiter_backend, LimiterBackend::Redis { .. })
            && (self.requests_per_minute > 0
                || self.tenant_requests_per_minute > 0
                || !self.quotas.key.is_off()
                || !self.quotas.tenant.is_off())
    }
}

/// The per-key concurrency when `rate_limit.concurrent_requests` is unset. One key should not
/// hold every slot of the in-process engine: with an embedded backend (`embedded_slots`, its
/// `engine.slots`) it may have half of them in flight, at most the 32 it is otherwise (remote
/// engines' slots are not known here; set it below theirs).
pub fn default_concurrency(embedded_slots: Option<u32>) -> u32 {
    let remote = DEFAULT_KEY_QUOTAS.concurrent_requests;
    embedded_slots.map_or(remote, |slots| (slots / 2).clamp(1, remote))
}

/// `[rate_limit]`, validated; `embedded_slots`: the in-process engine's slots where an embedded
/// backend is configured (the per-key concurrency's default depends on them).
pub(super) fn rate_limit(
    r: &RawRateLimit,
    embedded_slots: Option<u32>,
) -> Result<RateLimitSettings, ConfigError> {
    Ok(RateLimitSettings {
        requests_per_minute: r.requests_per_minute.unwrap_or(DEFAULT_REQUESTS_PER_MINUTE),
        tenant_requests_per_minute: r
            .tenant_requests_per_minute
            .unwrap_or(DEFAULT_TENANT_REQUESTS_PER_MINUTE),
        quotas: quotas(r, default_concurrency(embedded_slots)),
        limiter_backend: limiter_backend(r)?,
    })
}

/// Per-key and per-tenant quotas; `default_concurrency` is the per-key concurrency when unset.
fn quotas(r: &RawRateLimit, default_concurrency: u32) -> Quotas {
    let (k, t) = (DEFAULT_KEY_QUOTAS, DEFAULT_TENANT_QUOTAS);
    Quotas {
        key: QuotaSet {
            tokens_per_minute: r.tokens_per_minute.unwrap_or(k.tokens_per_minute),
            tokens_per_day: r.tokens_per_day.unwrap_or(k.tokens_per_day),
            concurrent_requests: r.concurrent_requests.unwrap_or(default_concurrency),
        },
        tenant: QuotaSet {
            tokens_per_minute: r.tenant_tokens_per_minute.unwrap_or(t.tokens_per_minute),
            tokens_per_day: r.tenant_tokens_per_day.unwrap_or(t.tokens_per_day),
            concurrent_requests: r
                .tenant_concurrent_requests
                .unwrap_or(t.concurrent_requests),
        },
    }
}

/// Where the limiter keeps its state.
fn limiter_backend(r: &RawRateLimit) -> Result<LimiterBackend, ConfigError> {
    Ok(match r.backend {
        None | Some(RawLimiterKind::Memory) => LimiterBackend::Memory,
        Some(RawLimiterKind::Redis) => {
            let url = r.redis_url.clone().ok_or_else(|| {
                ConfigError::new(
                    "rate_limit.redis_url",
                    "required with backend = \"redis\" (or set WARDGATE_REDIS_URL)",
                )
            })?;
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    "rate_limit.redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
            LimiterBackend::Redis {
                url,
                namespace: r
                    .redis_namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REDIS_NAMESPACE.to_owned()),
            }
        }
    })
}
