//! The audit log's write path on a file database: one blocking SQLite connection (rusqlite),
//! used without a worker thread in between.
//!
//! Why not sqlx, which the rest of the store uses: sqlx runs every SQLite connection on a worker
//! thread of its own and hands each statement to it and its result back, so one append cost
//! two thread hand-offs more than the SQLite work itself. Requests wait for their start to be
//! committed, and under load each hand-off waits for a core: `audit-latency --breakdown`
//! measured the same writer at +41 µs p50 on a memory store and +480 µs on SQLite in memory
//! through sqlx.
//!
//! Where the SQLite call runs depends on what a commit waits for:
//! - `disk` durability: every commit flushes, so the store says it blocks
//!   ([`wardgate_audit::AuditStore::blocks`]), the audit writer runs on a thread of its own, and
//!   the commit runs there, inline;
//! - `process` durability: a commit only hands its pages to the operating system, so it runs on
//!   the writer task's own thread when nothing is in its way ([`BlockingWriter::run`]);
//! - anything else (checkpoint inserts with `disk`, a `process` commit that would wait for the
//!   connection or SQLite's write lock, tests) goes through [`blocking`]: `block_in_place`, or
//!   the blocking pool from a current-thread runtime.
//!
//! "Hands its pages to the operating system": with `synchronous=NORMAL` SQLite also flushes the
//! WAL's header when it starts reusing the WAL after a checkpoint (about once a second here), so
//! about one `process` commit a second waits for one flush on the writer task's worker.
//!
//! rusqlite and sqlx link the same bundled SQLite (one `libsqlite3-sys`), so the two kinds of
//! connection share SQLite's process-wide file locking.
//!
//! The connection sits behind a mutex only so that the store's clones can share it: appends come
//! from the one audit writer, and checkpoint inserts take turns with it between appends.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use wardgate_audit::event::AuditEvent;
use wardgate_audit::{AuditEntry, AuditStoreError, StoredCheckpoint};

use super::audit::{INSERT_CHECKPOINT_SQL, NEXT_SEQ_SQL, STORED_ROOT_SQL};
use super::{AuditDurability, BUSY_TIMEOUT};

/// Page cache of the writer's connection, in KiB (SQLite's negative `cache_size`): room for the
/// pages every append reads and rewrites (the log's right edge and the B-tree above it).
const AUDIT_CACHE_KIB: i64 = 64 * 1024;

/// Appends one entry; prepared once per connection and reused for every row.
const INSERT_ENTRY_SQL: &str =
    "INSERT INTO audit_entries (seq, leaf, leaf_hash) VALUES (?1, ?2, ?3)";

/// The audit writer's connection to a file database.
#[derive(Debug)]
pub(super) struct BlockingWriter {
    /// `None` once closed.
    conn: Mutex<Option<Connection>>,
    durability: AuditDurability,
}

fn unavailable(e: rusqlite::Error) -> AuditStoreError {
    AuditStoreError::Unavailable(Box::new(e))
}

/// Whether `e` is SQLite's "the write lock is taken".
fn is_busy(e: &AuditStoreError) -> bool {
    let AuditStoreError::Unavailable(source) = e else {
        return false;
    };
    source
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn closed() -> AuditStoreError {
    AuditStoreError::Unavailable("the audit store is closed".into())
}

impl BlockingWriter {
    /// Opens the connection to `path`, a database the pool has already created and migrated
    /// (so in WAL mode, which is kept in the file).
    pub(super) async fn open(
        path: &Path,
        durability: AuditDurability,
    ) -> Result<Arc<Self>, AuditStoreError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || connect(&path, durability))
            .await
            .map_err(|e| AuditStoreError::Unavailable(Box::new(e)))??;
        Ok(Arc::new(Self {
            conn: Mutex::new(Some(conn)),
            durability,
        }))
    }

    /// Whether a commit may wait for the disk: with `disk` durability every commit flushes,
    /// so the audit writer runs on a thread of its own ([`wardgate_audit::AuditStore::blocks`]).
    pub(super) fn blocks(&self) -> bool {
        self.durability == AuditDurability::Disk
    }

    /// Runs `f` on the connection (see the module comment for where). `f` may run twice: a
    /// first attempt that found SQLite's write lock taken is run again where it may wait.
    pub(super) async fn run<R, F>(self: &Arc<Self>, mut f: F) -> Result<R, AuditStoreError>
    where
        F: FnMut(&mut Connection) -> Result<R, AuditStoreError> + Send + 'static,
        R: Send + 'static,
    {
        if wardgate_audit::store::blocking_allowed() {
            return self.with_conn(&mut f);
        }
        if self.durability == AuditDurability::Process
            && let Some(done) = self.without_waiting(&mut f)
        {
            return done;
        }
        let this = self.clone();
        blocking(move || this.with_conn(&mut f)).await?
    }

    fn with_conn<R>(
        &self,
        f: &mut impl FnMut(&mut Connection) -> Result<R, AuditStoreError>,
    ) -> Result<R, AuditStoreError> {
        match self.lock().as_mut() {
            Some(conn) => f(conn),
            None => Err(closed()),
        }
    }

    /// Runs `f` right here if that needs no waiting: the connection is free and SQLite's write
    /// lock is too (a busy timeout of zero for this attempt). `None` if it would have waited.
    ///
    /// Why on the caller's thread, a runtime worker: with `process` durability a commit only
    /// copies a page or two into the operating system's cache, shorter than many steps of a
    /// request, and `audit-latency` measured handing it to another thread (the writer's own,
    /// or the blocking pool through `block_in_place`) at about +0.2 ms p50 and +0.5 to +0.8 ms
    /// p99 per request against +0.1 ms and +0.4 ms here. Waiting (for another writer of the
    /// log, or for a checkpoint insert holding the connection) still happens off the runtime.
    fn without_waiting<R>(
        &self,
        f: &mut impl FnMut(&mut Connection) -> Result<R, AuditStoreError>,
    ) -> Option<Result<R, AuditStoreError>> {
        let mut guard = match self.conn.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let Some(conn) = guard.as_mut() else {
            return Some(Err(closed()));
        };
        if let Err(e) = conn.busy_timeout(Duration::ZERO) {
            return Some(Err(unavailable(e)));
        }
        let result = f(conn);
        // Restored whatever `f` did: its commit stands even if this fails, which would only
        // make a later wait fail at once (and report it) instead of waiting.
        if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::error!(error = %e, "cannot restore the audit connection's busy timeout");
        }
        match result {
            Err(e) if is_busy(&e) => None,
            done => Some(done),
        }
    }

    /// Appends `events` at the end of the log in one transaction and returns their entries.
    /// `BEGIN IMMEDIATE` takes SQLite's write lock before the next number is read, so no other
    /// writer (another process included) can take the same numbers.
    pub(super) async fn append(
        self: &Arc<Self>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEntry>, AuditStoreError> {
        let mut events = Some(events);
        self.run(move |conn| {
            // Only this first statement can find the write lock taken (WAL, no checkpoint in the
            // commit); the events are taken once it has the lock, so a retry still has them.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let events = events.take().ok_or_else(|| {
                AuditStoreError::Unavailable(
                    "audit append retried after its events were taken".into(),
                )
            })?;
            let next: i64 = tx
                .prepare_cached(NEXT_SEQ_SQL)
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(unavailable)?;
            let next = u64::try_from(next).map_err(|_| AuditStoreError::Corrupt {
                seq: 0,
                what: "negative seq".into(),
            })?;
            let entries = insert_entries(&tx, next, events)?;
            tx.commit().map_err(unavailable)?;
            Ok(entries)
        })
        .await
    }

    /// Inserts `checkpoint` unless one of its size exists, and returns the root stored for
    /// that size.
    pub(super) async fn add_checkpoint(
        self: &Arc<Self>,
        checkpoint: &StoredCheckpoint,
        size: i64,
    ) -> Result<Vec<u8>, AuditStoreError> {
        let root = checkpoint.root.0.to_vec();
        let note = checkpoint.note.clone();
        let subtrees: Vec<u8> = checkpoint.subtrees.iter().flat_map(|h| h.0).collect();
        let created_ms = checkpoint.created_at.unix_millis();
        self.run(move |conn| {
            conn.prepare_cached(INSERT_CHECKPOINT_SQL)
                .and_then(|mut s| s.execute(params![size, &root, &note, &subtrees, created_ms]))
                .map_err(unavailable)?;
            conn.prepare_cached(STORED_ROOT_SQL)
                .and_then(|mut s| s.query_row([size], |r| r.get(0)))
                .map_err(unavailable)
        })
        .await
    }

    /// Closes the connection, after the call holding it (if any); later calls fail as
    /// unavailable.
    pub(super) async fn close(self: &Arc<Self>) {
        let this = self.clone();
        let closing = blocking(move || match this.lock().take().map(Connection::close) {
            Some(Err((_, e))) => Err(e),
            _ => Ok(()),
        });
        match closing.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "closing the audit writer's SQLite connection failed");
            }
            Err(e) => tracing::warn!(error = %e, "closing the audit writer's connection failed"),
        }
    }

    /// Waits for the connection. Blocks: only from [`blocking`], and in tests that hold it to
    /// keep the background indexer out.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `f`, which blocks: inline on the audit writer's own thread
/// ([`wardgate_audit::store::blocking_allowed`]), where it holds up nobody else; elsewhere
/// without holding up the runtime's other tasks: in `block_in_place` on a multi-threaded runtime
/// (this thread goes on with `f` at once, and the runtime hands its other tasks to another
/// thread), on the blocking pool from a current-thread runtime, where `block_in_place` is not
/// allowed.
async fn blocking<R, F>(f: F) -> Result<R, AuditStoreError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if wardgate_audit::store::blocking_allowed() {
        return Ok(f());
    }
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => Ok(tokio::task::block_in_place(f)),
        Ok(_) => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuditStoreError::Unavailable(Box::new(e))),
        Err(_) => Ok(f()),
    }
}

/// Builds the entries for `events` from `next` on and inserts them; the caller commits.
fn insert_entries(
    conn: &Connection,
    next: u64,
    events: Vec<AuditEvent>,
) -> Result<Vec<AuditEntry>, AuditStoreError> {
    let mut insert = conn.prepare_cached(INSERT_ENTRY_SQL).map_err(unavailable)?;
    let mut entries = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let (entry, leaf) = AuditEntry::prepare(next + i as u64, event);
        let seq = i64::try_from(entry.seq)
            .map_err(|_| AuditStoreError::Invalid("seq out of range".into()))?;
        insert
            .execute(params![seq, leaf, entry.leaf_hash.0.as_slice()])
            .map_err(unavailable)?;
        entries.push(entry);
    }
    Ok(entries)
}

fn connect(path: &Path, durability: AuditDurability) -> Result<Connection, AuditStoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(unavailable)?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(AuditStoreError::Unavailable(
            format!("the database is in {journal} journal mode, not WAL").into(),
        ));
    }
    let synchronous = match durability {
        AuditDurability::Disk => "FULL",
        AuditDurability::Process => "NORMAL",
    };
    for (pragma, value) in [
        ("synchronous", synchronous.to_owned()),
        ("foreign_keys", "ON".to_owned()),
        ("cache_size", format!("-{AUDIT_CACHE_KIB}")),
        // The statement journal of a multi-row transaction in memory, not in a temporary file.
        ("temp_store", "MEMORY".to_owned()),
        // Checkpoints run beside the writer, never inside its commits (`wal_checkpointer`).
        ("wal_autocheckpoint", "0".to_owned()),
    ] {
        conn.pragma_update(None, pragma, value)
            .map_err(unavailable)?;
    }
    // Every statement of the write path is prepared once: the insert (one row at a time, up to
    // `MAX_APPEND_BATCH` per transaction), the next-number query and the checkpoint statements.
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}
