//! `[health]` and `[circuit_breaker]`: how backends are probed, and when one is taken out of
//! rotation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration, duration};

/// Default of `health.interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default of `health.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default of `circuit_breaker.failure_threshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default of `circuit_breaker.cooldown`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);
/// Default of `circuit_breaker.busy_threshold`.
pub const DEFAULT_BUSY_THRESHOLD: u32 = wardgate_backends::breaker::DEFAULT_BUSY_THRESHOLD;
/// Default of `circuit_breaker.busy_cooldown`.
pub const DEFAULT_BUSY_COOLDOWN: Duration = wardgate_backends::breaker::DEFAULT_BUSY_COOLDOWN;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// How often backends are probed. Default `10s`.
    pub interval: Option<HumanDuration>,
    /// Limit on one probe. Default `2s`.
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Consecutive failures that take a backend out of rotation: failed requests (refused,
    /// 5xx, no first token within `server.first_token_timeout`) or failed health probes,
    /// each counted on its own. Default 3.
    pub failure_threshold: Option<u32>,
    /// How long it stays out before a trial request. Taken out by failed requests, only that
    /// trial's answer brings it back (a passing probe does not); taken out by failed probes, a
    /// passing probe does. Default `10s`.
    pub cooldown: Option<HumanDuration>,
    /// Consecutive busy answers (503) after which a pool's replica is tried after the others,
    /// its conversations going to their next replica meanwhile. Default 2.
    pub busy_threshold: Option<u32>,
    /// How long a replica that keeps answering busy is tried last. Default `2s`.
    pub busy_cooldown: Option<HumanDuration>,
}

/// `[health]`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    pub interval: Duration,
    pub timeout: Duration,
}

/// `[circuit_breaker]`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub cooldown: Duration,
    pub busy_threshold: u32,
    pub busy_cooldown: Duration,
}

/// `[health]`, validated: both durations above zero.
pub(super) fn health(raw: &RawHealth) -> Result<HealthSettings, ConfigError> {
    Ok(HealthSettings {
        interval: duration("health.interval", raw.interval.as_deref(), DEFAULT_INTERVAL)?,
        timeout: duration("health.timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT)?,
    })
}

/// `[circuit_breaker]`, validated: the thresholds and the cooldowns above zero.
pub(super) fn breaker(raw: &RawBreaker) -> Result<BreakerSettings, ConfigError> {
    Ok(BreakerSettings {
        failure_threshold: above_zero(
            "circuit_breaker.failure_threshold",
            raw.failure_threshold,
            DEFAULT_FAILURE_THRESHOLD,
        )?,
        cooldown: duration(
            "circuit_breaker.cooldown",
            raw.cooldown.as_deref(),
            DEFAULT_COOLDOWN,
        )?,
        busy_threshold: above_zero(
            "circuit_breaker.busy_threshold",
            raw.busy_threshold,
            DEFAULT_BUSY_THRESHOLD,
        )?,
        busy_cooldown: duration(
            "circuit_breaker.busy_cooldown",
            raw.busy_cooldown.as_deref(),
            DEFAULT_BUSY_COOLDOWN,
        )?,
    })
}

/// A count that must be above zero, or its default.
fn above_zero(key: &str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::new(key, "must be greater than zero")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}
