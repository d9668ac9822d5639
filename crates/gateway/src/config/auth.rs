//! `[auth]`: lockout and trusted JWT issuers, validated.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use wardgate_store::Secret;

use super::{ConfigError, EnvLookup, HumanDuration, duration, duration_or_off};

/// Lockout settings, validated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LockoutSettings {
    /// Failures within `window` that trigger a lockout; 0 turns lockout off.
    pub threshold: u32,
    pub window: Duration,
    pub duration: Duration,
    pub by_prefix: bool,
    /// Whether failures count per peer address. Behind a reverse proxy every client shares the
    /// proxy's address, so this must be off there unless `server.trusted_proxies` is set.
    pub by_source: bool,
    /// Failed authentications a minute allowed per source address before failures are
    /// answered 429; 0 turns the allowance off.
    pub failures_per_minute: u32,
    /// The window over which one source's failed authentications are folded into one audit
    /// event; zero writes every failure on its own.
    pub audit_window: Duration,
    /// IPv6 sources are counted (lockout, allowance, audit folding) per network of this many
    /// bits; IPv4 sources per address.
    pub ipv6_prefix: u8,
}

/// The defaults of `auth.lockout_*`, `auth.unauthenticated_requests_per_minute` and
/// `auth.failure_audit_window`.
impl Default for LockoutSettings {
    fn default() -> Self {
        LockoutSettings {
            threshold: 10,
            window: Duration::from_secs(300),
            duration: Duration::from_secs(900),
            by_prefix: true,
            by_source: true,
            failures_per_minute: 60,
            audit_window: Duration::from_secs(60),
            ipv6_prefix: 64,
        }
    }
}

/// The revocation broadcast's liveness check (with Redis), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastSettings {
    /// How often each instance publishes a heartbeat to itself through Redis.
    pub heartbeat_interval: Duration,
    /// How late a heartbeat may come back before the subscription is taken as lost.
    pub heartbeat_timeout: Duration,
    /// How long a verified credential is trusted while the broadcast is not known to be
    /// listening (never longer than `key_cache_ttl`); zero: not at all.
    pub unconfirmed_ttl: Duration,
}

impl BroadcastSettings {
    /// The longest a subscription that went silent goes unnoticed: the last heartbeat heard
    /// was sent at most one interval before it went silent, and is waited for one timeout.
    pub fn silence_bound(&self) -> Duration {
        self.heartbeat_interval + self.heartbeat_timeout
    }
}

/// The defaults of `auth.revocation_heartbeat_interval`, `auth.revocation_heartbeat_timeout`
/// and `auth.key_cache_ttl_unconfirmed`.
impl Default for BroadcastSettings {
    fn default() -> Self {
        BroadcastSettings {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(2),
            unconfirmed_ttl: DEFAULT_KEY_CACHE_TTL,
        }
    }
}

/// `[auth]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthSettings {
    /// Zero: verified credentials are not cached.
    pub key_cache_ttl: Duration,
    /// The revocation broadcast's liveness check and the cache's bound while it fails.
    pub broadcast: BroadcastSettings,
    pub operator_tenant: String,
    pub max_token_bytes: usize,
    /// `None`: keys do not time out when idle.
    pub key_idle_timeout: Option<Duration>,
    pub lockout: LockoutSettings,
    pub jwt: Vec<IssuerSettings>,
    pub client_certs: ClientCertSettings,
}

// The defaults of `[auth]`, one per field; the doc comments of [`RawAuth`] and
// [`RawJwtIssuer`] quote them. (Lockout's are [`LockoutSettings::default`].)

/// Default of `auth.key_cache_ttl`.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Default of `auth.operator_tenant`.
pub const DEFAULT_OPERATOR_TENANT: &str = "operator";
/// Default of `auth.max_token_bytes`.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// The range `auth.max_token_bytes` must be in.
pub const MAX_TOKEN_BYTES_RANGE: std::ops::RangeInclusive<usize> = 512..=65_536;
/// The shortest `auth.key_idle_timeout`: last use is recorded about once a minute.
pub const MIN_KEY_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of `auth.client_cert_roles`.
pub const DEFAULT_CLIENT_CERT_ROLES: &[wardgate_store::Role] = &[wardgate_store::Role::User];
/// Default of `auth.jwt[].leeway`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
/// Default of `auth.jwt[].max_lifetime`.
pub const DEFAULT_JWT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// Default of `auth.jwt[].refresh_interval`.
pub const DEFAULT_JWT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Default of `auth.jwt[].refresh_cooldown`.
pub const DEFAULT_JWT_REFRESH_COOLDOWN: Duration = Duration::from_secs(60);
/// Default of `auth.jwt[].tenant_claim`.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant";
/// Default of `auth.jwt[].roles_claim`.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";
/// Default of `auth.jwt[].models_claim`.
pub const DEFAULT_MODELS_CLAIM: &str = "models";

/// The range `auth.lockout_ipv6_prefix` must be in.
pub const IPV6_PREFIX_RANGE: std::ops::RangeInclusive<u8> = 32..=128;

/// Longest leeway an issuer may configure.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Smallest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET: usize = 32;
/// Where an issuer's verification keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A JWKS document on disk, read at start.
    File(PathBuf),
    /// A JWKS document fetched over HTTPS (plain HTTP only for a loopback address, for tests).
    Url(String),
    /// The HS256 shared secret.
    Secret(Arc<Secret<Vec<u8>>>),
}

/// For a configuration reload, which must see a changed shared secret (its `Debug` text is
/// `[redacted]` whatever the secret). Both sides are the operator's configuration, never a
/// request's, so a comparison that is not constant-time tells an attacker nothing.
impl PartialEq for KeySource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeySource::File(a), KeySource::File(b)) => a == b,
            (KeySource::Url(a), KeySource::Url(b)) => a == b,
            (KeySource::Secret(a), KeySource::Secret(b)) => a.expose() == b.expose(),
            (KeySource::File(_) | KeySource::Url(_) | KeySource::Secret(_), _) => false,
        }
    }
}

/// One trusted issuer, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuerSettings {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    pub leeway: Duration,
    pub max_lifetime: Duration,
    pub refresh_interval: Duration,
    pub refresh_cooldown: Duration,
    /// The claim holding the tenant; `tenant` below, when set, is used instead.
    pub tenant_claim: String,
    /// Every token of this issuer belongs to this tenant.
    pub tenant: Option<String>,
    /// The tenants a claim may name.
    pub allowed_tenants: AllowedTenants,
    pub roles_claim: String,
    pub models_claim: String,
}

/// Which tenants an issuer's tokens may claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedTenants {
    /// Exactly these (`allowed_tenants`); the operator tenant only if listed.
    Listed(Vec<String>),
    /// No list configured: any tenant except this one, the operator tenant.
    AllBut(String),
}

impl AllowedTenants {
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            AllowedTenants::Listed(list) => list.iter().any(|t| t == tenant),
            AllowedTenants::AllBut(operator) => tenant != operator,
        }
    }
}

/// The algorithms an issuer may allow.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        "HS256" => Some(Algorithm::HS256),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// How long a verified API key (or JWT, never past its `exp`) is trusted without checking
    /// it again; a revocation, or a key dropped from a JWKS, takes effect within this time.
    /// `0s` turns the cache off. Default `2s`. With Redis, a revocation at another instance
    /// is announced and takes effect at once (see `key_cache_ttl_unconfirmed`).
    pub key_cache_ttl: Option<HumanDuration>,
    /// With Redis: how long a verified credential is trusted while the revocation broadcast is
    /// not known to be listening (Redis unreachable, or its subscription silent), at most
    /// `key_cache_ttl`; `0s` verifies every request against the store meanwhile. Default `2s`.
    pub key_cache_ttl_unconfirmed: Option<HumanDuration>,
    /// With Redis: how often each instance publishes a heartbeat to itself through Redis, to
    /// check that its revocation subscription still hears what is published. Default `1s`,
    /// at most `1m`.
    pub revocation_heartbeat_interval: Option<HumanDuration>,
    /// With Redis: how late a heartbeat may come back before the subscription is taken as
    /// lost (logged, cached credentials dropped, resubscribed). A silent subscription is
    /// noticed within the interval plus this. Default `2s`, at most `1m`.
    pub revocation_heartbeat_timeout: Option<HumanDuration>,
    /// The tenant whose admins and auditors act across all tenants (the deployment's
    /// operators). Everyone else's admin and audit rights stop at their own tenant. Default
    /// `operator`.
    pub operator_tenant: Option<String>,
    /// Longest bearer token accepted, in bytes. Default 8192.
    pub max_token_bytes: Option<usize>,
    /// An API key unused for this long is refused (automatic logoff), e.g. `30d`. Last use is
    /// recorded about once a minute per key, so the timeout is exact to about a minute. Default
    /// off.
    pub key_idle_timeout: Option<HumanDuration>,
    /// Failed authentications (per source address, and per key prefix) within
    /// `lockout_window` that lock the source or prefix out. Default 10; 0 turns lockout off.
    pub lockout_threshold: Option<u32>,
    /// Default `5m`.
    pub lockout_window: Option<HumanDuration>,
    /// How long a lockout lasts. Default `15m`.
    pub lockout_duration: Option<HumanDuration>,
    /// Whether repeated failures with one key prefix lock that prefix out from every source.
    /// Default true. (A prefix is not secret: whoever knows one can lock its key out.)
    pub lockout_by_prefix: Option<bool>,
    /// Whether failures count per client address. Default true; turn it off behind a reverse
    /// proxy (every client then shares the proxy's address).
    pub lockout_by_source: Option<bool>,
    /// IPv6 clients are counted (lockout, the allowance below, audit folding) per network of
    /// this many bits, since one subscriber draws addresses from a whole /64 (or more); IPv4
    /// clients, IPv4-mapped IPv6 included, per address. Default 64; 32 to 128 (128: per
    /// address).
    pub lockout_ipv6_prefix: Option<u8>,
    /// Failed authentications (a missing credential included) a minute allowed per client
    /// address; past it further failures are answered 429 with `Retry-After`. A valid
    /// credential is always served. Default 60; 0 turns the allowance off; at most 1000000.
    /// `WARDGATE_UNAUTHENTICATED_RPM`.
    pub unauthenticated_requests_per_minute: Option<u32>,
    /// Failed authentications from one address within this window are audited as one event
    /// (the first) plus one `suppressed: N` summary; `0s` audits every failure on its own.
    /// Default `1m`, at most `1h`. `WARDGATE_FAILURE_AUDIT_WINDOW`.
    pub failure_audit_window: Option<HumanDuration>,
    /// Trusted JWT issuers (`[[auth.jwt]]`).
    #[serde(default)]
    pub jwt: Vec<RawJwtIssuer>,
    /// The tenant of principals identified by a TLS client certificate. Unset: the
    /// certificate subject's organization (`O`); a certificate without one is refused.
    pub client_cert_tenant: Option<String>,
    /// The roles of principals identified by a TLS client certificate. Default `["user"]`.
    pub client_cert_roles: Option<Vec<String>>,
}

/// One trusted JWT issuer (an OIDC identity provider).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtIssuer {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; at least one.
    pub audiences: Vec<String>,
    /// The allowlist: any of `RS256`, `ES256`, `EdDSA`; or `HS256` alone.
    pub algorithms: Vec<String>,
    /// A JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (HTTPS; plain HTTP only on a loopback address).
    pub jwks_url: Option<String>,
    /// For HS256: the environment variable holding the shared secret (at least 32 bytes).
    pub secret_env: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`. Default `30s`, at most `5m`.
    pub leeway: Option<HumanDuration>,
    /// Longest token lifetime accepted (`exp - iat`). Default `1h`.
    pub max_lifetime: Option<HumanDuration>,
    /// How often a JWKS URL is fetched again. Default `10m`.
    pub refresh_interval: Option<HumanDuration>,
    /// Least time between refreshes caused by an unknown `kid`. Default `1m`.
    pub refresh_cooldown: Option<HumanDuration>,
    /// The claim naming the tenant. Default `tenant`.
    pub tenant_claim: Option<String>,
    /// Every token of this issuer belongs to this tenant (instead of a claim).
    pub tenant: Option<String>,
    /// The tenants the tenant claim may name. Unset: any tenant except the operator tenant
    /// (`auth.operator_tenant`), which a claim may name only when it is listed here.
    pub allowed_tenants: Option<Vec<String>>,
    /// The claim listing roles (array or space-separated). Default `roles`; absent means `user`.
    pub roles_claim: Option<String>,
    /// The claim listing allowed models. Default `models`; absent means all.
    pub models_claim: Option<String>,
}

/// How a verified client certificate maps to a principal.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientCertSettings {
    /// Fixed tenant; `None`: the subject's organization.
    pub tenant: Option<String>,
    pub roles: Vec<wardgate_store::Role>,
}

/// `[auth]`, validated; `env` holds the HS256 issuers' secrets.
pub(super) fn auth(raw: &RawAuth, env: EnvLookup<'_>) -> Result<AuthSettings, ConfigError> {
    let client_certs = client_cert_settings(raw)?;
    let operator_tenant = raw
        .operator_tenant
        .clone()
        .unwrap_or_else(|| DEFAULT_OPERATOR_TENANT.to_owned());
    wardgate_store::names::validate_tenant(&operator_tenant)
        .map_err(|e| ConfigError::new("auth.operator_tenant", e.to_string()))?;
    let max_token_bytes = match raw.max_token_bytes {
        None => DEFAULT_MAX_TOKEN_BYTES,
        Some(n) if MAX_TOKEN_BYTES_RANGE.contains(&n) => n,
        Some(_) => {
            return Err(ConfigError::new(
                "auth.max_token_bytes",
                format!(
                    "must be {} to {}",
                    MAX_TOKEN_BYTES_RANGE.start(),
                    MAX_TOKEN_BYTES_RANGE.end()
                ),
            ));
        }
    };
    let key_idle_timeout = match raw.key_idle_timeout.as_deref() {
        None => None,
        Some(v) => {
            let d = duration("auth.key_idle_timeout", Some(v), Duration::ZERO)?;
            if d < MIN_KEY_IDLE_TIMEOUT {
                return Err(ConfigError::new(
                    "auth.key_idle_timeout",
                    "must be at least 5m (last use is recorded about once a minute)",
                ));
            }
            Some(d)
        }
    };
    let lockout = lockout(raw)?;
    let jwt = raw
        .jwt
        .iter()
        .enumerate()
        .map(|(i, j)| jwt_issuer(i, j, env, &operator_tenant))
        .collect::<Result<_, _>>()?;
    Ok(AuthSettings {
        key_cache_ttl: duration_or_off(raw.key_cache_ttl.as_deref(), DEFAULT_KEY_CACHE_TTL),
        broadcast: broadcast(raw)?,
        operator_tenant,
        max_token_bytes,
        key_idle_timeout,
        lockout,
        jwt,
        client_certs,
    })
}

fn client_cert_settings(raw: &RawAuth) -> Result<ClientCertSettings, ConfigError> {
    let roles = match &raw.client_cert_roles {
        None => DEFAULT_CLIENT_CERT_ROLES.to_vec(),
        Some(names) => {
            let mut roles = Vec::with_capacity(names.len());
            for n in names {
                let role = n.parse::<wardgate_store::Role>().map_err(|_| {
                    ConfigError::new(
                        "auth.client_cert_roles",
                        format!("`{n}` is not a role (user, admin, auditor)"),
                    )
                })?;
                // Break-glass access is a time-limited key with a stated reason, never a
                // standing property of a certificate.
                if role == wardgate_store::Role::BreakGlass {
                    return Err(ConfigError::new(
                        "auth.client_cert_roles",
                        "break_glass cannot be granted to certificates; create a break-glass key",
                    ));
                }
                roles.push(role);
            }
            if roles.is_empty() {
                return Err(ConfigError::new(
                    "auth.client_cert_roles",
                    "must name at least one role",
                ));
            }
            roles
        }
    };
    if let Some(t) = &raw.client_cert_tenant {
        wardgate_store::names::validate_tenant(t)
            .map_err(|e| ConfigError::new("auth.client_cert_tenant", e.to_string()))?;
    }
    Ok(ClientCertSettings {
        tenant: raw.client_cert_tenant.clone(),
        roles,
    })
}

fn jwt_issuer(
    i: usize,
    raw: &RawJwtIssuer,
    env: EnvLookup<'_>,
    operator_tenant: &str,
) -> Result<IssuerSettings, ConfigError> {
    use {KeySource, MAX_LEEWAY, MIN_HS256_SECRET, parse_algorithm};
    let key = |field: &str| format!("auth.jwt[{i}].{field}");
    if raw.issuer.is_empty() || raw.issuer.len() > 512 {
        return Err(ConfigError::new(
            key("issuer"),
            "must be 1 to 512 characters",
        ));
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            key("audiences"),
            "name at least one audience; a token for another service must not work here",
        ));
    }
    let mut algorithms = Vec::new();
    for name in &raw.algorithms {
        let a = parse_algorithm(name).ok_or_else(|| {
            ConfigError::new(
                key("algorithms"),
                format!("`{name}` is not allowed; use RS256, ES256, EdDSA, or HS256 alone"),
            )
        })?;
        if !algorithms.contains(&a) {
            algorithms.push(a);
        }
    }
    if algorithms.is_empty() {
        return Err(ConfigError::new(
            key("algorithms"),
            "list the algorithms this issuer signs with (an explicit allowlist)",
        ));
    }
    let hs = algorithms.contains(&jsonwebtoken::Algorithm::HS256);
    if hs && algorithms.len() > 1 {
        return Err(ConfigError::new(
            key("algorithms"),
            "HS256 cannot be mixed with public-key algorithms for one issuer",
        ));
    }
    let keys = match (&raw.jwks_file, &raw.jwks_url, &raw.secret_env, hs) {
        (None, None, Some(var), true) => {
            let secret = env(var)
                .ok_or_else(|| ConfigError::new(key("secret_env"), format!("${var} is not set")))?;
            if secret.len() < MIN_HS256_SECRET {
                return Err(ConfigError::new(
                    key("secret_env"),
                    format!("the HS256 secret must be at least {MIN_HS256_SECRET} bytes"),
                ));
            }
            KeySource::Secret(std::sync::Arc::new(wardgate_store::Secret::new(
                secret.into_bytes(),
            )))
        }
        (Some(f), None, None, false) => KeySource::File(f.clone()),
        (None, Some(url), None, false) => {
            let loopback = [
                "http://127.0.0.1:",
                "http://127.0.0.1/",
                "http://[::1]:",
                "http://localhost:",
            ]
            .iter()
            .any(|p| url.starts_with(p));
            if !url.starts_with("https://") && !loopback {
                return Err(ConfigError::new(
                    key("jwks_url"),
                    "must be https:// (plain http only on a loopback address)",
                ));
            }
            KeySource::Url(url.clone())
        }
        (_, _, _, true) => {
            return Err(ConfigError::new(
                key("secret_env"),
                "HS256 takes its secret from secret_env, and no JWKS",
            ));
        }
        _ => {
            return Err(ConfigError::new(
                key("jwks_file"),
                "set exactly one of jwks_file or jwks_url (secret_env is for HS256 only)",
            ));
        }
    };
    let leeway = duration_or_off(raw.leeway.as_deref(), DEFAULT_JWT_LEEWAY);
    if leeway > MAX_LEEWAY {
        return Err(ConfigError::new(key("leeway"), "must be at most 5m"));
    }
    let tenant = raw.tenant.clone();
    if let Some(t) = &tenant {
        wardgate_store::names::validate_tenant(t)
            .map_err(|e| ConfigError::new(key("tenant"), e.to_string()))?;
    }
    let allowed_tenants = match &raw.allowed_tenants {
        None => AllowedTenants::AllBut(operator_tenant.to_owned()),
        Some(list) => {
            for t in list {
                wardgate_store::names::validate_tenant(t)
                    .map_err(|e| ConfigError::new(key("allowed_tenants"), e.to_string()))?;
            }
            if list.is_empty() {
                return Err(ConfigError::new(
                    key("allowed_tenants"),
                    "list at least one tenant, or leave it out (any tenant but the operator's)",
                ));
            }
            if let Some(t) = &tenant
                && !list.contains(t)
            {
                return Err(ConfigError::new(
                    key("allowed_tenants"),
                    "must list the issuer's fixed `tenant`",
                ));
            }
            AllowedTenants::Listed(list.clone())
        }
    };
    Ok(IssuerSettings {
        issuer: raw.issuer.clone(),
        audiences: raw.audiences.clone(),
        algorithms,
        keys,
        leeway,
        max_lifetime: duration(
            &key("max_lifetime"),
            raw.max_lifetime.as_deref(),
            DEFAULT_JWT_MAX_LIFETIME,
        )?,
        refresh_interval: duration(
            &key("refresh_interval"),
            raw.refresh_interval.as_deref(),
            DEFAULT_JWT_REFRESH_INTERVAL,
        )?,
        refresh_cooldown: duration(
            &key("refresh_cooldown"),
            raw.refresh_cooldown.as_deref(),
            DEFAULT_JWT_REFRESH_COOLDOWN,
        )?,
        tenant_claim: raw
            .tenant_claim
            .clone()
            .unwrap_or_else(|| DEFAULT_TENANT_CLAIM.into()),
        tenant,
        allowed_tenants,
        roles_claim: raw
            .roles_claim
            .clone()
            .unwrap_or_else(|| DEFAULT_ROLES_CLAIM.into()),
        models_claim: raw
            .models_claim
            .clone()
            .unwrap_or_else(|| DEFAULT_MODELS_CLAIM.into()),
    })
}

/// The revocation broadcast's heartbeat and the cache's bound while it fails, validated.
fn broadcast(raw: &RawAuth) -> Result<BroadcastSettings, ConfigError> {
    let d = BroadcastSettings::default();
    Ok(BroadcastSettings {
        heartbeat_interval: duration(
            "auth.revocation_heartbeat_interval",
            raw.revocation_heartbeat_interval.as_deref(),
            d.heartbeat_interval,
        )?,
        heartbeat_timeout: duration(
            "auth.revocation_heartbeat_timeout",
            raw.revocation_heartbeat_timeout.as_deref(),
            d.heartbeat_timeout,
        )?,
        unconfirmed_ttl: duration_or_off(
            raw.key_cache_ttl_unconfirmed.as_deref(),
            d.unconfirmed_ttl,
        ),
    })
}

/// Lockout and the unauthenticated allowance (`auth.lockout_*`,
/// `unauthenticated_requests_per_minute`, `failure_audit_window`), validated.
fn lockout(raw: &RawAuth) -> Result<LockoutSettings, ConfigError> {
    let d = LockoutSettings::default();
    Ok(LockoutSettings {
        threshold: raw.lockout_threshold.unwrap_or(d.threshold),
        window: duration(
            "auth.lockout_window",
            raw.lockout_window.as_deref(),
            d.window,
        )?,
        duration: duration(
            "auth.lockout_duration",
            raw.lockout_duration.as_deref(),
            d.duration,
        )?,
        by_prefix: raw.lockout_by_prefix.unwrap_or(d.by_prefix),
        by_source: raw.lockout_by_source.unwrap_or(d.by_source),
        failures_per_minute: raw
            .unauthenticated_requests_per_minute
            .unwrap_or(d.failures_per_minute),
        audit_window: duration_or_off(raw.failure_audit_window.as_deref(), d.audit_window),
        ipv6_prefix: match raw.lockout_ipv6_prefix {
            None => d.ipv6_prefix,
            Some(p) if IPV6_PREFIX_RANGE.contains(&p) => p,
            Some(_) => {
                return Err(ConfigError::new(
                    "auth.lockout_ipv6_prefix",
                    "must be 32 to 128 (64, the default, is one subscriber's network; 128 \
                     counts each address on its own)",
                ));
            }
        },
    })
}
