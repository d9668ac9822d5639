//! Security events, one type each. An event's one `emit` writes its audit record, counts its
//! metric and writes its log line together, so the three cannot disagree, whether the event
//! happens inside a request (the request's terminal audit event carries it) or outside one (a
//! CLI command, a reload on SIGHUP: `append` writes it to the log itself). The counters live
//! here; `metrics.rs` only renders them.
//!
//! A request's own end is `record::RequestFinished` (it reads the whole record).
//!
//! Where a new event goes: a type here with its fields (never a secret, a prompt or PHI), its
//! audit event type and detail, its counter in [`Counters`] if it has one, and its log line; the
//! place it happens calls `emit` (or `append`).

use std::sync::atomic::{AtomicU64, Ordering};

use wardgate_audit::{ActorKind, AuditError, AuditEvent, Auditor, EventType, Outcome, Timestamp};
use wardgate_store::{ApiKeyRecord, Rotated};

use crate::guards::ratelimit::Limit;
use crate::identity::lockout::Subject;
pub use crate::metrics::admin::{COUNTERS, Counters};
use crate::middleware::record::RequestRecord;
use crate::serve::reload::{ReloadError, Reloaded};

fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A failed authentication (a missing credential included). Its audit record is the request's
/// own `auth_failure` event, unless it is folded into its address's window summary.
#[derive(Debug)]
pub struct AuthFailed {
    /// Whether the failure is folded into the window's `suppressed: N` summary.
    pub folded: bool,
}

impl AuthFailed {
    pub fn emit(self, record: Option<&RequestRecord>) {
        count(&COUNTERS.auth_failures, 1);
        if self.folded {
            count(&COUNTERS.auth_failures_folded, 1);
            if let Some(r) = record {
                r.fold_audit();
            }
        }
    }
}

/// Addresses or key prefixes locked out by the failure of this request. Always audited on its
/// own (it is what a reviewer must see), with an alert log line.
#[derive(Debug)]
pub struct LockedOut {
    pub subjects: Vec<Subject>,
}

impl LockedOut {
    pub fn emit(self, record: Option<&RequestRecord>) {
        count(&COUNTERS.lockouts, self.subjects.len() as u64);
        let what: Vec<String> = self.subjects.iter().map(ToString::to_string).collect();
        let what = what.join(" ");
        tracing::warn!(
            target: "wardgate::alert",
            locked = %what,
            "locked out after repeated failed authentications"
        );
        if let Some(r) = record {
            r.set_action(EventType::Lockout, Some(format!("locked {what}")));
        }
    }
}

/// A request by a break-glass principal, with its stated reason (`None`: none given, the
/// request is refused). The reason may name a patient: it goes only to the audit log, redacted
/// there (`RequestRecord::set_break_glass`), never to the log line.
#[derive(Debug)]
pub struct BreakGlassUsed<'a> {
    pub key_id: &'a str,
    pub tenant: &'a str,
    pub reason: Option<&'a str>,
}

impl BreakGlassUsed<'_> {
    pub fn emit(self, record: Option<&RequestRecord>) {
        match self.reason {
            Some(reason) => {
                tracing::warn!(
                    target: "wardgate::alert",
                    key_id = %self.key_id,
                    tenant = %self.tenant,
                    "break-glass access used"
                );
                count(&COUNTERS.break_glass, 1);
                if let Some(r) = record {
                    r.set_break_glass(reason);
                }
            }
            None => {
                // Counted too: a break-glass credential tried without a reason (a stolen key,
                // say) must show on the alert as much as one used with a reason.
                tracing::warn!(
                    target: "wardgate::alert",
                    key_id = %self.key_id,
                    tenant = %self.tenant,
                    "break-glass access refused: no reason given"
                );
                count(&COUNTERS.break_glass, 1);
                if let Some(r) = record {
                    r.set_break_glass("none given (refused)");
                }
            }
        }
    }
}

/// A request refused 429 by a rate limit or quota. Its audit record is the request's own event,
/// unless it is folded into its key's window summary.
#[derive(Debug)]
pub struct RateLimited {
    pub limit: Limit,
    /// Whether the refusal is folded into the key's `suppressed: N` summary.
    pub folded: bool,
}

impl RateLimited {
    pub fn emit(self, record: Option<&RequestRecord>) {
        if let Some(i) = Limit::ALL.iter().position(|l| *l == self.limit) {
            count(&COUNTERS.rate_limited[i], 1);
        }
        if self.folded
            && let Some(r) = record
        {
            r.fold_audit();
        }
    }
}

/// How a reload was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadVia {
    AdminApi,
    Sighup,
}

/// A configuration reload, applied or refused.
#[derive(Debug)]
pub struct ConfigReloaded<'a> {
    pub via: ReloadVia,
    pub result: &'a Result<Reloaded, ReloadError>,
}

impl ConfigReloaded<'_> {
    /// Where the reload came from, as the log line's `via` field.
    fn source(&self) -> &'static str {
        match self.via {
            ReloadVia::AdminApi => "admin_api",
            ReloadVia::Sighup => "sighup",
        }
    }

    fn via(&self) -> &'static str {
        match self.via {
            ReloadVia::AdminApi => "",
            ReloadVia::Sighup => " (SIGHUP)",
        }
    }

    /// The outcome and the audit detail. A refused file is named by its setting only: the
    /// message may quote the value.
    fn audit(&self) -> (Outcome, String) {
        let via = self.via();
        match self.result {
            Ok(done) => (
                Outcome::Allow,
                format!(
                    "configuration reloaded{via}; changed={}; sha256={}",
                    changed(done),
                    done.digest
                ),
            ),
            Err(ReloadError::Invalid(e)) => (
                Outcome::Deny,
                format!("reload refused{via}: invalid setting {}", e.key),
            ),
            Err(e) => (Outcome::Deny, format!("reload refused{via}: {e}")),
        }
    }

    fn log(&self) {
        match self.result {
            Ok(done) => tracing::warn!(
                target: "wardgate::alert",
                changed = %changed(done),
                via = self.source(),
                "configuration reloaded"
            ),
            Err(e) => {
                tracing::error!(error = %e, via = self.source(), "configuration reload refused")
            }
        }
    }

    /// Inside a request (the admin API), for a refused reload: the request's terminal event
    /// carries the refusal.
    pub fn emit(self, record: &RequestRecord) {
        self.log();
        let (_, detail) = self.audit();
        record.set_action(EventType::ConfigChange, Some(detail));
    }

    /// Inside a request (the admin API), for a reload about to be applied: commits its
    /// `config_change` event, by the request's principal, before the change is made. `Err`:
    /// the log did not take it, and the reload must not be applied.
    pub async fn commit(self, record: &RequestRecord, auditor: &Auditor) -> Result<(), AuditError> {
        let (outcome, detail) = self.audit();
        let mut event = record.audit_event(EventType::ConfigChange);
        event.outcome = Some(outcome);
        event.detail = Some(detail);
        self.committed(auditor.append(event).await)
    }

    /// Outside a request (SIGHUP): commits a `config_change` event by wardgate itself. `Err`:
    /// the log did not take it, and the reload must not be applied.
    pub async fn append(self, auditor: &Auditor) -> Result<(), AuditError> {
        let (outcome, detail) = self.audit();
        let event = crate::audit::config_event(outcome, detail);
        self.committed(auditor.append(event).await)
    }

    /// The log line once the event is committed; an error line when it was not.
    fn committed(&self, appended: Result<u64, AuditError>) -> Result<(), AuditError> {
        match appended {
            Ok(_) => {
                self.log();
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    via = self.source(),
                    "configuration reload not applied: the audit log did not take its event; \
                     fix the audit log (see its earlier errors), then reload again"
                );
                Err(e)
            }
        }
    }
}

fn changed(done: &Reloaded) -> String {
    if done.changed.is_empty() {
        "nothing".to_owned()
    } else {
        done.changed.join(",")
    }
}

/// A key created, rotated or revoked, by the admin API or the CLI.
#[derive(Debug)]
pub enum KeyChanged<'a> {
    Created(&'a ApiKeyRecord),
    Rotated(&'a Rotated),
    Revoked(&'a ApiKeyRecord),
}

impl KeyChanged<'_> {
    /// The key the change leaves in force (the replacement, for a rotation).
    pub fn key(&self) -> &ApiKeyRecord {
        match self {
            KeyChanged::Created(k) | KeyChanged::Revoked(k) => k,
            KeyChanged::Rotated(r) => &r.new.record,
        }
    }

    fn event_type(&self) -> EventType {
        match self {
            KeyChanged::Created(_) | KeyChanged::Rotated(_) => EventType::KeyCreated,
            KeyChanged::Revoked(_) => EventType::KeyRevoked,
        }
    }

    /// The audit detail: the key, its tenant, and what changed (never the secret).
    pub fn detail(&self) -> String {
        match self {
            KeyChanged::Created(k) => format!(
                "key_id={} tenant={} roles={}",
                k.id,
                k.tenant,
                role_list(&k.roles)
            ),
            KeyChanged::Rotated(r) => format!(
                "key_id={} tenant={} rotated_from={} old_expires_at={}",
                r.new.record.id,
                r.new.record.tenant,
                r.old.id,
                r.old.expires_at.map(|t| t.unix_timestamp()).unwrap_or(0)
            ),
            KeyChanged::Revoked(k) => format!("key_id={} tenant={}", k.id, k.tenant),
        }
    }

    fn log(&self) {
        let what = match self {
            KeyChanged::Created(_) => "key created",
            KeyChanged::Rotated(_) => "key rotated",
            KeyChanged::Revoked(_) => "key revoked",
        };
        let k = self.key();
        tracing::info!(target: "wardgate::keys", key_id = %k.id, tenant = %k.tenant, "{what}");
    }

    /// Inside a request (the admin API): the request's terminal event carries the change.
    pub fn emit(self, record: &RequestRecord) {
        self.log();
        record.set_action(self.event_type(), Some(self.detail()));
    }

    /// Outside a request (the CLI): an event by `actor`, committed before this returns.
    pub async fn append(
        self,
        auditor: &Auditor,
        actor: &str,
    ) -> Result<(), wardgate_audit::AuditError> {
        self.log();
        let mut e = AuditEvent::new(Timestamp::now(), self.event_type(), actor, ActorKind::User);
        e.outcome = Some(Outcome::Allow);
        e.tenant = Some(self.key().tenant.clone());
        e.detail = Some(self.detail());
        auditor.append(e).await.map(drop)
    }
}

/// Roles as the audit detail writes them: `user,admin`.
fn role_list(roles: &[wardgate_store::Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::ConfigError;

    fn key(id: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            prefix: "abcdefghijkl".into(),
            tenant: "acme".into(),
            models: vec![],
            roles: vec![wardgate_store::Role::User, wardgate_store::Role::Admin],
            label: None,
            created_at: time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            replaced_by: None,
        }
    }

    /// The admin API and SIGHUP write one text, apart from how the reload was asked for; a
    /// refused file is named by its setting, never by the value the message may quote.
    #[test]
    fn a_reload_reads_the_same_however_it_was_asked_for() {
        let done = Ok(Reloaded {
            changed: vec!["limits", "phi"],
            digest: "ab12".into(),
        });
        let invalid = Err(ReloadError::Invalid(ConfigError::new(
            "limits.max_messages",
            "`John Smith` is not a number",
        )));
        let same = Ok(Reloaded {
            changed: vec![],
            digest: "cd34".into(),
        });
        let text = |via, result| ConfigReloaded { via, result }.audit();
        // The log line names where a reload came from, the admin API too (it logged `via=""`).
        let source = |via| ConfigReloaded { via, result: &same }.source();
        assert_eq!(
            (source(ReloadVia::AdminApi), source(ReloadVia::Sighup)),
            ("admin_api", "sighup")
        );
        assert_eq!(
            text(ReloadVia::AdminApi, &done),
            (
                Outcome::Allow,
                "configuration reloaded; changed=limits,phi; sha256=ab12".into()
            )
        );
        assert_eq!(
            text(ReloadVia::Sighup, &done).1,
            "configuration reloaded (SIGHUP); changed=limits,phi; sha256=ab12"
        );
        assert!(
            text(ReloadVia::Sighup, &same)
                .1
                .contains("changed=nothing;")
        );
        for via in [ReloadVia::AdminApi, ReloadVia::Sighup] {
            let (outcome, detail) = text(via, &invalid);
            assert_eq!(outcome, Outcome::Deny);
            assert!(
                detail.ends_with("invalid setting limits.max_messages"),
                "{detail}"
            );
            assert!(!detail.contains("John"), "{detail}");
        }
    }

    /// The admin API and the CLI describe a key change alike; the CLI's event names its actor
    /// and the key's tenant, and is committed before `append` returns.
    #[tokio::test]
    async fn a_key_change_reads_the_same_from_the_api_and_the_cli() {
        use wardgate_audit::AuditStore as _;
        let created = key("key_new");
        assert_eq!(
            KeyChanged::Created(&created).detail(),
            "key_id=key_new tenant=acme roles=user,admin"
        );
        assert_eq!(
            KeyChanged::Revoked(&created).detail(),
            "key_id=key_new tenant=acme"
        );
        let store = std::sync::Arc::new(wardgate_audit::MemoryAuditStore::new());
        let audit = Auditor::start(
            store.clone(),
            wardgate_audit::SignerKey::generate("test/events").unwrap(),
            wardgate_audit::AuditorConfig {
                origin: "test/events".into(),
                ..wardgate_audit::AuditorConfig::default()
            },
        )
        .await
        .unwrap();
        KeyChanged::Revoked(&created)
            .append(&audit, "cli:root")
            .await
            .unwrap();
        let entries = store.read_range(0, 10).await.unwrap();
        let e = &entries.last().unwrap().event;
        assert_eq!(e.event_type, EventType::KeyRevoked);
        assert_eq!(e.actor_id, "cli:root");
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.detail.as_deref(), Some("key_id=key_new tenant=acme"));
        audit.shutdown().await.unwrap();
    }

    /// Each event counts its metric as it is emitted (the counters are process-wide, so the
    /// check is on the increase).
    #[test]
    fn emitting_counts() {
        let before = COUNTERS.lockouts.load(Ordering::Relaxed);
        LockedOut {
            subjects: vec![
                Subject::Source(crate::identity::net::SourceBlock::of(
                    "192.0.2.1".parse().unwrap(),
                    64,
                )),
                Subject::Prefix("abcdefghijkl".into()),
            ],
        }
        .emit(None);
        assert!(COUNTERS.lockouts.load(Ordering::Relaxed) >= before + 2);
        let i = Limit::ALL
            .iter()
            .position(|l| *l == Limit::TokensPerDay)
            .unwrap();
        let before = COUNTERS.rate_limited[i].load(Ordering::Relaxed);
        RateLimited {
            limit: Limit::TokensPerDay,
            folded: true,
        }
        .emit(None);
        assert!(COUNTERS.rate_limited[i].load(Ordering::Relaxed) > before);
    }
}
