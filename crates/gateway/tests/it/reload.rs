//! Configuration reload through the admin API: request policy changes apply to the next
//! request; settings that need a restart, and invalid files, are refused with nothing
//! applied; every attempt is a `config_change` audit event.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::phi_audit::Flaky;
use crate::support::{Harness, Resp, backend_url, mock_cfg, mocks, post_as};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use wardgate_audit::{EventType, Outcome};
use wardgate_store::Role;

fn config(url: &str, max_messages: u32) -> String {
    format!(
        r#"[limits]
max_messages = {max_messages}

[[backends]]
name = "b0"
kind = "openai"
url = "{url}"

[[models]]
name = "tiny"
chain = [{{ backend = "b0", model = "tiny" }}]
"#
    )
}

/// One request through the router now serving (a reload swaps it).
async fn send(h: &Harness, req: Request<Body>) -> Resp {
    h.send_live(req).await
}

fn three_messages(key: &str) -> Request<Body> {
    let body = json!({"model": "tiny", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "again"},
    ]});
    post_as("/v1/chat/completions", &body.to_string(), Some(key))
}

fn reload(key: &str) -> Request<Body> {
    post_as("/admin/config/reload", "", Some(key))
}

#[tokio::test]
async fn policy_reloads_without_a_restart_and_everything_else_is_refused() {
    let ms = mocks(vec![mock_cfg()]).await;
    let url = backend_url("openai", &ms[0]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardgate.toml");
    std::fs::write(&path, config(&url, 256)).unwrap();
    let h = Harness::from_file(&path, ms).await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    let (_, tenant_admin) = h.key_with_roles("acme", &[Role::Admin], None).await;

    assert_eq!(
        send(&h, three_messages(&h.key)).await.status,
        StatusCode::OK
    );

    // A policy change applies to the next request.
    std::fs::write(&path, config(&url, 2)).unwrap();
    assert_eq!(
        send(&h, reload(&tenant_admin)).await.status,
        StatusCode::FORBIDDEN,
        "only operators reload"
    );
    let r = send(&h, reload(&operator)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["changed"], json!(["limits"]));
    assert_eq!(r.json()["sha256"].as_str().unwrap().len(), 64);
    let r = send(&h, three_messages(&h.key)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());

    // Reloading the same file again changes nothing.
    let r = send(&h, reload(&operator)).await;
    assert_eq!(r.json()["reloaded"], false);

    // A backend change needs a restart: refused, named, nothing applied (the limit of 2
    // still holds; a later valid reload still works).
    std::fs::write(&path, config("http://127.0.0.1:9/v1", 256)).unwrap();
    let r = send(&h, reload(&operator)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "reload_refused");
    assert!(r.text().contains("backends"), "{}", r.text());
    assert_eq!(
        send(&h, three_messages(&h.key)).await.status,
        StatusCode::BAD_REQUEST
    );

    // An invalid file: 400 naming the setting, nothing applied.
    std::fs::write(&path, "[limits]\nmax_messages = 0\n").unwrap();
    let r = send(&h, reload(&operator)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("limits.max_messages"), "{}", r.text());
    assert_eq!(
        send(&h, three_messages(&h.key)).await.status,
        StatusCode::BAD_REQUEST
    );

    std::fs::write(&path, config(&url, 256)).unwrap();
    assert_eq!(send(&h, reload(&operator)).await.status, StatusCode::OK);
    assert_eq!(
        send(&h, three_messages(&h.key)).await.status,
        StatusCode::OK
    );

    // Every attempt by an operator is audited, refusals included.
    let events = h.audit_events().await;
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::ConfigChange)
        .map(|e| (e.outcome, e.detail.clone().unwrap_or_default()))
        .collect();
    assert_eq!(changes.len(), 5, "{changes:?}");
    assert_eq!(changes[0].0, Some(Outcome::Allow));
    assert!(changes[0].1.contains("changed=limits"), "{changes:?}");
    assert!(changes[1].1.contains("changed=nothing"), "{changes:?}");
    assert_eq!(changes[2].0, Some(Outcome::Deny));
    assert!(changes[2].1.contains("backends"), "{changes:?}");
    assert_eq!(changes[3].0, Some(Outcome::Deny));
    assert!(changes[3].1.contains("limits.max_messages"), "{changes:?}");
    assert_eq!(changes[4].0, Some(Outcome::Allow));
}

/// A reload is applied only once its audit event is committed, as model requests fail closed:
/// with the audit log down, the reload answers 503 and the old policy stays in force, after
/// the log recovers too; the next reload then applies it, with its event.
#[tokio::test]
async fn a_reload_the_audit_log_cannot_record_is_not_applied() {
    let ms = mocks(vec![mock_cfg()]).await;
    let url = backend_url("openai", &ms[0]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardgate.toml");
    std::fs::write(&path, config(&url, 256)).unwrap();
    let store = Arc::new(Flaky::default());
    let h = Harness::from_file(&path, ms)
        .await
        .audited(store.clone())
        .await;
    let (operator_id, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;

    std::fs::write(&path, config(&url, 2)).unwrap();
    store.down.store(true, Ordering::SeqCst);
    let r = send(&h, reload(&operator)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "server_error", "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    store.down.store(false, Ordering::SeqCst);
    let r = send(&h, three_messages(&h.key)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the unaudited reload was applied: {}",
        r.text()
    );

    let r = send(&h, reload(&operator)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["changed"], json!(["limits"]));
    let r = send(&h, three_messages(&h.key)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());

    // One change, one event: by the operator, committed.
    let changes: Vec<_> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::ConfigChange)
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].outcome, Some(Outcome::Allow));
    assert_eq!(changes[0].key_id.as_deref(), Some(operator_id.as_str()));
    let detail = changes[0].detail.as_deref().unwrap_or_default();
    assert!(detail.contains("changed=limits"), "{detail}");
}

#[tokio::test]
async fn a_service_without_a_reloader_says_so() {
    let h = Harness::single("openai").await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    let r = h.send(reload(&operator)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "reload_refused");
}

/// A configuration with PHI rules for several tenants and models, `t3_mode` the mode of
/// tenant `t3`'s.
fn phi_config(url: &str, t3_mode: &str) -> String {
    let mut toml = config(url, 256);
    toml.push_str("\n[phi]\nmode = \"deidentify\"\n");
    for i in 0..8 {
        let mode = if i == 3 { t3_mode } else { "block" };
        toml.push_str(&format!(
            "\n[[phi.tenants]]\nname = \"t{i}\"\nmode = \"{mode}\"\nblock_categories = [\"SSN\", \"MRN\"]\n"
        ));
        toml.push_str(&format!(
            "\n[[phi.models]]\nname = \"m{i}\"\nmode = \"off\"\nallow_images = true\n"
        ));
    }
    toml
}

/// The PHI policy holds maps, whose iteration order differs from one copy to the next: a
/// reload must compare them by content, so reloading the same file is never a change, however
/// often; changing one rule is.
#[tokio::test]
async fn reloading_unchanged_phi_rules_changes_nothing_and_one_changed_rule_is_phi() {
    let ms = mocks(vec![mock_cfg()]).await;
    let url = backend_url("openai", &ms[0]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wardgate.toml");
    std::fs::write(&path, phi_config(&url, "block")).unwrap();
    let h = Harness::from_file(&path, ms).await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;

    const SAME: usize = 20;
    for i in 0..SAME {
        let r = send(&h, reload(&operator)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["reloaded"], false, "reload {i}: {}", r.text());
        assert_eq!(r.json()["changed"], json!([]), "reload {i}: {}", r.text());
    }
    std::fs::write(&path, phi_config(&url, "deidentify")).unwrap();
    let r = send(&h, reload(&operator)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["changed"], json!(["phi"]), "{}", r.text());

    let details: Vec<String> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::ConfigChange)
        .map(|e| e.detail.unwrap_or_default())
        .collect();
    assert_eq!(details.len(), SAME + 1, "{details:?}");
    for d in &details[..SAME] {
        assert!(d.contains("changed=nothing"), "{details:?}");
    }
    assert!(details[SAME].contains("changed=phi;"), "{details:?}");
}
