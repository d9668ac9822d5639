//! `[llm]` and the role layer of `wardgate llm`, the private model service.

use serde::{Deserialize, Serialize};

use super::{ConfigError, EnvLookup, set_dotted};

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

/// Default of `WARDGATE_LLM_LISTEN`: loopback, Ollama's port.
pub const DEFAULT_LLM_LISTEN: &str = "127.0.0.1:11434";

/// The gateway's variables `wardgate llm` does not read: its role sets what they would (its
/// backend, listener, TLS and per-key rate), the listener and TLS from its own
/// `WARDGATE_LLM_*` variables, so one environment can hold both services' settings.
const GATEWAY_ONLY_ENV: &[&str] = &[
    "WARDGATE_BACKEND",
    "WARDGATE_LISTEN",
    "WARDGATE_TLS_CERT",
    "WARDGATE_TLS_KEY",
    "WARDGATE_TLS_CLIENT_CA",
    "WARDGATE_RATE_LIMIT_RPM",
    "WARDGATE_METRICS_LISTEN",
];

/// The gateway's variables set in `env` that `wardgate llm` does not read, each with what to
/// set instead, so the service can say so at start rather than ignore them silently.
pub fn ignored_gateway_env(env: EnvLookup<'_>) -> Vec<(&'static str, &'static str)> {
    GATEWAY_ONLY_ENV
        .iter()
        .filter(|v| env(v).is_some())
        .map(|&v| {
            let instead = match v {
                "WARDGATE_LISTEN" => "WARDGATE_LLM_LISTEN",
                "WARDGATE_TLS_CERT" => "WARDGATE_LLM_TLS_CERT",
                "WARDGATE_TLS_KEY" => "WARDGATE_LLM_TLS_KEY",
                "WARDGATE_METRICS_LISTEN" => "WARDGATE_LLM_METRICS_LISTEN",
                _ => "nothing: the gateway's setting, not this service's",
            };
            (v, instead)
        })
        .collect()
}

/// The environment as `wardgate llm` reads it: `env` without [`GATEWAY_ONLY_ENV`].
pub(super) fn role_env<'a>(env: EnvLookup<'a>) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        if GATEWAY_ONLY_ENV.contains(&name) {
            None
        } else {
            env(name)
        }
    }
}

/// The rate-limit keys the role turns off: the gateway, its one client, enforces the limits
/// and quotas per key and tenant; the engine's own slots and queue bound what runs here.
const ROLE_RATE_LIMITS_OFF: &[&str] = &[
    "requests_per_minute",
    "tenant_requests_per_minute",
    "tokens_per_minute",
    "tenant_tokens_per_minute",
    "tokens_per_day",
    "tenant_tokens_per_day",
    "concurrent_requests",
    "tenant_concurrent_requests",
];

/// `wardgate llm`'s role, a layer over the document after the environment's: it listens on
/// `WARDGATE_LLM_LISTEN` (default [`DEFAULT_LLM_LISTEN`]), with the certificate and key of
/// `WARDGATE_LLM_TLS_CERT` and `WARDGATE_LLM_TLS_KEY` when set (else the file's
/// `[server.tls]`, if any); its only backend is the embedded engine (named `default`, its
/// models discovered), no `[[models]]`, and every rate limit and quota off. Its audit log is
/// its own: unless its environment places them (`WARDGATE_DB`, `WARDGATE_AUDIT_KEY`,
/// `WARDGATE_AUDIT_WITNESS`, `WARDGATE_AUDIT_WITNESS_URL`), its database is `llm/wardgate.db`
/// beside the file's, its signing key and witness file default to beside that, and it has no
/// HTTP witness, so a config file shared with the gateway never makes the two logs share a
/// database, a key, a witness file or a witness (which would see two trees of one origin).
pub(super) fn apply_role(doc: &mut toml::Table, env: EnvLookup<'_>) -> Result<(), ConfigError> {
    let listen = env("WARDGATE_LLM_LISTEN").unwrap_or_else(|| DEFAULT_LLM_LISTEN.to_owned());
    set_dotted(doc, "server.listen", listen.into());
    // Its own metrics port by default, so that both roles on one machine start as they are.
    let metrics = env("WARDGATE_LLM_METRICS_LISTEN")
        .unwrap_or_else(|| super::metrics::DEFAULT_LLM_LISTEN.to_owned());
    set_dotted(doc, "metrics.listen", metrics.into());
    match (env("WARDGATE_LLM_TLS_CERT"), env("WARDGATE_LLM_TLS_KEY")) {
        (Some(cert), Some(key)) => {
            set_dotted(doc, "server.tls.cert_file", cert.into());
            set_dotted(doc, "server.tls.key_file", key.into());
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::new(
                "WARDGATE_LLM_TLS_CERT",
                "WARDGATE_LLM_TLS_CERT and WARDGATE_LLM_TLS_KEY go together: set both or neither",
            ));
        }
        (None, None) => {}
    }
    let mut embedded = toml::Table::new();
    embedded.insert("name".into(), "default".into());
    embedded.insert("kind".into(), "embedded".into());
    embedded.insert("discover".into(), true.into());
    doc.insert(
        "backends".into(),
        toml::Value::Array(vec![toml::Value::Table(embedded)]),
    );
    doc.remove("models");
    for key in ROLE_RATE_LIMITS_OFF {
        set_dotted(doc, &format!("rate_limit.{key}"), toml::Value::Integer(0));
    }
    // The role keeps a SQLite file of its own; a shared PostgreSQL (`storage.url`) is the
    // gateway's. A `sqlite://` URL names the gateway's file, which the role's sits beside.
    let storage = doc.get_mut("storage").and_then(toml::Value::as_table_mut);
    let url = storage
        .and_then(|s| {
            s.remove("max_connections");
            s.remove("url")
        })
        .and_then(|u| u.as_str().map(str::to_owned));
    if env("WARDGATE_DB").is_none() {
        let shared = doc
            .get("storage")
            .and_then(|s| s.get("sqlite_path"))
            .and_then(toml::Value::as_str)
            .or_else(|| url.as_deref().and_then(|u| u.strip_prefix("sqlite://")))
            .unwrap_or(super::storage::DEFAULT_SQLITE_PATH);
        let own = std::path::Path::new(shared)
            .parent()
            .unwrap_or_else(|| std::path::Path::new(""))
            .join(LLM_DATABASE);
        set_dotted(
            doc,
            "storage.sqlite_path",
            own.to_string_lossy().into_owned().into(),
        );
    }
    if let Some(audit) = doc.get_mut("audit").and_then(toml::Value::as_table_mut) {
        if env("WARDGATE_AUDIT_KEY").is_none() {
            audit.remove("signing_key_file");
        }
        if env("WARDGATE_AUDIT_WITNESS").is_none() {
            audit.remove("witness_file");
        }
        if env("WARDGATE_AUDIT_WITNESS_URL").is_none() {
            audit.remove("witness_url");
            audit.remove("witness_key");
        }
    }
    Ok(())
}

/// `wardgate llm`'s database, relative to the directory of the gateway's.
pub const LLM_DATABASE: &str = "llm/wardgate.db";
