//! Tests of `PgStore` against a real PostgreSQL (`WARDGATE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): the store conformance suite directly and
//! through PgBouncer in transaction-pooling mode, the migrations and the schema check, the URL
//! and connection errors. Each test works in a schema (or, behind PgBouncer, a database) of its
//! own, so tests run in parallel beside each other and beside other suites.
#![expect(clippy::unwrap_used, reason = "tests")]

use super::migrate::{MIGRATIONS, latest_version};
use super::*;
use crate::conformance::{now, spec, suite};

use super::testing::{TestSchema, admin, run, server_url, unique_name};

// ---- the conformance suite ----

/// The audit log's two suites: the single-writer store (direct appends, checkpoints, queries)
/// and the shared log (queue, lease, fencing, sequencing), each on a fresh schema.
#[tokio::test]
async fn pg_audit_suite() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    wardgate_audit::conformance::suite(&store).await;
    store.close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_shared_audit_suite() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    wardgate_audit::conformance::shared_suite(&store).await;
    store.close().await;
    schema.drop().await;
}

/// The log's tables and the quarantine table refuse changes whatever the application asks; the
/// queue does not (its rows leave when sequenced or set aside).
#[tokio::test]
async fn pg_audit_tables_are_append_only() {
    use wardgate_audit::AuditStore as _;
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    store
        .append(vec![wardgate_audit::conformance::sample_event(0)])
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO audit_quarantine (queue_id, seq, event, sha256, queued_ms, quarantined_ms) \
         VALUES (7, 0, 'x', sha256('x'), 0, 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    for sql in [
        "UPDATE audit_entries SET leaf_hash = leaf_hash",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries",
        "UPDATE audit_entries SET event = '{}'",
        "UPDATE audit_quarantine SET event = event",
        "DELETE FROM audit_quarantine",
        "TRUNCATE audit_quarantine",
    ] {
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("append-only") || refused.contains("can only be updated to DEFAULT"),
            "{sql}: {refused}"
        );
    }
    assert_eq!(store.size().await.unwrap(), 1);
    store.close().await;
    schema.drop().await;
}

/// A lease holder frozen in the middle of a sequencing transaction (a paused process, a dead
/// network path) does not keep the lease row locked for as long as the server keeps its
/// session: the server ends the idle transaction, and another instance takes the lease over.
/// (A black-box finding: a frozen holder stopped the log for the whole cluster.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_holder_frozen_mid_transaction_loses_the_lease_row() {
    use std::time::{Duration, Instant};
    use wardgate_audit::SharedLog as _;
    let schema = TestSchema::new().await;
    let frozen = schema.migrated().await;
    let other = schema.store().await;
    let lease = frozen
        .acquire_lease("frozen", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    // The frozen holder's transaction: bounded as every lease transaction is, the row locked,
    // then nothing more (never committed, never rolled back).
    let mut tx = frozen.pool().begin().await.unwrap();
    super::audit::bound_transaction(&mut tx).await.unwrap();
    sqlx::query("SELECT 1 FROM audit_sequencer WHERE id = 1 FOR UPDATE")
        .persistent(false)
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = Instant::now();
    let mut taken = None;
    while started.elapsed() < Duration::from_secs(20) {
        // Each try waits on the lock at most its own transaction's bound, then fails.
        if let Ok(Some(l)) = other.acquire_lease("other", Duration::from_secs(5)).await {
            taken = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(taken) = taken else {
        panic!("the lease row stayed locked for 20 s");
    };
    assert!(taken.epoch > lease.epoch);
    assert!(matches!(
        frozen
            .sequence(&lease, 0, 10, &wardgate_audit::conformance::suite_key())
            .await
            .unwrap(),
        wardgate_audit::Sequenced::LeaseLost
    ));
    drop(tx);
    frozen.close().await;
    other.close().await;
    schema.drop().await;
}

/// Two audit writers (two gateway instances) on one database make one log that verifies, with
/// every event once; the one that stops last signs it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_instances_write_one_audit_log() {
    use std::sync::Arc;
    use wardgate_audit::{AuditStore as _, Auditor, AuditorConfig, SignerKey};
    let schema = TestSchema::new().await;
    let a_store = Arc::new(schema.migrated().await);
    let b_store = Arc::new(schema.store().await);
    let key = SignerKey::generate(TEST_ORIGIN).unwrap();
    let same = || copy_of(&key);
    let config = AuditorConfig {
        checkpoint_every: 50,
        ..test_auditor()
    };
    let instance = test_sequencer;
    let a = Auditor::start_shared(a_store.clone(), same(), config.clone(), instance("a"))
        .await
        .unwrap();
    let b = Auditor::start_shared(b_store.clone(), same(), config, instance("b"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let auditor = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            auditor
                .append(wardgate_audit::conformance::sample_event(i))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let report =
        wardgate_audit::verify::verify_store(a_store.as_ref(), vec![key.verifier()], &[], None)
            .await
            .unwrap();
    assert_eq!((report.entries, report.proven), (300, 300));
    let mut ids: Vec<String> = a_store
        .read_range(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.event.request_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300, "every event once");
    a_store.close().await;
    b_store.close().await;
    schema.drop().await;
}

/// Someone with write access to the database (the black-box findings A1, A2, A4): a row
/// queued by SQL without the key is set aside as unauthenticated, never sequenced as an event;
/// entries sequenced but not yet signed, rewritten by SQL, stop the next sequencer; and
/// entries and checkpoints deleted (the append-only triggers disabled first, as the owner of
/// the tables can) with the lease ended are noticed by both instances, which sign nothing
/// over the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_database_owner_cannot_forge_rewrite_or_roll_back_the_shared_log_unnoticed() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use wardgate_audit::conformance::{RawQueue as _, sample_event};
    use wardgate_audit::event::encode_leaf;
    use wardgate_audit::merkle::leaf_hash;
    use wardgate_audit::{
        AuditFault, AuditStore as _, Auditor, AuditorConfig, SharedLog as _, SignerKey,
    };
    let schema = TestSchema::new().await;
    let a_store = Arc::new(schema.migrated().await);
    let b_store = Arc::new(schema.store().await);
    let key = SignerKey::generate(TEST_ORIGIN).unwrap();
    // Checkpoints only when asked: what is sequenced stays unsigned until then.
    let config = AuditorConfig {
        checkpoint_interval: Duration::from_secs(600),
        ..test_auditor()
    };
    let a = Auditor::start_shared(
        a_store.clone(),
        copy_of(&key),
        config.clone(),
        test_sequencer("a"),
    )
    .await
    .unwrap();
    for i in 0..10 {
        a.append(sample_event(i)).await.unwrap();
    }
    // A forged row: a perfectly good event, queued by SQL without a tag.
    let forged = encode_leaf(0, &sample_event(99));
    a_store.queue_raw(forged, None).await;
    a.append(sample_event(10)).await.unwrap();
    a.checkpoint().await.unwrap();
    let log = a_store.read_range(0, 100).await.unwrap();
    assert_eq!(log.len(), 12);
    assert_eq!(
        log[10].event.deny_reason.as_deref(),
        Some("queued_row_unauthenticated")
    );
    assert!(log.iter().all(|e| e.event != sample_event(99)));

    // b starts and reads the log (every third of its 500 ms lease).
    let b = Auditor::start_shared(b_store.clone(), copy_of(&key), config, test_sequencer("b"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Roll back: the last five entries and every checkpoint above 7 go, and the lease ends.
    sqlx::raw_sql(
        "ALTER TABLE audit_entries DISABLE TRIGGER USER; \
         ALTER TABLE audit_checkpoints DISABLE TRIGGER USER; \
         DELETE FROM audit_entries WHERE seq >= 7; \
         DELETE FROM audit_checkpoints WHERE tree_size > 7; \
         UPDATE audit_sequencer SET expires_at = clock_timestamp(); \
         ALTER TABLE audit_entries ENABLE TRIGGER USER; \
         ALTER TABLE audit_checkpoints ENABLE TRIGGER USER;",
    )
    .execute(a_store.pool())
    .await
    .unwrap();
    for auditor in [&a, &b] {
        let started = Instant::now();
        while auditor.fault().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no instance noticed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(auditor.fault(), Some(AuditFault::RolledBack(_))));
    }
    // Requests are still queued; nobody signs over the gap.
    b.append(sample_event(11)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let latest = a_store.latest_checkpoint().await.unwrap();
    assert!(latest.as_ref().is_none_or(|c| c.size <= 7), "{latest:?}");
    assert_eq!(a_store.size().await.unwrap(), 7);
    a.shutdown().await.unwrap_err();
    b.shutdown().await.unwrap_err();

    // A rewrite of an entry nobody has signed yet: a new instance refuses to sign over it.
    let c_store = Arc::new(schema.store().await);
    let lease = c_store
        .acquire_lease("dead", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    c_store
        .enqueue(vec![sample_event(12)], &key.queue_key())
        .await
        .unwrap();
    let done = c_store
        .sequence(&lease, c_store.size().await.unwrap(), 10, &key.queue_key())
        .await
        .unwrap();
    assert!(matches!(done, wardgate_audit::Sequenced::Entries(ref e) if e.len() == 2));
    let mut other = sample_event(12);
    other.actor_id = "someone-else".into();
    let leaf = encode_leaf(8, &other);
    sqlx::raw_sql("ALTER TABLE audit_entries DISABLE TRIGGER USER")
        .execute(c_store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_entries SET leaf = $1, leaf_hash = $2 WHERE seq = 8")
        .persistent(false)
        .bind(&leaf)
        .bind(leaf_hash(&leaf).as_bytes().to_vec())
        .execute(c_store.pool())
        .await
        .unwrap();
    c_store.release_lease(&lease).await.unwrap();
    let err = Auditor::start_shared(
        c_store.clone(),
        copy_of(&key),
        test_auditor(),
        test_sequencer("c"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("entry 8"), "{err}");
    a_store.close().await;
    b_store.close().await;
    c_store.close().await;
    schema.drop().await;
}

/// Queues bytes by SQL, as someone with access to the database (or another release) could.
#[async_trait::async_trait]
impl wardgate_audit::conformance::RawQueue for PgStore {
    async fn queue_raw(&self, bytes: Vec<u8>, tag: Option<Vec<u8>>) -> u64 {
        // In a transaction, as every call of the store's own: through a transaction-pooling
        // PgBouncer a lone statement's two exchanges may reach two server connections.
        let mut tx = self.pool().begin().await.unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_queue (event, tag, queued_ms) VALUES ($1, $2, 0) RETURNING id",
        )
        .persistent(false)
        .bind(bytes)
        .bind(tag)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        u64::try_from(id).unwrap()
    }
}

/// A queue row inserted by SQL that no release can read no longer stops the log (a black-box
/// finding: one such row stopped all sequencing for good, logged only as "audit log
/// unavailable"): the sequencer moves its bytes into `audit_quarantine`, puts an
/// `audit_quarantined` entry at its place, sequences the events queued after it, and the log
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_corrupt_queue_row_is_quarantined_and_the_log_goes_on_and_verifies() {
    use std::sync::Arc;
    use wardgate_audit::conformance::{RawQueue as _, sample_event};
    use wardgate_audit::{AuditStore as _, Auditor, EventType, SharedLog as _, SignerKey};
    let schema = TestSchema::new().await;
    let store = Arc::new(schema.migrated().await);
    let key = SignerKey::generate(TEST_ORIGIN).unwrap();
    let auditor = Auditor::start_shared(
        store.clone(),
        copy_of(&key),
        test_auditor(),
        test_sequencer("a"),
    )
    .await
    .unwrap();
    auditor.append(sample_event(0)).await.unwrap();
    // Canonical JSON in the leaf's frame, but no event of any release.
    let corrupt = br#"{"v":1,"seq":0,"event":{"ts":"tampered"}}"#.to_vec();
    // Tagged: damage to a row an instance queued, not a forgery.
    let tag = key.queue_key().tag(&corrupt).as_bytes().to_vec();
    let bad = store.queue_raw(corrupt.clone(), Some(tag)).await;
    auditor.append(sample_event(1)).await.unwrap();
    auditor.append(sample_event(2)).await.unwrap();
    auditor.shutdown().await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 0);
    let report =
        wardgate_audit::verify::verify_store(store.as_ref(), vec![key.verifier()], &[], None)
            .await
            .unwrap();
    assert_eq!((report.entries, report.proven), (4, 4));
    let log = store.read_range(0, 10).await.unwrap();
    assert_eq!(log[0].event, sample_event(0));
    assert_eq!(log[1].event.event_type, EventType::AuditQuarantined);
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&corrupt));
    assert_eq!(
        log[1].event.detail.as_deref(),
        Some(format!("queue_id={bad} bytes={} sha256={sha256}", corrupt.len()).as_str())
    );
    assert_eq!(log[2].event, sample_event(1));
    assert_eq!(log[3].event, sample_event(2));
    // The quarantine table, read by SQL: the exact bytes, by queue id, beside their entry.
    let rows: Vec<(i64, i64, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT queue_id, seq, event, sha256 FROM audit_quarantine")
            .persistent(false)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![(
            i64::try_from(bad).unwrap(),
            1,
            corrupt.clone(),
            hex::decode(&sha256).unwrap()
        )]
    );
    store.close().await;
    schema.drop().await;
}

/// A queue row from a newer release (a rolling upgrade: an event type this release does not
/// know) is left for an instance that can read it: this release's sequencer sequences nothing
/// past it, hands the lease back at once (its own lease would hold for a minute) and stays off
/// it, while its appends are still answered. The newer instance takes the lease and sequences
/// the row (simulated by SQL, as its sequencing transaction would: the row's leaf into the log,
/// the row out of the queue); then sequencing goes on past it, and the signed checkpoint covers
/// the whole log, the newer entry included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_row_from_a_newer_release_is_left_for_an_instance_that_can_read_it() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use wardgate_audit::conformance::{RawQueue as _, sample_event};
    use wardgate_audit::event::encode_leaf;
    use wardgate_audit::merkle::{TreeBuilder, leaf_hash};
    use wardgate_audit::{AuditStore as _, Auditor, SharedLog as _, SignerKey};
    let schema = TestSchema::new().await;
    let old_store = Arc::new(schema.migrated().await);
    let next_store = Arc::new(schema.store().await);
    let key = SignerKey::generate(TEST_ORIGIN).unwrap();
    let old = Auditor::start_shared(
        old_store.clone(),
        copy_of(&key),
        test_auditor(),
        wardgate_audit::SequencerConfig {
            lease_ttl: Duration::from_secs(60),
            newer_release_backoff: Duration::from_secs(60),
            ..test_sequencer("old")
        },
    )
    .await
    .unwrap();
    old.append(sample_event(0)).await.unwrap();
    let newer_leaf = String::from_utf8(encode_leaf(0, &sample_event(1)))
        .unwrap()
        .replacen(
            "\"event_type\":\"request\"",
            "\"event_type\":\"model_swapped\"",
            1,
        );
    let tag = key
        .queue_key()
        .tag(newer_leaf.as_bytes())
        .as_bytes()
        .to_vec();
    let newer = old_store
        .queue_raw(newer_leaf.clone().into_bytes(), Some(tag))
        .await;
    old.append(sample_event(2)).await.unwrap();

    // The old sequencer gives the lease up (it would otherwise hold it for a minute).
    let holder = || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT holder FROM audit_sequencer")
            .persistent(false)
            .fetch_one(old_store.pool())
            .await
            .unwrap()
    };
    let started = Instant::now();
    while holder().await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the old sequencer kept the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(old_store.size().await.unwrap(), 1, "nothing past the row");
    assert_eq!(old_store.pending_count().await.unwrap(), 2);
    // Requests are still answered: their events are queued.
    old.append(sample_event(3)).await.unwrap();
    assert_eq!(old_store.pending_count().await.unwrap(), 3);
    let err = old.checkpoint().await.unwrap_err().to_string();
    assert!(err.contains("newer release"), "{err}");

    // The newer release's instance takes the lease and sequences the row it can read.
    let lease = next_store
        .acquire_lease("newer", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let leaf = newer_leaf
        .replacen("\"seq\":0", "\"seq\":1", 1)
        .into_bytes();
    let mut tx = next_store.pool().begin().await.unwrap();
    // Tagged as a newer release tags it: its row's tag, over the leaf at position 0.
    let tag = key
        .queue_key()
        .tag(newer_leaf.as_bytes())
        .as_bytes()
        .to_vec();
    sqlx::query("INSERT INTO audit_entries (seq, leaf, leaf_hash, tag) VALUES (1, $1, $2, $3)")
        .persistent(false)
        .bind(&leaf)
        .bind(leaf_hash(&leaf).as_bytes().to_vec())
        .bind(tag)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_queue WHERE id = $1")
        .persistent(false)
        .bind(i64::try_from(newer).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    next_store.release_lease(&lease).await.unwrap();

    // Sequencing goes on past it (here by another instance of this release: the old one is
    // still staying off the lease), and signs the whole log.
    let next = Auditor::start_shared(
        next_store.clone(),
        copy_of(&key),
        test_auditor(),
        test_sequencer("next"),
    )
    .await
    .unwrap();
    next.shutdown().await.unwrap();
    old.shutdown().await.unwrap();
    assert_eq!(old_store.pending_count().await.unwrap(), 0);
    let after: Vec<_> = old_store
        .read_range(2, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(after, vec![sample_event(2), sample_event(3)]);
    let hashes = old_store.leaf_hashes(0, 10).await.unwrap();
    assert_eq!(hashes.len(), 4);
    assert_eq!(hashes[1], leaf_hash(&leaf));
    let mut tree = TreeBuilder::new();
    for h in &hashes {
        tree.push(*h);
    }
    let latest = old_store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!((latest.size, latest.root), (4, tree.root()));
    wardgate_audit::note::open(&latest.note, &[key.verifier()]).unwrap();
    old_store.close().await;
    next_store.close().await;
    schema.drop().await;
}

/// The origin and key name of the tests' audit logs.
const TEST_ORIGIN: &str = "test/pg";

/// A writer of a test's audit log.
fn test_auditor() -> wardgate_audit::AuditorConfig {
    wardgate_audit::AuditorConfig {
        origin: TEST_ORIGIN.into(),
        ..wardgate_audit::AuditorConfig::default()
    }
}

/// A copy of the one signing key of a test's instances, as the deployment hands it to each.
fn copy_of(key: &wardgate_audit::SignerKey) -> wardgate_audit::SignerKey {
    wardgate_audit::SignerKey::parse(&key.to_private_string()).unwrap()
}

/// A sequencer of a test: short lease and poll, the default back-off.
fn test_sequencer(name: &str) -> wardgate_audit::SequencerConfig {
    wardgate_audit::SequencerConfig {
        holder: name.into(),
        lease_ttl: std::time::Duration::from_millis(500),
        poll_interval: std::time::Duration::from_millis(10),
        newer_release_backoff: wardgate_audit::writer::DEFAULT_NEWER_RELEASE_BACKOFF,
    }
}

#[tokio::test]
async fn pg_suite() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    suite(&store).await;
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn pg_suite_through_trait_objects() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    let keys: std::sync::Arc<dyn KeyStore> = std::sync::Arc::new(store.clone());
    let health: std::sync::Arc<dyn Health> = std::sync::Arc::new(store.clone());
    let new = keys.create_key(spec("dyn")).await.unwrap();
    assert!(matches!(
        keys.verify(new.secret.expose(), now()).await.unwrap(),
        KeyVerdict::Valid(_)
    ));
    health.ping().await.unwrap();
    store.close().await;
    schema.drop().await;
}

/// Two stores (two gateway instances) on one database see each other's writes at once: a key
/// made through one verifies through the other, and a revocation through the second is
/// refused by the first.
#[tokio::test]
async fn pg_two_instances_share_keys() {
    let schema = TestSchema::new().await;
    let a = schema.migrated().await;
    let b = schema.store().await;
    b.check_schema().await.unwrap();
    let made = a.create_key(spec("shared")).await.unwrap();
    assert_eq!(
        b.verify(made.secret.expose(), now()).await.unwrap(),
        KeyVerdict::Valid(made.record.clone())
    );
    b.revoke_key(&made.record.id).await.unwrap();
    assert_eq!(
        a.verify(made.secret.expose(), now()).await.unwrap(),
        KeyVerdict::Rejected(RejectReason::Revoked)
    );
    a.close().await;
    b.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn pg_stored_row_never_contains_the_secret() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    let new = store.create_key(spec("acme")).await.unwrap();
    let key = new.secret.expose().clone();
    let row: String = sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
        .persistent(false)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(!row.contains(&key[16..]), "{row}");
    assert!(row.contains(&crate::keys::KeyHash::of(&key).to_hex()));
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn pg_corrupt_rows_are_unavailable_not_invalid() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    let new = store.create_key(spec("acme")).await.unwrap();
    sqlx::raw_sql("UPDATE api_keys SET models = 'not json'")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        store.verify(new.secret.expose(), now()).await,
        Err(StoreError::Unavailable(_))
    ));
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn pg_a_closed_store_is_unavailable() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    store.close().await;
    assert_eq!(
        store.verify("not a key", now()).await.unwrap(),
        KeyVerdict::Rejected(RejectReason::Malformed)
    );
    let well_formed = crate::keys::generate().unwrap();
    assert!(matches!(
        store.verify(well_formed.secret.expose(), now()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    schema.drop().await;
}

// ---- migrations and the schema check ----

#[tokio::test]
async fn pg_an_older_schema_is_refused_naming_both_versions_and_the_command() {
    let schema = TestSchema::new().await;
    let store = schema.store().await;
    let latest = latest_version();
    // Every version before this build's: none at all, then each older one in turn.
    for version in 0..latest {
        if version > 0 {
            let done = store.migrate_to(version).await.unwrap();
            assert_eq!(done.to, version);
        }
        let err = store.check_schema().await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("version {version}"))
                && err.contains(&format!("version {latest}"))
                && err.contains("wardgate migrate"),
            "{err}"
        );
    }
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn pg_a_newer_schema_is_refused_by_the_check_and_by_migrate() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    sqlx::raw_sql(
        "INSERT INTO wardgate_schema_migrations (version, description, checksum, installed_at) \
         VALUES (9999, 'from the future', 'x', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let latest = latest_version();
    for err in [
        store.check_schema().await.unwrap_err(),
        store.migrate().await.unwrap_err(),
    ] {
        let err = err.to_string();
        assert!(
            err.contains("9999") && err.contains(&format!("version {latest}")),
            "{err}"
        );
    }
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn pg_an_edited_migration_is_refused() {
    let schema = TestSchema::new().await;
    let store = schema.migrated().await;
    sqlx::raw_sql("UPDATE wardgate_schema_migrations SET checksum = 'x' WHERE version = 1")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.check_schema().await.unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn pg_migrate_then_check_passes_and_migrating_again_changes_nothing() {
    let schema = TestSchema::new().await;
    let store = schema.store().await;
    let latest = latest_version();
    assert_eq!(
        store.migrate().await.unwrap(),
        Migrated {
            from: 0,
            to: latest
        }
    );
    let applied = || async {
        sqlx::query_as::<_, (i64, String, i64)>(
            "SELECT version, checksum, installed_at FROM wardgate_schema_migrations \
             ORDER BY version",
        )
        .persistent(false)
        .fetch_all(store.pool())
        .await
        .unwrap()
    };
    let before = applied().await;
    assert_eq!(before.len(), MIGRATIONS.len());
    assert_eq!(
        store.check_schema().await.unwrap(),
        SchemaVersion {
            current: latest,
            latest
        }
    );
    assert_eq!(
        store.migrate().await.unwrap(),
        Migrated {
            from: latest,
            to: latest
        }
    );
    assert_eq!(
        applied().await,
        before,
        "the second migrate changed nothing"
    );
    store.close().await;
    schema.drop().await;
}

/// Two `wardgate migrate` at once (two deploys racing): both succeed, one does the work.
#[tokio::test]
async fn pg_concurrent_migrations_apply_once() {
    let schema = TestSchema::new().await;
    let (a, b) = (schema.store().await, schema.store().await);
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let latest = latest_version();
    assert_eq!(ra.to, latest);
    assert_eq!(rb.to, latest);
    assert_eq!(
        [ra.from, rb.from].iter().filter(|&&f| f == 0).count(),
        1,
        "{ra:?} {rb:?}"
    );
    a.check_schema().await.unwrap();
    a.close().await;
    b.close().await;
    schema.drop().await;
}

#[test]
fn pg_migrations_list_matches_the_directory() {
    crate::conformance::migrations_match_directory("migrations_pg", MIGRATIONS);
}

// ---- the URL and connection errors ----

#[test]
fn pg_url_never_prints_its_password() {
    let url =
        PgUrl::parse("postgres://app:hunter2@db.internal:6543/wardgate?sslmode=require").unwrap();
    for shown in [format!("{url}"), format!("{url:?}"), url.shown().to_owned()] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("app"),
            "{shown}"
        );
        assert!(shown.contains("db.internal:6543/wardgate"), "{shown}");
    }
    assert_eq!(url.sslmode(), "require");
}

#[test]
fn pg_url_errors_say_what_is_wrong_without_quoting_the_url() {
    let cases = [
        ("mysql://u:hunter2@h/db", "postgres://"),
        ("postgres://u:hunter2@h:notaport/db", "PostgreSQL URL"),
        (
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "PostgreSQL URL",
        ),
        ("postgres://u:hunter2@h/db?ssl_mode=require", "`ssl_mode`"),
        ("postgres://u@h/db?passwd=hunter2", "`passwd`"),
        // A password with an unencoded `?`: what follows it is not a parameter name and is
        // not quoted (a black-box finding: the error showed `ssW0rdX@127.0.0.1:55432/atk3`).
        (
            "postgres://u:pa?hunter2@127.0.0.1:5432/db",
            "percent-encode",
        ),
        (
            "postgres://u:pa?hunter2X@h/db?sslmode=require",
            "percent-encode",
        ),
    ];
    for (url, wanted) in cases {
        let err = PgUrl::parse(url).unwrap_err().to_string();
        assert!(err.contains(wanted), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
    assert!(is_postgres_url("postgresql://h/db") && is_postgres_url("POSTGRES://h/db"));
    assert!(!is_postgres_url("sqlite://data/wardgate.db") && !is_postgres_url("postgres"));
}

/// All of an error's messages, as `wardgate` prints a failed start (`{:#}`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn pg_a_failed_connect_names_the_server_not_the_password() {
    // Port 1 on the loopback: nothing listens there.
    let url = PgUrl::parse("postgres://app:hunter2@127.0.0.1:1/wardgate").unwrap();
    let err = PgStore::connect(&url, PgOptions::default())
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(text.contains("127.0.0.1:1/wardgate"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn pg_the_pool_size_is_bounded() {
    let url = server_url();
    for max_connections in [0, MAX_MAX_CONNECTIONS + 1] {
        assert!(matches!(
            PgStore::connect(
                &url,
                PgOptions {
                    max_connections,
                    ..PgOptions::default()
                }
            )
            .await,
            Err(StoreError::Invalid(_))
        ));
    }
}

/// A TLS backend is compiled in: `sslmode=require` encrypts when the server offers TLS (the
/// connection shows in `pg_stat_ssl`), and `verify-full` against a certificate no known root
/// signed fails saying what to do. Against a server without TLS, `require` fails saying so.
#[tokio::test]
async fn pg_sslmode_is_honoured() {
    let server = server_url();
    let mut conn = admin(&server).await;
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let with_mode = |mode: &str| {
        let (host, port) = server.address();
        let user = server.username().to_owned();
        let db = server
            .connect_options()
            .get_database()
            .unwrap_or("")
            .to_owned();
        PgUrl::parse(&format!(
            "postgres://{user}@{host}:{port}/{db}?sslmode={mode}"
        ))
        .unwrap()
    };
    let require = PgStore::connect(&with_mode("require"), PgOptions::default()).await;
    if ssl == "on" {
        let store = require.unwrap();
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .persistent(false)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(encrypted, "sslmode=require gave an unencrypted connection");
        store.close().await;
        // The test server's certificate is self-signed (Debian's snakeoil): not verifiable.
        let err = PgStore::connect(&with_mode("verify-full"), PgOptions::default())
            .await
            .unwrap_err();
        let text = chain(&err);
        assert!(text.contains("sslrootcert"), "{text}");
    } else {
        let text = chain(&require.unwrap_err());
        assert!(text.contains("does not offer TLS"), "{text}");
    }
}

// ---- through PgBouncer in transaction-pooling mode ----

/// A PgBouncer of the test's own, in transaction-pooling mode with two server connections
/// per database, in front of the test server; stopped when dropped.
struct Bouncer {
    _dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian's package puts the binary (`/usr/sbin` is not on every user's `PATH`).
fn pgbouncer_binary() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer is not installed (looked on PATH and in /usr/sbin); the PgBouncer \
                 tests need it: apt-get install -y pgbouncer"
            )
        })
}

impl Bouncer {
    async fn start(server: &PgUrl) -> Self {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let binary = pgbouncer_binary();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (host, server_port) = server.address();
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{}\" \"\"\n", server.username())).unwrap();
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host={host} port={server_port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
                 pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n",
                users.display()
            ),
        )
        .unwrap();
        let mut command = std::process::Command::new(binary);
        // PgBouncer refuses to run as root; as root, it is told to switch to `nobody`, who
        // must be able to read its files.
        if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            for path in [dir.path(), &ini, &users] {
                let mode = if path.is_dir() { 0o755 } else { 0o644 };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let bouncer = Self {
            _dir: dir,
            child,
            port,
        };
        // Ready when it accepts connections.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "pgbouncer did not listen on port {port} within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        bouncer
    }
}

/// A database of the test's own (PgBouncer refuses the startup option a schema's search path
/// would need), dropped at the end.
struct TestDatabase {
    name: String,
    server: PgUrl,
}

impl TestDatabase {
    async fn new() -> Self {
        let server = server_url();
        let name = unique_name();
        run(&mut admin(&server).await, format!("CREATE DATABASE {name}")).await;
        Self { name, server }
    }

    async fn drop(self) {
        let mut conn = admin(&self.server).await;
        run(
            &mut conn,
            format!("DROP DATABASE {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

/// The conformance suite, migrations included, through PgBouncer in transaction mode with
/// more client connections (8) than server connections (2): no statement, lock or setting
/// may outlive its transaction, or another client's transaction on the same server connection
/// trips over it (a named prepared statement that already exists, or one that does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_suite_through_pgbouncer_in_transaction_mode() {
    let db = TestDatabase::new().await;
    let bouncer = Bouncer::start(&db.server).await;
    let url = db
        .server
        .clone()
        .with_database(&db.name)
        .with_address("127.0.0.1", bouncer.port);
    let store = PgStore::connect(
        &url,
        PgOptions {
            max_connections: 8,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.migrate().await.unwrap().from, 0);
    store.check_schema().await.unwrap();
    suite(&store).await;
    // Many lookups at once, far more than the two server connections: each one's statement
    // must be parsed, bound and run on one server connection.
    let made = store.create_key(spec("bouncer")).await.unwrap();
    let lookups: Vec<_> = (0..200)
        .map(|_| {
            let (store, key) = (store.clone(), made.secret.expose().clone());
            tokio::spawn(async move { store.verify(&key, now()).await })
        })
        .collect();
    for lookup in lookups {
        assert_eq!(
            lookup.await.unwrap().unwrap(),
            KeyVerdict::Valid(made.record.clone())
        );
    }
    // A second instance through the same PgBouncer sees the first one's keys.
    let other = PgStore::connect(
        &url,
        PgOptions {
            max_connections: 8,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    other.check_schema().await.unwrap();
    assert!(!other.list_keys(None).await.unwrap().is_empty());
    // The audit log too, lease and sequencing included: every call is one transaction.
    wardgate_audit::conformance::suite(&store).await;
    wardgate_audit::conformance::shared_suite(&other).await;
    other.close().await;
    store.close().await;
    drop(bouncer);
    db.drop().await;
}

// ---- a database link gone silent ----

#[tokio::test]
async fn pg_the_query_timeout_is_bounded() {
    let url = server_url();
    for query_timeout in [Duration::ZERO, MAX_QUERY_TIMEOUT + Duration::from_millis(1)] {
        let refused = PgStore::connect(
            &url,
            PgOptions {
                query_timeout,
                ..PgOptions::default()
            },
        )
        .await;
        assert!(
            matches!(&refused, Err(StoreError::Invalid(why)) if why.contains("query timeout")),
            "{query_timeout:?}: {refused:?}"
        );
    }
}

/// Runs `call` for at most `within`: a call still waiting then fails the test rather than
/// hanging it.
async fn within<T>(within: Duration, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, call)
        .await
        .unwrap_or_else(|_| panic!("the call did not end within {within:?}"))
}

/// A link to the database that goes silent (no data, no RST: a firewall that dropped the
/// flow) used to hold every call forever, and every connection it had. Now each call, waiting
/// for a connection or for an answer, fails as unavailable at `query_timeout`, saying so; more
/// callers than the pool holds fail the same; a caller that stops waiting first (a request at
/// its own deadline) costs the pool nothing either; and when the link is back the pool serves
/// again at full size, the connections that went silent dropped rather than kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_silent_link_fails_calls_in_time_and_the_pool_recovers() {
    use std::time::Instant;
    use wardgate_audit::{AuditStore as _, SharedLog as _};
    let schema = TestSchema::new().await;
    let direct = schema.migrated().await;
    let link = testing::SilentLink::start(&schema.url).await;
    let limit = Duration::from_millis(500);
    let store = PgStore::connect(
        &link.url(&schema.url),
        PgOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(30),
            query_timeout: limit,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    let key = direct.create_key(spec("acme")).await.unwrap();
    let secret = key.secret.expose().clone();
    let valid = |v: &KeyVerdict| matches!(v, KeyVerdict::Valid(_));
    assert!(valid(&store.verify(&secret, now()).await.unwrap()));
    // Both connections open and idle in the pool.
    let (a, b) = tokio::join!(store.list_tenants(), store.size());
    a.unwrap();
    b.unwrap();

    link.freeze();
    // A caller that stops waiting before the limit (as a request at its deadline does).
    assert!(
        tokio::time::timeout(Duration::from_millis(100), store.verify(&secret, now()))
            .await
            .is_err()
    );
    // Twice the pool's size of callers, key lookups and audit writes: each fails in time.
    let started = Instant::now();
    let calls = (0..4).map(|i| {
        let store = store.clone();
        let secret = secret.clone();
        async move {
            let failed = if i % 2 == 0 {
                store.verify(&secret, now()).await.map(drop).unwrap_err()
            } else {
                let event = wardgate_audit::conformance::sample_event(i);
                let key = wardgate_audit::conformance::suite_key();
                let e = store.enqueue(vec![event], &key).await.unwrap_err();
                StoreError::Unavailable(Box::new(e))
            };
            (started.elapsed(), chain(&failed))
        }
    });
    let failed = within(Duration::from_secs(10), all_at_once(calls)).await;
    for (took, text) in &failed {
        assert!(
            *took < limit + Duration::from_millis(700),
            "a call failed only after {took:?}: {text}"
        );
        assert!(
            text.contains("did not answer within 500 ms (storage.query_timeout)"),
            "{text}"
        );
        assert!(text.contains(&format!("127.0.0.1:{}", link.port)), "{text}");
    }
    assert!(within(Duration::from_secs(10), store.ping()).await.is_err());

    link.thaw();
    // The pool serves again, at its full size: more callers at once than it holds, twice over.
    for _ in 0..2 {
        let calls = (0..3).map(|_| {
            let store = store.clone();
            let secret = secret.clone();
            async move { store.verify(&secret, now()).await }
        });
        for verdict in within(Duration::from_secs(10), all_at_once(calls)).await {
            assert!(valid(&verdict.unwrap()));
        }
    }
    within(Duration::from_secs(10), store.ping()).await.unwrap();
    store.close().await;
    direct.close().await;
    schema.drop().await;
}

/// A call that runs out of time in the middle of its transaction (here, waiting on a row lock
/// another session holds) leaves nothing behind: its transaction is rolled back by the server
/// when the dropped connection closes, nothing it wrote stays, and the store goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_call_timed_out_mid_transaction_writes_nothing_and_the_store_goes_on() {
    use wardgate_audit::AuditStore as _;
    let schema = TestSchema::new().await;
    let direct = schema.migrated().await;
    let limit = Duration::from_millis(300);
    let store = PgStore::connect(
        &schema.url,
        PgOptions {
            max_connections: 1,
            query_timeout: limit,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    // Another session holds the lease row, which an append locks after it has begun.
    let mut holder = direct.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM audit_sequencer WHERE id = 1 FOR UPDATE")
        .persistent(false)
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let event = wardgate_audit::conformance::sample_event(0);
    let e = within(Duration::from_secs(10), store.append(vec![event.clone()]))
        .await
        .unwrap_err();
    assert!(started.elapsed() < limit + Duration::from_millis(700));
    assert!(
        e.to_string().contains("unavailable") || chain(&e).contains("did not answer"),
        "{}",
        chain(&e)
    );
    holder.rollback().await.unwrap();
    // The one pooled connection was dropped, not kept waiting: the next call gets a new one.
    let entries = within(Duration::from_secs(10), store.append(vec![event]))
        .await
        .unwrap();
    assert_eq!(entries[0].seq, 0, "the timed-out append left an entry");
    assert_eq!(direct.size().await.unwrap(), 1);
    store.close().await;
    direct.close().await;
    schema.drop().await;
}

/// Runs the calls at once, each on a task of its own; their outputs in order.
async fn all_at_once<T: Send + 'static>(
    calls: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

// ---- how database errors are said ----

/// A PostgreSQL error used to be said twice down its chain (`error returned from database: X
/// at line N: X at line N`), `N` being a line of the server's C source. Now the server's
/// message comes once, with its SQLSTATE, and no source line, file or routine: for a failed
/// call (a migrations table of another shape) and for a failed migration (a table of the
/// same name in the way).
#[tokio::test]
async fn pg_errors_say_each_cause_once_with_the_sqlstate_and_no_source_line() {
    let schema = TestSchema::new().await;
    let store = schema.store().await;
    sqlx::raw_sql(
        "CREATE TABLE wardgate_schema_migrations (version BIGINT); \
         CREATE TABLE tenants (x INT)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let checks = [
        (
            chain(&store.schema_version().await.unwrap_err()),
            "column \"checksum\" does not exist",
            "42703",
        ),
        (
            {
                sqlx::raw_sql("DROP TABLE wardgate_schema_migrations")
                    .execute(store.pool())
                    .await
                    .unwrap();
                chain(&store.migrate().await.unwrap_err())
            },
            "relation \"tenants\" already exists",
            "42P07",
        ),
    ];
    for (text, message, code) in checks {
        assert_eq!(text.matches(message).count(), 1, "{text}");
        assert!(text.contains(&format!("(SQLSTATE {code})")), "{text}");
        for source_line in [" at line ", "line:", "file:", "routine", ".c:"] {
            assert!(!text.contains(source_line), "{text}");
        }
    }
    store.close().await;
    schema.drop().await;
}

/// `audit.durability = "process"` on PostgreSQL: the audit enqueue's transaction commits
/// without waiting for the WAL flush (`synchronous_commit` off, in that transaction only),
/// while `disk` leaves the server's own setting alone, and nothing else the store writes (a
/// key, on the very same pooled connection right after) is relaxed. A trigger of the test's
/// own records the setting each insert ran under.
#[tokio::test]
async fn pg_process_durability_relaxes_the_audit_enqueue_and_nothing_else() {
    use wardgate_audit::conformance::sample_event;
    use wardgate_audit::{SharedLog as _, SignerKey};
    let schema = TestSchema::new().await;
    schema.migrated().await.close().await;
    let mut admin = admin(&schema.url).await;
    run(
        &mut admin,
        String::from(
            "CREATE TABLE commit_seen (tbl TEXT NOT NULL, setting TEXT NOT NULL, \
               n BIGSERIAL PRIMARY KEY); \
             CREATE FUNCTION record_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$ \
               BEGIN INSERT INTO commit_seen (tbl, setting) \
                 VALUES (TG_TABLE_NAME, current_setting('synchronous_commit')); \
                 RETURN NEW; END $$; \
             CREATE TRIGGER record_queue BEFORE INSERT ON audit_queue \
               FOR EACH ROW EXECUTE FUNCTION record_commit_setting(); \
             CREATE TRIGGER record_keys BEFORE INSERT ON api_keys \
               FOR EACH ROW EXECUTE FUNCTION record_commit_setting();",
        ),
    )
    .await;
    let key = SignerKey::generate(TEST_ORIGIN).unwrap().queue_key();
    let open = |audit_durability| {
        PgStore::connect(
            &schema.url,
            PgOptions {
                // One connection: the key below is written on the enqueue's own connection.
                max_connections: 1,
                audit_durability,
                ..PgOptions::default()
            },
        )
    };
    let seen = async |admin: &mut sqlx::PgConnection| -> Vec<(String, String)> {
        sqlx::query_as("SELECT tbl, setting FROM commit_seen ORDER BY n")
            .fetch_all(admin)
            .await
            .unwrap()
    };
    let pair = |t: &str, s: &str| (t.to_owned(), s.to_owned());

    let disk = open(AuditDurability::Disk).await.unwrap();
    disk.enqueue(vec![sample_event(0), sample_event(1)], &key)
        .await
        .unwrap();
    disk.close().await;
    assert_eq!(
        seen(&mut admin).await,
        [pair("audit_queue", "on"), pair("audit_queue", "on")]
    );

    let process = open(AuditDurability::Process).await.unwrap();
    process
        .enqueue(vec![sample_event(2), sample_event(3)], &key)
        .await
        .unwrap();
    process.create_key(spec("after")).await.unwrap();
    process.close().await;
    assert_eq!(
        seen(&mut admin).await[2..],
        [
            pair("audit_queue", "off"),
            pair("audit_queue", "off"),
            pair("api_keys", "on")
        ]
    );
    schema.drop().await;
}

/// A pooled connection that the server closed while it sat idle (a restart, an idle timeout, a
/// proxy) is noticed before a call uses it, and the call is served on a new connection instead
/// of failing. (Connections idle for less than a second are not pinged again before use: they
/// passed the ping sqlx makes when a connection goes back to the pool.)
#[tokio::test]
async fn pg_a_connection_closed_while_idle_is_replaced_before_a_call_uses_it() {
    let schema = TestSchema::new().await;
    schema.migrated().await.close().await;
    let store = PgStore::connect(
        &schema.url,
        PgOptions {
            max_connections: 1,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    let backend = async |store: &PgStore| -> i32 {
        store
            .bounded(async |tx: &mut PgConnection| {
                sqlx::query_scalar("SELECT pg_backend_pid()")
                    .persistent(false)
                    .fetch_one(tx)
                    .await
                    .map_err(<StoreError as bounded::Failure>::driver)
            })
            .await
            .unwrap()
    };
    let first = backend(&store).await;
    let mut admin = admin(&schema.url).await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(ended);
    tokio::time::sleep(PING_IF_IDLE_FOR + Duration::from_millis(300)).await;
    store.create_key(spec("after")).await.unwrap();
    assert_ne!(backend(&store).await, first);
    store.close().await;
    schema.drop().await;
}

/// A URL that names a server on another machine and chooses no `sslmode` is warned of (libpq's
/// default `prefer` neither insists on TLS nor checks the certificate), naming where it points
/// and what to set, never the password; a chosen `sslmode` (even `disable`), a Unix socket or
/// a loopback address is not.
#[test]
fn pg_a_remote_url_without_an_sslmode_is_warned_of() {
    let warned = |url: &str| PgUrl::parse(url).unwrap().default_tls_warning();
    if std::env::var_os("PGSSLMODE").is_some() {
        return; // the environment chose one for every URL
    }
    let w = warned("postgres://app:s3cret@db.internal:5432/wardgate").unwrap();
    assert!(w.contains("db.internal:5432/wardgate"), "{w}");
    assert!(w.contains("sslmode=verify-full"), "{w}");
    assert!(!w.contains("s3cret"), "{w}");
    assert!(warned("postgresql://app@10.0.0.7/wardgate").is_some());
    for quiet in [
        "postgres://app:s3cret@db.internal:5432/wardgate?sslmode=verify-full",
        "postgres://app@db.internal/wardgate?sslmode=require",
        "postgres://app@db.internal/wardgate?sslmode=disable",
        "postgres://app@db.internal/wardgate?application_name=x&ssl-mode=verify-ca",
        "postgres://app@127.0.0.1:5432/wardgate",
        "postgres://app@localhost/wardgate",
        "postgres://app@[::1]:5432/wardgate",
        "postgres://app@%2Fvar%2Frun%2Fpostgresql/wardgate",
    ] {
        assert_eq!(warned(quiet), None, "{quiet}");
    }
}
