//! `auth-bench`: what the full authentication pipeline adds to a request, against an API key
//! alone, in the same run.
//!
//! Each variant is the real router (`wardgate_gateway::router`, every middleware) serving
//! `POST /v1/chat/completions` (one token from a local mock model server) in process, at a
//! paced rate (default 1,000 requests/s, each request started on its schedule whatever the
//! others do), after a warm-up:
//! - baseline: an API key (verified once, then from the key cache), no rate limits;
//! - the same key with every limit on, in process (to tell the limits' share from the JWT's);
//! - JWT (EdDSA, verified every request) with every limit on, kept in process: requests a
//!   minute per key and tenant, tokens a minute and a day, requests in flight;
//! - the same with the limits in Redis (`--redis-url`, default the local one);
//! - JWT + in-process limits with the credential cache off (`key_cache_ttl = "0s"`), so every
//!   request pays the signature check, as a client's first request with a new token does.
//!   Reported, not a target: the cache serves a token's later requests.
//!
//! Targets (issue 5): JWT + in-process limits add under 100 µs at p50; JWT + Redis limits add
//! under 1 ms at p99. Variants run interleaved, `--repeats` rounds each; the figures are
//! medians over rounds, so one noisy round on this 2-core machine does not decide.

mod paced;
mod stats;

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use clap::Parser;
use wardgate_gateway::config::{Config, parse_toml};
use wardgate_store::SqliteStore;

#[derive(Parser, Debug)]
#[command(about = "Latency the auth pipeline (JWT + rate limits, in process or Redis) adds")]
struct Args {
    #[command(flatten)]
    pace: paced::Pace,
    /// The Redis of the Redis variant; `none` skips it.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

pub(crate) fn say(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

const ISS: &str = "https://idp.bench.test/";

/// Limits high enough never to refuse, so every request pays for the checks and none is cut.
const LIMITS: &str = "requests_per_minute = 100000000\ntenant_requests_per_minute = 100000000\n\
tokens_per_minute = 100000000\ntenant_tokens_per_minute = 100000000\n\
tokens_per_day = 100000000000\ntenant_tokens_per_day = 100000000000\n\
concurrent_requests = 100000\ntenant_concurrent_requests = 100000\n";

struct Variant {
    name: &'static str,
    app: axum::Router,
    credential: String,
}

async fn variant(name: &'static str, toml: &str, jwt: Option<String>) -> anyhow::Result<Variant> {
    let config = Config::from_raw(parse_toml(toml)?, &|_| None)?;
    let store = Arc::new(SqliteStore::open_in_memory().await?);
    let key = paced::bench_key(&*store).await?;
    // Built as `wardgate serve` builds it: the limiter and the JWT issuers from the config.
    let mut stores = wardgate_gateway::Stores::in_memory().await?;
    stores.db = store;
    let gateway = wardgate_gateway::Gateway::build(config, stores, None).await?;
    let state = gateway.state();
    wardgate_gateway::app::refresh_backends(&state).await;
    Ok(Variant {
        name,
        app: gateway.router(),
        credential: jwt.unwrap_or(key),
    })
}

fn signed_token(kid: &str, pkcs8: &[u8]) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"iss": ISS, "aud": "wardgate", "sub": "bench@example.test",
        "tenant": "bench", "iat": now, "exp": now + 3000});
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8),
    )?)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let mock = mock_upstream::MockServer::start(mock_upstream::MockConfig {
        models: vec!["tiny".into()],
        tokens: 1,
        ..mock_upstream::MockConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("no Ed25519 key"))?;
    let pair =
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| anyhow::anyhow!("bad Ed25519 key"))?;
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "bench-1",
            "alg": "EdDSA", "x": B64.encode(pair.public_key().as_ref())}]})
        .to_string(),
    )?;
    let token = signed_token("bench-1", doc.as_ref())?;
    let backend = paced::mock_backend(&mock.url());
    let issuer = format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"wardgate\"]\nalgorithms = [\"EdDSA\"]\n\
         jwks_file = \"{}\"\nmax_lifetime = \"1h\"\n",
        jwks.display()
    );
    let off = "[rate_limit]\nrequests_per_minute = 0\nconcurrent_requests = 0\n";
    let mut variants = vec![
        variant(
            "API key, no limits (baseline)",
            &format!("{off}\n{backend}"),
            None,
        )
        .await?,
        variant(
            "API key + limits in process",
            &format!("[rate_limit]\n{LIMITS}\n{backend}"),
            None,
        )
        .await?,
        variant(
            "JWT + limits in process",
            &format!("[rate_limit]\n{LIMITS}\n{issuer}\n{backend}"),
            Some(token.clone()),
        )
        .await?,
    ];
    // Every request a token never seen before: the signature check on each (reported, not
    // a target: clients reuse a token for its lifetime, which the cache serves).
    let uncached = variant(
        "JWT (no cache) + limits in process",
        &format!("[auth]\nkey_cache_ttl = \"0s\"\n[rate_limit]\n{LIMITS}\n{issuer}\n{backend}"),
        Some(token.clone()),
    )
    .await?;
    if args.redis_url != "none" {
        let ns = format!("wardgate-bench:{}", std::process::id());
        variants.push(
            variant(
                "JWT + limits in Redis",
                &format!(
                    "[rate_limit]\n{LIMITS}backend = \"redis\"\nredis_url = \"{}\"\nredis_namespace = \"{ns}\"\n\n{issuer}\n{backend}",
                    args.redis_url
                ),
                Some(token),
            )
            .await?,
        );
    }
    variants.push(uncached);
    say(&format!(
        "auth-bench: {} req/s, {} s per variant, {} rounds, {} CPUs",
        args.pace.rate,
        args.pace.seconds,
        args.pace.repeats,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    ));
    let targets: Vec<paced::Target> = variants
        .iter()
        .map(|v| paced::Target {
            name: v.name,
            app: &v.app,
            credential: &v.credential,
        })
        .collect();
    let r = paced::rounds(
        &targets,
        args.pace.rate,
        args.pace.seconds,
        args.pace.repeats,
        |_| {},
    )
    .await?;
    let (base50, base99) = r.medians(0);
    say("medians over rounds:");
    for (i, v) in variants.iter().enumerate() {
        let (p50, p99) = r.medians(i);
        say(&format!(
            "  {:32} p50 {p50:>7.0} µs ({:+.0} µs, x{:.2})  p99 {p99:>7.0} µs ({:+.0} µs, x{:.2})",
            v.name,
            p50 - base50,
            p50 / base50.max(1.0),
            p99 - base99,
            p99 / base99.max(1.0),
        ));
    }
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let added50 = r.medians(2).0 - base50;
    say(&format!(
        "target: JWT + in-process limits add < 100 µs at p50: {added50:+.0} µs  {}",
        verdict(added50 < 100.0)
    ));
    if args.redis_url != "none" {
        let added99 = r.medians(3).1 - base99;
        say(&format!(
            "target: JWT + Redis limits add < 1000 µs at p99: {added99:+.0} µs  {}",
            verdict(added99 < 1000.0)
        ));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    paced::main(&args.pace.clone(), || bench(args))
}
