//! Tests of the group-commit writer against the in-memory store, wrapped to count batches, hold
//! a commit open, or fail.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::conformance::sample_event;
use crate::memory::MemoryAuditStore;
use crate::merkle;
use crate::store::AuditFilter;
use crate::verify::verify_store;

/// A memory store that records batch sizes and can hold each append at a gate or fail it.
struct TestStore {
    inner: MemoryAuditStore,
    batches: Mutex<Vec<usize>>,
    fail: AtomicBool,
    gated: bool,
    entered: Notify,
    permits: Semaphore,
    /// While set, `add_checkpoint` waits for a `checkpoint_permits` permit.
    hold_checkpoints: AtomicBool,
    checkpoint_permits: Semaphore,
    /// What `blocks` answers.
    blocks: bool,
    /// For each append: the calling thread's name and whether it may block there.
    callers: Mutex<Vec<(Option<String>, bool)>>,
}

impl Default for TestStore {
    fn default() -> Self {
        Self {
            inner: MemoryAuditStore::new(),
            batches: Mutex::default(),
            fail: AtomicBool::new(false),
            gated: false,
            entered: Notify::new(),
            permits: Semaphore::new(0),
            hold_checkpoints: AtomicBool::new(false),
            checkpoint_permits: Semaphore::new(0),
            blocks: false,
            callers: Mutex::default(),
        }
    }
}

impl TestStore {
    fn gated() -> Self {
        Self {
            gated: true,
            ..Self::default()
        }
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl AuditStore for TestStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        self.batches.lock().unwrap().push(events.len());
        self.callers.lock().unwrap().push((
            std::thread::current().name().map(str::to_owned),
            crate::store::blocking_allowed(),
        ));
        if self.gated {
            self.entered.notify_one();
            self.permits.acquire().await.unwrap().forget();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(AuditStoreError::Unavailable("injected failure".into()));
        }
        self.inner.append(events).await
    }
    async fn size(&self) -> Result<u64, AuditStoreError> {
        self.inner.size().await
    }
    async fn read_range(&self, start: u64, limit: u32) -> Result<Vec<AuditEntry>, AuditStoreError> {
        self.inner.read_range(start, limit).await
    }
    async fn leaf_hashes(
        &self,
        start: u64,
        limit: u32,
    ) -> Result<Vec<merkle::Hash>, AuditStoreError> {
        self.inner.leaf_hashes(start, limit).await
    }
    async fn add_checkpoint(&self, c: &StoredCheckpoint) -> Result<(), AuditStoreError> {
        if self.hold_checkpoints.load(Ordering::SeqCst) {
            self.checkpoint_permits.acquire().await.unwrap().forget();
        }
        self.inner.add_checkpoint(c).await
    }
    async fn checkpoints(
        &self,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, AuditStoreError> {
        self.inner.checkpoints(from, limit).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditStoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn query(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, AuditStoreError> {
        self.inner.query(f).await
    }
    fn blocks(&self) -> bool {
        self.blocks
    }
}

/// A store that blocks is called from the writer's own thread, the one place it may block;
/// any other store from a task on the caller's runtime, where it may not. Automatic checkpoints
/// of either are sealed on the caller's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_blocks_is_called_on_the_writers_own_thread() {
    for blocks in [true, false] {
        let store = Arc::new(TestStore {
            blocks,
            ..TestStore::default()
        });
        let auditor = Auditor::start(store.clone(), key(), config(2))
            .await
            .unwrap();
        for i in 0..5 {
            auditor.append(sample_event(i)).await.unwrap();
        }
        auditor.shutdown().await.unwrap();
        let callers = store.callers.lock().unwrap().clone();
        assert!(!callers.is_empty());
        for (thread, allowed) in callers {
            assert_eq!(allowed, blocks, "blocks={blocks}: called on {thread:?}");
            assert_eq!(
                thread.as_deref() == Some("audit-writer"),
                blocks,
                "blocks={blocks}: called on {thread:?}"
            );
        }
        assert!(
            !crate::store::blocking_allowed(),
            "never on a runtime thread"
        );
        let report = verify_store(store.as_ref(), vec![auditor.verifier().clone()], &[], None)
            .await
            .unwrap();
        assert_eq!(report.entries, 5);
    }
}

fn config(every: u64) -> AuditorConfig {
    AuditorConfig {
        origin: "test/audit".into(),
        checkpoint_every: every,
        ..AuditorConfig::default()
    }
}

fn key() -> SignerKey {
    SignerKey::generate("test/audit").unwrap()
}

async fn all_leaves(store: &dyn AuditStore) -> Vec<merkle::Hash> {
    store.leaf_hashes(0, MAX_READ).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_gap_free_seqs_and_the_root_matches() {
    let store = Arc::new(MemoryAuditStore::new());
    let key = key();
    let verifier = key.verifier();
    let auditor = Auditor::start(store.clone(), key, config(100))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let auditor = auditor.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    seqs.push(auditor.append(sample_event(t * 100 + i)).await.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..800).collect::<Vec<_>>());
    assert_eq!(auditor.size(), 800);
    auditor.shutdown().await.unwrap();

    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest.size, 800);
    assert_eq!(latest.root, merkle::root(&all_leaves(store.as_ref()).await));
    let report = verify_store(
        store.as_ref(),
        vec![verifier],
        &[],
        Some("test/audit".into()),
    )
    .await
    .unwrap();
    assert_eq!((report.entries, report.proven), (800, 800));
    // One at start (the empty log), one at shutdown, and automatic ones whenever 100 or more
    // entries are unsealed and the previous one has been sealed in the background.
    assert!(report.log_checkpoints >= 3, "{report:?}");
    // Events are stored as given, each at the seq its caller was told.
    let stored = store.read_range(0, MAX_READ).await.unwrap();
    assert!(stored.iter().all(|e| e.event.validate().is_ok()));
}

/// Starts one append and returns once the writer is inside the store's `append` with it.
async fn hold_first_commit(
    auditor: &Auditor,
    store: &TestStore,
) -> tokio::task::JoinHandle<Result<u64, AuditError>> {
    let a = auditor.clone();
    let first = tokio::spawn(async move { a.append(sample_event(0)).await });
    store.entered.notified().await;
    first
}

async fn queue(
    auditor: &Auditor,
    range: std::ops::Range<u64>,
) -> Vec<tokio::task::JoinHandle<Result<u64, AuditError>>> {
    let n = (range.end - range.start) as usize;
    let handles = range
        .map(|i| {
            let a = auditor.clone();
            tokio::spawn(async move { a.append(sample_event(i)).await })
        })
        .collect();
    // No sleeps: yield until every one of them is in the queue.
    while auditor.queued() < n {
        tokio::task::yield_now().await;
    }
    handles
}

#[tokio::test]
async fn events_arriving_during_a_commit_share_the_next_one() {
    let store = Arc::new(TestStore::gated());
    let auditor = Auditor::start(store.clone(), key(), config(1000))
        .await
        .unwrap();
    let first = hold_first_commit(&auditor, &store).await;
    let rest = queue(&auditor, 1..100).await;
    store.permits.add_permits(1000);
    assert_eq!(first.await.unwrap().unwrap(), 0);
    let mut seqs = Vec::new();
    for h in rest {
        seqs.push(h.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..100).collect::<Vec<_>>());
    assert_eq!(store.batches(), [1, 99]);
}

#[tokio::test]
async fn a_store_failure_reaches_every_waiter_and_stores_nothing() {
    let store = Arc::new(TestStore::gated());
    let auditor = Auditor::start(store.clone(), key(), config(1000))
        .await
        .unwrap();
    let first = hold_first_commit(&auditor, &store).await;
    let rest = queue(&auditor, 1..50).await;
    store.fail.store(true, Ordering::SeqCst);
    store.permits.add_permits(1000);
    for h in std::iter::once(first).chain(rest) {
        let result = h.await.unwrap();
        assert!(
            matches!(result, Err(AuditError::Unavailable(_))),
            "{result:?}"
        );
    }
    assert_eq!(store.batches(), [1, 49]);
    assert_eq!(store.size().await.unwrap(), 0);
    // The writer recovers: the next event is seq 0, no gap.
    store.fail.store(false, Ordering::SeqCst);
    assert_eq!(auditor.append(sample_event(9)).await.unwrap(), 0);
}

/// Everything logged on this thread while the guard lives.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Logged, tracing::subscriber::DefaultGuard) {
    let logged = Logged::default();
    let writer = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (logged, tracing::subscriber::set_default(subscriber))
}

/// A failed commit is logged with what the store said went wrong, not only that the audit log
/// is unavailable (the operator needs the cause: a full disk, a refused connection).
#[tokio::test]
async fn a_failed_commit_is_logged_with_its_cause() {
    let (logged, _guard) = capture_logs();
    let store = Arc::new(TestStore::default());
    let auditor = Auditor::start(store.clone(), key(), config(1000))
        .await
        .unwrap();
    store.fail.store(true, Ordering::SeqCst);
    auditor.append(sample_event(1)).await.unwrap_err();
    let text = String::from_utf8_lossy(&logged.0.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("audit commit failed"))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned();
    assert!(line.contains("audit log unavailable"), "{line}");
    assert!(line.contains("injected failure"), "{line}");
}

#[tokio::test]
async fn a_full_queue_pushes_back() {
    let store = Arc::new(TestStore::gated());
    let cfg = AuditorConfig {
        queue_capacity: 4,
        ..config(1000)
    };
    let auditor = Auditor::start(store.clone(), key(), cfg).await.unwrap();
    let first = hold_first_commit(&auditor, &store).await;
    let pending: Vec<PendingAppend> = (1..5)
        .map(|i| auditor.try_submit(sample_event(i)).unwrap())
        .collect();
    assert!(matches!(
        auditor.try_submit(sample_event(5)),
        Err(AuditError::Busy)
    ));
    store.permits.add_permits(1000);
    assert_eq!(first.await.unwrap().unwrap(), 0);
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(p.await.unwrap());
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[tokio::test]
async fn detached_submissions_wait_for_room_instead_of_being_dropped() {
    let store = Arc::new(TestStore::gated());
    let cfg = AuditorConfig {
        queue_capacity: 2,
        ..config(1000)
    };
    let auditor = Auditor::start(store.clone(), key(), cfg).await.unwrap();
    let first = hold_first_commit(&auditor, &store).await;
    auditor.submit_detached(sample_event(1)).unwrap();
    auditor.submit_detached(sample_event(2)).unwrap();
    // The queue is full: this one waits in the background.
    auditor.submit_detached(sample_event(3)).unwrap();
    store.permits.add_permits(1000);
    assert_eq!(first.await.unwrap().unwrap(), 0);
    while auditor.size() < 4 {
        tokio::task::yield_now().await;
    }
    let stored = store.read_range(0, 10).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|e| e.event.request_id.clone()).collect();
    let want: Vec<_> = (0..4).map(|i| sample_event(i).request_id).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn a_shutdown_lets_submissions_waiting_for_room_in_first() {
    // A request that ends while the queue is full hands its terminal event to a background
    // wait; a shutdown that follows (SIGTERM after the drain) must not overtake it, even when
    // it asks for room before the background task has run.
    let store = Arc::new(TestStore::gated());
    let cfg = AuditorConfig {
        queue_capacity: 2,
        ..config(1000)
    };
    let auditor = Auditor::start(store.clone(), key(), cfg).await.unwrap();
    let first = hold_first_commit(&auditor, &store).await;
    auditor.submit_detached(sample_event(1)).unwrap();
    auditor.submit_detached(sample_event(2)).unwrap();
    // The queue is full: this one waits in the background.
    auditor.submit_detached(sample_event(3)).unwrap();
    let opener = store.clone();
    tokio::spawn(async move { opener.permits.add_permits(1000) });
    auditor.shutdown().await.unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 0);
    let stored = store.read_range(0, 10).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|e| e.event.request_id.clone()).collect();
    let want: Vec<_> = (0..4).map(|i| sample_event(i).request_id).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn submit_waits_for_room_and_reports_the_commit() {
    let store = Arc::new(TestStore::gated());
    let cfg = AuditorConfig {
        queue_capacity: 1,
        ..config(1000)
    };
    let auditor = Auditor::start(store.clone(), key(), cfg).await.unwrap();
    let first = hold_first_commit(&auditor, &store).await;
    let a = auditor.submit(sample_event(1)).unwrap();
    // Full: `try_submit` refuses, `submit` waits in the background.
    assert!(matches!(
        auditor.try_submit(sample_event(9)),
        Err(AuditError::Busy)
    ));
    let b = auditor.submit(sample_event(2)).unwrap();
    store.permits.add_permits(1000);
    assert_eq!(first.await.unwrap().unwrap(), 0);
    assert_eq!(a.await.unwrap(), 1);
    assert_eq!(b.await.unwrap(), 2);
}

#[tokio::test]
async fn invalid_events_are_refused_before_the_queue() {
    let store = Arc::new(TestStore::default());
    let auditor = Auditor::start(store.clone(), key(), config(1000))
        .await
        .unwrap();
    let bad = AuditEvent {
        outcome: None,
        ..sample_event(1)
    };
    assert!(matches!(
        auditor.append(bad).await,
        Err(AuditError::Invalid(_))
    ));
    assert!(store.batches().is_empty());
}

#[tokio::test]
async fn appends_after_shutdown_fail_closed() {
    let store = Arc::new(MemoryAuditStore::new());
    let auditor = Auditor::start(store.clone(), key(), config(1000))
        .await
        .unwrap();
    auditor.append(sample_event(0)).await.unwrap();
    let other = auditor.clone();
    auditor.shutdown().await.unwrap();
    assert!(matches!(
        other.append(sample_event(1)).await,
        Err(AuditError::Closed)
    ));
    // The final checkpoint covers the entry.
    assert_eq!(store.latest_checkpoint().await.unwrap().unwrap().size, 1);
}

#[tokio::test(start_paused = true)]
async fn checkpoints_come_every_n_entries_or_after_the_interval() {
    let store = Arc::new(MemoryAuditStore::new());
    let cfg = AuditorConfig {
        checkpoint_every: 5,
        checkpoint_interval: Duration::from_secs(10),
        ..config(5)
    };
    let auditor = Auditor::start(store.clone(), key(), cfg).await.unwrap();
    let sizes = |cps: Vec<StoredCheckpoint>| cps.iter().map(|c| c.size).collect::<Vec<_>>();
    // The empty log is checkpointed at start.
    assert_eq!(sizes(store.checkpoints(0, 100).await.unwrap()), [0]);
    for i in 0..6 {
        auditor.append(sample_event(i)).await.unwrap();
    }
    // The fifth append started a checkpoint, sealed beside the sixth.
    checkpoints_reach(store.as_ref(), &[0, 5]).await;
    // With the clock paused, this jumps past the writer's 10 s tick, which runs first.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(sizes(store.checkpoints(0, 100).await.unwrap()), [0, 5, 6]);
    // Nothing new: no further checkpoint.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(sizes(store.checkpoints(0, 100).await.unwrap()), [0, 5, 6]);
}

/// Waits (yielding, so it also works with the clock paused) until the stored checkpoints have
/// exactly the sizes `want`; automatic checkpoints are sealed on a task of their own.
async fn checkpoints_reach(store: &dyn AuditStore, want: &[u64]) {
    let mut sizes = Vec::new();
    for _ in 0..10_000 {
        sizes = store
            .checkpoints(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|c| c.size)
            .collect::<Vec<_>>();
        if sizes == want {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("checkpoints {sizes:?}, expected {want:?}");
}

#[tokio::test]
async fn a_slow_checkpoint_does_not_hold_up_appends() {
    let store = Arc::new(TestStore::default());
    let auditor = Auditor::start(store.clone(), key(), config(3))
        .await
        .unwrap();
    store.hold_checkpoints.store(true, Ordering::SeqCst);
    // The third entry starts a checkpoint that cannot be stored; the appends after it commit
    // anyway, and no second checkpoint starts while the first is in flight.
    tokio::time::timeout(Duration::from_secs(10), async {
        for i in 0..10 {
            assert_eq!(auditor.append(sample_event(i)).await.unwrap(), i);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("appends waited for the checkpoint"));
    checkpoints_reach(store.as_ref(), &[0]).await;
    store.checkpoint_permits.add_permits(100);
    checkpoints_reach(store.as_ref(), &[0, 3]).await;
    // Once it is sealed, the next commit starts the next one, covering everything.
    auditor.append(sample_event(10)).await.unwrap();
    checkpoints_reach(store.as_ref(), &[0, 3, 11]).await;
    auditor.shutdown().await.unwrap();
    checkpoints_reach(store.as_ref(), &[0, 3, 11]).await;
}

#[tokio::test]
async fn restart_resumes_the_tree_and_the_witness_sees_every_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let witness_path = dir.path().join("witness.jsonl");
    let store = Arc::new(MemoryAuditStore::new());
    let key_text = key().to_private_string();
    let cfg = AuditorConfig {
        witness_path: Some(witness_path.clone()),
        ..config(4)
    };

    let auditor = Auditor::start(
        store.clone(),
        SignerKey::parse(&key_text).unwrap(),
        cfg.clone(),
    )
    .await
    .unwrap();
    for i in 0..10 {
        assert_eq!(auditor.append(sample_event(i)).await.unwrap(), i);
    }
    auditor.shutdown().await.unwrap();

    let auditor = Auditor::start(store.clone(), SignerKey::parse(&key_text).unwrap(), cfg)
        .await
        .unwrap();
    assert_eq!(auditor.size(), 10);
    for i in 10..13 {
        assert_eq!(auditor.append(sample_event(i)).await.unwrap(), i);
    }
    let verifier = auditor.verifier().clone();
    auditor.shutdown().await.unwrap();

    let stored: Vec<String> = store
        .checkpoints(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    let witnessed = crate::witness::read(&witness_path).unwrap();
    assert!(witnessed.skipped_lines.is_empty());
    assert_eq!(witnessed.notes, stored);
    let sizes: Vec<u64> = store
        .checkpoints(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect();
    // One at 4; the next at 8, or later (9) or not at all if the one at 4 was still being
    // sealed in the background then; 10 at shutdown. After the restart at 10, three entries
    // stay below the threshold of 4: sealed at shutdown.
    assert!(
        [&[0, 4, 8, 10, 13][..], &[0, 4, 9, 10, 13], &[0, 4, 10, 13]].contains(&sizes.as_slice()),
        "{sizes:?}"
    );
    let report = verify_store(store.as_ref(), vec![verifier], &witnessed.notes, None)
        .await
        .unwrap();
    assert_eq!(report.entries, 13);
    assert_eq!(report.proven, 13);
    assert_eq!(report.witness_checkpoints, stored.len());
}

/// A log that lacks the last checkpoint of its witness file (restored from an older backup, or
/// cut back) is refused at start, and neither it nor the witness file is written; with the
/// witness file moved aside (what the disaster-recovery runbook says) it starts.
#[tokio::test]
async fn a_log_older_than_its_witness_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let witness_path = dir.path().join("witness.jsonl");
    let key_text = key().to_private_string();
    let cfg = AuditorConfig {
        witness_path: Some(witness_path.clone()),
        ..config(4)
    };
    let live = Arc::new(MemoryAuditStore::new());
    let auditor = Auditor::start(
        live.clone(),
        SignerKey::parse(&key_text).unwrap(),
        cfg.clone(),
    )
    .await
    .unwrap();
    for i in 0..3 {
        auditor.append(sample_event(i)).await.unwrap();
    }
    auditor.shutdown().await.unwrap();
    let witnessed = std::fs::read(&witness_path).unwrap();

    // The "backup": a log from before any of it.
    let older = Arc::new(MemoryAuditStore::new());
    let err = Auditor::start(
        older.clone(),
        SignerKey::parse(&key_text).unwrap(),
        cfg.clone(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(&err, AuditError::Inconsistent(why) if why.contains("size 3")
            && why.contains("audit.witness_file")),
        "{err}"
    );
    assert_eq!(older.size().await.unwrap(), 0);
    assert!(older.latest_checkpoint().await.unwrap().is_none());
    assert_eq!(std::fs::read(&witness_path).unwrap(), witnessed);

    // The log it came from still starts with the same witness file.
    let again = Auditor::start(live, SignerKey::parse(&key_text).unwrap(), cfg.clone())
        .await
        .unwrap();
    again.shutdown().await.unwrap();

    // The witness file moved aside (kept as the record): the older log starts.
    let moved = AuditorConfig {
        witness_path: Some(dir.path().join("witness-after-restore.jsonl")),
        ..cfg
    };
    let restored = Auditor::start(older, SignerKey::parse(&key_text).unwrap(), moved)
        .await
        .unwrap();
    restored.append(sample_event(0)).await.unwrap();
    restored.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_checkpoint_covers_what_another_writer_appended_meanwhile() {
    let store = Arc::new(MemoryAuditStore::new());
    let server = Auditor::start(store.clone(), key(), config(1000))
        .await
        .unwrap();
    for i in 0..3 {
        server.append(sample_event(i)).await.unwrap();
    }
    // A second writer (the CLI) appends and signs a larger tree.
    let cli = Auditor::start(store.clone(), key(), config(1000))
        .await
        .unwrap();
    for i in 3..5 {
        cli.append(sample_event(i)).await.unwrap();
    }
    cli.shutdown().await.unwrap();
    assert_eq!(store.latest_checkpoint().await.unwrap().unwrap().size, 5);
    // The first writer's next checkpoint signs all five, not its own three.
    let signed = server.checkpoint().await.unwrap();
    assert_eq!(signed.checkpoint.size, 5);
    assert_eq!(server.size(), 5);
    assert_eq!(
        signed.checkpoint.root,
        merkle::root(&all_leaves(store.as_ref()).await)
    );
    assert_eq!(server.append(sample_event(5)).await.unwrap(), 5);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_signing_key_continues_the_same_tree() {
    let store = Arc::new(MemoryAuditStore::new());
    let old = key();
    let old_v = old.verifier();
    let auditor = Auditor::start(store.clone(), old, config(4)).await.unwrap();
    for i in 0..5 {
        auditor.append(sample_event(i)).await.unwrap();
    }
    auditor.shutdown().await.unwrap();
    let new = key();
    let new_v = new.verifier();
    let auditor = Auditor::start(store.clone(), new, config(4)).await.unwrap();
    auditor.append(sample_event(5)).await.unwrap();
    auditor.shutdown().await.unwrap();
    // Both keys together verify the whole log; the old key alone does not verify the new
    // checkpoints.
    verify_store(store.as_ref(), vec![old_v.clone(), new_v], &[], None)
        .await
        .unwrap();
    assert!(
        verify_store(store.as_ref(), vec![old_v], &[], None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    let store: Arc<dyn AuditStore> = Arc::new(MemoryAuditStore::new());
    for cfg in [
        AuditorConfig {
            origin: String::new(),
            ..config(1)
        },
        config(0),
        AuditorConfig {
            max_batch: 0,
            ..config(1)
        },
        AuditorConfig {
            queue_capacity: 0,
            ..config(1)
        },
    ] {
        assert!(matches!(
            Auditor::start(store.clone(), key(), cfg).await,
            Err(AuditError::Config(_))
        ));
    }
}

mod shared_log {
    //! Several writers over one shared log, as several gateway instances over one database.

    use super::*;
    use crate::shared::SharedLog;

    fn instance(name: &str) -> SequencerConfig {
        SequencerConfig {
            holder: name.into(),
            lease_ttl: Duration::from_millis(300),
            poll_interval: Duration::from_millis(10),
            newer_release_backoff: crate::writer::DEFAULT_NEWER_RELEASE_BACKOFF,
        }
    }

    /// The same signing key in every instance, as the deployment hands it to each.
    fn same_key(key: &SignerKey) -> SignerKey {
        SignerKey::parse(&key.to_private_string()).unwrap()
    }

    async fn sequenced(store: &MemoryAuditStore, n: u64) {
        for _ in 0..500 {
            if store.size().await.unwrap() == n && store.pending_count().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "not sequenced within 5 s: {} in the log, {} queued",
            store.size().await.unwrap(),
            store.pending_count().await.unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_make_one_log_that_verifies() {
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let a = Auditor::start_shared(store.clone(), same_key(&key), config(7), instance("a"))
            .await
            .unwrap();
        let b = Auditor::start_shared(store.clone(), same_key(&key), config(7), instance("b"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..100u64 {
            let auditor = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                auditor.append(sample_event(i)).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        sequenced(&store, 100).await;
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        // Every event once, and one tree whose checkpoints (signed by whichever instance held
        // the lease) all verify.
        let mut got: Vec<_> = store
            .read_range(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.request_id.unwrap())
            .collect();
        got.sort();
        let mut want: Vec<_> = (0..100u64)
            .map(|i| sample_event(i).request_id.unwrap())
            .collect();
        want.sort();
        assert_eq!(got, want);
        let report = verify_store(store.as_ref(), vec![key.verifier()], &[], None)
            .await
            .unwrap();
        assert_eq!(report.entries, 100);
        assert_eq!(
            report.proven, 100,
            "the last instance to stop signed it all"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_is_answered_once_queued_and_shows_as_pending_until_sequenced() {
        let store = Arc::new(MemoryAuditStore::new());
        // Someone else holds the lease (an instance that died a moment ago).
        let dead = store
            .acquire_lease("dead", Duration::from_millis(400))
            .await
            .unwrap()
            .unwrap();
        let a = Auditor::start_shared(store.clone(), key(), config(1000), instance("a"))
            .await
            .unwrap();
        a.append(sample_event(1)).await.unwrap();
        // Durable in the queue, visible as pending, not in the log: the holder is silent.
        assert_eq!(store.pending_count().await.unwrap(), 1);
        assert_eq!(store.size().await.unwrap(), 0);
        let pending = a
            .shared_log()
            .unwrap()
            .pending(&AuditFilter::default())
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].event, sample_event(1));
        // The dead holder's lease lapses; this instance takes over and sequences.
        sequenced(&store, 1).await;
        assert!(matches!(
            store
                .sequence(
                    &dead,
                    store.size().await.unwrap(),
                    10,
                    &crate::conformance::suite_key()
                )
                .await
                .unwrap(),
            crate::shared::Sequenced::LeaseLost
        ));
        a.shutdown().await.unwrap();
        let report = verify_store(store.as_ref(), vec![a.verifier().clone()], &[], None)
            .await
            .unwrap();
        assert_eq!((report.entries, report.proven), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clean_stop_hands_the_lease_over_at_once() {
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let slow = SequencerConfig {
            // Far longer than the test waits: only the release can hand it over.
            lease_ttl: Duration::from_secs(60),
            ..instance("a")
        };
        let a = Auditor::start_shared(store.clone(), same_key(&key), config(1000), slow)
            .await
            .unwrap();
        let b = Auditor::start_shared(
            store.clone(),
            same_key(&key),
            config(1000),
            SequencerConfig {
                lease_ttl: Duration::from_secs(60),
                poll_interval: Duration::from_millis(10),
                holder: "b".into(),
                ..instance("b")
            },
        )
        .await
        .unwrap();
        a.append(sample_event(0)).await.unwrap();
        b.append(sample_event(1)).await.unwrap();
        sequenced(&store, 2).await;
        // a holds the lease, so b cannot sign; its refusal says who does.
        let err = b.checkpoint().await.unwrap_err().to_string();
        assert!(err.contains("another instance holds"), "{err}");
        // a stops cleanly and gives the lease up: b takes it at its next ask, not after the
        // minute the lease would take to lapse.
        a.shutdown().await.unwrap();
        b.append(sample_event(2)).await.unwrap();
        let cp = b.checkpoint().await.unwrap();
        assert!(cp.note.contains("\n3\n"), "{}", cp.note);
        b.shutdown().await.unwrap();
        assert_eq!(store.pending_count().await.unwrap(), 0);
        let report = verify_store(store.as_ref(), vec![key.verifier()], &[], None)
            .await
            .unwrap();
        assert_eq!((report.entries, report.proven), (3, 3));
    }

    /// An instance with another signing key never signs the log: not at its start, and not
    /// when the lease comes free later (a black-box finding: two instances started together
    /// with different keys, and the second signed on once the lease moved to it). Nor does it
    /// go on answering as if its events were audited: once it sees the log is another key's,
    /// its appends fail closed (a later black-box finding: two instances started on an empty
    /// log with different keys; the loser stopped sequencing without a word and stayed ready).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_with_another_key_never_takes_the_log_over() {
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        // Both start on an empty log, so neither can tell at its start.
        let a = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("a"))
            .await
            .unwrap();
        let b = Auditor::start_shared(store.clone(), super::key(), config(1000), instance("b"))
            .await
            .unwrap();
        b.append(sample_event(0)).await.unwrap();
        sequenced(&store, 1).await;
        a.checkpoint().await.unwrap();
        // Within about a third of a lease b reads the log's checkpoint and stops.
        let mut waited = 0;
        while b.fault().is_none() && waited < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert!(
            matches!(b.fault(), Some(crate::AuditFault::WrongKey(_))),
            "{:?}",
            b.fault()
        );
        let err = b.append(sample_event(1)).await.unwrap_err().to_string();
        assert!(
            err.contains("does not verify with this instance's key"),
            "{err}"
        );
        a.shutdown().await.unwrap();
        // The lease is free now; b still never takes it.
        let err = b.checkpoint().await.unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        b.shutdown().await.unwrap_err();
        assert_eq!(store.pending_count().await.unwrap(), 0);
        // An instance with the wrong key started later refuses to start at all.
        let err = Auditor::start_shared(store.clone(), super::key(), config(1000), instance("d"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("WARDGATE_AUDIT_SIGNING_KEY"), "{err}");
        // The right key takes over and the log verifies with it alone.
        let c = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("c"))
            .await
            .unwrap();
        c.shutdown().await.unwrap();
        let report = verify_store(store.as_ref(), vec![key.verifier()], &[], None)
            .await
            .unwrap();
        assert_eq!((report.entries, report.proven), (1, 1));
    }

    /// Waits up to 3 s for `auditor` to find a fault.
    async fn faulted(auditor: &Auditor) -> crate::AuditFault {
        for _ in 0..300 {
            if let Some(f) = auditor.fault() {
                return f.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no fault found within 3 s");
    }

    /// Someone with write access to the database removes the newest entries and checkpoints
    /// and ends the lease, so that the next sequencer signs the shorter history (a black-box
    /// finding: `verify` then passed). Every instance that saw the removed part refuses to
    /// sequence again, with one named alert, and nobody signs over the gap; events are still
    /// queued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_rolled_back_in_the_database_is_never_signed_over() {
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let a = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("a"))
            .await
            .unwrap();
        let b = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("b"))
            .await
            .unwrap();
        for i in 0..20 {
            a.append(sample_event(i)).await.unwrap();
        }
        sequenced(&store, 20).await;
        a.checkpoint().await.unwrap();
        // b reads the log every third of a lease (100 ms here).
        tokio::time::sleep(Duration::from_millis(250)).await;
        store.rewind(10).unwrap();
        for auditor in [&a, &b] {
            let fault = faulted(auditor).await;
            assert!(
                matches!(fault, crate::AuditFault::RolledBack(_)),
                "{fault:?}"
            );
        }
        // Nobody signs the shorter history, and appends still land in the queue.
        b.append(sample_event(100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let latest = store.latest_checkpoint().await.unwrap();
        assert!(latest.as_ref().is_none_or(|c| c.size <= 10), "{latest:?}");
        assert_eq!(store.size().await.unwrap(), 10);
        assert_eq!(store.pending_count().await.unwrap(), 1);
        let err = b.checkpoint().await.unwrap_err().to_string();
        assert!(err.contains("entries were removed"), "{err}");
        a.shutdown().await.unwrap_err();
        b.shutdown().await.unwrap_err();
    }

    /// A sequencer died with entries sequenced after the last checkpoint (nobody has signed
    /// them yet); someone with write access to the database rewrites one of them, then the
    /// next sequencer takes over (a black-box finding: it signed the rewritten history). The
    /// entry's tag no longer verifies, so the next sequencer refuses to sign over it; the
    /// same tail untouched is signed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsigned_entry_rewritten_in_the_database_is_never_signed_over() {
        for rewrite in [false, true] {
            let store = Arc::new(MemoryAuditStore::new());
            let key = key();
            // The previous holder: sequenced five events and died before any checkpoint.
            let dead = store
                .acquire_lease("dead", Duration::from_secs(60))
                .await
                .unwrap()
                .unwrap();
            store
                .enqueue((0..5).map(sample_event).collect(), &key.queue_key())
                .await
                .unwrap();
            let done = store
                .sequence(&dead, store.size().await.unwrap(), 100, &key.queue_key())
                .await
                .unwrap();
            assert!(matches!(done, crate::shared::Sequenced::Entries(ref e) if e.len() == 5));
            if rewrite {
                let mut forged = sample_event(3);
                forged.actor_id = "someone-else".into();
                store.rewrite(3, forged).unwrap();
            }
            store.release_lease(&dead).await.unwrap();
            let started =
                Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("b"))
                    .await;
            if rewrite {
                let err = started.unwrap_err().to_string();
                assert!(err.contains("entry 3"), "{err}");
                assert_eq!(store.latest_checkpoint().await.unwrap(), None);
            } else {
                let b = started.unwrap();
                b.shutdown().await.unwrap();
                let report = verify_store(store.as_ref(), vec![key.verifier()], &[], None)
                    .await
                    .unwrap();
                assert_eq!((report.entries, report.proven), (5, 5));
            }
        }
    }

    /// A signed entry copied to the end of the log (its event and its valid tag, by someone
    /// with write access to the database) is never signed over: the next holder finds the tag
    /// at two positions and refuses, naming both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_replayed_into_the_log_is_never_signed_over() {
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let a = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("a"))
            .await
            .unwrap();
        for i in 0..5 {
            a.append(sample_event(i)).await.unwrap();
        }
        a.shutdown().await.unwrap();
        let signed = store.latest_checkpoint().await.unwrap().unwrap().size;
        assert_eq!(signed, 5);
        assert_eq!(store.append_copy(2).unwrap(), 5);
        let err = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("b"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("entry 5"), "{err}");
        assert!(err.contains("repeats entry 2"), "{err}");
        assert_eq!(store.latest_checkpoint().await.unwrap().unwrap().size, 5);
    }

    /// A row planted at the end of the log while a holder runs (written straight into the log
    /// by someone with write access to the database; a black-box finding: the holder wrote its
    /// next batch on top of it before noticing). The holder checks where the log ends inside
    /// its sequencing transaction: nothing goes on top, it stops for good naming the entry, and
    /// it signs nothing past its own entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_planted_at_the_end_of_the_log_is_never_written_over() {
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let a = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("a"))
            .await
            .unwrap();
        for i in 0..3 {
            a.append(sample_event(i)).await.unwrap();
        }
        sequenced(&store, 3).await;
        store.append(vec![sample_event(50)]).await.unwrap();
        a.append(sample_event(4)).await.unwrap();
        let fault = faulted(&a).await;
        let crate::AuditFault::RolledBack(why) = &fault else {
            panic!("{fault:?}");
        };
        assert!(why.contains("entry 3"), "{why}");
        assert_eq!(
            store.size().await.unwrap(),
            4,
            "a batch went on top of the planted row"
        );
        assert_eq!(store.pending_count().await.unwrap(), 1);
        let latest = store.latest_checkpoint().await.unwrap();
        assert!(latest.as_ref().is_none_or(|c| c.size <= 3), "{latest:?}");
        a.shutdown().await.unwrap_err();
    }

    /// A lease held by something that does not sequence (a row written by hand naming a
    /// holder that does not exist, with an expiry far away): once events have waited four
    /// leases with the log not growing, every instance raises `audit_sequencing_stalled` once
    /// and says so (`sequencing_stalled`), and says when sequencing goes on again.
    // On the test's own thread, where the log capture listens (the writer's tasks run on the
    // caller's runtime).
    #[tokio::test]
    async fn queued_events_that_nobody_sequences_raise_an_alert() {
        let (logged, _guard) = super::capture_logs();
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        store
            .acquire_lease("evil", Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        let quick = AuditorConfig {
            checkpoint_interval: Duration::from_millis(200),
            ..config(1000)
        };
        let b = Auditor::start_shared(store.clone(), same_key(&key), quick, instance("b"))
            .await
            .unwrap();
        b.append(sample_event(1)).await.unwrap();
        // Rows written straight into the log grow it, but sign nothing: no progress (a
        // black-box finding: such rows, one every few seconds, kept the alarm quiet).
        let planting = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 100.. {
                    store.append(vec![sample_event(i)]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let until = |want: bool| {
            let b = &b;
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while b.sequencing_stalled() != want && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                b.sequencing_stalled() == want
            }
        };
        assert!(until(true).await, "no stall noticed");
        planting.abort();
        let _ = planting.await;
        assert!(store.size().await.unwrap() >= 2);
        // The planted rows taken out again and the squatter's lease ended: b sequences and signs.
        store.rewind(0).unwrap();
        assert!(until(false).await, "the stall never ended");
        assert_eq!(store.size().await.unwrap(), 1);
        b.shutdown().await.unwrap();
        let text = String::from_utf8_lossy(&logged.0.lock().unwrap()).into_owned();
        let alerts: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(crate::STALL_ALERT))
            .collect();
        assert_eq!(alerts.len(), 2, "{text}");
        assert!(alerts[0].contains("ERROR"), "{}", alerts[0]);
        assert!(alerts[0].contains("1 queued audit events"), "{}", alerts[0]);
        assert!(alerts[1].contains("goes on again"), "{}", alerts[1]);
    }

    /// An instance that never sequenced remembers, across a restart, the largest checkpoint
    /// it verified of another instance's: its witness file records each one it sees, so a log
    /// rolled back while it was down (or before its restart) is refused at its start. (Its
    /// file used to hold only its own checkpoints, and a restart cleared the alarm.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_seen_from_another_instance_is_remembered_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let a = Auditor::start_shared(store.clone(), same_key(&key), config(1000), instance("a"))
            .await
            .unwrap();
        let b_config = AuditorConfig {
            witness_path: Some(dir.path().join("b-witness.jsonl")),
            ..config(1000)
        };
        let b = Auditor::start_shared(
            store.clone(),
            same_key(&key),
            b_config.clone(),
            instance("b"),
        )
        .await
        .unwrap();
        for i in 0..20 {
            a.append(sample_event(i)).await.unwrap();
        }
        a.checkpoint().await.unwrap();
        // b checks the log every third of its 300 ms lease.
        let witnessed = || {
            crate::witness::read(&dir.path().join("b-witness.jsonl"))
                .map(|w| w.notes.len())
                .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while witnessed() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(witnessed() > 0, "b never recorded a's checkpoint");
        b.shutdown().await.unwrap();
        a.shutdown().await.unwrap();
        store.rewind(10).unwrap();
        let err = Auditor::start_shared(store.clone(), same_key(&key), b_config, instance("b"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("witness file is no longer in the store")
                || err.contains("checkpoints were removed"),
            "{err}"
        );
    }

    /// A restarted instance remembers the largest checkpoint through its witness file: it
    /// refuses to start on a log that no longer holds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_witness_file_remembers_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let config = AuditorConfig {
            witness_path: Some(dir.path().join("witness.jsonl")),
            ..config(1000)
        };
        let a = Auditor::start_shared(store.clone(), same_key(&key), config.clone(), instance("a"))
            .await
            .unwrap();
        for i in 0..20 {
            a.append(sample_event(i)).await.unwrap();
        }
        a.shutdown().await.unwrap();
        // Untouched, it starts again and goes on.
        let a = Auditor::start_shared(store.clone(), same_key(&key), config.clone(), instance("a"))
            .await
            .unwrap();
        a.append(sample_event(20)).await.unwrap();
        a.shutdown().await.unwrap();
        store.rewind(15).unwrap();
        let err = Auditor::start_shared(store.clone(), same_key(&key), config, instance("a"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("witness file is no longer in the store")
                || err.contains("checkpoints were removed"),
            "{err}"
        );
    }

    /// The `alert` names of the log lines on this thread (the sequencer's tasks run on it in
    /// a current-thread runtime).
    #[derive(Clone, Default)]
    struct Alerts(Arc<Mutex<Vec<String>>>);

    impl Alerts {
        fn named(&self, name: &str) -> usize {
            self.0.lock().unwrap().iter().filter(|n| *n == name).count()
        }
    }

    impl tracing::Subscriber for Alerts {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            struct Name(Option<String>);
            impl tracing::field::Visit for Name {
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    if field.name() == "alert" {
                        self.0 = Some(value.to_owned());
                    }
                }
                fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
            }
            let mut name = Name(None);
            event.record(&mut name);
            if let Some(name) = name.0 {
                self.0.lock().unwrap().push(name);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// Takes the lease as `holder` once it is free (up to 5 s).
    async fn free_lease(store: &MemoryAuditStore, holder: &str) -> crate::shared::Lease {
        for _ in 0..500 {
            if let Some(lease) = store
                .acquire_lease(holder, Duration::from_secs(60))
                .await
                .unwrap()
            {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the lease was not given up within 5 s");
    }

    /// A queued row no release can read is set aside, with one named error, and the events
    /// after it are sequenced into a log that verifies (before: sequencing stopped there for
    /// good, logged only as "audit log unavailable").
    #[tokio::test]
    async fn a_corrupt_queue_row_is_set_aside_and_the_log_goes_on() {
        let alerts = Alerts::default();
        let _guard = tracing::subscriber::set_default(alerts.clone());
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let tag = key.queue_key().tag(b"\x00 damaged").as_bytes().to_vec();
        let a = Auditor::start_shared(store.clone(), key, config(1000), instance("a"))
            .await
            .unwrap();
        a.append(sample_event(0)).await.unwrap();
        let bad = store
            .enqueue_raw(b"\x00 damaged".to_vec(), Some(tag))
            .unwrap();
        a.append(sample_event(1)).await.unwrap();
        sequenced(&store, 3).await;
        a.shutdown().await.unwrap();
        let report = verify_store(store.as_ref(), vec![a.verifier().clone()], &[], None)
            .await
            .unwrap();
        assert_eq!((report.entries, report.proven), (3, 3));
        let log = store.read_range(0, 10).await.unwrap();
        assert_eq!(log[1].event.event_type, crate::EventType::AuditQuarantined);
        assert_eq!(log[2].event, sample_event(1));
        let set_aside = store.quarantined(0, 10).await.unwrap();
        assert_eq!(set_aside.len(), 1);
        assert_eq!((set_aside[0].queue_id, set_aside[0].seq), (bad, 1));
        assert_eq!(set_aside[0].bytes, b"\x00 damaged");
        assert_eq!(alerts.named(crate::quarantine::QUARANTINE_ALERT), 1);
    }

    /// At a queued row from a newer release (a rolling upgrade) the sequencer sequences nothing
    /// past it, gives the lease up at once (its own would hold for a minute) and stays off it
    /// for the back-off, then meets the row again and gives it up again; the named error is
    /// logged once. Appends are answered all along.
    #[tokio::test]
    async fn a_row_from_a_newer_release_hands_the_lease_back_and_is_reported_once() {
        let alerts = Alerts::default();
        let _guard = tracing::subscriber::set_default(alerts.clone());
        let store = Arc::new(MemoryAuditStore::new());
        let key = key();
        let queue_key = key.queue_key();
        let a = Auditor::start_shared(
            store.clone(),
            key,
            config(1000),
            SequencerConfig {
                lease_ttl: Duration::from_secs(60),
                newer_release_backoff: Duration::from_millis(200),
                ..instance("a")
            },
        )
        .await
        .unwrap();
        a.append(sample_event(0)).await.unwrap();
        sequenced(&store, 1).await;
        let newer = String::from_utf8(crate::event::encode_leaf(0, &sample_event(1)))
            .unwrap()
            .replacen(
                "\"event_type\":\"request\"",
                "\"event_type\":\"model_swapped\"",
                1,
            );
        let tag = queue_key.tag(newer.as_bytes()).as_bytes().to_vec();
        store.enqueue_raw(newer.into_bytes(), Some(tag)).unwrap();
        a.append(sample_event(2)).await.unwrap();
        // The lease is given up: another instance (the newer release) gets it at once.
        let other = free_lease(&store, "newer").await;
        assert_eq!(store.size().await.unwrap(), 1, "nothing past the row");
        a.append(sample_event(3)).await.unwrap();
        assert_eq!(store.pending_count().await.unwrap(), 3);
        // That instance leaves without sequencing; after its back-off `a` takes the lease
        // again, meets the row again, and gives the lease up again.
        store.release_lease(&other).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // An append kicks `a`'s sequencer, which runs on this thread as soon as the test
        // yields; every store call it makes is ready at once.
        a.append(sample_event(4)).await.unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let again = free_lease(&store, "newer").await;
        assert_eq!(
            again.epoch,
            other.epoch + 2,
            "`a` took the lease in between"
        );
        assert_eq!(store.size().await.unwrap(), 1);
        assert_eq!(store.pending_count().await.unwrap(), 4);
        store.release_lease(&again).await.unwrap();
        a.shutdown().await.unwrap();
        assert_eq!(alerts.named(crate::quarantine::NEWER_RELEASE_ALERT), 1);
        assert!(store.quarantined(0, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_poll_slower_than_the_lease_is_refused() {
        let bad = SequencerConfig {
            poll_interval: Duration::from_secs(10),
            ..instance("a")
        };
        let err = Auditor::start_shared(Arc::new(MemoryAuditStore::new()), key(), config(1), bad)
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::Config(_)), "{err}");
    }
}
