//! The gateway's side of the audit log: starting the writer from configuration, and the
//! start-of-request commit made before any backend is called. The terminal event of every
//! request is written by `record.rs` when the response ends.
//!
//! Invariant: the audit log cannot be switched off in `wardgate serve` (ONC 170.315(d)(2));
//! `AppState::audit` is `None` only in library tests that build a state without one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wardgate_audit::keyfile::{read_signer_key, write_signer_key};
use wardgate_audit::{AuditStore, Auditor, AuditorConfig, EventType, SignerKey};

use crate::error::ApiError;
use crate::record::RequestRecord;
use crate::state::AppState;

/// Audit settings, validated.
#[derive(Clone, Debug)]
pub struct AuditSettings {
    /// The Ed25519 signing key of checkpoints; created on first start if missing.
    pub signing_key_file: PathBuf,
    /// The append-only file each checkpoint is also written to.
    pub witness_file: PathBuf,
    /// The log's name in checkpoints.
    pub origin: String,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("audit signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot start the audit log: {0}")]
    Writer(#[from] wardgate_audit::AuditError),
}

/// Reads the signing key, creating it (mode 0600) when the file does not exist yet.
pub fn load_or_create_key(path: &Path, origin: &str) -> Result<(SignerKey, bool), StartError> {
    let err = |reason: String| StartError::Key {
        path: path.display().to_string(),
        reason,
    };
    if path.exists() {
        let key = read_signer_key(path).map_err(|e| err(e.to_string()))?;
        return Ok((key, false));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    let key = SignerKey::generate(origin).map_err(|e| err(e.to_string()))?;
    write_signer_key(path, &key).map_err(|e| err(e.to_string()))?;
    Ok((key, true))
}

/// Starts the audit writer on `store`.
pub async fn start(
    settings: &AuditSettings,
    store: Arc<dyn AuditStore>,
) -> Result<Auditor, StartError> {
    let (key, created) = load_or_create_key(&settings.signing_key_file, &settings.origin)?;
    if created {
        tracing::warn!(
            path = %settings.signing_key_file.display(),
            "created a new audit signing key; give auditors its public key (`wardgate audit \
             public-key`) and keep the key file safe"
        );
    }
    if let Some(dir) = settings
        .witness_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| StartError::Key {
            path: settings.witness_file.display().to_string(),
            reason: format!("cannot create the witness file's directory: {e}"),
        })?;
    }
    let config = AuditorConfig {
        origin: settings.origin.clone(),
        checkpoint_every: settings.checkpoint_every,
        checkpoint_interval: settings.checkpoint_interval,
        witness_path: Some(settings.witness_file.clone()),
        ..AuditorConfig::default()
    };
    Ok(Auditor::start(store, key, config).await?)
}

/// Commits the start of a request that is about to reach a backend. When the log cannot
/// commit, the request fails closed with 503 and the backend is never called.
pub(crate) async fn commit_start(state: &AppState, record: &RequestRecord) -> Result<(), ApiError> {
    let Some(audit) = &state.audit else {
        return Ok(());
    };
    let event = record.audit_event(EventType::RequestStart);
    audit.append(event).await.map(drop).map_err(|e| {
        tracing::error!(error = %e, "audit start commit failed; request refused");
        ApiError::AuditUnavailable
    })
}
