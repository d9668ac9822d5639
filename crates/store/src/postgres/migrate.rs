//! PostgreSQL's schema: its migrations (`migrations_pg/`), applied by `wardgate migrate` (a
//! deploy step, before new instances start), and the check every start makes that the schema
//! is exactly the one this build knows.
//!
//! Why not on start, as SQLite does: several instances share the database, and an old
//! instance must keep running while the schema moves on under it. So migrations are additive
//! (new tables, new nullable or defaulted columns, new indexes) and applied once, by one
//! process, before the new release starts; a start refuses a schema older or newer than its
//! own, naming both versions.
//!
//! Applied versions are rows of `wardgate_schema_migrations` (version, description, SHA-256 of
//! the SQL, when). All pending migrations run in one transaction, holding a transaction-scoped
//! advisory lock so that two `wardgate migrate` run one after the other (a session lock would
//! not survive PgBouncer's transaction pooling); PostgreSQL's DDL is transactional, so a
//! failure leaves the schema as it was. Hence no migration may use a statement that cannot
//! run in a transaction (`CREATE INDEX CONCURRENTLY`).

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::{PgStore, query};
use crate::StoreError;
use crate::records::unavailable;

/// The schema's migrations, oldest first: (version, description, SQL). A test checks that this
/// list names every file in `migrations_pg/` (`NNNN_description_with_underscores.sql`).
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "keys and tenants",
        include_str!("../../migrations_pg/0001_keys_and_tenants.sql"),
    ),
    (
        2,
        "audit",
        include_str!("../../migrations_pg/0002_audit.sql"),
    ),
    (
        3,
        "audit quarantine",
        include_str!("../../migrations_pg/0003_audit_quarantine.sql"),
    ),
    (
        4,
        "audit queue tags",
        include_str!("../../migrations_pg/0004_audit_queue_tags.sql"),
    ),
    (
        5,
        "key replaced by",
        include_str!("../../migrations_pg/0005_key_replaced_by.sql"),
    ),
    (
        6,
        "audit entry tag index",
        include_str!("../../migrations_pg/0006_audit_entry_tag_index.sql"),
    ),
];

/// The table of applied migrations.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS wardgate_schema_migrations (\
     version BIGINT NOT NULL PRIMARY KEY, \
     description TEXT NOT NULL, \
     checksum TEXT NOT NULL, \
     installed_at BIGINT NOT NULL)";

/// The advisory lock `wardgate migrate` holds for its transaction ("wardgate" in ASCII).
const MIGRATE_LOCK: i64 = 0x7761_7264_6761_7465;

/// The command that applies migrations, as error messages name it.
const MIGRATE_COMMAND: &str = "wardgate migrate";

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0)
}

/// What `wardgate migrate` did: the schema version before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The version found (0: an empty database).
    pub from: i64,
    /// The version left (this build's latest).
    pub to: i64,
}

/// The schema a start found: the database's version and this build's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The newest version applied to the database (0: none).
    pub current: i64,
    /// The newest version this build knows.
    pub latest: i64,
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// The applied migrations, each checked against this build's: the newest version applied.
fn check_applied(applied: &[(i64, String)]) -> Result<i64, StoreError> {
    let latest = latest_version();
    for (version, sum) in applied {
        match MIGRATIONS.iter().find(|m| m.0 == *version) {
            None if *version > latest => {
                return Err(StoreError::Migration(format!(
                    "the database's schema is at version {version}, newer than this build of \
                     wardgate knows (version {latest}): a newer release migrated it. Run that \
                     release or a later one; `{MIGRATE_COMMAND}` of this build cannot go back"
                )));
            }
            None => {
                return Err(StoreError::Migration(format!(
                    "the database has schema version {version} applied, which this build of \
                     wardgate (version {latest}) does not know; it was migrated by another \
                     build. Run the release that migrated it"
                )));
            }
            Some(&(_, _, sql)) if checksum(sql) != *sum => {
                return Err(StoreError::Migration(format!(
                    "schema version {version} in the database differs from this build's \
                     migration {version} (checksum mismatch): the migration was edited after \
                     it was applied"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(applied.iter().map(|a| a.0).max().unwrap_or(0))
}

impl PgStore {
    /// The applied migrations, by version; empty when the table does not exist yet.
    async fn applied(
        tx: &mut sqlx::PgConnection,
        table_exists: bool,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        if !table_exists {
            return Ok(Vec::new());
        }
        query("SELECT version, checksum FROM wardgate_schema_migrations ORDER BY version")
            .try_map(|row: sqlx::postgres::PgRow| {
                use sqlx::Row as _;
                Ok((row.try_get(0)?, row.try_get(1)?))
            })
            .fetch_all(tx)
            .await
            .map_err(unavailable)
    }

    /// Whether the table of applied migrations exists (in the schema the search path finds).
    async fn has_migrations_table(tx: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
        query("SELECT to_regclass('wardgate_schema_migrations') IS NOT NULL")
            .try_map(|row: sqlx::postgres::PgRow| {
                use sqlx::Row as _;
                row.try_get::<bool, _>(0)
            })
            .fetch_one(tx)
            .await
            .map_err(unavailable)
    }

    /// The database's schema version, checked against this build's migrations (an unknown or
    /// edited migration is an error); changes nothing.
    pub async fn schema_version(&self) -> Result<SchemaVersion, StoreError> {
        let applied = self
            .bounded(async |tx: &mut sqlx::PgConnection| {
                let exists = Self::has_migrations_table(tx).await?;
                Self::applied(tx, exists).await
            })
            .await?;
        Ok(SchemaVersion {
            current: check_applied(&applied)?,
            latest: latest_version(),
        })
    }

    /// What a start runs: refuses unless the database's schema is exactly this build's,
    /// naming both versions and what to run.
    pub async fn check_schema(&self) -> Result<SchemaVersion, StoreError> {
        let version = self.schema_version().await?;
        if version.current < version.latest {
            let found = if version.current == 0 {
                "has no wardgate schema yet (version 0)".to_owned()
            } else {
                format!("has schema version {}", version.current)
            };
            return Err(StoreError::Migration(format!(
                "the database {} {found}, and this build of wardgate needs version {}: run \
                 `{MIGRATE_COMMAND}` with the same configuration first (the pre-deploy step), \
                 then start again",
                self.shown, version.latest
            )));
        }
        Ok(version)
    }

    /// Applies every pending migration, in one transaction; a no-op when the schema is up to
    /// date. Refuses a database migrated by a newer build.
    pub async fn migrate(&self) -> Result<Migrated, StoreError> {
        self.migrate_to(latest_version()).await
    }

    /// [`PgStore::migrate`], stopping after version `target` (tests build older schemas).
    pub(crate) async fn migrate_to(&self, target: i64) -> Result<Migrated, StoreError> {
        // Not bounded by `storage.query_timeout`: a migration may rewrite a large table, and
        // it is one operator's command, not a request's wait.
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(CREATE_TABLE)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let applied = Self::applied(&mut tx, true).await?;
        let from = check_applied(&applied)?;
        let mut to = from;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for &(version, description, sql) in MIGRATIONS {
            if version > target || applied.iter().any(|a| a.0 == version) {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(|e| {
                StoreError::Migration(format!(
                    "migration {version} ({description}): {}",
                    crate::driver::said(&e)
                ))
            })?;
            query(
                "INSERT INTO wardgate_schema_migrations \
                 (version, description, checksum, installed_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(version)
            .bind(description)
            .bind(checksum(sql))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            to = to.max(version);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Migrated { from, to })
    }
}
