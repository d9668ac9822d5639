//! `SqliteStore`: the SQLite implementation of the store traits, and its embedded, versioned
//! migrations.
//!
//! Times are stored as unix seconds (UTC) in integer columns: portable to PostgreSQL `BIGINT`,
//! compared and sorted as numbers, and free of time-zone parsing. Records therefore carry whole
//! seconds. SQL uses `$n` placeholders, which SQLite (through sqlx) and PostgreSQL both accept.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, SqlSafeStr as _};
use time::OffsetDateTime;

use crate::keys;
use crate::records::{self, unavailable};
use crate::{
    ApiKeyRecord, Health, KeyStore, KeyVerdict, NewKey, NewKeySpec, RejectReason, Revocation,
    Rotated, StoreError, Tenant, TenantStore, names,
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
    (
        8,
        "key replaced by",
        include_str!("../migrations/0008_key_replaced_by.sql"),
    ),
];

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections to a file database. WAL lets readers run beside the one writer; more than a
/// handful only adds contention on that writer.
const FILE_POOL_SIZE: u32 = 8;

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

impl AuditDurability {
    /// The setting's word, as [`std::str::FromStr`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Process => "process",
        }
    }
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

    /// The newest migration applied to the database (they are applied when it is opened).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
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
}

impl SqliteStore {
    /// Inserts tenant `name` unless it exists; whether this call inserted it, and the tenant.
    async fn insert_tenant(&self, name: &str) -> Result<(bool, Tenant), StoreError> {
        names::validate_tenant(name)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let inserted = sqlx::query(records::INSERT_TENANT)
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        let row = sqlx::query(records::SELECT_TENANT)
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok((inserted > 0, records::tenant_from_row(&row)?))
    }
}

impl records::InsertKey for SqliteStore {
    async fn insert_key(
        &self,
        key: records::KeyInsert<'_>,
    ) -> Result<records::Written, records::InsertError> {
        let mut tx = self.pool.begin().await?;
        let written = records::write_key!(tx, key, sqlx::query);
        if matches!(written, records::Written::Inserted(_)) {
            tx.commit().await?;
        }
        Ok(written)
    }
}

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, spec: NewKeySpec) -> Result<NewKey, StoreError> {
        records::create_key(self, spec).await
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = match tenant {
            Some(tenant) => {
                names::validate_tenant(tenant)?;
                sqlx::query(records::LIST_TENANT_KEYS)
                    .bind(tenant)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query(records::LIST_ALL_KEYS)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| records::record_from_row(row))
            .collect()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(records::KEY_BY_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref()
            .map(|row| records::record_from_row(row))
            .transpose()
    }

    async fn revoke_key(&self, id: &str) -> Result<Revocation, StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let revoked = sqlx::query(records::REVOKE_KEY)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        // No row updated: revoked already, or no such key (see `records::REVOKE_KEY`).
        let exists = revoked > 0 || self.get_key(id).await?.is_some();
        records::revocation(revoked, exists)
    }

    async fn expire_key_by(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = records::whole_seconds_up(at)?.unix_timestamp();
        let result = sqlx::query(records::EXPIRE_KEY_BY)
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        records::found(result.rows_affected())
    }

    async fn rotate_key(
        &self,
        id: &str,
        overlap: Duration,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<Rotated, StoreError> {
        records::rotate_key(self, id, overlap, expires_at).await
    }

    async fn touch_key(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query(records::TOUCH_KEY)
            .bind(at.unix_timestamp())
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
        let row = sqlx::query(records::KEY_BY_PREFIX)
            .bind(parsed.prefix())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let stored = row
            .as_ref()
            .map(|row| records::hash_and_record(row))
            .transpose()?;
        Ok(keys::decide(&presented_hash, stored, now))
    }
}

#[async_trait::async_trait]
impl TenantStore for SqliteStore {
    async fn ensure_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        Ok(self.insert_tenant(name).await?.1)
    }

    async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        match self.insert_tenant(name).await? {
            (true, t) => Ok(t),
            (false, _) => Err(records::tenant_exists()),
        }
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(records::LIST_TENANTS)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| records::tenant_from_row(row))
            .collect()
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

    /// A TRUNCATE checkpoint: every frame of the WAL copied into the database file, which is
    /// flushed, and the WAL emptied. It waits (the busy timeout) for readers and writers of
    /// other connections, a CLI command's say, and says so if they are still there.
    async fn settle(&self) -> Result<(), StoreError> {
        if matches!(self.audit_writer, AuditWriter::Shared(_)) {
            // In memory: no WAL.
            return Ok(());
        }
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        if busy != 0 {
            return Err(StoreError::Unavailable(
                "another connection kept the WAL in use, so it was not all copied into the \
                 database file; it is when the database is next opened"
                    .into(),
            ));
        }
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

mod audit;
pub mod backup;
mod filter_index;
mod writer;

#[cfg(test)]
mod tests;
