//! The tamper-evident audit log (HIPAA §164.312(b)): typed events, an RFC 6962 Merkle tree over
//! them, Ed25519-signed checkpoints in the C2SP `tlog-checkpoint` / signed-note form, a group-commit
//! writer, an export format, and offline verification.
//!
//! This crate chooses no database. Storage is the [`AuditStore`] trait; the `store` crate holds
//! its SQLite (and later PostgreSQL) implementations, and [`MemoryAuditStore`] is here for tests.
//!
//! How the pieces fit:
//! - [`event`]: [`AuditEvent`] (NIST SP 800-53 AU-3 fields, never prompt or completion text) and
//!   its canonical encoding, which is the Merkle leaf.
//! - [`merkle`]: tree hashes, inclusion and consistency proofs, and the O(log n) incremental
//!   [`merkle::TreeBuilder`].
//! - [`note`] and [`checkpoint`]: signed notes, signer and verifier keys, checkpoints.
//! - [`writer`]: [`Auditor`], which commits events in batches and signs checkpoints.
//! - [`witness`]: an append-only file of checkpoints, and [`witness::http`], the client of an
//!   external C2SP `tlog-witness` that cosigns each checkpoint given a consistency proof.
//! - [`cosignature`]: witness cosignatures (C2SP `tlog-cosignature`) and witness keys.
//! - [`export`] and [`verify`]: the JSON Lines export and the offline verifier.
//! - [`keyfile`]: writing and loading signing and verifier keys.
//! - [`shared`], [`queue_tag`] and [`quarantine`]: a log many instances write (a queue whose
//!   rows each instance tags, a sequencer lease), and what sequencing does with a queued row
//!   this release cannot read or whose tag does not verify.
//!
//! Retention: audit rows are kept at least [`AUDIT_RETENTION_MIN`]. No API in this crate or in
//! [`AuditStore`] deletes or rewrites an entry or a checkpoint, at any age; the SQLite schema
//! also refuses `UPDATE` and `DELETE` on the audit tables. Removing entries older than the
//! retention period is an operator's offline task (an archive of the export, then a new log),
//! deliberately not something a running gateway can be asked to do.
//!
//! The Merkle tree and the note format are written here rather than taken from a crate: the
//! crates that implement RFC 6962 proofs either do not also speak C2SP signed notes and
//! checkpoints in this exact form, or pull in a tile-serving stack this log does not need. The
//! cryptographic primitives themselves are not hand-written: SHA-256 is `sha2`, HMAC is `hmac`,
//! Ed25519 is `ed25519-dalek`, base64 is `base64`.

pub mod causes;
pub mod checkpoint;
pub mod cosignature;
pub mod event;
pub mod export;
pub mod keyfile;
pub mod memory;
pub mod merkle;
pub mod metrics;
pub mod note;
pub mod quarantine;
pub mod queue_tag;
pub mod shared;
pub mod store;
pub mod verify;
pub mod witness;
pub mod writer;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::time::Duration;

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use cosignature::CosignerKey;
pub use event::{
    ActorKind, AuditEvent, AuthMethod, EventError, EventType, Outcome, Severity, Timestamp,
};
pub use memory::MemoryAuditStore;
pub use merkle::Hash;
pub use note::{SignerKey, VerifierKey};
pub use quarantine::QuarantinedRow;
pub use shared::{Lease, PendingEvent, Sequenced, SharedLog};
pub use store::{AuditEntry, AuditFilter, AuditStore, AuditStoreError, StoredCheckpoint};
pub use verify::{VerifyError, VerifyReport};
pub use witness::http::{HttpWitness, HttpWitnessConfig, WitnessStatus};
pub use writer::{
    AuditError, AuditFault, Auditor, AuditorConfig, DEFAULT_NEWER_RELEASE_BACKOFF,
    NEWER_RELEASE_BACKOFF_BOUNDS, ROLLBACK_ALERT, STALL_ALERT, STALL_LEASES, SequencerConfig,
    WRONG_KEY_ALERT,
};

/// The shortest time an audit entry is kept: six years (HIPAA §164.316(b)(2)(i)), counted as
/// 6 × 365 days plus the two leap days any six-year span can hold, so that no calendar
/// interpretation of "six years" is cut short.
pub const AUDIT_RETENTION_MIN: Duration = Duration::from_secs((6 * 365 + 2) * 24 * 60 * 60);

/// The cause of an unavailable store, whatever the backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
