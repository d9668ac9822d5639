//! Several instances behaving as one through the real Redis of this machine
//! (`WARDGATE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`), each test under a namespace
//! of its own: failed log-ins counted at one gateway lock the address out at another, a key
//! revoked or rotated at one is refused at the other at once (not after the credential cache's
//! TTL), and a signed request served by one `wardgate llm` replica is refused by another.
//! Where Redis goes away (a private `redis-server` of the test's own, stopped), each instance
//! falls back to what it knows alone.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use wardgate_audit::EventType;
use wardgate_gateway::app::{LlmService, Stores};
use wardgate_gateway::config::{Config, parse_toml};
use wardgate_store::Role;
use wardgate_store::postgres::testing::TestSchema;

use crate::support::{
    Harness, LLM_SECRET, PrivateRedis, TcpProxy, chat, delete_as, mock_cfg, poll_until, post_as,
    redis_keys, redis_url,
};

fn namespace() -> String {
    format!("wardgate-test:{}", uuid::Uuid::new_v4().simple())
}

/// The `[rate_limit]` section that puts an instance's shared state in Redis under `ns`, with
/// the limits off (so only the state these tests are about is in Redis).
fn redis_section(url: &str, ns: &str) -> String {
    format!(
        "[rate_limit]\nrequests_per_minute = 0\nconcurrent_requests = 0\nbackend = \"redis\"\n\
         redis_url = \"{url}\"\nredis_namespace = \"{ns}\"\n"
    )
}

/// A gateway built as `wardgate serve` builds it, with `extra` config and its shared state in
/// the Redis at `url` under `ns`.
async fn gateway(url: &str, ns: &str, extra: &str) -> Harness {
    let toml = format!("{extra}{}", redis_section(url, ns));
    Harness::single_with("openai", mock_cfg(), &toml).await
}

/// Two gateway instances built as `wardgate serve` builds them, over one key store (as two
/// instances over one PostgreSQL are) and one Redis namespace.
async fn two_gateways(extra: &str) -> (Harness, Harness) {
    let a = gateway(&redis_url(), &namespace(), extra).await;
    let b = a.twin().await;
    (a, b)
}

/// Two gateway instances as two `wardgate serve` processes run them over one PostgreSQL (a
/// schema of the test's own, each instance with a pool of its own) and one Redis namespace;
/// and the schema, to drop at the end.
async fn two_gateways_on_postgresql(extra: &str) -> (Harness, Harness, TestSchema) {
    let schema = TestSchema::new().await;
    let mut stores = Stores::in_memory().await.unwrap();
    stores.db = std::sync::Arc::new(schema.migrated().await);
    let toml = format!("{extra}{}", redis_section(&redis_url(), &namespace()));
    let a = Harness::single_over("openai", mock_cfg(), &toml, stores).await;
    let mut stores = Stores::in_memory().await.unwrap();
    stores.db = std::sync::Arc::new(schema.store().await);
    let b = Harness::build((*a.state.config).clone(), stores, None, vec![]).await;
    (a, b, schema)
}

fn from_ip(mut req: Request<Body>, ip: [u8; 4]) -> Request<Body> {
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            ip, 40_000,
        ))));
    req
}

fn from_ip6(mut req: Request<Body>, segments: [u16; 8]) -> Request<Body> {
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            std::net::Ipv6Addr::from(segments),
            40_000,
        ))));
    req
}

const WRONG: &str = "wg_abcdefghijkl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[tokio::test]
async fn failures_at_one_instance_lock_the_address_out_at_another() {
    let (a, b) = two_gateways(
        "[auth]\nlockout_threshold = 3\nlockout_duration = \"10m\"\nlockout_by_prefix = false\n",
    )
    .await;
    let attacker = [192, 0, 2, 66];
    for i in 0..3 {
        let r = a.send(from_ip(chat(WRONG), attacker)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i} at A");
    }
    // B has seen no failure from the address, and refuses it as locked out.
    let r = b.send(from_ip(chat(WRONG), attacker)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "too_many_failed_authentications");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&wait), "{wait}");
    // A lockout never refuses a valid credential, at either instance.
    for h in [&a, &b] {
        let r = h.send(from_ip(chat(&h.key), attacker)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // Another address is not affected.
    let r = b.send(from_ip(chat(WRONG), [192, 0, 2, 67])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// One IPv6 client rotating through its /64 is one source to the shared lockout: failures
/// from two addresses of a /64 at A lock a third address of it out at B, but not an address
/// of the next /64. Each failure's audit event still names the address it came from.
#[tokio::test]
async fn failures_across_one_ipv6_64_at_one_instance_lock_it_out_at_another() {
    let (a, b) = two_gateways(
        "[auth]\nlockout_threshold = 2\nlockout_by_prefix = false\nfailure_audit_window = \"0s\"\n",
    )
    .await;
    let net = |last: u16| [0x2001, 0xdb8, 1, 2, 0, 0, 0xbeef, last];
    for last in [1, 2] {
        let r = a.send(from_ip6(chat(WRONG), net(last))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "address {last} at A");
    }
    let r = b.send(from_ip6(chat(WRONG), net(3))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let r = b
        .send(from_ip6(chat(WRONG), [0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    // A valid key from the locked /64 is served.
    let r = b.send(from_ip6(chat(&b.key), net(4))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let events = a.audit_events().await;
    let sources: Vec<String> = events
        .iter()
        .filter(|e| matches!(e.event_type, EventType::AuthFailure | EventType::Lockout))
        .filter_map(|e| e.source_ip.map(|ip| ip.to_string()))
        .collect();
    assert_eq!(sources, ["2001:db8:1:2::beef:1", "2001:db8:1:2::beef:2"]);
    let lockout = events
        .iter()
        .find(|e| e.event_type == EventType::Lockout)
        .unwrap();
    assert_eq!(
        lockout.detail.as_deref(),
        Some("locked source=2001:db8:1:2::/64")
    );
}

#[tokio::test]
async fn a_key_prefix_locked_at_one_instance_is_locked_at_another() {
    let (a, b) = two_gateways("[auth]\nlockout_threshold = 2\nlockout_by_source = false\n").await;
    let prefix = &a.key[..16];
    let wrong = format!("{prefix}{}", "A".repeat(a.key.len() - 16));
    for ip in [[198, 51, 100, 1], [198, 51, 100, 2]] {
        let r = a.send(from_ip(chat(&wrong), ip)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = b.send(from_ip(chat(&wrong), [198, 51, 100, 3])).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let r = b.send(from_ip(chat(&a.key), [198, 51, 100, 3])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// What the shared lockout keeps in Redis: only the namespaced keys of the subjects, each with
/// an expiry, and never the presented credential.
#[tokio::test]
async fn the_shared_lockout_keeps_expiring_keys_and_no_credential() {
    let ns = namespace();
    let a = gateway(&redis_url(), &ns, "[auth]\nlockout_threshold = 3\n").await;
    let r = a.send(from_ip(chat(WRONG), [203, 0, 113, 9])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let keys = redis_keys(&redis_url(), &format!("{ns}:*")).await;
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{ns}:lockout:fail:key_prefix=abcdefghijkl"),
            format!("{ns}:lockout:fail:source=203.0.113.9"),
        ]
    );
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (k, ttl) in &keys {
        assert!(*ttl > 0, "{k} has no expiry ({ttl})");
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(k)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(members.len(), 1, "{members:?}");
        assert!(!members[0].contains("AAAA"), "{members:?}");
    }
}

/// Two gateways whose credential caches keep a key for five minutes (the most allowed), so
/// only the broadcast can make one refuse a key changed at the other in time; a user key
/// verified (and so cached) at A, and an admin key for B.
async fn a_key_cached_at_a() -> (Harness, Harness, String, String, String) {
    let (a, b) = two_gateways("[auth]\nkey_cache_ttl = \"5m\"\n").await;
    let (id, key) = a.key_with_roles("acme", &[Role::User], None).await;
    let (_, admin) = b.key_with_roles("acme", &[Role::Admin], None).await;
    assert_eq!(a.send(chat(&key)).await.status, StatusCode::OK);
    (a, b, id, key, admin)
}

/// What `h` answers `key` once it refuses it, or at `within`.
async fn refused_within(h: &Harness, key: &str, within: Duration) -> StatusCode {
    poll_until(
        within,
        || async { h.send(get_models(key)).await.status },
        |s| *s == StatusCode::UNAUTHORIZED,
    )
    .await
}

#[tokio::test]
async fn a_key_revoked_at_one_instance_is_refused_at_another_at_once() {
    let (a, b, id, key, admin) = a_key_cached_at_a().await;
    let r = b
        .send(delete_as(&format!("/admin/keys/{id}"), Some(&admin)))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let status = refused_within(&a, &key, Duration::from_millis(100)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "A still serves the key");
    // A's other cached keys are unaffected.
    assert_eq!(a.send(chat(&a.key)).await.status, StatusCode::OK);
}

/// A rotation with no overlap, through B's admin API, of a key both instances (on one
/// PostgreSQL and one Redis) have verified and cached for five minutes: B refuses the old key
/// as soon as the rotation has answered, A within 100 ms (the broadcast). (A black-box
/// finding: the old key kept working for about 0.6 s at both, its end rounded up to the next
/// second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_at_one_instance_stops_at_another_at_once() {
    let (a, b, schema) = two_gateways_on_postgresql("[auth]\nkey_cache_ttl = \"5m\"\n").await;
    let (id, key) = a.key_with_roles("acme", &[Role::User], None).await;
    let (_, admin) = b.key_with_roles("acme", &[Role::Admin], None).await;
    for h in [&a, &b] {
        assert_eq!(h.send(get_models(&key)).await.status, StatusCode::OK);
    }
    // No overlap: the old key stops now.
    let r = b
        .send(post_as(
            &format!("/admin/keys/{id}/rotate"),
            &json!({"overlap": "0s"}).to_string(),
            Some(&admin),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let new = r.json()["key"].as_str().unwrap().to_owned();
    let at_b = b.send(get_models(&key)).await.status;
    assert_eq!(at_b, StatusCode::UNAUTHORIZED, "B still serves the old key");
    let status = refused_within(&a, &key, Duration::from_millis(100)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "A still serves the old key"
    );
    for h in [&a, &b] {
        assert_eq!(h.send(chat(&new)).await.status, StatusCode::OK);
    }
    schema.drop().await;
}

/// Concurrent rotations of one key through the admin APIs of two instances on one
/// PostgreSQL: exactly one makes a replacement (201); every other is a 409 that names it,
/// and writes no `key_created` event. (A black-box finding: every one of them succeeded, each
/// minting a live replacement.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_through_two_instances_make_one_replacement() {
    let (a, b, schema) = two_gateways_on_postgresql("").await;
    let (_, admin) = a.key_with_roles("acme", &[Role::Admin], None).await;
    let (id, _) = a.key_with_roles("acme", &[Role::User], None).await;
    let keys = || async {
        let listed = b
            .send(crate::support::get_as("/admin/keys", Some(&admin)))
            .await
            .json();
        listed["data"].as_array().unwrap().clone()
    };
    let before = keys().await.len();
    let path = format!("/admin/keys/{id}/rotate");
    let body = json!({"overlap": "1h"}).to_string();
    let answers = futures::future::join_all((0..12).map(|i| {
        let h = if i % 2 == 0 { &a } else { &b };
        h.send(post_as(&path, &body, Some(&admin)))
    }))
    .await;
    let created: Vec<_> = answers
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    let new_id = created[0].json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created[0].json()["rotated_from"]["replaced_by"],
        new_id.as_str()
    );
    for r in answers.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["code"], "conflict", "{e}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains("rotated already") && message.contains(&new_id),
            "{message}"
        );
    }
    let after = keys().await;
    assert_eq!(after.len(), before + 1, "one replacement: {after:#?}");
    let old = after.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(old["replaced_by"], new_id.as_str(), "{old}");
    let mut rotations = 0;
    for h in [&a, &b] {
        rotations += h
            .audit_events()
            .await
            .iter()
            .filter(|e| e.event_type == EventType::KeyCreated)
            .filter(|e| {
                e.detail
                    .as_deref()
                    .is_some_and(|d| d.contains(&format!("rotated_from={id}")))
            })
            .count();
    }
    assert_eq!(rotations, 1);
    schema.drop().await;
}

/// The announcement carries the key's id and nothing else.
#[tokio::test]
async fn a_revocation_is_announced_by_key_id_on_the_namespaced_channel() {
    use futures::StreamExt as _;
    let ns = namespace();
    let a = gateway(&redis_url(), &ns, "").await;
    let (id, key) = a.key_with_roles("acme", &[Role::User], None).await;
    let (_, admin) = a.key_with_roles("acme", &[Role::Admin], None).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{ns}:key-changed")).await.unwrap();
    let r = a
        .send(delete_as(&format!("/admin/keys/{id}"), Some(&admin)))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let payload: String = msg.get_payload().unwrap();
    assert_eq!(payload, id);
    assert!(!payload.contains(&key[16..]));
}

fn get_models(key: &str) -> Request<Body> {
    crate::support::get_as("/v1/models", Some(key))
}

/// A `wardgate llm` replica built as the command builds it, with Redis under `ns` and an empty
/// model store of its own in `models` (its signed `/api/version` needs no model).
async fn llm_replica(url: &str, ns: &str, models: &std::path::Path) -> axum::Router {
    let toml = format!(
        "[engine]\nmodels_dir = \"{}\"\nfetch_default_model = false\n{}",
        models.display(),
        redis_section(url, ns)
    );
    let config = Config::from_raw(parse_toml(&toml).unwrap(), &|_| None).unwrap();
    let keys = vec![wardgate_api::signing::SigningKey::new(LLM_SECRET).unwrap()];
    LlmService::build(config, Stores::in_memory().await.unwrap(), keys)
        .await
        .unwrap()
        .router()
}

fn signed_get(path: &str, nonce: &str) -> Request<Body> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    crate::support::signed_request(LLM_SECRET, "GET", path, "", now, nonce)
}

#[tokio::test]
async fn a_signed_request_served_by_one_llm_replica_is_refused_by_another() {
    let ns = namespace();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        llm_replica(&redis_url(), &ns, &dir.path().join("a")).await,
        llm_replica(&redis_url(), &ns, &dir.path().join("b")).await,
    );
    let nonce = format!("nonce-{}", uuid::Uuid::new_v4().simple());
    let r = crate::support::send_to(a.clone(), signed_get("/api/version", &nonce)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The same signed request, captured and sent to the other replica.
    let r = crate::support::send_to(b.clone(), signed_get("/api/version", &nonce)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    // A fresh request is served by either.
    for app in [&a, &b] {
        let fresh = format!("nonce-{}", uuid::Uuid::new_v4().simple());
        let r = crate::support::send_to(app.clone(), signed_get("/api/version", &fresh)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // The nonces are kept, each with an expiry, under the namespace (as digests).
    let keys = redis_keys(&redis_url(), &format!("{ns}:llm-nonce:*")).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    for (k, ttl) in &keys {
        assert!((1..=61_000).contains(ttl), "{k}: {ttl}");
        assert!(!k.contains(&nonce), "{k}");
    }
}

/// Revokes key `id` as another instance would: in the store `h` shares, and announced on
/// the Redis at `url` under `ns` through a connection of its own.
async fn revoke_elsewhere(h: &Harness, url: &str, ns: &str, id: &str) {
    h.store.revoke_key(id).await.unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: u64 = redis::cmd("PUBLISH")
        .arg(format!("{ns}:key-changed"))
        .arg(id)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn while_redis_is_down_each_instance_counts_failures_alone_and_serves_valid_keys() {
    let mut redis = PrivateRedis::start();
    let extra = "[auth]\nlockout_threshold = 2\nlockout_by_prefix = false\n";
    let a = gateway(&redis.url(), &namespace(), extra).await;
    redis.stop();
    let ip = [192, 0, 2, 99];
    // A valid key is served: the lockout never waits on Redis to let it through.
    let r = a.send(from_ip(chat(&a.key), ip)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Failures are counted in this process and lock the address out here.
    for _ in 0..2 {
        let r = a.send(from_ip(chat(WRONG), ip)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    }
    let r = a.send(from_ip(chat(WRONG), ip)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let r = a.send(from_ip(chat(&a.key), ip)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// `/ready` and its body.
async fn ready(h: &Harness) -> (StatusCode, serde_json::Value) {
    let r = h.send(crate::support::get_as("/ready", None)).await;
    (r.status, r.json())
}

/// Checks that `/ready` answers `status` and reports Redis as `redis`, `degraded` or not;
/// its body.
async fn ready_is(
    h: &Harness,
    status: StatusCode,
    redis: &str,
    degraded: bool,
) -> serde_json::Value {
    let (got, body) = ready(h).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["ready"], status == StatusCode::OK, "{body}");
    assert_eq!(body["redis"], redis, "{body}");
    assert_eq!(body["degraded"], degraded, "{body}");
    body
}

/// The log lines that contain `text`.
fn lines_with(logs: &str, text: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

/// Redis going down where rate limits are on: those requests are refused (503) without a log
/// line each, `/ready` is 503 and says `"redis": "down"`, and the outage is logged once when
/// it starts and once when it ends, with the requests it met, each line naming the Redis by
/// `host:port` and never by its URL's password. (Black-box findings: `/ready` stayed 200,
/// every request logged an ERROR line, and no line said which Redis.)
#[tokio::test]
async fn while_redis_is_down_with_limits_on_ready_is_false_and_the_outage_is_logged_once() {
    let (logs, _guard) = crate::support::logs::capture_logs();
    let mut redis = PrivateRedis::start_with(Some(REDIS_PASSWORD));
    let toml = format!(
        "[rate_limit]\nrequests_per_minute = 1000\nconcurrent_requests = 0\nbackend = \"redis\"\n\
         redis_url = \"{}\"\nredis_namespace = \"{}\"\n",
        redis.url(),
        namespace()
    );
    // One limit and no place in flight to give back: each request calls Redis once.
    let h = Harness::single_with("openai", mock_cfg(), &toml).await;
    wardgate_gateway::app::refresh_backends(&h.state).await;
    ready_is(&h, StatusCode::OK, "up", false).await;
    assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);

    redis.stop();
    const REFUSED: usize = 10;
    for _ in 0..REFUSED {
        let r = h.send(chat(&h.key)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    }
    let body = ready_is(&h, StatusCode::SERVICE_UNAVAILABLE, "down", false).await;
    assert_eq!(body["storage"], true, "{body}");
    let text = logs.text();
    let started = lines_with(&text, "is unreachable");
    assert_eq!(started.len(), 1, "{text}");
    let at = format!("Redis at 127.0.0.1:{}", redis.port);
    assert!(started[0].contains(&at), "{}", started[0]);
    assert!(lines_with(&text, " ERROR ").is_empty(), "{text}");
    assert!(lines_with(&text, "request failed").is_empty(), "{text}");

    redis.restart();
    poll_until(
        Duration::from_secs(10),
        || ready(&h),
        |(status, _)| *status == StatusCode::OK,
    )
    .await;
    ready_is(&h, StatusCode::OK, "up", false).await;
    assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);
    let text = logs.text();
    let ended = lines_with(&text, "is reachable again");
    assert_eq!(ended.len(), 1, "{text}");
    assert!(ended[0].contains(&at), "{}", ended[0]);
    assert!(
        ended[0].contains(&format!("{REFUSED} requests needed it")),
        "{}",
        ended[0]
    );
    assert_eq!(lines_with(&text, "is unreachable").len(), 1, "{text}");
    assert!(!text.contains(REDIS_PASSWORD), "{text}");
}

/// The password the tests' password-protected Redis requires; no log line or error may show
/// it.
const REDIS_PASSWORD: &str = "pw-e7c1d9-never-shown";

/// A Redis that cannot be reached at start stops the start with an error that names it by
/// `host:port`, never by its URL (which holds a password). (A black-box finding: the error
/// said only "Connection refused".)
#[tokio::test]
async fn a_redis_that_cannot_be_reached_is_named_by_host_and_port_never_by_its_url() {
    // A port nothing listens on now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://wardgate:{REDIS_PASSWORD}@127.0.0.1:{port}");
    let toml = format!(
        "{}[[backends]]\nname = \"b0\"\nkind = \"ollama\"\nurl = \"http://127.0.0.1:9\"\n",
        redis_section(&url, &namespace())
    );
    let config = Config::from_raw(parse_toml(&toml).unwrap(), &|_| None).unwrap();
    let stores = Stores::in_memory().await.unwrap();
    let Err(e) = wardgate_gateway::app::Gateway::build(config, stores, None).await else {
        panic!("a gateway started with no Redis at {url}");
    };
    let said = e.to_string();
    assert!(
        said.contains(&format!("Redis at 127.0.0.1:{port}")) && said.contains("redis_url"),
        "{said}"
    );
    assert!(
        !said.contains(REDIS_PASSWORD) && !said.contains(&url),
        "{said}"
    );
}

/// Redis going down where it carries only what falls back to each instance (no limits): the
/// instance stays ready and serves, and `/ready` says it is degraded.
#[tokio::test]
async fn while_redis_is_down_without_limits_ready_stays_true_and_says_degraded() {
    let mut redis = PrivateRedis::start();
    let h = gateway(&redis.url(), &namespace(), "").await;
    wardgate_gateway::app::refresh_backends(&h.state).await;
    ready_is(&h, StatusCode::OK, "up", false).await;
    redis.stop();
    ready_is(&h, StatusCode::OK, "down", true).await;
    assert_eq!(h.send(chat(&h.key)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_revocation_broadcast_listens_again_after_a_redis_outage() {
    let mut redis = PrivateRedis::start();
    let ns = namespace();
    // Entries cached while the broadcast is down are trusted as long as the others here, so
    // only the forgetting on resubscribing can make A refuse the key in time.
    let a = gateway(
        &redis.url(),
        &ns,
        "[auth]\nkey_cache_ttl = \"5m\"\nkey_cache_ttl_unconfirmed = \"5m\"\n",
    )
    .await;
    let (id, key) = a.key_with_roles("acme", &[Role::User], None).await;
    let (missed_id, missed) = a.key_with_roles("acme", &[Role::User], None).await;

    redis.stop();
    // A notices that its subscription closed, and then caches the key again.
    let cache = a.state.key_cache.clone().unwrap();
    crate::support::eventually(Duration::from_secs(10), "A notices the outage", || {
        cache.is_unconfirmed()
    })
    .await;
    assert_eq!(a.send(get_models(&missed)).await.status, StatusCode::OK);
    // Revoked while A cannot hear of it (as by an instance whose announcement was lost).
    a.store.revoke_key(&missed_id).await.unwrap();
    assert_eq!(a.send(get_models(&missed)).await.status, StatusCode::OK);
    redis.restart();
    // Once A listens again it drops what it cached, since it may have missed announcements.
    let status = refused_within(&a, &missed, Duration::from_secs(20)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "A never listened again");
    // And it hears announcements again: a revocation elsewhere reaches it at once.
    assert_eq!(a.send(get_models(&key)).await.status, StatusCode::OK);
    revoke_elsewhere(&a, &redis.url(), &ns, &id).await;
    let status = refused_within(&a, &key, Duration::from_millis(100)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "A still serves the key");
}

/// A revocation subscription that dies silently (no RST: every socket stays open, nothing
/// arrives) is noticed by its heartbeat within `revocation_heartbeat_interval +
/// revocation_heartbeat_timeout`, logged once, and cached credentials are dropped: a key
/// revoked elsewhere meanwhile, whose announcement never arrives, is refused within that
/// bound, where before it was served from the cache for `key_cache_ttl` (5 minutes here).
#[tokio::test]
async fn a_silent_revocation_subscription_is_noticed_and_revoked_keys_are_refused_in_time() {
    let (logs, _guard) = crate::support::logs::capture_logs();
    let redis = PrivateRedis::start();
    let proxy = TcpProxy::start(redis.port, Duration::ZERO).await;
    let ns = namespace();
    // Lockout off: a refusal then asks Redis nothing, so each answer is as quick as the cache.
    let a = gateway(
        &proxy.url(),
        &ns,
        "[auth]\nkey_cache_ttl = \"5m\"\nlockout_threshold = 0\n\
         revocation_heartbeat_interval = \"200ms\"\nrevocation_heartbeat_timeout = \"300ms\"\n",
    )
    .await;
    let bound = Duration::from_millis(500);
    let (id, key) = a.key_with_roles("acme", &[Role::User], None).await;
    assert_eq!(a.send(get_models(&key)).await.status, StatusCode::OK);

    proxy.freeze();
    // Revoked through another connection: in the store, and announced straight to Redis (an
    // announcement the frozen subscription never delivers).
    revoke_elsewhere(&a, &redis.url(), &ns, &id).await;
    let revoked = std::time::Instant::now();
    // The bound, and some slack for a loaded machine: far from the cache's five minutes.
    let status = refused_within(&a, &key, bound + Duration::from_millis(500)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "A still serves the key {:?} after its revocation",
        revoked.elapsed()
    );
    let said = logs.text();
    let silent = format!(
        "subscription to Redis at 127.0.0.1:{} is silent",
        proxy.port
    );
    assert_eq!(
        said.matches(&silent).count(),
        1,
        "the lost subscription is logged once, naming the Redis: {said}"
    );
    // Valid keys are still served, verified against the store.
    assert_eq!(a.send(get_models(&a.key)).await.status, StatusCode::OK);
}

/// The replay cache's fallback: while Redis is unreachable a replica serves fresh signed
/// requests (it does not fail closed) and still refuses the replay of what it served itself.
#[tokio::test]
async fn while_redis_is_down_an_llm_replica_checks_nonces_against_its_own_cache() {
    let mut redis = PrivateRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let a = llm_replica(&redis.url(), &namespace(), dir.path()).await;
    redis.stop();
    let nonce = format!("nonce-{}", uuid::Uuid::new_v4().simple());
    let r = crate::support::send_to(a.clone(), signed_get("/api/version", &nonce)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = crate::support::send_to(a.clone(), signed_get("/api/version", &nonce)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
}

/// Two instances started on one empty shared log with different signing keys (a black-box
/// finding: the one whose key lost stopped sequencing without a word and stayed ready). Once
/// the other has signed the log, the loser says why on `/ready` (503) and refuses audited
/// requests (503) instead of answering requests it cannot account for; the winner serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_key_did_not_sign_the_shared_log_is_not_ready_and_fails_closed() {
    use std::sync::Arc;
    use wardgate_gateway::audit::AuditLog;
    let log = Arc::new(wardgate_audit::MemoryAuditStore::new());
    let over = |log: Arc<wardgate_audit::MemoryAuditStore>| async move {
        let mut stores = Stores::in_memory().await.unwrap();
        stores.audit = AuditLog::Shared(log);
        Harness::single_over("openai", mock_cfg(), "", stores).await
    };
    // Each gets a signing key of its own.
    let a = over(log.clone()).await;
    let b = over(log.clone()).await;
    wardgate_gateway::app::refresh_backends(&a.state).await;
    wardgate_gateway::app::refresh_backends(&b.state).await;
    let r = a.send(chat(&a.key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // b reads the log's checkpoint every third of its lease (5 s).
    let refused = poll_until(
        Duration::from_secs(6),
        || b.get("/ready"),
        |r| r.status == StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(refused.json()["audit"], false, "{}", refused.text());
    assert_eq!(refused.json()["audit_fault"], "signing_key_mismatch");
    let r = b.send(chat(&b.key)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let r = a.get("/ready").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json().get("audit_fault").is_none(), "{}", r.text());
    let r = a.send(chat(&a.key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
