//! Roles, the admin API and break-glass access: each route group admits only its roles, the
//! admin API is scoped to the caller's tenant unless the caller is an operator, every change
//! and every audit read is its request's terminal audit event, and break-glass access needs a
//! reason, which reaches the audit log redacted.

use crate::support::{Harness, chat, delete_as, get_as, mock_cfg, poll_until, post_as};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use wardgate_audit::{EventType, Outcome, Severity};
use wardgate_store::Role;

async fn harness() -> Harness {
    Harness::single_with("openai", mock_cfg(), "").await
}

#[tokio::test]
async fn each_route_group_admits_only_its_roles() {
    let h = harness().await;
    let (_, user) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let (_, auditor) = h.key_with_roles("acme", &[Role::Auditor], None).await;
    let (_, both) = h
        .key_with_roles("acme", &[Role::User, Role::Auditor], None)
        .await;
    let cases = [
        (&user, "chat", 200),
        (&user, "keys", 403),
        (&user, "audit", 403),
        (&admin, "chat", 403),
        (&admin, "keys", 200),
        (&admin, "audit", 403),
        (&auditor, "chat", 403),
        (&auditor, "keys", 403),
        (&auditor, "audit", 200),
        (&both, "chat", 200),
        (&both, "audit", 200),
        (&both, "keys", 403),
    ];
    for (key, what, want) in cases {
        let req = match what {
            "chat" => chat(key),
            "keys" => get_as("/admin/keys", Some(key)),
            _ => get_as("/admin/audit", Some(key)),
        };
        let r = h.send(req).await;
        assert_eq!(r.status.as_u16(), want, "{what}: {}", r.text());
        if want == 403 {
            assert_eq!(r.json()["error"]["code"], "permission_denied");
        }
    }
    // Ollama routes too, and in Ollama's error shape.
    let r = h.send(get_as("/api/tags", Some(&admin))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["error"].is_string());
    // Without a credential, the admin API is a 401 like everything else.
    let r = h.send(get_as("/admin/keys", None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_admin_manages_keys_of_its_own_tenant_only_and_each_change_is_audited() {
    let h = harness().await;
    let (admin_id, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let (other_id, _) = h.key_with_roles("globex", &[Role::User], None).await;

    // Create: the key is shown once, with the record, and works at once.
    let r = h
        .send(post_as(
            "/admin/keys",
            &json!({"models": ["tiny"], "expires_in": "1h", "label": "ci"}).to_string(),
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let created = r.json();
    assert_eq!(created["tenant"], "acme", "defaults to the admin's tenant");
    assert_eq!(created["roles"], json!(["user"]));
    assert_eq!(created["status"], "active");
    let new_key = created["key"].as_str().unwrap().to_owned();
    let new_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(h.send(chat(&new_key)).await.status, StatusCode::OK);

    // Another tenant is out of reach: creating there is refused, its keys are not listed,
    // and revoking one looks like revoking a key that does not exist.
    let r = h
        .send(post_as(
            "/admin/keys",
            &json!({"tenant": "globex"}).to_string(),
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let listed = h.send(get_as("/admin/keys", Some(&admin))).await.json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&new_id.as_str()) && ids.contains(&admin_id.as_str()));
    assert!(!ids.contains(&other_id.as_str()));
    assert!(
        listed.to_string().find("wg_").is_none(),
        "no secret is listed"
    );
    let foreign = h
        .send(get_as("/admin/keys?tenant=globex", Some(&admin)))
        .await;
    assert_eq!(foreign.json()["data"], json!([]));
    let r = h
        .send(delete_as(&format!("/admin/keys/{other_id}"), Some(&admin)))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .send(delete_as("/admin/keys/key_doesnotexist", Some(&admin)))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Revoke: the key stops working at once in this process (the cache is cleared).
    let r = h
        .send(delete_as(&format!("/admin/keys/{new_id}"), Some(&admin)))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        h.send(chat(&new_key)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Bad input says what to fix.
    for body in [
        json!({"roles": ["root"]}),
        json!({"expires_in": "soon"}),
        json!({"unknown": 1}),
    ] {
        let r = h
            .send(post_as("/admin/keys", &body.to_string(), Some(&admin)))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
    }
    // A tenant admin grants no role above its own (only operator admins grant these).
    for body in [
        json!({"roles": ["break_glass"], "expires_in": "1h"}),
        json!({"roles": ["auditor"]}),
    ] {
        let r = h
            .send(post_as("/admin/keys", &body.to_string(), Some(&admin)))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.text());
    }

    let all = h.audit_events().await;
    let created_ev: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == EventType::KeyCreated)
        .collect();
    assert_eq!(created_ev.len(), 1, "{all:#?}");
    assert_eq!(created_ev[0].actor_id, admin_id);
    assert_eq!(created_ev[0].outcome, Some(Outcome::Allow));
    assert!(
        created_ev[0]
            .detail
            .as_deref()
            .unwrap()
            .contains(&format!("key_id={new_id}"))
    );
    let revoked: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == EventType::KeyRevoked)
        .collect();
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0].detail.as_deref().unwrap().contains(&new_id));
    // No event anywhere holds a whole key.
    assert!(!format!("{all:?}").contains(&new_key));
}

#[tokio::test]
async fn operators_act_on_every_tenant_and_alone_create_tenants() {
    let h = harness().await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;

    let r = h
        .send(post_as(
            "/admin/tenants",
            &json!({"name": "initech"}).to_string(),
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .send(post_as(
            "/admin/tenants",
            &json!({"name": "initech"}).to_string(),
            Some(&operator),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let again = h
        .send(post_as(
            "/admin/tenants",
            &json!({"name": "initech"}).to_string(),
            Some(&operator),
        ))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    let bad = h
        .send(post_as(
            "/admin/tenants",
            &json!({"name": "Not Valid"}).to_string(),
            Some(&operator),
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let names = |v: serde_json::Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = names(
        h.send(get_as("/admin/tenants", Some(&operator)))
            .await
            .json(),
    );
    assert!(all.contains(&"initech".to_owned()) && all.contains(&"acme".to_owned()));
    let own = names(h.send(get_as("/admin/tenants", Some(&admin))).await.json());
    assert_eq!(own, ["acme"]);

    let r = h
        .send(post_as(
            "/admin/keys",
            &json!({"tenant": "initech", "roles": ["auditor"]}).to_string(),
            Some(&operator),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["roles"], json!(["auditor"]));

    let changes: Vec<_> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::ConfigChange)
        .collect();
    assert_eq!(
        changes.len(),
        1,
        "creating an existing tenant changes nothing"
    );
    assert_eq!(changes[0].detail.as_deref(), Some("tenant_created=initech"));
}

/// Six operators create one tenant at once: the store's unique name decides, so one is told
/// 201 and writes the one `tenant_created` event, the others 409 saying the tenant exists.
#[tokio::test]
async fn concurrent_creations_of_one_tenant_create_it_once_with_one_event() {
    let h = harness().await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    let body = json!({"name": "initech"}).to_string();
    let answers = futures::future::join_all(
        (0..6).map(|_| h.send(post_as("/admin/tenants", &body, Some(&operator)))),
    )
    .await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409]);
    for r in answers.iter().filter(|r| r.status == StatusCode::CONFLICT) {
        let e = &r.json()["error"];
        assert_eq!(e["code"], "conflict", "{e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("a tenant of this name exists already; nothing was changed"),
            "{e}"
        );
    }
    let created: Vec<_> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::ConfigChange)
        .filter(|e| e.detail.as_deref() == Some("tenant_created=initech"))
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
}

/// Revoking a revoked key changes nothing: 200 with `"already_revoked": true` and the first
/// revocation's time, and no second `key_revoked` event. Rotating it is refused (409), with
/// no `key_created` event.
#[tokio::test]
async fn a_revoked_key_is_not_revoked_or_rotated_again() {
    let h = harness().await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let (id, _) = h.key_with_roles("acme", &[Role::User], None).await;
    let path = format!("/admin/keys/{id}");
    let r = h.send(delete_as(&path, Some(&admin))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let first = h.audit_events().await;
    for _ in 0..2 {
        let r = h.send(delete_as(&path, Some(&admin))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        assert_eq!(v["already_revoked"], true, "{v}");
        assert_eq!(v["id"], id.as_str(), "{v}");
        assert_eq!(v["status"], "revoked", "{v}");
    }
    let r = h
        .send(post_as(&format!("{path}/rotate"), "{}", Some(&admin)))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only a live key can be rotated"),
        "{}",
        r.text()
    );
    let all = h.audit_events().await;
    let count = |events: &[wardgate_audit::AuditEvent], t: EventType| {
        events.iter().filter(|e| e.event_type == t).count()
    };
    assert_eq!(count(&all, EventType::KeyRevoked), 1, "{all:#?}");
    assert_eq!(
        count(&all, EventType::KeyCreated),
        count(&first, EventType::KeyCreated),
        "{all:#?}"
    );
}

#[tokio::test]
async fn an_auditor_reads_its_tenants_audit_trail_and_the_reading_is_audited() {
    let h = harness().await;
    let (user_id, user) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, globex_user) = h.key_with_roles("globex", &[Role::User], None).await;
    let (auditor_id, auditor) = h.key_with_roles("acme", &[Role::Auditor], None).await;
    let (_, operator_auditor) = h.key_with_roles("operator", &[Role::Auditor], None).await;
    assert_eq!(h.send(chat(&user)).await.status, StatusCode::OK);
    assert_eq!(h.send(chat(&globex_user)).await.status, StatusCode::OK);

    let r = h
        .send(get_as(
            &format!("/admin/audit?actor={user_id}&event_type=request"),
            Some(&auditor),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = r.json();
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{page}");
    assert_eq!(data[0]["event"]["actor_id"], user_id);
    assert_eq!(data[0]["event"]["outcome"], "allow");
    assert!(data[0]["seq"].is_u64() && data[0]["leaf_hash"].is_string());

    // Another tenant's trail is invisible to a tenant auditor, visible to an operator.
    let tenant_of = |v: &serde_json::Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event"]["tenant"].as_str().map(str::to_owned))
            .collect()
    };
    let mine = h.send(get_as("/admin/audit", Some(&auditor))).await.json();
    assert!(tenant_of(&mine).iter().all(|t| t == "acme"), "{mine}");
    let theirs = h
        .send(get_as("/admin/audit?tenant=globex", Some(&auditor)))
        .await
        .json();
    assert_eq!(theirs["data"], json!([]));
    let everyone = h
        .send(get_as(
            "/admin/audit?tenant=globex",
            Some(&operator_auditor),
        ))
        .await
        .json();
    assert!(!tenant_of(&everyone).is_empty());

    // Paging: a full page names where the next one starts.
    let p1 = h
        .send(get_as("/admin/audit?limit=1", Some(&auditor)))
        .await
        .json();
    let next = p1["next_after_seq"].as_u64().unwrap();
    let p2 = h
        .send(get_as(
            &format!("/admin/audit?limit=1&after_seq={next}"),
            Some(&auditor),
        ))
        .await
        .json();
    assert!(p2["data"][0]["seq"].as_u64().unwrap() > next);

    // An entry in place of a queued row that was set aside (a shared log's sequencer writes
    // it) is read and filtered like any other, by an auditor of the operator tenant.
    let (set_aside, _) = wardgate_audit::quarantine::quarantine_event(
        7,
        b"damaged",
        wardgate_audit::quarantine::Unreadable::NotJson,
        wardgate_audit::Timestamp::now(),
    );
    h.state.audit.append(set_aside.clone()).await.unwrap();
    let r = h
        .send(get_as(
            "/admin/audit?event_type=audit_quarantined",
            Some(&operator_auditor),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = r.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["data"][0]["event"]["event_type"], "audit_quarantined");
    assert_eq!(
        page["data"][0]["event"]["detail"].as_str(),
        set_aside.detail.as_deref()
    );

    for bad in [
        "/admin/audit?outcome=maybe",
        "/admin/audit?since=yesterday",
        "/admin/audit?limit=0",
        "/admin/audit?nope=1",
    ] {
        let r = h.send(get_as(bad, Some(&auditor))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }

    let reads: Vec<_> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::AuditAccess && e.outcome == Some(Outcome::Allow))
        .collect();
    assert!(reads.len() >= 5, "every read is audited: {reads:#?}");
    assert!(reads.iter().any(|e| e.actor_id == auditor_id));
}

#[tokio::test]
async fn break_glass_needs_a_reason_every_time_and_is_audited_at_high_severity() {
    let h = harness().await;
    let counted = || {
        wardgate_gateway::middleware::events::COUNTERS
            .break_glass
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = counted();
    let soon = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let (bg_id, bg) = h
        .key_with_roles("acme", &[Role::BreakGlass], Some(soon))
        .await;

    // No reason, an empty one, or two: refused.
    let r = h.send(chat(&bg)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["code"], "break_glass_reason_required");
    for reasons in [vec![""], vec!["a", "b"]] {
        let mut req = chat(&bg);
        for reason in reasons {
            req.headers_mut()
                .append("x-wardgate-break-glass-reason", reason.parse().unwrap());
        }
        assert_eq!(h.send(req).await.status, StatusCode::FORBIDDEN);
    }

    // With a reason: inference on any model, and the audit log readable.
    let with_reason = |mut req: Request<Body>| {
        req.headers_mut().insert(
            "x-wardgate-break-glass-reason",
            "ER: patient John Smith unresponsive, MRN 00123456"
                .parse()
                .unwrap(),
        );
        req
    };
    let r = h.send(with_reason(chat(&bg))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h.send(with_reason(get_as("/admin/audit", Some(&bg)))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Not an admin, though.
    let r = h.send(with_reason(get_as("/admin/keys", Some(&bg)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let all = h.audit_events().await;
    let uses: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == EventType::BreakGlass)
        .collect();
    assert_eq!(
        uses.len(),
        6,
        "every break-glass request, refused or not: {all:#?}"
    );
    assert!(uses.iter().all(|e| e.actor_id == bg_id));
    assert_eq!(EventType::BreakGlass.severity(), Severity::High);
    let detail = uses
        .iter()
        .rev()
        .find_map(|e| e.detail.clone())
        .expect("the reason is recorded");
    assert!(detail.starts_with("reason: ER: patient"), "{detail}");
    assert!(
        !detail.contains("John Smith") && !detail.contains("00123456"),
        "the reason is redacted: {detail}"
    );
    // Counted like they are audited: the three refused for want of a reason too (a stolen
    // break-glass key tried without one must still raise the alert).
    assert!(counted() - before >= 6, "{} counted", counted() - before);
}

#[tokio::test]
async fn a_break_glass_key_must_be_short_lived() {
    let h = harness().await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    for (expires, want) in [(None, 400), (Some("48h"), 400), (Some("2h"), 201)] {
        let mut body = json!({"tenant": "acme", "roles": ["break_glass"]});
        if let Some(e) = expires {
            body["expires_in"] = json!(e);
        }
        let r = h
            .send(post_as("/admin/keys", &body.to_string(), Some(&operator)))
            .await;
        assert_eq!(r.status.as_u16(), want, "{expires:?}: {}", r.text());
    }
}

fn from_ip(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    let addr = std::net::SocketAddr::from((ip, 40_000));
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

#[tokio::test]
async fn repeated_failures_lock_the_source_out_and_are_audited() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        // Every failure audited on its own (no folding per window), to count them here.
        "[auth]\nlockout_threshold = 3\nlockout_duration = \"10m\"\nlockout_by_prefix = false\n\
         failure_audit_window = \"0s\"\n",
    )
    .await;
    let attacker = [192, 0, 2, 66];
    let bad = "wg_abcdefghijkl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for i in 0..3 {
        let r = h.send(from_ip(chat(bad), attacker)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Locked: a failing credential from that source is refused with a wait ...
    let r = h.send(from_ip(chat(bad), attacker)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "too_many_failed_authentications");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&wait), "{wait}");
    // ... and a valid key from it is served: lockout never refuses a valid credential.
    let r = h.send(from_ip(chat(&h.key), attacker)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h.send(from_ip(chat(&h.key), [192, 0, 2, 67])).await;
    assert_eq!(r.status, StatusCode::OK);

    let all = h.audit_events().await;
    let lockouts: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == EventType::Lockout)
        .collect();
    assert_eq!(lockouts.len(), 1, "{all:#?}");
    assert_eq!(
        lockouts[0].detail.as_deref(),
        Some("locked source=192.0.2.66")
    );
    assert_eq!(lockouts[0].actor_id, "key_prefix:abcdefghijkl");
    assert_eq!(EventType::Lockout.severity(), Severity::High);
    let failures: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == EventType::AuthFailure)
        .collect();
    assert_eq!(
        failures.len(),
        3,
        "two 401s before the lockout and the 429 after"
    );
    assert_eq!(
        failures.last().unwrap().deny_reason.as_deref(),
        Some("locked_out")
    );
    assert!(
        !format!("{all:?}").contains(bad),
        "the presented secret is never recorded"
    );
}

#[tokio::test]
async fn a_key_prefix_is_locked_across_sources() {
    let h = Harness::single_with("openai", mock_cfg(), "[auth]\nlockout_threshold = 2\n").await;
    // The real key's prefix, with a wrong secret, from two addresses.
    let prefix = &h.key[..16];
    let wrong = format!("{prefix}{}", "A".repeat(h.key.len() - 16));
    for ip in [[198, 51, 100, 1], [198, 51, 100, 2]] {
        assert_eq!(
            h.send(from_ip(chat(&wrong), ip)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked: the wrong secret gets 429 from anywhere; the real key is still served.
    let r = h.send(from_ip(chat(&wrong), [198, 51, 100, 3])).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = h.send(from_ip(chat(&h.key), [198, 51, 100, 3])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn with_an_idle_timeout_each_key_use_is_recorded() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[auth]\nkey_idle_timeout = \"30d\"\nkey_cache_ttl = \"0s\"\n",
    )
    .await;
    let (id, key) = h.key_with_roles("acme", &[Role::User], None).await;
    let before = h.store.list_keys(Some("acme")).await.unwrap();
    assert!(before.iter().all(|k| k.last_used_at.is_none()));
    assert_eq!(h.send(chat(&key)).await.status, StatusCode::OK);
    // The write is in the background: wait (bounded) until it lands.
    let used = poll_until(
        std::time::Duration::from_secs(5),
        || async {
            let keys = h.store.list_keys(Some("acme")).await.unwrap();
            keys.iter().find(|k| k.id == id).unwrap().last_used_at
        },
        Option::is_some,
    )
    .await;
    let used = used.expect("last use recorded");
    assert!(
        (time::OffsetDateTime::now_utc() - used)
            .whole_seconds()
            .abs()
            <= 2
    );
    // Too short a timeout is refused: last use is only recorded about once a minute.
    let raw = wardgate_gateway::config::parse_toml("[auth]\nkey_idle_timeout = \"1m\"\n").unwrap();
    let err = wardgate_gateway::config::Config::from_raw(raw, &|_| None).unwrap_err();
    assert_eq!(err.key, "auth.key_idle_timeout");
}

#[tokio::test]
async fn a_rotated_key_keeps_working_for_the_overlap_beside_its_replacement() {
    let h = harness().await;
    let (_, admin) = h.key_with_roles("acme", &[Role::Admin], None).await;
    let (old_id, old) = h.key_with_roles("acme", &[Role::User], None).await;
    let (foreign_id, _) = h.key_with_roles("globex", &[Role::User], None).await;
    assert_eq!(h.send(chat(&old)).await.status, StatusCode::OK);

    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let r = h
        .send(post_as(
            &format!("/admin/keys/{old_id}/rotate"),
            &json!({"overlap": "1h", "expires_in": "90d"}).to_string(),
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let v = r.json();
    let new = v["key"].as_str().unwrap().to_owned();
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["roles"], json!(["user"]));
    assert_eq!(v["rotated_from"]["id"], old_id.as_str());
    let old_expiry = v["rotated_from"]["expires_at"].as_i64().unwrap();
    assert!((before + 3600..=before + 3602).contains(&old_expiry), "{v}");
    let new_expiry = v["expires_at"].as_i64().unwrap();
    assert!(new_expiry >= before + 90 * 86_400);
    // Both work during the overlap.
    assert_eq!(h.send(chat(&old)).await.status, StatusCode::OK);
    assert_eq!(h.send(chat(&new)).await.status, StatusCode::OK);

    // With no overlap the old key stops at once (the cache is cleared by the rotation).
    let r = h
        .send(post_as(
            &format!("/admin/keys/{}/rotate", v["id"].as_str().unwrap()),
            &json!({"overlap": "0s"}).to_string(),
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let newest = r.json()["key"].as_str().unwrap().to_owned();
    // Its end is rounded down to the second, so the next request is refused (not after up to
    // a second more, as when it was rounded up).
    let expiry = r.json()["rotated_from"]["expires_at"].as_i64().unwrap();
    assert!(expiry <= time::OffsetDateTime::now_utc().unix_timestamp());
    assert_eq!(
        h.send(chat(&new)).await.status,
        StatusCode::UNAUTHORIZED,
        "expired at the end of a zero overlap"
    );
    assert_eq!(h.send(chat(&newest)).await.status, StatusCode::OK);

    // Without a body the overlap is a day; another tenant's key is not found; bad input is 400.
    let r = h
        .send(post_as(
            &format!("/admin/keys/{foreign_id}/rotate"),
            "",
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let (plain_id, _) = h.key_with_roles("acme", &[Role::User], None).await;
    let r = h
        .send(post_as(
            &format!("/admin/keys/{plain_id}/rotate"),
            "",
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let old_expiry = r.json()["rotated_from"]["expires_at"].as_i64().unwrap();
    assert!(old_expiry >= before + 86_400 && old_expiry <= before + 86_400 + 60);
    let r = h
        .send(post_as(
            &format!("/admin/keys/{plain_id}/rotate"),
            &json!({"overlap": "400d"}).to_string(),
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["param"], "overlap");

    // The rotations are audited as key creations naming the key replaced.
    let events = h.audit_events().await;
    let rotated: Vec<_> = events
        .iter()
        .filter(|e| {
            e.event_type == EventType::KeyCreated
                && e.detail
                    .as_deref()
                    .is_some_and(|d| d.contains(&format!("rotated_from={old_id}")))
        })
        .collect();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].outcome, Some(Outcome::Allow));
}

/// One sample's value in Prometheus text.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test]
async fn failures_lockouts_break_glass_and_refusals_are_exported_as_metrics() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[auth]\nlockout_threshold = 2\nlockout_by_prefix = false\n[rate_limit]\nrequests_per_minute = 1\n",
    )
    .await;
    // The counters span every tenant: only the operator tenant's auditors read them.
    let (_, auditor) = h.key_with_roles("operator", &[Role::Auditor], None).await;
    let (_, user) = h.key_with_roles("acme", &[Role::User], None).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let (_, glass) = h
        .key_with_roles("acme", &[Role::BreakGlass], Some(soon))
        .await;
    let scrape = |key: &str| h.send(get_as("/admin/metrics", Some(key)));
    let before = scrape(&auditor).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text());
    assert!(
        before.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let before = before.text();
    assert_eq!(
        scrape(&user).await.status,
        StatusCode::FORBIDDEN,
        "users do not read the counters"
    );

    let bad = "wg_abcdefghijkl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..2 {
        h.send(from_ip(chat(bad), [192, 0, 2, 99])).await;
    }
    assert_eq!(
        h.send(from_ip(chat(bad), [192, 0, 2, 99])).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(h.send(chat(&user)).await.status, StatusCode::OK);
    assert_eq!(
        h.send(chat(&user)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let mut req = chat(&glass);
    req.headers_mut().insert(
        "x-wardgate-break-glass-reason",
        "code blue, bed 4".parse().unwrap(),
    );
    h.send(req).await;

    let after = scrape(&auditor).await.text();
    let grew = |name: &str| sample(&after, name) - sample(&before, name);
    assert!(grew("wardgate_auth_failures_total") >= 2, "{after}");
    assert!(grew("wardgate_lockouts_total") >= 1, "{after}");
    assert!(grew("wardgate_break_glass_requests_total") >= 1, "{after}");
    assert!(
        grew("wardgate_rate_limited_total{limit=\"requests_per_minute\"}") >= 1,
        "{after}"
    );
    assert!(after.contains("# TYPE wardgate_lockouts_total counter"));
    assert!(!after.contains("code blue") && !after.contains(bad));
}

/// `expires_in` is checked by the function `wardgate keys --expires` uses, with its message:
/// more than zero, at most 100 years, and no value overflows.
#[tokio::test]
async fn a_key_lifetime_is_bounded_like_the_clis() {
    let h = harness().await;
    let (_, operator) = h.key_with_roles("operator", &[Role::Admin], None).await;
    let rule = wardgate_gateway::services::keys::BadKeyLifetime.to_string();
    for bad in [
        "0s",
        "5000y",
        "500000000000y",
        "99999999999999999999999d",
        "soon",
    ] {
        let body = json!({"tenant": "acme", "expires_in": bad});
        let r = h
            .send(post_as("/admin/keys", &body.to_string(), Some(&operator)))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "expires_in", "{bad}");
        assert_eq!(
            r.json()["error"]["message"],
            format!("expires_in {rule}"),
            "{bad}"
        );
    }
    let body = json!({"tenant": "acme", "expires_in": "100y"});
    let r = h
        .send(post_as("/admin/keys", &body.to_string(), Some(&operator)))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}
