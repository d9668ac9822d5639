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
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use wardgate_audit::{AuditFilter, EventType, Outcome, Timestamp};
use wardgate_store::{ApiKeyRecord, Role, StoreError};

use crate::error::{ApiError, OpenAiError};
use crate::identity::principal::Principal;
use crate::middleware::events::{ConfigReloaded, ReloadVia};
use crate::middleware::record::RequestRecord;
use crate::openapi::{OpenAiErrors, OpenAiNotFound, OpenAiTooLarge};
use crate::pipeline::extract::Json as Body;
use crate::serve::reload::ReloadError;
use crate::services::keys::{Caller, KeyAudit, KeyError, KeyRequest, KeyService};
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
        StoreError::Conflict(message) => ApiError::Conflict(message),
        StoreError::NotFound => ApiError::ObjectNotFound("key"),
        StoreError::Unavailable(_) | StoreError::Migration(_) => {
            tracing::error!(error = %crate::causes::Causes(&e), "admin API: store failed");
            ApiError::StorageUnavailable
        }
    }
}

// The answers' types double as their OpenAPI schemas (`/openapi.json`).

/// A role name, as keys carry it (the schema of `wardgate_store::Role`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    User,
    Admin,
    Auditor,
    BreakGlass,
}

/// A key as the admin API shows it: never the secret or its hash. Times are unix seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    /// `key_` and 26 base32 characters.
    id: String,
    tenant: String,
    /// The lookup prefix in the key; not secret on its own.
    prefix: String,
    /// Models the key may use; empty means all.
    models: Vec<String>,
    #[schema(value_type = Vec<RoleName>)]
    roles: Vec<Role>,
    label: Option<String>,
    /// `active`, `revoked` or `expired`.
    status: &'static str,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    /// The id of the key that replaced this one by rotation; a key is rotated once.
    replaced_by: Option<String>,
}

/// A new key: the only answer that holds its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    info: KeyInfo,
    /// The whole key, `wg_<prefix>_<secret>`; shown once.
    key: String,
}

/// What a configuration reload did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadResult {
    /// Whether anything changed.
    reloaded: bool,
    /// The sections whose settings changed.
    changed: Vec<&'static str>,
    /// The digest of the configuration now in force.
    sha256: String,
}

/// The answer to revoking a key that was revoked already: nothing changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlreadyRevoked {
    #[serde(flatten)]
    info: KeyInfo,
    /// Always `true`: the key was revoked before; its `revoked_at` is the first revocation's.
    already_revoked: bool,
}

/// A replacement key and the key it replaces (with its shortened expiry).
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedKey {
    #[serde(flatten)]
    created: CreatedKey,
    /// The old key as it now stands: it stops working at its `expires_at`.
    rotated_from: KeyInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    data: Vec<KeyInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantInfo {
    name: String,
    /// Unix seconds.
    created_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    data: Vec<TenantInfo>,
}

/// A page of audit entries, in log order. (Written by hand in `query_audit`, which splices in
/// the export format's lines; this type is its schema.)
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries in the export format (`{"seq", "leaf_hash", "event"}`), one object each.
    data: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Pass as `after_seq` for the next page; `null` on the last page.
    next_after_seq: Option<u64>,
}

/// A key as the admin API and `wardgate keys list --json` show it: never the secret or its
/// hash.
pub fn key_json(k: &ApiKeyRecord, now: OffsetDateTime) -> serde_json::Value {
    serde_json::to_value(key_info(k, now)).unwrap_or_default()
}

fn key_info(k: &ApiKeyRecord, now: OffsetDateTime) -> KeyInfo {
    KeyInfo {
        id: k.id.clone(),
        tenant: k.tenant.clone(),
        prefix: k.prefix.clone(),
        models: k.models.clone(),
        roles: k.roles.clone(),
        label: k.label.clone(),
        status: key_status(k, now),
        created_at: k.created_at.unix_timestamp(),
        expires_at: k.expires_at.map(OffsetDateTime::unix_timestamp),
        revoked_at: k.revoked_at.map(OffsetDateTime::unix_timestamp),
        last_used_at: k.last_used_at.map(OffsetDateTime::unix_timestamp),
        replaced_by: k.replaced_by.clone(),
    }
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Only this tenant's keys (operators); others see their own tenant's only.
    tenant: Option<String>,
}

/// `GET /admin/keys[?tenant=NAME]`: keys newest first, revoked and expired included.
#[utoipa::path(
    get,
    path = "/admin/keys",
    tag = "admin",
    params(TenantQuery),
    responses(
        (status = 200, description = "Keys, newest first.", body = KeyList),
        OpenAiErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    q: std::result::Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let scope = Scope::of(&state, &p);
    let tenant = match (&scope, q.tenant.as_deref()) {
        (Scope::Tenant(own), Some(t)) if t != *own => {
            return Ok(Json(KeyList { data: Vec::new() }).into_response());
        }
        (Scope::Tenant(own), _) => Some(*own),
        (Scope::All, t) => t,
    };
    let keys = state.keys.list_keys(tenant).await.map_err(store_error)?;
    let now = OffsetDateTime::now_utc();
    let data = keys.iter().map(|k| key_info(k, now)).collect();
    Ok(Json(KeyList { data }).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// Default: the caller's tenant.
    tenant: Option<String>,
    /// Default: all models.
    #[serde(default)]
    models: Vec<String>,
    /// Default: `user`. `break_glass` needs `expires_in` of at most 24 hours.
    #[serde(default)]
    #[schema(value_type = Vec<RoleName>)]
    roles: Vec<Role>,
    /// A lifetime such as `90d` or `12h`.
    expires_in: Option<String>,
    label: Option<String>,
}

/// `POST /admin/keys`: creates a key; the answer is the only time the key is shown.
#[utoipa::path(
    post,
    path = "/admin/keys",
    tag = "admin",
    request_body = NewKeyBody,
    responses(
        (status = 201, description = "The new key (`Cache-Control: no-store`).", body = CreatedKey),
        OpenAiErrors, OpenAiTooLarge,
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Body(body): Body<NewKeyBody>,
) -> Result<Response> {
    let req = KeyRequest {
        tenant: body.tenant.unwrap_or_else(|| p.tenant.clone()),
        models: body.models,
        roles: body.roles,
        expires: body.expires_in,
        label: body.label,
    };
    let new = key_service(&state)
        .create(caller(&state, &p), req, KeyAudit::Request(&record))
        .await
        .map_err(key_error)?;
    let body = CreatedKey {
        info: key_info(&new.record, OffsetDateTime::now_utc()),
        key: new.secret.expose().clone(),
    };
    Ok(with_credential(body))
}

/// A 201 whose body holds a credential: no cache may keep it.
fn with_credential(body: impl Serialize) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The key service over this process's stores, clearing its cache of verified keys.
fn key_service(state: &AppState) -> KeyService<'_> {
    KeyService::new(&*state.keys, &*state.tenants)
        .with_cache(state.key_cache.as_deref())
        .with_broadcast(state.revocations.as_deref())
}

/// The principal as the key service sees it.
fn caller<'a>(state: &AppState, p: &'a Principal) -> Caller<'a> {
    Caller::Admin {
        principal: p,
        operator: matches!(Scope::of(state, p), Scope::All),
    }
}

/// A refused or failed key change as the admin API answers it.
fn key_error(e: KeyError) -> ApiError {
    let param = |param: &'static str, e: &dyn std::fmt::Display| {
        ApiError::BadRequest(wardgate_api::BadRequest::param(
            param,
            format!("{param} {e}"),
        ))
    };
    match e {
        KeyError::Forbidden => ApiError::Forbidden,
        KeyError::UnknownTenant => ApiError::BadRequest(wardgate_api::BadRequest::param(
            "tenant",
            "no such tenant; create it first with POST /admin/tenants",
        )),
        KeyError::NotFound => ApiError::ObjectNotFound("key"),
        KeyError::Lifetime(e) => param("expires_in", &e),
        KeyError::Overlap(e) => param("overlap", &e),
        KeyError::Roles(message) | KeyError::Invalid(message) => {
            ApiError::BadRequest(wardgate_api::BadRequest {
                param: None,
                message,
            })
        }
        KeyError::Conflict(message) => ApiError::Conflict(message),
        KeyError::Unavailable(e) => store_error(e),
        KeyError::Unaudited { .. } => {
            tracing::error!(error = %crate::causes::Causes(&e), "admin API: a key change was not audited");
            ApiError::AuditUnavailable
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old key keeps working beside the new one, such as `24h` (the default).
    overlap: Option<String>,
    /// The new key's lifetime, such as `90d`; absent: it does not expire.
    expires_in: Option<String>,
}

/// `POST /admin/keys/{id}/rotate`: a replacement key with the same scope; the old key keeps
/// working for the overlap, then expires. 201 with the new key (shown once) and the old
/// key's new expiry.
#[utoipa::path(
    post,
    path = "/admin/keys/{id}/rotate",
    tag = "admin",
    params(("id" = String, Path, description = "The key's id (`key_...`).")),
    request_body(content = Option<RotateBody>, description = "Optional; an empty body means a 24h overlap and no expiry."),
    responses(
        (status = 201, description = "The replacement key (`Cache-Control: no-store`) and the old key's new expiry.", body = RotatedKey),
        (status = 409, description = "The key was rotated already (the message names its replacement), or is revoked or expired: only a live key is rotated, once; nothing was changed. Of concurrent rotations of one key, through any instances, exactly one succeeds.", body = wardgate_api::openai::ErrorBody),
        OpenAiErrors, OpenAiNotFound, OpenAiTooLarge,
    ),
    security(("bearer" = []))
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Path(id): Path<String>,
    crate::pipeline::extract::OptionalJson(body): crate::pipeline::extract::OptionalJson<
        RotateBody,
    >,
) -> Result<Response> {
    let body = body.unwrap_or_default();
    let r = key_service(&state)
        .rotate(
            caller(&state, &p),
            &id,
            body.overlap.as_deref(),
            body.expires_in.as_deref(),
            KeyAudit::Request(&record),
        )
        .await
        .map_err(key_error)?;
    let now = OffsetDateTime::now_utc();
    Ok(with_credential(RotatedKey {
        created: CreatedKey {
            info: key_info(&r.new.record, now),
            key: r.new.secret.expose().clone(),
        },
        rotated_from: key_info(&r.old, now),
    }))
}

/// `DELETE /admin/keys/{id}`: revokes a key. 204 when this call revoked it (a `key_revoked`
/// event); 200 with the key and `"already_revoked": true` when it was revoked before, which
/// changes nothing and writes no second `key_revoked` event (the key is announced to the
/// other instances again all the same).
#[utoipa::path(
    delete,
    path = "/admin/keys/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "The key's id (`key_...`).")),
    responses(
        (status = 204, description = "Revoked now."),
        (status = 200, description = "Revoked before: nothing changed.", body = AlreadyRevoked),
        OpenAiErrors, OpenAiNotFound,
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Path(id): Path<String>,
) -> Result<Response> {
    let r = key_service(&state)
        .revoke(caller(&state, &p), &id, KeyAudit::Request(&record))
        .await
        .map_err(key_error)?;
    if !r.already {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let body = AlreadyRevoked {
        info: key_info(&r.key, OffsetDateTime::now_utc()),
        already_revoked: true,
    };
    Ok(Json(body).into_response())
}

/// `GET /admin/tenants`: every tenant for operators, one's own otherwise.
#[utoipa::path(
    get,
    path = "/admin/tenants",
    tag = "admin",
    responses(
        (status = 200, description = "The tenants in the caller's scope.", body = TenantList),
        OpenAiErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Result<Response> {
    let scope = Scope::of(&state, &p);
    let tenants = state.tenants.list_tenants().await.map_err(store_error)?;
    let data = tenants
        .iter()
        .filter(|t| scope.covers(&t.name))
        .map(|t| TenantInfo {
            name: t.name.clone(),
            created_at: t.created_at.unix_timestamp(),
        })
        .collect();
    Ok(Json(TenantList { data }).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenantBody {
    name: String,
}

/// `POST /admin/tenants`: creates a tenant (operators only). 201 and a `config_change` event
/// (`tenant_created=<name>`); 409 when it exists already, with no event, also when several
/// creations race: the store's unique name decides which one created it.
#[utoipa::path(
    post,
    path = "/admin/tenants",
    tag = "admin",
    request_body = NewTenantBody,
    responses(
        (status = 201, description = "The tenant was created.", body = TenantInfo),
        (status = 409, description = "The tenant exists already; nothing was changed.", body = wardgate_api::openai::ErrorBody),
        OpenAiErrors, OpenAiTooLarge,
    ),
    security(("bearer" = []))
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    Body(body): Body<NewTenantBody>,
) -> Result<Response> {
    if !matches!(Scope::of(&state, &p), Scope::All) {
        return Err(ApiError::Forbidden.into());
    }
    let t = state
        .tenants
        .create_tenant(&body.name)
        .await
        .map_err(store_error)?;
    record.set_action(
        EventType::ConfigChange,
        Some(format!("tenant_created={}", t.name)),
    );
    let body = TenantInfo {
        created_at: t.created_at.unix_timestamp(),
        name: t.name,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The actor's id (a key id or a JWT subject).
    actor: Option<String>,
    tenant: Option<String>,
    /// `allow`, `deny`, `error` or `client_abort`.
    outcome: Option<String>,
    /// An audit event type such as `request` or `key_created`.
    event_type: Option<String>,
    request_id: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    /// RFC 3339.
    until: Option<String>,
    /// Entries after this sequence number (the previous page's `next_after_seq`).
    after_seq: Option<u64>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
}

/// `GET /admin/audit`: audit entries matching the filters, in log order, with the `seq` to
/// pass as `after_seq` for the next page. Non-operators see their own tenant's entries only.
#[utoipa::path(
    get,
    path = "/admin/audit",
    tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, description = "Matching entries (`Cache-Control: no-store`).", body = AuditPage),
        OpenAiErrors,
    ),
    security(("bearer" = []))
)]
pub async fn query_audit(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    q: std::result::Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let audit = &state.audit;
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
        tracing::error!(error = %crate::causes::Causes(&e), "audit query failed");
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
/// sections; 400 for an invalid file; 409 when a setting that needs a restart changed; 503
/// when the audit log cannot commit the reload's event (nothing is applied). Each attempt is
/// a `config_change` audit event, refused ones included.
#[utoipa::path(
    post,
    path = "/admin/config/reload",
    tag = "admin",
    responses(
        (status = 200, description = "Reloaded (or nothing changed).", body = ReloadResult),
        (status = 409, description = "Refused: a setting that needs a restart changed, or the service cannot reload; nothing was applied.", body = wardgate_api::openai::ErrorBody),
        OpenAiErrors,
    ),
    security(("bearer" = []))
)]
pub async fn reload_config(
    State(state): State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
    axum::Extension(record): axum::Extension<Arc<RequestRecord>>,
    // Set by `Reloader::install` on the router it serves; absent where the service was not
    // started from a configuration (library tests, `wardgate llm`).
    reloader: Option<axum::Extension<Arc<crate::serve::reload::Reloader>>>,
) -> Result<Response> {
    if !matches!(Scope::of(&state, &p), Scope::All) {
        return Err(ApiError::Forbidden.into());
    }
    let prepared = match reloader {
        Some(axum::Extension(reloader)) => reloader.prepare().await,
        None => Err(ReloadError::NotReloadable),
    };
    let result = match prepared {
        // Applied only once its event is committed: the request's terminal event comes
        // too late for that (after the answer, so after the swap).
        Ok(prepared) => {
            ConfigReloaded {
                via: ReloadVia::AdminApi,
                result: &Ok(prepared.reloaded().clone()),
            }
            .commit(&record, &state.audit)
            .await
            .map_err(|_| ApiError::AuditUnavailable)?;
            Ok(prepared.apply())
        }
        Err(e) => {
            let result = Err(e);
            ConfigReloaded {
                via: ReloadVia::AdminApi,
                result: &result,
            }
            .emit(&record);
            result
        }
    };
    match result {
        Ok(done) => Ok(Json(ReloadResult {
            reloaded: !done.changed.is_empty(),
            changed: done.changed,
            sha256: done.digest,
        })
        .into_response()),
        Err(ReloadError::Invalid(e)) => Err(ApiError::BadRequest(wardgate_api::BadRequest {
            param: None,
            message: format!("the configuration is invalid, nothing was changed: {e}"),
        })
        .into()),
        Err(ReloadError::NotReloadable) => Err(ApiError::ReloadRefused(
            "this service was not started from a configuration it can re-read".into(),
        )
        .into()),
        Err(e) => Err(ApiError::ReloadRefused(e.to_string()).into()),
    }
}
