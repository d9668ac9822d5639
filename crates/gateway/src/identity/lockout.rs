//! Log-in monitoring (45 CFR 164.308(a)(5)(ii)(C)): failed authentications (a missing
//! credential included) are counted per source address and per key prefix over a sliding
//! window; past a threshold the source or prefix is locked out for a cooling period.
//!
//! A lockout never refuses a valid credential: keys carry 128+ random bits, so lockout is there
//! to slow and flag guessing, not to deny service. While a source or prefix is locked out,
//! every credential is still verified (the same work as always, so timing says nothing about
//! the lockout or the prefix); one that verifies is served, one that fails is answered 429.
//! Otherwise one misconfigured client behind a shared NAT, or anyone who has read a key's
//! (non-secret) prefix in a listing, could deny service to everyone else.
//!
//! Two more bounds keep unauthenticated traffic from costing more than it must:
//! - each source address has an allowance of failed authentications a minute
//!   (`auth.unauthenticated_requests_per_minute`); past it, failures are answered 429 with
//!   `Retry-After`, and a request with no usable credential is refused before anything is
//!   verified;
//! - repeated failures from one address are audited as one event per window
//!   (`auth.failure_audit_window`): the first failure in a window is written as usual, the rest
//!   are folded into one `auth_failure` event whose detail reads `suppressed: N`, written when
//!   the window ends. Every failure still has its log line and is counted in
//!   `wardgate_auth_failures_total`; lockouts are always written on their own. So outsiders
//!   cannot write to the undeletable audit log at line rate, and log-in monitoring keeps its
//!   evidence: the written events' counts add up to the failures.
//!
//! In-process: with several gateway instances each counts its own failures (a shared Redis
//! tracker comes with the scale-out issue, behind the same methods).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wardgate_audit::{ActorKind, AuditEvent, Auditor, EventType, Timestamp};

use crate::guards::audit_fold::{AuditFolds, FoldSubject};

pub use crate::config::auth::LockoutSettings;

/// The address failed authentications are folded by: one `auth_failure` event per window
/// whose detail is `suppressed: N`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FailureSource(pub IpAddr);

impl FoldSubject for FailureSource {
    fn summary(subject: Option<&Self>, count: u64, window: Duration) -> AuditEvent {
        let mut e = AuditEvent::new(
            Timestamp::now(),
            EventType::AuthFailure,
            "anonymous",
            ActorKind::Anonymous,
        );
        e.source_ip = subject.map(|s| s.0);
        e.outcome = Some(wardgate_audit::Outcome::Deny);
        e.detail = Some(format!(
            "suppressed: {count} failed authentications in a {}s window",
            window.as_secs()
        ));
        e
    }
}

/// What failed: a source address and, for a wardgate key, its prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Source(IpAddr),
    Prefix(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Source(ip) => write!(f, "source={ip}"),
            Subject::Prefix(p) => write!(f, "key_prefix={p}"),
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    /// Failure times within the window, oldest first (at most `threshold` kept).
    failures: Vec<Instant>,
    locked_until: Option<Instant>,
}

/// Most subjects tracked at once; past it, entries that are neither locked nor recent go first.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct Lockout {
    settings: LockoutSettings,
    entries: Mutex<HashMap<Subject, Entry>>,
    /// Each source's allowance of failures a minute.
    allowance: crate::guards::ratelimit::InProcessLimiter,
    /// Each source's failures folded in the current audit window.
    folds: Arc<AuditFolds<FailureSource>>,
}

impl Lockout {
    pub fn new(settings: LockoutSettings) -> Lockout {
        Lockout {
            settings,
            entries: Mutex::new(HashMap::new()),
            allowance: crate::guards::ratelimit::InProcessLimiter::new(),
            folds: Arc::new(AuditFolds::new(settings.audit_window)),
        }
    }

    /// Takes one failure from the source's allowance; the wait when it has none left. Checked
    /// only for requests that failed (or cannot succeed), so it never refuses a valid
    /// credential.
    pub fn over_allowance(&self, source: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let per_minute = self.settings.failures_per_minute;
        let ip = source?;
        if per_minute == 0 {
            return None;
        }
        match self
            .allowance
            .check_at(&format!("unauth:{ip}"), per_minute, now)
        {
            Ok(()) => None,
            Err(crate::guards::ratelimit::Refused::RetryAfter(wait)) => Some(wait),
            Err(crate::guards::ratelimit::Refused::Unavailable) => None,
        }
    }

    /// Whether this failure from `source` is written to the audit log on its own (the first in
    /// its address's window) or folded into the window's `suppressed: N` summary.
    pub fn fold(&self, source: Option<IpAddr>, now: Instant, audit: &Auditor) -> bool {
        // Without an address there is nothing to fold by (only in-process tests lack one).
        let Some(ip) = source else {
            return true;
        };
        self.folds.fold(FailureSource(ip), now, audit)
    }

    /// Writes every window's folded failures, ended or not, and waits for the commits: what
    /// a stop would otherwise lose.
    pub async fn flush_folded(&self, audit: &Auditor) {
        self.folds.flush(audit).await;
    }

    fn subjects(&self, source: Option<IpAddr>, prefix: Option<&str>) -> Vec<Subject> {
        let mut out = Vec::with_capacity(2);
        if self.settings.by_source
            && let Some(ip) = source
        {
            out.push(Subject::Source(ip));
        }
        if self.settings.by_prefix
            && let Some(p) = prefix
        {
            out.push(Subject::Prefix(p.to_owned()));
        }
        out
    }

    /// How long the source or prefix stays locked out, if one is now. A failing credential is
    /// then answered 429; a valid one is served all the same.
    pub fn locked(
        &self,
        source: Option<IpAddr>,
        prefix: Option<&str>,
        now: Instant,
    ) -> Option<Duration> {
        if self.settings.threshold == 0 {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.subjects(source, prefix)
            .iter()
            .filter_map(|s| entries.get(s)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Counts a failed attempt; returns the subjects this failure locked out (each once, at the
    /// moment its lockout begins).
    pub fn fail(&self, source: Option<IpAddr>, prefix: Option<&str>, now: Instant) -> Vec<Subject> {
        let s = self.settings;
        if s.threshold == 0 {
            return Vec::new();
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_TRACKED {
            entries.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now)
                    || e.failures.last().is_some_and(|t| now - *t < s.window)
            });
        }
        let mut locked = Vec::new();
        for subject in self.subjects(source, prefix) {
            let e = entries.entry(subject.clone()).or_default();
            if e.locked_until.is_some_and(|u| u > now) {
                continue;
            }
            e.failures
                .retain(|t| now.saturating_duration_since(*t) < s.window);
            e.failures.push(now);
            if e.failures.len() >= s.threshold as usize {
                e.failures.clear();
                e.locked_until = Some(now + s.duration);
                locked.push(subject);
            }
        }
        locked
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings() -> LockoutSettings {
        LockoutSettings {
            threshold: 3,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
            by_prefix: true,
            by_source: true,
            ..LockoutSettings::default()
        }
    }

    #[test]
    fn the_threshold_within_the_window_locks_for_the_duration() {
        let l = Lockout::new(settings());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.fail(Some(ip), None, t0).is_empty());
        assert!(
            l.fail(Some(ip), None, t0 + Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(l.locked(Some(ip), None, t0), None);
        let locked = l.fail(Some(ip), None, t0 + Duration::from_secs(2));
        assert_eq!(locked, [Subject::Source(ip)]);
        let wait = l
            .locked(Some(ip), None, t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(600));
        // Another address is not affected; the lock ends after the duration.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(l.locked(Some(other), None, t0), None);
        assert_eq!(
            l.locked(Some(ip), None, t0 + Duration::from_secs(603)),
            None
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let l = Lockout::new(settings());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            // One failure every 40 s: never three within 60 s.
            assert!(
                l.fail(Some(ip), None, t0 + Duration::from_secs(40 * i))
                    .is_empty()
            );
        }
    }

    #[test]
    fn a_prefix_locks_across_sources_unless_turned_off() {
        let l = Lockout::new(settings());
        let t0 = Instant::now();
        for i in 0..3u8 {
            let ip = IpAddr::from([198, 51, 100, i]);
            let locked = l.fail(Some(ip), Some("abcdefghijkl"), t0);
            assert_eq!(locked.len(), usize::from(i == 2), "{locked:?}");
        }
        let fresh: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(l.locked(Some(fresh), Some("abcdefghijkl"), t0).is_some());
        assert!(l.locked(Some(fresh), Some("zzzzzzzzzzzz"), t0).is_none());

        let off = Lockout::new(LockoutSettings {
            by_prefix: false,
            ..settings()
        });
        for i in 0..3u8 {
            off.fail(
                Some(IpAddr::from([198, 51, 100, i])),
                Some("abcdefghijkl"),
                t0,
            );
        }
        assert!(off.locked(Some(fresh), Some("abcdefghijkl"), t0).is_none());
    }

    #[test]
    fn threshold_zero_turns_lockout_off() {
        let l = Lockout::new(LockoutSettings {
            threshold: 0,
            ..settings()
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(l.fail(Some(ip), None, t0).is_empty());
        }
        assert_eq!(l.locked(Some(ip), None, t0), None);
    }
}

#[cfg(test)]
mod allowance_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_allowance_of_failures_is_per_source_and_refills() {
        let l = Lockout::new(LockoutSettings {
            failures_per_minute: 2,
            ..LockoutSettings::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.over_allowance(Some(a), t0), None);
        assert_eq!(l.over_allowance(Some(a), t0), None);
        assert!(l.over_allowance(Some(a), t0).is_some());
        assert_eq!(l.over_allowance(Some(b), t0), None);
        assert_eq!(
            l.over_allowance(Some(a), t0 + Duration::from_secs(31)),
            None
        );
    }

    #[test]
    fn a_summary_names_the_address_and_the_count() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let e = FailureSource::summary(Some(&FailureSource(ip)), 7, Duration::from_secs(60));
        e.validate().unwrap();
        assert_eq!(e.event_type, EventType::AuthFailure);
        assert_eq!(e.source_ip, Some(ip));
        assert_eq!(
            e.detail.as_deref(),
            Some("suppressed: 7 failed authentications in a 60s window")
        );
    }
}
