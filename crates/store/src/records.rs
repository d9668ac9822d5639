//! What the SQL stores (SQLite and PostgreSQL) share about keys and tenants: the statements
//! (written once, in SQL both accept), reading a row into a record, whole-second times, and
//! the checks and retries of creating a key. Each store only runs the statements on its own
//! connections.

use std::fmt;

use time::OffsetDateTime;

use crate::keys::{self, KeyHash};
use crate::roles::{self, Role};
use crate::{ApiKeyRecord, NewKey, NewKeySpec, StoreError, Tenant, names};

/// The columns of a key record, in the order the statements below select them (a macro, so
/// that the statements are constants).
macro_rules! key_columns {
    () => {
        "id, prefix, tenant, models, roles, label, created_at, expires_at, revoked_at, \
         last_used_at, replaced_by"
    };
}

/// Inserts a tenant unless it exists: `$1` name, `$2` unix seconds. No row is affected when it
/// exists: the unique name decides, between concurrent inserts too.
pub(crate) const INSERT_TENANT: &str =
    "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
/// One tenant by name.
pub(crate) const SELECT_TENANT: &str = "SELECT name, created_at FROM tenants WHERE name = $1";
/// Every tenant, by name.
pub(crate) const LIST_TENANTS: &str = "SELECT name, created_at FROM tenants ORDER BY name";
/// Inserts a key row (see [`KeyInsert`] for the parameters).
pub(crate) const INSERT_KEY: &str = "INSERT INTO api_keys \
     (id, prefix, key_hash, tenant, models, roles, label, created_at, expires_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)";
/// Revokes key `$2` at `$1` unless it is revoked already (the first revocation's time stands).
/// One row is affected only by the call that revoked it, however many run at once; none when
/// the key was revoked already or does not exist (looking the id up tells which, and cannot
/// be wrong in between: a revocation is never undone, and no key takes a used id).
pub(crate) const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";
/// Brings key `$2`'s expiry forward to `$1`, never later.
pub(crate) const EXPIRE_KEY_BY: &str = "UPDATE api_keys SET expires_at = CASE \
       WHEN expires_at IS NULL OR expires_at > $1 THEN $1 ELSE expires_at END \
     WHERE id = $2";
/// Marks key `$3` replaced by key `$1` and brings its expiry forward to `$2` (never later),
/// only while it is live at `$4` (unix seconds: not revoked, not expired) and was never
/// replaced; returns the key as it now stands. Run in the transaction that inserts the
/// replacement, as its first statement: it takes the row's lock (PostgreSQL) or the database's
/// write lock (SQLite) at once, so concurrent rotations and revocations of the key queue
/// behind it and then find it replaced; no row comes back to every one but the first.
pub(crate) const REPLACE_KEY: &str = concat!(
    "UPDATE api_keys SET replaced_by = $1, expires_at = CASE \
       WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END \
     WHERE id = $3 AND revoked_at IS NULL AND replaced_by IS NULL \
       AND (expires_at IS NULL OR expires_at > $4) \
     RETURNING ",
    key_columns!()
);
/// Records key `$2`'s use at `$1`, only forward: a late, older touch never moves it back.
pub(crate) const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_at = $1 \
     WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)";

// Two literal list statements rather than `($1 IS NULL OR tenant = $1)`, which PostgreSQL
// cannot type. The id breaks ties within a second: ids sort by creation time.
/// One tenant's keys (`$1`), newest first.
pub(crate) const LIST_TENANT_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE tenant = $1 ORDER BY created_at DESC, id DESC"
);
/// Every key, newest first.
pub(crate) const LIST_ALL_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys ORDER BY created_at DESC, id DESC"
);
/// One key by id (`$1`).
pub(crate) const KEY_BY_ID: &str =
    concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1");
/// One key by prefix (`$1`), with its stored hash in `key_hash`.
pub(crate) const KEY_BY_PREFIX: &str = concat!(
    "SELECT key_hash, ",
    key_columns!(),
    " FROM api_keys WHERE prefix = $1"
);

/// A row as the stores read it: text and integer columns by name.
pub(crate) trait Columns {
    /// A text column; `None` for SQL `NULL`.
    fn text(&self, column: &'static str) -> Result<Option<String>, StoreError>;
    /// An integer (`BIGINT`) column; `None` for SQL `NULL`.
    fn int(&self, column: &'static str) -> Result<Option<i64>, StoreError>;
}

impl<R> Columns for R
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn int(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(unavailable)
    }
}

fn required(row: &dyn Columns, column: &'static str) -> Result<String, StoreError> {
    row.text(column)?.ok_or_else(|| corrupt(column))
}

/// A key row read into its record.
pub(crate) fn record_from_row(row: &dyn Columns) -> Result<ApiKeyRecord, StoreError> {
    let models: Vec<String> =
        serde_json::from_str(&required(row, "models")?).map_err(|_| corrupt("api_keys.models"))?;
    let roles: Vec<Role> =
        serde_json::from_str(&required(row, "roles")?).map_err(|_| corrupt("api_keys.roles"))?;
    if roles.is_empty() {
        return Err(corrupt("api_keys.roles"));
    }
    Ok(ApiKeyRecord {
        id: required(row, "id")?,
        prefix: required(row, "prefix")?,
        tenant: required(row, "tenant")?,
        models,
        roles,
        label: row.text("label")?,
        created_at: time_column(row, "created_at")?.ok_or_else(|| corrupt("created_at"))?,
        expires_at: time_column(row, "expires_at")?,
        revoked_at: time_column(row, "revoked_at")?,
        last_used_at: time_column(row, "last_used_at")?,
        replaced_by: row.text("replaced_by")?,
    })
}

/// A key row selected by prefix: its stored hash and its record.
pub(crate) fn hash_and_record(row: &dyn Columns) -> Result<(KeyHash, ApiKeyRecord), StoreError> {
    let hash = KeyHash::from_hex(&required(row, "key_hash")?)
        .ok_or_else(|| corrupt("api_keys.key_hash"))?;
    Ok((hash, record_from_row(row)?))
}

/// A tenant row read into its record.
pub(crate) fn tenant_from_row(row: &dyn Columns) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        name: required(row, "name")?,
        created_at: time_column(row, "created_at")?.ok_or_else(|| corrupt("created_at"))?,
    })
}

fn time_column(
    row: &dyn Columns,
    column: &'static str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    row.int(column)?
        .map(|s| OffsetDateTime::from_unix_timestamp(s).map_err(|_| corrupt(column)))
        .transpose()
}

/// `t` in UTC, truncated to whole seconds: what the integer time columns hold.
pub(crate) fn whole_seconds(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp())
        .map_err(|_| StoreError::Invalid("time out of range".into()))
}

/// `t` rounded up to whole seconds.
pub(crate) fn whole_seconds_up(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    let down = whole_seconds(t)?;
    if down == t {
        Ok(down)
    } else {
        down.checked_add(time::Duration::SECOND)
            .ok_or_else(|| StoreError::Invalid("time out of range".into()))
    }
}

/// What [`INSERT_KEY`] binds, in order, and the key the new one replaces, if any.
pub(crate) struct KeyInsert<'a> {
    pub record: &'a ApiKeyRecord,
    pub hash: &'a KeyHash,
    pub models_json: &'a str,
    pub roles_json: &'a str,
    pub replacing: Option<Replacing<'a>>,
}

/// The key a new key replaces (a rotation), and what [`REPLACE_KEY`] binds besides the new
/// key's id.
#[derive(Clone, Copy)]
pub(crate) struct Replacing<'a> {
    /// The old key's id.
    pub id: &'a str,
    /// When the old key stops (unix seconds).
    pub until: i64,
    /// The time the old key must be live at (unix seconds).
    pub now: i64,
}

/// What a store's key transaction did.
pub(crate) enum Written {
    /// The key was inserted; when it replaces one, the old key as it now stands.
    Inserted(Option<ApiKeyRecord>),
    /// The key to replace was not live or was replaced already (as it stands), or is gone
    /// (`None`): nothing was written.
    NotReplaced(Option<ApiKeyRecord>),
}

/// Why a store's key transaction failed: the driver, or a row it could not read.
pub(crate) enum InsertError {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for InsertError {
    fn from(e: sqlx::Error) -> Self {
        InsertError::Sql(e)
    }
}

impl From<StoreError> for InsertError {
    fn from(e: StoreError) -> Self {
        InsertError::Store(e)
    }
}

/// The statements of a store's key transaction, on `$tx` (a transaction just begun) with
/// `$query` (the store's statement builder): marks the replaced key first, when there is one
/// (nothing more when it cannot be), then inserts the tenant (unless it exists) and the key.
/// The tenant insert or the update comes first so the transaction takes SQLite's write lock at
/// once, rather than upgrading from a read lock, which can fail with SQLITE_BUSY under WAL.
/// Evaluates to [`Written`]; the caller commits only `Written::Inserted`.
macro_rules! write_key {
    ($tx:ident, $key:expr, $query:path) => {
        'write: {
            use $crate::records::{self as r, Written};
            let key = &$key;
            let mut replaced = None;
            if let Some(old) = key.replacing {
                let row = $query(r::REPLACE_KEY)
                    .bind(&key.record.id)
                    .bind(old.until)
                    .bind(old.id)
                    .bind(old.now)
                    .fetch_optional(&mut *$tx)
                    .await?;
                let Some(row) = row else {
                    let found = $query(r::KEY_BY_ID)
                        .bind(old.id)
                        .fetch_optional(&mut *$tx)
                        .await?;
                    let found = found.as_ref().map(|row| r::record_from_row(row));
                    break 'write Written::NotReplaced(found.transpose()?);
                };
                replaced = Some(r::record_from_row(&row)?);
            }
            $query(r::INSERT_TENANT)
                .bind(&key.record.tenant)
                .bind(key.record.created_at.unix_timestamp())
                .execute(&mut *$tx)
                .await?;
            r::bind_key_insert!($query(r::INSERT_KEY), key)
                .execute(&mut *$tx)
                .await?;
            Written::Inserted(replaced)
        }
    };
}
pub(crate) use write_key;

/// `$query` (either driver's [`INSERT_KEY`]) with `$key`'s values bound, in order.
macro_rules! bind_key_insert {
    ($query:expr, $key:expr) => {
        $query
            .bind(&$key.record.id)
            .bind(&$key.record.prefix)
            .bind($key.hash.to_hex())
            .bind(&$key.record.tenant)
            .bind($key.models_json)
            .bind($key.roles_json)
            .bind($key.record.label.as_deref())
            .bind($key.record.created_at.unix_timestamp())
            .bind(
                $key.record
                    .expires_at
                    .map(time::OffsetDateTime::unix_timestamp),
            )
    };
}
pub(crate) use bind_key_insert;

/// Fresh keys tried before giving up on finding an unused prefix. With 36^12 prefixes a single
/// collision is already unlikely; needing this many means something else is wrong.
const PREFIX_ATTEMPTS: usize = 4;

/// A store's one transaction that writes a new key: the replaced key's mark (a rotation), the
/// tenant (unless it exists) and the key row ([`write_key`]).
pub(crate) trait InsertKey: Sync {
    /// Runs [`write_key`] in one transaction, committed when it inserted the key.
    fn insert_key(
        &self,
        key: KeyInsert<'_>,
    ) -> impl Future<Output = Result<Written, InsertError>> + Send;
}

/// Creates a key for `spec`: checks it, then generates keys and hands each to `store` until
/// one has an unused prefix.
pub(crate) async fn create_key(
    store: &impl InsertKey,
    spec: NewKeySpec,
) -> Result<NewKey, StoreError> {
    match mint(store, spec, None).await? {
        (new, Written::Inserted(_)) => Ok(new),
        // Nothing is replaced without `replacing`.
        (_, Written::NotReplaced(_)) => Err(StoreError::NotFound),
    }
}

/// Rotates key `id` (see [`crate::KeyStore::rotate_key`]): checks the request and that the
/// key is live, then mints its replacement in the transaction that marks the key replaced,
/// which decides between concurrent rotations and revocations.
pub(crate) async fn rotate_key(
    store: &(impl InsertKey + crate::KeyStore),
    id: &str,
    overlap: std::time::Duration,
    expires_at: Option<OffsetDateTime>,
) -> Result<crate::Rotated, StoreError> {
    if overlap > crate::MAX_ROTATION_OVERLAP {
        return Err(StoreError::Invalid(format!(
            "the rotation overlap may be at most {} days",
            crate::MAX_ROTATION_OVERLAP.as_secs() / 86_400
        )));
    }
    let old = store.get_key(id).await?.ok_or(StoreError::NotFound)?;
    let now = OffsetDateTime::now_utc();
    if !rotatable(&old, now) {
        return Err(not_rotatable(&old));
    }
    let overlap = time::Duration::try_from(overlap)
        .map_err(|_| StoreError::Invalid("rotation overlap out of range".into()))?;
    // Rounded down: the old key works for the overlap at most, and `0s` stops it now. (Rounded
    // up, as an expiry asked for is, a zero overlap left it working for up to a second more.)
    let until = whole_seconds(now.saturating_add(overlap))?.unix_timestamp();
    let replacing = Replacing {
        id: &old.id,
        until,
        now: now.unix_timestamp(),
    };
    let spec = NewKeySpec {
        tenant: old.tenant.clone(),
        models: old.models.clone(),
        roles: old.roles.clone(),
        expires_at,
        label: old.label.clone(),
    };
    match mint(store, spec, Some(replacing)).await? {
        (new, Written::Inserted(Some(old))) => Ok(crate::Rotated { new, old }),
        (_, Written::Inserted(None)) => Err(StoreError::Unavailable(
            "the store inserted a replacement without marking the key it replaces".into(),
        )),
        (_, Written::NotReplaced(Some(now_stands))) => Err(not_rotatable(&now_stands)),
        (_, Written::NotReplaced(None)) => Err(StoreError::NotFound),
    }
}

/// Whether `k` may be rotated at `now`: live, and never rotated before.
fn rotatable(k: &ApiKeyRecord, now: OffsetDateTime) -> bool {
    k.revoked_at.is_none() && k.replaced_by.is_none() && k.expires_at.is_none_or(|t| t > now)
}

/// The refusal of a rotation of `k`, which is not [`rotatable`]: why, and what to do instead.
fn not_rotatable(k: &ApiKeyRecord) -> StoreError {
    StoreError::Conflict(match (&k.replaced_by, k.revoked_at) {
        (Some(by), _) => format!(
            "key {} was rotated already: its replacement is {by}. A key is rotated once, so \
             nothing was changed; rotate {by} instead",
            k.id
        ),
        (None, Some(_)) => "only a live key can be rotated; this one is revoked, so nothing \
                            was changed: create a new key instead"
            .into(),
        (None, None) => "only a live key can be rotated; this one has expired, so nothing \
                         was changed: create a new key instead"
            .into(),
    })
}

/// Checks `spec`, then generates keys and hands each to `store` (with the key it replaces,
/// if any) until one has an unused prefix; the key, and what the transaction did.
async fn mint(
    store: &impl InsertKey,
    spec: NewKeySpec,
    replacing: Option<Replacing<'_>>,
) -> Result<(NewKey, Written), StoreError> {
    names::validate_tenant(&spec.tenant)?;
    let models = names::normalize_models(spec.models)?;
    if let Some(label) = &spec.label {
        names::validate_label(label)?;
    }
    let models_json =
        serde_json::to_string(&models).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
    let now = OffsetDateTime::now_utc();
    // The break-glass lifetime is checked on the times as asked for: rounding the expiry up
    // and the creation down (below) would make `--expires 24h` look like 24h and a second.
    let roles = roles::normalize_roles(spec.roles, spec.expires_at, now)?;
    let created_at = whole_seconds(now)?;
    // Rounded up, so that a key never expires before the moment it was asked to last until.
    let expires_at = spec.expires_at.map(whole_seconds_up).transpose()?;
    let roles_json =
        serde_json::to_string(&roles).map_err(|e| StoreError::Unavailable(Box::new(e)))?;

    for _ in 0..PREFIX_ATTEMPTS {
        let generated = keys::generate()?;
        let record = ApiKeyRecord {
            id: keys::new_key_id(),
            prefix: generated.prefix,
            tenant: spec.tenant.clone(),
            models: models.clone(),
            roles: roles.clone(),
            label: spec.label.clone(),
            created_at,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            replaced_by: None,
        };
        let inserted = store
            .insert_key(KeyInsert {
                record: &record,
                hash: &generated.hash,
                models_json: &models_json,
                roles_json: &roles_json,
                replacing,
            })
            .await;
        match inserted {
            Ok(written) => {
                let new = NewKey {
                    record,
                    secret: generated.secret,
                };
                return Ok((new, written));
            }
            Err(InsertError::Sql(e)) if is_unique_violation(&e) => continue,
            Err(InsertError::Sql(e)) => return Err(unavailable(e)),
            Err(InsertError::Store(e)) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "no unused key prefix found; is the random source broken?".into(),
    ))
}

/// `NotFound` when an update by id touched no row.
/// What a revocation did, from the rows [`REVOKE_KEY`] affected and, when none, whether the
/// key exists.
pub(crate) fn revocation(revoked: u64, exists: bool) -> Result<crate::Revocation, StoreError> {
    match (revoked, exists) {
        (0, true) => Ok(crate::Revocation::AlreadyRevoked),
        (0, false) => Err(StoreError::NotFound),
        _ => Ok(crate::Revocation::Revoked),
    }
}

/// The refusal of a tenant that exists already.
pub(crate) fn tenant_exists() -> StoreError {
    StoreError::Conflict("a tenant of this name exists already; nothing was changed".into())
}

pub(crate) fn found(rows_affected: u64) -> Result<(), StoreError> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// A driver error as the store reports it (said once: `driver.rs`).
pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(crate::driver::DriverError::from(e)))
}

/// A stored value this code cannot read: damage or tampering, so a server-side fault.
#[derive(Debug)]
struct CorruptValue(&'static str);

impl fmt::Display for CorruptValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored value in column {} is corrupt", self.0)
    }
}

impl std::error::Error for CorruptValue {}

/// A stored value in `column` that cannot be read.
pub(crate) fn corrupt(column: &'static str) -> StoreError {
    StoreError::Unavailable(Box::new(CorruptValue(column)))
}
