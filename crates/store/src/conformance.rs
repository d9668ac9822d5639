//! The store conformance suite: the behaviour every implementation of `KeyStore`,
//! `TenantStore` and `Health` must show, through the traits only. `sqlite/tests.rs` runs it on
//! SQLite (in memory and on a file), `postgres/tests.rs` on PostgreSQL (directly and through
//! PgBouncer in transaction-pooling mode).
#![expect(clippy::unwrap_used, reason = "tests")]

use time::{Duration, OffsetDateTime};

use crate::keys::KEY_LEN;
use crate::{
    Health, KeyStore, KeyVerdict, MAX_ROTATION_OVERLAP, NewKeySpec, RejectReason, Revocation, Role,
    StoreError, TenantStore,
};

pub(crate) fn spec(tenant: &str) -> NewKeySpec {
    NewKeySpec {
        tenant: tenant.into(),
        models: vec![],
        roles: vec![],
        expires_at: None,
        label: None,
    }
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Every check, in an order that lets later ones rely on what earlier ones created.
pub(crate) async fn suite<S: KeyStore + TenantStore + Health + Clone>(store: &S) {
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
    tenant_isolation(store).await;
    concurrent_calls(store).await;
    concurrent_tenant_creation(store).await;
    concurrent_revocation(store).await;
    concurrent_rotation(store).await;
    rotation_racing_revocation(store).await;
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
    assert_eq!(
        store.revoke_key(&new.record.id).await.unwrap(),
        Revocation::Revoked
    );
    let verdict = store.verify(new.secret.expose(), now()).await.unwrap();
    assert_eq!(verdict, KeyVerdict::Rejected(RejectReason::Revoked));

    let first = store.list_keys(Some("revocation")).await.unwrap()[0].revoked_at;
    assert!(first.is_some());
    // Idempotent, and the first revocation time stands; the second call says it changed
    // nothing.
    assert_eq!(
        store.revoke_key(&new.record.id).await.unwrap(),
        Revocation::AlreadyRevoked
    );
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
    // With no overlap the old key is refused at once: its end is not rounded up to the next
    // second (a black-box finding: it kept working for about half a second on average).
    let zero = store.create_key(spec("rotation")).await.unwrap();
    let z = store
        .rotate_key(&zero.record.id, std::time::Duration::ZERO, None)
        .await
        .unwrap();
    assert!(z.old.expires_at.unwrap() <= now());
    assert_eq!(
        store.verify(zero.secret.expose(), now()).await.unwrap(),
        KeyVerdict::Rejected(RejectReason::Expired)
    );
    assert!(matches!(
        store.verify(z.new.secret.expose(), now()).await.unwrap(),
        KeyVerdict::Valid(_)
    ));
    // Dead keys are not rotated; unknown ids are not found; the overlap is bounded.
    store.revoke_key(&r.new.record.id).await.unwrap();
    assert!(matches!(
        store
            .rotate_key(&r.new.record.id, std::time::Duration::ZERO, None)
            .await,
        Err(StoreError::Conflict(_))
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
    // create_tenant creates, once; an existing tenant (made either way) is a conflict.
    let made = store.create_tenant("tenant-y").await.unwrap();
    assert_eq!(made.name, "tenant-y");
    for name in ["tenant-y", "tenant-x"] {
        assert!(
            matches!(
                store.create_tenant(name).await,
                Err(StoreError::Conflict(_))
            ),
            "{name}"
        );
    }
    assert_eq!(store.ensure_tenant("tenant-y").await.unwrap(), made);
    assert!(matches!(
        store.create_tenant("Not Valid").await,
        Err(StoreError::Invalid(_))
    ));
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

/// Nothing one tenant holds is seen or changed through another's name: listing by tenant,
/// revoking, expiring and verifying each touch one tenant's keys only.
async fn tenant_isolation<S: KeyStore + TenantStore>(store: &S) {
    let a = store.create_key(spec("iso-a")).await.unwrap();
    let b = store.create_key(spec("iso-b")).await.unwrap();
    let a_keys = store.list_keys(Some("iso-a")).await.unwrap();
    assert_eq!(a_keys, std::slice::from_ref(&a.record));
    let b_keys = store.list_keys(Some("iso-b")).await.unwrap();
    assert_eq!(b_keys, std::slice::from_ref(&b.record));
    // A key verifies as its own tenant's, whatever was verified before it.
    for (key, tenant) in [(&a, "iso-a"), (&b, "iso-b"), (&a, "iso-a")] {
        match store.verify(key.secret.expose(), now()).await.unwrap() {
            KeyVerdict::Valid(record) => assert_eq!(record.tenant, tenant),
            other => panic!("{tenant}: {other:?}"),
        }
    }
    // Revoking and expiring one tenant's key leaves the other's as it was.
    store.revoke_key(&a.record.id).await.unwrap();
    store.expire_key_by(&a.record.id, now()).await.unwrap();
    assert_eq!(
        store.get_key(&b.record.id).await.unwrap().unwrap(),
        b.record
    );
    assert!(matches!(
        store.verify(b.secret.expose(), now()).await.unwrap(),
        KeyVerdict::Valid(_)
    ));
    // A tenant that has no keys lists none, not another's.
    store.ensure_tenant("iso-empty").await.unwrap();
    assert!(store.list_keys(Some("iso-empty")).await.unwrap().is_empty());
}

/// Many calls at once from clones of one store (as a gateway's requests make them), more than
/// a small pool holds: each succeeds and sees its own writes.
async fn concurrent_calls<S: KeyStore + TenantStore + Clone>(store: &S) {
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let tenant = format!("conc-{}", i % 3);
                let made = store.create_key(spec(&tenant)).await?;
                let verdict = store.verify(made.secret.expose(), now()).await?;
                assert_eq!(verdict, KeyVerdict::Valid(made.record.clone()));
                store.touch_key(&made.record.id, now()).await?;
                store.ensure_tenant(&tenant).await?;
                let listed = store.list_keys(Some(&tenant)).await?;
                assert!(listed.iter().any(|k| k.id == made.record.id));
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    for i in 0..3 {
        let listed = store.list_keys(Some(&format!("conc-{i}"))).await.unwrap();
        assert_eq!(listed.len(), 8);
    }
}

/// Concurrent creations of one tenant (several admins, several gateway instances): the
/// store's unique name decides, so exactly one is told it created the tenant.
async fn concurrent_tenant_creation<S: TenantStore + Clone>(store: &S) {
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.create_tenant("conc-tenant").await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(t) => {
                assert_eq!(t.name, "conc-tenant");
                created += 1;
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(created, 1);
}

/// Concurrent revocations of one key: exactly one is told it revoked the key.
async fn concurrent_revocation<S: KeyStore + Clone>(store: &S) {
    let id = store
        .create_key(spec("conc-revoke"))
        .await
        .unwrap()
        .record
        .id;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move { store.revoke_key(&id).await })
        })
        .collect();
    let mut revoked = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() == Revocation::Revoked {
            revoked += 1;
        }
    }
    assert_eq!(revoked, 1);
}

/// Concurrent rotations of one key (the admin API of several instances, or one instance
/// twice): exactly one succeeds, so the key has exactly one replacement, and every other is a
/// conflict that names it and changed nothing. A rotation after them is refused alike.
async fn concurrent_rotation<S: KeyStore + Clone>(store: &S) {
    const ROTATIONS: usize = 16;
    for round in 0..4 {
        let tenant = format!("conc-rotate-{round}");
        let old = store.create_key(spec(&tenant)).await.unwrap().record;
        let overlap = std::time::Duration::from_secs(if round % 2 == 0 { 0 } else { 3600 });
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(ROTATIONS));
        let tasks: Vec<_> = (0..ROTATIONS)
            .map(|_| {
                let (store, id, barrier) = (store.clone(), old.id.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.rotate_key(&id, overlap, None).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut refusals = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => winners.push(r),
                Err(StoreError::Conflict(message)) => refusals.push(message),
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {refusals:?}");
        let new = &winners[0].new.record;
        assert_eq!(winners[0].old.replaced_by.as_ref(), Some(&new.id));
        for message in &refusals {
            assert!(
                message.contains("rotated already") && message.contains(&new.id),
                "round {round}: {message}"
            );
        }
        let keys = store.list_keys(Some(&tenant)).await.unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, [new.id.as_str(), old.id.as_str()], "round {round}");
        let stored = store.get_key(&old.id).await.unwrap().unwrap();
        assert_eq!(stored, winners[0].old);
        assert_eq!(stored.replaced_by.as_ref(), Some(&new.id));
        assert!(matches!(
            store.rotate_key(&old.id, overlap, None).await,
            Err(StoreError::Conflict(m)) if m.contains(&new.id)
        ));
        assert_eq!(store.list_keys(Some(&tenant)).await.unwrap().len(), 2);
    }
}

/// A rotation racing a revocation of the same key is ordered wholly before or after it:
/// either the rotation is refused and the key has no replacement, or the rotation saw the key
/// live and unrevoked (its answer says so) and the revocation came after it. Never a
/// replacement minted from a key the rotation saw revoked, and never a rotation's answer
/// showing a revoked key.
async fn rotation_racing_revocation<S: KeyStore + Clone>(store: &S) {
    let mut outcomes = [0usize; 2];
    for round in 0..12 {
        let tenant = format!("race-rotate-{round}");
        let old = store.create_key(spec(&tenant)).await.unwrap().record;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let rotation = tokio::spawn({
            let (store, id, barrier) = (store.clone(), old.id.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                store
                    .rotate_key(&id, std::time::Duration::from_secs(3600), None)
                    .await
            }
        });
        let revocation = tokio::spawn({
            let (store, id) = (store.clone(), old.id.clone());
            async move {
                barrier.wait().await;
                store.revoke_key(&id).await
            }
        });
        let (rotation, revocation) = (rotation.await.unwrap(), revocation.await.unwrap());
        assert_eq!(revocation.unwrap(), Revocation::Revoked, "round {round}");
        let stored = store.get_key(&old.id).await.unwrap().unwrap();
        assert!(stored.revoked_at.is_some(), "round {round}");
        let keys = store.list_keys(Some(&tenant)).await.unwrap();
        match rotation {
            Ok(r) => {
                outcomes[0] += 1;
                assert_eq!(
                    r.old.revoked_at, None,
                    "round {round}: rotated a revoked key"
                );
                assert_eq!(r.old.replaced_by.as_ref(), Some(&r.new.record.id));
                assert_eq!(stored.replaced_by.as_ref(), Some(&r.new.record.id));
                assert_eq!(keys.len(), 2, "round {round}");
            }
            Err(StoreError::Conflict(message)) => {
                outcomes[1] += 1;
                assert!(message.contains("revoked"), "round {round}: {message}");
                assert_eq!(stored.replaced_by, None, "round {round}");
                assert_eq!(
                    keys.len(),
                    1,
                    "round {round}: a replacement of a revoked key"
                );
            }
            Err(e) => panic!("round {round}: {e:?}"),
        }
    }
    assert_eq!(outcomes.iter().sum::<usize>(), 12);
}

/// Every `.sql` file in `dir` (under the crate) is listed in `migrations`, in order, as
/// `NNNN_description_with_underscores.sql`, with the file's text.
pub(crate) fn migrations_match_directory(dir: &str, migrations: &[(i64, &str, &str)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let listed: Vec<String> = migrations
        .iter()
        .map(|(version, description, _)| {
            format!("{version:04}_{}.sql", description.replace(' ', "_"))
        })
        .collect();
    assert_eq!(
        files, listed,
        "every migration file must be listed, in order"
    );
    for (file, (_, _, sql)) in files.iter().zip(migrations) {
        assert_eq!(&std::fs::read_to_string(dir.join(file)).unwrap(), sql);
    }
}
