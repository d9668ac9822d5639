//! Tests of the SQLite `AuditStore`: the backend-neutral conformance suite on in-memory and file
//! databases, then what needs SQLite itself: the append-only triggers, durability settings, and
//! tampering with rows underneath the verifier.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::sync::Arc;

use wardgate_audit::conformance::{self, sample_event};
use wardgate_audit::verify::{self, CheckpointSource};
use wardgate_audit::{AuditError, Auditor, AuditorConfig, SignerKey, VerifyError};

use super::*;
use crate::sqlite::AuditDurability;

async fn file_store(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("wardgate.db")).await.unwrap()
}

/// Polls `done` until it holds; fails with `what` if it does not within 10 s (background tasks
/// run on their own schedule).
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A file store's own audit connection.
fn blocking(store: &SqliteStore) -> &Arc<crate::sqlite::writer::BlockingWriter> {
    match &store.audit_writer {
        AuditWriter::Blocking(w) => w,
        AuditWriter::Shared(_) => panic!("a file store appends through a connection of its own"),
    }
}

/// A pragma's value on a file store's audit connection.
async fn writer_pragma(store: &SqliteStore, name: &'static str) -> i64 {
    blocking(store)
        .run(move |c| {
            c.pragma_query_value(None, name, |r| r.get(0))
                .map_err(|e| AuditStoreError::Unavailable(Box::new(e)))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn conformance_in_memory() {
    conformance::suite(&SqliteStore::open_in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn conformance_on_file() {
    let dir = tempfile::tempdir().unwrap();
    conformance::suite(&file_store(dir.path()).await).await;
}

/// The gateway runs on a multi-threaded runtime, where the file store's appends run inside
/// `block_in_place` rather than on the blocking pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_file_from_a_multi_threaded_runtime() {
    let dir = tempfile::tempdir().unwrap();
    conformance::suite(&file_store(dir.path()).await).await;
}

#[tokio::test]
async fn rows_cannot_be_updated_or_deleted() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let entries = store.append(vec![sample_event(1)]).await.unwrap();
    let leaves: Vec<Hash> = entries.iter().map(|e| e.leaf_hash).collect();
    store
        .add_checkpoint(&conformance::checkpoint_for(&leaves, 1))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_entries SET leaf = X'00'",
        "UPDATE audit_entries SET leaf_hash = zeroblob(32)",
        "DELETE FROM audit_entries",
        "DELETE FROM audit_entries WHERE seq = 0",
        "UPDATE audit_checkpoints SET note = 'forged'",
        "DELETE FROM audit_checkpoints",
    ] {
        let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.read_range(0, 10).await.unwrap(), entries);
}

#[tokio::test]
async fn file_connections_commit_with_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    // FULL is 2: every commit fsyncs the WAL before returning.
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(sync, 2);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn the_audit_connection_is_full_sync_and_leaves_wal_checkpoints_to_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    assert_eq!(writer_pragma(&store, "synchronous").await, 2);
    assert_eq!(writer_pragma(&store, "wal_autocheckpoint").await, 0);
    // Rows committed by the audit connection sit in the WAL until the background task copies
    // them into the database file; nothing else here checkpoints.
    let db = dir.path().join("wardgate.db");
    let before = std::fs::metadata(&db).unwrap().len();
    for i in 0..20 {
        store
            .append((0..50).map(|k| sample_event(i * 50 + k)).collect())
            .await
            .unwrap();
    }
    eventually(
        "the WAL was never checkpointed into the database file",
        || async { std::fs::metadata(&db).unwrap().len() > before },
    )
    .await;
    assert_eq!(store.size().await.unwrap(), 1000);
}

#[tokio::test]
async fn process_durability_relaxes_only_the_audit_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(&dir.path().join("wardgate.db"), AuditDurability::Process)
        .await
        .unwrap();
    let audit_sync = writer_pragma(&store, "synchronous").await;
    // NORMAL (1) in WAL mode: commits reach the OS, the WAL is flushed at checkpoints.
    assert_eq!(audit_sync, 1);
    // Such a commit never waits for the disk: the writer need not run on a thread of its own.
    assert!(!store.blocks());
    assert!(file_store(&dir.path().join("disk")).await.blocks());
    let other_sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(other_sync, 2, "keys and tenants stay synchronous=FULL");
    store
        .append((0..10).map(sample_event).collect())
        .await
        .unwrap();
    store.close().await;
    // Reopened (the OS kept what was written): every entry is there.
    let store = file_store(dir.path()).await;
    assert_eq!(store.size().await.unwrap(), 10);
    assert_eq!("process".parse(), Ok(AuditDurability::Process));
    assert_eq!("disk".parse(), Ok(AuditDurability::Disk));
    assert!("off".parse::<AuditDurability>().is_err());
}

#[tokio::test]
async fn two_writers_on_one_file_interleave_without_gaps() {
    // Two stores (as two processes would) append to one file in turn: each append must read
    // the next number under the write lock and land right after the other's entries.
    let dir = tempfile::tempdir().unwrap();
    let a = file_store(dir.path()).await;
    let b = file_store(dir.path()).await;
    let seqs = |entries: Vec<AuditEntry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(a.append(vec![sample_event(0)]).await.unwrap()), [0]);
    assert_eq!(
        seqs(
            b.append(vec![sample_event(1), sample_event(2)])
                .await
                .unwrap()
        ),
        [1, 2]
    );
    assert_eq!(seqs(a.append(vec![sample_event(3)]).await.unwrap()), [3]);
    assert_eq!(seqs(a.append(vec![sample_event(4)]).await.unwrap()), [4]);
    assert_eq!(seqs(b.append(vec![sample_event(5)]).await.unwrap()), [5]);
    let stored = a.read_range(0, 100).await.unwrap();
    assert_eq!(seqs(stored.clone()), [0, 1, 2, 3, 4, 5]);
    for (i, e) in stored.iter().enumerate() {
        let expected = AuditEntry::prepare(i as u64, sample_event(i as u64)).0;
        assert_eq!(e.leaf_hash, expected.leaf_hash, "entry {i}");
    }
}

#[tokio::test]
async fn a_closed_store_refuses_appends_and_its_file_keeps_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    let clone = store.clone();
    store.append(vec![sample_event(0)]).await.unwrap();
    store.close().await;
    // Every clone shares the writer connection, and it is gone: no silent reopen.
    for s in [&store, &clone] {
        assert!(matches!(
            s.append(vec![sample_event(1)]).await,
            Err(AuditStoreError::Unavailable(_))
        ));
        assert!(matches!(
            s.add_checkpoint(&conformance::checkpoint_for(&[], 0)).await,
            Err(AuditStoreError::Unavailable(_))
        ));
    }
    let reopened = file_store(dir.path()).await;
    assert_eq!(reopened.size().await.unwrap(), 1);
    assert_eq!(
        reopened.append(vec![sample_event(1)]).await.unwrap()[0].seq,
        1
    );
}
const ORIGIN: &str = "test/audit";

/// A file store with 48 entries written through the `Auditor` (checkpoints every 8 sequential
/// appends, so at 8, 16, ..., 48), and the key and witness notes.
async fn written_log(dir: &Path) -> (SqliteStore, SignerKey, Vec<String>) {
    let store = file_store(dir).await;
    let key = SignerKey::generate(ORIGIN).unwrap();
    let key_copy = SignerKey::parse(&key.to_private_string()).unwrap();
    let witness = dir.join("witness.jsonl");
    let config = AuditorConfig {
        origin: ORIGIN.into(),
        checkpoint_every: 8,
        witness_path: Some(witness.clone()),
        ..AuditorConfig::default()
    };
    let auditor = Auditor::start(Arc::new(store.clone()), key_copy, config)
        .await
        .unwrap();
    for i in 0..48 {
        assert_eq!(auditor.append(sample_event(i)).await.unwrap(), i);
        if (i + 1) % 8 == 0 {
            // Automatic checkpoints are sealed in the background; the tests below need them at
            // exactly these sizes, so each lands before the next eight entries.
            wait_for_checkpoint(&store, i + 1).await;
        }
    }
    auditor.shutdown().await.unwrap();
    let notes = wardgate_audit::witness::read(&witness).unwrap().notes;
    (store, key, notes)
}

async fn wait_for_checkpoint(store: &SqliteStore, size: u64) {
    for _ in 0..5_000 {
        if store
            .latest_checkpoint()
            .await
            .unwrap()
            .is_some_and(|c| c.size == size)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("no checkpoint of size {size} within 5 s");
}

async fn verify_live(
    store: &SqliteStore,
    key: &SignerKey,
    witness: &[String],
) -> Result<wardgate_audit::VerifyReport, VerifyError> {
    verify::verify_store(store, vec![key.verifier()], witness, Some(ORIGIN.into())).await
}

/// A writer restarted on the 48-entry log of `written_log` continues the same tree: its next
/// entry is 48, and the whole log then verifies, every entry proven.
async fn resumes_and_verifies(store: &SqliteStore, key: &SignerKey, witness: &[String]) {
    let auditor = Auditor::start(
        Arc::new(store.clone()),
        SignerKey::parse(&key.to_private_string()).unwrap(),
        AuditorConfig {
            origin: ORIGIN.into(),
            ..AuditorConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(auditor.append(sample_event(48)).await.unwrap(), 48);
    auditor.shutdown().await.unwrap();
    let report = verify_live(store, key, witness).await.unwrap();
    assert_eq!((report.entries, report.proven), (49, 49));
}

async fn unlock(store: &SqliteStore) {
    for t in ["audit_entries_no_update", "audit_entries_no_delete"] {
        sqlx::query(AssertSqlSafe(format!("DROP TRIGGER {t}")))
            .execute(&store.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_log_written_through_the_auditor_verifies_live_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, witness) = written_log(dir.path()).await;
    let report = verify_live(&store, &key, &witness).await.unwrap();
    assert_eq!((report.entries, report.proven), (48, 48));

    let mut export = Vec::new();
    let summary = wardgate_audit::export::write_export(&store, &mut export)
        .await
        .unwrap();
    assert_eq!(summary.entries, 48);
    let report = verify::verify_export(&export[..], vec![key.verifier()], &witness, None).unwrap();
    assert_eq!(report.entries, 48);
    assert_eq!(report.witness_checkpoints, witness.len());

    // Reopening the file and restarting the writer continues the same tree.
    store.close().await;
    let store = file_store(dir.path()).await;
    resumes_and_verifies(&store, &key, &witness).await;
}

#[tokio::test]
async fn an_altered_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, witness) = written_log(dir.path()).await;
    unlock(&store).await;
    // A canonical leaf for another event at the same position, stored hash left alone.
    let forged = wardgate_audit::event::encode_leaf(17, &sample_event(999));
    sqlx::query("UPDATE audit_entries SET leaf = $1 WHERE seq = 17")
        .bind(forged)
        .execute(&store.pool)
        .await
        .unwrap();
    let err = verify_live(&store, &key, &witness).await.unwrap_err();
    assert_eq!(err, VerifyError::LeafHashMismatch { seq: 17 });
}

#[tokio::test]
async fn a_deleted_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, witness) = written_log(dir.path()).await;
    unlock(&store).await;
    sqlx::query("DELETE FROM audit_entries WHERE seq = 9")
        .execute(&store.pool)
        .await
        .unwrap();
    let err = verify_live(&store, &key, &witness).await.unwrap_err();
    assert_eq!(err, VerifyError::OutOfSequence { seq: 9, found: 10 });
}

#[tokio::test]
async fn swapped_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, witness) = written_log(dir.path()).await;
    unlock(&store).await;
    // Swap the contents of rows 3 and 5 (leaf and hash together).
    sqlx::query(
        "UPDATE audit_entries SET \
           leaf = (SELECT leaf FROM audit_entries a WHERE a.seq = 8 - audit_entries.seq), \
           leaf_hash = (SELECT leaf_hash FROM audit_entries a WHERE a.seq = 8 - audit_entries.seq) \
         WHERE seq IN (3, 5)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    let err = verify_live(&store, &key, &witness).await.unwrap_err();
    assert_eq!(err.first_bad_seq(), Some(3), "{err}");
}

#[tokio::test]
async fn a_rewritten_row_with_its_hash_fails_at_the_covering_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, witness) = written_log(dir.path()).await;
    unlock(&store).await;
    let (entry, leaf) = wardgate_audit::AuditEntry::prepare(30, sample_event(777));
    sqlx::query("UPDATE audit_entries SET leaf = $1, leaf_hash = $2 WHERE seq = 30")
        .bind(leaf)
        .bind(entry.leaf_hash.0.to_vec())
        .execute(&store.pool)
        .await
        .unwrap();
    let err = verify_live(&store, &key, &witness).await.unwrap_err();
    assert_eq!(
        err,
        VerifyError::RootMismatch {
            first_unproven: 24,
            size: 32,
            which: CheckpointSource::Log
        }
    );
}

#[tokio::test]
async fn a_truncated_log_is_named_and_the_writer_refuses_to_extend_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, witness) = written_log(dir.path()).await;
    unlock(&store).await;
    sqlx::query("DELETE FROM audit_entries WHERE seq >= 40")
        .execute(&store.pool)
        .await
        .unwrap();
    let err = verify_live(&store, &key, &witness).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::Truncated { seq: 40, .. }),
        "{err}"
    );
    let result = Auditor::start(
        Arc::new(store.clone()),
        key,
        AuditorConfig {
            origin: ORIGIN.into(),
            ..AuditorConfig::default()
        },
    )
    .await;
    assert!(
        matches!(result, Err(AuditError::Inconsistent(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_old_checkpoint_is_inconsistent_with_a_rewritten_table() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, _) = written_log(dir.path()).await;
    let old = store.checkpoints(16, 1).await.unwrap().remove(0);
    let old = wardgate_audit::SignedCheckpoint::open(&old.note, &[key.verifier()], None)
        .unwrap()
        .checkpoint;
    verify::prove_consistency_in_store(&old, &store)
        .await
        .unwrap();
    unlock(&store).await;
    let (entry, leaf) = wardgate_audit::AuditEntry::prepare(2, sample_event(555));
    sqlx::query("UPDATE audit_entries SET leaf = $1, leaf_hash = $2 WHERE seq = 2")
        .bind(leaf)
        .bind(entry.leaf_hash.0.to_vec())
        .execute(&store.pool)
        .await
        .unwrap();
    let err = verify::prove_consistency_in_store(&old, &store)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            verify::ConsistencyError::Rewritten { old_size: 16, .. }
        ),
        "{err}"
    );
}

async fn filter_rows(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_index.audit_filter")
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

/// One catch-up of the filter index, as the background task runs it; the rows copied.
async fn catch_up(store: &SqliteStore) -> u64 {
    store.audit_indexer.run().await.unwrap().unwrap()
}

/// A file store's filter index catch-up connection.
fn file_indexer(store: &SqliteStore) -> &Arc<crate::sqlite::filter_index::FileIndexer> {
    match &store.audit_indexer {
        crate::sqlite::filter_index::Indexer::File(f) => f,
        crate::sqlite::filter_index::Indexer::Shared(_) => panic!("a file store has its own"),
    }
}

/// Queries answer from the filter index for indexed entries and scan the rest, so they give the
/// same results whether the background indexer is behind, caught up, or halfway.
#[tokio::test]
#[expect(
    clippy::await_holding_lock,
    reason = "the indexer waits for the connection on the blocking pool, not on this thread"
)]
async fn queries_find_entries_whether_or_not_the_filter_index_has_reached_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    store
        .append((0..30).map(sample_event).collect())
        .await
        .unwrap();
    // The indexer may already have run; afterwards the first 30 are indexed for certain.
    catch_up(&store).await;
    assert_eq!(filter_rows(&store).await, 30);

    // 30 more, appended while this test holds the index's catch-up connection: the
    // background indexer cannot reach them, and the appends do not need it.
    let tail = {
        let _held = file_indexer(&store).lock();
        store
            .append((195..225).map(sample_event).collect())
            .await
            .unwrap();
        let all = store.read_range(0, 100).await.unwrap();
        assert_eq!(all.len(), 60);
        assert_eq!(
            filter_rows(&store).await,
            30,
            "the tail must not be indexed yet"
        );
        conformance::queries(&store, &all).await;
        all
    };

    // Caught up (by this call or the background task, whichever got the connection first):
    // the same answers, now all from the index.
    catch_up(&store).await;
    assert_eq!(filter_rows(&store).await, 60);
    conformance::queries(&store, &tail).await;
    assert_eq!(catch_up(&store).await, 0);
}

/// The index has a file and a write lock of its own: an append goes through while another
/// connection holds the index's write lock (with the index in the log's file it would wait for
/// it and fail after the busy timeout).
#[tokio::test]
async fn appends_never_wait_for_the_filter_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    let index = rusqlite::Connection::open(dir.path().join("wardgate.db-audit-index")).unwrap();
    index.execute_batch("BEGIN IMMEDIATE").unwrap();
    index
        .execute(
            "INSERT INTO audit_filter (seq, ts_ms, event_type, actor_id) VALUES (999, 0, 'x', 'y')",
            [],
        )
        .unwrap();
    let entries = store
        .append((0..5).map(sample_event).collect())
        .await
        .unwrap();
    assert_eq!(entries.len(), 5);
    index.execute_batch("ROLLBACK").unwrap();
    catch_up(&store).await;
    assert_eq!(filter_rows(&store).await, 5);
}

/// With `process` durability an append runs on the caller's thread only when nothing is in
/// its way; when another connection holds the log's write lock it waits for it (off the
/// runtime) instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_durability_append_waits_for_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardgate.db");
    let store = SqliteStore::open_with(&path, AuditDurability::Process)
        .await
        .unwrap();
    store.append(vec![sample_event(0)]).await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let append = tokio::spawn({
        let store = store.clone();
        async move { store.append((1..6).map(sample_event).collect()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!append.is_finished(), "the append must wait for the lock");
    other.execute_batch("ROLLBACK").unwrap();
    let entries = append.await.unwrap().unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(store.size().await.unwrap(), 6);
}

/// An index that does not describe its log (missing, copied from another log, or ahead of the
/// log after a power loss took the log's last commits) is rebuilt from the log at open.
#[tokio::test]
async fn a_filter_index_that_does_not_match_the_log_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let open_with = |name: &'static str, events: std::ops::Range<u64>| {
        let path = dir.path().join(name);
        async move {
            let store = SqliteStore::open(&path).await.unwrap();
            store
                .append(events.map(sample_event).collect())
                .await
                .unwrap();
            catch_up(&store).await;
            store.close().await;
        }
    };
    open_with("long.db", 0..30).await;
    open_with("other.db", 100..110).await;
    open_with("wardgate.db", 0..10).await;
    let index = dir.path().join("wardgate.db-audit-index");
    for replacement in [
        Some("long.db-audit-index"),  // ahead of the log
        Some("other.db-audit-index"), // same positions, other entries
        None,                         // deleted
    ] {
        std::fs::remove_file(&index).unwrap();
        if let Some(other) = replacement {
            std::fs::copy(dir.path().join(other), &index).unwrap();
        }
        let store = file_store(dir.path()).await;
        catch_up(&store).await;
        assert_eq!(filter_rows(&store).await, 10, "{replacement:?}");
        let all = store.read_range(0, 100).await.unwrap();
        conformance::queries(&store, &all).await;
        store.close().await;
    }
}

/// A file that is not a database where the index should be is set aside (kept for whoever
/// investigates) and the index rebuilt from the log; the log opens as if nothing happened.
#[tokio::test]
async fn a_damaged_filter_index_is_set_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    store
        .append((0..7).map(sample_event).collect())
        .await
        .unwrap();
    store.close().await;
    let index = dir.path().join("wardgate.db-audit-index");
    std::fs::write(&index, vec![0x5a_u8; 8192]).unwrap();

    let store = file_store(dir.path()).await;
    catch_up(&store).await;
    assert_eq!(filter_rows(&store).await, 7);
    let all = store.read_range(0, 100).await.unwrap();
    conformance::queries(&store, &all).await;
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wardgate.db-audit-index.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        vec![0x5a_u8; 8192]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&index).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn the_background_indexer_catches_up_and_its_rows_are_append_only() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store
        .append((0..50).map(sample_event).collect())
        .await
        .unwrap();
    eventually(
        "the background indexer never indexed the appended entries",
        || async { filter_rows(&store).await >= 50 },
    )
    .await;
    for sql in [
        "UPDATE audit_index.audit_filter SET actor_id = 'someone-else'",
        "DELETE FROM audit_index.audit_filter WHERE seq = 3",
    ] {
        let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

/// A database written before the filter index existed keeps answering queries, and its entries
/// are indexed (migration 5 copied them into a table that migration 6 drops again; the index
/// file is then built from the log).
#[tokio::test]
async fn the_filter_index_migration_indexes_existing_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // The schema as of migration 4, then entries written through it.
    let pool = database_at(&path, 4).await;
    let rows = prepare(0, (0..40).map(sample_event).collect());
    let entries: Vec<_> = rows.iter().map(|r| r.entry.clone()).collect();
    insert_with_copies(&pool, &entries).await;
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    catch_up(&store).await;
    assert_eq!(filter_rows(&store).await, 40);
    let all = store.read_range(0, 100).await.unwrap();
    conformance::queries(&store, &all).await;
}

/// A new database at schema `version`, as the build of that version made it.
async fn database_at(path: &Path, version: i64) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let mut migrator = crate::sqlite::migrator();
    migrator.migrations = std::borrow::Cow::Owned(
        migrator
            .migrations
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect(),
    );
    migrator.run(&pool).await.unwrap();
    pool
}

/// Appends `entries` as builds before migration 7 did: the leaf and its hash, and copies of
/// the filter fields beside them.
async fn insert_with_copies(pool: &sqlx::SqlitePool, entries: &[AuditEntry]) {
    for entry in entries {
        let (again, leaf) = AuditEntry::prepare(entry.seq, entry.event.clone());
        assert_eq!(again.leaf_hash, entry.leaf_hash);
        let e = &entry.event;
        sqlx::query(
            "INSERT INTO audit_entries (seq, ts_ms, event_type, actor_id, tenant, outcome, \
             request_id, leaf, leaf_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(i64::try_from(entry.seq).unwrap())
        .bind(e.ts.unix_millis())
        .bind(e.event_type.as_str())
        .bind(&e.actor_id)
        .bind(&e.tenant)
        .bind(e.outcome.map(|o| o.as_str()))
        .bind(&e.request_id)
        .bind(leaf)
        .bind(entry.leaf_hash.0.to_vec())
        .execute(pool)
        .await
        .unwrap();
    }
}

/// The columns of `table` in `store`'s database.
async fn columns(store: &SqliteStore, table: &str) -> Vec<String> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
    )))
    .fetch_all(&store.pool)
    .await
    .unwrap()
}

/// A database of the previous schema (version 6, whose log table also held copies of the filter
/// fields that nothing verified), with a signed log in it, takes migration 0007: the copies are
/// gone, the log verifies as `wardgate audit verify` verifies it (the same open, migrations
/// included, and `verify_store`), the filter index is filled from the leaves, queries answer,
/// and the log goes on.
#[tokio::test]
async fn a_log_of_the_previous_schema_is_migrated_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key, witness) = written_log(dir.path()).await;
    let entries = store.read_range(0, 100).await.unwrap();
    let checkpoints = store.checkpoints(0, 100).await.unwrap();
    store.close().await;

    // The same log, as the previous build wrote it: schema version 6, every column filled.
    let old = dir.path().join("old.db");
    let pool = database_at(&old, 6).await;
    insert_with_copies(&pool, &entries).await;
    for c in &checkpoints {
        sqlx::query(INSERT_CHECKPOINT_SQL)
            .bind(i64::try_from(c.size).unwrap())
            .bind(c.root.0.to_vec())
            .bind(&c.note)
            .bind(c.subtrees.iter().flat_map(|h| h.0).collect::<Vec<u8>>())
            .bind(c.created_at.unix_millis())
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&old).await.unwrap();
    assert_eq!(
        columns(&store, "audit_entries").await,
        ["seq", "leaf", "leaf_hash"]
    );
    let report = verify_live(&store, &key, &witness).await.unwrap();
    assert_eq!((report.entries, report.proven), (48, 48));
    assert_eq!(store.read_range(0, 100).await.unwrap(), entries);
    // The triggers came back with the table.
    for sql in [
        "UPDATE audit_entries SET leaf = X'00'",
        "DELETE FROM audit_entries",
    ] {
        let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // The filter index, built from the leaves, answers the same as the log itself.
    catch_up(&store).await;
    assert_eq!(filter_rows(&store).await, 48);
    let by_actor = AuditFilter {
        actor_id: Some(entries[5].event.actor_id.clone()),
        ..AuditFilter::default()
    };
    let want: Vec<_> = entries
        .iter()
        .filter(|e| by_actor.matches(e))
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(store.query(&by_actor).await.unwrap(), want);

    // The log goes on where it was.
    resumes_and_verifies(&store, &key, &witness).await;
}

/// An entry the filter index has not reached is filtered on its leaf, not on a copy: a query
/// reads it whole, and finds it by every field the index would hold.
#[tokio::test]
#[expect(
    clippy::await_holding_lock,
    reason = "the indexer waits for the connection on the blocking pool, not on this thread"
)]
async fn unindexed_entries_are_found_by_the_fields_of_their_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    let _held = file_indexer(&store).lock();
    let entries = store
        .append((0..12).map(sample_event).collect())
        .await
        .unwrap();
    assert_eq!(filter_rows(&store).await, 0);
    let e = &entries[7];
    for filter in [
        AuditFilter {
            actor_id: Some(e.event.actor_id.clone()),
            ..AuditFilter::default()
        },
        AuditFilter {
            request_id: e.event.request_id.clone(),
            ..AuditFilter::default()
        },
        AuditFilter {
            since: Some(e.event.ts),
            limit: Some(1),
            ..AuditFilter::default()
        },
    ] {
        let found = store.query(&filter).await.unwrap();
        let want: Vec<_> = entries
            .iter()
            .filter(|x| filter.matches(x))
            .take(filter.effective_limit() as usize)
            .cloned()
            .collect();
        assert!(found.contains(e), "{filter:?}");
        assert_eq!(found, want, "{filter:?}");
    }
}
