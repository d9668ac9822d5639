//! `AuditStore` and `SharedLog` for `PgStore`: the audit log in the tables of the PostgreSQL
//! migration `0002_audit.sql`, written by any number of gateway instances through the queue and
//! the sequencer lease (`wardgate_audit::shared`).
//!
//! Every operation is one statement or one transaction, with no session state, so all of it
//! works through PgBouncer in transaction-pooling mode. Durability is the server's: a commit
//! that returned is on disk under PostgreSQL's default `synchronous_commit = on`.
//!
//! Fencing: a sequencing transaction first locks the lease row and checks that its holder and
//! epoch are still the caller's and unexpired. A successor's `acquire_lease` updates that row,
//! so it waits for the transaction to end; an old holder whose lease lapsed finds the row
//! changed and sequences nothing. A queued row this release cannot read is set aside into
//! `audit_quarantine` (migration `0003_audit_quarantine.sql`) in that same transaction, or
//! stops it, as `wardgate_audit::quarantine` rules. Direct appends ([`AuditStore::append`], used where one writer
//! owns the log) lock the same row, so the two never interleave sequence numbers.

use std::time::Duration;

use sqlx::{PgConnection, Row as _};
use wardgate_audit::event::{AuditEvent, encode_leaf};
use wardgate_audit::merkle::Hash;
use wardgate_audit::quarantine::{self, QuarantinedRow, Queued, QueuedRow};
use wardgate_audit::queue_tag::QueueKey;
use wardgate_audit::shared::{Lease, PendingEvent, Sequenced, SharedLog, TaggedLeaf};
use wardgate_audit::store::{self as audit_store, MAX_APPEND_BATCH, MAX_READ};
use wardgate_audit::{
    AuditEntry, AuditFilter, AuditStore, AuditStoreError, StoredCheckpoint, Timestamp,
};

use crate::AuditDurability;
use crate::audit_rows::{checkpoint_from_row, corrupt, entry_from_row, to_i64, unavailable};

use super::PgStore;

/// A bounded call's transaction (`PgStore::bounded`).
type Tx = PgConnection;

/// Queues events in order: `$1` their leaves, `$2` their tags, `$3` the time.
const ENQUEUE: &str = "INSERT INTO audit_queue (event, tag, queued_ms) \
     SELECT event, tag, $3 FROM UNNEST($1::BYTEA[], $2::BYTEA[]) \
       WITH ORDINALITY AS q(event, tag, n) \
     ORDER BY n RETURNING id";

/// [`ENQUEUE`] under `audit.durability = "process"`: the same rows, in a transaction whose
/// commit does not wait for the WAL flush (`synchronous_commit` off for this transaction
/// only, set by the statement itself, so no extra round trip; see
/// [`super::PgOptions::audit_durability`]). The one-row subquery is evaluated once, before
/// any row is inserted.
const ENQUEUE_PROCESS_DURABLE: &str = "INSERT INTO audit_queue (event, tag, queued_ms) \
     SELECT event, tag, $3 FROM UNNEST($1::BYTEA[], $2::BYTEA[]) \
       WITH ORDINALITY AS q(event, tag, n) \
       CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed \
     ORDER BY n RETURNING id";

/// The most a transaction that holds the lease row may sit idle or wait on a lock before the
/// server ends it: a holder frozen mid-transaction (a paused process, a dead network path the
/// server has not noticed) would otherwise keep the row locked, and no other instance could
/// take the lease over, for as long as the server keeps the session (hours). Equal to the
/// default lease, so a frozen holder is cut off about when its lease would have lapsed.
const LEASE_TRANSACTION_LIMIT: &str = "5s";

/// Bounds the current transaction ([`LEASE_TRANSACTION_LIMIT`]): transaction-local settings
/// (`set_config(.., true)`, as `SET LOCAL`), which end with the transaction and so are safe
/// through a transaction-pooling PgBouncer. One round trip.
pub(super) async fn bound_transaction(tx: &mut Tx) -> Result<(), AuditStoreError> {
    sqlx::query(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, true), \
                set_config('lock_timeout', $1, true), \
                set_config('statement_timeout', $1, true)",
    )
    .persistent(false)
    .bind(LEASE_TRANSACTION_LIMIT)
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// A position to read from: past `i64::MAX` nothing is stored, so reading from there finds
/// nothing, as it should.
fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The next sequence number, read inside a transaction that holds the lease row.
async fn next_seq(tx: &mut Tx) -> Result<u64, AuditStoreError> {
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_entries")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
    u64::try_from(next).map_err(|_| corrupt(0, "negative seq"))
}

/// Inserts `events` at `start..` in one statement, each with its tag (`tags` in step, or
/// empty for none: a direct append), and returns the entries.
async fn insert_entries(
    tx: &mut Tx,
    start: u64,
    events: Vec<AuditEvent>,
    tags: Vec<Option<Vec<u8>>>,
) -> Result<Vec<AuditEntry>, AuditStoreError> {
    let mut tags = tags;
    tags.resize(events.len(), None);
    let mut seqs = Vec::with_capacity(events.len());
    let mut leaves = Vec::with_capacity(events.len());
    let mut hashes = Vec::with_capacity(events.len());
    let mut entries = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let seq = start + i as u64;
        let (entry, leaf) = AuditEntry::prepare(seq, event);
        seqs.push(to_i64(seq, "seq")?);
        leaves.push(leaf);
        hashes.push(entry.leaf_hash.as_bytes().to_vec());
        entries.push(entry);
    }
    if entries.is_empty() {
        return Ok(entries);
    }
    sqlx::query(
        "INSERT INTO audit_entries (seq, leaf, leaf_hash, tag) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BYTEA[], $4::BYTEA[])",
    )
    .persistent(false)
    .bind(seqs)
    .bind(leaves)
    .bind(hashes)
    .bind(tags)
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    Ok(entries)
}

#[async_trait::async_trait]
impl AuditStore for PgStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        audit_store::check_batch(&events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(async |tx: &mut Tx| {
            bound_transaction(tx).await?;
            // The lease row serialises direct appends with sequencing passes.
            sqlx::query("SELECT 1 FROM audit_sequencer WHERE id = 1 FOR UPDATE")
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            let start = next_seq(tx).await?;
            insert_entries(tx, start, events, Vec::new()).await
        })
        .await
    }

    async fn size(&self) -> Result<u64, AuditStoreError> {
        self.bounded(async |tx: &mut Tx| next_seq(tx).await).await
    }

    async fn read_range(&self, start: u64, limit: u32) -> Result<Vec<AuditEntry>, AuditStoreError> {
        let rows = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query(
            "SELECT seq, leaf, leaf_hash FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .persistent(false)
        .bind(clamp_i64(start))
        .bind(i64::from(limit.min(MAX_READ)))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)
            })
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn leaf_hashes(&self, start: u64, limit: u32) -> Result<Vec<Hash>, AuditStoreError> {
        let rows = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query(
            "SELECT seq, leaf_hash FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .persistent(false)
        .bind(clamp_i64(start))
        .bind(i64::from(limit.min(MAX_READ)))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)
            })
            .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq").map_err(unavailable)?;
                let hash: Vec<u8> = row.try_get("leaf_hash").map_err(unavailable)?;
                Hash::from_slice(&hash).ok_or_else(|| {
                    corrupt(u64::try_from(seq).unwrap_or(0), "leaf hash is not 32 bytes")
                })
            })
            .collect()
    }

    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), AuditStoreError> {
        audit_store::check_checkpoint(checkpoint)?;
        let subtrees: Vec<u8> = checkpoint
            .subtrees
            .iter()
            .flat_map(|h| h.as_bytes().iter().copied())
            .collect();
        let size = to_i64(checkpoint.size, "checkpoint size")?;
        let root: Option<Vec<u8>> = self
            .bounded(async |tx: &mut Tx| {
                let inserted = sqlx::query(
                    "INSERT INTO audit_checkpoints \
                       (tree_size, root_hash, note, subtrees, created_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING",
                )
                .persistent(false)
                .bind(size)
                .bind(checkpoint.root.as_bytes().to_vec())
                .bind(&checkpoint.note)
                .bind(subtrees)
                .bind(checkpoint.created_at.unix_millis())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
                if inserted == 1 {
                    return Ok(None);
                }
                sqlx::query_scalar("SELECT root_hash FROM audit_checkpoints WHERE tree_size = $1")
                    .persistent(false)
                    .bind(size)
                    .fetch_one(&mut *tx)
                    .await
                    .map(Some)
                    .map_err(unavailable)
            })
            .await?;
        let Some(root) = root else {
            return Ok(());
        };
        if root == checkpoint.root.as_bytes() {
            Ok(())
        } else {
            Err(AuditStoreError::Conflict(format!(
                "a checkpoint of size {} with another root exists",
                checkpoint.size
            )))
        }
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, AuditStoreError> {
        let rows = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query(
            "SELECT tree_size, root_hash, note, subtrees, created_ms FROM audit_checkpoints \
             WHERE tree_size >= $1 ORDER BY tree_size LIMIT $2",
        )
        .persistent(false)
        .bind(clamp_i64(from_size))
        .bind(i64::from(limit.min(MAX_READ)))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)
            })
            .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditStoreError> {
        let row = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query(
            "SELECT tree_size, root_hash, note, subtrees, created_ms FROM audit_checkpoints \
             ORDER BY tree_size DESC LIMIT 1",
        )
        .persistent(false)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)
            })
            .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditStoreError> {
        let limit = filter.effective_limit();
        let rows = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query(
                    "SELECT seq, leaf, leaf_hash FROM audit_entries \
             WHERE ($1::TEXT IS NULL OR event ->> 'actor_id' = $1) \
               AND ($2::TEXT IS NULL OR event ->> 'tenant' = $2) \
               AND ($3::TEXT IS NULL OR event ->> 'outcome' = $3) \
               AND ($4::TEXT IS NULL OR event ->> 'event_type' = $4) \
               AND ($5::TEXT IS NULL OR event ->> 'request_id' = $5) \
               AND ($6::TEXT IS NULL OR event ->> 'ts' >= $6) \
               AND ($7::TEXT IS NULL OR event ->> 'ts' < $7) \
               AND ($8::BIGINT IS NULL OR seq > $8) \
             ORDER BY seq LIMIT $9",
                )
                .persistent(false)
                .bind(filter.actor_id.as_deref())
                .bind(filter.tenant.as_deref())
                .bind(filter.outcome.map(|o| o.as_str()))
                .bind(filter.event_type.map(|t| t.as_str()))
                .bind(filter.request_id.as_deref())
                .bind(filter.since.map(|t| t.to_string()))
                .bind(filter.until.map(|t| t.to_string()))
                .bind(filter.after_seq.map(clamp_i64))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)
            })
            .await?;
        // `event` is generated from the leaf; the decoded leaf is checked again anyway.
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let entry = entry_from_row(row)?;
            if filter.matches(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

/// Rows read per page when a pending query filters the queue.
const PENDING_PAGE: i64 = 1_000;

#[async_trait::async_trait]
impl SharedLog for PgStore {
    async fn enqueue(
        &self,
        events: Vec<AuditEvent>,
        key: &QueueKey,
    ) -> Result<Vec<u64>, AuditStoreError> {
        audit_store::check_batch(&events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let leaves: Vec<Vec<u8>> = events.iter().map(|e| encode_leaf(0, e)).collect();
        let tags: Vec<Vec<u8>> = leaves
            .iter()
            .map(|l| key.tag(l).as_bytes().to_vec())
            .collect();
        let now = Timestamp::now().unix_millis();
        // One statement: all or none. `WITH ORDINALITY` keeps the ids in the order of the
        // events. In a transaction even so: sqlx prepares an unnamed statement and runs it in
        // two exchanges, which a transaction-pooling PgBouncer may send to two server
        // connections unless a transaction holds them together (a single statement on the
        // pool failed there under load).
        let ids: Vec<i64> = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query_scalar(match self.audit_durability {
                    AuditDurability::Disk => ENQUEUE,
                    AuditDurability::Process => ENQUEUE_PROCESS_DURABLE,
                })
                .persistent(false)
                .bind(leaves)
                .bind(tags)
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)
            })
            .await?;
        let mut ids: Vec<u64> = ids
            .into_iter()
            .map(|id| u64::try_from(id).map_err(|_| corrupt(0, "negative queue id")))
            .collect::<Result<_, _>>()?;
        // Identity values are taken in insertion order, which `ORDER BY n` fixed.
        ids.sort_unstable();
        Ok(ids)
    }

    async fn pending_count(&self) -> Result<u64, AuditStoreError> {
        let n: i64 = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query_scalar("SELECT COUNT(*) FROM audit_queue")
                    .persistent(false)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn oldest_pending_ms(&self) -> Result<Option<i64>, AuditStoreError> {
        // The first row by id, through the primary key: the queue can be long while no
        // sequencer runs, and a scrape asks this every few seconds.
        self.bounded(async |tx: &mut Tx| {
            sqlx::query_scalar("SELECT queued_ms FROM audit_queue ORDER BY id LIMIT 1")
                .persistent(false)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)
        })
        .await
    }

    async fn pending(&self, filter: &AuditFilter) -> Result<Vec<PendingEvent>, AuditStoreError> {
        let limit = filter.effective_limit() as usize;
        let mut out = Vec::new();
        let mut after: i64 = 0;
        // The queue is short while a sequencer runs; when none does it can grow, so it is read
        // in pages and filtered here (queued events have no filter columns).
        loop {
            let rows = self
                .bounded(async |tx: &mut Tx| {
                    sqlx::query(
                        "SELECT id, event FROM audit_queue WHERE id > $1 ORDER BY id LIMIT $2",
                    )
                    .persistent(false)
                    .bind(after)
                    .bind(PENDING_PAGE)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)
                })
                .await?;
            let page = rows.len();
            for row in &rows {
                let id: i64 = row.try_get("id").map_err(unavailable)?;
                after = id;
                let bytes: Vec<u8> = row.try_get("event").map_err(unavailable)?;
                // A row that is no event of this release matches no filter (the trait says
                // why); sequencing deals with it.
                let QueuedRow::Event(event) = quarantine::read_queued(&bytes) else {
                    continue;
                };
                if filter.matches_event(&event) {
                    out.push(PendingEvent {
                        id: u64::try_from(id).unwrap_or(0),
                        event,
                    });
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if page < PENDING_PAGE as usize {
                return Ok(out);
            }
        }
    }

    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, AuditStoreError> {
        // In an UPDATE every expression reads the row as it was, so the epoch grows exactly
        // when the lease changes hands or had lapsed. Two instances asking at once: the second
        // waits for the first's update, re-checks the condition against the new row, and gets
        // nothing.
        let epoch: Option<i64> = self
            .bounded(async |tx: &mut Tx| {
                bound_transaction(tx).await?;
                sqlx::query_scalar(
                    "UPDATE audit_sequencer SET \
                       epoch = CASE WHEN holder = $1 AND expires_at > clock_timestamp() \
                                    THEN epoch ELSE epoch + 1 END, \
                       holder = $1, \
                       expires_at = clock_timestamp() + make_interval(secs => $2) \
                     WHERE id = 1 \
                       AND (holder IS NULL OR holder = $1 OR expires_at <= clock_timestamp()) \
                     RETURNING epoch",
                )
                .persistent(false)
                .bind(holder)
                .bind(ttl.as_secs_f64())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)
            })
            .await?;
        Ok(epoch.map(|epoch| Lease {
            holder: holder.to_owned(),
            epoch: u64::try_from(epoch).unwrap_or(0),
        }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), AuditStoreError> {
        let epoch = to_i64(lease.epoch, "epoch")?;
        self.bounded(async |tx: &mut Tx| {
            sqlx::query(
                "UPDATE audit_sequencer SET holder = NULL, expires_at = NULL \
                 WHERE id = 1 AND holder = $1 AND epoch = $2",
            )
            .persistent(false)
            .bind(&lease.holder)
            .bind(epoch)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)
            .map(drop)
        })
        .await
    }

    async fn sequence(
        &self,
        lease: &Lease,
        at: u64,
        max: usize,
        key: &QueueKey,
    ) -> Result<Sequenced, AuditStoreError> {
        self.bounded(async |tx: &mut Tx| sequence_in(tx, lease, at, max, key).await)
            .await
    }

    async fn tagged_leaves(
        &self,
        start: u64,
        limit: u32,
    ) -> Result<Vec<TaggedLeaf>, AuditStoreError> {
        // In a transaction, for PgBouncer (see `enqueue`).
        let rows = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query(
                    "SELECT seq, leaf, leaf_hash, tag FROM audit_entries \
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
                )
                .persistent(false)
                .bind(clamp_i64(start))
                .bind(i64::from(limit.min(MAX_READ)))
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)
            })
            .await?;
        rows.iter()
            .map(|row| {
                let seq = u64::try_from(row.try_get::<i64, _>("seq").map_err(unavailable)?)
                    .map_err(|_| corrupt(0, "negative seq"))?;
                let hash: Vec<u8> = row.try_get("leaf_hash").map_err(unavailable)?;
                let tag: Option<Vec<u8>> = row.try_get("tag").map_err(unavailable)?;
                Ok(TaggedLeaf {
                    seq,
                    leaf: row.try_get("leaf").map_err(unavailable)?,
                    leaf_hash: Hash::from_slice(&hash)
                        .ok_or_else(|| corrupt(seq, "leaf hash is not 32 bytes"))?,
                    // A tag of another length cannot be stored (the column's check).
                    tag: tag.as_deref().and_then(Hash::from_slice),
                })
            })
            .collect()
    }

    async fn tag_positions(&self, tags: &[Hash]) -> Result<Vec<(Hash, u64)>, AuditStoreError> {
        self.bounded(async |tx: &mut Tx| tag_positions_in(tx, tags).await)
            .await
    }

    async fn quarantined(
        &self,
        after_queue_id: u64,
        limit: u32,
    ) -> Result<Vec<QuarantinedRow>, AuditStoreError> {
        let rows = self
            .bounded(async |tx: &mut Tx| {
                sqlx::query(
                    "SELECT queue_id, seq, event, sha256, quarantined_ms FROM audit_quarantine \
             WHERE queue_id > $1 ORDER BY queue_id LIMIT $2",
                )
                .persistent(false)
                .bind(clamp_i64(after_queue_id))
                .bind(i64::from(limit.min(MAX_READ)))
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)
            })
            .await?;
        rows.iter()
            .map(|row| {
                let seq = u64::try_from(row.try_get::<i64, _>("seq").map_err(unavailable)?)
                    .map_err(|_| corrupt(0, "negative seq in the quarantine table"))?;
                let bad = |what| corrupt(seq, what);
                Ok(QuarantinedRow {
                    queue_id: u64::try_from(
                        row.try_get::<i64, _>("queue_id").map_err(unavailable)?,
                    )
                    .map_err(|_| bad("negative queue id in the quarantine table"))?,
                    seq,
                    bytes: row.try_get("event").map_err(unavailable)?,
                    sha256: Hash::from_slice(
                        &row.try_get::<Vec<u8>, _>("sha256").map_err(unavailable)?,
                    )
                    .ok_or_else(|| bad("quarantined row's SHA-256 is not 32 bytes"))?,
                    quarantined_at: Timestamp::from_unix_millis(
                        row.try_get("quarantined_ms").map_err(unavailable)?,
                    )
                    .ok_or_else(|| bad("quarantine time out of range"))?,
                })
            })
            .collect()
    }
}

/// One sequencing pass, in `tx` (a bounded call's transaction, committed when this returns
/// `Ok`, rolled back on `Err`). A lapsed lease writes nothing.
/// Where the log's entries carry any of `tags` (an index on the tag column answers it).
async fn tag_positions_in(tx: &mut Tx, tags: &[Hash]) -> Result<Vec<(Hash, u64)>, AuditStoreError> {
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<Vec<u8>> = tags.iter().map(|t| t.as_bytes().to_vec()).collect();
    let rows = sqlx::query("SELECT tag, seq FROM audit_entries WHERE tag = ANY($1::BYTEA[])")
        .persistent(false)
        .bind(wanted)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|row| {
            let seq = u64::try_from(row.try_get::<i64, _>("seq").map_err(unavailable)?)
                .map_err(|_| corrupt(0, "negative seq"))?;
            let tag: Vec<u8> = row.try_get("tag").map_err(unavailable)?;
            let tag = Hash::from_slice(&tag).ok_or_else(|| corrupt(seq, "tag is not 32 bytes"))?;
            Ok((tag, seq))
        })
        .collect()
}

async fn sequence_in(
    tx: &mut Tx,
    lease: &Lease,
    at: u64,
    max: usize,
    key: &QueueKey,
) -> Result<Sequenced, AuditStoreError> {
    bound_transaction(tx).await?;
    let held = sqlx::query(
        "SELECT 1 FROM audit_sequencer \
             WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp() \
             FOR UPDATE",
    )
    .persistent(false)
    .bind(&lease.holder)
    .bind(to_i64(lease.epoch, "epoch")?)
    .fetch_optional(&mut *tx)
    .await
    .map_err(unavailable)?
    .is_some();
    if !held {
        return Ok(Sequenced::LeaseLost);
    }
    // Read under the lease row's lock, before anything is written: a holder never writes on
    // top of entries it has not checked (a row planted at the end of the log by someone with
    // write access). A row planted after this read collides with the insert's seq.
    let start = next_seq(tx).await?;
    if start != at {
        return Ok(Sequenced::Moved { size: start });
    }
    let take = i64::try_from(max.clamp(1, MAX_APPEND_BATCH)).unwrap_or(1);
    let rows = sqlx::query(
        "SELECT id, event, tag, queued_ms FROM audit_queue ORDER BY id LIMIT $1 FOR UPDATE",
    )
    .persistent(false)
    .bind(take)
    .fetch_all(&mut *tx)
    .await
    .map_err(unavailable)?;
    let mut queued = Vec::with_capacity(rows.len());
    let mut queued_ms = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id").map_err(unavailable)?;
        let id = u64::try_from(id).map_err(|_| corrupt(0, "negative queue id"))?;
        queued_ms.insert(id, row.try_get::<i64, _>("queued_ms").map_err(unavailable)?);
        queued.push(Queued {
            queue_id: id,
            bytes: row.try_get("event").map_err(unavailable)?,
            tag: row.try_get("tag").map_err(unavailable)?,
        });
    }
    drop(rows);
    let tags: Vec<Hash> = queued
        .iter()
        .filter_map(|q| q.tag.as_deref().and_then(Hash::from_slice))
        .collect();
    let logged = tag_positions_in(tx, &tags)
        .await?
        .into_iter()
        .map(|(tag, _)| tag)
        .collect();
    let now = Timestamp::now();
    let plan = quarantine::plan(queued, now, key, &logged);
    let entries = if plan.take.is_empty() {
        Vec::new()
    } else {
        // Every row taken leaves the queue here, and only here: into the log, or into the
        // quarantine table.
        let ids = plan
            .take
            .iter()
            .map(|p| to_i64(p.queue_id, "queue id"))
            .collect::<Result<Vec<_>, _>>()?;
        let taken = ids.len() as u64;
        let deleted = sqlx::query("DELETE FROM audit_queue WHERE id = ANY($1::BIGINT[])")
            .persistent(false)
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        if deleted != taken {
            // The error rolls the transaction back.
            return Err(AuditStoreError::Conflict(
                "queued audit rows were removed by something other than the sequencer; \
                     nothing was sequenced"
                    .into(),
            ));
        }
        let mut set_aside = SetAside::default();
        let mut events = Vec::with_capacity(plan.take.len());
        let mut tags = Vec::with_capacity(plan.take.len());
        for (i, planned) in plan.take.into_iter().enumerate() {
            if let Some((bytes, sha256)) = planned.set_aside {
                set_aside
                    .queue_ids
                    .push(to_i64(planned.queue_id, "queue id")?);
                set_aside.seqs.push(to_i64(start + i as u64, "seq")?);
                set_aside.bytes.push(bytes);
                set_aside.sha256.push(sha256.as_bytes().to_vec());
                set_aside
                    .queued_ms
                    .push(queued_ms.get(&planned.queue_id).copied().unwrap_or(0));
            }
            events.push(planned.event);
            tags.push(Some(planned.tag.as_bytes().to_vec()));
        }
        let entries = insert_entries(tx, start, events, tags).await?;
        set_aside.insert(tx, now).await?;
        entries
    };
    Ok(Sequenced::ended(entries, plan.held))
}

/// The rows one sequencing pass sets aside, as columns for one insert.
#[derive(Default)]
struct SetAside {
    queue_ids: Vec<i64>,
    seqs: Vec<i64>,
    bytes: Vec<Vec<u8>>,
    sha256: Vec<Vec<u8>>,
    queued_ms: Vec<i64>,
}

impl SetAside {
    /// Inserts them into `audit_quarantine`, set aside at `at`, in one statement.
    async fn insert(self, tx: &mut Tx, at: Timestamp) -> Result<(), AuditStoreError> {
        if self.queue_ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO audit_quarantine \
               (queue_id, seq, event, sha256, queued_ms, quarantined_ms) \
             SELECT q.*, $6 FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BYTEA[], $4::BYTEA[], \
               $5::BIGINT[]) AS q",
        )
        .persistent(false)
        .bind(self.queue_ids)
        .bind(self.seqs)
        .bind(self.bytes)
        .bind(self.sha256)
        .bind(self.queued_ms)
        .bind(at.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
