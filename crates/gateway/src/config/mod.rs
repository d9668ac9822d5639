//! Configuration in two stages: a raw serde shape read from one TOML file plus `WARDGATE_*`
//! environment overrides, validated into the typed [`Config`] the service runs on. Every error
//! names the key and the reason, so a bad file fails at start, not at the first request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod audit;
pub mod auth;
pub mod backends;
pub mod duration;
pub mod engine;
pub mod health;
pub mod limits;
pub mod llm;
pub mod logging;
pub mod metrics;
pub mod parts;
pub mod phi;
pub mod rate_limit;
pub mod server;
pub mod storage;

pub use server::{RawServer, RawTls};

pub use audit::{AuditSettings, RawAudit};
pub use auth::{ClientCertSettings, RawAuth, RawJwtIssuer};
pub use backends::{BackendConfig, BackendType, ModelConfig, RawBackend, RawLink, RawModel};
pub use duration::HumanDuration;
pub use engine::{EngineSettings, RawEngine};
pub use health::{RawBreaker, RawHealth};
pub use limits::{DEFAULT_MAX_JSON_VALUES, Limits, OverCap, RawLimits};
pub use llm::{LlmSettings, RawLlm};
pub use logging::{LogFormat, RawLogging};
pub use metrics::{MetricsSettings, RawMetrics};
pub use parts::{LiveSettings, StartupSettings};
use phi::phi_policy;
pub use phi::{PhiMode, PhiPolicy, PhiRule, RawPhi, RawPhiRule};
pub use rate_limit::{LimiterBackend, QuotaSet, Quotas, RawRateLimit};
pub use storage::RawStorage;

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("config error at `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A config enum written as one of a few words: `TryFrom<String>` refusing any other with
/// `$msg` (the word in place of `{}`), and back to its word, for `#[serde(try_from, into)]`.
macro_rules! words {
    ($ty:ty, $msg:literal, $($variant:ident = $word:literal),+ $(,)?) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(v: String) -> Result<Self, String> {
                match v.as_str() {
                    $($word => Ok(<$ty>::$variant),)+
                    _ => Err(format!($msg, v)),
                }
            }
        }
        impl From<$ty> for &'static str {
            fn from(v: $ty) -> &'static str {
                match v {
                    $(<$ty>::$variant => $word,)+
                }
            }
        }
    };
}
pub(crate) use words;

// ---------------------------------------------------------------------------------------------
// Raw shape

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub circuit_breaker: RawBreaker,
    #[serde(default)]
    pub engine: RawEngine,
    #[serde(default)]
    pub llm: RawLlm,
    #[serde(default)]
    pub phi: RawPhi,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default)]
    pub models: Vec<RawModel>,
}

// ---------------------------------------------------------------------------------------------
// Typed shape

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub request_timeout: Duration,
    pub first_token_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Connection and protocol bounds.
    pub server: server::ServerLimits,
    /// TLS for the listener; `None`: plain HTTP.
    pub tls: Option<server::TlsSettings>,
    /// Who a verified TLS client certificate is.
    pub client_certs: ClientCertSettings,
    /// The SQLite file: the database unless `postgres` is set; `wardgate llm`'s own database;
    /// the audit log's files default to beside it.
    pub sqlite_path: PathBuf,
    /// The PostgreSQL database for keys, tenants and the audit log, when `storage.url` names
    /// one.
    pub postgres: Option<storage::PostgresSettings>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The metrics listener and its labels' bounds.
    pub metrics: MetricsSettings,
    pub limits: Limits,
    pub requests_per_minute: u32,
    pub tenant_requests_per_minute: u32,
    /// Usage quotas per key and per tenant.
    pub quotas: Quotas,
    pub limiter_backend: LimiterBackend,
    pub key_cache_ttl: Duration,
    /// The revocation broadcast's heartbeat, and the cache's bound while it fails.
    pub broadcast: auth::BroadcastSettings,
    pub operator_tenant: String,
    pub max_token_bytes: usize,
    /// `None`: keys do not time out when idle.
    pub key_idle_timeout: Option<Duration>,
    pub lockout: auth::LockoutSettings,
    pub jwt: Vec<auth::IssuerSettings>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub breaker_busy_threshold: u32,
    pub breaker_busy_cooldown: Duration,
    pub engine: EngineSettings,
    /// `wardgate llm`'s own settings.
    pub llm: LlmSettings,
    pub phi: PhiPolicy,
    pub audit: AuditSettings,
    pub backends: Vec<BackendConfig>,
    pub models: Vec<ModelConfig>,
}

/// Where overrides come from; a function so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Reads the file (if any), applies `WARDGATE_*` overrides and validates.
    pub fn load(path: Option<&Path>, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut doc = read_document(path)?;
        apply_env(&mut doc, env)?;
        validate(reread(doc)?, env)
    }

    /// `wardgate llm`'s configuration: as [`Config::load`], with the role's layer (see
    /// [`Config::from_raw_llm`]).
    pub fn load_llm(path: Option<&Path>, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        Config::llm_from_document(read_document(path)?, env)
    }

    /// Validates `raw` with the `WARDGATE_*` overrides layered over it: the overrides are set
    /// in its TOML document, which is then deserialised again (so their values are checked and
    /// named like the file's).
    pub fn from_raw(raw: RawConfig, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut doc = document(&raw)?;
        apply_env(&mut doc, env)?;
        validate(reread(doc)?, env)
    }

    /// `wardgate llm`'s configuration from `raw`: the `WARDGATE_*` overrides but the gateway's
    /// own (backend, listener, TLS, per-key rate), then the role's layer: its listener and TLS
    /// from `WARDGATE_LLM_LISTEN` / `WARDGATE_LLM_TLS_*`, the embedded engine as its only
    /// backend, no models, no rate limits or quotas. Validated once, like the gateway's.
    pub fn from_raw_llm(raw: RawConfig, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        Config::llm_from_document(document(&raw)?, env)
    }

    fn llm_from_document(mut doc: toml::Table, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let env = llm::role_env(env);
        apply_env(&mut doc, &env)?;
        llm::apply_role(&mut doc, &env)?;
        validate(reread(doc)?, &env)
    }

    /// The text of this configuration that log lines quote: addresses, URLs, file paths and
    /// the names of backends, models, issuers and tenants it sets. It is the operator's, not
    /// PHI, so the log redactor leaves it readable (`redact_log::Configured`). Text with an
    /// `@` is left out: a URL's credentials, or an e-mail address, stay redacted.
    pub fn own_text(&self) -> Vec<String> {
        let mut out = vec![self.listen.to_string(), self.listen.ip().to_string()];
        if let Some(m) = self.metrics.listen {
            out.extend([m.to_string(), m.ip().to_string()]);
        }
        let path = |p: &Path| p.display().to_string();
        out.push(path(&self.sqlite_path));
        out.extend(self.postgres.as_ref().map(|p| p.url.shown().to_owned()));
        out.push(path(&self.engine.models_dir));
        out.extend(self.engine.preload.iter().cloned());
        if let Some(tls) = &self.tls {
            out.extend([path(&tls.cert_file), path(&tls.key_file)]);
            out.extend(tls.client_ca_file.as_deref().map(path));
        }
        out.push(self.operator_tenant.clone());
        out.extend(self.client_certs.tenant.iter().cloned());
        for issuer in &self.jwt {
            out.push(issuer.issuer.clone());
            out.extend(issuer.audiences.iter().cloned());
            out.extend(issuer.tenant.iter().cloned());
            match &issuer.keys {
                auth::KeySource::File(p) => out.push(path(p)),
                auth::KeySource::Url(u) => out.push(u.clone()),
                auth::KeySource::Secret(_) => {}
            }
        }
        out.extend([
            path(&self.audit.signing_key_file),
            path(&self.audit.witness_file),
            self.audit.origin.clone(),
        ]);
        out.extend(self.audit.witness.as_ref().map(|w| w.url.clone()));
        for b in &self.backends {
            out.push(b.name.clone());
            out.extend(b.urls.iter().cloned());
            out.extend((0..b.urls.len()).map(|i| b.replica_name(i)));
            out.extend(b.ca_file.as_deref().map(path));
        }
        for m in &self.models {
            out.push(m.name.clone());
            out.extend(m.aliases.iter().cloned());
            for (backend, model) in &m.chain {
                out.extend([backend.clone(), model.clone()]);
            }
        }
        out.extend(self.phi.tenants.keys().cloned());
        out.extend(self.phi.models.keys().cloned());
        out.retain(|t| !t.is_empty() && !t.contains('@'));
        out
    }
}

/// The file at `path`, parsed; none: every key unset.
/// The config file (if any) as a TOML document (its shape is checked when the layered
/// document is read, naming the dotted key). Read as a document, not re-serialised from
/// [`RawConfig`], so the binary carries no TOML serialiser (only tests build a config from a
/// `RawConfig`).
fn read_document(path: Option<&Path>) -> Result<toml::Table, ConfigError> {
    let Some(p) = path else {
        return Ok(toml::Table::new());
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| ConfigError::new(p.display().to_string(), format!("cannot read: {e}")))?;
    parse_document(&text)
}

/// `raw` as a TOML document, for the layers over it.
fn document(raw: &RawConfig) -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(raw).map_err(|e| ConfigError::new("file", format!("cannot re-read: {e}")))
}

/// The layered document deserialised again: a value a layer set is checked, and named by its
/// dotted key, like the file's.
fn reread(doc: toml::Table) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize::<_, RawConfig>(doc)
        .map_err(|e| ConfigError::new(e.path().to_string(), e.inner().message().to_owned()))
}

/// Parses TOML text. Syntax errors name the line; shape errors (unknown keys, wrong types)
/// name the dotted key, e.g. `limits.max_body_bytes`.
pub fn parse_toml(text: &str) -> Result<RawConfig, ConfigError> {
    reread(parse_document(text)?)
}

/// TOML text as a document; a syntax error names its line. The document is then read into
/// [`RawConfig`] in one place ([`reread`]), so the binary carries one deserialiser of the
/// config's shape, not one for text and one for documents.
fn parse_document(text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            })
            .unwrap_or_else(|| "file".to_owned());
        ConfigError::new(at, e.message().to_owned())
    })
}

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy)]
enum EnvValue {
    /// A string, as written.
    Text,
    /// A whole number; anything else is refused naming the variable.
    Number,
    /// A comma-separated list of strings; empty items are dropped.
    List,
}

/// Every `WARDGATE_*` override: the variable, the dotted key it sets and how its text is read.
/// They are applied to the TOML document before it is deserialised, so an override is checked
/// exactly as the same value in the file would be, and a new setting's variable is one line
/// here. (`WARDGATE_BACKEND`, which adds a whole backend, is [`env_backend`].)
const ENV_OVERRIDES: &[(&str, &str, EnvValue)] = &[
    ("WARDGATE_LISTEN", "server.listen", EnvValue::Text),
    ("WARDGATE_TLS_CERT", "server.tls.cert_file", EnvValue::Text),
    ("WARDGATE_TLS_KEY", "server.tls.key_file", EnvValue::Text),
    (
        "WARDGATE_TLS_CLIENT_CA",
        "server.tls.client_ca_file",
        EnvValue::Text,
    ),
    (
        "WARDGATE_TRUSTED_PROXIES",
        "server.trusted_proxies",
        EnvValue::List,
    ),
    (
        "WARDGATE_REQUEST_TIMEOUT",
        "server.request_timeout",
        EnvValue::Text,
    ),
    (
        "WARDGATE_FIRST_TOKEN_TIMEOUT",
        "server.first_token_timeout",
        EnvValue::Text,
    ),
    ("WARDGATE_DB", "storage.sqlite_path", EnvValue::Text),
    ("WARDGATE_DATABASE_URL", "storage.url", EnvValue::Text),
    (
        "WARDGATE_DATABASE_MAX_CONNECTIONS",
        "storage.max_connections",
        EnvValue::Number,
    ),
    (
        "WARDGATE_DATABASE_ACQUIRE_TIMEOUT",
        "storage.acquire_timeout",
        EnvValue::Text,
    ),
    (
        "WARDGATE_DATABASE_QUERY_TIMEOUT",
        "storage.query_timeout",
        EnvValue::Text,
    ),
    ("WARDGATE_LOG_FORMAT", "logging.format", EnvValue::Text),
    ("WARDGATE_LOG", "logging.level", EnvValue::Text),
    ("WARDGATE_METRICS_LISTEN", "metrics.listen", EnvValue::Text),
    (
        "WARDGATE_KEY_CACHE_TTL",
        "auth.key_cache_ttl",
        EnvValue::Text,
    ),
    (
        "WARDGATE_LOCKOUT_THRESHOLD",
        "auth.lockout_threshold",
        EnvValue::Number,
    ),
    (
        "WARDGATE_UNAUTHENTICATED_RPM",
        "auth.unauthenticated_requests_per_minute",
        EnvValue::Number,
    ),
    (
        "WARDGATE_FAILURE_AUDIT_WINDOW",
        "auth.failure_audit_window",
        EnvValue::Text,
    ),
    (
        "WARDGATE_RATE_LIMIT_RPM",
        "rate_limit.requests_per_minute",
        EnvValue::Number,
    ),
    (
        "WARDGATE_RATE_LIMIT_TENANT_RPM",
        "rate_limit.tenant_requests_per_minute",
        EnvValue::Number,
    ),
    (
        "WARDGATE_RATE_LIMIT_TPM",
        "rate_limit.tokens_per_minute",
        EnvValue::Number,
    ),
    (
        "WARDGATE_RATE_LIMIT_TOKENS_PER_DAY",
        "rate_limit.tokens_per_day",
        EnvValue::Number,
    ),
    (
        "WARDGATE_RATE_LIMIT_TENANT_TOKENS_PER_DAY",
        "rate_limit.tenant_tokens_per_day",
        EnvValue::Number,
    ),
    (
        "WARDGATE_RATE_LIMIT_CONCURRENCY",
        "rate_limit.concurrent_requests",
        EnvValue::Number,
    ),
    (
        "WARDGATE_RATE_LIMIT_TENANT_CONCURRENCY",
        "rate_limit.tenant_concurrent_requests",
        EnvValue::Number,
    ),
    (
        "WARDGATE_RATE_LIMIT_BACKEND",
        "rate_limit.backend",
        EnvValue::Text,
    ),
    ("WARDGATE_REDIS_URL", "rate_limit.redis_url", EnvValue::Text),
    (
        "WARDGATE_REDIS_NAMESPACE",
        "rate_limit.redis_namespace",
        EnvValue::Text,
    ),
    (
        "WARDGATE_REFUSAL_AUDIT_WINDOW",
        "limits.refusal_audit_window",
        EnvValue::Text,
    ),
    (
        "WARDGATE_AUDIT_KEY",
        "audit.signing_key_file",
        EnvValue::Text,
    ),
    (
        "WARDGATE_AUDIT_WITNESS",
        "audit.witness_file",
        EnvValue::Text,
    ),
    (
        "WARDGATE_AUDIT_WITNESS_URL",
        "audit.witness_url",
        EnvValue::Text,
    ),
    (
        "WARDGATE_AUDIT_WITNESS_KEY",
        "audit.witness_key",
        EnvValue::Text,
    ),
    (
        "WARDGATE_AUDIT_DURABILITY",
        "audit.durability",
        EnvValue::Text,
    ),
    ("WARDGATE_PHI_MODE", "phi.mode", EnvValue::Text),
    ("WARDGATE_MODELS", "engine.models_dir", EnvValue::Text),
    ("WARDGATE_PRELOAD", "engine.preload", EnvValue::List),
    (
        "WARDGATE_LLM_MAX_REQUEST_RATE",
        "llm.max_request_rate",
        EnvValue::Number,
    ),
];

/// Sets `dotted` (e.g. `server.tls.cert_file`) in `doc`, creating the tables on the way.
fn set_dotted(doc: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts = dotted.split('.').peekable();
    let mut table = doc;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return;
        }
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        table = next;
    }
}

/// Applies the `WARDGATE_*` overrides to the document, a layer over the file.
fn apply_env(doc: &mut toml::Table, env: EnvLookup<'_>) -> Result<(), ConfigError> {
    match (env("WARDGATE_TLS_CERT"), env("WARDGATE_TLS_KEY")) {
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::new(
                "WARDGATE_TLS_CERT",
                "WARDGATE_TLS_CERT and WARDGATE_TLS_KEY go together: set both or neither",
            ));
        }
        (Some(_), Some(_)) | (None, None) => {}
    }
    let has_tls = env("WARDGATE_TLS_CERT").is_some()
        || doc
            .get("server")
            .and_then(|s| s.get("tls"))
            .is_some_and(toml::Value::is_table);
    if env("WARDGATE_TLS_CLIENT_CA").is_some() && !has_tls {
        return Err(ConfigError::new(
            "WARDGATE_TLS_CLIENT_CA",
            "client certificates need TLS: set WARDGATE_TLS_CERT and WARDGATE_TLS_KEY too",
        ));
    }
    for &(var, key, kind) in ENV_OVERRIDES {
        let Some(v) = env(var) else { continue };
        let value = match kind {
            EnvValue::Text => toml::Value::String(v),
            EnvValue::Number => match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => toml::Value::Integer(n),
                _ => return Err(ConfigError::new(var, "must be a whole number")),
            },
            EnvValue::List => toml::Value::Array(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        set_dotted(doc, key, value);
    }
    if let Some(v) = env("WARDGATE_BACKEND") {
        env_backend(doc, &v, env)?;
    }
    Ok(())
}

/// `WARDGATE_BACKEND`: `embedded`, or `kind:url` (`ollama:http://127.0.0.1:11434`,
/// `openai:http://h:8000/v1`), added as the backend named `default`.
fn env_backend(doc: &mut toml::Table, v: &str, env: EnvLookup<'_>) -> Result<(), ConfigError> {
    let (kind, url) = if v == "embedded" {
        ("embedded", None)
    } else {
        let (k, u) = v.split_once(':').ok_or_else(|| {
            ConfigError::new(
                "WARDGATE_BACKEND",
                "expected `embedded` or KIND:URL, e.g. ollama:http://127.0.0.1:11434 or openai:http://127.0.0.1:8000/v1",
            )
        })?;
        (k, Some(u))
    };
    if !matches!(kind, "ollama" | "openai" | "embedded") {
        return Err(ConfigError::new(
            "WARDGATE_BACKEND",
            format!(
                "`{kind}` is not a backend kind: expected embedded, ollama:URL or \
                 openai:URL, e.g. ollama:http://127.0.0.1:11434"
            ),
        ));
    }
    let backends = doc
        .entry("backends")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let Some(backends) = backends.as_array_mut() else {
        return Ok(()); // not an array: deserialising names `backends`
    };
    let named_default =
        |b: &toml::Value| b.get("name").and_then(toml::Value::as_str) == Some("default");
    if backends.iter().any(named_default) {
        return Err(ConfigError::new(
            "WARDGATE_BACKEND",
            "the config file already has a backend named `default`",
        ));
    }
    let mut b = toml::Table::new();
    b.insert("name".into(), "default".into());
    b.insert("kind".into(), kind.into());
    if let Some(url) = url {
        b.insert("url".into(), url.into());
    }
    if env("WARDGATE_BACKEND_SECRET").is_some() {
        b.insert("secret_env".into(), "WARDGATE_BACKEND_SECRET".into());
    }
    if let Some(ca) = env("WARDGATE_BACKEND_CA") {
        b.insert("ca_file".into(), ca.into());
    }
    b.insert("discover".into(), true.into());
    backends.push(toml::Value::Table(b));
    Ok(())
}

/// A count that must be at least 1 and at most `max`.
fn bounded(key: &str, v: Option<usize>, default: usize, max: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::new(key, "must be greater than zero")),
        Some(n) if n > max => Err(ConfigError::new(key, format!("must be at most {max}"))),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// Upper bound of `engine.max_keep_alive`.
const MAX_ENGINE_KEEP_ALIVE: Duration = Duration::from_secs(30 * 24 * 3600);

fn duration(key: &str, v: Option<&Duration>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(&d) = v else { return Ok(default) };
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(d)
}

/// A duration that may be zero (`0s` turns the thing off).
fn duration_or_off(v: Option<&Duration>, default: Duration) -> Duration {
    v.copied().unwrap_or(default)
}

/// Public model names: letters, digits and `._:/-`, at most 128 bytes, no `..` and no leading
/// `/` (attack-cases.md #22). Also used on client-supplied names before any lookup.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.contains("..")
        && !name.starts_with('/')
        && !name.starts_with("sha256:")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'))
}

/// A count that must be greater than zero, or `default` when unset.
fn positive(key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::new(key, "must be greater than zero")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// Every section validated by its own module, then wired together; the checks across
/// sections are here.
fn validate(raw: RawConfig, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let server = server::server(&raw.server)?;
    let logging = logging::logging(raw.logging);
    let metrics = metrics::metrics(&raw.metrics)?;
    let limits = limits::limits(&raw.limits)?;
    let (backends, names) = backends::backends(raw.backends)?;
    let engine = engine::engine(raw.engine)?;
    // Across sections: a model's context window defaults to `limits.default_context_window`;
    // its chain names configured backends.
    let models = backends::models(raw.models, &names, limits.default_context_window)?;
    let health = health::health(&raw.health)?;
    let breaker = health::breaker(&raw.circuit_breaker)?;
    let (sqlite_path, postgres) = storage::storage(&raw.storage)?;
    // Across sections: the audit files default to beside the database.
    let audit = audit::audit(&raw.audit, &sqlite_path, env)?;
    let llm = llm::llm(&raw.llm)?;
    let auth = auth::auth(&raw.auth, env)?;
    // Across sections: the per-key concurrency's default depends on the embedded engine.
    let embedded_slots = backends
        .iter()
        .any(|b| b.kind == BackendType::Embedded)
        .then_some(engine.slots);
    let rate_limit = rate_limit::rate_limit(&raw.rate_limit, embedded_slots)?;
    let config = Config {
        llm,
        listen: server.listen,
        request_timeout: server.request_timeout,
        first_token_timeout: server.first_token_timeout,
        shutdown_grace: server.shutdown_grace,
        server: server.limits,
        tls: server.tls,
        client_certs: auth.client_certs,
        sqlite_path,
        postgres,
        log_format: logging.format,
        log_level: logging.level,
        metrics,
        limits,
        requests_per_minute: rate_limit.requests_per_minute,
        tenant_requests_per_minute: rate_limit.tenant_requests_per_minute,
        quotas: rate_limit.quotas,
        limiter_backend: rate_limit.limiter_backend,
        max_token_bytes: auth.max_token_bytes,
        key_idle_timeout: auth.key_idle_timeout,
        lockout: auth.lockout,
        jwt: auth.jwt,
        operator_tenant: auth.operator_tenant,
        key_cache_ttl: auth.key_cache_ttl,
        broadcast: auth.broadcast,
        health_interval: health.interval,
        health_timeout: health.timeout,
        breaker_threshold: breaker.failure_threshold,
        breaker_cooldown: breaker.cooldown,
        breaker_busy_threshold: breaker.busy_threshold,
        breaker_busy_cooldown: breaker.busy_cooldown,
        engine,
        phi: phi_policy(&raw.phi)?,
        audit,
        backends,
        models,
    };
    check_maxima(&config)?;
    Ok(config)
}

/// One upper bound: the dotted key, its value and its maximum.
enum Max {
    Num(String, u64, u64),
    Time(String, Duration, Duration),
}

const MIB: u64 = 1 << 20;
/// Largest `engine.memory_budget_mib`: 16 TiB.
const MAX_MEMORY_BUDGET_MIB: u64 = 16 << 20;
const fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}
const fn days(d: u64) -> Duration {
    Duration::from_secs(d * 86_400)
}

/// Every number and duration has a sane maximum, checked here in one table so that
/// `check-config` refuses a value that would break the service (an allocation the size of the
/// value, a revocation that never takes effect, a timeout that never fires) and names the key
/// and the bound. The minimums stay where each value is parsed.
fn check_maxima(c: &Config) -> Result<(), ConfigError> {
    use Max::{Num, Time};
    let n = |k: &str, v: u64, max: u64| Num(k.to_owned(), v, max);
    let t = |k: &str, v: Duration, max: Duration| Time(k.to_owned(), v, max);
    let u = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    let s = &c.server;
    let l = &c.limits;
    let e = &c.engine;
    let mut table = vec![
        t("server.request_timeout", c.request_timeout, hours(1)),
        t(
            "server.first_token_timeout",
            c.first_token_timeout,
            hours(1),
        ),
        t("server.shutdown_grace", c.shutdown_grace, hours(1)),
        t(
            "server.header_read_timeout",
            s.header_read_timeout,
            Duration::from_secs(300),
        ),
        t("server.body_read_timeout", s.body_read_timeout, hours(1)),
        t("server.hsts_max_age", s.hsts_max_age, days(730)),
        n("server.max_header_bytes", u(s.max_header_bytes), MIB),
        n("server.max_headers", u(s.max_headers), 10_000),
        n("server.max_connections", u(s.max_connections), 1_000_000),
        n(
            "storage.max_connections",
            c.postgres
                .as_ref()
                .map_or(0, |p| u64::from(p.max_connections)),
            u64::from(storage::MAX_MAX_CONNECTIONS),
        ),
        n(
            "server.http2_max_streams",
            u64::from(s.http2_max_streams),
            10_000,
        ),
        n("limits.max_body_bytes", u(l.max_body_bytes), 256 * MIB),
        n("limits.max_messages", u(l.max_messages), 100_000),
        n(
            "limits.max_output_tokens",
            u64::from(l.max_output_tokens),
            1 << 20,
        ),
        n(
            "limits.default_context_window",
            u64::from(l.default_context_window),
            1 << 20,
        ),
        n(
            "limits.max_embedding_inputs",
            u(l.max_embedding_inputs),
            100_000,
        ),
        n(
            "rate_limit.requests_per_minute",
            u64::from(c.requests_per_minute),
            1_000_000,
        ),
        n(
            "rate_limit.tenant_requests_per_minute",
            u64::from(c.tenant_requests_per_minute),
            1_000_000,
        ),
        n(
            "rate_limit.tokens_per_minute",
            u64::from(c.quotas.key.tokens_per_minute),
            60_000_000,
        ),
        n(
            "rate_limit.tenant_tokens_per_minute",
            u64::from(c.quotas.tenant.tokens_per_minute),
            60_000_000,
        ),
        n(
            "rate_limit.tokens_per_day",
            c.quotas.key.tokens_per_day,
            1_000_000_000_000,
        ),
        n(
            "rate_limit.tenant_tokens_per_day",
            c.quotas.tenant.tokens_per_day,
            1_000_000_000_000,
        ),
        n(
            "rate_limit.concurrent_requests",
            u64::from(c.quotas.key.concurrent_requests),
            100_000,
        ),
        n(
            "rate_limit.tenant_concurrent_requests",
            u64::from(c.quotas.tenant.concurrent_requests),
            100_000,
        ),
        t(
            "auth.key_cache_ttl",
            c.key_cache_ttl,
            Duration::from_secs(300),
        ),
        t(
            "auth.key_cache_ttl_unconfirmed",
            c.broadcast.unconfirmed_ttl,
            Duration::from_secs(300),
        ),
        t(
            "auth.revocation_heartbeat_interval",
            c.broadcast.heartbeat_interval,
            Duration::from_secs(60),
        ),
        t(
            "auth.revocation_heartbeat_timeout",
            c.broadcast.heartbeat_timeout,
            Duration::from_secs(60),
        ),
        n("auth.max_token_bytes", u(c.max_token_bytes), 64 * 1024),
        n(
            "auth.lockout_threshold",
            u64::from(c.lockout.threshold),
            1_000_000,
        ),
        t("auth.lockout_window", c.lockout.window, days(1)),
        t("auth.lockout_duration", c.lockout.duration, days(1)),
        n(
            "auth.unauthenticated_requests_per_minute",
            u64::from(c.lockout.failures_per_minute),
            1_000_000,
        ),
        t(
            "auth.failure_audit_window",
            c.lockout.audit_window,
            hours(1),
        ),
        t(
            "limits.refusal_audit_window",
            c.limits.refusal_audit_window,
            hours(1),
        ),
        t("health.interval", c.health_interval, hours(1)),
        t("health.timeout", c.health_timeout, Duration::from_secs(60)),
        n(
            "circuit_breaker.failure_threshold",
            u64::from(c.breaker_threshold),
            1_000_000,
        ),
        t("circuit_breaker.cooldown", c.breaker_cooldown, hours(1)),
        n(
            "circuit_breaker.busy_threshold",
            u64::from(c.breaker_busy_threshold),
            1_000_000,
        ),
        t(
            "circuit_breaker.busy_cooldown",
            c.breaker_busy_cooldown,
            hours(1),
        ),
        n("engine.threads", e.threads.map_or(0, u64::from), 1024),
        n("engine.slots", u64::from(e.slots), 256),
        n("engine.slot_ctx", u64::from(e.slot_ctx), 1 << 20),
        n("engine.batch", u64::from(e.batch), 65_536),
        n("engine.queue", u(e.queue), 100_000),
        t("engine.keep_alive", e.keep_alive, days(7)),
        n(
            "audit.checkpoint_every",
            c.audit.checkpoint_every,
            10_000_000,
        ),
        t(
            "audit.checkpoint_interval",
            c.audit.checkpoint_interval,
            days(1),
        ),
        t(
            "audit.newer_release_backoff",
            c.audit.newer_release_backoff,
            wardgate_audit::NEWER_RELEASE_BACKOFF_BOUNDS.1,
        ),
    ];
    if let Some(idle) = c.key_idle_timeout {
        table.push(t("auth.key_idle_timeout", idle, days(3650)));
    }
    if let Some(tls) = &c.tls {
        table.push(t(
            "server.tls.reload_interval",
            tls.reload_interval,
            days(1),
        ));
    }
    for (i, j) in c.jwt.iter().enumerate() {
        let k = |f: &str| format!("auth.jwt[{i}].{f}");
        table.push(t(&k("max_lifetime"), j.max_lifetime, days(7)));
        table.push(t(&k("refresh_interval"), j.refresh_interval, days(1)));
        table.push(t(&k("refresh_cooldown"), j.refresh_cooldown, hours(1)));
    }
    for (i, b) in c.backends.iter().enumerate() {
        let k = |f: &str| format!("backends[{i}].{f}");
        table.push(t(&k("discover_interval"), b.discover_interval, days(1)));
        table.push(t(
            &k("connect_timeout"),
            b.connect_timeout,
            Duration::from_secs(300),
        ));
    }
    for (i, m) in c.models.iter().enumerate() {
        table.push(n(
            &format!("models[{i}].context_window"),
            u64::from(m.context_window),
            1 << 20,
        ));
    }
    for bound in table {
        match bound {
            Num(key, v, max) if v > max => {
                return Err(ConfigError::new(key, format!("must be at most {max}")));
            }
            Time(key, v, max) if v > max => {
                return Err(ConfigError::new(
                    key,
                    format!("must be at most {}", humantime::format_duration(max)),
                ));
            }
            Num(..) | Time(..) => {}
        }
    }
    // llama.cpp aborts the whole process when a context's batch is smaller than its number of
    // sequences, on the first request: refuse the combination here (after the bounds, so an
    // absurd slot count is named as such).
    if e.batch < e.slots {
        return Err(ConfigError::new(
            "engine.batch",
            format!(
                "must be at least engine.slots ({}): each step decodes one token of every slot",
                e.slots
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use wardgate_backends::BackendKind;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_raw(parse_toml(text)?, &no_env)
    }

    const BASE: &str = r#"
[[backends]]
name = "a"
kind = "ollama"
url = "http://127.0.0.1:11434"
"#;

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../../../../config/wardgate.example.toml");
        let c = load(text).unwrap();
        let names: Vec<_> = c
            .models
            .iter()
            .flat_map(|m| std::iter::once(&m.name).chain(&m.aliases))
            .collect();
        for alias in ["fast", "balanced", "powerful", "medical"] {
            assert!(names.iter().any(|n| *n == alias), "{alias} missing");
        }
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"\n", "server.listen"),
            (
                "[server]\nrequest_timeout = \"soon\"\n",
                "server.request_timeout",
            ),
            (
                "[server]\nfirst_token_timeout = \"60s\"\n",
                "server.first_token_timeout",
            ),
            ("[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes"),
            (
                "[circuit_breaker]\nbusy_threshold = 0\n",
                "circuit_breaker.busy_threshold",
            ),
            (
                "[circuit_breaker]\nbusy_cooldown = \"0s\"\n",
                "circuit_breaker.busy_cooldown",
            ),
            ("[audit]\ndurability = \"none\"\n", "audit.durability"),
            (
                "[audit]\nnewer_release_backoff = \"50ms\"\n",
                "audit.newer_release_backoff",
            ),
            (
                "[audit]\nnewer_release_backoff = \"2h\"\n",
                "audit.newer_release_backoff",
            ),
            ("[limits]\nover_cap = \"maybe\"\n", "limits.over_cap"),
            ("[logging]\nformat = \"xml\"\n", "logging.format"),
            (
                "[[models]]\nname = \"m\"\nchain = [{ backend = \"zz\", model = \"x\" }]\n",
                "models[0].chain[0].backend",
            ),
            (
                "[[models]]\nname = \"../m\"\nchain = [{ backend = \"a\", model = \"x\" }]\n",
                "models[0].name",
            ),
            (
                "[[models]]\nname = \"m\"\naliases = [\"m\"]\nchain = [{ backend = \"a\", model = \"x\" }]\n",
                "models[0].aliases[0]",
            ),
            ("[[models]]\nname = \"m\"\nchain = []\n", "models[0].chain"),
            (
                "[[backends]]\nname = \"a\"\nkind = \"ollama\"\nurl = \"http://x\"\n",
                "backends[1].name",
            ),
            (
                "[[backends]]\nname = \"b\"\nkind = \"grpc\"\nurl = \"http://x\"\n",
                "backends[1].kind",
            ),
            (
                "[[backends]]\nname = \"b\"\nkind = \"ollama\"\nurl = \"ftp://x\"\n",
                "backends[1].url",
            ),
        ];
        for (extra, key) in cases {
            let err = load(&format!("{BASE}{extra}")).unwrap_err();
            assert_eq!(err.key, key, "{extra}: {err}");
        }
    }

    #[test]
    fn a_pool_lists_its_replica_urls_once_each() {
        let pool = |urls: &str| {
            format!("{BASE}[[backends]]\nname = \"p\"\nkind = \"openai\"\nurls = [{urls}]\n")
        };
        let c = load(&pool(r#""http://a:8000/v1/", "http://b:8000/v1""#)).unwrap();
        let p = &c.backends[1];
        assert_eq!(p.urls, ["http://a:8000/v1", "http://b:8000/v1"]);
        assert_eq!(
            (p.replica_name(0), p.replica_name(1)),
            ("p#0".into(), "p#1".into())
        );
        assert_eq!(
            c.backends[0].replica_name(0),
            "a",
            "one URL: the backend's own name"
        );
        assert_eq!(
            p.affinity_load_factor,
            backends::DEFAULT_AFFINITY_LOAD_FACTOR
        );
        assert_eq!(
            backends::DEFAULT_AFFINITY_LOAD_FACTOR,
            0.25,
            "as documented"
        );
        assert_eq!(
            (p.silent_attempts, backends::DEFAULT_SILENT_ATTEMPTS),
            (1, 1),
            "as documented"
        );
        let c = load(&format!("{}silent_attempts = 3\n", pool(r#""http://a""#))).unwrap();
        assert_eq!(c.backends[1].silent_attempts, 3);
        let cases = [
            (pool(""), "backends[1].urls"),
            (
                pool(r#""http://a", "http://b", "HTTP://A/""#),
                "backends[1].urls[2]",
            ),
            (pool(r#""http://a", "a:8000""#), "backends[1].urls[1]"),
            (
                format!("{}url = \"http://c\"\n", pool(r#""http://a""#)),
                "backends[1].urls",
            ),
            (
                format!("{}affinity_load_factor = -1.0\n", pool(r#""http://a""#)),
                "backends[1].affinity_load_factor",
            ),
            (
                format!("{}silent_attempts = 0\n", pool(r#""http://a""#)),
                "backends[1].silent_attempts",
            ),
            (
                format!("{}silent_attempts = 65\n", pool(r#""http://a""#)),
                "backends[1].silent_attempts",
            ),
            (
                format!(
                    "{}ca_file = \"ca.pem\"\n",
                    pool(r#""https://a", "http://b""#)
                ),
                "backends[1].ca_file",
            ),
            (
                "[[backends]]\nname = \"e\"\nkind = \"embedded\"\nurls = [\"http://x\"]\n".into(),
                "backends[0].urls",
            ),
        ];
        for (text, key) in cases {
            let err = load(&text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        let err = load(&pool(r#""http://a", "http://a""#)).unwrap_err();
        assert!(
            err.to_string()
                .contains("listed twice (also backends[1].urls[0])"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_syntax_errors_the_line() {
        let err = load(&format!("{BASE}\n[server]\nlisten_addr = \"x\"\n")).unwrap_err();
        assert_eq!(err.key, "server.listen_addr", "{err}");
        let err = load(&format!("{BASE}\n[rate_limit]\nrequests_per_minute = -5\n")).unwrap_err();
        assert_eq!(err.key, "rate_limit.requests_per_minute", "{err}");
        let err = load(&format!("{BASE}api_key = \"sk-secret\"\n")).unwrap_err();
        assert_eq!(err.key, "backends[0].api_key", "{err}");
        assert!(!err.to_string().contains("sk-secret"), "{err}");
        let err = load("surprise = 1\n").unwrap_err();
        assert_eq!(err.key, "surprise", "{err}");
        let err = load("[[backends]\n").unwrap_err();
        assert!(err.key.starts_with("line 1"), "{err}");
    }

    #[test]
    fn no_backend_means_the_embedded_engine() {
        let c = load("").unwrap();
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.backends[0].kind, BackendType::Embedded);
        assert!(c.backends[0].discover);
        assert_eq!(c.engine.models_dir, PathBuf::from("models"));
        let err = load("[[backends]]\nname = \"e\"\nkind = \"embedded\"\nurl = \"http://x\"\n")
            .unwrap_err();
        assert_eq!(err.key, "backends[0].url");
        let err = load("[[backends]]\nname = \"o\"\nkind = \"openai\"\n").unwrap_err();
        assert_eq!(err.key, "backends[0].url");
        let err = load("[engine]\nslots = 0\n").unwrap_err();
        assert_eq!(err.key, "engine.slots");
        // A batch smaller than the slots aborted the process on the first request.
        let err = load("[engine]\nslots = 8\nbatch = 4\n").unwrap_err();
        assert_eq!(err.key, "engine.batch");
        assert!(err.to_string().contains("engine.slots (8)"), "{err}");
        assert!(load("[engine]\nslots = 8\nbatch = 8\n").is_ok());
    }

    /// Issue 15 items 6, 12, 13: the keep-alive bounds and the per-key concurrency default
    /// below the in-process engine's slots.
    #[test]
    fn keep_alive_bounds_and_the_per_key_concurrency_default() {
        let c = load("").unwrap();
        assert_eq!(c.limits.max_client_keep_alive, Duration::ZERO);
        assert_eq!(c.engine.max_keep_alive, Duration::from_secs(24 * 3600));
        assert_eq!(c.quotas.key.concurrent_requests, 4, "half of 8 slots");
        let c = load("[engine]\nslots = 1\n").unwrap();
        assert_eq!(c.quotas.key.concurrent_requests, 1);
        let c = load("[rate_limit]\nconcurrent_requests = 0\n").unwrap();
        assert_eq!(c.quotas.key.concurrent_requests, 0);
        let c =
            load("[[backends]]\nname = \"o\"\nkind = \"ollama\"\nurl = \"http://x\"\n").unwrap();
        assert_eq!(c.quotas.key.concurrent_requests, 32);
        let c = load("[limits]\nmax_client_keep_alive = \"10m\"\n").unwrap();
        assert_eq!(c.limits.max_client_keep_alive, Duration::from_secs(600));
        let err = load("[limits]\nmax_client_keep_alive = \"25h\"\n").unwrap_err();
        assert_eq!(err.key, "limits.max_client_keep_alive");
        let err = load("[engine]\nmax_keep_alive = \"31d\"\n").unwrap_err();
        assert_eq!(err.key, "engine.max_keep_alive");
        let err = load("[engine]\nmax_keep_alive = \"0s\"\n").unwrap_err();
        assert_eq!(err.key, "engine.max_keep_alive");
    }

    #[test]
    fn the_metrics_address_is_readable_in_the_log() {
        // An IPv6 address would otherwise be redacted as an IP address in "metrics listening".
        let c = load("[metrics]\nlisten = \"[::1]:9464\"\n").unwrap();
        let own = c.own_text();
        assert!(own.contains(&"[::1]:9464".to_owned()), "{own:?}");
        assert!(own.contains(&"::1".to_owned()), "{own:?}");
    }

    #[test]
    fn env_overrides_apply() {
        let env = |k: &str| match k {
            "WARDGATE_BACKEND" => Some("openai:http://127.0.0.1:9/v1".to_owned()),
            "WARDGATE_LISTEN" => Some("127.0.0.1:0".to_owned()),
            "WARDGATE_DB" => Some("/tmp/x.db".to_owned()),
            "WARDGATE_AUDIT_DURABILITY" => Some("process".to_owned()),
            _ => None,
        };
        assert_eq!(
            load("").unwrap().audit.durability,
            wardgate_store::AuditDurability::Disk,
            "audit commits are flushed to the disk unless an operator says otherwise"
        );
        let c = Config::from_raw(RawConfig::default(), &env).unwrap();
        assert_eq!(c.audit.durability, wardgate_store::AuditDurability::Process);
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.sqlite_path, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.backends[0].kind, BackendType::Http(BackendKind::Openai));
        assert!(c.backends[0].discover);
        let bad = |k: &str| (k == "WARDGATE_BACKEND").then(|| "http://x".to_owned());
        assert_eq!(
            Config::from_raw(RawConfig::default(), &bad)
                .unwrap_err()
                .key,
            "WARDGATE_BACKEND"
        );
    }

    #[test]
    fn every_env_override_names_a_real_key() {
        for &(var, key, kind) in ENV_OVERRIDES {
            let value = match kind {
                EnvValue::Text => toml::Value::String("x".into()),
                EnvValue::Number => toml::Value::Integer(1),
                EnvValue::List => toml::Value::Array(vec!["x".into()]),
            };
            let mut doc = toml::Table::new();
            set_dotted(&mut doc, key, value);
            if key.starts_with("server.tls.") {
                set_dotted(&mut doc, "server.tls.cert_file", "c".into());
                set_dotted(&mut doc, "server.tls.key_file", "k".into());
            }
            // "x" may be a bad value for the key (a duration, say), but never an unknown key.
            if let Err(e) = serde_path_to_error::deserialize::<_, RawConfig>(doc) {
                assert!(
                    !e.inner().message().contains("unknown field"),
                    "{var} sets `{key}`, which the config does not take: {e}"
                );
                assert_eq!(e.path().to_string(), key, "{var}: {e}");
            }
        }
    }

    #[test]
    fn the_lockout_ipv6_prefix_is_32_to_128() {
        for ok in [32u8, 48, 64, 128] {
            let c = load(&format!("[auth]\nlockout_ipv6_prefix = {ok}\n")).unwrap();
            assert_eq!(c.lockout.ipv6_prefix, ok);
        }
        for bad in [0u16, 31, 129, 300] {
            let err = load(&format!("[auth]\nlockout_ipv6_prefix = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "auth.lockout_ipv6_prefix", "{bad}: {err}");
        }
    }

    #[test]
    fn env_overrides_are_a_layer_over_the_file_checked_like_it() {
        let env = |k: &str| match k {
            "WARDGATE_RATE_LIMIT_RPM" => Some(" 7".to_owned()),
            "WARDGATE_TRUSTED_PROXIES" => Some("10.0.0.0/8, ,192.168.1.1".to_owned()),
            "WARDGATE_LOG" => Some("debug".to_owned()),
            _ => None,
        };
        let raw = parse_toml(
            "[rate_limit]\nrequests_per_minute = 5\ntokens_per_minute = 9\n\
             [logging]\nformat = \"json\"\n",
        )
        .unwrap();
        let c = Config::from_raw(raw, &env).unwrap();
        assert_eq!(c.requests_per_minute, 7, "the variable wins over the file");
        assert_eq!(
            c.quotas.key.tokens_per_minute, 9,
            "the rest of the file stays"
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.server.trusted_proxies.len(), 2);
        // Not a number: the variable is named.
        let bad = |k: &str| (k == "WARDGATE_LOCKOUT_THRESHOLD").then(|| "lots".to_owned());
        let err = Config::from_raw(RawConfig::default(), &bad).unwrap_err();
        assert_eq!(err.key, "WARDGATE_LOCKOUT_THRESHOLD", "{err}");
        // A number the key cannot hold: the key is named, as for the same value in the file.
        let big = |k: &str| (k == "WARDGATE_LOCKOUT_THRESHOLD").then(|| "99999999999".to_owned());
        let err = Config::from_raw(RawConfig::default(), &big).unwrap_err();
        assert_eq!(err.key, "auth.lockout_threshold", "{err}");
        // TLS variables go together, and client certificates need TLS.
        let half = |k: &str| (k == "WARDGATE_TLS_KEY").then(|| "k.pem".to_owned());
        let err = Config::from_raw(RawConfig::default(), &half).unwrap_err();
        assert_eq!(err.key, "WARDGATE_TLS_CERT", "{err}");
        let ca = |k: &str| (k == "WARDGATE_TLS_CLIENT_CA").then(|| "ca.pem".to_owned());
        let err = Config::from_raw(RawConfig::default(), &ca).unwrap_err();
        assert_eq!(err.key, "WARDGATE_TLS_CLIENT_CA", "{err}");
        // A second `default` backend is refused.
        let raw = parse_toml("[[backends]]\nname = \"default\"\nkind = \"embedded\"\n").unwrap();
        let dup = |k: &str| (k == "WARDGATE_BACKEND").then(|| "embedded".to_owned());
        let err = Config::from_raw(raw, &dup).unwrap_err();
        assert_eq!(err.key, "WARDGATE_BACKEND", "{err}");
    }

    /// Issue 16: one default per field, in one place. An empty config gets each section's
    /// named default, and the value the raw field's doc comment states.
    #[test]
    fn an_empty_config_gets_the_documented_defaults() {
        let c = load("").unwrap();
        let secs = Duration::from_secs;
        let b = auth::BroadcastSettings::default();
        // (value, its constant, what the doc comment says)
        assert_eq!(c.listen, server::DEFAULT_LISTEN);
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        for (got, constant, doc) in [
            (c.request_timeout, server::DEFAULT_REQUEST_TIMEOUT, secs(30)),
            (
                c.first_token_timeout,
                server::DEFAULT_FIRST_TOKEN_TIMEOUT,
                secs(15),
            ),
            (c.shutdown_grace, server::DEFAULT_SHUTDOWN_GRACE, secs(30)),
            (
                c.server.header_read_timeout,
                server::DEFAULT_HEADER_READ_TIMEOUT,
                secs(10),
            ),
            (
                c.server.body_read_timeout,
                server::DEFAULT_BODY_READ_TIMEOUT,
                secs(30),
            ),
            (
                c.server.hsts_max_age,
                server::DEFAULT_HSTS_MAX_AGE,
                days(365),
            ),
            (c.health_interval, health::DEFAULT_INTERVAL, secs(10)),
            (c.health_timeout, health::DEFAULT_TIMEOUT, secs(2)),
            (c.breaker_cooldown, health::DEFAULT_COOLDOWN, secs(10)),
            (
                c.breaker_busy_cooldown,
                health::DEFAULT_BUSY_COOLDOWN,
                secs(2),
            ),
            (c.key_cache_ttl, auth::DEFAULT_KEY_CACHE_TTL, secs(2)),
            (c.broadcast.unconfirmed_ttl, b.unconfirmed_ttl, secs(2)),
            (
                c.broadcast.heartbeat_interval,
                b.heartbeat_interval,
                secs(1),
            ),
            (c.broadcast.heartbeat_timeout, b.heartbeat_timeout, secs(2)),
            (c.lockout.window, secs(300), secs(300)),
            (c.lockout.duration, secs(900), secs(900)),
            (c.lockout.audit_window, secs(60), secs(60)),
            (
                c.limits.refusal_audit_window,
                limits::DEFAULT_REFUSAL_AUDIT_WINDOW,
                secs(60),
            ),
            (
                c.limits.max_client_keep_alive,
                limits::DEFAULT_MAX_CLIENT_KEEP_ALIVE,
                Duration::ZERO,
            ),
            (c.engine.keep_alive, engine::DEFAULT_KEEP_ALIVE, secs(300)),
            (
                c.engine.max_keep_alive,
                engine::DEFAULT_MAX_KEEP_ALIVE,
                hours(24),
            ),
            (
                c.audit.checkpoint_interval,
                audit::DEFAULT_CHECKPOINT_INTERVAL,
                secs(10),
            ),
            (
                c.audit.newer_release_backoff,
                audit::DEFAULT_NEWER_RELEASE_BACKOFF,
                secs(30),
            ),
        ] {
            assert_eq!((got, constant), (doc, doc));
        }
        for (got, constant, doc) in [
            (
                u64::from(c.requests_per_minute),
                u64::from(rate_limit::DEFAULT_REQUESTS_PER_MINUTE),
                600,
            ),
            (
                u64::from(c.tenant_requests_per_minute),
                u64::from(rate_limit::DEFAULT_TENANT_REQUESTS_PER_MINUTE),
                0,
            ),
            (
                c.max_token_bytes as u64,
                auth::DEFAULT_MAX_TOKEN_BYTES as u64,
                8192,
            ),
            (
                u64::from(c.breaker_threshold),
                u64::from(health::DEFAULT_FAILURE_THRESHOLD),
                3,
            ),
            (
                u64::from(c.breaker_busy_threshold),
                u64::from(health::DEFAULT_BUSY_THRESHOLD),
                2,
            ),
            (
                c.server.max_header_bytes as u64,
                server::DEFAULT_MAX_HEADER_BYTES as u64,
                16_384,
            ),
            (
                c.server.max_connections_per_ip as u64,
                server::DEFAULT_MAX_CONNECTIONS_PER_IP as u64,
                256,
            ),
            (
                c.limits.max_body_bytes as u64,
                limits::DEFAULT_MAX_BODY_BYTES as u64,
                4 << 20,
            ),
            (
                u64::from(c.limits.max_output_tokens),
                u64::from(limits::DEFAULT_MAX_OUTPUT_TOKENS),
                4096,
            ),
            (
                u64::from(c.engine.slots),
                u64::from(engine::DEFAULT_SLOTS),
                8,
            ),
            (
                u64::from(c.engine.batch),
                u64::from(engine::DEFAULT_BATCH),
                512,
            ),
            (
                c.audit.checkpoint_every,
                audit::DEFAULT_CHECKPOINT_EVERY,
                1000,
            ),
            (u64::from(c.lockout.threshold), 10, 10),
            (u64::from(c.lockout.failures_per_minute), 60, 60),
            (u64::from(c.lockout.ipv6_prefix), 64, 64),
        ] {
            assert_eq!((got, constant), (doc, doc));
        }
        assert_eq!(c.quotas.tenant, rate_limit::DEFAULT_TENANT_QUOTAS);
        assert_eq!(c.quotas.key.tokens_per_minute, 0);
        assert_eq!(c.key_idle_timeout, None, "off by default");
        assert_eq!(c.operator_tenant, "operator");
        assert_eq!(c.operator_tenant, auth::DEFAULT_OPERATOR_TENANT);
        assert_eq!(c.sqlite_path, PathBuf::from(storage::DEFAULT_SQLITE_PATH));
        assert_eq!(c.sqlite_path, PathBuf::from("data/wardgate.db"));
        assert_eq!(c.audit.origin, "wardgate/audit");
        assert_eq!(
            c.audit.witness_file,
            PathBuf::from("data").join(audit::DEFAULT_WITNESS_FILE)
        );
        assert_eq!(
            (c.log_format, c.log_level.as_str()),
            (LogFormat::Text, "info")
        );
        assert_eq!(c.limits.over_cap, limits::DEFAULT_OVER_CAP);
        assert_eq!(
            c.engine.models_dir,
            PathBuf::from(engine::DEFAULT_MODELS_DIR)
        );
        assert!(c.engine.fetch_default_model);
        assert_eq!(c.limiter_backend, LimiterBackend::Memory);
        assert_eq!(
            c.client_certs.roles,
            auth::DEFAULT_CLIENT_CERT_ROLES.to_vec()
        );
        // A shorter request limit shortens the first-token default with it.
        let c = load("[server]\nrequest_timeout = \"5s\"\n").unwrap();
        assert_eq!(c.first_token_timeout, secs(5));
        // The remote default of the per-key concurrency, with no embedded backend.
        let c = load(BASE).unwrap();
        assert_eq!(c.quotas.key, rate_limit::DEFAULT_KEY_QUOTAS);
    }

    /// What `wardgate llm` built before its role was a config layer (crates/wardgate's
    /// cmd/llm.rs): a fake environment, then the validated config mutated.
    fn llm_as_before(text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let listen = env("WARDGATE_LLM_LISTEN").unwrap_or_else(|| "127.0.0.1:11434".to_owned());
        let (tls_cert, tls_key) = (env("WARDGATE_LLM_TLS_CERT"), env("WARDGATE_LLM_TLS_KEY"));
        let llm_env = |name: &str| match name {
            "WARDGATE_BACKEND" => Some("embedded".to_owned()),
            "WARDGATE_RATE_LIMIT_RPM" => Some("0".to_owned()),
            "WARDGATE_LISTEN" => Some(listen.clone()),
            "WARDGATE_TLS_CERT" => tls_cert.clone(),
            "WARDGATE_TLS_KEY" => tls_key.clone(),
            "WARDGATE_TLS_CLIENT_CA" => None,
            other => env(other),
        };
        let mut config = Config::from_raw(parse_toml(text)?, &llm_env)?;
        config.backends.retain(|b| b.kind == BackendType::Embedded);
        config.models.clear();
        config.requests_per_minute = 0;
        config.tenant_requests_per_minute = 0;
        config.quotas = Default::default();
        Ok(config)
    }

    fn llm(text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        Config::from_raw_llm(parse_toml(text)?, env)
    }

    /// Issue 16: `wardgate llm`'s settings are a layer of the config, validated once; the
    /// result is what cmd/llm.rs built by mutating the gateway's config.
    #[test]
    fn the_llm_role_names_the_gateway_variables_it_ignores() {
        let env = |k: &str| {
            matches!(k, "WARDGATE_TLS_CERT" | "WARDGATE_LISTEN" | "WARDGATE_DB")
                .then(|| "x".to_owned())
        };
        assert_eq!(
            llm::ignored_gateway_env(&env),
            [
                ("WARDGATE_LISTEN", "WARDGATE_LLM_LISTEN"),
                ("WARDGATE_TLS_CERT", "WARDGATE_LLM_TLS_CERT"),
            ]
        );
        assert!(llm::ignored_gateway_env(&no_env).is_empty());
    }

    #[test]
    fn the_http_witness_is_https_with_a_bounded_timeout_and_a_witness_key() {
        let secs = Duration::from_secs;
        assert_eq!(
            load("").unwrap().audit.witness,
            None,
            "off unless configured"
        );
        let witness_key = wardgate_audit::cosignature::CosigningKey::generate("witness.example/w1")
            .unwrap()
            .verifier()
            .to_string();
        let file = format!(
            "[audit]\nwitness_url = \"https://witness.example/w1/\"\nwitness_key = \"{witness_key}\"\n"
        );
        let c = load(&file).unwrap();
        let w = c.audit.witness.clone().unwrap();
        assert_eq!(w.url, "https://witness.example/w1/");
        assert_eq!(w.timeout, audit::DEFAULT_WITNESS_TIMEOUT);
        assert_eq!(w.timeout, secs(5));
        assert_eq!(w.key.unwrap().to_string(), witness_key);
        assert!(
            c.own_text().contains(&w.url),
            "the URL is readable in the log"
        );
        // From the environment, over the file.
        let env = |k: &str| match k {
            "WARDGATE_AUDIT_WITNESS_URL" => Some("http://127.0.0.1:7380".to_owned()),
            "WARDGATE_AUDIT_WITNESS_KEY" => Some(witness_key.clone()),
            _ => None,
        };
        let c = Config::from_raw(RawConfig::default(), &env).unwrap();
        let w = c.audit.witness.unwrap();
        assert_eq!(w.url, "http://127.0.0.1:7380");
        assert!(w.key.is_some());
        let c = load("[audit]\nwitness_url = \"https://w.example\"\nwitness_timeout = \"60s\"\n")
            .unwrap();
        assert_eq!(c.audit.witness.unwrap().timeout, secs(60));

        // Refused, by name, saying what to do.
        let log_key = wardgate_audit::SignerKey::generate("wardgate/audit")
            .unwrap()
            .verifier()
            .to_string();
        for (text, key, says) in [
            (
                "witness_url = \"http://witness.example/w1\"".to_owned(),
                "audit.witness_url",
                "use https://",
            ),
            (
                "witness_url = \"http://10.1.2.3:7380\"".to_owned(),
                "audit.witness_url",
                "use https://",
            ),
            (
                "witness_url = \"https://user:pw@witness.example\"".to_owned(),
                "audit.witness_url",
                "credentials",
            ),
            (
                "witness_url = \"https://w.example\"\nwitness_timeout = \"61s\"".to_owned(),
                "audit.witness_timeout",
                "at most 60 s",
            ),
            (
                "witness_url = \"https://w.example\"\nwitness_timeout = \"0s\"".to_owned(),
                "audit.witness_timeout",
                "greater than zero",
            ),
            (
                "witness_url = \"https://w.example\"\nwitness_key = \"w+00000000+AAAA\"".to_owned(),
                "audit.witness_key",
                "not a witness public key",
            ),
            (
                format!("witness_url = \"https://w.example\"\nwitness_key = \"{log_key}\""),
                "audit.witness_key",
                "not a witness's cosignature key",
            ),
            (
                format!("witness_key = \"{witness_key}\""),
                "audit.witness_key",
                "set audit.witness_url",
            ),
        ] {
            let err = load(&format!("[audit]\n{text}\n")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(err.reason.contains(says), "{text}: {err}");
        }
        // `wardgate llm` keeps its log apart: the gateway's witness is not its witness.
        let own = llm(&file, &no_env).unwrap();
        assert_eq!(own.audit.witness, None);
    }

    #[test]
    fn the_llm_role_keeps_its_audit_log_apart_from_the_gateways() {
        // The shipped example names the gateway's key and witness file; a black-box test found
        // that `wardgate llm` reading the same file then shared them, and both logs failed
        // verification.
        let file = "[storage]\nsqlite_path = \"/srv/wg/wardgate.db\"\n\
                    [audit]\nsigning_key_file = \"/srv/wg/audit.key\"\n\
                    witness_file = \"/srv/wg/witness.log\"\n";
        let gateway = load(file).unwrap();
        let own = llm(file, &no_env).unwrap();
        assert_eq!(own.sqlite_path, Path::new("/srv/wg/llm/wardgate.db"));
        assert_eq!(
            own.audit.signing_key_file,
            Path::new("/srv/wg/llm/audit-signing.key")
        );
        assert_eq!(
            own.audit.witness_file,
            Path::new("/srv/wg/llm/audit-witness.log")
        );
        assert_ne!(own.audit.signing_key_file, gateway.audit.signing_key_file);
        assert_ne!(own.audit.witness_file, gateway.audit.witness_file);
        // Its own environment places them where it says.
        let env = |k: &str| {
            Some(
                match k {
                    "WARDGATE_DB" => "/var/lib/llm.db",
                    "WARDGATE_AUDIT_KEY" => "/keys/llm.key",
                    "WARDGATE_AUDIT_WITNESS" => "/witness/llm.log",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let placed = llm(file, &env).unwrap();
        assert_eq!(placed.sqlite_path, Path::new("/var/lib/llm.db"));
        assert_eq!(placed.audit.signing_key_file, Path::new("/keys/llm.key"));
        assert_eq!(placed.audit.witness_file, Path::new("/witness/llm.log"));
    }

    #[test]
    fn llm_role_layer_builds_what_wardgate_llm_did() {
        let gateway_env = |k: &str| {
            Some(
                match k {
                    // The gateway's own: not the service's.
                    "WARDGATE_LISTEN" => "0.0.0.0:8443",
                    "WARDGATE_TLS_CERT" => "/gw/cert.pem",
                    "WARDGATE_TLS_KEY" => "/gw/key.pem",
                    "WARDGATE_TLS_CLIENT_CA" => "/gw/ca.pem",
                    "WARDGATE_BACKEND" => "ollama:http://10.0.0.2:11434",
                    "WARDGATE_RATE_LIMIT_RPM" => "5",
                    // Shared: applied, then the role turns the limits off.
                    "WARDGATE_RATE_LIMIT_TPM" => "100",
                    "WARDGATE_RATE_LIMIT_CONCURRENCY" => "3",
                    "WARDGATE_DB" => "/var/lib/llm.db",
                    "WARDGATE_LLM_MAX_REQUEST_RATE" => "10",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let llm_env = |k: &str| match k {
            "WARDGATE_LLM_LISTEN" => Some("10.0.0.2:11434".to_owned()),
            "WARDGATE_LLM_TLS_CERT" => Some("/llm/cert.pem".to_owned()),
            "WARDGATE_LLM_TLS_KEY" => Some("/llm/key.pem".to_owned()),
            other => gateway_env(other),
        };
        let file = format!(
            "{BASE}\n[[backends]]\nname = \"b\"\nkind = \"openai\"\nurl = \"http://h:8000/v1\"\n\
             [[models]]\nname = \"m\"\nchain = [{{ backend = \"a\", model = \"x\" }}]\n\
             [server]\nlisten = \"0.0.0.0:1\"\nrequest_timeout = \"90s\"\n\
             [engine]\nslots = 2\n\
             [rate_limit]\nrequests_per_minute = 50\ntenant_requests_per_minute = 500\n\
             tokens_per_day = 7\ntenant_tokens_per_day = 9\ntenant_concurrent_requests = 4\n\
             tenant_tokens_per_minute = 11\n"
        );
        let with_tls = "[server.tls]\ncert_file = \"/file/c.pem\"\nkey_file = \"/file/k.pem\"\n\
                        client_ca_file = \"/file/ca.pem\"\n";
        let cases: [(&str, &str, EnvLookup<'_>); 6] = [
            ("empty", "", &no_env),
            ("empty, gateway env", "", &gateway_env),
            ("empty, llm env", "", &llm_env),
            ("file", &file, &no_env),
            ("file, gateway env", &file, &gateway_env),
            ("file with tls, llm env", with_tls, &llm_env),
        ];
        for (name, text, env) in cases {
            let mut before = llm_as_before(text, env).unwrap_or_else(|e| panic!("{name}: {e}"));
            // The one intended change: the service's audit log is its own.
            if env("WARDGATE_DB").is_none() {
                let dir = before.sqlite_path.parent().unwrap().to_path_buf();
                before.sqlite_path = dir.join(llm::LLM_DATABASE);
            }
            let dir = before.sqlite_path.parent().unwrap().to_path_buf();
            before.audit.signing_key_file = dir.join("audit-signing.key");
            before.audit.witness_file = dir.join("audit-witness.log");
            // And its metrics have a port of their own by default.
            before.metrics.listen = Some(metrics::DEFAULT_LLM_LISTEN.parse().unwrap());
            let now = llm(text, env).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ((b_start, b_live), (n_start, n_live)) = (before.parts(), now.parts());
            assert_eq!(n_start, b_start, "{name}");
            assert_eq!(n_live, b_live, "{name}");
            // Only the embedded engine, no models, no rate limits or quotas.
            assert_eq!(now.backends.len(), 1, "{name}");
            assert_eq!(now.backends[0].kind, BackendType::Embedded, "{name}");
            assert_eq!(now.backends[0].name, "default", "{name}");
            assert!(now.backends[0].discover, "{name}");
            assert!(now.models.is_empty(), "{name}");
            assert_eq!(
                (now.requests_per_minute, now.tenant_requests_per_minute),
                (0, 0),
                "{name}"
            );
            assert_eq!(now.quotas, Quotas::default(), "{name}");
        }

        // The listener: WARDGATE_LLM_LISTEN, else loopback on Ollama's port; never the
        // gateway's WARDGATE_LISTEN or the file's.
        assert_eq!(
            llm("", &no_env).unwrap().listen,
            "127.0.0.1:11434".parse().unwrap()
        );
        assert_eq!(
            llm(&file, &gateway_env).unwrap().listen,
            "127.0.0.1:11434".parse().unwrap()
        );
        assert_eq!(
            llm("", &llm_env).unwrap().listen,
            "10.0.0.2:11434".parse().unwrap()
        );
        // TLS from WARDGATE_LLM_TLS_*; the gateway's certificate and client CA are not used.
        assert_eq!(llm("", &gateway_env).unwrap().tls, None);
        let tls = llm("", &llm_env).unwrap().tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/llm/cert.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/llm/key.pem"));
        assert_eq!(tls.client_ca_file, None);
        // Shared settings still apply.
        let c = llm("", &gateway_env).unwrap();
        assert_eq!(c.sqlite_path, PathBuf::from("/var/lib/llm.db"));
        assert_eq!(c.llm.max_request_rate, 10);
    }

    /// The role's own variables are checked like the gateway's, naming the variable; the
    /// gateway's (half a TLS pair, a client CA without TLS, a bad backend) are not read.
    #[test]
    fn llm_role_checks_its_own_variables_only() {
        let half = |k: &str| (k == "WARDGATE_LLM_TLS_KEY").then(|| "k.pem".to_owned());
        let err = llm("", &half).unwrap_err();
        assert_eq!(err.key, "WARDGATE_LLM_TLS_CERT", "{err}");
        let bad_listen = |k: &str| (k == "WARDGATE_LLM_LISTEN").then(|| "nowhere".to_owned());
        let err = llm("", &bad_listen).unwrap_err();
        assert_eq!(err.key, "server.listen", "{err}");
        let gateway_only = |k: &str| match k {
            "WARDGATE_TLS_KEY" | "WARDGATE_TLS_CLIENT_CA" => Some("x.pem".to_owned()),
            "WARDGATE_BACKEND" => Some("grpc:x".to_owned()),
            "WARDGATE_RATE_LIMIT_RPM" => Some("lots".to_owned()),
            _ => None,
        };
        assert!(Config::from_raw(RawConfig::default(), &gateway_only).is_err());
        let c = llm("", &gateway_only).unwrap();
        assert_eq!(c.tls, None);
        // A file whose backends the service cannot use still configures it.
        let c = llm(
            "[[backends]]\nname = \"local\"\nkind = \"embedded\"\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.backends[0].name, "default");
        // Shared variables are still checked.
        let bad = |k: &str| (k == "WARDGATE_RATE_LIMIT_TPM").then(|| "lots".to_owned());
        assert_eq!(llm("", &bad).unwrap_err().key, "WARDGATE_RATE_LIMIT_TPM");
    }

    #[test]
    fn model_name_allowlist() {
        for ok in ["fast", "smollm2:135m", "library/llama3.2:latest", "a-b_c.d"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            "../etc/passwd",
            "%2e%2e",
            "sha256:abc",
            "/abs",
            "a\0b",
            "a b",
            long.as_str(),
        ] {
            assert!(!valid_model_name(bad), "{bad:?}");
        }
    }
}
