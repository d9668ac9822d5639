//! `[[backends]]`, `[[models]]`, `[health]` and `[circuit_breaker]`: model servers and the
//! public model names routed to them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_backends::BackendKind;

use super::HumanDuration;

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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Unique name, used by model chains.
    pub name: String,
    /// `ollama`, `openai`, or `embedded` (the in-process engine, no URL).
    pub kind: String,
    /// `ollama`: server root (`http://host:11434`); `openai`: API base with `/v1`.
    pub url: Option<String>,
    /// Name of an environment variable holding the HMAC secret to sign requests to a
    /// `wardgate llm` backend (`ollama` kind).
    pub secret_env: Option<String>,
    /// Name of an environment variable holding a bearer key the backend wants (never the key
    /// itself: secrets do not live in config files).
    pub api_key_env: Option<String>,
    /// PEM CA certificates that alone are trusted for this backend's `https://` URL (a private
    /// CA for the private hop). Unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Expose the backend's own models under their names, refreshed periodically.
    #[serde(default)]
    pub discover: bool,
    /// How often discovery refreshes. Default `60s`.
    pub discover_interval: Option<HumanDuration>,
    /// TCP connect limit. Default `2s`.
    pub connect_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Public name clients use.
    pub name: String,
    /// Other public names for the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Tokens the model takes, prompt and answer together. Default `limits.default_context_window`.
    pub context_window: Option<u32>,
    /// Ordered (backend, upstream model) links; later ones are fallbacks.
    pub chain: Vec<RawLink>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub backend: String,
    pub model: String,
}

/// What a backend is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendType {
    Http(BackendKind),
    Embedded,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendType,
    /// Empty for the embedded engine.
    pub url: String,
    pub secret_env: Option<String>,
    pub api_key_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub discover: bool,
    pub discover_interval: Duration,
    pub connect_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub aliases: Vec<String>,
    pub context_window: u32,
    pub chain: Vec<(String, String)>,
}
