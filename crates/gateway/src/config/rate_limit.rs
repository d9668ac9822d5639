//! `[rate_limit]`: request rates, token quotas and concurrency, per key and per tenant.

use serde::{Deserialize, Serialize};

use super::{ConfigError, words};

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
    /// shares the Redis).
    pub backend: Option<RawLimiterKind>,
    /// The Redis URL for `backend = "redis"`, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Prefix of the limiter's Redis keys. Default `wardgate:rl`.
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

/// Per-key and per-tenant quotas; `default_concurrency` is the per-key concurrency when unset
/// (it depends on the embedded engine's slots).
pub(super) fn quotas(r: &RawRateLimit, default_concurrency: u32) -> Quotas {
    Quotas {
        key: QuotaSet {
            tokens_per_minute: r.tokens_per_minute.unwrap_or(0),
            tokens_per_day: r.tokens_per_day.unwrap_or(0),
            concurrent_requests: r.concurrent_requests.unwrap_or(default_concurrency),
        },
        tenant: QuotaSet {
            tokens_per_minute: r.tenant_tokens_per_minute.unwrap_or(0),
            tokens_per_day: r.tenant_tokens_per_day.unwrap_or(0),
            concurrent_requests: r.tenant_concurrent_requests.unwrap_or(0),
        },
    }
}

/// Where the limiter keeps its state.
pub(super) fn limiter_backend(r: &RawRateLimit) -> Result<LimiterBackend, ConfigError> {
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
                    .unwrap_or_else(|| "wardgate:rl".to_owned()),
            }
        }
    })
}
