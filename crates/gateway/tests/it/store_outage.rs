//! The gateway over a PostgreSQL it cannot hear from: a link gone silent (a firewall or NAT
//! that dropped the flow: no data, no RST), made by a proxy of the test's own that stops
//! forwarding without closing anything, then forwards again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use wardgate_gateway::app::Stores;
use wardgate_gateway::audit::AuditLog;
use wardgate_store::Role;
use wardgate_store::postgres::testing::{SilentLink, TestSchema};
use wardgate_store::postgres::{PgOptions, PgStore};

use crate::support::{Harness, chat, mock_cfg, poll_until};

/// A10: requests used to hang forever on the key lookup or the audit-start commit once the
/// database link went silent. Now each ends at its deadline (`server.request_timeout`, 1 s
/// here) with a 503 (its logged reason `storage_unavailable` when its key had to be looked up,
/// `audit_unavailable` when its key was cached but the start could not be committed; the
/// client is told only that the service is unavailable), no backend is called, and once the link is back requests are served again: the connections
/// the silent link held were dropped, not kept.
#[tokio::test]
async fn a10_a_silent_database_link_fails_requests_at_their_deadline_and_service_resumes() {
    let (logs, _guard) = crate::support::logs::capture_logs();
    let schema = TestSchema::new().await;
    let direct = schema.migrated().await;
    let link = SilentLink::start(&schema.url).await;
    let store = Arc::new(
        PgStore::connect(
            &link.url(&schema.url),
            PgOptions {
                max_connections: 4,
                // Both far longer than the requests' deadline, which alone must end them
                // (the bound below leaves room for a loaded machine).
                acquire_timeout: Duration::from_secs(10),
                query_timeout: Duration::from_secs(10),
                ..PgOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let mut stores = Stores::in_memory().await.unwrap();
    stores.db = store.clone();
    stores.audit = AuditLog::Shared(store.clone());
    let h = Harness::single_over(
        "openai",
        mock_cfg(),
        "[server]\nrequest_timeout = \"1s\"\n[auth]\nkey_cache_ttl = \"5m\"\n",
        stores,
    )
    .await;
    wardgate_gateway::app::refresh_backends(&h.state).await;
    let r = h.send(chat(&h.key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A key the gateway has not seen, so not in its cache: its request must ask the store.
    let (_, fresh) = h.key_with_roles("acme", &[Role::User], None).await;
    let calls = h.mocks[0].stats().inference_requests;

    link.freeze();
    let started = Instant::now();
    let (cached, looked_up) = tokio::join!(h.send(chat(&h.key)), h.send(chat(&fresh)));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the requests took {took:?} with a 1 s deadline (the store's own bound is 10 s)"
    );
    for r in [&looked_up, &cached] {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert!(r.headers.contains_key("retry-after"));
    }
    let said = logs.text();
    let failed = |reason: &str| {
        said.lines()
            .any(|l| l.contains("request failed") && l.contains(reason) && l.contains("503"))
    };
    assert!(failed("storage_unavailable"), "{said}");
    assert!(failed("audit_unavailable"), "{said}");
    assert_eq!(
        h.mocks[0].stats().inference_requests,
        calls,
        "a backend was called without an audit start"
    );

    link.thaw();
    // What the frozen link swallowed is never answered: calls still waiting on it end at the
    // store's own bound, and the pool opens fresh connections after that.
    for key in [&fresh, &h.key] {
        let r = poll_until(
            Duration::from_secs(30),
            || h.send(chat(key)),
            |r| r.status == StatusCode::OK,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // Closing the link ends the server's side of what the freeze left open (a transaction
    // whose commit it swallowed may hold locks until the server sees its connection go),
    // before the schema is dropped.
    drop(h);
    store.close().await;
    drop(link);
    direct.close().await;
    schema.drop().await;
}
