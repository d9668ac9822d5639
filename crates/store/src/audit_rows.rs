//! What both SQL audit stores (`sqlite/audit.rs`, `postgres/audit.rs`) read and report the same
//! way: an entry row and a checkpoint row read back into their records (the tables have the
//! same columns in both schemas), and the errors they map to. Each store only runs its own SQL.

use wardgate_audit::merkle::Hash;
use wardgate_audit::{AuditEntry, AuditStoreError, StoredCheckpoint, Timestamp};

/// A driver error as the audit stores report it (said once: `driver.rs`).
pub(crate) fn unavailable(e: sqlx::Error) -> AuditStoreError {
    AuditStoreError::Unavailable(Box::new(crate::driver::DriverError::from(e)))
}

/// A count or position as the database stores it.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, AuditStoreError> {
    i64::try_from(v).map_err(|_| AuditStoreError::Invalid(format!("{what} out of range")))
}

/// A stored row this code cannot read back: damage or tampering.
pub(crate) fn corrupt(seq: u64, what: &str) -> AuditStoreError {
    AuditStoreError::Corrupt {
        seq,
        what: what.to_owned(),
    }
}

/// A row of either driver, read by column name.
pub(crate) trait AuditColumns {
    fn int(&self, column: &'static str) -> Result<i64, AuditStoreError>;
    fn bytes(&self, column: &'static str) -> Result<Vec<u8>, AuditStoreError>;
    fn text(&self, column: &'static str) -> Result<String, AuditStoreError>;
}

impl<R> AuditColumns for R
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, column: &'static str) -> Result<i64, AuditStoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn bytes(&self, column: &'static str) -> Result<Vec<u8>, AuditStoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn text(&self, column: &'static str) -> Result<String, AuditStoreError> {
        self.try_get(column).map_err(unavailable)
    }
}

/// An `audit_entries` row (`seq`, `leaf`, `leaf_hash`) read back into its entry.
pub(crate) fn entry_from_row(row: &impl AuditColumns) -> Result<AuditEntry, AuditStoreError> {
    let seq = u64::try_from(row.int("seq")?).map_err(|_| corrupt(0, "negative seq"))?;
    AuditEntry::from_stored(seq, &row.bytes("leaf")?, &row.bytes("leaf_hash")?)
}

/// An `audit_checkpoints` row read back into its checkpoint.
pub(crate) fn checkpoint_from_row(
    row: &impl AuditColumns,
) -> Result<StoredCheckpoint, AuditStoreError> {
    let size =
        u64::try_from(row.int("tree_size")?).map_err(|_| corrupt(0, "negative checkpoint size"))?;
    let bad = |what| corrupt(size, what);
    Ok(StoredCheckpoint {
        size,
        root: Hash::from_slice(&row.bytes("root_hash")?)
            .ok_or_else(|| bad("checkpoint root is not 32 bytes"))?,
        note: row.text("note")?,
        subtrees: row
            .bytes("subtrees")?
            .chunks(32)
            .map(Hash::from_slice)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("checkpoint subtrees are not 32-byte hashes"))?,
        created_at: Timestamp::from_unix_millis(row.int("created_ms")?)
            .ok_or_else(|| bad("checkpoint time out of range"))?,
    })
}
