//! `AuditStore` for `SqliteStore`: the audit log's entries and checkpoints in the tables of
//! migration `0002_audit.sql`.
//!
//! Durability: the store's connections run WAL with `synchronous=FULL`, so a commit that
//! returned has been flushed to the WAL and survives power loss; the audit writer batches many
//! events into one transaction so that costs one flush per batch, not per event. If the
//! operator chose [`super::AuditDurability::Process`], the audit connection runs `NORMAL`: a
//! returned commit survives the process dying, not a power loss.
//!
//! Appends and checkpoint inserts go through the store's one audit connection
//! ([`AuditWriter`]): on a file database a blocking connection of its own (`sqlite/writer.rs`)
//! whose page cache stays warm from commit to commit. The filter index has a file and a
//! connection of its own (`sqlite/filter_index.rs`); reads and queries use the shared pool.
//!
//! Sequence numbers: every append opens its transaction with `BEGIN IMMEDIATE`, taking SQLite's
//! one write lock before reading `MAX(seq)` (the table's last key: one B-tree descent), so two
//! appends (even from two processes) can never read the same next number; a deferred
//! transaction would read under a shared lock and could fail to upgrade it.

use sqlx::{AssertSqlSafe, Connection as _};
use wardgate_audit::event::AuditEvent;
use wardgate_audit::merkle::Hash;
use wardgate_audit::store::{self as audit_store, MAX_READ};
use wardgate_audit::{AuditEntry, AuditFilter, AuditStore, AuditStoreError, StoredCheckpoint};

use crate::audit_rows::{checkpoint_from_row, corrupt, entry_from_row, to_i64, unavailable};

use super::{AuditWriter, SqliteStore};

/// Rows per `INSERT` statement: 3 parameters each stays under SQLite's 32,766-parameter limit,
/// and the statement text is reused for every full chunk (sqlx caches it per connection).
const INSERT_CHUNK: usize = 500;

/// One row to insert: the entry and its leaf (the row holds nothing else).
struct Row {
    entry: AuditEntry,
    leaf: Vec<u8>,
}

/// A multi-row insert. Anonymous `?` placeholders rather than `$n`: for each numbered one, sqlx
/// asks SQLite for the parameter's name, a linear search, which made binding a 500-row chunk
/// quadratic (most of the append's CPU time in profiles).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO audit_entries (seq, leaf, leaf_hash) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?)");
    }
    sql
}

/// The next sequence number: one past the largest stored.
pub(super) const NEXT_SEQ_SQL: &str = "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_entries";

/// Stores a checkpoint unless one of its size exists; [`STORED_ROOT_SQL`] then tells a repeat
/// from a conflict.
pub(super) const INSERT_CHECKPOINT_SQL: &str = "INSERT INTO audit_checkpoints (tree_size, root_hash, note, subtrees, created_ms) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING";

/// The root stored for a checkpoint size.
pub(super) const STORED_ROOT_SQL: &str =
    "SELECT root_hash FROM audit_checkpoints WHERE tree_size = $1";

impl AuditWriter {
    /// Appends `events` at the end of the log, in one transaction.
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        match self {
            Self::Blocking(writer) => writer.append(events).await,
            Self::Shared(pool) => shared_append(pool, events).await,
        }
    }

    /// Stores `checkpoint` (see [`INSERT_CHECKPOINT_SQL`]); returns the root stored for its size.
    async fn add_checkpoint(
        &self,
        checkpoint: &StoredCheckpoint,
        size: i64,
    ) -> Result<Vec<u8>, AuditStoreError> {
        let pool = match self {
            Self::Blocking(writer) => return writer.add_checkpoint(checkpoint, size).await,
            Self::Shared(pool) => pool,
        };
        let subtrees: Vec<u8> = checkpoint.subtrees.iter().flat_map(|h| h.0).collect();
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        sqlx::query(INSERT_CHECKPOINT_SQL)
            .bind(size)
            .bind(checkpoint.root.0.to_vec())
            .bind(&checkpoint.note)
            .bind(subtrees)
            .bind(checkpoint.created_at.unix_millis())
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        sqlx::query_scalar(STORED_ROOT_SQL)
            .bind(size)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)
    }
}

/// The in-memory database's append, on its one pooled connection: reads the next number under
/// SQLite's write lock (`BEGIN IMMEDIATE`) and inserts in the same transaction.
async fn shared_append(
    pool: &sqlx::SqlitePool,
    events: Vec<AuditEvent>,
) -> Result<Vec<AuditEntry>, AuditStoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(unavailable)?;
    let next: i64 = sqlx::query_scalar(NEXT_SEQ_SQL)
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
        query = query
            .bind(to_i64(row.entry.seq, "seq")?)
            .bind(row.leaf.clone())
            .bind(row.entry.leaf_hash.0.to_vec());
    }
    Ok(query)
}

/// The `after_seq` condition: it needs no index (`seq` is the table's key).
const AFTER_SEQ: &str = "seq > $";

/// The query's SQL for `clauses` (fixed fragments, each ending in `$`, numbered here in order).
///
/// With no condition but `after_seq`, the log is read directly (`seq` is its key), the limit
/// the last parameter. Otherwise the conditions are answered by `audit_filter`'s indexes, for
/// the entries it holds up to a `seq` bound (the next-to-last parameter; the limit is the last):
/// the entries after that bound are not in the index yet, or not for certain, and the caller
/// reads them from their leaves (the log's table holds nothing else to filter on). Numbered
/// parameters may appear twice: SQLite binds `$1` in both places to the same value.
fn query_sql(clauses: &[&str]) -> String {
    let mut conditions = String::new();
    for (i, clause) in clauses.iter().enumerate() {
        if i > 0 {
            conditions.push_str(" AND ");
        }
        conditions.push_str(clause);
        conditions.push_str(&(i + 1).to_string());
    }
    let select = "SELECT seq, leaf, leaf_hash FROM audit_entries";
    if clauses.iter().all(|c| *c == AFTER_SEQ) {
        let limit = clauses.len() + 1;
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {conditions}")
        };
        return format!("{select}{filter} ORDER BY seq LIMIT ${limit}");
    }
    let (upto, limit) = (clauses.len() + 1, clauses.len() + 2);
    format!(
        "{select} WHERE seq IN (\
         SELECT seq FROM audit_index.audit_filter WHERE {conditions} AND seq <= ${upto}\
         ) ORDER BY seq LIMIT ${limit}"
    )
}

/// The entries after `after` (their `seq`) that match `filter`, read from their leaves, until
/// `entries` holds `limit`; a chunk of the log at a time.
async fn scan_after(
    conn: &mut sqlx::SqliteConnection,
    filter: &AuditFilter,
    mut after: i64,
    limit: usize,
    entries: &mut Vec<AuditEntry>,
) -> Result<(), AuditStoreError> {
    while entries.len() < limit {
        let rows = sqlx::query(
            "SELECT seq, leaf, leaf_hash FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(MAX_READ))
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)?;
        for row in &rows {
            let entry = entry_from_row(row)?;
            after = to_i64(entry.seq, "seq")?;
            if filter.matches(&entry) {
                entries.push(entry);
                if entries.len() == limit {
                    return Ok(());
                }
            }
        }
        if rows.len() < MAX_READ as usize {
            return Ok(());
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        audit_store::check_batch(&events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.audit_writer.append(events).await
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
        let stored = self.audit_writer.add_checkpoint(checkpoint, size).await?;
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
        let indexed = !clauses.iter().all(|c| *c == AFTER_SEQ);
        let limit = filter.effective_limit();
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        // The index answers for the entries up to its last one, those after it are read from
        // their leaves below. Read first and bound the indexed part by it, so that an entry the
        // index gains meanwhile is read from the log, never missed or read twice.
        let upto: i64 = if indexed {
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), -1) FROM audit_index.audit_filter")
                .fetch_one(&mut *conn)
                .await
                .map_err(unavailable)?
        } else {
            0
        };
        let sql = query_sql(&clauses);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for v in values {
            query = match v {
                Value::Text(t) => query.bind(t),
                Value::Int(n) => query.bind(n),
            };
        }
        if indexed {
            query = query.bind(upto);
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
        let mut entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // The index's columns are copies; the leaf is the record. Re-check so a row whose copy
        // disagrees with its leaf cannot slip into a review it does not belong to. (Changing a
        // copy needs an UPDATE, which the triggers refuse; verification never reads them.)
        if let Some(bad) = entries.iter().find(|e| !filter.matches(e)) {
            return Err(corrupt(bad.seq, "indexed columns disagree with the leaf"));
        }
        if indexed {
            let after = match filter.after_seq {
                Some(a) => upto.max(to_i64(a, "after_seq")?),
                None => upto,
            };
            scan_after(&mut conn, filter, after, limit as usize, &mut entries).await?;
        }
        Ok(entries)
    }

    fn blocks(&self) -> bool {
        matches!(&self.audit_writer, AuditWriter::Blocking(w) if w.blocks())
    }
}

#[cfg(test)]
mod tests;
