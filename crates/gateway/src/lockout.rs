//! Log-in monitoring (45 CFR 164.308(a)(5)(ii)(C)): failed authentications are counted per
//! source address and per key prefix over a sliding window; past a threshold the source or
//! prefix is locked out for a cooling period, during which every attempt from it is refused
//! with 429 before any credential is checked.
//!
//! In-process: with several gateway instances each counts its own failures (a shared Redis
//! tracker comes with the scale-out issue, behind the same methods).
//!
//! Trade-off, documented for operators: a key prefix is not secret, so someone who knows one can
//! lock that key out by failing with it. The prefix lockout can be turned off
//! (`auth.lockout_by_prefix = false`); the source lockout is what stops guessing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lockout settings, validated.
#[derive(Clone, Copy, Debug)]
pub struct LockoutSettings {
    /// Failures within `window` that trigger a lockout; 0 turns lockout off.
    pub threshold: u32,
    pub window: Duration,
    pub duration: Duration,
    pub by_prefix: bool,
    /// Whether failures count per peer address. Behind a reverse proxy every client shares the
    /// proxy's address, so this must be off there until trusted-proxy handling exists.
    pub by_source: bool,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        LockoutSettings {
            threshold: 10,
            window: Duration::from_secs(300),
            duration: Duration::from_secs(900),
            by_prefix: true,
            by_source: true,
        }
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

/// Failed authentications counted since start, and lockouts begun (for metrics).
pub static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
pub static LOCKOUTS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct Lockout {
    settings: LockoutSettings,
    entries: Mutex<HashMap<Subject, Entry>>,
}

impl Lockout {
    pub fn new(settings: LockoutSettings) -> Lockout {
        Lockout {
            settings,
            entries: Mutex::new(HashMap::new()),
        }
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

    /// How long until the attempt may be made, if a subject of it is locked out now.
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
        AUTH_FAILURES.fetch_add(1, Ordering::Relaxed);
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
                LOCKOUTS.fetch_add(1, Ordering::Relaxed);
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
