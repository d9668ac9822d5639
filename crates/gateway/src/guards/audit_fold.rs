//! Repeated refusals of one subject folded into one audit event per window.
//!
//! The audit log cannot be pruned, so nothing a client can repeat at line rate may write one
//! event per repetition: failed authentications from one address (`lockout.rs`), and 429s to
//! one key that keeps sending past its limits. The first refusal of a subject in a window is
//! written as usual; the rest are counted and written as one summary event whose detail reads
//! `suppressed: N …` when the window ends (or when the service stops). Every refusal still has
//! its log line and its metric, and the written events' counts add up to the refusals.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wardgate_audit::{AuditEvent, Auditor};

/// Most subjects tracked at once; past it, new subjects share one window (`None`), so the
/// table neither grows without bound nor lets a flood of fresh subjects write at line rate.
pub const MAX_TRACKED: usize = 100_000;

/// What refusals are folded by, and the summary written for them.
pub trait FoldSubject: Clone + Eq + Hash + Send + Sync + 'static {
    /// The summary of `count` refusals folded in a window; `subject` is `None` for the shared
    /// window of subjects that found the table full.
    fn summary(subject: Option<&Self>, count: u64, window: Duration) -> AuditEvent;
}

/// Refusals of one subject not written one by one in its current window.
#[derive(Debug)]
struct Fold {
    started: Instant,
    folded: u64,
}

/// One subject's refusals folded in a window: written as one summary event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folded<K> {
    pub subject: Option<K>,
    pub count: u64,
}

impl<K: FoldSubject> Folded<K> {
    pub fn event(&self, window: Duration) -> AuditEvent {
        K::summary(self.subject.as_ref(), self.count, window)
    }
}

/// The windows of every subject refused lately.
#[derive(Debug)]
pub struct AuditFolds<K> {
    window: Duration,
    folds: Mutex<HashMap<Option<K>, Fold>>,
    /// Whether the task that writes ended windows' summaries has been started.
    sweeping: AtomicBool,
}

impl<K: FoldSubject> AuditFolds<K> {
    /// Folds over `window`; zero writes every refusal on its own.
    pub fn new(window: Duration) -> AuditFolds<K> {
        AuditFolds {
            window,
            folds: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Whether this refusal of `subject` is written on its own (the first in its window) or
    /// folded into the window's summary. Summaries of windows that have ended are written
    /// through `audit` (by a background task started on first use, and here when the same
    /// subject is refused again).
    pub fn fold(self: &Arc<Self>, subject: K, now: Instant, audit: &Auditor) -> bool {
        if self.window.is_zero() {
            return true;
        }
        self.start_sweeper(audit);
        let mut ended = None;
        let write = {
            let mut folds = self.folds.lock().unwrap_or_else(|e| e.into_inner());
            let mut key = Some(subject);
            if !folds.contains_key(&key) && folds.len() >= MAX_TRACKED {
                key = None;
            }
            match folds.get_mut(&key) {
                Some(f) if now.saturating_duration_since(f.started) < self.window => {
                    f.folded += 1;
                    false
                }
                Some(f) => {
                    if f.folded > 0 {
                        ended = Some(Folded {
                            subject: key,
                            count: f.folded,
                        });
                    }
                    *f = Fold {
                        started: now,
                        folded: 0,
                    };
                    true
                }
                None => {
                    folds.insert(
                        key,
                        Fold {
                            started: now,
                            folded: 0,
                        },
                    );
                    true
                }
            }
        };
        if let Some(f) = ended {
            write_in_background(audit, vec![f], self.window);
        }
        write
    }

    /// Removes the windows that ended by `now`, returning those with refusals folded.
    pub fn take_ended(&self, now: Instant) -> Vec<Folded<K>> {
        let mut out = Vec::new();
        let mut folds = self.folds.lock().unwrap_or_else(|e| e.into_inner());
        folds.retain(|subject, f| {
            if now.saturating_duration_since(f.started) < self.window {
                return true;
            }
            if f.folded > 0 {
                out.push(Folded {
                    subject: subject.clone(),
                    count: f.folded,
                });
            }
            false
        });
        out
    }

    /// Writes every window's folded refusals, ended or not, and waits for the commits: what a
    /// stop would otherwise lose.
    pub async fn flush(&self, audit: &Auditor) {
        let all: Vec<Folded<K>> = {
            let mut folds = self.folds.lock().unwrap_or_else(|e| e.into_inner());
            folds
                .drain()
                .filter(|(_, f)| f.folded > 0)
                .map(|(subject, f)| Folded {
                    subject,
                    count: f.folded,
                })
                .collect()
        };
        append_summaries(audit, all, self.window).await;
    }

    fn start_sweeper(self: &Arc<Self>, audit: &Auditor) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<AuditFolds<K>> = Arc::downgrade(self);
        let audit = audit.clone();
        let window = self.window;
        // Half a window between sweeps: a summary is written at most 1.5 windows after its
        // window began. The task ends with its owner.
        let tick = (window / 2).max(Duration::from_millis(100));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(folds) = weak.upgrade() else {
                    break;
                };
                let ended = folds.take_ended(Instant::now());
                drop(folds);
                if !ended.is_empty() {
                    write_in_background(&audit, ended, window);
                }
            }
        });
    }

    #[cfg(test)]
    pub(crate) fn insert_for_test(&self, subject: K, started: Instant, folded: u64) {
        self.folds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Some(subject), Fold { started, folded });
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.folds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// Writes summaries in the background (nobody waits for them).
fn write_in_background<K: FoldSubject>(audit: &Auditor, ended: Vec<Folded<K>>, window: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let audit = audit.clone();
    rt.spawn(async move { append_summaries(&audit, ended, window).await });
}

/// Appends one summary event per folded window, waiting for each commit.
async fn append_summaries<K: FoldSubject>(
    audit: &Auditor,
    folded: Vec<Folded<K>>,
    window: Duration,
) {
    for f in folded {
        if let Err(e) = audit.append(f.event(window)).await {
            tracing::error!(error = %e, "could not write a summary of folded refusals");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wardgate_audit::{ActorKind, EventType, Timestamp};

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Name(&'static str);

    impl FoldSubject for Name {
        fn summary(subject: Option<&Self>, count: u64, _window: Duration) -> AuditEvent {
            let actor = subject.map_or("shared", |n| n.0);
            let mut e = AuditEvent::new(
                Timestamp::now(),
                EventType::Request,
                actor,
                ActorKind::Service,
            );
            e.outcome = Some(wardgate_audit::Outcome::Deny);
            e.detail = Some(format!("suppressed: {count}"));
            e
        }
    }

    async fn auditor() -> (Arc<wardgate_audit::MemoryAuditStore>, Auditor) {
        let store = Arc::new(wardgate_audit::MemoryAuditStore::new());
        let config = wardgate_audit::AuditorConfig {
            origin: "test/fold".into(),
            ..wardgate_audit::AuditorConfig::default()
        };
        let audit = Auditor::start(
            store.clone(),
            wardgate_audit::SignerKey::generate("test/fold").unwrap(),
            config,
        )
        .await
        .unwrap();
        (store, audit)
    }

    #[tokio::test]
    async fn the_first_refusal_in_a_window_is_written_and_the_rest_are_counted() {
        let (_store, audit) = auditor().await;
        let folds = Arc::new(AuditFolds::new(Duration::from_secs(60)));
        let t0 = Instant::now();
        assert!(folds.fold(Name("a"), t0, &audit));
        assert!(!folds.fold(Name("a"), t0 + Duration::from_secs(1), &audit));
        assert!(!folds.fold(Name("a"), t0 + Duration::from_secs(59), &audit));
        // Another subject has its own window; a new window writes again.
        assert!(folds.fold(Name("b"), t0, &audit));
        assert!(folds.fold(Name("a"), t0 + Duration::from_secs(60), &audit));
        // Zero folds nothing.
        let off = Arc::new(AuditFolds::new(Duration::ZERO));
        assert!(off.fold(Name("a"), t0, &audit));
        assert!(off.fold(Name("a"), t0, &audit));
        audit.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_stop_writes_the_windows_that_have_not_ended() {
        use wardgate_audit::AuditStore as _;
        let (store, audit) = auditor().await;
        let folds = AuditFolds::new(Duration::from_secs(60));
        let t0 = Instant::now();
        folds.insert_for_test(Name("a"), t0, 5);
        folds.insert_for_test(Name("b"), t0, 0);
        folds.flush(&audit).await;
        let entries = store.read_range(0, 100).await.unwrap();
        let summaries: Vec<_> = entries
            .iter()
            .filter(|e| e.event.event_type == EventType::Request)
            .collect();
        // One summary, for the subject that had refusals folded, with its count.
        assert_eq!(summaries.len(), 1, "{entries:?}");
        assert_eq!(summaries[0].event.actor_id, "a");
        assert_eq!(summaries[0].event.detail.as_deref(), Some("suppressed: 5"));
        assert!(folds.is_empty());
        audit.shutdown().await.unwrap();
    }

    #[test]
    fn ended_windows_are_taken_once_with_their_counts() {
        let folds = AuditFolds::new(Duration::from_secs(60));
        let t0 = Instant::now();
        folds.insert_for_test(Name("a"), t0, 7);
        assert!(folds.take_ended(t0 + Duration::from_secs(59)).is_empty());
        let ended = folds.take_ended(t0 + Duration::from_secs(60));
        assert_eq!(
            ended,
            [Folded {
                subject: Some(Name("a")),
                count: 7
            }]
        );
        assert!(folds.take_ended(t0 + Duration::from_secs(120)).is_empty());
    }
}
