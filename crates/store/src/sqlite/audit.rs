//! `AuditStore` for `SqliteStore`: the audit log's entries and checkpoints in the tables of
//! migration `0002_audit.sql`.
//!
//! Durability: the store's connections run WAL with `synchronous=FULL`, so a commit that
//! returned has been fsync'd to the WAL and survives power loss; the audit writer batches many
//! events into one transaction so that costs one fsync per batch, not per event.
//!
//! Appends (and checkpoint inserts) go through the store's one dedicated audit connection, whose
//! page cache stays warm from commit to commit; reads and queries use the shared pool.
//!
//! Sequence numbers: the first append (and any after a failure) opens its transaction with
//! `BEGIN IMMEDIATE`, taking SQLite's one write lock before reading `MAX(seq)`, so two appends
//! (even from two processes) can never read the same next number; a deferred transaction would
//! read under a shared lock and could fail to upgrade it. Later appends insert at the number the
//! last one left, in one autocommit statement; the primary key on `seq` refuses it if another
//! writer took that number, and the append falls back to the locked path.

use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Connection as _, Row as _};
use wardgate_audit::event::AuditEvent;
use wardgate_audit::merkle::Hash;
use wardgate_audit::store::{self as audit_store, MAX_READ};
use wardgate_audit::{
    AuditEntry, AuditFilter, AuditStore, AuditStoreError, StoredCheckpoint, Timestamp,
};

use super::SqliteStore;

/// Rows per `INSERT` statement: 9 parameters each stays under SQLite's 32,766-parameter limit,
/// and the statement text is reused for every full chunk (sqlx caches it per connection).
const INSERT_CHUNK: usize = 500;

fn unavailable(e: sqlx::Error) -> AuditStoreError {
    AuditStoreError::Unavailable(Box::new(e))
}

fn to_i64(v: u64, what: &str) -> Result<i64, AuditStoreError> {
    i64::try_from(v).map_err(|_| AuditStoreError::Invalid(format!("{what} out of range")))
}

fn corrupt(seq: u64, what: &str) -> AuditStoreError {
    AuditStoreError::Corrupt {
        seq,
        what: what.to_owned(),
    }
}

fn entry_from_row(row: &SqliteRow) -> Result<AuditEntry, AuditStoreError> {
    let seq: i64 = row.try_get("seq").map_err(unavailable)?;
    let seq = u64::try_from(seq).map_err(|_| corrupt(0, "negative seq"))?;
    let leaf: Vec<u8> = row.try_get("leaf").map_err(unavailable)?;
    let leaf_hash: Vec<u8> = row.try_get("leaf_hash").map_err(unavailable)?;
    AuditEntry::from_stored(seq, &leaf, &leaf_hash)
}

fn checkpoint_from_row(row: &SqliteRow) -> Result<StoredCheckpoint, AuditStoreError> {
    let size: i64 = row.try_get("tree_size").map_err(unavailable)?;
    let size = u64::try_from(size).map_err(|_| corrupt(0, "negative checkpoint size"))?;
    let root: Vec<u8> = row.try_get("root_hash").map_err(unavailable)?;
    let subtrees: Vec<u8> = row.try_get("subtrees").map_err(unavailable)?;
    let created_ms: i64 = row.try_get("created_ms").map_err(unavailable)?;
    let bad = |what| corrupt(size, what);
    Ok(StoredCheckpoint {
        size,
        root: Hash::from_slice(&root).ok_or_else(|| bad("checkpoint root is not 32 bytes"))?,
        note: row.try_get("note").map_err(unavailable)?,
        subtrees: subtrees
            .chunks(32)
            .map(Hash::from_slice)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("checkpoint subtrees are not 32-byte hashes"))?,
        created_at: Timestamp::from_unix_millis(created_ms)
            .ok_or_else(|| bad("checkpoint time out of range"))?,
    })
}

/// One row to insert, with the columns copied out of the event for indexing.
struct Row {
    entry: AuditEntry,
    leaf: Vec<u8>,
}

/// A multi-row insert. Anonymous `?` placeholders rather than `$n`: for each numbered one, sqlx
/// asks SQLite for the parameter's name, a linear search, which made binding a 500-row chunk
/// quadratic (most of the append's CPU time in profiles).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_entries \
         (seq, ts_ms, event_type, actor_id, tenant, outcome, request_id, leaf, leaf_hash) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?)");
    }
    sql
}

/// Why the fast path did not append.
enum Retry {
    /// Not tried, or another writer took the number: append under the lock instead.
    Slow(Vec<AuditEvent>),
    Failed(AuditStoreError),
}

impl SqliteStore {
    /// One autocommit `INSERT` at the sequence number the last append left: one statement
    /// and one fsync, where the locked path needs four statements. The writer appends one
    /// small batch after another, and the requests waiting for their start to be committed
    /// wait for every statement of it. If another writer appended meanwhile, the number is
    /// taken and the primary key refuses the row: nothing is written and the locked path
    /// reads the true next number.
    async fn fast_append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, Retry> {
        let next = *self.audit_next.lock().unwrap_or_else(|e| e.into_inner());
        let Some(next) = next.filter(|_| events.len() <= INSERT_CHUNK) else {
            return Err(Retry::Slow(events));
        };
        let rows = prepare(next, events);
        let sql = insert_sql(rows.len());
        let mut conn = self
            .audit_writer
            .acquire()
            .await
            .map_err(|e| Retry::Failed(unavailable(e)))?;
        match bind_rows(&sql, &rows)
            .map_err(Retry::Failed)?
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(rows.into_iter().map(|r| r.entry).collect()),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                Err(Retry::Slow(
                    rows.into_iter().map(|r| r.entry.event).collect(),
                ))
            }
            Err(e) => Err(Retry::Failed(unavailable(e))),
        }
    }

    /// Reads the next number under SQLite's write lock and inserts in one transaction.
    async fn locked_append(
        &self,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEntry>, AuditStoreError> {
        let mut conn = self.audit_writer.acquire().await.map_err(unavailable)?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_entries")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let next = u64::try_from(next).map_err(|_| corrupt(0, "negative seq"))?;
        let rows = prepare(next, events);
        let full_chunk_sql = insert_sql(INSERT_CHUNK);
        for chunk in rows.chunks(INSERT_CHUNK) {
            let sql = if chunk.len() == INSERT_CHUNK {
                full_chunk_sql.clone()
            } else {
                insert_sql(chunk.len())
            };
            bind_rows(&sql, chunk)?
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.entry).collect())
    }
}

fn prepare(next: u64, events: Vec<AuditEvent>) -> Vec<Row> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let (entry, leaf) = AuditEntry::prepare(next + i as u64, event);
            Row { entry, leaf }
        })
        .collect()
}

type Insert<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_rows<'q>(sql: &str, rows: &[Row]) -> Result<Insert<'q>, AuditStoreError> {
    let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
    for row in rows {
        let e = &row.entry.event;
        query = query
            .bind(to_i64(row.entry.seq, "seq")?)
            .bind(e.ts.unix_millis())
            .bind(e.event_type.as_str())
            .bind(e.actor_id.clone())
            .bind(e.tenant.clone())
            .bind(e.outcome.map(|o| o.as_str()))
            .bind(e.request_id.clone())
            .bind(row.leaf.clone())
            .bind(row.entry.leaf_hash.0.to_vec());
    }
    Ok(query)
}

/// Rows one run of [`index_pending`] copies at most, bounding how long it holds the writer's
/// connection after a long pause (the next run goes on from there).
const INDEX_CHUNK: i64 = 5_000;

/// Copies the filter columns of entries not yet in `audit_filter` into it, on the audit
/// writer's connection, in one autocommit statement. Entries are appended in `seq` order, so
/// everything after the largest indexed `seq` is exactly what is missing, whoever appended it
/// and whenever this last ran (after a crash too). Returns the rows copied.
pub(super) async fn index_pending(writer: &super::AuditWriter) -> Result<u64, sqlx::Error> {
    let mut conn = writer.acquire().await?;
    let done = sqlx::query(
        "INSERT INTO audit_filter (seq, ts_ms, event_type, actor_id, tenant, outcome, request_id) \
         SELECT seq, ts_ms, event_type, actor_id, tenant, outcome, request_id FROM audit_entries \
         WHERE seq > (SELECT COALESCE(MAX(seq), -1) FROM audit_filter) ORDER BY seq LIMIT $1",
    )
    .bind(INDEX_CHUNK)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The `after_seq` condition: it needs no index (`seq` is the table's key).
const AFTER_SEQ: &str = "seq > $";

/// The query's SQL for `clauses` (fixed fragments, each ending in `$`, numbered here in order),
/// with the limit as the last parameter.
///
/// Filters on the indexed columns read `audit_filter`'s indexes for the entries it holds and
/// scan the entries after its last one in `audit_entries` (which holds the same columns), so an
/// entry is found whether or not the background indexer has reached it; both parts are read
/// from one snapshot. Numbered parameters may appear twice: SQLite binds `$1` in both parts to
/// the same value.
fn query_sql(clauses: &[&str]) -> String {
    let mut conditions = String::new();
    for (i, clause) in clauses.iter().enumerate() {
        if i > 0 {
            conditions.push_str(" AND ");
        }
        conditions.push_str(clause);
        conditions.push_str(&(i + 1).to_string());
    }
    let limit = clauses.len() + 1;
    let select = "SELECT seq, leaf, leaf_hash FROM audit_entries";
    if clauses.iter().all(|c| *c == AFTER_SEQ) {
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {conditions}")
        };
        return format!("{select}{filter} ORDER BY seq LIMIT ${limit}");
    }
    format!(
        "{select} WHERE seq IN (\
         SELECT seq FROM audit_filter WHERE {conditions} \
         UNION ALL \
         SELECT seq FROM audit_entries \
         WHERE seq > (SELECT COALESCE(MAX(seq), -1) FROM audit_filter) AND {conditions}\
         ) ORDER BY seq LIMIT ${limit}"
    )
}

#[async_trait::async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        audit_store::check_batch(&events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = events.len() as u64;
        let result = match self.fast_append(events).await {
            Ok(entries) => Ok(entries),
            Err(Retry::Slow(events)) => self.locked_append(events).await,
            Err(Retry::Failed(e)) => Err(e),
        };
        let next = match &result {
            Ok(entries) => entries.first().map(|e| e.seq + n),
            // After a failure the next number is unknown: the next append reads it again.
            Err(_) => None,
        };
        *self.audit_next.lock().unwrap_or_else(|e| e.into_inner()) = next;
        result
    }

    async fn size(&self) -> Result<u64, AuditStoreError> {
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_entries")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        u64::try_from(next).map_err(|_| corrupt(0, "negative seq"))
    }

    async fn read_range(&self, start: u64, limit: u32) -> Result<Vec<AuditEntry>, AuditStoreError> {
        let Ok(start) = i64::try_from(start) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT seq, leaf, leaf_hash FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(start)
        .bind(i64::from(limit.min(MAX_READ)))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn leaf_hashes(&self, start: u64, limit: u32) -> Result<Vec<Hash>, AuditStoreError> {
        let Ok(start_i) = i64::try_from(start) else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, leaf_hash FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(start_i)
        .bind(i64::from(limit.min(MAX_READ)))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|(seq, h)| {
                let seq = u64::try_from(*seq).unwrap_or(start);
                Hash::from_slice(h).ok_or_else(|| corrupt(seq, "leaf hash is not 32 bytes"))
            })
            .collect()
    }

    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), AuditStoreError> {
        audit_store::check_checkpoint(checkpoint)?;
        let size = to_i64(checkpoint.size, "checkpoint size")?;
        let subtrees: Vec<u8> = checkpoint.subtrees.iter().flat_map(|h| h.0).collect();
        let mut conn = self.audit_writer.acquire().await.map_err(unavailable)?;
        // DO NOTHING keeps an existing row; the read-back then tells a repeat from a conflict.
        sqlx::query(
            "INSERT INTO audit_checkpoints (tree_size, root_hash, note, subtrees, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING",
        )
        .bind(size)
        .bind(checkpoint.root.0.to_vec())
        .bind(&checkpoint.note)
        .bind(subtrees)
        .bind(checkpoint.created_at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT root_hash FROM audit_checkpoints WHERE tree_size = $1")
                .bind(size)
                .fetch_one(&mut *conn)
                .await
                .map_err(unavailable)?;
        if stored != checkpoint.root.0 {
            return Err(AuditStoreError::Conflict(format!(
                "a checkpoint of size {} with another root exists",
                checkpoint.size
            )));
        }
        Ok(())
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, AuditStoreError> {
        let Ok(from) = i64::try_from(from_size) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT tree_size, root_hash, note, subtrees, created_ms FROM audit_checkpoints \
             WHERE tree_size >= $1 ORDER BY tree_size LIMIT $2",
        )
        .bind(from)
        .bind(i64::from(limit.min(MAX_READ)))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditStoreError> {
        let row = sqlx::query(
            "SELECT tree_size, root_hash, note, subtrees, created_ms FROM audit_checkpoints \
             ORDER BY tree_size DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditStoreError> {
        // Built from fixed fragments only; every value is a bound parameter.
        enum Value {
            Text(String),
            Int(i64),
        }
        let mut clauses: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut add = |clause: &'static str, value: Value| {
            clauses.push(clause);
            values.push(value);
        };
        if let Some(a) = &filter.actor_id {
            add("actor_id = $", Value::Text(a.clone()));
        }
        if let Some(t) = &filter.tenant {
            add("tenant = $", Value::Text(t.clone()));
        }
        if let Some(o) = filter.outcome {
            add("outcome = $", Value::Text(o.as_str().into()));
        }
        if let Some(t) = filter.event_type {
            add("event_type = $", Value::Text(t.as_str().into()));
        }
        if let Some(r) = &filter.request_id {
            add("request_id = $", Value::Text(r.clone()));
        }
        if let Some(s) = filter.since {
            add("ts_ms >= $", Value::Int(s.unix_millis()));
        }
        if let Some(u) = filter.until {
            add("ts_ms < $", Value::Int(u.unix_millis()));
        }
        if let Some(a) = filter.after_seq {
            match i64::try_from(a) {
                Ok(a) => add(AFTER_SEQ, Value::Int(a)),
                Err(_) => return Ok(Vec::new()),
            }
        }
        let sql = query_sql(&clauses);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for v in values {
            query = match v {
                Value::Text(t) => query.bind(t),
                Value::Int(n) => query.bind(n),
            };
        }
        let limit = filter.effective_limit();
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // The indexed columns are copies; the leaf is the record. Re-check so a row whose copy
        // disagrees with its leaf cannot slip into a review it does not belong to. (Changing a
        // copy needs an UPDATE, which the triggers refuse; verification never reads them.)
        if let Some(bad) = entries.iter().find(|e| !filter.matches(e)) {
            return Err(corrupt(bad.seq, "indexed columns disagree with the leaf"));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests;
