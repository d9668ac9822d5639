//! Authentication, deny by default: every route behind this middleware needs a valid API key
//! in `Authorization: Bearer`. Unknown, malformed, revoked and expired keys get the same answer;
//! credentials in the URL are refused outright so they never reach access logs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;
use wardgate_store::{KeyVerdict, Role};

use crate::identity::principal::{
    Allowed, BREAK_GLASS_REASON_HEADER, MAX_BREAK_GLASS_REASON, Principal,
};
use crate::middleware::events::{AuthFailed, BreakGlassUsed, LockedOut};

use crate::error::{ApiError, Front};
use crate::middleware::record::RequestRecord;
use crate::state::AppState;

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

pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // The credential check is the request's `auth` span (when traces are exported); the rest
    // of the request is not.
    let span = tracing::info_span!(target: crate::telemetry::TARGET, "auth");
    match identify(&state, req).instrument(span).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// Finds and verifies the request's credential: the request with its principal attached, or
/// the answer that refuses it.
async fn identify(state: &AppState, mut req: Request) -> Result<Request, Response> {
    let front = Front::of_path(req.uri().path());
    let record = req.extensions().get::<Arc<RequestRecord>>().cloned();
    let source = record.as_ref().and_then(|r| r.source_ip);
    // A verified client certificate identifies the caller when no bearer credential is sent;
    // a bearer credential, when sent, is the identity and the certificate only the channel.
    if !req.headers().contains_key(header::AUTHORIZATION)
        && let Some(cert) = req.extensions().get::<crate::serve::tls::ClientCert>()
    {
        if let Err(e) = refuse_credentials_in_url(&req) {
            return Err(e.to_response(front));
        }
        let p = match cert_principal(state, cert) {
            Ok(p) => p,
            Err(_) => {
                return Err(refuse(state, record.as_ref(), source, None)
                    .await
                    .to_response(front));
            }
        };
        if let Some(rec) = req.extensions().get::<Arc<RequestRecord>>() {
            rec.set_principal(&p.key_id, &p.tenant, p.method);
        }
        req.extensions_mut().insert(p);
        return Ok(req);
    }
    let presented = match presented_key(&req) {
        Ok(k) => k,
        // No usable credential at all: a failure like any other (counted, audited at most once
        // per window per address), refused before anything is verified.
        Err(ApiError::Unauthenticated) => {
            return Err(refuse(state, record.as_ref(), source, None)
                .await
                .to_response(front));
        }
        Err(e) => return Err(e.to_response(front)),
    };
    // A key prefix identifies the attempt without the secret; it is what failures are counted
    // and audited by.
    let prefix = wardgate_store::keys::parse(&presented).map(|k| k.prefix().to_owned());
    if let Some(rec) = &record
        && let Some(p) = &prefix
    {
        rec.set_attempt(p);
    }
    // Every credential is verified, locked out or not (the same work either way): a lockout
    // slows and flags guessing, and never refuses a credential that verifies.
    // The store's answer is awaited only until the request's deadline (from its arrival, as
    // the handlers count it): a database link gone silent must not hold the request past it.
    let deadline = record
        .as_ref()
        .map_or_else(std::time::Instant::now, |r| r.started)
        + state.config.request_timeout;
    let p = match principal(state, presented, deadline).await {
        Ok(p) => p,
        Err(ApiError::Unauthenticated) => {
            return Err(refuse(state, record.as_ref(), source, prefix.as_deref())
                .await
                .to_response(front));
        }
        Err(e) => return Err(e.to_response(front)),
    };
    if let Some(rec) = &record {
        rec.set_principal(&p.key_id, &p.tenant, p.method);
    }
    if p.has(Role::BreakGlass) {
        let reason = match break_glass_reason(&req) {
            Ok(r) => r,
            Err(e) => {
                // An attempt without a reason is still break-glass activity, audited as such.
                BreakGlassUsed {
                    key_id: &p.key_id,
                    tenant: &p.tenant,
                    reason: None,
                }
                .emit(record.as_deref());
                return Err(e.to_response(front));
            }
        };
        BreakGlassUsed {
            key_id: &p.key_id,
            tenant: &p.tenant,
            reason: Some(&reason),
        }
        .emit(record.as_deref());
    }
    req.extensions_mut().insert(p);
    Ok(req)
}

/// The answer to a request that failed authentication (no credential, or one that did not
/// verify). The failure is counted (metric, lockout); it is audited on its own only when it is
/// its address's first in the audit window (else folded into the window's `suppressed: N`
/// event, see `lockout.rs`); and while the source or prefix is locked out, or the source has
/// used its allowance of failures, it is answered 429 with `Retry-After` instead of 401.
async fn refuse(
    state: &AppState,
    record: Option<&Arc<RequestRecord>>,
    source: Option<std::net::IpAddr>,
    prefix: Option<&str>,
) -> ApiError {
    let now = std::time::Instant::now();
    let locked = state.lockout.locked(source, prefix, now).await;
    let over = state.lockout.over_allowance(source, now);
    let newly_locked = state.lockout.fail(source, prefix, now).await;
    let record = record.map(|r| &**r);
    if newly_locked.is_empty() {
        let folded = !state.lockout.fold(source, now, &state.audit);
        AuthFailed { folded }.emit(record);
    } else {
        // A lockout is always written on its own: it is what a reviewer must see.
        AuthFailed { folded: false }.emit(record);
        LockedOut {
            subjects: newly_locked,
        }
        .emit(record);
    }
    match locked.into_iter().chain(over).max() {
        Some(wait) => ApiError::LockedOut {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        },
        None => ApiError::Unauthenticated,
    }
}

/// The stated reason of a break-glass request: one header, printable, 1 to
/// [`MAX_BREAK_GLASS_REASON`] characters.
fn break_glass_reason(req: &Request) -> Result<String, ApiError> {
    let mut values = req.headers().get_all(BREAK_GLASS_REASON_HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::BreakGlassReasonRequired);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BreakGlassReasonRequired)?
        .trim();
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_BREAK_GLASS_REASON || text.chars().any(char::is_control) {
        return Err(ApiError::BreakGlassReasonRequired);
    }
    Ok(text.to_owned())
}

/// Middleware after `authenticate`: refuses with 403 a principal holding none of the roles.
pub async fn authorize(State(allowed): State<Allowed>, req: Request, next: Next) -> Response {
    let permitted = req
        .extensions()
        .get::<Principal>()
        .is_some_and(|p| allowed.0.iter().any(|r| p.has(*r)));
    if permitted {
        next.run(req).await
    } else {
        ApiError::Forbidden.to_response(Front::of_path(req.uri().path()))
    }
}

/// The principal a verified client certificate names: `cert:<common name>`, in the configured
/// tenant or the subject's organization, with the configured roles. A certificate without a
/// usable name or tenant identifies no one.
fn cert_principal(
    state: &AppState,
    cert: &crate::serve::tls::ClientCert,
) -> Result<Principal, ApiError> {
    let settings = &state.config.client_certs;
    let name = cert
        .common_name
        .as_deref()
        .filter(|n| (1..=128).contains(&n.len()) && !n.chars().any(char::is_control))
        .ok_or(ApiError::Unauthenticated)?;
    let tenant = match &settings.tenant {
        Some(t) => t.clone(),
        None => cert
            .organization
            .clone()
            .filter(|o| wardgate_store::names::validate_tenant(o).is_ok())
            .ok_or(ApiError::Unauthenticated)?,
    };
    Ok(Principal {
        key_id: format!("cert:{name}"),
        tenant,
        models: Vec::new(),
        roles: settings.roles.clone(),
        method: wardgate_audit::AuthMethod::Mtls,
    })
}

fn refuse_credentials_in_url(req: &Request) -> Result<(), ApiError> {
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
    Ok(())
}

/// The key from the one `Authorization: Bearer` header, after refusing credentials in the URL.
fn presented_key(req: &Request) -> Result<String, ApiError> {
    refuse_credentials_in_url(req)?;
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

async fn principal(
    state: &AppState,
    token: String,
    deadline: std::time::Instant,
) -> Result<Principal, ApiError> {
    let now = time::OffsetDateTime::now_utc();
    // Keys and tokens verified in the last `key_cache_ttl` (never past their own expiry) are
    // not verified again: the same bytes verify the same way until then, and a signature
    // check is most of what authentication costs.
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(p) = state.key_cache.as_ref().and_then(|c| c.get(&digest, now)) {
        return Ok(p);
    }
    // Read before verifying: what is verified is cached only if nothing was revoked meanwhile.
    let generation = state.key_cache.as_ref().map_or(0, |c| c.generation());
    if let Some(jwt) = &state.jwt
        && crate::identity::jwt::looks_like_jwt(&token)
    {
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let (p, exp) = jwt.verify_until(&token, unix).await.map_err(|reason| {
            tracing::info!(target: "wardgate::auth", reason = %reason, "token rejected");
            ApiError::Unauthenticated
        })?;
        if let Some(c) = &state.key_cache {
            let exp = i64::try_from(exp)
                .ok()
                .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e).ok());
            c.put(digest, &p, exp, generation);
        }
        return Ok(p);
    }
    let verdict =
        match tokio::time::timeout_at(deadline.into(), state.keys.verify(&token, now)).await {
            Ok(verdict) => verdict.map_err(|_| ApiError::StorageUnavailable)?,
            Err(_) => {
                tracing::error!(
                    target: "wardgate::auth",
                    "the key store did not answer by the request's deadline; request refused"
                );
                return Err(ApiError::StorageUnavailable);
            }
        };
    match verdict {
        KeyVerdict::Valid(rec) => {
            if let Some(idle) = state.config.key_idle_timeout
                && is_idle(&rec, idle, now)
            {
                tracing::info!(
                    target: "wardgate::auth",
                    reason = "idle",
                    key_id = %rec.id,
                    "credential rejected"
                );
                return Err(ApiError::Unauthenticated);
            }
            touch(state, &rec.id, rec.last_used_at, now);
            let p = Principal {
                key_id: rec.id,
                tenant: rec.tenant,
                models: rec.models,
                roles: rec.roles,
                method: wardgate_audit::AuthMethod::ApiKey,
            };
            if let Some(c) = &state.key_cache {
                c.put(digest, &p, rec.expires_at, generation);
            }
            Ok(p)
        }
        KeyVerdict::Rejected(reason) => {
            tracing::info!(target: "wardgate::auth", reason = ?reason, "credential rejected");
            Err(ApiError::Unauthenticated)
        }
    }
}

/// Whether a key has gone unused (since its last recorded use, or its creation) for `idle`.
pub fn is_idle(
    rec: &wardgate_store::ApiKeyRecord,
    idle: std::time::Duration,
    now: time::OffsetDateTime,
) -> bool {
    let last = rec.last_used_at.unwrap_or(rec.created_at);
    let idle = time::Duration::try_from(idle).unwrap_or(time::Duration::MAX);
    last.saturating_add(idle) <= now
}

/// How stale a key's recorded last use may get before it is written again.
const TOUCH_EVERY: time::Duration = time::Duration::seconds(60);

/// Records a key's use in the background, at most about once per [`TOUCH_EVERY`] (the key
/// cache means the store sees a busy key only every `key_cache_ttl` anyway). Only done when
/// idle timeouts are on: otherwise nothing reads it.
fn touch(
    state: &AppState,
    id: &str,
    last: Option<time::OffsetDateTime>,
    now: time::OffsetDateTime,
) {
    if state.config.key_idle_timeout.is_none() || last.is_some_and(|t| now - t < TOUCH_EVERY) {
        return;
    }
    let keys = state.keys.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = keys.touch_key(&id, now).await {
            tracing::warn!(error = %crate::causes::Causes(&e), "could not record a key's last use");
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_is_idle_once_unused_for_the_timeout_since_last_use_or_creation() {
        let t0 = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut rec = wardgate_store::ApiKeyRecord {
            id: "key_x".into(),
            prefix: "abcdefghijkl".into(),
            tenant: "acme".into(),
            models: vec![],
            roles: vec![Role::User],
            label: None,
            created_at: t0,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            replaced_by: None,
        };
        let day = Duration::from_secs(86_400);
        let at = |secs: i64| t0 + time::Duration::seconds(secs);
        assert!(!is_idle(&rec, day, at(86_399)));
        assert!(
            is_idle(&rec, day, at(86_400)),
            "never used: counts from creation"
        );
        rec.last_used_at = Some(at(50_000));
        assert!(!is_idle(&rec, day, at(86_400 + 49_999)));
        assert!(is_idle(&rec, day, at(86_400 + 50_000)));
    }
}
