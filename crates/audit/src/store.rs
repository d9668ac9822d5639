//! `AuditStore`: the storage capability the audit log needs, shaped so SQLite and PostgreSQL
//! can both implement it, plus [`MemoryAuditStore`] for tests.
//!
//! The store assigns sequence numbers (the next one is the current size) inside the append's
//! transaction, builds each entry's canonical leaf with this crate's encoding, and stores the
//! leaf bytes and leaf hash. It never interprets an entry beyond the indexed columns it keeps
//! for queries, and it has no way to update or delete an entry or a checkpoint: retention is at
//! least [`crate::AUDIT_RETENTION_MIN`], and nothing in a running gateway may shorten it.
//!
//! "Exactly one terminal event per request": a request writes a `request_start` event (no
//! outcome) before its backend call and one terminal `request` event with the same
//! `request_id` when its response ends. Both are ordinary entries in the tree, so the start is
//! as tamper-evident as the end; a start with no terminal event marks a request whose gateway
//! died mid-flight, and `AuditFilter::request_id` finds the pair.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::BoxError;
use crate::event::{self, AuditEvent, EventError, EventType, Outcome, Timestamp};
use crate::merkle::{self, Hash};
use crate::shared::{Lease, PendingEvent, Sequenced, SharedLog};

/// The most events one `append` takes.
pub const MAX_APPEND_BATCH: usize = 10_000;
/// The most rows one read or query returns.
pub const MAX_READ: u32 = 10_000;
/// The query limit when none is given.
pub const DEFAULT_QUERY_LIMIT: u32 = 100;

/// Why an audit store call failed. Messages carry no event contents.
#[derive(Debug, thiserror::Error)]
pub enum AuditStoreError {
    /// The backend failed or could not be reached. Writers must fail closed.
    #[error("audit storage unavailable")]
    Unavailable(#[source] BoxError),
    /// The caller's input was refused; the message says why.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A stored entry cannot be read back as a canonical event (damage or tampering).
    #[error("audit entry {seq} is corrupt: {what}")]
    Corrupt {
        /// The entry's position.
        seq: u64,
        /// What is wrong with it.
        what: String,
    },
    /// A checkpoint for this size already exists with a different root.
    #[error("conflict: {0}")]
    Conflict(String),
}

impl From<EventError> for AuditStoreError {
    fn from(e: EventError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// One log entry: its position, the event, and the leaf hash the store holds for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
    /// `SHA-256(0x00 || canonical leaf)`, as stored (a verifier recomputes it).
    pub leaf_hash: Hash,
}

impl AuditEntry {
    /// The entry for `event` at `seq`, with its canonical leaf bytes (what a store keeps).
    pub fn prepare(seq: u64, event: AuditEvent) -> (Self, Vec<u8>) {
        let leaf = event::encode_leaf(seq, &event);
        let leaf_hash = merkle::leaf_hash(&leaf);
        (
            Self {
                seq,
                event,
                leaf_hash,
            },
            leaf,
        )
    }

    /// Reads back a stored row: the leaf must be canonical and name the same `seq`, and the
    /// hash must be 32 bytes. The stored hash is returned as stored, not recomputed, so a
    /// verifier can tell a changed leaf from a changed hash.
    pub fn from_stored(seq: u64, leaf: &[u8], leaf_hash: &[u8]) -> Result<Self, AuditStoreError> {
        let corrupt = |what: String| AuditStoreError::Corrupt { seq, what };
        let (leaf_seq, event) = event::decode_leaf(leaf).map_err(|e| corrupt(e.to_string()))?;
        if leaf_seq != seq {
            return Err(corrupt(format!("leaf says seq {leaf_seq}")));
        }
        let leaf_hash = Hash::from_slice(leaf_hash)
            .ok_or_else(|| corrupt("leaf hash is not 32 bytes".into()))?;
        Ok(Self {
            seq,
            event,
            leaf_hash,
        })
    }
}

/// A signed checkpoint as stored, with the writer's resume state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size it covers.
    pub size: u64,
    /// Tree head at that size.
    pub root: Hash,
    /// The signed note (C2SP checkpoint).
    pub note: String,
    /// The perfect-subtree roots at that size ([`crate::merkle::TreeBuilder::subtrees`]), so a
    /// restarted writer resumes without re-reading the whole log. Derived data: a verifier
    /// ignores it.
    pub subtrees: Vec<Hash>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// Which entries a query returns: all given conditions must hold. Results are in `seq` order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// `actor_id` equals.
    pub actor_id: Option<String>,
    /// `tenant` equals.
    pub tenant: Option<String>,
    /// `outcome` equals.
    pub outcome: Option<Outcome>,
    /// `event_type` equals.
    pub event_type: Option<EventType>,
    /// `request_id` equals (finds a request's start and terminal events).
    pub request_id: Option<String>,
    /// `ts >= since`.
    pub since: Option<Timestamp>,
    /// `ts < until`.
    pub until: Option<Timestamp>,
    /// `seq > after_seq`: for paging, pass the last seq of the previous page.
    pub after_seq: Option<u64>,
    /// At most this many (default [`DEFAULT_QUERY_LIMIT`], at most [`MAX_READ`]).
    pub limit: Option<u32>,
}

impl AuditFilter {
    /// Whether `entry` satisfies every condition but the limit.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.matches_event(&entry.event) && self.after_seq.is_none_or(|a| entry.seq > a)
    }

    /// Whether `e` satisfies every condition but the limit and `after_seq` (for events that
    /// have no sequence number yet, such as a shared log's queued ones).
    pub fn matches_event(&self, e: &AuditEvent) -> bool {
        self.actor_id.as_ref().is_none_or(|a| *a == e.actor_id)
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| e.tenant.as_ref() == Some(t))
            && self.outcome.is_none_or(|o| e.outcome == Some(o))
            && self.event_type.is_none_or(|t| e.event_type == t)
            && self
                .request_id
                .as_ref()
                .is_none_or(|r| e.request_id.as_ref() == Some(r))
            && self.since.is_none_or(|s| e.ts >= s)
            && self.until.is_none_or(|u| e.ts < u)
    }

    /// The effective limit.
    pub fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_QUERY_LIMIT).clamp(1, MAX_READ)
    }
}

/// Storage for the audit log. Implementations: `wardgate_store::SqliteStore` (and a PostgreSQL
/// one later), and [`MemoryAuditStore`]. The backend-neutral conformance suite is
/// `wardgate_audit::conformance` (feature `conformance`).
///
/// There is deliberately no method that updates or deletes entries or checkpoints.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `events` in one transaction, at consecutive sequence numbers starting at the
    /// current size, and returns the entries as stored. All or nothing: on `Err` none was
    /// stored (unless the failure hid a commit, when the caller learns the truth from `size`).
    /// Each event must pass [`AuditEvent::validate`]; at most [`MAX_APPEND_BATCH`] events.
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError>;

    /// Entries in the log.
    async fn size(&self) -> Result<u64, AuditStoreError>;

    /// Entries with `seq >= start`, in order, at most `limit` (capped at [`MAX_READ`]).
    async fn read_range(&self, start: u64, limit: u32) -> Result<Vec<AuditEntry>, AuditStoreError>;

    /// The stored leaf hashes of entries from `start`, in order, at most `limit` (capped at
    /// [`MAX_READ`]). Cheaper than `read_range` when the events are not needed.
    async fn leaf_hashes(&self, start: u64, limit: u32) -> Result<Vec<Hash>, AuditStoreError>;

    /// Stores a checkpoint. Storing the same size and root again is a no-op; the same size with
    /// another root is `Conflict`.
    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), AuditStoreError>;

    /// Checkpoints with `size >= from_size`, by size, at most `limit` (capped at [`MAX_READ`]).
    async fn checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, AuditStoreError>;

    /// The checkpoint with the largest size, if any.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditStoreError>;

    /// Entries matching `filter`, in `seq` order, at most its effective limit.
    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditStoreError>;

    /// Whether `append` waits for the disk on the calling thread (a file SQLite connection that
    /// flushes every commit). The audit writer then runs on a thread of its own, where such a
    /// store may block inline (see [`blocking_allowed`]): it holds up nobody but the writer,
    /// which has nothing else to do meanwhile, and costs no hand-off to another thread and back
    /// per commit. Stores that await network IO, or whose commits never wait for the disk, keep
    /// the default, `false`.
    fn blocks(&self) -> bool {
        false
    }
}

thread_local! {
    static WRITER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is an audit writer's own thread, where a store whose
/// [`AuditStore::blocks`] is `true` may block instead of handing its IO to another thread.
/// Everywhere else (a runtime's worker threads above all) such a store must not block.
pub fn blocking_allowed() -> bool {
    WRITER_THREAD.with(std::cell::Cell::get)
}

/// Marks the calling thread as an audit writer's own thread (see [`blocking_allowed`]).
pub(crate) fn allow_blocking_on_this_thread() {
    WRITER_THREAD.with(|w| w.set(true));
}

/// Checks an append batch the way every store must.
pub fn check_batch(events: &[AuditEvent]) -> Result<(), AuditStoreError> {
    if events.len() > MAX_APPEND_BATCH {
        return Err(AuditStoreError::Invalid(format!(
            "at most {MAX_APPEND_BATCH} events per append"
        )));
    }
    for e in events {
        e.validate()?;
    }
    Ok(())
}

/// Checks a checkpoint the way every store must before storing it.
pub fn check_checkpoint(cp: &StoredCheckpoint) -> Result<(), AuditStoreError> {
    if merkle::TreeBuilder::from_parts(cp.size, cp.subtrees.clone())
        .is_none_or(|b| b.root() != cp.root)
    {
        return Err(AuditStoreError::Invalid(
            "checkpoint subtrees do not match its size and root".into(),
        ));
    }
    Ok(())
}

/// An in-memory `AuditStore`, for tests and examples. Holds everything in one mutex.
#[derive(Debug, Default)]
pub struct MemoryAuditStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: Vec<AuditEntry>,
    checkpoints: BTreeMap<u64, StoredCheckpoint>,
    /// The shared-log queue ([`crate::shared::SharedLog`]), by queue id.
    queue: BTreeMap<u64, AuditEvent>,
    next_queue_id: u64,
    /// The sequencer lease: holder, epoch, expiry.
    lease: Option<(String, std::time::Instant)>,
    lease_epoch: u64,
}

impl MemoryAuditStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, AuditStoreError> {
        self.inner
            .lock()
            .map_err(|_| AuditStoreError::Unavailable("memory store poisoned".into()))
    }
}

fn window<T: Clone>(items: &[T], start: u64, limit: u32) -> Vec<T> {
    let start = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(items.len());
    let limit = limit.min(MAX_READ) as usize;
    items[start..].iter().take(limit).cloned().collect()
}

#[async_trait::async_trait]
impl AuditStore for MemoryAuditStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        check_batch(&events)?;
        let mut inner = self.lock()?;
        let start = inner.entries.len() as u64;
        let entries: Vec<AuditEntry> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| AuditEntry::prepare(start + i as u64, e).0)
            .collect();
        inner.entries.extend(entries.iter().cloned());
        Ok(entries)
    }

    async fn size(&self) -> Result<u64, AuditStoreError> {
        Ok(self.lock()?.entries.len() as u64)
    }

    async fn read_range(&self, start: u64, limit: u32) -> Result<Vec<AuditEntry>, AuditStoreError> {
        Ok(window(&self.lock()?.entries, start, limit))
    }

    async fn leaf_hashes(&self, start: u64, limit: u32) -> Result<Vec<Hash>, AuditStoreError> {
        let inner = self.lock()?;
        Ok(window(&inner.entries, start, limit)
            .into_iter()
            .map(|e| e.leaf_hash)
            .collect())
    }

    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), AuditStoreError> {
        check_checkpoint(checkpoint)?;
        let mut inner = self.lock()?;
        if let Some(existing) = inner.checkpoints.get(&checkpoint.size) {
            return if existing.root == checkpoint.root {
                Ok(())
            } else {
                Err(AuditStoreError::Conflict(format!(
                    "a checkpoint of size {} with another root exists",
                    checkpoint.size
                )))
            };
        }
        inner
            .checkpoints
            .insert(checkpoint.size, checkpoint.clone());
        Ok(())
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, AuditStoreError> {
        Ok(self
            .lock()?
            .checkpoints
            .range(from_size..)
            .take(limit.min(MAX_READ) as usize)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditStoreError> {
        Ok(self
            .lock()?
            .checkpoints
            .last_key_value()
            .map(|(_, c)| c.clone()))
    }

    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditStoreError> {
        Ok(self
            .lock()?
            .entries
            .iter()
            .filter(|e| filter.matches(e))
            .take(filter.effective_limit() as usize)
            .cloned()
            .collect())
    }
}

#[async_trait::async_trait]
impl SharedLog for MemoryAuditStore {
    async fn enqueue(&self, events: Vec<AuditEvent>) -> Result<Vec<u64>, AuditStoreError> {
        check_batch(&events)?;
        let mut inner = self.lock()?;
        let mut ids = Vec::with_capacity(events.len());
        for e in events {
            inner.next_queue_id += 1;
            let id = inner.next_queue_id;
            inner.queue.insert(id, e);
            ids.push(id);
        }
        Ok(ids)
    }

    async fn pending_count(&self) -> Result<u64, AuditStoreError> {
        Ok(self.lock()?.queue.len() as u64)
    }

    async fn pending(&self, filter: &AuditFilter) -> Result<Vec<PendingEvent>, AuditStoreError> {
        Ok(self
            .lock()?
            .queue
            .iter()
            .filter(|(_, e)| filter.matches_event(e))
            .take(filter.effective_limit() as usize)
            .map(|(id, e)| PendingEvent {
                id: *id,
                event: e.clone(),
            })
            .collect())
    }

    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, AuditStoreError> {
        let mut inner = self.lock()?;
        let now = std::time::Instant::now();
        let held_by_us = match &inner.lease {
            Some((h, until)) if *until > now => {
                if h != holder {
                    return Ok(None);
                }
                true
            }
            _ => false,
        };
        if !held_by_us {
            inner.lease_epoch += 1;
        }
        inner.lease = Some((holder.to_owned(), now + ttl));
        Ok(Some(Lease {
            holder: holder.to_owned(),
            epoch: inner.lease_epoch,
        }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), AuditStoreError> {
        let mut inner = self.lock()?;
        if inner.lease_epoch == lease.epoch
            && inner
                .lease
                .as_ref()
                .is_some_and(|(h, _)| *h == lease.holder)
        {
            inner.lease = None;
        }
        Ok(())
    }

    async fn sequence(&self, lease: &Lease, max: usize) -> Result<Sequenced, AuditStoreError> {
        let mut inner = self.lock()?;
        let now = std::time::Instant::now();
        let held = inner.lease_epoch == lease.epoch
            && inner
                .lease
                .as_ref()
                .is_some_and(|(h, until)| *h == lease.holder && *until > now);
        if !held {
            return Ok(Sequenced::LeaseLost);
        }
        let ids: Vec<u64> = inner
            .queue
            .keys()
            .take(max.min(MAX_APPEND_BATCH))
            .copied()
            .collect();
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(event) = inner.queue.remove(&id) {
                let seq = inner.entries.len() as u64;
                let entry = AuditEntry::prepare(seq, event).0;
                inner.entries.push(entry.clone());
                entries.push(entry);
            }
        }
        Ok(Sequenced::Entries(entries))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::suite(&super::MemoryAuditStore::new()).await;
    }

    #[tokio::test]
    async fn memory_store_passes_the_shared_log_suite() {
        crate::conformance::shared_suite(&super::MemoryAuditStore::new()).await;
    }
}
