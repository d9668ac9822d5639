//! Tests of `SqliteStore`: a backend-neutral suite run on in-memory and file databases, then
//! checks that need SQLite itself (raw rows, files, migrations).
#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

use sqlx::Row as _;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::MAX_ROTATION_OVERLAP;
use crate::keys::KEY_LEN;

fn spec(tenant: &str) -> NewKeySpec {
    NewKeySpec {
        tenant: tenant.into(),
        models: vec![],
        roles: vec![],
        expires_at: None,
        label: None,
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn file_store(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("nested").join("dir").join("wardgate.db"))
        .await
        .unwrap()
}

// ---- backend-neutral suite: only the traits, so a PostgreSQL store can run the same checks ----

async fn suite<S: KeyStore + TenantStore + Health>(store: &S) {
    round_trip(store).await;
    wrong_secret_is_unknown(store).await;
    malformed_keys(store).await;
    revocation(store).await;
    expiry(store).await;
    break_glass_lifetime(store).await;
    last_use(store).await;
    rotation(store).await;
    listing(store).await;
    invalid_names(store).await;
    tenants(store).await;
    store.ping().await.unwrap();
}

async fn round_trip<S: KeyStore>(store: &S) {
    let expires_at = now() + Duration::days(30);
    let new = store
        .create_key(NewKeySpec {
            tenant: "roundtrip".into(),
            models: [
                "llama3.1:8b",
                "meta-llama/Llama-3.1-8B-Instruct",
                "llama3.1:8b",
            ]
            .map(String::from)
            .to_vec(),
            roles: vec![Role::Auditor, Role::Admin, Role::Admin],
            expires_at: Some(expires_at),
            label: Some("ci runner".into()),
        })
        .await
        .unwrap();
    let record = &new.record;
    assert!(record.id.starts_with("key_") && record.id.len() == 30);
    assert_eq!(new.secret.expose().len(), KEY_LEN);
    assert!(
        new.secret
            .expose()
            .starts_with(&format!("wg_{}_", record.prefix))
    );
    assert_eq!(
        record.models,
        ["llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct"]
    );
    assert_eq!(record.label.as_deref(), Some("ci runner"));
    assert_eq!(
        record.roles,
        [Role::Admin, Role::Auditor],
        "sorted, each once"
    );
    assert_eq!(
        record.expires_at.unwrap(),
        expires_at.replace_nanosecond(0).unwrap() + Duration::seconds(1),
        "a fractional expiry is rounded up to the next whole second"
    );
    assert_eq!(record.revoked_at, None);

    let verdict = store.verify(new.secret.expose(), now()).await.unwrap();
    assert_eq!(verdict, KeyVerdict::Valid(new.record.clone()));
    // What `create_key` returned is exactly what the store reads back.
    let listed = store.list_keys(Some("roundtrip")).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&new.record));
}

async fn wrong_secret_is_unknown<S: KeyStore>(store: &S) {
    let new = store.create_key(spec("wrongsecret")).await.unwrap();
    let key = new.secret.expose();
    let other = store.create_key(spec("wrongsecret")).await.unwrap();
    // Right prefix, someone else's secret; and right prefix with one secret character changed.
    let swapped = format!("{}{}", &key[..16], &other.secret.expose()[16..]);
    let mut flipped = key.clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    // Well-formed, but no such prefix.
    let unknown_prefix = format!("wg_zzzzzzzzzzzz{}", &key[15..]);
    for presented in [&swapped, &flipped, &unknown_prefix] {
        let verdict = store.verify(presented, now()).await.unwrap();
        assert_eq!(
            verdict,
            KeyVerdict::Rejected(RejectReason::Unknown),
            "{presented}"
        );
    }
    // A wrong secret stays Unknown even after the key is revoked: no state leaks without it.
    store.revoke_key(&new.record.id).await.unwrap();
    let verdict = store.verify(&swapped, now()).await.unwrap();
    assert_eq!(verdict, KeyVerdict::Rejected(RejectReason::Unknown));
}

async fn malformed_keys<S: KeyStore>(store: &S) {
    let new = store.create_key(spec("malformed")).await.unwrap();
    let key = new.secret.expose();
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("too long", format!("{key}x")),
        ("huge", "wg_".repeat(50_000)),
        ("truncated", key[..KEY_LEN - 1].to_string()),
        ("wrong scheme", format!("sk-{}", &key[3..])),
        ("openai style", format!("sk-proj-{}", &key[8..])),
        ("non-ascii", format!("{}ü", &key[..KEY_LEN - 2])),
        ("NUL", format!("{}\0", &key[..KEY_LEN - 1])),
        ("whitespace", format!("{} ", &key[..KEY_LEN - 1])),
        ("uppercase prefix", key.to_uppercase()),
    ];
    for (name, presented) in &cases {
        let verdict = store.verify(presented, now()).await.unwrap();
        assert_eq!(
            verdict,
            KeyVerdict::Rejected(RejectReason::Malformed),
            "{name}"
        );
    }
}

async fn revocation<S: KeyStore>(store: &S) {
    let new = store.create_key(spec("revocation")).await.unwrap();
    store.revoke_key(&new.record.id).await.unwrap();
    let verdict = store.verify(new.secret.expose(), now()).await.unwrap();
    assert_eq!(verdict, KeyVerdict::Rejected(RejectReason::Revoked));

    let first = store.list_keys(Some("revocation")).await.unwrap()[0].revoked_at;
    assert!(first.is_some());
    // Idempotent, and the first revocation time stands.
    store.revoke_key(&new.record.id).await.unwrap();
    let second = store.list_keys(Some("revocation")).await.unwrap()[0].revoked_at;
    assert_eq!(first, second);

    for id in ["key_00000000000000000000000000", "", "nope"] {
        assert!(
            matches!(store.revoke_key(id).await, Err(StoreError::NotFound)),
            "{id:?}"
        );
    }
}

async fn last_used<S: KeyStore>(store: &S, id: &str) -> Option<OffsetDateTime> {
    store
        .list_keys(Some("lastuse"))
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == id)
        .unwrap()
        .last_used_at
}

async fn last_use<S: KeyStore>(store: &S) {
    let new = store.create_key(spec("lastuse")).await.unwrap();
    assert_eq!(new.record.last_used_at, None);
    let t1 = OffsetDateTime::from_unix_timestamp(now().unix_timestamp()).unwrap();
    store.touch_key(&new.record.id, t1).await.unwrap();
    assert_eq!(last_used(store, &new.record.id).await, Some(t1));
    assert_eq!(
        store
            .get_key(&new.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(t1)
    );
    assert_eq!(store.get_key("key_doesnotexist").await.unwrap(), None);
    // Never backwards; unknown ids are ignored.
    store
        .touch_key(&new.record.id, t1 - Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(last_used(store, &new.record.id).await, Some(t1));
    store.touch_key("key_doesnotexist", t1).await.unwrap();
}

async fn expiry<S: KeyStore>(store: &S) {
    let expires_at = now() + Duration::hours(1);
    let new = store
        .create_key(NewKeySpec {
            expires_at: Some(expires_at),
            ..spec("expiry")
        })
        .await
        .unwrap();
    let stored = new.record.expires_at.unwrap();
    // Storage keeps whole seconds; it may round a lifetime up, never down.
    assert!(stored >= expires_at, "{stored} < {expires_at}");
    assert!(stored - expires_at < Duration::seconds(1));
    let expires_at = stored;
    let cases = [
        (now(), None),
        (expires_at - Duration::seconds(1), None),
        (expires_at, Some(RejectReason::Expired)),
        (expires_at + Duration::days(1), Some(RejectReason::Expired)),
    ];
    for (at, want) in cases {
        let verdict = store.verify(new.secret.expose(), at).await.unwrap();
        match want {
            None => assert!(
                matches!(verdict, KeyVerdict::Valid(_)),
                "at {at}: {verdict:?}"
            ),
            Some(reason) => assert_eq!(verdict, KeyVerdict::Rejected(reason), "at {at}"),
        }
    }
}

/// A break-glass key asked to last exactly the longest it may (24 hours from now, as
/// `--expires 24h` asks) is made; a second more is refused. The store keeps whole seconds,
/// and rounding the expiry up and the creation down made the first look a second too long.
async fn break_glass_lifetime<S: KeyStore>(store: &S) {
    let break_glass = |expires_at| NewKeySpec {
        roles: vec![Role::BreakGlass],
        expires_at: Some(expires_at),
        ..spec("break-glass")
    };
    for _ in 0..3 {
        let at = now() + crate::roles::MAX_BREAK_GLASS_LIFETIME;
        let made = store.create_key(break_glass(at)).await;
        assert!(made.is_ok(), "{:?}", made.err());
    }
    let too_long = now() + crate::roles::MAX_BREAK_GLASS_LIFETIME + Duration::seconds(2);
    assert!(matches!(
        store.create_key(break_glass(too_long)).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn rotation<S: KeyStore>(store: &S) {
    let old = store
        .create_key(NewKeySpec {
            models: vec!["tiny".into()],
            roles: vec![Role::Admin],
            label: Some("billing".into()),
            ..spec("rotation")
        })
        .await
        .unwrap();
    let t0 = now();
    let r = store
        .rotate_key(
            &old.record.id,
            std::time::Duration::from_secs(3600),
            Some(t0 + Duration::days(90)),
        )
        .await
        .unwrap();
    // The replacement carries the old key's scope.
    assert_ne!(r.new.record.id, old.record.id);
    assert_eq!(r.new.record.tenant, "rotation");
    assert_eq!(r.new.record.models, vec!["tiny".to_owned()]);
    assert_eq!(r.new.record.roles, vec![Role::Admin]);
    assert_eq!(r.new.record.label.as_deref(), Some("billing"));
    // Both keys work during the overlap; the old one stops at its end.
    let old_expiry = r.old.expires_at.unwrap();
    assert!(old_expiry > t0 + Duration::minutes(59) && old_expiry <= t0 + Duration::minutes(61));
    for secret in [old.secret.expose(), r.new.secret.expose()] {
        assert!(matches!(
            store.verify(secret, t0).await.unwrap(),
            KeyVerdict::Valid(_)
        ));
    }
    assert_eq!(
        store
            .verify(old.secret.expose(), t0 + Duration::minutes(62))
            .await
            .unwrap(),
        KeyVerdict::Rejected(RejectReason::Expired)
    );
    assert!(matches!(
        store
            .verify(r.new.secret.expose(), t0 + Duration::minutes(62))
            .await
            .unwrap(),
        KeyVerdict::Valid(_)
    ));
    // Rotating never lengthens an expiry that was already sooner.
    store
        .expire_key_by(&r.new.record.id, t0 + Duration::minutes(5))
        .await
        .unwrap();
    store
        .expire_key_by(&r.new.record.id, t0 + Duration::days(5))
        .await
        .unwrap();
    let again = store.get_key(&r.new.record.id).await.unwrap().unwrap();
    assert!(again.expires_at.unwrap() <= t0 + Duration::minutes(6));
    // Dead keys are not rotated; unknown ids are not found; the overlap is bounded.
    store.revoke_key(&r.new.record.id).await.unwrap();
    assert!(matches!(
        store
            .rotate_key(&r.new.record.id, std::time::Duration::ZERO, None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .rotate_key("key_nope", std::time::Duration::ZERO, None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .rotate_key(&old.record.id, MAX_ROTATION_OVERLAP * 2, None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.expire_key_by("key_nope", t0).await,
        Err(StoreError::NotFound)
    ));
}

async fn listing<S: KeyStore>(store: &S) {
    let mut created = Vec::new();
    for tenant in ["list-a", "list-b", "list-a", "list-a", "list-b"] {
        created.push(store.create_key(spec(tenant)).await.unwrap().record);
    }
    let ids_of = |tenant: &str| -> Vec<String> {
        created
            .iter()
            .rev()
            .filter(|r| r.tenant == tenant)
            .map(|r| r.id.clone())
            .collect()
    };
    for tenant in ["list-a", "list-b"] {
        let listed: Vec<String> = store
            .list_keys(Some(tenant))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, ids_of(tenant), "newest first for {tenant}");
    }
    assert!(store.list_keys(Some("list-none")).await.unwrap().is_empty());

    let all = store.list_keys(None).await.unwrap();
    let positions: Vec<usize> = created
        .iter()
        .rev()
        .map(|r| all.iter().position(|a| a.id == r.id).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "newest first overall"
    );
    assert!(
        all.windows(2).all(|w| w[0].created_at >= w[1].created_at),
        "sorted by created_at"
    );
}

async fn invalid_names<S: KeyStore + TenantStore>(store: &S) {
    let cases: Vec<(&str, NewKeySpec)> = vec![
        ("empty tenant", spec("")),
        ("uppercase tenant", spec("Acme")),
        ("tenant with space", spec("acme corp")),
        ("long tenant", spec(&"t".repeat(65))),
        (
            "bad model",
            NewKeySpec {
                models: vec!["llama3".into(), "bad model".into()],
                ..spec("acme")
            },
        ),
        (
            "empty model",
            NewKeySpec {
                models: vec![String::new()],
                ..spec("acme")
            },
        ),
        (
            "control in label",
            NewKeySpec {
                label: Some("a\nb".into()),
                ..spec("acme")
            },
        ),
        (
            "empty label",
            NewKeySpec {
                label: Some(String::new()),
                ..spec("acme")
            },
        ),
    ];
    for (name, spec) in cases {
        let result = store.create_key(spec).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{name}: {result:?}"
        );
    }
    // Nothing was created by the rejected calls.
    assert!(store.list_keys(Some("acme")).await.unwrap().is_empty());
    assert!(
        !store
            .list_tenants()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "acme")
    );
    for name in ["", "Acme", "a/b", "a b"] {
        assert!(matches!(
            store.ensure_tenant(name).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(matches!(
        store.list_keys(Some("Not Valid")).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn tenants<S: KeyStore + TenantStore>(store: &S) {
    let first = store.ensure_tenant("tenant-x").await.unwrap();
    let again = store.ensure_tenant("tenant-x").await.unwrap();
    assert_eq!(first, again, "ensure_tenant keeps the original row");
    // create_key created its tenants.
    let names: Vec<String> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    for name in ["tenant-x", "list-a", "list-b", "roundtrip"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "tenants listed by name");
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
    assert_eq!(columns, 11, "every column was checked");
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let listed: Vec<String> = MIGRATIONS
        .iter()
        .map(|(version, description, _)| {
            format!("{version:04}_{}.sql", description.replace(' ', "_"))
        })
        .collect();
    assert_eq!(
        files, listed,
        "every migration file must be listed in MIGRATIONS, in order"
    );
    for (file, (_, _, sql)) in files.iter().zip(MIGRATIONS) {
        assert_eq!(&std::fs::read_to_string(dir.join(file)).unwrap(), sql);
    }
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
