//! Log-in monitoring (45 CFR 164.308(a)(5)(ii)(C)): failed authentications (a missing
//! credential included) are counted per source and per key prefix over a sliding window; past
//! a threshold the source or prefix is locked out for a cooling period.
//!
//! A source is a [`SourceBlock`]: an IPv4 address (an IPv4-mapped IPv6 address is its IPv4
//! address), or the IPv6 network of `auth.lockout_ipv6_prefix` (64) bits holding the address.
//! One IPv6 subscriber holds a whole /64 and can draw a fresh address for every attempt, so
//! counting, the allowance and the audit folding all go by the block; what the audit log and
//! the log lines record of each request is still its own client address.
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
//! Where failures are counted is a [`FailureTracker`]: [`LocalTracker`] in this process (the
//! default), or `identity::shared_lockout::RedisTracker` when Redis is configured, so an address
//! or prefix locked out at one gateway instance is locked out at every instance sharing the
//! Redis (same window, threshold and duration). While Redis is unreachable the shared tracker
//! counts in this process instead (each instance on its own, as without Redis), and a lockout
//! never depends on Redis to serve a valid credential. The allowance of failures a minute and
//! the folding of audit events stay per instance: the allowance only paces one instance's
//! work, and each instance writes its own folded summaries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wardgate_audit::{ActorKind, AuditEvent, Auditor, EventType, Timestamp};

use crate::guards::audit_fold::{AuditFolds, FoldSubject};
use crate::identity::net::SourceBlock;

pub use crate::config::auth::LockoutSettings;

/// The source failed authentications are folded by: one `auth_failure` event per window
/// whose detail is `suppressed: N`. Its `source_ip` is the block's first address (the address
/// itself for IPv4); the detail names the block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FailureSource(pub SourceBlock);

impl FoldSubject for FailureSource {
    fn summary(subject: Option<&Self>, count: u64, window: Duration) -> AuditEvent {
        let mut e = AuditEvent::new(
            Timestamp::now(),
            EventType::AuthFailure,
            "anonymous",
            ActorKind::Anonymous,
        );
        e.source_ip = subject.map(|s| s.0.first());
        e.outcome = Some(wardgate_audit::Outcome::Deny);
        let from = subject
            .map(|s| format!(" from {}", s.0))
            .unwrap_or_default();
        e.detail = Some(format!(
            "suppressed: {count} failed authentications{from} in a {}s window",
            window.as_secs()
        ));
        e
    }
}

/// What failed: a source (an IPv4 address or an IPv6 block) and, for a wardgate key, its
/// prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Source(SourceBlock),
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

/// Counts failed authentications per subject over the sliding window and locks a subject
/// out for the lockout duration once it reaches the threshold. The subjects of one failure are
/// given together (its source address and its key prefix, as the settings select).
#[async_trait::async_trait]
pub trait FailureTracker: Send + Sync + std::fmt::Debug + 'static {
    /// How long the longest lockout among `subjects` lasts from `now`, if one is in force.
    async fn locked(&self, subjects: &[Subject], now: Instant) -> Option<Duration>;
    /// Counts a failure against each subject not locked out already; returns the subjects
    /// this failure locked out (each once, at the moment its lockout begins).
    async fn fail(&self, subjects: &[Subject], now: Instant) -> Vec<Subject>;
}

#[derive(Debug, Default)]
struct Entry {
    /// Failure times within the window, oldest first (at most `threshold` kept).
    failures: Vec<Instant>,
    locked_until: Option<Instant>,
}

/// Most subjects tracked at once; past it, entries that are neither locked nor recent go first.
const MAX_TRACKED: usize = 100_000;

/// Failures counted in this process alone.
#[derive(Debug)]
pub struct LocalTracker {
    settings: LockoutSettings,
    entries: Mutex<HashMap<Subject, Entry>>,
}

impl LocalTracker {
    pub fn new(settings: LockoutSettings) -> LocalTracker {
        LocalTracker {
            settings,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// [`FailureTracker::locked`], at once.
    pub fn locked_now(&self, subjects: &[Subject], now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        subjects
            .iter()
            .filter_map(|s| entries.get(s)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// [`FailureTracker::fail`], at once.
    pub fn fail_now(&self, subjects: &[Subject], now: Instant) -> Vec<Subject> {
        let s = self.settings;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_TRACKED {
            entries.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now)
                    || e.failures.last().is_some_and(|t| now - *t < s.window)
            });
        }
        let mut locked = Vec::new();
        for subject in subjects {
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
                locked.push(subject.clone());
            }
        }
        locked
    }
}

#[async_trait::async_trait]
impl FailureTracker for LocalTracker {
    async fn locked(&self, subjects: &[Subject], now: Instant) -> Option<Duration> {
        self.locked_now(subjects, now)
    }

    async fn fail(&self, subjects: &[Subject], now: Instant) -> Vec<Subject> {
        self.fail_now(subjects, now)
    }
}

#[derive(Debug)]
pub struct Lockout {
    settings: LockoutSettings,
    /// Where failures are counted: this process, or Redis shared by every instance.
    tracker: Box<dyn FailureTracker>,
    /// Each source's allowance of failures a minute.
    allowance: crate::guards::ratelimit::InProcessLimiter,
    /// Each source's failures folded in the current audit window.
    folds: Arc<AuditFolds<FailureSource>>,
}

impl Lockout {
    /// Failures counted in this process.
    pub fn new(settings: LockoutSettings) -> Lockout {
        Lockout::with_tracker(settings, Box::new(LocalTracker::new(settings)))
    }

    /// Failures counted by `tracker` (built with the same `settings`).
    pub fn with_tracker(settings: LockoutSettings, tracker: Box<dyn FailureTracker>) -> Lockout {
        Lockout {
            settings,
            tracker,
            allowance: crate::guards::ratelimit::InProcessLimiter::new(),
            folds: Arc::new(AuditFolds::new(settings.audit_window)),
        }
    }

    /// The block `source` is counted by.
    fn block(&self, source: IpAddr) -> SourceBlock {
        SourceBlock::of(source, self.settings.ipv6_prefix)
    }

    /// Takes one failure from the source's allowance; the wait when it has none left. Checked
    /// only for requests that failed (or cannot succeed), so it never refuses a valid
    /// credential.
    pub fn over_allowance(&self, source: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let per_minute = self.settings.failures_per_minute;
        let block = self.block(source?);
        if per_minute == 0 {
            return None;
        }
        match self
            .allowance
            .check_at(&format!("unauth:{block}"), per_minute, now)
        {
            Ok(()) => None,
            Err(crate::guards::ratelimit::Refused::RetryAfter(wait)) => Some(wait),
            Err(crate::guards::ratelimit::Refused::Unavailable) => None,
        }
    }

    /// Whether this failure from `source` is written to the audit log on its own (the first in
    /// its block's window) or folded into the window's `suppressed: N` summary.
    pub fn fold(&self, source: Option<IpAddr>, now: Instant, audit: &Auditor) -> bool {
        // Without an address there is nothing to fold by (only in-process tests lack one).
        let Some(ip) = source else {
            return true;
        };
        self.folds.fold(FailureSource(self.block(ip)), now, audit)
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
            out.push(Subject::Source(self.block(ip)));
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
    pub async fn locked(
        &self,
        source: Option<IpAddr>,
        prefix: Option<&str>,
        now: Instant,
    ) -> Option<Duration> {
        if self.settings.threshold == 0 {
            return None;
        }
        let subjects = self.subjects(source, prefix);
        if subjects.is_empty() {
            return None;
        }
        self.tracker.locked(&subjects, now).await
    }

    /// Counts a failed attempt; returns the subjects this failure locked out (each once, at the
    /// moment its lockout begins).
    pub async fn fail(
        &self,
        source: Option<IpAddr>,
        prefix: Option<&str>,
        now: Instant,
    ) -> Vec<Subject> {
        if self.settings.threshold == 0 {
            return Vec::new();
        }
        let subjects = self.subjects(source, prefix);
        if subjects.is_empty() {
            return Vec::new();
        }
        self.tracker.fail(&subjects, now).await
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

    #[tokio::test]
    async fn the_threshold_within_the_window_locks_for_the_duration() {
        let l = Lockout::new(settings());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.fail(Some(ip), None, t0).await.is_empty());
        assert!(
            l.fail(Some(ip), None, t0 + Duration::from_secs(1))
                .await
                .is_empty()
        );
        assert_eq!(l.locked(Some(ip), None, t0).await, None);
        let locked = l.fail(Some(ip), None, t0 + Duration::from_secs(2)).await;
        assert_eq!(locked, [Subject::Source(SourceBlock::of(ip, 64))]);
        let wait = l
            .locked(Some(ip), None, t0 + Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(wait, Duration::from_secs(600));
        // Another address is not affected; the lock ends after the duration.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(l.locked(Some(other), None, t0).await, None);
        assert_eq!(
            l.locked(Some(ip), None, t0 + Duration::from_secs(603))
                .await,
            None
        );
    }

    #[tokio::test]
    async fn failures_outside_the_window_do_not_count() {
        let l = Lockout::new(settings());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            // One failure every 40 s: never three within 60 s.
            assert!(
                l.fail(Some(ip), None, t0 + Duration::from_secs(40 * i))
                    .await
                    .is_empty()
            );
        }
    }

    #[tokio::test]
    async fn a_prefix_locks_across_sources_unless_turned_off() {
        let l = Lockout::new(settings());
        let t0 = Instant::now();
        for i in 0..3u8 {
            let ip = IpAddr::from([198, 51, 100, i]);
            let locked = l.fail(Some(ip), Some("abcdefghijkl"), t0).await;
            assert_eq!(locked.len(), usize::from(i == 2), "{locked:?}");
        }
        let fresh: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(
            l.locked(Some(fresh), Some("abcdefghijkl"), t0)
                .await
                .is_some()
        );
        assert!(
            l.locked(Some(fresh), Some("zzzzzzzzzzzz"), t0)
                .await
                .is_none()
        );

        let off = Lockout::new(LockoutSettings {
            by_prefix: false,
            ..settings()
        });
        for i in 0..3u8 {
            off.fail(
                Some(IpAddr::from([198, 51, 100, i])),
                Some("abcdefghijkl"),
                t0,
            )
            .await;
        }
        assert!(
            off.locked(Some(fresh), Some("abcdefghijkl"), t0)
                .await
                .is_none()
        );
    }

    /// One IPv6 client draws addresses from its whole /64: failures from two of them lock
    /// out a third in the same /64, not an address outside it. IPv4 neighbours are counted
    /// apart, and an IPv4-mapped IPv6 address with its IPv4 address.
    #[tokio::test]
    async fn failures_across_one_ipv6_64_lock_the_whole_64_out() {
        let l = Lockout::new(LockoutSettings {
            threshold: 2,
            ..settings()
        });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let t0 = Instant::now();
        assert!(l.fail(ip("2001:db8:1:2::1"), None, t0).await.is_empty());
        let locked = l.fail(ip("2001:db8:1:2:ffff::9"), None, t0).await;
        assert_eq!(locked.len(), 1, "{locked:?}");
        assert_eq!(locked[0].to_string(), "source=2001:db8:1:2::/64");
        assert!(l.locked(ip("2001:db8:1:2::abcd"), None, t0).await.is_some());
        assert!(l.locked(ip("2001:db8:1:3::1"), None, t0).await.is_none());

        assert!(l.fail(ip("192.0.2.1"), None, t0).await.is_empty());
        assert!(l.fail(ip("192.0.2.2"), None, t0).await.is_empty());
        assert!(l.locked(ip("192.0.2.3"), None, t0).await.is_none());
        assert_eq!(l.fail(ip("::ffff:192.0.2.1"), None, t0).await.len(), 1);
        assert!(l.locked(ip("192.0.2.1"), None, t0).await.is_some());

        // A /128 counts each address on its own.
        let per_address = Lockout::new(LockoutSettings {
            threshold: 2,
            ipv6_prefix: 128,
            ..settings()
        });
        for a in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
            assert!(per_address.fail(ip(a), None, t0).await.is_empty());
        }
    }

    #[tokio::test]
    async fn threshold_zero_turns_lockout_off() {
        let l = Lockout::new(LockoutSettings {
            threshold: 0,
            ..settings()
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(l.fail(Some(ip), None, t0).await.is_empty());
        }
        assert_eq!(l.locked(Some(ip), None, t0).await, None);
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
    fn the_allowance_is_per_ipv6_64() {
        let l = Lockout::new(LockoutSettings {
            failures_per_minute: 2,
            ..LockoutSettings::default()
        });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let t0 = Instant::now();
        assert_eq!(l.over_allowance(ip("2001:db8:1:2::1"), t0), None);
        assert_eq!(l.over_allowance(ip("2001:db8:1:2::2"), t0), None);
        assert!(l.over_allowance(ip("2001:db8:1:2::3"), t0).is_some());
        assert_eq!(l.over_allowance(ip("2001:db8:1:3::1"), t0), None);
    }

    #[test]
    fn a_summary_names_the_source_and_the_count() {
        for (ip, first, from) in [
            ("192.0.2.1", "192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2::9", "2001:db8:1:2::", "2001:db8:1:2::/64"),
        ] {
            let block = SourceBlock::of(ip.parse().unwrap(), 64);
            let e = FailureSource::summary(Some(&FailureSource(block)), 7, Duration::from_secs(60));
            e.validate().unwrap();
            assert_eq!(e.event_type, EventType::AuthFailure);
            assert_eq!(e.source_ip, Some(first.parse().unwrap()));
            assert_eq!(
                e.detail.unwrap(),
                format!("suppressed: 7 failed authentications from {from} in a 60s window")
            );
        }
    }

    /// The failures of one /64 share one audit window: the first is written, the next (from
    /// another address of the /64) is folded; another /64 has its own window.
    #[tokio::test]
    async fn failures_are_folded_per_ipv6_64() {
        let store = Arc::new(wardgate_audit::MemoryAuditStore::new());
        let audit = Auditor::start(
            store,
            wardgate_audit::SignerKey::generate("test/lockout").unwrap(),
            wardgate_audit::AuditorConfig {
                origin: "test/lockout".into(),
                ..wardgate_audit::AuditorConfig::default()
            },
        )
        .await
        .unwrap();
        let l = Lockout::new(LockoutSettings::default());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let t0 = Instant::now();
        assert!(l.fold(ip("2001:db8:1:2::1"), t0, &audit));
        assert!(!l.fold(ip("2001:db8:1:2::2"), t0, &audit));
        assert!(l.fold(ip("2001:db8:1:3::1"), t0, &audit));
        audit.shutdown().await.unwrap();
    }
}
