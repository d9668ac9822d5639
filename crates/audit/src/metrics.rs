//! The audit writer's metrics (docs/METRICS.md), recorded through the `metrics` facade: a
//! no-op unless the process installed a recorder (`wardgate_gateway::metrics::install`).

use std::time::Instant;

/// Histogram of group commits, seconds: a batch into the log, or into the shared log's queue.
pub const COMMIT_SECONDS: &str = "wardgate_audit_commit_seconds";
/// Its bucket boundaries: a flushed local commit takes a fraction of a millisecond to a few,
/// a database round trip a few milliseconds, a struggling disk or database up to a second.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Counter of group commits that failed (their requests failed closed).
pub const COMMIT_FAILURES: &str = "wardgate_audit_commit_failures_total";

/// Records one group commit that began at `started`, successful or not.
pub(crate) fn committed(started: Instant, ok: bool) {
    if ok {
        metrics::histogram!(COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    } else {
        metrics::counter!(COMMIT_FAILURES).increment(1);
    }
}
