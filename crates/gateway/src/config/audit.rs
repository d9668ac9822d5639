//! `[audit]`: the tamper-evident audit log, validated.

use std::path::PathBuf;
use std::time::Duration;

/// Audit settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditSettings {
    /// The Ed25519 signing key of checkpoints; created on first start if missing.
    pub signing_key_file: PathBuf,
    /// The append-only file each checkpoint is also written to.
    pub witness_file: PathBuf,
    /// The log's name in checkpoints.
    pub origin: String,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// How durable an audit commit is before the request goes on (the store applies it).
    pub durability: wardgate_store::AuditDurability,
}
