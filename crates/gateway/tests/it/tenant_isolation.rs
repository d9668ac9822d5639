//! Tenant isolation, store by store and cache by cache: nothing one tenant stores, caches or
//! spends is visible to, or counted against, another. Each section names the store or cache.
//! The key and tenant stores' sections run on SQLite and on PostgreSQL (a schema of the test's
//! own); the Redis limiter's buckets are covered at the end.

use crate::support::{Harness, chat, delete_as, get_as, mock_cfg, post_as};
use axum::http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use wardgate_gateway::app::Stores;
use wardgate_gateway::guards::ratelimit::{Bound, Limit, RateLimiter, RedisLimiter, Settlement};
use wardgate_store::Role;
use wardgate_store::postgres::testing::TestSchema;

async fn harness(extra: &str) -> Harness {
    Harness::single_with("openai", mock_cfg(), extra).await
}

/// The gateway with its keys and tenants in a PostgreSQL schema of its own (the audit log in
/// memory, as every harness keeps it), and the schema, to drop at the end.
async fn on_postgresql() -> (Harness, TestSchema) {
    let schema = TestSchema::new().await;
    let mut stores = Stores::in_memory().await.unwrap();
    stores.db = Arc::new(schema.migrated().await);
    let h = Harness::single_over("openai", mock_cfg(), "", stores).await;
    (h, schema)
}

#[tokio::test]
async fn the_key_store_shows_and_changes_a_tenants_keys_only() {
    key_store_isolation(harness("").await).await;
}

#[tokio::test]
async fn the_key_store_shows_and_changes_a_tenants_keys_only_on_postgresql() {
    let (h, schema) = on_postgresql().await;
    key_store_isolation(h).await;
    schema.drop().await;
}

async fn key_store_isolation(h: Harness) {
    let (_, admin_a) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let (b_id, b_key) = h.key_with_roles("globex", &[Role::User], None).await;
    // The store itself filters by tenant.
    let acme = h.store.list_keys(Some("acme")).await.unwrap();
    assert!(acme.iter().all(|k| k.tenant == "acme"));
    assert!(!acme.iter().any(|k| k.id == b_id));
    // Through the API: not listed, not revocable, not rotatable, indistinguishable from absent.
    let listed = h.send(get_as("/admin/keys", Some(&admin_a))).await.text();
    assert!(!listed.contains(&b_id), "{listed}");
    let foreign = h
        .send(delete_as(&format!("/admin/keys/{b_id}"), Some(&admin_a)))
        .await;
    let absent = h
        .send(delete_as(
            "/admin/keys/key_00000000000000000000000000",
            Some(&admin_a),
        ))
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(foreign.json()["error"], absent.json()["error"]);
    let r = h
        .send(post_as(
            &format!("/admin/keys/{b_id}/rotate"),
            "",
            Some(&admin_a),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // And the other tenant's key still works, untouched.
    assert_eq!(h.send(chat(&b_key)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_tenant_store_lists_a_tenant_only_itself() {
    tenant_store_isolation(harness("").await).await;
}

#[tokio::test]
async fn the_tenant_store_lists_a_tenant_only_itself_on_postgresql() {
    let (h, schema) = on_postgresql().await;
    tenant_store_isolation(h).await;
    schema.drop().await;
}

async fn tenant_store_isolation(h: Harness) {
    h.store.ensure_tenant("globex").await.unwrap();
    let (_, admin_a) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let v = h
        .send(get_as("/admin/tenants", Some(&admin_a)))
        .await
        .json();
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme"]);
}

#[tokio::test]
async fn the_audit_store_answers_a_tenants_auditor_with_its_own_events_only() {
    let h = harness("").await;
    let (_, a_user) = h.key_with_roles("acme", &[Role::User], None).await;
    let (b_id, b_user) = h.key_with_roles("globex", &[Role::User], None).await;
    let (_, a_auditor) = h.key_with_roles("acme", &[Role::Auditor], None).await;
    assert_eq!(h.send(chat(&a_user)).await.status, StatusCode::OK);
    assert_eq!(h.send(chat(&b_user)).await.status, StatusCode::OK);
    h.audit_events().await;
    for query in [
        "/admin/audit",
        "/admin/audit?tenant=globex",
        "/admin/audit?actor=x",
    ] {
        let r = h.send(get_as(query, Some(&a_auditor))).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
        let text = r.text();
        assert!(
            !text.contains("globex") && !text.contains(&b_id),
            "{query}: {text}"
        );
    }
}

#[tokio::test]
async fn the_credential_cache_keeps_each_principal_in_its_own_tenant() {
    // Two keys verified and cached back to back: each request still runs as its own tenant
    // (the cache is keyed by the credential's digest, and holds the tenant it was issued to).
    let h = harness("[rate_limit]\ntenant_requests_per_minute = 1\n").await;
    let (_, a) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, b) = h.key_with_roles("globex", &[Role::User], None).await;
    assert_eq!(h.send(chat(&a)).await.status, StatusCode::OK);
    assert_eq!(
        h.send(chat(&b)).await.status,
        StatusCode::OK,
        "globex has its own bucket"
    );
    // Both now cached: each is counted against its own tenant.
    assert_eq!(h.send(chat(&a)).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h.send(chat(&b)).await.status, StatusCode::TOO_MANY_REQUESTS);
    let events = h.audit_events().await;
    let tenants: Vec<_> = events
        .iter()
        .filter(|e| e.route.as_deref() == Some("/v1/chat/completions"))
        .filter_map(|e| e.tenant.clone())
        .collect();
    assert_eq!(
        tenants.iter().filter(|t| *t == "acme").count(),
        tenants.iter().filter(|t| *t == "globex").count()
    );
}

#[tokio::test]
async fn the_in_process_limiter_keeps_each_tenants_quotas_apart() {
    let h =
        harness("[rate_limit]\ntenant_tokens_per_day = 5\ntenant_concurrent_requests = 1\n").await;
    let (_, a) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, b) = h.key_with_roles("globex", &[Role::User], None).await;
    assert_eq!(h.send(chat(&a)).await.status, StatusCode::OK);
    assert_eq!(h.send(chat(&a)).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        h.send(chat(&b)).await.status,
        StatusCode::OK,
        "acme's spend is not globex's"
    );
}

#[tokio::test]
async fn the_redis_limiter_keeps_each_tenants_buckets_apart() {
    let url = std::env::var("WARDGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let l = RedisLimiter::connect(&url, &ns)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is needed for this test: {e}"));
    let hold = std::time::Duration::from_secs(60);
    let admit = |bounds: Vec<Bound>| {
        let l = &l;
        async move { l.admit(&bounds, hold).await.map_err(|r| r.limit) }
    };
    assert!(admit(vec![Bound::requests("tenant:acme", 1)]).await.is_ok());
    assert_eq!(
        admit(vec![Bound::requests("tenant:acme", 1)]).await,
        Err(Limit::Requests)
    );
    assert!(
        admit(vec![Bound::requests("tenant:globex", 1)])
            .await
            .is_ok()
    );
    assert!(
        admit(vec![Bound::concurrency("places:tenant:acme", 1)])
            .await
            .is_ok()
    );
    assert!(
        admit(vec![Bound::concurrency("places:tenant:globex", 1)])
            .await
            .is_ok()
    );
    let spent = vec![
        Bound::tokens("tpm:tenant:acme", 10),
        Bound::tokens_per_day("day:tenant:acme", 7),
    ];
    l.settle(&Settlement::of(spent.clone(), 0).charging(1_000))
        .await
        .unwrap();
    assert_eq!(
        admit(vec![Bound::tokens("tpm:tenant:acme", 10)]).await,
        Err(Limit::Tokens)
    );
    assert_eq!(
        admit(vec![Bound::tokens_per_day("day:tenant:acme", 7)]).await,
        Err(Limit::TokensPerDay)
    );
    assert!(
        admit(vec![
            Bound::tokens("tpm:tenant:globex", 10),
            Bound::tokens_per_day("day:tenant:globex", 7)
        ])
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn pseudonyms_are_per_request_and_never_shared_across_tenants() {
    // The de-identification map lives in one request's memory: the same name sent by two
    // tenants reaches the backend as the same placeholder, with nothing carried between them.
    let h = harness("[phi]\nmode = \"deidentify\"\n").await;
    let (_, a) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, b) = h.key_with_roles("globex", &[Role::User], None).await;
    let mut seen = Vec::new();
    for key in [&a, &b] {
        let body = json!({"model": "tiny", "messages": [
            {"role": "user", "content": "Patient John Smith, SSN 123-45-6789, called."}]});
        let r = h
            .send(post_as(
                "/v1/chat/completions",
                &body.to_string(),
                Some(key),
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let sent = h.mocks[0].stats().last_body.unwrap().to_string();
        assert!(
            !sent.contains("John Smith") && !sent.contains("123-45-6789"),
            "{sent}"
        );
        seen.push(sent);
    }
    assert_eq!(
        seen[0], seen[1],
        "each request numbers its own pseudonyms from 1"
    );
}
