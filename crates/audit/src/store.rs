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

use crate::BoxError;
use crate::event::{self, AuditEvent, EventError, EventType, Outcome, Timestamp};
use crate::merkle::{self, Hash};

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

/// Storage for the audit log. Implementations: `wardgate_store`'s `SqliteStore` and `PgStore`,
/// and [`crate::MemoryAuditStore`]. The backend-neutral conformance suite is
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
