//! `[llm]`: `wardgate llm`, the private model service.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `wardgate llm`, the private model service (its address, secret and TLS are environment
/// variables: `WARDGATE_LLM_*`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    /// The most signed requests a second the service is sized for; with the 30 s signature
    /// skew it sizes the replay (nonce) cache. Past it the cache forgets its oldest unexpired
    /// nonces (logged) rather than refuse requests. Default 2000, from 1 to 50000.
    /// `WARDGATE_LLM_MAX_REQUEST_RATE` overrides it.
    pub max_request_rate: Option<u32>,
}

/// `wardgate llm`'s own settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmSettings {
    /// Signed requests a second the replay cache is sized for.
    pub max_request_rate: u32,
}

impl LlmSettings {
    pub const DEFAULT_MAX_REQUEST_RATE: u32 = 2000;
    pub const MAX_MAX_REQUEST_RATE: u32 = 50_000;

    /// Nonces the replay cache holds: the rate times the window a nonce is remembered for.
    pub fn replay_cache_size(&self) -> usize {
        wardgate_api::signing::replay_cache_size(
            wardgate_api::signing::DEFAULT_SKEW_SECS,
            self.max_request_rate,
        )
    }
}

/// `[llm]`, validated.
pub(super) fn llm(raw: &RawLlm) -> Result<LlmSettings, ConfigError> {
    Ok(LlmSettings {
        max_request_rate: match raw.max_request_rate {
            None => LlmSettings::DEFAULT_MAX_REQUEST_RATE,
            Some(n) if (1..=LlmSettings::MAX_MAX_REQUEST_RATE).contains(&n) => n,
            Some(_) => {
                return Err(ConfigError::new(
                    "llm.max_request_rate",
                    format!(
                        "must be from 1 to {} signed requests a second",
                        LlmSettings::MAX_MAX_REQUEST_RATE
                    ),
                ));
            }
        },
    })
}
