//! Bearer JWTs from configured issuers (OIDC identity providers), verified with the
//! `jsonwebtoken` crate and mapped to a [`Principal`].
//!
//! What is checked, in order, before any claim is trusted:
//! 1. size: at most `auth.max_token_bytes`;
//! 2. issuer: the unverified `iss` only picks which configured issuer verifies the token; a
//!    token naming no configured issuer is refused;
//! 3. algorithm: the header's `alg` must be on that issuer's explicit allowlist (RS256, ES256,
//!    EdDSA, or HS256 alone with a shared secret; an issuer never mixes HS256 with public-key
//!    algorithms, so a public key can never be used as an HMAC secret);
//! 4. key: by `kid` from the issuer's JWKS (file or HTTPS URL; only RSA, EC and OKP keys are
//!    taken from a JWKS, never symmetric ones); a key that declares an `alg` must match the
//!    token's;
//! 5. signature, then `iss`, `aud`, `exp`, `nbf` (with the issuer's leeway) and a lifetime
//!    bound (`exp - iat`, or `exp - now` without `iat`, at most `max_lifetime`).
//!
//! 6. tenant: a tenant named by a claim must be one the issuer may vouch for
//!    (`allowed_tenants`); without that list, any tenant but the operator tenant, so an
//!    identity provider configured for the tenants' users cannot mint operator tokens.
//!
//! A token whose header or claims repeat a key (`{"tenant":"a","tenant":"operator"}`) is
//! refused as malformed: JSON parsers disagree on which one wins, and the gateway must not
//! read a different claim than the provider that signed it meant.
//!
//! An unknown `kid` refreshes a URL-based JWKS at once, but at most once per
//! `refresh_cooldown`, so a flood of made-up `kid`s cannot turn into a flood of fetches.
//!
//! Every failure is answered like any bad credential (401); the reason goes to the log and
//! audit only.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use wardgate_store::Role;

use wardgate_audit::AuthMethod;

use crate::identity::principal::Principal;

/// Longest subject kept, in bytes; longer ones are refused (they end up in audit events).
const MAX_SUBJECT_LEN: usize = 128;
/// Largest JWKS document fetched or read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

pub use crate::config::auth::{
    AllowedTenants, IssuerSettings, KeySource, MAX_LEEWAY, MIN_HS256_SECRET, parse_algorithm,
};

/// Why a token was refused (for logs and audit; the client sees a plain 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtReject {
    #[error("token larger than the limit")]
    TooLarge,
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("issuer not trusted")]
    UnknownIssuer,
    #[error("algorithm not allowed for this issuer")]
    Algorithm,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("signature or claims invalid: {0}")]
    Invalid(String),
    #[error("token lifetime longer than allowed")]
    TooLong,
    #[error("claim {0} missing or malformed")]
    Claim(&'static str),
    #[error("a key is repeated in the token's header or claims")]
    DuplicateKey,
    #[error("tenant not allowed for this issuer")]
    TenantNotAllowed,
}

/// Succeeds when `json` parses with no object anywhere repeating a key.
fn no_duplicate_keys(json: &[u8]) -> Result<(), JwtReject> {
    struct Unique;
    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
            d.deserialize_any(UniqueVisitor)
        }
    }
    struct UniqueVisitor;
    impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
        type Value = Unique;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key) {
                    return Err(serde::de::Error::custom("repeated key"));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
    }
    serde_json::from_slice::<Unique>(json)
        .map(drop)
        .map_err(|_| JwtReject::DuplicateKey)
}

/// Refuses a token whose header or claims segment repeats a key anywhere.
fn check_segments(token: &str) -> Result<(), JwtReject> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    for _ in 0..2 {
        let part = parts.next().ok_or(JwtReject::Malformed)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| JwtReject::Malformed)?;
        no_duplicate_keys(&bytes)?;
    }
    Ok(())
}

#[derive(Debug)]
struct KeyEntry {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

struct Issuer {
    settings: IssuerSettings,
    keys: RwLock<Arc<Vec<KeyEntry>>>,
    last_fetch: Mutex<Option<Instant>>,
    client: Option<reqwest::Client>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

/// The configured issuers.
#[derive(Debug)]
pub struct JwtVerifier {
    issuers: Vec<Arc<Issuer>>,
    max_token_bytes: usize,
}

/// Why the verifier could not start.
#[derive(Debug, thiserror::Error)]
#[error("JWT issuer {issuer}: {reason}")]
pub struct JwtStartError {
    pub issuer: String,
    pub reason: String,
}

impl JwtVerifier {
    /// Loads every issuer's keys (files read, URLs fetched once). A URL that cannot be fetched
    /// now is not fatal: its tokens are refused until a refresh succeeds, and the log says so.
    pub async fn start(
        settings: Vec<IssuerSettings>,
        max_token_bytes: usize,
    ) -> Result<JwtVerifier, JwtStartError> {
        let mut issuers = Vec::new();
        for s in settings {
            let err = |reason: String| JwtStartError {
                issuer: s.issuer.clone(),
                reason,
            };
            let client = match &s.keys {
                KeySource::Url(_) => Some(
                    reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .map_err(|e| err(format!("cannot build the HTTPS client: {e}")))?,
                ),
                _ => None,
            };
            let issuer = Arc::new(Issuer {
                keys: RwLock::new(Arc::new(Vec::new())),
                last_fetch: Mutex::new(None),
                client,
                settings: s.clone(),
            });
            match &s.keys {
                KeySource::File(path) => {
                    let text = std::fs::read(path)
                        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                    let keys = parse_jwks(&text).map_err(err)?;
                    *issuer.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                }
                KeySource::Url(_) => {
                    if let Err(e) = issuer.refresh().await {
                        tracing::error!(
                            issuer = %s.issuer,
                            error = %e,
                            "cannot fetch the JWKS; this issuer's tokens are refused until a \
                             refresh succeeds"
                        );
                    }
                }
                KeySource::Secret(_) => {}
            }
            issuers.push(issuer);
        }
        Ok(JwtVerifier {
            issuers,
            max_token_bytes,
        })
    }

    /// Refreshes URL-based key sets on their schedule, for as long as the verifier lives.
    pub fn spawn_refresh(self: &Arc<Self>) {
        for issuer in &self.issuers {
            if !matches!(issuer.settings.keys, KeySource::Url(_)) {
                continue;
            }
            let weak = Arc::downgrade(issuer);
            let every = issuer.settings.refresh_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(issuer) = weak.upgrade() else { return };
                    if let Err(e) = issuer.refresh().await {
                        tracing::warn!(
                            issuer = %issuer.settings.issuer,
                            error = %e,
                            "JWKS refresh failed; keeping the keys already loaded"
                        );
                    }
                }
            });
        }
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies `token` at `now` (unix seconds) and maps its claims to a principal.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Principal, JwtReject> {
        self.verify_until(token, now).await.map(|(p, _)| p)
    }

    /// [`JwtVerifier::verify`], with the token's `exp` (Unix seconds): how long the verdict
    /// may be remembered.
    pub async fn verify_until(&self, token: &str, now: u64) -> Result<(Principal, u64), JwtReject> {
        if token.len() > self.max_token_bytes {
            return Err(JwtReject::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtReject::Malformed)?;
        check_segments(token)?;
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
            .map_err(|_| JwtReject::Malformed)?;
        let iss = unverified
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(JwtReject::UnknownIssuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.settings.issuer == iss)
            .ok_or(JwtReject::UnknownIssuer)?;
        let s = &issuer.settings;
        if !s.algorithms.contains(&header.alg) {
            return Err(JwtReject::Algorithm);
        }
        let key = match &s.keys {
            KeySource::Secret(secret) => DecodingKey::from_secret(secret.expose()),
            _ => issuer.key_for(header.kid.as_deref(), header.alg).await?,
        };
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = s.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&s.issuer]);
        v.set_audience(&s.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v)
            .map_err(|e| JwtReject::Invalid(e.to_string()))?;
        let claims = data.claims;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(JwtReject::Claim("exp"))?;
        let start = match claims.get("iat") {
            None => now,
            Some(v) => v.as_u64().ok_or(JwtReject::Claim("iat"))?,
        };
        // `jsonwebtoken` does not check `iat`. A token issued in the future (past the leeway)
        // is refused like an early `nbf`: otherwise `exp - iat` would measure its lifetime from
        // a time that has not come, and a long-lived token could pass the lifetime bound.
        if start > now.saturating_add(s.leeway.as_secs()) {
            return Err(JwtReject::Invalid("iat is in the future".into()));
        }
        if exp.saturating_sub(start) > s.max_lifetime.as_secs() + s.leeway.as_secs() {
            return Err(JwtReject::TooLong);
        }
        principal_from_claims(s, &claims).map(|p| (p, exp))
    }
}

fn principal_from_claims(
    s: &IssuerSettings,
    claims: &serde_json::Value,
) -> Result<Principal, JwtReject> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty() && v.len() <= MAX_SUBJECT_LEN && !v.chars().any(char::is_control))
        .ok_or(JwtReject::Claim("sub"))?;
    let tenant = match &s.tenant {
        Some(t) => t.clone(),
        None => claims
            .get(&s.tenant_claim)
            .and_then(Value::as_str)
            .filter(|t| wardgate_store::names::validate_tenant(t).is_ok())
            .ok_or(JwtReject::Claim("tenant"))?
            .to_owned(),
    };
    if s.tenant.is_none() && !s.allowed_tenants.allows(&tenant) {
        return Err(JwtReject::TenantNotAllowed);
    }
    let roles = match claims.get(&s.roles_claim) {
        None => vec![Role::User],
        Some(v) => {
            // An identity provider issues roles for many applications: the ones wardgate does
            // not know are ignored, not refused. No known role leaves the principal with none,
            // and every route refuses it.
            let names: Vec<&str> = match v {
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                Value::String(text) => text.split_whitespace().collect(),
                _ => return Err(JwtReject::Claim("roles")),
            };
            let mut roles: Vec<Role> = names.iter().filter_map(|n| n.parse().ok()).collect();
            roles.sort_unstable();
            roles.dedup();
            roles
        }
    };
    let models = match claims.get(&s.models_claim) {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|m| m.as_str().map(str::to_owned))
                .collect();
            let names = names.ok_or(JwtReject::Claim("models"))?;
            wardgate_store::names::normalize_models(names)
                .map_err(|_| JwtReject::Claim("models"))?
        }
        Some(_) => return Err(JwtReject::Claim("models")),
    };
    Ok(Principal {
        key_id: format!("jwt:{sub}"),
        tenant,
        models,
        roles,
        method: AuthMethod::Jwt,
    })
}

impl Issuer {
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, JwtReject> {
        if let Some(k) = self.find(kid, alg)? {
            return Ok(k);
        }
        // Unknown kid: the provider may have rotated. Refresh, at most once per cooldown.
        if matches!(self.settings.keys, KeySource::Url(_)) && self.may_refresh_now() {
            if let Err(e) = self.refresh().await {
                tracing::warn!(issuer = %self.settings.issuer, error = %e, "JWKS refresh failed");
            }
            if let Some(k) = self.find(kid, alg)? {
                return Ok(k);
            }
        }
        Err(JwtReject::UnknownKey)
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<DecodingKey>, JwtReject> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let found = match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            // Without a kid the key must be unambiguous.
            None if keys.len() == 1 => keys.first(),
            None => None,
        };
        match found {
            Some(k) if k.alg.is_some_and(|a| a != alg) => Err(JwtReject::Algorithm),
            Some(k) => Ok(Some(k.key.clone())),
            None => Ok(None),
        }
    }

    fn may_refresh_now(&self) -> bool {
        let mut last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
        let ok = last.is_none_or(|t| t.elapsed() >= self.settings.refresh_cooldown);
        if ok {
            *last = Some(Instant::now());
        }
        ok
    }

    async fn refresh(&self) -> Result<(), String> {
        let (KeySource::Url(url), Some(client)) = (&self.settings.keys, &self.client) else {
            return Ok(());
        };
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetch answered {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("JWKS document too large".into());
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err("JWKS document too large".into());
        }
        let keys = parse_jwks(&bytes)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }
}

/// The public keys of a JWKS document. Symmetric (`oct`) keys are refused: a JWKS is public,
/// and a secret in it would be a secret no more.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<KeyEntry>, String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err("JWKS document too large".into());
    }
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    let mut kids = HashSet::new();
    for jwk in &set.keys {
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err("a JWKS may hold public keys only; found a symmetric (oct) key".into());
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(
                // KeyAlgorithm's names are the JOSE names (`EdDSA`, `ES256`, ...).
                parse_algorithm(&format!("{a:?}")).ok_or_else(|| {
                    "a key declares an algorithm wardgate does not allow".to_owned()
                })?,
            ),
        };
        let kid = jwk.common.key_id.clone();
        if let Some(k) = &kid
            && !kids.insert(k.clone())
        {
            return Err(format!("two keys share the kid {k:?}"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
        out.push(KeyEntry { kid, alg, key });
    }
    if out.is_empty() {
        return Err("the JWKS holds no keys".into());
    }
    Ok(out)
}

/// Whether a bearer token is shaped like a JWT (three base64url parts, JSON header) rather
/// than a wardgate API key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}
