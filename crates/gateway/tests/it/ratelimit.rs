//! Rate limits per key and per tenant, in process and on the real Redis of this machine
//! (`WARDGATE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`): two limiters with their own
//! connections, standing for two gateway instances, enforce one global limit.

use std::sync::Arc;

use crate::support::{Harness, chat_body, mock_cfg, post_as, redis_keys, redis_url};
use axum::http::StatusCode;
use wardgate_gateway::guards::ratelimit::{
    Bound, Limit, RateLimiter, RedisLimiter, Refusal, Refused, Settlement, utc_day,
};
use wardgate_store::Role;

/// The wait of an admission that `l` refuses for `limit`.
async fn refused_for(l: &dyn RateLimiter, bounds: &[Bound], limit: Limit) -> std::time::Duration {
    match l.admit(bounds, HOLD).await {
        Err(Refusal {
            limit: by,
            why: Refused::RetryAfter(wait),
        }) if by == limit => wait,
        other => panic!("{bounds:?}: {other:?}, not refused for {limit:?}"),
    }
}

/// How long a place may be held, where a test does not wait for it.
const HOLD: std::time::Duration = std::time::Duration::from_secs(60);

async fn redis_limiter(namespace: &str) -> RedisLimiter {
    limiter_at(&redis_url(), namespace).await
}

async fn limiter_at(url: &str, namespace: &str) -> RedisLimiter {
    RedisLimiter::connect(url, namespace)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {url} is needed for this test ({e}); start it or set \
                 WARDGATE_TEST_REDIS_URL"
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
        match l.admit(&[Bound::requests("key:shared", 20)], HOLD).await {
            Ok(_) => ok += 1,
            Err(Refusal {
                limit: Limit::Requests,
                why: Refused::RetryAfter(wait),
            }) => {
                assert!(
                    wait.as_secs_f64() > 0.0 && wait.as_secs_f64() <= 3.1,
                    "{wait:?}"
                );
                refused += 1;
            }
            Err(r) => panic!("{r:?}"),
        }
    }
    assert_eq!((ok, refused), (20, 40));
    // Concurrently too: 40 at once from both, on a fresh bucket of 10.
    let a = Arc::new(a);
    let b = Arc::new(b);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let l: Arc<dyn RateLimiter> = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                l.admit(&[Bound::requests("key:burst", 10)], HOLD)
                    .await
                    .is_ok()
            })
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
    let two = [Bound::concurrency("places:key:k", 2)];
    // Places in flight: two in all, whichever instance takes them.
    let ta = a.admit(&two, HOLD).await.unwrap();
    let tb = b.admit(&two, HOLD).await.unwrap();
    assert_eq!(
        a.admit(&two, HOLD).await.map_err(|r| r.limit),
        Err(Limit::Concurrency)
    );
    b.settle(&Settlement::of(two.clone(), tb)).await.unwrap();
    let _ta2 = a.admit(&two, HOLD).await.unwrap();
    // Giving back a place four times gives back that one place.
    for _ in 0..4 {
        a.settle(&Settlement::of(two.clone(), ta)).await.unwrap();
    }
    assert!(b.admit(&two, HOLD).await.is_ok());
    assert_eq!(
        b.admit(&two, HOLD).await.map_err(|r| r.limit),
        Err(Limit::Concurrency)
    );

    // Tokens a minute: usage spent through one instance is seen by the other.
    let tpm = [Bound::tokens("tpm:key:k", 600)];
    let t = a.admit(&tpm, HOLD).await.unwrap();
    a.settle(&Settlement::of(tpm.clone(), t).charging(1_600))
        .await
        .unwrap();
    // An overdrawn bucket refuses on the other instance too.
    let wait = refused_for(&b, &tpm, Limit::Tokens).await;
    assert!(
        wait.as_secs_f64() > 99.0 && wait.as_secs_f64() <= 100.2,
        "{wait:?}"
    );

    // Tokens a day: one counter.
    let day = [Bound::tokens_per_day("day:key:k", 100)];
    for (l, tokens) in [(&a, 70), (&b, 29)] {
        let t = l.admit(&day, HOLD).await.unwrap();
        l.settle(&Settlement::of(day.clone(), t).charging(tokens))
            .await
            .unwrap();
    }
    let t = a.admit(&day, HOLD).await.expect("99 of 100 used");
    b.settle(&Settlement::of(day.clone(), t).charging(1))
        .await
        .unwrap();
    // 100 of 100 used: refused until tomorrow.
    let wait = refused_for(&a, &day, Limit::TokensPerDay).await;
    assert!(wait.abs_diff(utc_day().1).as_secs() <= 1, "{wait:?}");
}

/// Every limit on, in a Redis of the test's own under `ns`: requests, tokens a minute and a
/// day, and places in flight, for the key and for its tenant.
fn every_limit_in(url: &str, ns: &str) -> String {
    format!(
        "[rate_limit]\nrequests_per_minute = 10000\ntenant_requests_per_minute = 10000\n\
         tokens_per_minute = 1000000\ntenant_tokens_per_minute = 1000000\n\
         tokens_per_day = 100000000\ntenant_tokens_per_day = 100000000\n\
         concurrent_requests = 8\ntenant_concurrent_requests = 16\n\
         backend = \"redis\"\nredis_url = \"{url}\"\nredis_namespace = \"{ns}\"\n"
    )
}

/// What a served model request costs in Redis with every limit on, counted by Redis itself
/// (`INFO commandstats` of a private `redis-server`): one script call to admit it (both
/// request rates, both token buckets, both day counters, both places in flight, all or
/// nothing) and one to settle it (places back, tokens charged to the minute and the day).
/// Before, it was fourteen: an `EVALSHA` per bound to admit and per bucket to settle.
#[tokio::test]
async fn a_model_request_costs_one_redis_round_trip_to_admit_and_one_to_settle() {
    let redis = crate::support::PrivateRedis::start();
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let h = Harness::single_with("openai", mock_cfg(), &every_limit_in(&redis.url(), &ns)).await;
    // The first request loads the scripts (`SCRIPT LOAD` after a `NOSCRIPT`).
    assert_eq!(
        h.send(crate::support::chat(&h.key)).await.status,
        StatusCode::OK
    );
    let before = crate::support::redis_command_calls(&redis.url()).await;
    const N: u64 = 20;
    for _ in 0..N {
        let r = h.send(crate::support::chat(&h.key)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // Each answer's end waited for its settlement: the counts are final.
    let after = crate::support::redis_command_calls(&redis.url()).await;
    // Round trips are the commands the gateway sends: the revocation listener's heartbeats,
    // the stats reads themselves and the commands the scripts run inside Redis are not.
    const IN_SCRIPTS: [&str; 12] = [
        "time",
        "get",
        "set",
        "incrby",
        "expire",
        "zremrangebyscore",
        "zcard",
        "zadd",
        "pttl",
        "pexpire",
        "zrem",
        "exists",
    ];
    let per_request: std::collections::BTreeMap<&str, u64> = after
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "publish" | "info"))
        .filter(|(name, _)| !IN_SCRIPTS.contains(&name.as_str()))
        .map(|(name, n)| (name.as_str(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(per_request, [("evalsha", 2 * N)].into_iter().collect());
}

/// A refused admission takes nothing in Redis: not the request rates checked before the bound
/// that refused, nor the places; and the refusal names the first bound, in order, that
/// refused.
#[tokio::test]
async fn a_refused_admission_takes_nothing_in_redis() {
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let l = redis_limiter(&ns).await;
    let held = l
        .admit(&[Bound::concurrency("places:key:p", 1)], HOLD)
        .await
        .unwrap();
    let all = [
        Bound::requests("key:k", 1),
        Bound::requests("tenant:t", 1),
        Bound::tokens("tpm:key:k", 60),
        Bound::tokens_per_day("day:key:k", 10),
        Bound::concurrency("places:key:q", 1),
        Bound::concurrency("places:key:p", 1),
    ];
    for _ in 0..3 {
        assert_eq!(
            l.admit(&all, HOLD).await,
            Err(Refusal {
                limit: Limit::Concurrency,
                why: Refused::RetryAfter(std::time::Duration::from_secs(1)),
            })
        );
    }
    // Redis holds the one place taken, and nothing else.
    let keys: Vec<String> = redis_keys(&redis_url(), &format!("{ns}:*"))
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, [format!("{ns}:places:key:p")]);
    // Once the place is back, the same request is admitted: its rates had not been spent.
    l.settle(&Settlement::of(
        [Bound::concurrency("places:key:p", 1)],
        held,
    ))
    .await
    .unwrap();
    let ticket = l.admit(&all, HOLD).await.expect("nothing was taken before");
    // The first refusing bound names the refusal, with its wait: the key's rate of one a
    // minute, spent, here.
    let wait = refused_for(&l, &all, Limit::Requests).await;
    assert!(
        wait.as_secs_f64() > 59.0 && wait.as_secs_f64() <= 60.0,
        "{wait:?}"
    );
    l.settle(&Settlement::of(all.clone(), ticket))
        .await
        .unwrap();
}

/// Attack finding A6: an instance killed with `kill -9` while holding places in flight used to
/// leave them taken for as long as the key stayed busy (other requests kept refreshing the
/// counter's expiry), so the key's concurrency limit shrank for good. Each place is now an
/// entry of its own that expires `hold` after it was taken: the dead instance's places come
/// free after their hold time, never before, however busy the key is meanwhile.
#[tokio::test]
async fn places_of_an_instance_that_died_come_free_after_their_hold_and_not_before() {
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let hold = std::time::Duration::from_secs(2);
    let three = [Bound::concurrency("places:key:k", 3)];
    let alive = redis_limiter(&ns).await;
    let dead = redis_limiter(&ns).await;
    let taken = std::time::Instant::now();
    for _ in 0..2 {
        dead.admit(&three, hold).await.unwrap();
    }
    // It dies holding two places: nothing of it gives them back.
    drop(dead);
    // The other instance keeps the key busy, request after request, each taking a place and
    // giving it back. While the dead places are held, only one is left for it.
    let freed = loop {
        let first = alive
            .admit(&three, hold)
            .await
            .expect("the third place is always free");
        let second = alive.admit(&three, hold).await;
        alive
            .settle(&Settlement::of(three.clone(), first))
            .await
            .unwrap();
        match second {
            Ok(t) => {
                alive
                    .settle(&Settlement::of(three.clone(), t))
                    .await
                    .unwrap();
                break taken.elapsed();
            }
            Err(r) => {
                assert_eq!(r.limit, Limit::Concurrency);
                assert!(
                    taken.elapsed() < hold + std::time::Duration::from_secs(3),
                    "the dead instance's places were never given back"
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(
        freed >= hold,
        "freed after {freed:?}, before the hold of {hold:?}"
    );
    // Both dead places are free: all three can be taken.
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(alive.admit(&three, hold).await.expect("all three free"));
    }
    for t in tickets {
        alive
            .settle(&Settlement::of(three.clone(), t))
            .await
            .unwrap();
    }
}

/// Attack finding: a tenant's token budget shared by two instances was overspent by more than
/// a request's worth. A request is admitted while the budget has allowance left and charged
/// when it ends; on Redis the charge used to be sent after the client had its answer, so the
/// client's next request, at another instance, could be admitted before the last one was
/// charged. Here the client sends the request that spends the budget through an instance far
/// from Redis (what it sends arrives 100 ms late), and the next at once through another: that
/// one used to be served too. Now an answer's end waits for its charge (as it waits for its
/// audit event), so a client sending one request after another overspends by at most its
/// last request, whichever instances it uses.
#[tokio::test]
async fn a_tenant_budget_shared_by_two_instances_is_overspent_by_one_request_at_most() {
    const BUDGET: u64 = 100;
    let redis = crate::support::PrivateRedis::start();
    let far =
        crate::support::TcpProxy::start(redis.port, std::time::Duration::from_millis(100)).await;
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let section = |url: &str| {
        format!(
            "[rate_limit]\nrequests_per_minute = 0\nconcurrent_requests = 0\n\
             tenant_tokens_per_day = {BUDGET}\nbackend = \"redis\"\nredis_url = \"{url}\"\n\
             redis_namespace = \"{ns}\"\n"
        )
    };
    let a = Harness::single_with("openai", mock_cfg(), &section(&far.url())).await;
    let mut stores = wardgate_gateway::app::Stores::in_memory().await.unwrap();
    stores.db = a.store.clone();
    let b = Harness::single_over("openai", mock_cfg(), &section(&redis.url()), stores).await;
    let (mut spent, mut last, mut largest, mut served) = (0, 0, 0, 0);
    loop {
        // The request that will spend the budget goes to the far instance A; the others, and
        // the one right after it, to B.
        let at = if spent < BUDGET && spent + last >= BUDGET {
            &a
        } else {
            &b
        };
        let r = at.send(crate::support::chat(&a.key)).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        last = r.json()["usage"]["total_tokens"].as_u64().unwrap();
        spent += last;
        largest = largest.max(last);
        served += 1;
        assert!(served < 100, "the budget never ran out");
    }
    assert!(
        spent < BUDGET + largest,
        "{spent} tokens spent of a budget of {BUDGET} in {served} requests of at most {largest}"
    );
}

/// The bound under concurrent load: the requests in flight when a budget runs out were all
/// admitted against what was left, so the budget is overdrawn by at most their tokens. Eight
/// clients, each sending one request after another through two limiters (two instances) on
/// one Redis, each request charged before its client sends the next (as an answer's end waits
/// for its charge).
#[tokio::test]
async fn under_concurrent_load_a_shared_budget_is_overdrawn_by_the_requests_in_flight_at_most() {
    use wardgate_gateway::guards::ratelimit::Lease;
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let limiters: [Arc<dyn RateLimiter>; 2] = [
        Arc::new(redis_limiter(&ns).await),
        Arc::new(redis_limiter(&ns).await),
    ];
    const BUDGET: u64 = 1_000;
    const PER_REQUEST: u64 = 30;
    const CLIENTS: u64 = 8;
    let bounds = [
        Bound::tokens_per_day("day:tenant:acme", BUDGET),
        Bound::tokens("tpm:tenant:acme", 1_000_000),
    ];
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let limiters = limiters.clone();
            let bounds = bounds.clone();
            tokio::spawn(async move {
                let mut spent = 0;
                for i in 0.. {
                    let l = &limiters[usize::try_from(c + i).unwrap() % 2];
                    let Ok(ticket) = l.admit(&bounds, HOLD).await else {
                        return spent;
                    };
                    Lease::admitted(l.clone(), bounds.clone(), ticket)
                        .settle(PER_REQUEST)
                        .await;
                    spent += PER_REQUEST;
                }
                spent
            })
        })
        .collect();
    let mut spent = 0;
    for c in clients {
        spent += c.await.unwrap();
    }
    assert!(spent >= BUDGET, "{spent}");
    assert!(
        spent < BUDGET + CLIENTS * PER_REQUEST,
        "{spent} spent of {BUDGET}: more than the {CLIENTS} requests in flight over"
    );
}

/// A black-box finding: while Redis stalled (paused), the gateway gave up on each admission
/// after its response timeout and answered 503, but Redis ran the queued admission scripts
/// when it resumed, and each took a place that no request held and nothing gave back: the
/// key was refused with 429 until the places expired (`request_timeout` + 60 s). Now an
/// admission the gateway gave up on is withdrawn, whichever runs first: right after Redis
/// resumes, the key has all its places again.
#[tokio::test]
async fn places_taken_by_admissions_given_up_while_redis_stalled_are_given_back() {
    let redis = crate::support::PrivateRedis::start();
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let section = format!(
        "[rate_limit]\nrequests_per_minute = 10000\nconcurrent_requests = 2\n\
         backend = \"redis\"\nredis_url = \"{}\"\nredis_namespace = \"{ns}\"\n",
        redis.url()
    );
    let h = Harness::single_with("openai", mock_cfg(), &section).await;
    // Loads the scripts, so that what waits below is the admissions themselves.
    let r = h.send(crate::support::chat(&h.key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    redis.pause();
    for _ in 0..3 {
        let r = h.send(crate::support::chat(&h.key)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    }
    redis.resume();
    let resumed = std::time::Instant::now();

    // Every place is free again within a second of the resume ...
    let places_held = || async {
        let mut held = 0;
        for (key, _) in redis_keys(&redis.url(), &format!("{ns}:places:*")).await {
            let mut conn = redis::Client::open(redis.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let n: u64 = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            held += n;
        }
        held
    };
    loop {
        let held = places_held().await;
        if held == 0 {
            break;
        }
        assert!(
            resumed.elapsed() < std::time::Duration::from_secs(1),
            "{held} places still held {:?} after Redis resumed",
            resumed.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ... and the key is served, not refused for places nobody holds.
    let served = crate::support::poll_until(
        std::time::Duration::from_secs(3),
        || h.send(crate::support::chat(&h.key)),
        |r| r.status != StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text());
}

/// A black-box finding: after `kill -9` of an instance holding places in flight, the places
/// came back only after `server.request_timeout` plus a minute. A place outlives its
/// request's deadline, and now by a few seconds only. The holder here dies with its request
/// in flight (its request is never finished nor dropped, so its place is never given back).
#[tokio::test]
async fn a_place_held_by_an_instance_that_died_comes_back_soon_after_its_deadline() {
    use std::time::{Duration, Instant};
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
    let ns = format!("wardgate-test:{}", uuid::Uuid::new_v4().simple());
    let section = format!(
        "[server]\nrequest_timeout = \"2s\"\n[rate_limit]\nrequests_per_minute = 10000\n\
         concurrent_requests = 1\nbackend = \"redis\"\nredis_url = \"{}\"\n\
         redis_namespace = \"{ns}\"\n",
        redis_url()
    );
    // The backend never answers: the holder's request is in flight until it dies.
    let backend = mock_upstream::MockConfig {
        headers_delay: Duration::from_secs(3600),
        ..mock_cfg()
    };
    let h = Harness::single_with("openai", backend, &section).await;
    let started = Instant::now();
    let mut holder = Box::pin(h.send(crate::support::chat(&h.key)));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut holder)
            .await
            .is_err(),
        "the holder's request ended"
    );
    // The instance dies: nothing runs the request to its end or gives its place back.
    std::mem::forget(holder);
    let places = redis_keys(&redis_url(), &format!("{ns}:places:*")).await;
    assert_eq!(places.len(), 1, "{places:?}");
    let bucket = places[0].0.trim_start_matches(&format!("{ns}:")).to_owned();
    let other = redis_limiter(&ns).await;
    let probe = [Bound::concurrency(bucket, 1)];
    let free_after = loop {
        let elapsed = started.elapsed();
        match other.admit(&probe, HOLD).await {
            Ok(_) => break elapsed,
            Err(Refusal {
                limit: Limit::Concurrency,
                ..
            }) => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            elapsed
                < REQUEST_TIMEOUT
                    + wardgate_gateway::handlers::PLACE_MARGIN
                    + Duration::from_secs(2),
            "the dead holder's place is still held after {elapsed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Held for as long as its request could have run, and not much longer.
    assert!(free_after >= REQUEST_TIMEOUT, "freed after {free_after:?}");
}
