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
    /// Consecutive failures that take a backend out of rotation. Default 3.
    pub failure_threshold: Option<u32>,
    /// How long it stays out before a trial request. Default `10s`.
    pub cooldown: Option<HumanDuration>,
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
}

/// `[health]`, validated: both durations above zero.
pub(super) fn health(raw: &RawHealth) -> Result<HealthSettings, ConfigError> {
    Ok(HealthSettings {
        interval: duration("health.interval", raw.interval.as_deref(), DEFAULT_INTERVAL)?,
        timeout: duration("health.timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT)?,
    })
}

/// `[circuit_breaker]`, validated: the threshold and the cooldown above zero.
pub(super) fn breaker(raw: &RawBreaker) -> Result<BreakerSettings, ConfigError> {
    Ok(BreakerSettings {
        failure_threshold: match raw.failure_threshold {
            Some(0) => {
                return Err(ConfigError::new(
                    "circuit_breaker.failure_threshold",
                    "must be greater than zero",
                ));
            }
            Some(v) => v,
            None => DEFAULT_FAILURE_THRESHOLD,
        },
        cooldown: duration(
            "circuit_breaker.cooldown",
            raw.cooldown.as_deref(),
            DEFAULT_COOLDOWN,
        )?,
    })
}
