//! `[[backends]]` and `[[models]]`: model servers and the public model names routed to them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_backends::BackendKind;

use super::{ConfigError, HumanDuration, duration, valid_model_name, words};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Unique name, used by model chains.
    pub name: String,
    /// `ollama`, `openai`, or `embedded` (the in-process engine, no URL).
    pub kind: RawBackendKind,
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

/// `backends[].kind` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum RawBackendKind {
    Ollama,
    Openai,
    Embedded,
}

words!(
    RawBackendKind,
    "`{}` is not `ollama`, `openai` or `embedded`",
    Ollama = "ollama",
    Openai = "openai",
    Embedded = "embedded",
);

/// Default of `backends[].discover_interval`.
const DEFAULT_DISCOVER_INTERVAL: Duration = Duration::from_secs(60);
/// Default of `backends[].connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `[[backends]]`, validated, with their names; none configured: the embedded engine as
/// `default`.
pub(super) fn backends(
    raw: Vec<RawBackend>,
) -> Result<(Vec<BackendConfig>, HashSet<String>), ConfigError> {
    let mut backends = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (i, b) in raw.into_iter().enumerate() {
        let key = |f: &str| format!("backends[{i}].{f}");
        if b.name.is_empty()
            || b.name.len() > 64
            || !b
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(ConfigError::new(
                key("name"),
                "must be 1-64 letters, digits, '-' or '_'",
            ));
        }
        if !names.insert(b.name.clone()) {
            return Err(ConfigError::new(
                key("name"),
                format!("backend `{}` is defined twice", b.name),
            ));
        }
        let kind = match b.kind {
            RawBackendKind::Ollama => BackendType::Http(BackendKind::Ollama),
            RawBackendKind::Openai => BackendType::Http(BackendKind::Openai),
            RawBackendKind::Embedded => BackendType::Embedded,
        };
        let url = match (kind, b.url) {
            (BackendType::Embedded, None) => String::new(),
            (BackendType::Embedded, Some(_)) => {
                return Err(ConfigError::new(
                    key("url"),
                    "an embedded backend has no URL",
                ));
            }
            (BackendType::Http(_), None) => {
                return Err(ConfigError::new(
                    key("url"),
                    "required for ollama and openai backends",
                ));
            }
            (BackendType::Http(_), Some(u)) => {
                if !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.len() <= "http://".len()
                {
                    return Err(ConfigError::new(
                        key("url"),
                        format!("`{u}` is not an http:// or https:// URL"),
                    ));
                }
                u.trim_end_matches('/').to_owned()
            }
        };
        if b.ca_file.is_some() && !url.starts_with("https://") {
            return Err(ConfigError::new(
                key("ca_file"),
                "a CA file is for an https:// backend URL",
            ));
        }
        if b.secret_env.is_some() && kind != BackendType::Http(BackendKind::Ollama) {
            return Err(ConfigError::new(
                key("secret_env"),
                "request signing is for `ollama`-kind backends (wardgate llm)",
            ));
        }
        backends.push(BackendConfig {
            name: b.name,
            kind,
            url,
            secret_env: b.secret_env,
            api_key_env: b.api_key_env,
            ca_file: b.ca_file,
            discover: b.discover,
            discover_interval: duration(
                &key("discover_interval"),
                b.discover_interval.as_deref(),
                DEFAULT_DISCOVER_INTERVAL,
            )?,
            connect_timeout: duration(
                &key("connect_timeout"),
                b.connect_timeout.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
            )?,
        });
    }
    if backends.is_empty() {
        // The embedded default: the in-process engine serving the model store.
        names.insert("default".to_owned());
        backends.push(BackendConfig {
            name: "default".to_owned(),
            kind: BackendType::Embedded,
            url: String::new(),
            secret_env: None,
            api_key_env: None,
            ca_file: None,
            discover: true,
            discover_interval: DEFAULT_DISCOVER_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        });
    }
    if backends
        .iter()
        .filter(|b| b.kind == BackendType::Embedded)
        .count()
        > 1
    {
        return Err(ConfigError::new(
            "backends",
            "at most one embedded backend: the in-process engine serves all local models",
        ));
    }
    Ok((backends, names))
}

/// `[[models]]`, validated: public names unique and well-formed, every link to a configured
/// backend.
pub(super) fn models(
    raw: Vec<RawModel>,
    backends: &HashSet<String>,
    default_context_window: u32,
) -> Result<Vec<ModelConfig>, ConfigError> {
    let mut models = Vec::with_capacity(raw.len());
    let mut public = HashSet::new();
    for (i, m) in raw.into_iter().enumerate() {
        for (j, n) in std::iter::once(&m.name).chain(&m.aliases).enumerate() {
            let k = if j == 0 {
                format!("models[{i}].name")
            } else {
                format!("models[{i}].aliases[{}]", j - 1)
            };
            if !valid_model_name(n) {
                return Err(ConfigError::new(
                    k,
                    format!("`{n}` is not a valid model name (letters, digits, `._:/-`)"),
                ));
            }
            if !public.insert(n.clone()) {
                return Err(ConfigError::new(k, format!("`{n}` is used twice")));
            }
        }
        if m.chain.is_empty() {
            return Err(ConfigError::new(
                format!("models[{i}].chain"),
                "needs at least one { backend, model } link",
            ));
        }
        let mut chain = Vec::with_capacity(m.chain.len());
        for (j, link) in m.chain.into_iter().enumerate() {
            if !backends.contains(&link.backend) {
                return Err(ConfigError::new(
                    format!("models[{i}].chain[{j}].backend"),
                    format!("backend `{}` is not configured", link.backend),
                ));
            }
            if link.model.is_empty() {
                return Err(ConfigError::new(
                    format!("models[{i}].chain[{j}].model"),
                    "must not be empty",
                ));
            }
            chain.push((link.backend, link.model));
        }
        let context_window = match m.context_window {
            Some(0) => {
                return Err(ConfigError::new(
                    format!("models[{i}].context_window"),
                    "must be greater than zero",
                ));
            }
            Some(c) => c,
            None => default_context_window,
        };
        models.push(ModelConfig {
            name: m.name,
            aliases: m.aliases,
            context_window,
            chain,
        });
    }
    Ok(models)
}
