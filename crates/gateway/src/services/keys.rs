//! Key management: creating, rotating and revoking API keys, for the admin API
//! (`handlers/admin.rs`) and the CLI (`wardgate keys`) alike.
//!
//! [`KeyService`] does every check of a change once: who may act on which tenant and grant
//! which role, a key's lifetime ([`key_lifetime`], the one bounds check), the rotation
//! overlap, the `break_glass` rule (alone, expiring within 24 hours), and that the key or
//! tenant exists. It writes the change's `KeyChanged` event where its caller's audit goes
//! ([`KeyAudit`]) and answers a typed [`KeyError`] that each front renders its own way.
//! (The store keeps its own invariants behind it: names, labels, the `break_glass` rule.)

use time::OffsetDateTime;
use wardgate_audit::Auditor;
use wardgate_store::{
    ApiKeyRecord, KeyStore, NewKey, NewKeySpec, Revocation, Role, Rotated, StoreError,
};
use wardgate_store::{TenantStore, roles::normalize_roles};

use crate::identity::key_cache::KeyCache;
use crate::identity::principal::Principal;
use crate::identity::revocations::Revocations;
use crate::middleware::events::KeyChanged;
use crate::middleware::record::RequestRecord;

/// The longest lifetime a key may be given.
pub const MAX_KEY_LIFETIME: time::Duration = time::Duration::days(36_525);

/// The rotation overlap when none is asked for.
pub const DEFAULT_ROTATION_OVERLAP: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A key lifetime that was refused. Its text is the rule, the same for the admin API
/// (`expires_in`) and the CLI (`wardgate keys create|rotate --expires`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be a duration such as `90d` or `12h`, more than zero and at most 100 years")]
pub struct BadKeyLifetime;

/// A rotation overlap that was refused. Its text is the rule, the same for the admin API
/// (`overlap`) and the CLI (`wardgate keys rotate --overlap`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be a duration such as `24h` or `0s`, at most 30 days")]
pub struct BadOverlap;

/// A key's lifetime from text such as `90d`: more than zero and at most
/// [`MAX_KEY_LIFETIME`]. The one bounds check of a key's lifetime; an accepted lifetime added
/// to the present cannot overflow.
pub fn key_lifetime(text: &str) -> Result<time::Duration, BadKeyLifetime> {
    let d = humantime::parse_duration(text).map_err(|_| BadKeyLifetime)?;
    let d = time::Duration::try_from(d).map_err(|_| BadKeyLifetime)?;
    if d.is_zero() || d > MAX_KEY_LIFETIME {
        return Err(BadKeyLifetime);
    }
    Ok(d)
}

/// When a key given `lifetime` (from [`key_lifetime`]) from now expires.
pub fn expires_after(lifetime: time::Duration) -> OffsetDateTime {
    OffsetDateTime::now_utc().saturating_add(lifetime)
}

/// How long a rotated-out key keeps working, from text such as `24h`: at most
/// [`wardgate_store::MAX_ROTATION_OVERLAP`]; `0s` stops it at once.
pub fn rotation_overlap(text: &str) -> Result<std::time::Duration, BadOverlap> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| *d <= wardgate_store::MAX_ROTATION_OVERLAP)
        .ok_or(BadOverlap)
}

/// Who asks for a key change; it decides which tenants and roles the change may touch.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    /// `wardgate keys`, run by whoever holds the database: any key, any role, and a key for a
    /// tenant that does not exist yet creates the tenant.
    Cli,
    /// An `admin` principal of the admin API. An `operator` (a principal of
    /// `auth.operator_tenant`) acts on every tenant; any other on its own only. A key's tenant
    /// must exist: tenants are created on purpose, with `POST /admin/tenants`.
    Admin {
        /// The authenticated caller.
        principal: &'a Principal,
        /// Whether its tenant is the operator tenant.
        operator: bool,
    },
}

impl Caller<'_> {
    /// Whether the caller may act on `tenant`'s keys.
    fn covers(&self, tenant: &str) -> bool {
        match self {
            Caller::Cli | Caller::Admin { operator: true, .. } => true,
            Caller::Admin { principal, .. } => principal.tenant == tenant,
        }
    }

    /// Separation of duties when a key is minted (created or rotated): nobody grants a role
    /// above their own. An `admin` may grant `user` and `admin`; `auditor` (reads the audit
    /// trail, which a tenant admin may not) and `break_glass` (inference on any model) only
    /// an admin of the operator tenant grants. The CLI grants any role.
    fn may_grant(&self, roles: &[Role]) -> Result<(), KeyError> {
        let Caller::Admin {
            principal,
            operator,
        } = self
        else {
            return Ok(());
        };
        let admin = principal.has(Role::Admin);
        let allowed = |role: &Role| match role {
            Role::User | Role::Admin => admin,
            Role::Auditor | Role::BreakGlass => admin && *operator,
        };
        if roles.iter().all(allowed) {
            Ok(())
        } else {
            Err(KeyError::Forbidden)
        }
    }
}

/// Where a key change's audit event goes.
#[derive(Clone, Copy, Debug)]
pub enum KeyAudit<'a> {
    /// Inside an admin API request: the request's terminal audit event carries the change.
    Request(&'a RequestRecord),
    /// Outside a request (the CLI): an event by `actor`, committed to the log before the
    /// change is reported done.
    Log {
        /// The audit log the event is committed to.
        auditor: &'a Auditor,
        /// Who made the change, such as `cli:alice`.
        actor: &'a str,
    },
}

/// Why a key change was refused or failed. Each front renders it its own way (the admin API
/// as a 4xx/5xx JSON error, the CLI as a message).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The caller may not act on this tenant or grant one of these roles.
    #[error(
        "not allowed: an admin acts on its own tenant only, and only an operator admin grants \
         auditor or break_glass"
    )]
    Forbidden,
    /// A key for a tenant that does not exist, asked for by a caller that does not create
    /// tenants.
    #[error("no such tenant; create it first")]
    UnknownTenant,
    /// No key has this id (or none the caller may see).
    #[error("no such key")]
    NotFound,
    /// The new key's lifetime.
    #[error(transparent)]
    Lifetime(#[from] BadKeyLifetime),
    /// The rotation overlap.
    #[error(transparent)]
    Overlap(#[from] BadOverlap),
    /// The roles break a rule (`break_glass` stands alone and expires within 24 hours); the
    /// message says which.
    #[error("{0}")]
    Roles(String),
    /// The store refused the input (a tenant name, a model, a label); the message says what is
    /// allowed and names no value.
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with what is stored (a rotation of a key that is no longer live);
    /// nothing was changed, and the message says why.
    #[error("{0}")]
    Conflict(String),
    /// The store failed; nothing was changed.
    #[error("storage unavailable")]
    Unavailable(#[source] StoreError),
    /// The change was made, but the audit log did not take its event.
    #[error("key {key_id} was changed, but the audit log did not take the event")]
    Unaudited {
        /// The key the change left in force (the replacement, for a rotation).
        key_id: String,
        /// Why the log refused the event.
        #[source]
        source: wardgate_audit::AuditError,
    },
}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(message) => KeyError::Invalid(message),
            StoreError::Conflict(message) => KeyError::Conflict(message),
            StoreError::NotFound => KeyError::NotFound,
            e @ (StoreError::Unavailable(_) | StoreError::Migration(_)) => KeyError::Unavailable(e),
        }
    }
}

/// What [`KeyService::revoke`] did.
#[derive(Debug)]
pub struct Revoked {
    /// The key as it now stands.
    pub key: ApiKeyRecord,
    /// It was revoked before this call: nothing changed and no event was written.
    pub already: bool,
}

/// What to create a key for, as a front received it.
#[derive(Clone, Debug, Default)]
pub struct KeyRequest {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// Models the key may use; empty means all.
    pub models: Vec<String>,
    /// Empty means `user`.
    pub roles: Vec<Role>,
    /// The key's lifetime such as `90d` (checked by [`key_lifetime`]); `None`: no expiry.
    pub expires: Option<String>,
    /// An operator's note; never PHI.
    pub label: Option<String>,
}

/// Creates, rotates and revokes keys over a key store, a tenant store, (in the serving
/// process) the cache of verified keys, and (with Redis) the broadcast that tells the other
/// instances to drop a rotated or revoked key from theirs.
#[derive(Clone, Copy)]
pub struct KeyService<'a> {
    keys: &'a dyn KeyStore,
    tenants: &'a dyn TenantStore,
    cache: Option<&'a KeyCache>,
    broadcast: Option<&'a Revocations>,
}

impl<'a> KeyService<'a> {
    /// A service over these stores, with no cache of verified keys.
    pub fn new(keys: &'a dyn KeyStore, tenants: &'a dyn TenantStore) -> Self {
        KeyService {
            keys,
            tenants,
            cache: None,
            broadcast: None,
        }
    }

    /// Clears `cache` after each rotation and revocation, so the change holds at once in this
    /// process.
    pub fn with_cache(self, cache: Option<&'a KeyCache>) -> Self {
        KeyService { cache, ..self }
    }

    /// Announces each rotation and revocation on `broadcast` (when Redis is configured), so
    /// every instance sharing it drops the key from its cache of verified keys at once.
    pub fn with_broadcast(self, broadcast: Option<&'a Revocations>) -> Self {
        KeyService { broadcast, ..self }
    }

    /// Creates a key; the answer holds its secret, shown once.
    pub async fn create(
        &self,
        caller: Caller<'_>,
        req: KeyRequest,
        audit: KeyAudit<'_>,
    ) -> Result<NewKey, KeyError> {
        if !caller.covers(&req.tenant) {
            return Err(KeyError::Forbidden);
        }
        caller.may_grant(&req.roles)?;
        if matches!(caller, Caller::Admin { .. }) {
            self.tenant_exists(&req.tenant).await?;
        }
        let expires_at = expires_at(req.expires.as_deref())?;
        let roles = roles(req.roles, expires_at)?;
        let new = self
            .keys
            .create_key(NewKeySpec {
                tenant: req.tenant,
                models: req.models,
                roles,
                expires_at,
                label: req.label,
            })
            .await?;
        record(audit, KeyChanged::Created(&new.record)).await?;
        Ok(new)
    }

    /// Replaces key `id` with a new key of the same scope; the old key keeps working for
    /// `overlap` (default [`DEFAULT_ROTATION_OVERLAP`]), then expires. The new key lives for
    /// `expires` (default: no expiry).
    pub async fn rotate(
        &self,
        caller: Caller<'_>,
        id: &str,
        overlap: Option<&str>,
        expires: Option<&str>,
        audit: KeyAudit<'_>,
    ) -> Result<Rotated, KeyError> {
        let key = self.key_for(caller, id).await?;
        // A rotation mints a key with the old one's roles: the same rule as a creation.
        caller.may_grant(&key.roles)?;
        let overlap = overlap.map_or(Ok(DEFAULT_ROTATION_OVERLAP), rotation_overlap)?;
        let expires_at = expires_at(expires)?;
        roles(key.roles.clone(), expires_at)?;
        let rotated = self.keys.rotate_key(&key.id, overlap, expires_at).await?;
        self.forget_verified(&key.id).await;
        record(audit, KeyChanged::Rotated(&rotated)).await?;
        Ok(rotated)
    }

    /// Revokes key `id`; the answer is the key as it now stands, and whether it was revoked
    /// before. Revoking twice keeps the first time and writes no second `key_revoked` event
    /// (of concurrent calls, the store tells exactly one it revoked the key); it announces the
    /// key again, in case the first announcement was lost.
    pub async fn revoke(
        &self,
        caller: Caller<'_>,
        id: &str,
        audit: KeyAudit<'_>,
    ) -> Result<Revoked, KeyError> {
        // Looked up first, so a key outside the caller's scope is "not found", not revoked.
        let key = self.key_for(caller, id).await?;
        let done = self.keys.revoke_key(&key.id).await?;
        self.forget_verified(&key.id).await;
        let key = self.keys.get_key(&key.id).await?.unwrap_or(key);
        if done == Revocation::Revoked {
            record(audit, KeyChanged::Revoked(&key)).await?;
        }
        Ok(Revoked {
            key,
            already: done == Revocation::AlreadyRevoked,
        })
    }

    /// Key `id`, if the caller may see it.
    async fn key_for(&self, caller: Caller<'_>, id: &str) -> Result<ApiKeyRecord, KeyError> {
        self.keys
            .get_key(id)
            .await?
            .filter(|k| caller.covers(&k.tenant))
            .ok_or(KeyError::NotFound)
    }

    /// Refuses a key for a tenant that does not exist (the store would create it on the fly).
    async fn tenant_exists(&self, tenant: &str) -> Result<(), KeyError> {
        let tenants = self.tenants.list_tenants().await?;
        if tenants.iter().any(|t| t.name == tenant) {
            Ok(())
        } else {
            Err(KeyError::UnknownTenant)
        }
    }

    /// After key `id` was rotated or revoked: forgets the verified keys here, and announces
    /// the change to the other instances.
    async fn forget_verified(&self, id: &str) {
        if let Some(c) = self.cache {
            c.clear();
        }
        if let Some(b) = self.broadcast {
            b.publish(id).await;
        }
    }
}

/// `expires` as an instant; `None` when not given.
fn expires_at(expires: Option<&str>) -> Result<Option<OffsetDateTime>, KeyError> {
    Ok(expires.map(key_lifetime).transpose()?.map(expires_after))
}

/// The roles of a key expiring at `expires_at`, checked by the store's rule.
fn roles(roles: Vec<Role>, expires_at: Option<OffsetDateTime>) -> Result<Vec<Role>, KeyError> {
    normalize_roles(roles, expires_at, OffsetDateTime::now_utc()).map_err(|e| match e {
        StoreError::Invalid(message) => KeyError::Roles(message),
        e => e.into(),
    })
}

/// Writes a change's event where the caller's audit goes.
async fn record(audit: KeyAudit<'_>, change: KeyChanged<'_>) -> Result<(), KeyError> {
    match audit {
        KeyAudit::Request(r) => {
            change.emit(r);
            Ok(())
        }
        KeyAudit::Log { auditor, actor } => {
            let key_id = change.key().id.clone();
            change
                .append(auditor, actor)
                .await
                .map_err(|source| KeyError::Unaudited { key_id, source })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use wardgate_audit::{AuditStore as _, EventType, MemoryAuditStore};
    use wardgate_store::SqliteStore;

    use super::*;

    /// A store with tenants `operator` and `acme`, and an audit log the CLI's events go to.
    struct Fixture {
        store: SqliteStore,
        log: Arc<MemoryAuditStore>,
        auditor: Auditor,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let store = SqliteStore::open_in_memory().await.unwrap();
            for t in ["operator", "acme"] {
                store.ensure_tenant(t).await.unwrap();
            }
            let log = Arc::new(MemoryAuditStore::new());
            let auditor = Auditor::start(
                log.clone(),
                wardgate_audit::SignerKey::generate("test/keys").unwrap(),
                wardgate_audit::AuditorConfig {
                    origin: "test/keys".into(),
                    ..wardgate_audit::AuditorConfig::default()
                },
            )
            .await
            .unwrap();
            Fixture {
                store,
                log,
                auditor,
            }
        }

        fn service(&self) -> KeyService<'_> {
            KeyService::new(&self.store, &self.store)
        }

        fn audit(&self) -> KeyAudit<'_> {
            KeyAudit::Log {
                auditor: &self.auditor,
                actor: "cli:test",
            }
        }

        async fn create(&self, caller: Caller<'_>, req: KeyRequest) -> Result<NewKey, KeyError> {
            self.service().create(caller, req, self.audit()).await
        }

        /// The key change events in the log, as (type, actor, detail).
        async fn events(&self) -> Vec<(EventType, String, String)> {
            self.log
                .read_range(0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .filter(|e| matches!(e.event_type, EventType::KeyCreated | EventType::KeyRevoked))
                .map(|e| (e.event_type, e.actor_id, e.detail.unwrap_or_default()))
                .collect()
        }

        async fn key_count(&self) -> usize {
            self.store.list_keys(None).await.unwrap().len()
        }
    }

    fn admin(tenant: &str) -> Principal {
        Principal {
            key_id: "key_admin".into(),
            tenant: tenant.into(),
            models: vec![],
            roles: vec![Role::Admin],
            method: wardgate_audit::AuthMethod::ApiKey,
        }
    }

    fn req(tenant: &str, roles: &[Role], expires: Option<&str>) -> KeyRequest {
        KeyRequest {
            tenant: tenant.into(),
            roles: roles.to_vec(),
            expires: expires.map(Into::into),
            ..KeyRequest::default()
        }
    }

    #[test]
    fn a_key_lifetime_is_more_than_zero_and_at_most_a_hundred_years() {
        let days = time::Duration::days;
        for (text, want) in [
            ("1s", Ok(time::Duration::seconds(1))),
            ("12h", Ok(time::Duration::hours(12))),
            ("90d", Ok(days(90))),
            ("100y", Ok(MAX_KEY_LIFETIME)),
            ("0s", Err(BadKeyLifetime)),
            ("0d", Err(BadKeyLifetime)),
            ("100y 1s", Err(BadKeyLifetime)),
            ("5000y", Err(BadKeyLifetime)),
            // Fits `std::time::Duration`, overflows a date when added to the present.
            ("500000000000y", Err(BadKeyLifetime)),
            // Does not fit `time::Duration`, or does not parse at all.
            ("18446744073709551615s", Err(BadKeyLifetime)),
            ("99999999999999999999999d", Err(BadKeyLifetime)),
            ("-1d", Err(BadKeyLifetime)),
            ("", Err(BadKeyLifetime)),
            ("soon", Err(BadKeyLifetime)),
        ] {
            assert_eq!(key_lifetime(text), want, "{text:?}");
        }
        // The longest accepted lifetime, added to the present, is a date.
        assert!(expires_after(MAX_KEY_LIFETIME) > OffsetDateTime::now_utc() + days(36_500));
    }

    /// A zero or overflowing lifetime is refused by both changes that take one, before
    /// anything changes, and whoever asks.
    #[tokio::test]
    async fn a_key_lifetime_out_of_bounds_changes_nothing() {
        let f = Fixture::new().await;
        let operator = admin("operator");
        let old = f.create(Caller::Cli, req("acme", &[], None)).await.unwrap();
        for bad in ["0s", "500000000000y", "99999999999999999999999d"] {
            for caller in [
                Caller::Cli,
                Caller::Admin {
                    principal: &operator,
                    operator: true,
                },
            ] {
                let created = f.create(caller, req("acme", &[], Some(bad))).await;
                assert!(
                    matches!(created, Err(KeyError::Lifetime(BadKeyLifetime))),
                    "{bad}: {created:?}"
                );
                let rotated = f
                    .service()
                    .rotate(caller, &old.record.id, None, Some(bad), f.audit())
                    .await;
                assert!(
                    matches!(rotated, Err(KeyError::Lifetime(BadKeyLifetime))),
                    "{bad}: {rotated:?}"
                );
            }
        }
        assert_eq!(f.key_count().await, 1);
        let live = f.store.get_key(&old.record.id).await.unwrap().unwrap();
        assert_eq!(
            live.expires_at, None,
            "the refused rotations left the key alone"
        );
        assert_eq!(f.events().await.len(), 1);
    }

    /// `break_glass` needs an expiry within 24 hours, whoever grants it and whether the key
    /// is created or rotated.
    #[tokio::test]
    async fn a_break_glass_key_must_expire_within_a_day() {
        let f = Fixture::new().await;
        let operator = admin("operator");
        let callers = [
            Caller::Cli,
            Caller::Admin {
                principal: &operator,
                operator: true,
            },
        ];
        for caller in callers {
            for expires in [None, Some("48h"), Some("25h")] {
                let r = f
                    .create(caller, req("acme", &[Role::BreakGlass], expires))
                    .await;
                let Err(KeyError::Roles(message)) = r else {
                    panic!("{expires:?}: {r:?}");
                };
                assert!(message.contains("24 hours"), "{message}");
            }
            // Not combined with another role either.
            let r = f
                .create(
                    caller,
                    req("acme", &[Role::BreakGlass, Role::User], Some("1h")),
                )
                .await;
            assert!(matches!(r, Err(KeyError::Roles(_))), "{r:?}");
        }
        assert_eq!(f.key_count().await, 0);

        let glass = f
            .create(callers[1], req("acme", &[Role::BreakGlass], Some("2h")))
            .await
            .unwrap();
        assert_eq!(glass.record.roles, [Role::BreakGlass]);
        // A rotation mints a break_glass key too: the same rule.
        for expires in [None, Some("48h")] {
            let r = f
                .service()
                .rotate(callers[1], &glass.record.id, None, expires, f.audit())
                .await;
            assert!(matches!(r, Err(KeyError::Roles(_))), "{expires:?}: {r:?}");
        }
        let r = f
            .service()
            .rotate(callers[1], &glass.record.id, None, Some("1h"), f.audit())
            .await
            .unwrap();
        assert_eq!(r.new.record.roles, [Role::BreakGlass]);
    }

    /// The admin API makes keys for existing tenants only; the CLI creates the tenant.
    #[tokio::test]
    async fn an_unknown_tenant_is_refused_to_the_api_and_created_by_the_cli() {
        let f = Fixture::new().await;
        let operator = admin("operator");
        let api = Caller::Admin {
            principal: &operator,
            operator: true,
        };
        let r = f.create(api, req("initech", &[], None)).await;
        assert!(matches!(r, Err(KeyError::UnknownTenant)), "{r:?}");
        assert_eq!(f.key_count().await, 0);
        let names = |ts: Vec<wardgate_store::Tenant>| -> Vec<String> {
            ts.into_iter().map(|t| t.name).collect()
        };
        assert!(!names(f.store.list_tenants().await.unwrap()).contains(&"initech".into()));

        let k = f
            .create(Caller::Cli, req("initech", &[], None))
            .await
            .unwrap();
        assert_eq!(k.record.tenant, "initech");
        assert!(names(f.store.list_tenants().await.unwrap()).contains(&"initech".into()));
    }

    /// A tenant admin acts on its own tenant and grants no role above its own; a key out of
    /// its reach is "not found", like one that does not exist.
    #[tokio::test]
    async fn a_tenant_admin_stays_in_its_tenant_and_grants_no_higher_role() {
        let f = Fixture::new().await;
        let acme_admin = admin("acme");
        let acme = Caller::Admin {
            principal: &acme_admin,
            operator: false,
        };
        for (tenant, roles) in [
            ("operator", &[][..]),
            ("acme", &[Role::Auditor][..]),
            ("acme", &[Role::BreakGlass][..]),
        ] {
            let r = f.create(acme, req(tenant, roles, Some("1h"))).await;
            assert!(
                matches!(r, Err(KeyError::Forbidden)),
                "{tenant} {roles:?}: {r:?}"
            );
        }
        let own = f
            .create(acme, req("acme", &[Role::User, Role::Admin], None))
            .await
            .unwrap();
        assert_eq!(own.record.roles, [Role::User, Role::Admin]);

        let foreign = f
            .create(Caller::Cli, req("operator", &[], None))
            .await
            .unwrap();
        let auditor = f
            .create(Caller::Cli, req("acme", &[Role::Auditor], None))
            .await
            .unwrap();
        let s = f.service();
        let r = s.revoke(acme, &foreign.record.id, f.audit()).await;
        assert!(matches!(r, Err(KeyError::NotFound)), "{r:?}");
        let r = s
            .rotate(acme, &foreign.record.id, None, None, f.audit())
            .await;
        assert!(matches!(r, Err(KeyError::NotFound)), "{r:?}");
        // Rotating mints the old key's roles: the same rule as creating.
        let r = s
            .rotate(acme, &auditor.record.id, None, None, f.audit())
            .await;
        assert!(matches!(r, Err(KeyError::Forbidden)), "{r:?}");
        let foreign = f.store.get_key(&foreign.record.id).await.unwrap().unwrap();
        assert_eq!(foreign.revoked_at, None);
    }

    #[tokio::test]
    async fn revoking_or_rotating_an_unknown_id_is_not_found() {
        let f = Fixture::new().await;
        let s = f.service();
        let r = s.revoke(Caller::Cli, "key_doesnotexist", f.audit()).await;
        assert!(matches!(r, Err(KeyError::NotFound)), "{r:?}");
        let r = s
            .rotate(Caller::Cli, "key_doesnotexist", None, None, f.audit())
            .await;
        assert!(matches!(r, Err(KeyError::NotFound)), "{r:?}");
        assert!(f.events().await.is_empty());
    }

    #[tokio::test]
    async fn a_rotation_overlap_is_at_most_thirty_days() {
        let f = Fixture::new().await;
        let k = f.create(Caller::Cli, req("acme", &[], None)).await.unwrap();
        for bad in ["31d", "soon", "-1h"] {
            let r = f
                .service()
                .rotate(Caller::Cli, &k.record.id, Some(bad), None, f.audit())
                .await;
            assert!(
                matches!(r, Err(KeyError::Overlap(BadOverlap))),
                "{bad}: {r:?}"
            );
        }
        assert_eq!(f.key_count().await, 1);
        let before = OffsetDateTime::now_utc();
        let r = f
            .service()
            .rotate(Caller::Cli, &k.record.id, None, None, f.audit())
            .await
            .unwrap();
        let until = r.old.expires_at.unwrap();
        let day = time::Duration::DAY;
        assert!(
            until >= before + day - time::Duration::SECOND
                && until <= before + day + time::Duration::minutes(1)
        );
    }

    /// Each change's event is written from what the change did, by the caller's actor.
    #[tokio::test]
    async fn each_change_is_audited_from_its_result() {
        let f = Fixture::new().await;
        let s = f.service();
        let new = f
            .create(Caller::Cli, req("acme", &[Role::Admin], Some("90d")))
            .await
            .unwrap();
        let r = s
            .rotate(Caller::Cli, &new.record.id, Some("0s"), None, f.audit())
            .await
            .unwrap();
        let revoked = s
            .revoke(Caller::Cli, &r.new.record.id, f.audit())
            .await
            .unwrap();
        assert!(revoked.key.revoked_at.is_some(), "the key as it now stands");
        assert!(!revoked.already);
        // Revoked again: said so, the first time stands, and no second event is written.
        let again = s
            .revoke(Caller::Cli, &r.new.record.id, f.audit())
            .await
            .unwrap();
        assert!(again.already);
        assert_eq!(again.key.revoked_at, revoked.key.revoked_at);
        let id = |k: &ApiKeyRecord| k.id.clone();
        assert_eq!(
            f.events().await,
            [
                (
                    EventType::KeyCreated,
                    "cli:test".into(),
                    format!("key_id={} tenant=acme roles=admin", id(&new.record))
                ),
                (
                    EventType::KeyCreated,
                    "cli:test".into(),
                    KeyChanged::Rotated(&r).detail()
                ),
                (
                    EventType::KeyRevoked,
                    "cli:test".into(),
                    format!("key_id={} tenant=acme", id(&r.new.record))
                ),
            ]
        );
        assert!(
            KeyChanged::Rotated(&r)
                .detail()
                .contains(&format!("rotated_from={}", id(&new.record)))
        );
    }
}
