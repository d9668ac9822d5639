//! The audit log's filter index: the filter columns of every entry, indexed for `audit query`
//! and `GET /admin/audit`, kept in a database file of its own beside the log
//! (`<database>-audit-index`) and filled a little behind it by a background task.
//!
//! Why a file of its own: SQLite lets one connection at a time write to a database file. With
//! the index in the log's file, every catch-up (a few hundred rows into six indexes, about a
//! millisecond) held the write lock that the next append needed, and the requests waiting for
//! that append waited too: `audit-latency` measured the `process`-durability p99 at about
//! +0.4 ms with the indexer stopped and +0.6 to +0.8 ms with it running. In a file of its own
//! the catch-up takes only that file's write lock and reads the log from a WAL snapshot, which
//! never blocks the log's writer.
//!
//! The index is derived data. The leaf in `audit_entries` stays the record, and the index's rows
//! are read from the leaves (the log's table holds nothing but the leaf and its hash, so there
//! is no unverified copy of a field in it): query results are decoded from the leaf and
//! re-checked against the filter, and verification never reads the index.
//! Queries read the index for the entries it holds and scan the log after its last one, so an
//! entry is found whether or not it has been indexed yet (`sqlite/audit.rs`). At open the index
//! is checked against the log and rebuilt from it when it is missing, from another log, or ahead
//! of it (a power loss can keep an index commit while losing a `process`-durability log commit).
//! Its table is append-only like the log, so an entry cannot be hidden from a review by deleting
//! its filter row through SQL.
//!
//! Every pooled connection attaches the index as schema `audit_index`; an in-memory store
//! attaches a private in-memory database under the same name, so all SQL is shared.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use wardgate_audit::{AuditEntry, AuditStoreError};

use super::BUSY_TIMEOUT;

/// The schema name the index is attached under, on every connection.
pub(super) const SCHEMA: &str = "audit_index";

/// Rows one catch-up copies at most, bounding how long it holds the index's write lock after a
/// long pause (the next run goes on from there).
pub(super) const INDEX_CHUNK: i64 = 5_000;

/// The entries not yet in the index, oldest first. Entries are appended in `seq` order, so
/// everything after the largest indexed `seq` is exactly what is missing, whoever appended it
/// and whenever the catch-up last ran (after a crash too). Reads the log, never writes it.
const PENDING_SQL: &str = "SELECT seq, leaf, leaf_hash FROM main.audit_entries \
     WHERE seq > (SELECT COALESCE(MAX(seq), -1) FROM audit_index.audit_filter) \
     ORDER BY seq LIMIT $1";

/// Adds one entry's filter row. A row already there is left alone: two processes on one log
/// each run a catch-up, and both may read the same pending entries. Writes only the index.
const INSERT_ROW_SQL: &str = "INSERT INTO audit_index.audit_filter \
     (seq, ts_ms, event_type, actor_id, tenant, outcome, request_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (seq) DO NOTHING";

/// One entry's filter columns, as the index holds them. Read from the entry's leaf, the
/// record: the log's table holds nothing else (migration 0007).
#[derive(Debug, PartialEq)]
struct FilterRow {
    seq: i64,
    ts_ms: i64,
    event_type: String,
    actor_id: String,
    tenant: Option<String>,
    outcome: Option<String>,
    request_id: Option<String>,
}

impl FilterRow {
    /// The row of the entry stored as (`seq`, `leaf`, `leaf_hash`).
    fn from_stored(seq: i64, leaf: &[u8], leaf_hash: &[u8]) -> Result<Self, AuditStoreError> {
        let at = u64::try_from(seq).map_err(|_| AuditStoreError::Corrupt {
            seq: 0,
            what: "negative seq".into(),
        })?;
        let e = AuditEntry::from_stored(at, leaf, leaf_hash)?.event;
        Ok(Self {
            seq,
            ts_ms: e.ts.unix_millis(),
            event_type: e.event_type.as_str().to_owned(),
            actor_id: e.actor_id,
            tenant: e.tenant,
            outcome: e.outcome.map(|o| o.as_str().to_owned()),
            request_id: e.request_id,
        })
    }

    fn from_index(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            ts_ms: r.get(1)?,
            event_type: r.get(2)?,
            actor_id: r.get(3)?,
            tenant: r.get(4)?,
            outcome: r.get(5)?,
            request_id: r.get(6)?,
        })
    }
}

/// The filter rows of up to `limit` pending entries, as read; stops before an entry whose leaf
/// does not decode and returns why beside the rows before it (the catch-up indexes those and
/// reports the entry, which `wardgate audit verify` names too).
fn decode_pending(
    stored: impl IntoIterator<Item = (i64, Vec<u8>, Vec<u8>)>,
) -> (Vec<FilterRow>, Option<AuditStoreError>) {
    let mut rows = Vec::new();
    for (seq, leaf, leaf_hash) in stored {
        match FilterRow::from_stored(seq, &leaf, &leaf_hash) {
            Ok(row) => rows.push(row),
            Err(e) => return (rows, Some(e)),
        }
    }
    (rows, None)
}

/// A catch-up's failure.
pub(super) type IndexError = Box<dyn std::error::Error + Send + Sync>;

/// What a catch-up did: the rows it added, or the error that stopped it (after adding the
/// rows before the entry it could not read).
fn outcome(added: u64, unreadable: Option<AuditStoreError>) -> Result<Option<u64>, IndexError> {
    match unreadable {
        Some(e) => Err(Box::new(e)),
        None => Ok(Some(added)),
    }
}

/// The index's tables, indexes and append-only triggers, in schema `audit_index`.
pub(super) const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS audit_index.audit_filter (
    seq        INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 0),
    ts_ms      INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    actor_id   TEXT    NOT NULL,
    tenant     TEXT,
    outcome    TEXT,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS audit_index.audit_filter_ts ON audit_filter (ts_ms);
CREATE INDEX IF NOT EXISTS audit_index.audit_filter_actor ON audit_filter (actor_id, ts_ms);
CREATE INDEX IF NOT EXISTS audit_index.audit_filter_tenant ON audit_filter (tenant, ts_ms);
CREATE INDEX IF NOT EXISTS audit_index.audit_filter_outcome ON audit_filter (outcome, ts_ms);
CREATE INDEX IF NOT EXISTS audit_index.audit_filter_type ON audit_filter (event_type, ts_ms);
CREATE INDEX IF NOT EXISTS audit_index.audit_filter_request ON audit_filter (request_id);
CREATE TRIGGER IF NOT EXISTS audit_index.audit_filter_no_update BEFORE UPDATE ON audit_filter
BEGIN
    SELECT RAISE(ABORT, 'audit_filter is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_index.audit_filter_no_delete BEFORE DELETE ON audit_filter
BEGIN
    SELECT RAISE(ABORT, 'audit_filter is append-only');
END;
";

/// Where the index of the database at `db` lives.
pub(super) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-audit-index");
    PathBuf::from(name)
}

/// The index file as SQLite's `ATTACH` takes it: a `file:` URI with `mode=rw`, so that an
/// attach never creates the file (the store creates it, owner-only, before any connection
/// attaches it; a file deleted under a running gateway makes new connections fail loudly instead
/// of attaching an empty, world-readable one). Connections open with URI names allowed.
pub(super) fn attach_name(index: &Path) -> Result<String, rusqlite::Error> {
    let path = index
        .to_str()
        .ok_or_else(|| rusqlite::Error::InvalidPath(index.to_owned()))?;
    let mut uri = String::from("file:");
    for c in path.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=rw");
    Ok(uri)
}

/// A connection to the log with the index attached, as the catch-up uses it.
fn connect(db: &Path, index: &str) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute("ATTACH DATABASE ?1 AS audit_index", [index])?;
    Ok(conn)
}

/// Prepares the index file (which exists, created owner-only) before any other connection
/// attaches it: WAL journaling (so queries read it while the catch-up writes) and its schema.
/// A file that is not a database, or is damaged where this reads, is set aside (renamed to
/// `<index>.damaged-<unix ms>`, kept for whoever investigates) and the index rebuilt from the
/// log; it is derived data, so the log never depends on it.
pub(super) fn prepare(db: &Path, index: &Path) -> Result<(), rusqlite::Error> {
    match prepare_once(db, index) {
        Err(e) if is_damaged(&e) => {
            let aside = set_aside(index).map_err(|io| io_error(index, io))?;
            tracing::error!(
                index = %index.display(),
                aside = %aside.display(),
                error = %e,
                "the audit log's filter index was damaged: set aside, rebuilding it from the log"
            );
            prepare_once(db, index)
        }
        done => done,
    }
}

fn prepare_once(db: &Path, index: &Path) -> Result<(), rusqlite::Error> {
    let conn = connect(db, &attach_name(index)?)?;
    let mode: String = conn.query_row("PRAGMA audit_index.journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(failure(format!(
            "the audit index stays in {mode} journal mode, not WAL"
        )));
    }
    conn.execute_batch(SCHEMA_SQL)
}

fn failure(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(message),
    )
}

fn io_error(index: &Path, e: std::io::Error) -> rusqlite::Error {
    failure(format!(
        "cannot set the damaged audit index {} aside: {e}",
        index.display()
    ))
}

fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Renames the index and its `-wal` and `-shm` files aside and creates an empty, owner-only
/// index file in its place; returns the new name of the index.
fn set_aside(index: &Path) -> std::io::Result<PathBuf> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let with = |suffix: &str| {
        let mut name = index.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let aside = with(&format!(".damaged-{millis}"));
    for suffix in ["-wal", "-shm"] {
        match std::fs::rename(with(suffix), with(&format!(".damaged-{millis}{suffix}"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(index, &aside)?;
    super::private_file(index)?;
    Ok(aside)
}

/// The background catch-up's own connection to a file database.
#[derive(Debug)]
pub(super) struct FileIndexer(Mutex<Option<Connection>>);

impl FileIndexer {
    /// Opens the catch-up's connection (after the log's migrations) and rebuilds the index if it
    /// does not describe this log (see the module comment).
    pub(super) fn open(db: &Path, index: &Path) -> Result<Self, rusqlite::Error> {
        let conn = connect(db, &attach_name(index)?)?;
        conn.pragma_update(Some(SCHEMA), "synchronous", "NORMAL")?;
        if let Some(why) = mismatch(&conn)? {
            tracing::warn!(
                reason = why,
                "rebuilding the audit log's filter index from the log"
            );
            conn.execute_batch("DROP TABLE audit_index.audit_filter;")?;
            conn.execute_batch(SCHEMA_SQL)?;
        }
        Ok(Self(Mutex::new(Some(conn))))
    }

    /// Adds the filter rows of up to `limit` unindexed entries to the index; `None` once
    /// closed.
    pub(super) fn index_pending(&self, limit: i64) -> Result<Option<u64>, IndexError> {
        let mut guard = self.lock();
        let Some(conn) = guard.as_mut() else {
            return Ok(None);
        };
        let stored = conn
            .prepare_cached(PENDING_SQL)?
            .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let (rows, unreadable) = decode_pending(stored);
        // A deferred transaction whose only statements write the index: it takes the index's
        // write lock, never the log's.
        let tx = conn.transaction()?;
        let mut added = 0;
        {
            let mut insert = tx.prepare_cached(INSERT_ROW_SQL)?;
            for r in &rows {
                added += insert.execute(params![
                    r.seq,
                    r.ts_ms,
                    r.event_type,
                    r.actor_id,
                    r.tenant,
                    r.outcome,
                    r.request_id
                ])? as u64;
            }
        }
        tx.commit()?;
        outcome(added, unreadable)
    }

    /// Closes the connection; later catch-ups do nothing.
    pub(super) fn close(&self) {
        if let Some(conn) = self.lock().take()
            && let Err((_, e)) = conn.close()
        {
            tracing::warn!(error = %e, "closing the audit index connection failed");
        }
    }

    /// Waits for the connection; tests hold it to keep the catch-up out.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why the index cannot be trusted to describe the log, if it cannot: its last row must name
/// an entry of the log whose leaf has the same filter columns. One lookup on each side,
/// whatever the log's size.
///
/// Rows in the middle are not compared (that would read the whole log at every start): the
/// catch-up only ever adds the rows after the last one, in one transaction each, and the triggers
/// refuse deleting or changing rows through SQL, so rows can go missing only by someone writing
/// the file directly. That can hide an entry from filtered reviews, never from `wardgate audit
/// verify` or an export; an auditor who doubts the index deletes the file (gateway stopped) and
/// it is rebuilt from the log.
fn mismatch(conn: &Connection) -> Result<Option<&'static str>, rusqlite::Error> {
    let Some(indexed) = conn
        .query_row(
            "SELECT seq, ts_ms, event_type, actor_id, tenant, outcome, request_id \
             FROM audit_index.audit_filter ORDER BY seq DESC LIMIT 1",
            [],
            FilterRow::from_index,
        )
        .optional()?
    else {
        return Ok(None);
    };
    let logged = conn
        .query_row(
            "SELECT leaf, leaf_hash FROM main.audit_entries WHERE seq = ?1",
            [indexed.seq],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .optional()?;
    Ok(match logged {
        None => Some("the index is ahead of the log"),
        Some((leaf, leaf_hash)) => match FilterRow::from_stored(indexed.seq, &leaf, &leaf_hash) {
            Ok(logged) if logged == indexed => None,
            Ok(_) => Some("the index describes another log"),
            Err(_) => Some("the log's entry at the index's last row does not decode"),
        },
    })
}

/// Who brings the index up to date.
#[derive(Clone, Debug)]
pub(super) enum Indexer {
    /// A file database: the catch-up's own connection, used on the blocking pool.
    File(Arc<FileIndexer>),
    /// An in-memory database: its one pooled connection.
    Shared(sqlx::SqlitePool),
}

impl Indexer {
    /// One catch-up; `Ok(None)` once the store is closed.
    pub(super) async fn run(&self) -> Result<Option<u64>, IndexError> {
        match self {
            Self::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f.index_pending(INDEX_CHUNK)).await?
            }
            Self::Shared(pool) if pool.is_closed() => Ok(None),
            Self::Shared(pool) => match shared_catch_up(pool).await {
                Ok((added, unreadable)) => outcome(added, unreadable),
                Err(_) if pool.is_closed() => Ok(None),
                Err(e) => Err(Box::new(e)),
            },
        }
    }
}

/// One catch-up on the in-memory database's one pooled connection.
async fn shared_catch_up(
    pool: &sqlx::SqlitePool,
) -> Result<(u64, Option<AuditStoreError>), sqlx::Error> {
    use sqlx::{Connection as _, Row as _};
    let mut conn = pool.acquire().await?;
    let stored = sqlx::query(PENDING_SQL)
        .bind(INDEX_CHUNK)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<(i64, Vec<u8>, Vec<u8>)>, sqlx::Error>>()?;
    let (rows, unreadable) = decode_pending(stored);
    let mut tx = conn.begin().await?;
    let mut added = 0;
    for r in rows {
        added += sqlx::query(INSERT_ROW_SQL)
            .bind(r.seq)
            .bind(r.ts_ms)
            .bind(r.event_type)
            .bind(r.actor_id)
            .bind(r.tenant)
            .bind(r.outcome)
            .bind(r.request_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok((added, unreadable))
}
