//! The gateway's side of the audit log: starting the writer from configuration, and the
//! service's own events (start-up, reload). The start-of-request commit made before any
//! backend is called is `handlers::before_backend`; the terminal event of every request is
//! written by `record.rs` when the response ends.
//!
//! Invariant: the audit log cannot be switched off (ONC 170.315(d)(2)): `AppState::audit` is
//! a required part of the state of both roles, `wardgate serve` and `wardgate llm`, and tests
//! run the same writer over an in-memory store (`app::Stores::in_memory`).

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wardgate_audit::keyfile::{read_signer_key, write_signer_key};
use wardgate_audit::{
    ActorKind, AuditEvent, AuditStore, Auditor, AuditorConfig, EventType, Outcome, SequencerConfig,
    SharedLog, SignerKey, Timestamp,
};

pub use crate::config::audit::AuditSettings;
use crate::config::audit::SIGNING_KEY_VAR;

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

/// Whether a file's permissions let users other than its owner read it (Unix).
fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// The audit log a role writes: one writer's own log (SQLite, or memory in tests), or a log
/// that every instance shares (PostgreSQL), where events are queued and one instance at a time
/// sequences them ([`wardgate_audit::shared`]).
#[derive(Clone)]
pub enum AuditLog {
    /// This process is the log's only writer.
    Single(Arc<dyn AuditStore>),
    /// Many instances write; each queues and takes its turn at sequencing.
    Shared(Arc<dyn SharedLog>),
}

impl AuditLog {
    /// The log for reading (queries, exports, verification).
    pub fn reader(&self) -> Arc<dyn AuditStore> {
        match self {
            AuditLog::Single(s) => s.clone(),
            AuditLog::Shared(s) => s.clone(),
        }
    }
}

/// Starts the audit writer on `log` with the configured signing key, witness file and HTTP
/// witness.
pub async fn start(settings: &AuditSettings, log: AuditLog) -> Result<Auditor, StartError> {
    let key = signing_key(settings, &log).await?;
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
        http_witness: settings.witness.clone(),
        ..AuditorConfig::default()
    };
    Ok(match log {
        AuditLog::Single(store) => Auditor::start(store, key, config).await?,
        AuditLog::Shared(store) => {
            if settings.witness.is_none() {
                warn_no_http_witness();
            }
            let sequencer = SequencerConfig {
                newer_release_backoff: settings.newer_release_backoff,
                ..SequencerConfig::new(&host_name())
            };
            Auditor::start_shared(store, key, config, sequencer).await?
        }
    })
}

/// The name of the warning a shared log with no HTTP witness logs at start.
pub const NO_HTTP_WITNESS_WARNING: &str = "audit_no_http_witness";

/// Says, once per start, that a shared log has no witness its database's owner cannot reach:
/// each instance's witness file holds only the checkpoints that instance signed, a new instance
/// has none (a scaled service without a disk loses it at every deploy), and whoever can write
/// the database can then rewrite history that no running instance saw.
fn warn_no_http_witness() {
    tracing::warn!(
        target: "wardgate::alert",
        alert = NO_HTTP_WITNESS_WARNING,
        "the shared audit log has no HTTP witness: only each instance's witness file keeps its \
         checkpoints, and an instance started on a new machine has none, so whoever can write \
         the database could rewrite audit history that no running instance has seen. Set \
         audit.witness_url (WARDGATE_AUDIT_WITNESS_URL) and audit.witness_key \
         (WARDGATE_AUDIT_WITNESS_KEY) to a witness outside the database's reach"
    );
}

/// This machine's name for the sequencer lease (so an operator can tell which instance holds
/// it); `wardgate` when it cannot be read.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wardgate".to_owned())
}

/// The checkpoint signing key: `$WARDGATE_AUDIT_SIGNING_KEY` if set, else the key file, made
/// on first start only for a single writer's empty log. Refused when it is not the key that
/// signed the log's last checkpoint.
async fn signing_key(settings: &AuditSettings, log: &AuditLog) -> Result<SignerKey, StartError> {
    let store = log.reader();
    let (key, source, created) = match &settings.signing_key {
        Some(secret) => {
            let key = SignerKey::parse(secret.0.expose().trim()).map_err(|e| StartError::Key {
                path: format!("${SIGNING_KEY_VAR}"),
                reason: format!(
                    "not a checkpoint signing key ({e}); set it to the contents of a key file \
                     made by `wardgate audit keygen`"
                ),
            })?;
            (key, format!("${SIGNING_KEY_VAR}"), false)
        }
        None => {
            let path = &settings.signing_key_file;
            let source = path.display().to_string();
            if !path.exists() {
                if let AuditLog::Shared(_) = log {
                    // Every instance must sign with one key, and a key made here would be this
                    // instance's alone.
                    return Err(StartError::Key {
                        path: source,
                        reason: format!(
                            "the file is missing. A shared audit log (PostgreSQL) is signed by \
                             whichever instance sequences it, so every instance needs the same \
                             key: make one with `wardgate audit keygen --out FILE` and give its \
                             contents to every instance as ${SIGNING_KEY_VAR} (or the file as \
                             audit.signing_key_file / WARDGATE_AUDIT_KEY)"
                        ),
                    });
                }
                refuse_new_key_for_old_log(settings, store.as_ref()).await?;
            }
            let (key, created) = load_or_create_key(path, &settings.origin)?;
            if readable_by_others(path) {
                tracing::warn!(
                    path = %path.display(),
                    "the audit signing key can be read by other users of this machine: anyone \
                     who reads it can sign checkpoints; make it readable by the service only \
                     (chmod 600)"
                );
            }
            (key, source, created)
        }
    };
    // The key must be the one that signed the log so far: another key (a file copied over it,
    // a stray key at the default path when a command runs without the server's config, another
    // instance's key) would sign on, and the log would fail verification with either key.
    let last = store
        .latest_checkpoint()
        .await
        .map_err(|e| StartError::Key {
            path: source.clone(),
            reason: format!("cannot read the audit log's last checkpoint: {e}"),
        })?;
    if let Some(last) = last
        && wardgate_audit::note::open(&last.note, &[key.verifier()]).is_err()
    {
        return Err(StartError::Key {
            path: source,
            reason: format!(
                "this key did not sign the audit log's last checkpoint (size {}): it is not \
                 the log's key. Point audit.signing_key_file / WARDGATE_AUDIT_KEY (or \
                 ${SIGNING_KEY_VAR}) at the key that signed this log (for `wardgate keys` and \
                 `wardgate audit`, pass the same --config as the server); nothing was written",
                last.size
            ),
        });
    }
    if created {
        tracing::warn!(
            path = %settings.signing_key_file.display(),
            "created a new audit signing key; give auditors its public key (`wardgate audit \
             public-key`) and keep the key file safe"
        );
    }
    Ok(key)
}

/// A log that already has entries was signed with a key that must still be there: a new key
/// would sign on silently, and the old checkpoints would no longer verify with the key the
/// auditors hold. Refuse, and say what to do.
async fn refuse_new_key_for_old_log(
    settings: &AuditSettings,
    store: &dyn AuditStore,
) -> Result<(), StartError> {
    let entries = store.size().await.map_err(|e| StartError::Key {
        path: settings.signing_key_file.display().to_string(),
        reason: format!("cannot read the audit log's size: {e}"),
    })?;
    if entries > 0 {
        return Err(StartError::Key {
            path: settings.signing_key_file.display().to_string(),
            reason: format!(
                "the file is missing, but the audit log already has {entries} entries \
                 signed with a key. Restore the key file (or point audit.signing_key_file / \
                 WARDGATE_AUDIT_KEY at it; for `wardgate keys` and `wardgate audit`, pass \
                 the same --config as the server). A new key is only made for an empty log"
            ),
        });
    }
    Ok(())
}

/// Whether an environment variable's value is a secret (only that it is set is digested).
fn is_secret_var(name: &str) -> bool {
    ["SECRET", "KEY", "TOKEN", "PASSWORD"]
        .iter()
        .any(|w| name.contains(w))
}

/// The digest of the configuration a run starts with: the config file's bytes and every
/// `WARDGATE_*` environment variable (secrets by name only), in a fixed order.
pub fn config_digest(file: Option<&[u8]>, env: &[(String, String)]) -> String {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("WARDGATE_"))
        .collect();
    vars.sort();
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    part(file.unwrap_or_default());
    for (k, v) in vars {
        part(k.as_bytes());
        part(if is_secret_var(k) {
            b"<set>"
        } else {
            v.as_bytes()
        });
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a configuration read from `file` (its bytes, if any) and the `WARDGATE_*`
/// variables of the process as `env` reads them (the start and every reload use it).
pub fn config_digest_of(file: Option<&[u8]>, env: &dyn Fn(&str) -> Option<String>) -> String {
    let vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("WARDGATE_"))
        .filter_map(|(k, _)| env(&k).map(|v| (k, v)))
        .collect();
    config_digest(file, &vars)
}

/// The `config_change` event that opens each run of the service, naming the configuration's
/// digest: a configuration changed between two runs shows as a new digest, and a run that
/// did not write this event did not start (the audit log cannot be switched off).
pub fn startup_event(digest: &str, tls: bool) -> AuditEvent {
    config_event(
        Outcome::Allow,
        format!(
            "service started; configuration sha256={digest}; tls={}",
            if tls { "on" } else { "off" }
        ),
    )
}

/// A `config_change` event by wardgate itself (start-up, a reload on SIGHUP).
pub fn config_event(outcome: Outcome, detail: String) -> AuditEvent {
    let mut e = AuditEvent::new(
        Timestamp::now(),
        EventType::ConfigChange,
        "wardgate",
        ActorKind::System,
    );
    e.outcome = Some(outcome);
    e.detail = Some(detail);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_digest_changes_with_the_config_but_not_with_secrets_or_other_variables() {
        let base = config_digest(
            Some(b"[server]\n"),
            &env(&[("WARDGATE_LISTEN", "0.0.0.0:8080"), ("HOME", "/root")]),
        );
        // Order and unrelated variables do not matter.
        assert_eq!(
            base,
            config_digest(
                Some(b"[server]\n"),
                &env(&[("PATH", "/bin"), ("WARDGATE_LISTEN", "0.0.0.0:8080")])
            )
        );
        assert_ne!(
            base,
            config_digest(
                Some(b"[server]\n"),
                &env(&[("WARDGATE_LISTEN", "0.0.0.0:9090")])
            )
        );
        assert_ne!(
            base,
            config_digest(
                Some(b"[limits]\n"),
                &env(&[("WARDGATE_LISTEN", "0.0.0.0:8080")])
            )
        );
        // A secret's value is not digested (so the digest reveals nothing about it), only
        // that it is set.
        let with_secret = |v: &str| {
            config_digest(
                Some(b"[server]\n"),
                &env(&[
                    ("WARDGATE_LISTEN", "0.0.0.0:8080"),
                    ("WARDGATE_BACKEND_SECRET", v),
                ]),
            )
        };
        assert_eq!(with_secret("one"), with_secret("two"));
        assert_ne!(with_secret("one"), base);
        assert_eq!(base.len(), 64);
    }

    /// A deleted signing key is not replaced while the log has entries (a black-box finding:
    /// the next start made a new key and signed on, so the log no longer verified with the key
    /// the auditors held); an empty log still gets its key made on first start.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_missing_key_is_made_for_an_empty_log_and_refused_for_one_with_entries() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSettings {
            signing_key_file: dir.path().join("audit-signing.key"),
            witness_file: dir.path().join("audit-witness.log"),
            witness: None,
            origin: "wardgate-test/audit".into(),
            checkpoint_every: 1000,
            checkpoint_interval: std::time::Duration::from_secs(10),
            newer_release_backoff: std::time::Duration::from_secs(30),
            durability: wardgate_store::AuditDurability::Disk,
            signing_key: None,
        };
        let store: Arc<dyn AuditStore> = Arc::new(wardgate_audit::MemoryAuditStore::new());
        let auditor = start(&settings, AuditLog::Single(store.clone()))
            .await
            .unwrap();
        auditor
            .append(startup_event("digest", false))
            .await
            .unwrap();
        auditor.shutdown().await.unwrap();

        assert!(
            !readable_by_others(&settings.signing_key_file),
            "a new key is made readable by its owner only"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let open = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(&settings.signing_key_file, open).unwrap();
            assert!(readable_by_others(&settings.signing_key_file));
        }
        std::fs::remove_file(&settings.signing_key_file).unwrap();
        let refused = start(&settings, AuditLog::Single(store.clone()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("the file is missing"), "{refused}");
        assert!(refused.contains("already has"), "{refused}");
        assert!(!settings.signing_key_file.exists(), "no new key was made");

        // Another key in its place (copied over it, or a stray one at the default path) is
        // refused too: it did not sign the log's last checkpoint.
        let other = SignerKey::generate(&settings.origin).unwrap();
        write_signer_key(&settings.signing_key_file, &other).unwrap();
        let refused = start(&settings, AuditLog::Single(store.clone()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("did not sign"), "{refused}");
        assert_eq!(store.size().await.unwrap(), 1, "nothing was written");
    }

    fn settings_in(dir: &Path) -> AuditSettings {
        AuditSettings {
            signing_key_file: dir.join("audit-signing.key"),
            witness_file: dir.join("audit-witness.log"),
            witness: None,
            origin: "wardgate-test/audit".into(),
            checkpoint_every: 1000,
            checkpoint_interval: std::time::Duration::from_secs(10),
            newer_release_backoff: std::time::Duration::from_secs(30),
            durability: wardgate_store::AuditDurability::Disk,
            signing_key: None,
        }
    }

    fn key_text(key: &SignerKey) -> crate::config::audit::SigningKeySecret {
        crate::config::audit::SigningKeySecret(Arc::new(wardgate_store::Secret::new(
            key.to_private_string().to_string(),
        )))
    }

    /// A shared log (every instance signs with one key) never gets a key made by one instance:
    /// without `$WARDGATE_AUDIT_SIGNING_KEY` or a key file, it refuses and says how to make one.
    /// With the key in the environment, every instance signs the one log, and a different key
    /// is refused.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_shared_log_takes_its_key_from_the_environment_and_never_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(wardgate_audit::MemoryAuditStore::new());
        let mut settings = settings_in(dir.path());
        let refused = start(&settings, AuditLog::Shared(store.clone()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("every instance needs the same key"),
            "{refused}"
        );
        assert!(refused.contains(SIGNING_KEY_VAR), "{refused}");
        assert!(!settings.signing_key_file.exists(), "no key was made");

        let key = SignerKey::generate(&settings.origin).unwrap();
        settings.signing_key = Some(key_text(&key));
        let a = start(&settings, AuditLog::Shared(store.clone()))
            .await
            .unwrap();
        let b = start(&settings, AuditLog::Shared(store.clone()))
            .await
            .unwrap();
        a.append(startup_event("a", false)).await.unwrap();
        b.append(startup_event("b", false)).await.unwrap();
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        let report =
            wardgate_audit::verify::verify_store(store.as_ref(), vec![key.verifier()], &[], None)
                .await
                .unwrap();
        assert_eq!((report.entries, report.proven), (2, 2));
        assert!(
            !settings.signing_key_file.exists(),
            "the file was never needed"
        );

        let other = SignerKey::generate(&settings.origin).unwrap();
        settings.signing_key = Some(key_text(&other));
        let refused = start(&settings, AuditLog::Shared(store.clone()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("did not sign"), "{refused}");

        settings.signing_key = Some(crate::config::audit::SigningKeySecret(Arc::new(
            wardgate_store::Secret::new("not a key".to_owned()),
        )));
        let refused = start(&settings, AuditLog::Shared(store))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("wardgate audit keygen"), "{refused}");
        assert!(
            !refused.contains("not a key"),
            "the value is not echoed: {refused}"
        );
    }

    /// Everything logged on this thread while the guard lives.
    #[derive(Clone, Default)]
    struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logged {
        fn lines_with(&self, text: &str) -> Vec<String> {
            let bytes = self.0.lock().map(|v| v.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| l.contains(text))
                .map(str::to_owned)
                .collect()
        }
    }

    fn capture() -> (Logged, tracing::subscriber::DefaultGuard) {
        let logged = Logged::default();
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (logged, tracing::subscriber::set_default(subscriber))
    }

    /// A shared log with no HTTP witness is warned of once at start, naming the settings that
    /// give it one: each instance's witness file keeps only what that instance signed, and a
    /// new instance has none. A single writer's log (its witness file is the witness) and a
    /// shared log with a witness say nothing of the kind.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_shared_log_without_an_http_witness_is_warned_of_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings_in(dir.path());
        let key = SignerKey::generate(&settings.origin).unwrap();
        settings.signing_key = Some(key_text(&key));
        let shared = || AuditLog::Shared(Arc::new(wardgate_audit::MemoryAuditStore::new()));

        let (logged, guard) = capture();
        let a = start(&settings, shared()).await.unwrap();
        a.shutdown().await.unwrap();
        drop(guard);
        let warned = logged.lines_with(NO_HTTP_WITNESS_WARNING);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("WARN"), "{}", warned[0]);
        assert!(
            warned[0].contains("WARDGATE_AUDIT_WITNESS_URL"),
            "{}",
            warned[0]
        );

        // A witness on a closed loopback port: the start does not wait for it.
        settings.witness = Some(wardgate_audit::witness::http::HttpWitnessConfig::new(
            "http://127.0.0.1:9/",
        ));
        let (logged, guard) = capture();
        let b = start(&settings, shared()).await.unwrap();
        b.shutdown().await.unwrap();
        drop(guard);
        assert!(logged.lines_with(NO_HTTP_WITNESS_WARNING).is_empty());

        let single = settings_in(&dir.path().join("single"));
        let (logged, guard) = capture();
        let store: Arc<dyn AuditStore> = Arc::new(wardgate_audit::MemoryAuditStore::new());
        let c = start(&single, AuditLog::Single(store)).await.unwrap();
        c.shutdown().await.unwrap();
        drop(guard);
        assert!(logged.lines_with(NO_HTTP_WITNESS_WARNING).is_empty());
    }
}
