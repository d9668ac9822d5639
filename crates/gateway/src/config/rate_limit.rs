//! `[rate_limit]`: request rates, token quotas and concurrency, per key and per tenant.

use serde::{Deserialize, Serialize};

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
    pub backend: Option<String>,
    /// The Redis URL for `backend = "redis"`, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Prefix of the limiter's Redis keys. Default `wardgate:rl`.
    pub redis_namespace: Option<String>,
}

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
