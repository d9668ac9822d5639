//! `[audit]`: the tamper-evident audit log, validated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use wardgate_audit::witness::http::{self as witness_http, HttpWitnessConfig};
use wardgate_audit::{CosignerKey, VerifierKey};
use wardgate_store::AuditDurability;

use super::{ConfigError, HumanDuration, duration};

/// Audit settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditSettings {
    /// The Ed25519 signing key of checkpoints; created on first start if missing.
    pub signing_key_file: PathBuf,
    /// The signing key itself, from `$WARDGATE_AUDIT_SIGNING_KEY` (never from the file): how
    /// every instance of a scaled-out deployment gets the same key. Wins over the file.
    pub signing_key: Option<SigningKeySecret>,
    /// The append-only file each checkpoint is also written to.
    pub witness_file: PathBuf,
    /// The C2SP witness each checkpoint is also submitted to, when one is configured.
    pub witness: Option<HttpWitnessConfig>,
    /// The log's name in checkpoints.
    pub origin: String,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// How long an instance stays off the sequencer lease of a shared log after it met a
    /// queued event from a newer release (`wardgate_audit::quarantine`).
    pub newer_release_backoff: Duration,
    /// How durable an audit commit is before the request goes on (the store applies it).
    pub durability: AuditDurability,
}

/// The environment variable that holds the checkpoint signing key itself (the text of a key
/// file made by `wardgate audit keygen`).
pub const SIGNING_KEY_VAR: &str = "WARDGATE_AUDIT_SIGNING_KEY";

/// A signing key given as text: never printed, compared by value only to tell a reload
/// whether the setting changed.
#[derive(Clone)]
pub struct SigningKeySecret(pub std::sync::Arc<wardgate_store::Secret<String>>);

impl std::fmt::Debug for SigningKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKeySecret([redacted])")
    }
}

impl PartialEq for SigningKeySecret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(
            self.0
                .expose()
                .as_bytes()
                .ct_eq(other.0.expose().as_bytes()),
        )
    }
}

// The defaults of `[audit]`, one per field; the doc comments of [`RawAudit`] quote them.
// (`durability`'s is `AuditDurability::default()`, the store's.)

/// Default of `audit.signing_key_file`'s name, beside the SQLite database.
pub const DEFAULT_SIGNING_KEY_FILE: &str = "audit-signing.key";
/// Default of `audit.witness_file`'s name, beside the SQLite database.
pub const DEFAULT_WITNESS_FILE: &str = "audit-witness.log";
/// Default of `audit.origin`.
pub const DEFAULT_ORIGIN: &str = "wardgate/audit";
/// Default of `audit.checkpoint_every`.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
/// Default of `audit.checkpoint_interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// Default of `audit.witness_timeout`.
pub const DEFAULT_WITNESS_TIMEOUT: Duration = witness_http::DEFAULT_TIMEOUT;

/// Default of `audit.newer_release_backoff`.
pub const DEFAULT_NEWER_RELEASE_BACKOFF: Duration = wardgate_audit::DEFAULT_NEWER_RELEASE_BACKOFF;

/// The tamper-evident audit log. It has no off switch.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// The Ed25519 key that signs checkpoints, created (mode 0600) on first start when
    /// missing. Default `audit-signing.key` beside the SQLite database.
    pub signing_key_file: Option<PathBuf>,
    /// Append-only file receiving a copy of every checkpoint, standing in for an external
    /// witness. Default `audit-witness.log` beside the SQLite database.
    pub witness_file: Option<PathBuf>,
    /// A C2SP `tlog-witness` (its submission prefix) that every checkpoint is also submitted
    /// to, with a consistency proof, for its cosignature: `https://`, or `http://` to a
    /// loopback address. Default: none.
    pub witness_url: Option<String>,
    /// The most one submission to the witness may take. Default `5s`, at most `60s`.
    pub witness_timeout: Option<HumanDuration>,
    /// The witness's public key (`<name>+<key id>+<key>`, as the witness prints it): when set,
    /// a submission counts only if the witness's cosignature verifies. Default: not checked.
    pub witness_key: Option<String>,
    /// The log's name, the first line of each checkpoint. Default `wardgate/audit`.
    pub origin: Option<String>,
    /// Sign a checkpoint after this many events. Default 1000.
    pub checkpoint_every: Option<u64>,
    /// ... or after this long when anything was appended. Default `10s`.
    pub checkpoint_interval: Option<HumanDuration>,
    /// PostgreSQL: how long an instance stays off the sequencer lease after it met a queued
    /// event written by a newer release (during a rolling upgrade), so that an instance of
    /// that release takes the lease and sequences it. 100 ms to 1 h; default `30s`.
    pub newer_release_backoff: Option<HumanDuration>,
    /// `disk` (default: every append flushed to the disk before it returns; survives power
    /// loss) or `process` (handed to the OS; survives the gateway dying, not power loss).
    #[serde(default, with = "durability", skip_serializing_if = "Option::is_none")]
    pub durability: Option<AuditDurability>,
}

/// `[audit]`, validated; its files default to beside the database.
pub(super) fn audit(
    raw: &RawAudit,
    sqlite_path: &Path,
    env: super::EnvLookup<'_>,
) -> Result<AuditSettings, ConfigError> {
    let beside_db = |name: &str| {
        sqlite_path
            .parent()
            .map(|d| d.join(name))
            .unwrap_or_else(|| PathBuf::from(name))
    };
    let audit = AuditSettings {
        signing_key_file: raw
            .signing_key_file
            .clone()
            .unwrap_or_else(|| beside_db(DEFAULT_SIGNING_KEY_FILE)),
        signing_key: env(SIGNING_KEY_VAR)
            .filter(|v| !v.trim().is_empty())
            .map(|v| SigningKeySecret(std::sync::Arc::new(wardgate_store::Secret::new(v)))),
        witness_file: raw
            .witness_file
            .clone()
            .unwrap_or_else(|| beside_db(DEFAULT_WITNESS_FILE)),
        witness: http_witness(raw)?,
        origin: raw
            .origin
            .clone()
            .unwrap_or_else(|| DEFAULT_ORIGIN.to_owned()),
        checkpoint_every: match raw.checkpoint_every {
            Some(0) => {
                return Err(ConfigError::new(
                    "audit.checkpoint_every",
                    "must be greater than zero",
                ));
            }
            Some(n) => n,
            None => DEFAULT_CHECKPOINT_EVERY,
        },
        checkpoint_interval: duration(
            "audit.checkpoint_interval",
            raw.checkpoint_interval.as_deref(),
            DEFAULT_CHECKPOINT_INTERVAL,
        )?,
        newer_release_backoff: duration(
            "audit.newer_release_backoff",
            raw.newer_release_backoff.as_deref(),
            DEFAULT_NEWER_RELEASE_BACKOFF,
        )?,
        durability: raw.durability.unwrap_or_default(),
    };
    // The longest is checked with every other maximum (`check_maxima`).
    if audit.newer_release_backoff < wardgate_audit::NEWER_RELEASE_BACKOFF_BOUNDS.0 {
        return Err(ConfigError::new(
            "audit.newer_release_backoff",
            "must be at least 100ms",
        ));
    }
    if audit.origin.is_empty()
        || audit.origin.len() > 256
        || audit.origin.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(ConfigError::new(
            "audit.origin",
            "must be 1-256 printable characters without spaces",
        ));
    }
    Ok(audit)
}

/// `audit.witness_url`, `audit.witness_timeout` and `audit.witness_key`, validated by the audit
/// crate's own checks.
fn http_witness(raw: &RawAudit) -> Result<Option<HttpWitnessConfig>, ConfigError> {
    let timeout = duration(
        "audit.witness_timeout",
        raw.witness_timeout.as_deref(),
        DEFAULT_WITNESS_TIMEOUT,
    )?;
    witness_http::check_timeout(timeout)
        .map_err(|e| ConfigError::new("audit.witness_timeout", e))?;
    let key = match raw.witness_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(CosignerKey::parse(text).map_err(|e| {
            let hint = if VerifierKey::parse(text).is_ok() {
                "this is a note verifier key (type 0x01, like the log's own), not a witness's \
                 cosignature key (type 0x04)"
            } else {
                "expected <name>+<key id>+<base64 key> as the witness prints it"
            };
            ConfigError::new(
                "audit.witness_key",
                format!("not a witness public key ({e}); {hint}"),
            )
        })?),
    };
    let Some(url) = raw
        .witness_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        if key.is_some() {
            return Err(ConfigError::new(
                "audit.witness_key",
                "a witness key needs a witness: set audit.witness_url too",
            ));
        }
        return Ok(None);
    };
    witness_http::check_url(url).map_err(|e| ConfigError::new("audit.witness_url", e))?;
    Ok(Some(HttpWitnessConfig {
        url: url.to_owned(),
        timeout,
        key,
    }))
}

/// `audit.durability` as its word, read with the store's own parser (and its refusal text).
mod durability {
    use serde::{Deserialize, Deserializer, Serializer};
    use wardgate_store::AuditDurability;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<AuditDurability>, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(v: &Option<AuditDurability>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(d.as_str()),
            None => s.serialize_none(),
        }
    }
}
