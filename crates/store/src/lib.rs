//! Storage for wardgate: backend-neutral traits (one per capability), the records they exchange,
//! the SQLite implementation behind the embedded default, and the PostgreSQL one that several
//! gateways share.
//!
//! The traits speak only in this crate's types, never a driver's, so a PostgreSQL implementation
//! can sit behind the same `Arc<dyn KeyStore>` without callers changing.
//!
//! The audit log's storage trait, `AuditStore`, is defined by `wardgate-audit` (which chooses
//! no database); `SqliteStore` implements it in `sqlite/audit.rs`.

mod audit_rows;
#[cfg(test)]
mod conformance;
pub mod driver;
pub mod keys;
pub mod names;
pub mod postgres;
mod records;
pub mod roles;
pub mod secret;
pub mod sqlite;

use time::OffsetDateTime;

pub use postgres::PgStore;
pub use roles::Role;
pub use secret::Secret;
pub use sqlite::{AuditDurability, SqliteStore};

/// The underlying cause of an unavailable store, whatever the backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store call failed.
///
/// Messages carry no secrets and no caller-supplied values, so they are safe to log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed (IO, locking, pool exhausted, corrupt row, OS
    /// random source). A server-side fault: answer 5xx and log the source.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// No record with the given id.
    #[error("not found")]
    NotFound,
    /// The caller's input was rejected; the message says what is allowed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The change conflicts with what is stored (a tenant that exists already, a key that is
    /// no longer live); the message says which, and that nothing was changed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The schema could not be brought up to date (including: the database is newer than this
    /// build). Fatal at start-up.
    #[error("migration failed: {0}")]
    Migration(String),
}

/// A tenant: the unit that keys, quotas and audit are grouped by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// When the tenant was first seen, whole seconds, UTC.
    pub created_at: OffsetDateTime,
}

/// What the store knows about an API key. Holds nothing secret: not the key, not its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// `key_` + 26 lowercase base32 characters; stable and printable, safe in logs and audit.
    pub id: String,
    /// The lookup prefix embedded in the key (12 characters of `a-z0-9`); not secret on its own.
    pub prefix: String,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// Models the key may use; empty means all models.
    pub models: Vec<String>,
    /// What the key may do: sorted, each role once, never empty.
    pub roles: Vec<Role>,
    /// An operator's note; never PHI.
    pub label: Option<String>,
    /// Whole seconds, UTC (times are stored as unix seconds).
    pub created_at: OffsetDateTime,
    /// The key is rejected from this instant on; whole seconds, UTC.
    pub expires_at: Option<OffsetDateTime>,
    /// Set once by the first revocation; whole seconds, UTC.
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key was last used, as far as `touch_key` was told; whole seconds, UTC.
    pub last_used_at: Option<OffsetDateTime>,
    /// The id of the key that replaced this one by rotation; set once, by the rotation that
    /// won (a key is rotated at most once).
    pub replaced_by: Option<String>,
}

/// A key just created: its record and the whole key, which is shown once and never stored.
#[derive(Debug)]
pub struct NewKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// The whole key, `wg_<prefix>_<secret>`.
    pub secret: Secret<String>,
}

/// What to create a key for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKeySpec {
    /// Tenant name; created if it does not exist.
    pub tenant: String,
    /// Models the key may use; empty means all models. Duplicates are dropped.
    pub models: Vec<String>,
    /// What the key may do; empty means `user`. See [`roles::normalize_roles`] for the rules.
    pub roles: Vec<Role>,
    /// When the key stops working; rounded up to whole seconds (so it may last up to a second
    /// longer than asked, never shorter).
    pub expires_at: Option<OffsetDateTime>,
    /// An operator's note (1 to 128 characters, no control characters); must not carry PHI.
    pub label: Option<String>,
}

/// The outcome of checking a presented key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a verdict is returned once per verification and never stored; boxing the record \
              would cost an allocation on every authenticated request"
)]
pub enum KeyVerdict {
    /// The key is known, its secret matches, and it is neither revoked nor expired.
    Valid(ApiKeyRecord),
    /// Anything else.
    Rejected(RejectReason),
}

/// Why a key was rejected. For audit and metrics only: the HTTP layer answers every reason
/// identically, so a client cannot tell a revoked key from a mistyped one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Not shaped like a wardgate key.
    Malformed,
    /// No key has this prefix, or the secret does not match.
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The key's expiry has passed.
    Expired,
}

/// API keys: creation, listing, revocation and verification.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Creates a key for `spec.tenant`, creating the tenant if needed. The returned secret is
    /// the only copy of the key; the store keeps its prefix and hash.
    async fn create_key(&self, spec: NewKeySpec) -> Result<NewKey, StoreError>;

    /// All keys, or one tenant's, newest first. Revoked and expired keys are included.
    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// One key by id, whatever its state; `None` if no key has this id.
    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Revokes a key, and says whether this call revoked it. `NotFound` if no key has this id;
    /// revoking twice is not an error and keeps the first revocation time. Of concurrent calls
    /// for one key exactly one answers [`Revocation::Revoked`].
    async fn revoke_key(&self, id: &str) -> Result<Revocation, StoreError>;

    /// Records that key `id` was used at `at` (never moves the time back). Unknown ids are
    /// ignored.
    async fn touch_key(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Checks a presented key at `now`. `Err` only when the store itself fails; every kind of bad
    /// key is `Ok(KeyVerdict::Rejected(_))`.
    async fn verify(&self, presented: &str, now: OffsetDateTime) -> Result<KeyVerdict, StoreError>;

    /// Brings key `id`'s expiry forward to `at` (never later than it already is). `NotFound`
    /// if no key has this id.
    async fn expire_key_by(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError>;

    /// Rotates key `id`: a new key with the same tenant, models, roles and label (expiring at
    /// `expires_at`), and the old key left valid for `overlap` more at most (its end rounded
    /// down to the second, so `0s` stops it at once), so clients can switch without an outage.
    ///
    /// One transaction decides: only a live key (not revoked, not expired) that was never
    /// rotated is rotated, and the replacement is inserted and the old key marked
    /// (`replaced_by`) together. Of concurrent rotations of one key exactly one succeeds; the
    /// others, and a rotation after a revocation, get `Conflict` saying why (naming the
    /// replacement) and change nothing. A revocation racing a rotation is ordered before or
    /// after it, never between: either the rotation is refused, or the revocation finds the
    /// old key already replaced (and revokes it; the replacement stays).
    async fn rotate_key(
        &self,
        id: &str,
        overlap: std::time::Duration,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<Rotated, StoreError>;
}

/// What [`KeyStore::revoke_key`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// This call revoked the key.
    Revoked,
    /// The key was revoked before; nothing changed.
    AlreadyRevoked,
}

/// The longest a rotated-out key may stay valid beside its replacement.
pub const MAX_ROTATION_OVERLAP: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// The result of [`KeyStore::rotate_key`].
#[derive(Debug)]
pub struct Rotated {
    /// The replacement, with its secret (shown once).
    pub new: NewKey,
    /// The old key as it now stands (its shortened expiry).
    pub old: ApiKeyRecord,
}

/// Tenants.
#[async_trait::async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Returns the tenant, creating it first if it does not exist.
    async fn ensure_tenant(&self, name: &str) -> Result<Tenant, StoreError>;

    /// Creates the tenant; `Conflict` if it exists already. The store's unique name decides:
    /// of concurrent calls for one name exactly one succeeds.
    async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError>;

    /// All tenants, by name.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
}

/// Keys, tenants and health together: what a gateway opens one of (every store implements
/// all three), held as `Arc<dyn Database>` and handed out as each trait.
pub trait Database: KeyStore + TenantStore + Health {}

impl<T: KeyStore + TenantStore + Health> Database for T {}

/// Liveness of the backing store, for readiness probes; and its last step at a clean stop.
#[async_trait::async_trait]
pub trait Health: Send + Sync + 'static {
    /// `Ok` if the store answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Called once at a clean stop, after the last write (the audit log's final checkpoint):
    /// leaves the store's files complete on their own. SQLite copies its WAL into the database
    /// file and truncates it, so that a copy of the database file alone holds every commit;
    /// other stores have nothing to do.
    async fn settle(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
