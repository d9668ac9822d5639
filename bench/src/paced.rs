//! The in-process load both router benchmarks use: the real router (`wardgate_gateway::router`,
//! every middleware) called through `tower::ServiceExt::oneshot`, one chat completion per
//! request, started on a fixed schedule whatever the others do (open loop), so a slow request
//! shows in the latencies instead of slowing the load.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// A one-token chat completion for model `tiny`, carrying `credential`.
pub fn request(credential: &str) -> http::Request<Body> {
    let body = r#"{"model":"tiny","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    http::Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {credential}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// One paced run: `count` requests at `rate`/s; latencies in µs, sorted. Fails when any
/// request is not answered 200: a comparison with failures in it would be meaningless.
pub async fn run(
    app: &axum::Router,
    credential: &str,
    rate: u32,
    count: u64,
) -> anyhow::Result<Vec<u64>> {
    let every = Duration::from_secs(1) / rate;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count {
        let at = start + every * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(at).await;
        let app = app.clone();
        let req = request(credential);
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let resp = app.oneshot(req).await.ok()?;
            let ok = resp.status().is_success();
            resp.into_body().collect().await.ok()?;
            ok.then(|| u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await?
                .context("a request failed (not 200): the comparison would be meaningless")?,
        );
    }
    out.sort_unstable();
    Ok(out)
}

/// A new API key of tenant `bench`, every model, no roles: the secret.
pub async fn bench_key(store: &dyn wardgate_store::KeyStore) -> anyhow::Result<String> {
    Ok(store
        .create_key(wardgate_store::NewKeySpec {
            tenant: "bench".into(),
            models: vec![],
            roles: vec![],
            expires_at: None,
            label: None,
        })
        .await?
        .secret
        .expose()
        .clone())
}

/// The backend and model sections pointing model `tiny` at the mock at `url`.
pub fn mock_backend(url: &str) -> String {
    format!(
        "[[backends]]\nname = \"b0\"\nkind = \"openai\"\nurl = \"{url}/v1\"\n\n\
         [[models]]\nname = \"tiny\"\nchain = [{{ backend = \"b0\", model = \"tiny\" }}]\n"
    )
}

/// One variant of a comparison: a router and the credential its requests carry.
pub struct Target<'a> {
    pub name: &'a str,
    pub app: &'a axum::Router,
    pub credential: &'a str,
}

/// The p50s and p99s (µs) of each target's rounds, in the targets' order.
pub struct Rounds {
    pub p50s: Vec<Vec<f64>>,
    pub p99s: Vec<Vec<f64>>,
}

impl Rounds {
    /// The median over rounds of target `i`'s p50 and p99.
    pub fn medians(&self, i: usize) -> (f64, f64) {
        let med = |v: &[f64]| crate::stats::median(v).unwrap_or(0.0);
        (med(&self.p50s[i]), med(&self.p99s[i]))
    }
}

/// A short warm-up of every target, then `repeats` rounds of `seconds` each, the targets
/// interleaved within a round so that a noisy moment does not land on one of them only.
/// `before` runs ahead of each target's runs (to switch process-wide settings).
pub async fn rounds(
    targets: &[Target<'_>],
    rate: u32,
    seconds: u32,
    repeats: usize,
    before: impl Fn(usize),
) -> anyhow::Result<Rounds> {
    for (i, t) in targets.iter().enumerate() {
        before(i);
        run(t.app, t.credential, rate, u64::from(rate / 5)).await?;
    }
    let count = u64::from(rate) * u64::from(seconds);
    let mut out = Rounds {
        p50s: vec![Vec::new(); targets.len()],
        p99s: vec![Vec::new(); targets.len()],
    };
    for round in 0..repeats {
        for (i, t) in targets.iter().enumerate() {
            before(i);
            let lat = run(t.app, t.credential, rate, count).await?;
            let p50 = crate::stats::percentile(&lat, 50.0).unwrap_or(0);
            let p99 = crate::stats::percentile(&lat, 99.0).unwrap_or(0);
            crate::say(&format!(
                "  round {}: {:32} p50 {p50:>6} µs  p99 {p99:>6} µs",
                round + 1,
                t.name
            ));
            out.p50s[i].push(p50 as f64);
            out.p99s[i].push(p99 as f64);
        }
    }
    Ok(out)
}

/// The load settings both benchmarks take.
#[derive(clap::Args, Clone, Debug)]
pub struct Pace {
    /// Requests per second.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Seconds measured per variant per round.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Rounds; the median over rounds is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

/// Runs a paced benchmark's body on a multi-threaded runtime after checking its settings.
pub fn main<F: std::future::Future<Output = anyhow::Result<()>>>(
    pace: &Pace,
    body: impl FnOnce() -> F,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        pace.rate > 0 && pace.seconds > 0 && pace.repeats > 0,
        "rate, seconds and repeats must be > 0"
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(body())
}
