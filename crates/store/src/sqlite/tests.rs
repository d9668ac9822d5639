//! Tests of `SqliteStore`: the store conformance suite (`conformance.rs`) run on in-memory and
//! file databases, then checks that need SQLite itself (raw rows, files, migrations).
#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

use sqlx::Row as _;

use super::*;
use crate::conformance::{now, spec, suite};
use crate::keys::KeyHash;

async fn file_store(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("nested").join("dir").join("wardgate.db"))
        .await
        .unwrap()
}

#[tokio::test]
async fn suite_in_memory() {
    suite(&SqliteStore::open_in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn suite_on_file() {
    let dir = tempfile::tempdir().unwrap();
    suite(&file_store(dir.path()).await).await;
}

#[tokio::test]
async fn suite_through_trait_objects() {
    // How the gateway holds stores: behind `Arc<dyn _>`.
    let store = SqliteStore::open_in_memory().await.unwrap();
    let keys: std::sync::Arc<dyn KeyStore> = std::sync::Arc::new(store.clone());
    let new = keys.create_key(spec("dyn")).await.unwrap();
    assert!(matches!(
        keys.verify(new.secret.expose(), now()).await.unwrap(),
        KeyVerdict::Valid(_)
    ));
}

// ---- SQLite-specific checks ----

#[tokio::test]
async fn stored_row_never_contains_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let new = store
        .create_key(NewKeySpec {
            label: Some("label".into()),
            models: vec!["llama3".into()],
            ..spec("acme")
        })
        .await
        .unwrap();
    let key = new.secret.expose().clone();
    let secret_part = key[16..].to_string();

    let rows = sqlx::query("SELECT * FROM api_keys")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let mut columns = 0;
    for i in 0..row.len() {
        let text = match row.try_get::<Option<String>, _>(i) {
            Ok(text) => text,
            Err(_) => row
                .try_get::<Option<i64>, _>(i)
                .unwrap()
                .map(|n| n.to_string()),
        };
        let text = text.unwrap_or_default();
        assert!(!text.contains(&key), "column {i} holds the key");
        assert!(!text.contains(&secret_part), "column {i} holds the secret");
        columns += 1;
    }
    assert_eq!(columns, 12, "every column was checked");
    let stored_hash: String = row.try_get("key_hash").unwrap();
    assert_eq!(stored_hash, KeyHash::of(&key).to_hex());

    // Nor anywhere in the files on disk (main file and WAL, after a checkpoint on close).
    store.close().await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes
                .windows(secret_part.len())
                .any(|w| w == secret_part.as_bytes()),
            "secret found on disk"
        );
    }
}

#[tokio::test]
async fn reopen_keeps_keys_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("wardgate.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let new = store.create_key(spec("acme")).await.unwrap();
    let applied_before: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, CAST(installed_on AS TEXT) FROM _sqlx_migrations")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(applied_before.len(), MIGRATIONS.len());
    store.close().await;

    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.unwrap();
        let applied: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, CAST(installed_on AS TEXT) FROM _sqlx_migrations")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(applied, applied_before);
        assert_eq!(
            store.list_keys(None).await.unwrap(),
            std::slice::from_ref(&new.record)
        );
        assert_eq!(
            store.verify(new.secret.expose(), now()).await.unwrap(),
            KeyVerdict::Valid(new.record.clone())
        );
        store.close().await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn new_database_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.ensure_tenant("acme").await.unwrap();
    // The log's filter index lives beside it, as private as the database.
    for file in [path.clone(), dir.path().join("private.db-audit-index")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    store.close().await;
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    let store = SqliteStore::open(&path).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    store.close().await;

    match SqliteStore::open(&path).await {
        Err(StoreError::Migration(msg)) => {
            assert!(msg.contains("9999") && msg.contains("newer"), "{msg}");
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
}

#[tokio::test]
async fn edited_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.db");
    let store = SqliteStore::open(&path).await.unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 1")
        .execute(&store.pool)
        .await
        .unwrap();
    store.close().await;
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(StoreError::Migration(msg)) if msg.contains("checksum")
    ));
}

#[tokio::test]
async fn malformed_keys_are_rejected_without_storage() {
    // With every connection closed, a malformed key is still answered (no query is made), while
    // a well-formed one needs the database and reports it unavailable.
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.close().await;
    assert_eq!(
        store.verify("not a key", now()).await.unwrap(),
        KeyVerdict::Rejected(RejectReason::Malformed)
    );
    let well_formed = keys::generate().unwrap();
    assert!(matches!(
        store.verify(well_formed.secret.expose(), now()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn corrupt_rows_are_unavailable_not_invalid() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let new = store.create_key(spec("acme")).await.unwrap();
    sqlx::query("UPDATE api_keys SET models = 'not json'")
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(matches!(
        store.verify(new.secret.expose(), now()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.list_keys(None).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn concurrent_creates_on_a_file_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let tenant = format!("t{}", i % 3);
                store.create_key(spec(&tenant)).await.map(|k| k.record.id)
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.list_keys(None).await.unwrap().len(), 16);
    assert_eq!(store.list_tenants().await.unwrap().len(), 3);
}

#[test]
fn migrations_list_matches_the_directory() {
    crate::conformance::migrations_match_directory("migrations", MIGRATIONS);
}

/// The pool may replace its connection (sqlx drops one whose query was cancelled mid-way, as
/// when a client leaves); an in-memory store keeps its tables and rows across that. Before,
/// each connection had a private `:memory:` database, and a replaced one found no tables
/// ("no such table: tenants", seen as a flaky test under load).
#[tokio::test]
async fn an_in_memory_store_survives_its_connection_being_replaced() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let made = store.create_key(spec("acme")).await.unwrap();
    // Take the pool's connection out of it and close it: the pool opens a new one.
    let conn = store.pool.acquire().await.unwrap().detach();
    sqlx::Connection::close(conn).await.unwrap();
    let keys = store.list_keys(Some("acme")).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, made.record.id);
    // The filter index, attached per connection, is the same database too.
    let count: i64 = sqlx::query("SELECT count(*) FROM audit_index.audit_filter")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

/// After `settle` (a clean stop) the WAL is empty and the database file alone holds every
/// commit: a copy of it without the `-wal` has the key made last. In memory it does nothing.
#[tokio::test(flavor = "multi_thread")]
async fn settle_leaves_the_database_file_complete_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardgate.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let id = store.create_key(spec("acme")).await.unwrap().record.id;
    store.settle().await.unwrap();
    let wal = dir.path().join("wardgate.db-wal");
    assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);

    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(&path, alone.join("wardgate.db")).unwrap();
    store.close().await;
    let copy = SqliteStore::open(&alone.join("wardgate.db")).await.unwrap();
    assert!(copy.get_key(&id).await.unwrap().is_some());
    copy.close().await;

    SqliteStore::open_in_memory()
        .await
        .unwrap()
        .settle()
        .await
        .unwrap();
}
