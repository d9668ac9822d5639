//! `[limits]`: bounds on what one request may ask for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration, bounded, duration_or_off, positive, words};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body in bytes, chunked bodies included. Default 4 MiB.
    pub max_body_bytes: Option<usize>,
    /// Most messages in one chat request. Default 256.
    pub max_messages: Option<usize>,
    /// Cap on `max_tokens` / `max_completion_tokens` / `num_predict`. Default 4096.
    pub max_output_tokens: Option<u32>,
    /// `reject` (default: 400) or `clamp` (lower to the cap, with a response header saying so)
    /// when a request asks for more than a cap.
    pub over_cap: Option<OverCap>,
    /// Context window of models that do not set one. Default 4096 tokens.
    pub default_context_window: Option<u32>,
    /// Most inputs in one embeddings request. Default 256.
    pub max_embedding_inputs: Option<usize>,
    /// Most JSON values (scalars, arrays, objects) in one request body, counted before it is
    /// parsed. Default 250000, at most 10000000.
    pub max_json_values: Option<usize>,
    /// The longest Ollama `keep_alive` a client that is not an operator (an admin of the
    /// operator tenant) may set. `0s` (the default) ignores `keep_alive` from such clients, so
    /// no tenant can unload (`0`) or pin (`-1`) a model shared with others; above zero, their
    /// values are clamped to it and `0` and negative values are still ignored. At most `24h`.
    pub max_client_keep_alive: Option<HumanDuration>,
    /// A key's 429s (rate, token and concurrency limits) within this window are audited as
    /// one event (the first) plus one `suppressed: N` summary; `0s` audits every refusal on
    /// its own. Default `1m`, at most `1h`. `WARDGATE_REFUSAL_AUDIT_WINDOW`.
    pub refusal_audit_window: Option<HumanDuration>,
}

/// `limits.over_cap`: what a request asking for more than a cap gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum OverCap {
    Reject,
    Clamp,
}

words!(
    OverCap,
    "`{}` is not `reject` or `clamp`",
    Reject = "reject",
    Clamp = "clamp"
);

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_messages: usize,
    pub max_output_tokens: u32,
    pub over_cap: OverCap,
    pub default_context_window: u32,
    pub max_embedding_inputs: usize,
    pub max_json_values: usize,
    /// Zero: `keep_alive` from non-operators is ignored.
    pub max_client_keep_alive: Duration,
    /// Zero: every 429 is audited on its own.
    pub refusal_audit_window: Duration,
}

// The defaults of `[limits]`, one per field; the doc comments of [`RawLimits`] quote them.

/// Default of `limits.max_body_bytes`: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
/// Default of `limits.max_messages`.
pub const DEFAULT_MAX_MESSAGES: usize = 256;
/// Default of `limits.max_output_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;
/// Default of `limits.over_cap`.
pub const DEFAULT_OVER_CAP: OverCap = OverCap::Reject;
/// Default of `limits.default_context_window`.
pub const DEFAULT_CONTEXT_WINDOW: u32 = 4096;
/// Default of `limits.max_embedding_inputs`.
pub const DEFAULT_MAX_EMBEDDING_INPUTS: usize = 256;
/// The default of `limits.max_json_values`: far above any real request (a 4 MiB prompt is one
/// value), far below what makes parsing expensive.
pub const DEFAULT_MAX_JSON_VALUES: usize = 250_000;
/// Default of `limits.max_client_keep_alive`: clients' `keep_alive` is ignored.
pub const DEFAULT_MAX_CLIENT_KEEP_ALIVE: Duration = Duration::ZERO;
/// Default of `limits.refusal_audit_window`.
pub const DEFAULT_REFUSAL_AUDIT_WINDOW: Duration = Duration::from_secs(60);

/// Upper bound of `limits.max_client_keep_alive`.
const MAX_CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);

/// `[limits]`, validated: each count above zero, each bound at most its maximum.
pub(super) fn limits(l: &RawLimits) -> Result<Limits, ConfigError> {
    Ok(Limits {
        max_body_bytes: positive(
            "limits.max_body_bytes",
            l.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        )?,
        max_messages: positive("limits.max_messages", l.max_messages, DEFAULT_MAX_MESSAGES)?,
        max_output_tokens: positive(
            "limits.max_output_tokens",
            l.max_output_tokens.map(|v| v as usize),
            DEFAULT_MAX_OUTPUT_TOKENS as usize,
        )? as u32,
        over_cap: l.over_cap.unwrap_or(DEFAULT_OVER_CAP),
        default_context_window: positive(
            "limits.default_context_window",
            l.default_context_window.map(|v| v as usize),
            DEFAULT_CONTEXT_WINDOW as usize,
        )? as u32,
        max_embedding_inputs: positive(
            "limits.max_embedding_inputs",
            l.max_embedding_inputs,
            DEFAULT_MAX_EMBEDDING_INPUTS,
        )?,
        max_json_values: bounded(
            "limits.max_json_values",
            l.max_json_values,
            DEFAULT_MAX_JSON_VALUES,
            10_000_000,
        )?,
        max_client_keep_alive: {
            let key = "limits.max_client_keep_alive";
            let d = duration_or_off(
                l.max_client_keep_alive.as_deref(),
                DEFAULT_MAX_CLIENT_KEEP_ALIVE,
            );
            if d > MAX_CLIENT_KEEP_ALIVE {
                return Err(ConfigError::new(key, "must be at most 24h"));
            }
            d
        },
        refusal_audit_window: duration_or_off(
            l.refusal_audit_window.as_deref(),
            DEFAULT_REFUSAL_AUDIT_WINDOW,
        ),
    })
}
