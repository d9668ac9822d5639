//! `[auth]`: lockout and trusted JWT issuers, validated.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use wardgate_store::Secret;

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
    /// The window over which one address's failed authentications are folded into one audit
    /// event; zero writes every failure on its own.
    pub audit_window: Duration,
}

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
        }
    }
}

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
