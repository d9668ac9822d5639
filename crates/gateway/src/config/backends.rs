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
    /// Instead of `url`: the URLs of several equal replicas serving the same models (a pool).
    /// Requests are balanced across them (least outstanding of two random choices, the turns
    /// of one conversation kept on one replica); a busy or unreachable replica passes the
    /// request to another before the model's next chain link is tried.
    pub urls: Option<Vec<String>>,
    /// For a pool: how far above the pool's average of outstanding requests (plus one) a
    /// conversation's replica may be before a turn goes to a less loaded one: 0.25 is 25 %.
    /// Default `0.25`.
    pub affinity_load_factor: Option<f64>,
    /// For a pool: how many of its replicas one request may wait the whole first-token limit
    /// on (`server.first_token_timeout`) before it moves on to the model's next chain link.
    /// Replicas that fail at once (busy, refused, 5xx) do not count; on a chain's last link the
    /// rest of the pool is still tried within the request deadline. Default 1, at most 64.
    pub silent_attempts: Option<u32>,
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
    /// One URL for a single server, several for a pool of replicas; none for the embedded
    /// engine.
    pub urls: Vec<String>,
    /// See [`RawBackend::affinity_load_factor`].
    pub affinity_load_factor: f64,
    /// See [`RawBackend::silent_attempts`].
    pub silent_attempts: u32,
    pub secret_env: Option<String>,
    pub api_key_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub discover: bool,
    pub discover_interval: Duration,
    pub connect_timeout: Duration,
}

impl BackendConfig {
    /// The name of replica `i` in logs and audit events: the backend's name for a single
    /// server, `NAME#i` in a pool.
    pub fn replica_name(&self, i: usize) -> String {
        if self.urls.len() > 1 {
            format!("{}#{i}", self.name)
        } else {
            self.name.clone()
        }
    }
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
/// Default of `backends[].affinity_load_factor`.
pub const DEFAULT_AFFINITY_LOAD_FACTOR: f64 = wardgate_backends::pool::DEFAULT_LOAD_FACTOR;
/// Most of `backends[].affinity_load_factor`: past it the bound no longer bounds anything.
const MAX_AFFINITY_LOAD_FACTOR: f64 = 100.0;
/// Default of `backends[].silent_attempts`.
pub const DEFAULT_SILENT_ATTEMPTS: u32 = wardgate_backends::pool::DEFAULT_SILENT_ATTEMPTS;
/// Most of `backends[].silent_attempts`: more than any pool has replicas.
const MAX_SILENT_ATTEMPTS: u32 = 64;

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
        let urls = match (kind, b.url, b.urls) {
            (_, Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    key("urls"),
                    "set `url` for one server or `urls` for a pool of replicas, not both",
                ));
            }
            (BackendType::Embedded, None, None) => Vec::new(),
            (BackendType::Embedded, url, _) => {
                let field = if url.is_some() { "url" } else { "urls" };
                return Err(ConfigError::new(
                    key(field),
                    "an embedded backend has no URL",
                ));
            }
            (BackendType::Http(_), None, None) => {
                return Err(ConfigError::new(
                    key("url"),
                    "required for ollama and openai backends (or `urls` for a pool of replicas)",
                ));
            }
            (BackendType::Http(_), Some(u), None) => vec![http_url(&key("url"), u)?],
            (BackendType::Http(_), None, Some(list)) => pool_urls(&key("urls"), list)?,
        };
        if b.ca_file.is_some() && !urls.iter().all(|u| u.starts_with("https://")) {
            return Err(ConfigError::new(
                key("ca_file"),
                "a CA file is for https:// backend URLs",
            ));
        }
        let affinity_load_factor = b
            .affinity_load_factor
            .unwrap_or(DEFAULT_AFFINITY_LOAD_FACTOR);
        if !(0.0..=MAX_AFFINITY_LOAD_FACTOR).contains(&affinity_load_factor) {
            return Err(ConfigError::new(
                key("affinity_load_factor"),
                format!("must be from 0 to {MAX_AFFINITY_LOAD_FACTOR}"),
            ));
        }
        let silent_attempts = b.silent_attempts.unwrap_or(DEFAULT_SILENT_ATTEMPTS);
        if !(1..=MAX_SILENT_ATTEMPTS).contains(&silent_attempts) {
            return Err(ConfigError::new(
                key("silent_attempts"),
                format!(
                    "must be from 1 to {MAX_SILENT_ATTEMPTS}: the replicas of this pool a \
                     request may wait the first-token limit on before the next link"
                ),
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
            urls,
            affinity_load_factor,
            silent_attempts,
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
            urls: Vec::new(),
            affinity_load_factor: DEFAULT_AFFINITY_LOAD_FACTOR,
            silent_attempts: DEFAULT_SILENT_ATTEMPTS,
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

/// An `http://` or `https://` URL, without its trailing `/`.
fn http_url(key: &str, u: String) -> Result<String, ConfigError> {
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "http://".len() {
        return Err(ConfigError::new(
            key,
            format!("`{u}` is not an http:// or https:// URL"),
        ));
    }
    Ok(u.trim_end_matches('/').to_owned())
}

/// A pool's URLs: at least one, each a URL, none twice.
fn pool_urls(key: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            key,
            "a pool needs at least one replica URL (or use `url` for one server)",
        ));
    }
    let mut urls: Vec<String> = Vec::with_capacity(list.len());
    for (j, u) in list.into_iter().enumerate() {
        let u = http_url(&format!("{key}[{j}]"), u)?;
        // Scheme and host are case-blind; the same server listed twice would get twice the
        // share and hide that the pool is smaller than it looks.
        if let Some(k) = urls.iter().position(|o| o.eq_ignore_ascii_case(&u)) {
            return Err(ConfigError::new(
                format!("{key}[{j}]"),
                format!("`{u}` is listed twice (also {key}[{k}])"),
            ));
        }
        urls.push(u);
    }
    Ok(urls)
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
