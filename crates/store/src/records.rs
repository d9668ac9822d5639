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
         last_used_at"
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

/// What [`INSERT_KEY`] binds, in order.
pub(crate) struct KeyInsert<'a> {
    pub record: &'a ApiKeyRecord,
    pub hash: &'a KeyHash,
    pub models_json: &'a str,
    pub roles_json: &'a str,
}

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

/// A store's one transaction that writes a new key: the tenant (unless it exists) and the key
/// row.
pub(crate) trait InsertKey: Sync {
    /// Inserts the tenant and the key in one transaction.
    fn insert_key(
        &self,
        key: KeyInsert<'_>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Creates a key for `spec`: checks it, then generates keys and hands each to `store` until
/// one has an unused prefix.
pub(crate) async fn create_key(
    store: &impl InsertKey,
    spec: NewKeySpec,
) -> Result<NewKey, StoreError> {
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
        };
        let inserted = store
            .insert_key(KeyInsert {
                record: &record,
                hash: &generated.hash,
                models_json: &models_json,
                roles_json: &roles_json,
            })
            .await;
        match inserted {
            Ok(()) => {
                return Ok(NewKey {
                    record,
                    secret: generated.secret,
                });
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(unavailable(e)),
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

/// A driver error as the store reports it.
pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
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
