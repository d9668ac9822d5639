//! `SharedLog`: an audit log written by many gateway instances at once, in the way Trillian
//! runs its logs (google/trillian: `QueueLeaves`, then a sequencer that integrates the queue).
//!
//! A Merkle log needs one order, and the tree lives in one process's memory. So writing is split
//! in two:
//! - **Queueing.** Every instance commits its events durably into an unsequenced queue before it
//!   answers; that commit is the one a request waits for (and the one that fails closed). Queued
//!   events have a queue id, no sequence number yet, and are already tamper-evident only in the
//!   sense that the database holds them: until they are sequenced, `audit query` shows them as
//!   pending and `verify` counts them. Each row carries a tag made with a key derived from the
//!   log's signing key ([`crate::queue_tag`]), so a row nobody with the key queued, or one
//!   rewritten in the database, is never sequenced as an event.
//! - **Sequencing.** One instance at a time holds the sequencer lease: a row with a holder, an
//!   epoch that grows with every change of holder, and an expiry in the database's clock. The
//!   holder moves queued events into the log in batches (in one transaction fenced by the lease:
//!   the transaction locks the lease row and checks that it still holds it, so a sequencer whose
//!   lease ran out cannot commit after its successor started), extends its tree and signs
//!   checkpoints. When the holder dies, its lease expires and another instance takes it over
//!   within one lease time; the new holder rebuilds the tree from the latest checkpoint and the
//!   stored leaf hashes, so the log stays one consistent tree. Before it signs over entries it
//!   did not sequence itself, it checks their tags; and it never rebuilds a tree smaller than
//!   one it has seen (`crate::writer`'s record of what each instance saw).
//!
//! A queued row this release cannot decode does not stop the log: one from a newer release
//! (a rolling upgrade) is left for an instance of that release, and one no release can read is
//! set aside into a quarantine table, with an event in its place ([`crate::quarantine`]).
//!
//! A row lease rather than a PostgreSQL advisory lock: an advisory lock belongs to a database
//! session, and through a transaction-pooling PgBouncer a session is not the client's. Every
//! lease operation here is one statement or one transaction.

use std::time::Duration;

use crate::event::AuditEvent;
use crate::merkle::Hash;
use crate::quarantine::{Held, QuarantinedRow};
use crate::queue_tag::QueueKey;
use crate::store::{AuditEntry, AuditFilter, AuditStore, AuditStoreError};

/// The sequencer lease as its holder knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it: unique per process (`wardgate serve` uses host, pid and a random part).
    pub holder: String,
    /// Grows by one every time the lease changes hands (or is taken again after it lapsed).
    /// The fencing token: a sequencing transaction checks holder and epoch both.
    pub epoch: u64,
}

/// An event in the queue, not yet in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEvent {
    /// Its queue id: unique, grows with time, but not its place in the log.
    pub id: u64,
    /// The event.
    pub event: AuditEvent,
}

/// An entry of the log as stored, with its tag ([`SharedLog::tagged_leaves`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedLeaf {
    /// Its sequence number.
    pub seq: u64,
    /// Its leaf, exactly as stored.
    pub leaf: Vec<u8>,
    /// Its stored leaf hash.
    pub leaf_hash: Hash,
    /// The tag kept beside it; `None` for an entry without one (a direct append).
    pub tag: Option<Hash>,
}

/// What a sequencing pass did.
#[derive(Debug)]
pub enum Sequenced {
    /// These queued events are now entries of the log (possibly none: the queue was empty).
    Entries(Vec<AuditEntry>),
    /// The caller no longer holds the lease; nothing was sequenced.
    LeaseLost,
    /// The log does not end where the caller's tree does: it holds `size` entries, not the
    /// `at` the caller gave. Something other than this holder wrote (or removed) entries since
    /// its tree was built — a row planted in the log by someone with write access to the
    /// database. Nothing was sequenced: the caller checks the log before writing on top of it.
    Moved {
        /// The entries the log holds.
        size: u64,
    },
    /// These queued events are now entries of the log (possibly none), and then sequencing
    /// stopped at queued row `queue_id`, which is from a newer release of wardgate
    /// ([`crate::quarantine`]): it and every row after it are still queued, for an instance
    /// of that release.
    NewerRelease {
        /// What was sequenced before the row.
        entries: Vec<AuditEntry>,
        /// The row's queue id.
        queue_id: u64,
        /// What this release could not read in it.
        what: String,
    },
}

impl Sequenced {
    /// What a pass that sequenced `entries` did: all it could, or up to the row from a newer
    /// release it was `held` at.
    pub fn ended(entries: Vec<AuditEntry>, held: Option<Held>) -> Self {
        match held {
            None => Sequenced::Entries(entries),
            Some(held) => Sequenced::NewerRelease {
                entries,
                queue_id: held.queue_id,
                what: held.what,
            },
        }
    }
}

/// An audit log that many writers share: the [`AuditStore`] reads and checkpoints, plus the
/// queue and the sequencer lease. Implemented by `wardgate_store`'s PostgreSQL store and by
/// [`crate::MemoryAuditStore`]; the conformance suite is `crate::conformance::shared_suite`.
#[async_trait::async_trait]
pub trait SharedLog: AuditStore {
    /// Commits `events` to the queue in one transaction (all or none), each row tagged with
    /// `key` ([`crate::queue_tag`]), and returns their queue ids in order. Each event must pass
    /// [`AuditEvent::validate`]; at most [`crate::store::MAX_APPEND_BATCH`].
    async fn enqueue(
        &self,
        events: Vec<AuditEvent>,
        key: &QueueKey,
    ) -> Result<Vec<u64>, AuditStoreError>;

    /// Events in the queue.
    async fn pending_count(&self) -> Result<u64, AuditStoreError>;

    /// When the oldest queued row was queued (Unix ms, the queuing instance's clock); `None`
    /// when the queue is empty. The sequencer's lag is its age.
    async fn oldest_pending_ms(&self) -> Result<Option<i64>, AuditStoreError>;

    /// Queued events matching `filter` (its `after_seq` is ignored: they have no sequence
    /// number), by queue id, at most its effective limit. Rows this release cannot read as
    /// events (from a newer release, or unreadable) match no filter: [`Self::pending_count`]
    /// counts them, and sequencing deals with them.
    async fn pending(&self, filter: &AuditFilter) -> Result<Vec<PendingEvent>, AuditStoreError>;

    /// Takes the sequencer lease for `holder`, or extends it if `holder` holds it, for `ttl`
    /// from now (the store's clock). `None` while another holder's lease is unexpired.
    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, AuditStoreError>;

    /// Gives the lease up at once if `lease` still holds it (a clean shutdown), so the next
    /// sequencer need not wait for it to expire.
    async fn release_lease(&self, lease: &Lease) -> Result<(), AuditStoreError>;

    /// In one transaction that holds `lease` (or does nothing and says `LeaseLost`), and only
    /// if the log holds exactly `at` entries (the caller's tree; else does nothing and says
    /// `Moved`): takes up to
    /// `max` of the oldest queued rows, in queue order, as [`crate::quarantine::plan`] says
    /// with `key`: appends each event at the next sequence number, with its tag beside it;
    /// moves each unauthenticated or unreadable row into the quarantine table, appending its
    /// quarantine event in its place; stops before a row from a newer release
    /// (`NewerRelease`). Every row taken leaves the queue in that transaction.
    async fn sequence(
        &self,
        lease: &Lease,
        at: u64,
        max: usize,
        key: &QueueKey,
    ) -> Result<Sequenced, AuditStoreError>;

    /// The entries from `start` as stored, leaf bytes and all, each with the tag kept beside
    /// it ([`crate::queue_tag`]), in order, at most `limit` (capped at
    /// [`crate::store::MAX_READ`]). Leaves are not decoded: an entry of a newer release is
    /// returned like any other.
    async fn tagged_leaves(
        &self,
        start: u64,
        limit: u32,
    ) -> Result<Vec<TaggedLeaf>, AuditStoreError>;

    /// Where the log's entries carry any of `tags` ([`crate::queue_tag`]): `(tag, seq)` for each
    /// such entry, in no particular order. A genuine queued row is sequenced once, so a tag
    /// found at two positions, or on an entry and on a queued row, marks a replay.
    async fn tag_positions(&self, tags: &[Hash]) -> Result<Vec<(Hash, u64)>, AuditStoreError>;

    /// The rows sequencing set aside, by queue id, those after `after_queue_id`, at most
    /// `limit` (capped at [`crate::store::MAX_READ`]).
    async fn quarantined(
        &self,
        after_queue_id: u64,
        limit: u32,
    ) -> Result<Vec<QuarantinedRow>, AuditStoreError>;
}
