//! `SqliteStore`: the SQLite implementation of the store traits, and its embedded, versioned
//! migrations.
//!
//! Times are stored as unix seconds (UTC) in integer columns: portable to PostgreSQL `BIGINT`,
//! compared and sorted as numbers, and free of time-zone parsing. Records therefore carry whole
//! seconds. SQL uses `$n` placeholders, which SQLite (through sqlx) and PostgreSQL both accept.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Row as _, SqlSafeStr as _};
use time::OffsetDateTime;

use crate::keys::{self, KeyHash};
use crate::roles::{self, Role};
use crate::{
    ApiKeyRecord, Health, KeyStore, KeyVerdict, NewKey, NewKeySpec, RejectReason, StoreError,
    Tenant, TenantStore, names,
};

/// The schema's migrations, oldest first: (version, description, SQL).
///
/// Embedded with `include_str!` and handed to sqlx's `Migrator`, because the `migrate!` macro
/// needs sqlx's `macros` feature, which this workspace leaves off. sqlx still keeps the
/// `_sqlx_migrations` table, applies each version once, and refuses a database whose applied
/// migrations are unknown to this build or were edited after being applied. A test checks that
/// this list names every file in `migrations/`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "keys and tenants",
        include_str!("../migrations/0001_keys_and_tenants.sql"),
    ),
    (2, "audit", include_str!("../migrations/0002_audit.sql")),
    (
        3,
        "key roles",
        include_str!("../migrations/0003_key_roles.sql"),
    ),
    (
        4,
        "key last used",
        include_str!("../migrations/0004_key_last_used.sql"),
    ),
    (
        5,
        "audit filter index",
        include_str!("../migrations/0005_audit_filter_index.sql"),
    ),
    (
        6,
        "audit filter index in its own file",
        include_str!("../migrations/0006_audit_filter_index_in_its_own_file.sql"),
    ),
    (
        7,
        "audit entries hold only the leaf",
        include_str!("../migrations/0007_audit_entries_hold_only_the_leaf.sql"),
    ),
];

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections to a file database. WAL lets readers run beside the one writer; more than a
/// handful only adds contention on that writer.
const FILE_POOL_SIZE: u32 = 8;
/// Fresh keys tried before giving up on finding an unused prefix. With 36^12 prefixes a single
/// collision is already unlikely; needing this many means something else is wrong.
const PREFIX_ATTEMPTS: usize = 4;

/// How far an audit commit has gone when the append that made it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuditDurability {
    /// Flushed to the disk (`synchronous=FULL`): a returned append survives a power loss or a
    /// kernel crash. The default, and what HIPAA-minded deployments should keep.
    #[default]
    Disk,
    /// Handed to the operating system (`synchronous=NORMAL` in WAL mode): a returned append
    /// survives the gateway being killed (`kill -9`, a crash, an OOM kill), but a power loss or
    /// kernel crash can lose the last commits (never corrupt the file; the signed checkpoints
    /// and the witness then show exactly which entries are gone). How many: those since the
    /// last flush of the WAL, which the background checkpoint (`wal_checkpointer`, every
    /// second) does before it copies frames, so in practice about the last second's. For disks
    /// whose flush is slower than the latency budget; an operator's explicit choice, logged at
    /// every start.
    Process,
}

impl std::str::FromStr for AuditDurability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(Self::Disk),
            "process" => Ok(Self::Process),
            other => Err(format!(
                "unknown audit durability `{other}`: use `disk` (flushed before each append \
                 returns; survives power loss) or `process` (survives the process dying, not \
                 power loss)"
            )),
        }
    }
}

/// The SQLite store. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The connection audit appends go through (see `sqlite/audit.rs` and [`AuditWriter`]).
    audit_writer: AuditWriter,
    /// Copies the WAL into the database file in the background (file databases only).
    _wal_checkpointer: Option<std::sync::Arc<BackgroundTask>>,
    /// Brings the audit log's filter index up to date (see `sqlite/filter_index.rs`).
    audit_indexer: filter_index::Indexer,
    /// Runs `audit_indexer` in the background.
    _audit_indexing: std::sync::Arc<BackgroundTask>,
    /// In memory only: a connection that keeps the shared in-memory databases alive whatever
    /// the pool does with its own.
    _memory_keeper: Option<std::sync::Arc<tokio::sync::Mutex<sqlx::SqliteConnection>>>,
}

/// The connection audit appends and checkpoints are written through.
#[derive(Clone, Debug)]
enum AuditWriter {
    /// A file database: one long-lived blocking connection of its own (`sqlite/writer.rs`).
    /// Long-lived because SQLite drops a connection's page cache whenever another connection
    /// has written, so a writer that hopped between pooled connections would re-read the
    /// B-tree pages it appends to on every commit.
    Blocking(std::sync::Arc<writer::BlockingWriter>),
    /// An in-memory database: its single pooled connection, shared with every other use.
    Shared(SqlitePool),
}

impl AuditWriter {
    async fn close(&self) {
        match self {
            Self::Blocking(w) => w.close().await,
            Self::Shared(pool) => pool.close().await,
        }
    }
}

/// A task of the store's own, stopped when the last clone of the store goes.
#[derive(Debug)]
struct BackgroundTask(tokio::task::JoinHandle<()>);

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `step` every `every` (the first time after one period) until it says to stop.
fn every<F, Fut>(every: Duration, mut step: F) -> BackgroundTask
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::ops::ControlFlow<()>> + Send,
{
    BackgroundTask(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if step().await.is_break() {
                return;
            }
        }
    }))
}

/// How often the background task checkpoints the WAL of a file database.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The background WAL checkpoint task.
///
/// Why: by default SQLite checkpoints inside the commit that pushes the WAL past 1,000 pages,
/// so every few hundred audit commits one of them also copies ~4 MB into the database file
/// and flushes it, and every request waiting to have its start audited waits for that too (it
/// was most of the audit log's p99 in `audit-latency`). The audit writer's connection has
/// automatic checkpoints off; this task runs a PASSIVE checkpoint, which never blocks writers,
/// from another connection instead. A crash loses nothing: committed frames stay in the WAL
/// until they are copied.
fn wal_checkpointer(pool: SqlitePool) -> BackgroundTask {
    every(WAL_CHECKPOINT_EVERY, move || {
        let pool = pool.clone();
        async move {
            if pool.is_closed() {
                return std::ops::ControlFlow::Break(());
            }
            let result = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await;
            if let Err(e) = result
                && !pool.is_closed()
            {
                tracing::warn!(error = %e, "SQLite WAL checkpoint failed; retrying");
            }
            std::ops::ControlFlow::Continue(())
        }
    })
}

/// How often the audit log's filter index catches up with the log. Queries never wait for it
/// (see `sqlite/audit.rs`); it bounds how many entries they scan unindexed.
const AUDIT_INDEX_EVERY: Duration = Duration::from_millis(100);

/// The background task that adds new audit entries' filter columns, read from their leaves,
/// to the filter index (`sqlite/filter_index.rs`); it stops when the store is closed.
///
/// Why not index in the append itself: every index on the appended table is one more B-tree
/// page written and flushed per commit, and requests wait for those commits. Here one sorted
/// insert covers everything appended since the last run, in the index's own file, beside the
/// appends rather than between them.
fn audit_indexing(indexer: filter_index::Indexer) -> BackgroundTask {
    every(AUDIT_INDEX_EVERY, move || {
        let indexer = indexer.clone();
        async move {
            loop {
                match indexer.run().await {
                    // Far behind (a new or rebuilt index, a long pause): the next chunk at
                    // once. The log's writer never waits for the index, so this costs it only
                    // CPU, and queries scan less the sooner it is done.
                    Ok(Some(n)) if n >= filter_index::INDEX_CHUNK.unsigned_abs() => {}
                    Ok(Some(_)) => return std::ops::ControlFlow::Continue(()),
                    Ok(None) => return std::ops::ControlFlow::Break(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "indexing the audit log failed; retrying");
                        return std::ops::ControlFlow::Continue(());
                    }
                }
            }
        }
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    ///
    /// Creates missing parent directories. A new file is created readable by its owner only
    /// (mode 0600 on Unix; SQLite gives its `-wal` and `-shm` files the same mode). Connections use
    /// WAL journaling, `synchronous=FULL` (a commit that returned survives power loss, which the
    /// audit log built on this store needs), a busy timeout, and enforced foreign keys.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, AuditDurability::Disk).await
    }

    /// [`SqliteStore::open`], with the audit log's commits as durable as `durability` says
    /// (every other write stays `synchronous=FULL`).
    pub async fn open_with(path: &Path, durability: AuditDurability) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        }
        create_private_file(path).await?;
        let index = filter_index::path_for(path);
        create_private_file(&index).await?;
        let attach = filter_index::attach_name(&index).map_err(|e| index_error(&index, e))?;
        on_index(&index, {
            let (path, index) = (path.to_owned(), index.clone());
            move || filter_index::prepare(&path, &index)
        })
        .await?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                let attach = attach.clone();
                Box::pin(async move {
                    sqlx::query("ATTACH DATABASE $1 AS audit_index")
                        .bind(attach)
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        migrator().run(&pool).await.map_err(migration_error)?;
        let audit_writer = writer::BlockingWriter::open(path, durability)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let audit_writer = AuditWriter::Blocking(audit_writer);
        let indexer = on_index(&index.clone(), {
            let path = path.to_owned();
            move || filter_index::FileIndexer::open(&path, &index)
        })
        .await?;
        let audit_indexer = filter_index::Indexer::File(std::sync::Arc::new(indexer));
        let checkpointer = wal_checkpointer(pool.clone());
        Ok(Self {
            pool,
            audit_writer,
            _wal_checkpointer: Some(std::sync::Arc::new(checkpointer)),
            _audit_indexing: std::sync::Arc::new(audit_indexing(audit_indexer.clone())),
            audit_indexer,
            _memory_keeper: None,
        })
    }

    /// A private in-memory database, for tests.
    ///
    /// The pool holds exactly one connection that never expires: each SQLite connection to
    /// `:memory:` has its own database, and it vanishes when its connection closes. (A named
    /// shared-cache database would allow more connections but brings table-level locking that
    /// ignores the busy timeout.)
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        // One named in-memory database, and one for the filter index, shared by every
        // connection of this store and kept alive by a connection held for the store's life.
        // The pool may replace its connection (sqlx drops one whose query was cancelled
        // mid-way, as when a client leaves), and a private `:memory:` database would be lost
        // with it: the store then had no tables at all.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let options = SqliteConnectOptions::new()
            .filename(format!("file:wardgate-memory-{n}"))
            .in_memory(true)
            .shared_cache(true)
            .foreign_keys(true);
        let attach = std::sync::Arc::new(format!(
            "ATTACH DATABASE 'file:wardgate-memory-{n}-index?mode=memory&cache=shared' \
             AS audit_index"
        ));
        let mut keeper = options.connect().await.map_err(unavailable)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(attach.to_string()))
            .execute(&mut keeper)
            .await
            .map_err(unavailable)?;
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // The filter index: an in-memory database of its own, under the name the file
            // store attaches its index file as.
            .after_connect(move |conn, _| {
                let attach = attach.clone();
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(attach.to_string()))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::raw_sql(filter_index::SCHEMA_SQL)
                        .execute(&mut *conn)
                        .await
                        .map(drop)
                })
            })
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let mut store = Self::migrated(pool).await?;
        store._memory_keeper = Some(std::sync::Arc::new(tokio::sync::Mutex::new(keeper)));
        Ok(store)
    }

    /// Closes every connection, waiting for those in use to be returned; later calls fail with
    /// `Unavailable`. Lets shutdown checkpoint the WALs into the database files.
    pub async fn close(&self) {
        if let filter_index::Indexer::File(indexer) = &self.audit_indexer {
            let indexer = indexer.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || indexer.close()).await {
                tracing::warn!(error = %e, "closing the audit index failed");
            }
        }
        self.audit_writer.close().await;
        self.pool.close().await;
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, StoreError> {
        migrator().run(&pool).await.map_err(migration_error)?;
        let audit_indexer = filter_index::Indexer::Shared(pool.clone());
        Ok(Self {
            audit_writer: AuditWriter::Shared(pool.clone()),
            pool,
            _wal_checkpointer: None,
            _audit_indexing: std::sync::Arc::new(audit_indexing(audit_indexer.clone())),
            audit_indexer,
            _memory_keeper: None,
        })
    }

    async fn insert_key(
        &self,
        record: &ApiKeyRecord,
        hash: &KeyHash,
        models_json: &str,
        roles_json: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // The tenant insert comes first so the transaction takes SQLite's write lock at once,
        // rather than upgrading from a read lock, which can fail with SQLITE_BUSY under WAL.
        sqlx::query(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&record.tenant)
        .bind(record.created_at.unix_timestamp())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_keys \
             (id, prefix, key_hash, tenant, models, roles, label, created_at, expires_at, \
              revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(&record.id)
        .bind(&record.prefix)
        .bind(hash.to_hex())
        .bind(&record.tenant)
        .bind(models_json)
        .bind(roles_json)
        .bind(record.label.as_deref())
        .bind(record.created_at.unix_timestamp())
        .bind(record.expires_at.map(OffsetDateTime::unix_timestamp))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, spec: NewKeySpec) -> Result<NewKey, StoreError> {
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
            match self
                .insert_key(&record, &generated.hash, &models_json, &roles_json)
                .await
            {
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

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        // Two literal statements rather than `($1 IS NULL OR tenant = $1)`, which PostgreSQL
        // cannot type. The id breaks ties within a second: ids sort by creation time.
        let rows =
            match tenant {
                Some(tenant) => {
                    names::validate_tenant(tenant)?;
                    sqlx::query(
                    "SELECT id, prefix, tenant, models, roles, label, created_at, expires_at, revoked_at, last_used_at \
                     FROM api_keys WHERE tenant = $1 ORDER BY created_at DESC, id DESC",
                )
                .bind(tenant)
                .fetch_all(&self.pool)
                .await
                }
                None => sqlx::query(
                    "SELECT id, prefix, tenant, models, roles, label, created_at, expires_at, revoked_at, last_used_at \
                     FROM api_keys ORDER BY created_at DESC, id DESC",
                )
                .fetch_all(&self.pool)
                .await,
            }
            .map_err(unavailable)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, prefix, tenant, models, roles, label, created_at, expires_at, revoked_at, \
             last_used_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        // COALESCE keeps the first revocation time, so revoking again changes nothing; the row
        // still counts as affected, which tells a known id from an unknown one.
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        found(&result)
    }

    async fn expire_key_by(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = whole_seconds_up(at)?.unix_timestamp();
        let result = sqlx::query(
            "UPDATE api_keys SET expires_at = CASE \
               WHEN expires_at IS NULL OR expires_at > $1 THEN $1 ELSE expires_at END \
             WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        found(&result)
    }

    async fn touch_key(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = at.unix_timestamp();
        // Only forward: a late, older touch never moves the time back.
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn verify(&self, presented: &str, now: OffsetDateTime) -> Result<KeyVerdict, StoreError> {
        let Some(parsed) = keys::parse(presented) else {
            return Ok(KeyVerdict::Rejected(RejectReason::Malformed));
        };
        let presented_hash = parsed.hash();
        let row = sqlx::query(
            "SELECT key_hash, id, prefix, tenant, models, roles, label, created_at, expires_at, revoked_at, last_used_at \
             FROM api_keys WHERE prefix = $1",
        )
        .bind(parsed.prefix())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let stored = match row {
            Some(row) => {
                let hash_hex: String = row.try_get("key_hash").map_err(unavailable)?;
                let hash =
                    KeyHash::from_hex(&hash_hex).ok_or_else(|| corrupt("api_keys.key_hash"))?;
                Some((hash, record_from_row(&row)?))
            }
            None => None,
        };
        Ok(keys::decide(&presented_hash, stored, now))
    }
}

#[async_trait::async_trait]
impl TenantStore for SqliteStore {
    async fn ensure_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        names::validate_tenant(name)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        sqlx::query(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        let row = sqlx::query("SELECT name, created_at FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        tenant_from_row(&row)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT name, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(tenant_from_row).collect()
    }
}

#[async_trait::async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0)
}

fn migration_error(e: MigrateError) -> StoreError {
    let latest = latest_version();
    StoreError::Migration(match e {
        MigrateError::VersionMissing(v) if v > latest => format!(
            "the database has schema version {v}, newer than this build of wardgate knows \
             (latest {latest}); run the wardgate version that last wrote it, or a newer one"
        ),
        MigrateError::VersionMissing(v) => format!(
            "the database has schema version {v} applied, which this build of wardgate does not \
             know (latest {latest})"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "schema version {v} in the database differs from this build's migration {v} \
             (checksum mismatch); the migration was edited after it was applied"
        ),
        other => other.to_string(),
    })
}

/// Runs blocking SQLite work on the audit index (opening, checking) on the blocking pool; an
/// error names the index file.
async fn on_index<R: Send + 'static>(
    index: &Path,
    f: impl FnOnce() -> Result<R, rusqlite::Error> + Send + 'static,
) -> Result<R, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?
        .map_err(|e| index_error(index, e))
}

fn index_error(index: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("audit index {}: {e}", index.display()).into())
}

/// Creates `path` with owner-only permissions if it does not exist yet; an existing file keeps
/// the permissions its operator gave it.
async fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || private_file(&path))
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?
        .map_err(|e| StoreError::Unavailable(Box::new(e)))
}

/// [`create_private_file`], blocking.
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        // An empty file is a valid, empty SQLite database.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn record_from_row(row: &SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    let models_json: String = row.try_get("models").map_err(unavailable)?;
    let models: Vec<String> =
        serde_json::from_str(&models_json).map_err(|_| corrupt("api_keys.models"))?;
    let roles_json: String = row.try_get("roles").map_err(unavailable)?;
    let roles: Vec<Role> =
        serde_json::from_str(&roles_json).map_err(|_| corrupt("api_keys.roles"))?;
    if roles.is_empty() {
        return Err(corrupt("api_keys.roles"));
    }
    Ok(ApiKeyRecord {
        id: row.try_get("id").map_err(unavailable)?,
        prefix: row.try_get("prefix").map_err(unavailable)?,
        tenant: row.try_get("tenant").map_err(unavailable)?,
        models,
        roles,
        label: row.try_get("label").map_err(unavailable)?,
        created_at: time_column(row, "created_at")?.ok_or_else(|| corrupt("created_at"))?,
        expires_at: time_column(row, "expires_at")?,
        revoked_at: time_column(row, "revoked_at")?,
        last_used_at: time_column(row, "last_used_at")?,
    })
}

fn tenant_from_row(row: &SqliteRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        name: row.try_get("name").map_err(unavailable)?,
        created_at: time_column(row, "created_at")?.ok_or_else(|| corrupt("created_at"))?,
    })
}

fn time_column(
    row: &SqliteRow,
    column: &'static str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    let secs: Option<i64> = row.try_get(column).map_err(unavailable)?;
    secs.map(|s| OffsetDateTime::from_unix_timestamp(s).map_err(|_| corrupt(column)))
        .transpose()
}

/// `t` in UTC, truncated to whole seconds: what the integer time columns hold.
fn whole_seconds(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp())
        .map_err(|_| StoreError::Invalid("time out of range".into()))
}

/// `NotFound` when an update by id touched no row.
fn found(result: &sqlx::sqlite::SqliteQueryResult) -> Result<(), StoreError> {
    if result.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn whole_seconds_up(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    let down = whole_seconds(t)?;
    if down == t {
        Ok(down)
    } else {
        down.checked_add(time::Duration::SECOND)
            .ok_or_else(|| StoreError::Invalid("time out of range".into()))
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

fn unavailable(e: sqlx::Error) -> StoreError {
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

fn corrupt(column: &'static str) -> StoreError {
    StoreError::Unavailable(Box::new(CorruptValue(column)))
}

mod audit;
mod filter_index;
mod writer;

#[cfg(test)]
mod tests;
