//! The admin API: keys and tenants for `admin` principals, the audit log for `auditor` (and
//! break-glass) principals. It matches `wardgate keys` and `wardgate audit query`.
//!
//! Scope: a principal of the operator tenant (`auth.operator_tenant`) acts on every tenant;
//! any other principal only on its own. An object outside the caller's scope is answered
//! exactly like one that does not exist, so an admin cannot probe other tenants.
//!
//! Every change is the terminal audit event of its request (`key_created`, `key_revoked`,
//! `config_change`), and every audit read is an `audit_access` event.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use wardgate_audit::{AuditFilter, EventType, Outcome, Timestamp};
use wardgate_store::{ApiKeyRecord, NewKeySpec, Role, StoreError};

use crate::auth::Principal;
use crate::error::{ApiError, OpenAiError};
use crate::extract::Json as Body;
use crate::record::RequestRecord;
use crate::state::AppState;

type Result<T> = std::result::Result<T, OpenAiError>;

/// Whose objects a principal may see and change.
enum Scope<'a> {
    All,
    Tenant(&'a str),
}

impl Scope<'_> {
    fn of<'a>(state: &AppState, p: &'a Principal) -> Scope<'a> {
        if p.tenant == state.config.operator_tenant {
            Scope::All
        } else {
            Scope::Tenant(&p.tenant)
        }
    }

    fn covers(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(t) => *t == tenant,
        }
    }
}

/// A query string, or a 400 in the admin API's shape that names no client value.
fn query<T>(q: std::result::Result<Query<T>, QueryRejection>) -> Result<T> {
    q.map(|Query(q)| q).map_err(|_| {
        OpenAiError(ApiError::BadRequest(wardgate_api::BadRequest {
            param: None,
            message: "unknown or malformed query parameter; see the admin API documentation".into(),
        }))
    })
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(message) => ApiError::BadRequest(wardgate_api::BadRequest {
            param: None,
            message,
        }),
        StoreError::NotFound => ApiError::ObjectNotFound("key"),
        StoreError::Unavailable(_) | StoreError::Migration(_) => {
            tracing::error!(error = %e, "admin API: store failed");
            ApiError::StorageUnavailable
        }
    }
}

/// A key as the admin API and `wardgate keys list --json` show it: never the secret or its
/// hash.
pub fn key_json(k: &ApiKeyRecord, now: OffsetDateTime) -> serde_json::Value {
    let status = key_status(k, now);
    serde_json::json!({
        "id": k.id, "tenant": k.tenant, "prefix": k.prefix, "models": k.models,
        "roles": k.roles, "label": k.label, "status": status,
        "created_at": k.created_at.unix_timestamp(),
        "expires_at": k.expires_at.map(OffsetDateTime::unix_timestamp),
        "revoked_at": k.revoked_at.map(OffsetDateTime::unix_timestamp),
        "last_used_at": k.last_used_at.map(OffsetDateTime::unix_timestamp),
    })
}

/// `revoked`, `expired` or `active` at `now`.
pub fn key_status(k: &ApiKeyRecord, now: OffsetDateTime) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    tenant: Option<String>,
}

/// `GET /admin/keys[?tenant=NAME]`: keys newest first, revoked and expired included.
pub async fn list_keys(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    q: std::result::Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let scope = Scope::of(&state, &p);
    let tenant = match (&scope, q.tenant.as_deref()) {
        (Scope::Tenant(own), Some(t)) if t != *own => {
            return Ok(Json(serde_json::json!({"data": []})).into_response());
        }
        (Scope::Tenant(own), _) => Some(*own),
        (Scope::All, t) => t,
    };
    let keys = state.keys.list_keys(tenant).await.map_err(store_error)?;
    let now = OffsetDateTime::now_utc();
    let data: Vec<_> = keys.iter().map(|k| key_json(k, now)).collect();
    Ok(Json(serde_json::json!({"data": data})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    tenant: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    roles: Vec<Role>,
    /// A lifetime such as `90d` or `12h`.
    expires_in: Option<String>,
    label: Option<String>,
}

/// `POST /admin/keys`: creates a key; the answer is the only time the key is shown.
pub async fn create_key(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Body(body): Body<NewKeyBody>,
) -> Result<Response> {
    let scope = Scope::of(&state, &p);
    let tenant = body.tenant.unwrap_or_else(|| p.tenant.clone());
    if !scope.covers(&tenant) {
        return Err(ApiError::Forbidden.into());
    }
    let expires_at = expires_in(body.expires_in.as_deref())?;
    let new = state
        .keys
        .create_key(NewKeySpec {
            tenant,
            models: body.models,
            roles: body.roles,
            expires_at,
            label: body.label,
        })
        .await
        .map_err(store_error)?;
    record.set_action(
        EventType::KeyCreated,
        Some(format!(
            "key_id={} tenant={} roles={}",
            new.record.id,
            new.record.tenant,
            role_list(&new.record.roles)
        )),
    );
    let mut v = key_json(&new.record, OffsetDateTime::now_utc());
    v["key"] = serde_json::Value::String(new.secret.expose().clone());
    Ok(with_credential(v))
}

/// A 201 whose body holds a credential: no cache may keep it.
fn with_credential(v: serde_json::Value) -> Response {
    let mut resp = (StatusCode::CREATED, Json(v)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// A lifetime such as `90d` from now; `None` when not given.
fn expires_in(text: Option<&str>) -> std::result::Result<Option<OffsetDateTime>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let bad = || {
        ApiError::BadRequest(wardgate_api::BadRequest::param(
            "expires_in",
            "expires_in must be a duration such as `90d` or `12h`, at most 100 years",
        ))
    };
    let d = humantime::parse_duration(text).map_err(|_| bad())?;
    let d = time::Duration::try_from(d).map_err(|_| bad())?;
    if d > time::Duration::days(36_525) || d.is_zero() {
        return Err(bad());
    }
    Ok(Some(OffsetDateTime::now_utc() + d))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old key keeps working beside the new one, such as `24h` (the default).
    overlap: Option<String>,
    /// The new key's lifetime, such as `90d`; absent: it does not expire.
    expires_in: Option<String>,
}

/// The rotation overlap when none is asked for.
pub const DEFAULT_ROTATION_OVERLAP: std::time::Duration = std::time::Duration::from_secs(86_400);

/// `POST /admin/keys/{id}/rotate`: a replacement key with the same scope; the old key keeps
/// working for the overlap, then expires. 201 with the new key (shown once) and the old
/// key's new expiry.
pub async fn rotate_key(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Path(id): Path<String>,
    crate::extract::OptionalJson(body): crate::extract::OptionalJson<RotateBody>,
) -> Result<Response> {
    let body = body.unwrap_or_default();
    let scope = Scope::of(&state, &p);
    let key = state.keys.get_key(&id).await.map_err(store_error)?;
    let Some(key) = key.filter(|k| scope.covers(&k.tenant)) else {
        return Err(ApiError::ObjectNotFound("key").into());
    };
    let overlap = match body.overlap.as_deref() {
        None => DEFAULT_ROTATION_OVERLAP,
        Some(text) => humantime::parse_duration(text)
            .ok()
            .filter(|d| *d <= wardgate_store::MAX_ROTATION_OVERLAP)
            .ok_or_else(|| {
                ApiError::BadRequest(wardgate_api::BadRequest::param(
                    "overlap",
                    "overlap must be a duration such as `24h` or `0s`, at most 30 days",
                ))
            })?,
    };
    let expires_at = expires_in(body.expires_in.as_deref())?;
    let r = state
        .keys
        .rotate_key(&key.id, overlap, expires_at)
        .await
        .map_err(store_error)?;
    if let Some(c) = &state.key_cache {
        c.clear();
    }
    let now = OffsetDateTime::now_utc();
    record.set_action(
        EventType::KeyCreated,
        Some(format!(
            "key_id={} tenant={} rotated_from={} old_expires_at={}",
            r.new.record.id,
            r.new.record.tenant,
            r.old.id,
            r.old.expires_at.map(|t| t.unix_timestamp()).unwrap_or(0)
        )),
    );
    let mut v = key_json(&r.new.record, now);
    v["key"] = serde_json::Value::String(r.new.secret.expose().clone());
    v["rotated_from"] = key_json(&r.old, now);
    Ok(with_credential(v))
}

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `DELETE /admin/keys/{id}`: revokes a key (idempotent). 204 on success.
pub async fn revoke_key(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Path(id): Path<String>,
) -> Result<Response> {
    let scope = Scope::of(&state, &p);
    // Look the key up first, so a key of another tenant is "not found", not revoked.
    let key = state.keys.get_key(&id).await.map_err(store_error)?;
    let Some(key) = key.filter(|k| scope.covers(&k.tenant)) else {
        return Err(ApiError::ObjectNotFound("key").into());
    };
    state.keys.revoke_key(&key.id).await.map_err(store_error)?;
    if let Some(c) = &state.key_cache {
        c.clear();
    }
    record.set_action(
        EventType::KeyRevoked,
        Some(format!("key_id={} tenant={}", key.id, key.tenant)),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/tenants`: every tenant for operators, one's own otherwise.
pub async fn list_tenants(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Result<Response> {
    let scope = Scope::of(&state, &p);
    let tenants = state.tenants.list_tenants().await.map_err(store_error)?;
    let data: Vec<_> = tenants
        .iter()
        .filter(|t| scope.covers(&t.name))
        .map(|t| serde_json::json!({"name": t.name, "created_at": t.created_at.unix_timestamp()}))
        .collect();
    Ok(Json(serde_json::json!({"data": data})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenantBody {
    name: String,
}

/// `POST /admin/tenants`: creates a tenant (operators only). 201, or 200 if it existed.
pub async fn create_tenant(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Body(body): Body<NewTenantBody>,
) -> Result<Response> {
    if !matches!(Scope::of(&state, &p), Scope::All) {
        return Err(ApiError::Forbidden.into());
    }
    let existed = state
        .tenants
        .list_tenants()
        .await
        .map_err(store_error)?
        .iter()
        .any(|t| t.name == body.name);
    let t = state
        .tenants
        .ensure_tenant(&body.name)
        .await
        .map_err(store_error)?;
    if !existed {
        record.set_action(
            EventType::ConfigChange,
            Some(format!("tenant_created={}", t.name)),
        );
    }
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(serde_json::json!({"name": t.name, "created_at": t.created_at.unix_timestamp()})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    tenant: Option<String>,
    outcome: Option<String>,
    event_type: Option<String>,
    request_id: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    /// RFC 3339.
    until: Option<String>,
    after_seq: Option<u64>,
    limit: Option<u32>,
}

/// `GET /admin/audit`: audit entries matching the filters, in log order, with the `seq` to
/// pass as `after_seq` for the next page. Non-operators see their own tenant's entries only.
pub async fn query_audit(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    q: std::result::Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let Some(audit) = &state.audit else {
        return Err(ApiError::AuditUnavailable.into());
    };
    let bad = |param: &'static str, message: &'static str| {
        OpenAiError(ApiError::BadRequest(wardgate_api::BadRequest::param(
            param, message,
        )))
    };
    let time = |param: &'static str, v: Option<String>| match v {
        None => Ok(None),
        Some(t) => Timestamp::parse_rfc3339(&t)
            .map(Some)
            .ok_or_else(|| bad(param, "must be an RFC 3339 time like 2025-01-31T00:00:00Z")),
    };
    let outcome = match q.outcome {
        None => None,
        Some(o) => Some(
            o.parse::<Outcome>()
                .map_err(|_| bad("outcome", "must be allow, deny, error or client_abort"))?,
        ),
    };
    let event_type = match q.event_type {
        None => None,
        Some(t) => Some(
            t.parse::<EventType>()
                .map_err(|_| bad("event_type", "is not a known event type"))?,
        ),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad("limit", "must be 1 to 1000"));
    }
    let scope = Scope::of(&state, &p);
    let tenant = match (&scope, q.tenant) {
        (Scope::Tenant(own), Some(t)) if t != *own => {
            // Nothing of another tenant is visible; an empty page, like a tenant without
            // events.
            record.set_action(EventType::AuditAccess, Some("audit_query".into()));
            return Ok(
                Json(serde_json::json!({"data": [], "next_after_seq": null})).into_response(),
            );
        }
        (Scope::Tenant(own), _) => Some((*own).to_owned()),
        (Scope::All, t) => t,
    };
    let filter = AuditFilter {
        actor_id: q.actor,
        tenant,
        outcome,
        event_type,
        request_id: q.request_id,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        after_seq: q.after_seq,
        limit: Some(limit),
    };
    let entries = audit.store().query(&filter).await.map_err(|e| {
        tracing::error!(error = %e, "audit query failed");
        ApiError::StorageUnavailable
    })?;
    record.set_action(EventType::AuditAccess, Some("audit_query".into()));
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    // Each line is one JSON object (the export format); joined, they form the array.
    let mut body = String::from("{\"data\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&wardgate_audit::export::entry_line(e));
    }
    body.push_str("],\"next_after_seq\":");
    body.push_str(&next.map_or_else(|| "null".to_owned(), |n| n.to_string()));
    body.push('}');
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// `POST /admin/config/reload` (operators only): reads and validates the configuration
/// again and applies what can change without a restart (see `reload`). 200 with the changed
/// sections; 400 for an invalid file; 409 when a setting that needs a restart changed. Each
/// attempt is a `config_change` audit event, refused ones included.
pub async fn reload_config(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
) -> Result<Response> {
    if !matches!(Scope::of(&state, &p), Scope::All) {
        return Err(ApiError::Forbidden.into());
    }
    let Some(reloader) = state.reloader.clone() else {
        record.set_action(
            EventType::ConfigChange,
            Some("reload refused: not reloadable".into()),
        );
        return Err(ApiError::ReloadRefused(
            "this service was not started from a configuration it can re-read".into(),
        )
        .into());
    };
    let outcome = tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .map_err(|_| ApiError::StorageUnavailable)?;
    match outcome {
        Ok(done) => {
            let changed = if done.changed.is_empty() {
                "nothing".to_owned()
            } else {
                done.changed.join(",")
            };
            record.set_action(
                EventType::ConfigChange,
                Some(format!(
                    "configuration reloaded; changed={changed}; sha256={}",
                    done.digest
                )),
            );
            tracing::warn!(target: "wardgate::alert", changed = %changed, "configuration reloaded");
            Ok(Json(serde_json::json!({
                "reloaded": !done.changed.is_empty(),
                "changed": done.changed,
                "sha256": done.digest,
            }))
            .into_response())
        }
        Err(crate::reload::ReloadError::Invalid(e)) => {
            record.set_action(
                EventType::ConfigChange,
                Some(format!("reload refused: invalid setting {}", e.key)),
            );
            Err(ApiError::BadRequest(wardgate_api::BadRequest {
                param: None,
                message: format!("the configuration is invalid, nothing was changed: {e}"),
            })
            .into())
        }
        Err(e) => {
            record.set_action(
                EventType::ConfigChange,
                Some(format!("reload refused: {e}")),
            );
            Err(ApiError::ReloadRefused(e.to_string()).into())
        }
    }
}
