//! Authentication, deny by default: every route behind this middleware needs a valid API key
//! in `Authorization: Bearer`. Unknown, malformed, revoked and expired keys get the same answer;
//! credentials in the URL are refused outright so they never reach access logs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use wardgate_store::KeyVerdict;

use crate::error::{ApiError, Front};
use crate::record::RequestRecord;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key_id: String,
    pub tenant: String,
    /// Models the key may use; empty means all.
    pub models: Vec<String>,
}

impl Principal {
    /// Whether the key may use a public model name (alias or canonical name).
    pub fn may_use(&self, public_name: &str, canonical: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|m| m == public_name || m == canonical)
    }
}

/// Query parameters that carry credentials in other APIs; refused so a key in a URL is never
/// accepted (and so never ends up in someone's proxy logs as a working credential).
const CREDENTIAL_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "token",
    "auth",
];

pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let front = Front::of_path(req.uri().path());
    let presented = match presented_key(&req) {
        Ok(k) => k,
        Err(e) => return e.to_response(front),
    };
    match principal(&state, presented).await {
        Ok(p) => {
            if let Some(rec) = req.extensions().get::<Arc<RequestRecord>>() {
                rec.set_principal(&p.key_id, &p.tenant);
            }
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.to_response(front),
    }
}

/// The key from the one `Authorization: Bearer` header, after refusing credentials in the URL.
fn presented_key(req: &Request) -> Result<String, ApiError> {
    if let Some(q) = req.uri().query() {
        let has_credential = q.split('&').any(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            CREDENTIAL_PARAMS
                .iter()
                .any(|c| name.eq_ignore_ascii_case(c))
        });
        if has_credential {
            return Err(ApiError::CredentialsInUrl);
        }
    }
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // None, or several: with two headers the gateway would have to pick one, and picking
        // is how privilege confusion starts.
        return Err(ApiError::Unauthenticated);
    };
    let value = value.to_str().map_err(|_| ApiError::Unauthenticated)?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(ApiError::Unauthenticated),
    };
    Ok(token.to_owned())
}

async fn principal(state: &AppState, token: String) -> Result<Principal, ApiError> {
    let now = time::OffsetDateTime::now_utc();
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(p) = state.key_cache.as_ref().and_then(|c| c.get(&digest, now)) {
        return Ok(p);
    }
    let verdict = state
        .keys
        .verify(&token, now)
        .await
        .map_err(|_| ApiError::StorageUnavailable)?;
    match verdict {
        KeyVerdict::Valid(rec) => {
            let p = Principal {
                key_id: rec.id,
                tenant: rec.tenant,
                models: rec.models,
            };
            if let Some(c) = &state.key_cache {
                c.put(digest, &p, rec.expires_at);
            }
            Ok(p)
        }
        KeyVerdict::Rejected(reason) => {
            tracing::info!(target: "wardgate::auth", reason = ?reason, "credential rejected");
            Err(ApiError::Unauthenticated)
        }
    }
}

/// Recently verified keys, so a busy client does not cost a database round trip per request.
///
/// Entries are keyed by the SHA-256 of the presented key (the key itself is never held), live
/// for `ttl`, and never outlive the key's own expiry. Only valid keys are cached. A revocation
/// made elsewhere (the CLI, another instance) therefore takes effect within `ttl`; that bound is
/// the documented contract (`auth.key_cache_ttl`, `0s` turns the cache off).
#[derive(Debug)]
pub struct KeyCache {
    ttl: std::time::Duration,
    max_entries: usize,
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], CachedKey>>,
}

#[derive(Debug, Clone)]
struct CachedKey {
    principal: Principal,
    cached_at: std::time::Instant,
    expires_at: Option<time::OffsetDateTime>,
}

impl KeyCache {
    pub fn new(ttl: std::time::Duration, max_entries: usize) -> KeyCache {
        KeyCache {
            ttl,
            max_entries,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn get(&self, digest: &[u8; 32], now: time::OffsetDateTime) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(digest)?;
        let fresh = e.cached_at.elapsed() < self.ttl && e.expires_at.is_none_or(|x| x > now);
        fresh.then(|| e.principal.clone())
    }

    fn put(&self, digest: [u8; 32], p: &Principal, expires_at: Option<time::OffsetDateTime>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries {
            // Stale entries first; if all are fresh, start over rather than grow without bound.
            let ttl = self.ttl;
            entries.retain(|_, e| e.cached_at.elapsed() < ttl);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            CachedKey {
                principal: p.clone(),
                cached_at: std::time::Instant::now(),
                expires_at,
            },
        );
    }

    /// Forgets everything (after a revocation made through this process).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
