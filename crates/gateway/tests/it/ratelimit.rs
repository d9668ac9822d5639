//! Rate limits per key and per tenant, in process and on the real Redis of this machine
//! (`WARDGATE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`): two limiters with their own
//! connections, standing for two gateway instances, enforce one global limit.

use std::sync::Arc;

use crate::support::{Harness, chat_body, mock_cfg, post_as, redis_keys, redis_url};
use axum::http::StatusCode;
use wardgate_gateway::guards::ratelimit::{RateLimiter, RedisLimiter, Refused};
use wardgate_store::Role;

async fn redis_limiter(namespace: &str) -> RedisLimiter {
    RedisLimiter::connect(&redis_url(), namespace)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} is needed for this test ({e}); start it or set \
                 WARDGATE_TEST_REDIS_URL",
                redis_url()
            )
        })
}

#[tokio::test]
async fn two_instances_sharing_redis_enforce_one_global_limit() {
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let a = redis_limiter(&ns).await;
    let b = redis_limiter(&ns).await;
    // 20 requests a minute, asked 60 times alternately through the two instances, at once:
    // exactly the burst of 20 gets through, whoever asks.
    let (mut ok, mut refused) = (0, 0);
    for i in 0..60 {
        let l: &dyn RateLimiter = if i % 2 == 0 { &a } else { &b };
        match l.acquire("key:shared", 20).await {
            Ok(()) => ok += 1,
            Err(Refused::RetryAfter(wait)) => {
                assert!(
                    wait.as_secs_f64() > 0.0 && wait.as_secs_f64() <= 3.1,
                    "{wait:?}"
                );
                refused += 1;
            }
            Err(Refused::Unavailable) => panic!("Redis failed"),
        }
    }
    assert_eq!((ok, refused), (20, 40));
    // Concurrently too: 40 at once from both, on a fresh bucket of 10.
    let a = Arc::new(a);
    let b = Arc::new(b);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let l: Arc<dyn RateLimiter> = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { l.acquire("key:burst", 10).await.is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 10);
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_start_and_never_lets_requests_through() {
    let err = RedisLimiter::connect("redis://127.0.0.1:1", "x").await;
    assert!(err.is_err());
}

#[tokio::test]
async fn a_tenant_limit_spans_its_keys_and_answers_429_in_the_front_shape() {
    let h = Harness::single_with(
        "openai",
        mock_cfg(),
        "[rate_limit]\nrequests_per_minute = 100\ntenant_requests_per_minute = 3\n",
    )
    .await;
    let (_, k1) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, k2) = h.key_with_roles("acme", &[Role::User], None).await;
    let (_, other) = h.key_with_roles("globex", &[Role::User], None).await;
    let chat = |k: &str| {
        post_as(
            "/v1/chat/completions",
            &chat_body("tiny", "hi").to_string(),
            Some(k),
        )
    };
    let mut statuses = Vec::new();
    for k in [&k1, &k2, &k1, &k2] {
        statuses.push(h.send(chat(k)).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let r = h.send(chat(&k1)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert!(r.headers.contains_key("retry-after"));
    // Another tenant is unaffected.
    assert_eq!(h.send(chat(&other)).await.status, StatusCode::OK);
    // Ollama front: Ollama's shape.
    let r = h
        .send(post_as(
            "/api/chat",
            &chat_body("tiny", "hi").to_string(),
            Some(&k1),
        ))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn the_gateway_uses_redis_when_configured() {
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let toml = format!(
        "[rate_limit]\nrequests_per_minute = 2\nbackend = \"redis\"\nredis_url = \"{}\"\n\
         redis_namespace = \"{ns}\"\n",
        redis_url()
    );
    // The gateway connects to Redis as it builds, as `wardgate serve` does.
    let h = Harness::single_with("openai", mock_cfg(), &toml).await;
    let body = chat_body("tiny", "hi");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            h.post("/v1/chat/completions", body.clone())
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
    // The state is in Redis, under the namespace.
    let keys = redis_keys(&redis_url(), &format!("{ns}:*")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].0.starts_with(&format!("{ns}:key:key_")));
}

#[tokio::test]
async fn two_instances_share_quotas_through_redis() {
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let a = redis_limiter(&ns).await;
    let b = redis_limiter(&ns).await;
    let hold = std::time::Duration::from_secs(60);
    // Places in flight: two in all, whichever instance takes them.
    assert_eq!(a.enter("inflight:key:k", 2, hold).await, Ok(()));
    assert_eq!(b.enter("inflight:key:k", 2, hold).await, Ok(()));
    assert!(matches!(
        a.enter("inflight:key:k", 2, hold).await,
        Err(Refused::RetryAfter(_))
    ));
    b.leave("inflight:key:k").await;
    assert_eq!(a.enter("inflight:key:k", 2, hold).await, Ok(()));
    // Giving back more than was taken never goes below zero.
    for _ in 0..4 {
        a.leave("inflight:key:k").await;
    }
    assert_eq!(b.enter("inflight:key:k", 1, hold).await, Ok(()));
    assert!(b.enter("inflight:key:k", 1, hold).await.is_err());

    // Tokens a minute: usage spent through one instance is seen by the other.
    assert_eq!(a.check("tpm:key:k", 600).await, Ok(()));
    a.spend("tpm:key:k", 600, 1_600).await.unwrap();
    let Err(Refused::RetryAfter(wait)) = b.check("tpm:key:k", 600).await else {
        panic!("an overdrawn bucket must refuse on the other instance too");
    };
    assert!(
        wait.as_secs_f64() > 99.0 && wait.as_secs_f64() <= 100.2,
        "{wait:?}"
    );

    // Tokens a day: one counter.
    assert_eq!(a.add_today("day:key:k", 0).await, Ok(0));
    assert_eq!(a.add_today("day:key:k", 70).await, Ok(70));
    assert_eq!(b.add_today("day:key:k", 30).await, Ok(100));
    assert_eq!(b.add_today("day:key:k", 0).await, Ok(100));
}
