//! `[limits]`: bounds on what one request may ask for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HumanDuration, words};

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

/// The default of `limits.max_json_values`: far above any real request (a 4 MiB prompt is one
/// value), far below what makes parsing expensive.
pub const DEFAULT_MAX_JSON_VALUES: usize = 250_000;

/// Upper bound of `limits.max_client_keep_alive`.
pub(super) const MAX_CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);
