//! `pool-bench`: throughput of one model served by a pool of 1, 2 and 3 replicas, through the
//! gateway, in the same run.
//!
//! Each replica is an in-process `mock-upstream` that serves at most `--capacity` requests at
//! a time, each taking `--delay-ms` (before its one-token answer), and answers **503 (busy)**
//! beyond that rather than queueing (as Ollama and `wardgate llm` do when their queue is
//! full): so a replica's capacity is exactly `capacity / delay` requests a second, and the
//! pool's throughput shows how well the gateway spreads the load and how it handles a full
//! replica (passing the request to another before giving up with 503). The gateway is the
//! real router (every middleware, API-key auth, rate limits off, the audit writer over its
//! in-memory store) called in process; the model `m` is one chain link, a backend with
//! `urls = [..]`.
//!
//! The load is closed-loop: `--clients` workers, each sending one non-streamed chat at a time,
//! each request a new conversation (so conversation affinity spreads them by hash, and the
//! load bound and two random choices by load); a worker that gets a 503 waits `--backoff-ms`
//! before its next request, as a client would. After `--warmup-seconds`, answers are counted
//! for `--seconds`.
//!
//! Printed per pool size: answered requests a second, the client-visible 503s, the replicas'
//! own busy refusals (requests the gateway then passed to another replica or gave up on), the
//! ideal (`replicas × capacity / delay`), the 1-replica baseline of the same run and the ratio
//! to it. With the defaults the ideal ratios are 2 and 3.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use clap::Parser;
use http_body_util::BodyExt as _;
use mock_upstream::{MockConfig, MockServer};
use tower::ServiceExt as _;
use wardgate_gateway::config::{Config, parse_toml};

#[allow(
    dead_code,
    reason = "shared with auth-bench and audit-latency; this bench uses bench_key only"
)]
mod paced;
#[allow(dead_code, reason = "shared; paced uses it")]
mod stats;

#[derive(Parser, Debug)]
#[command(about = "Throughput through the gateway with 1, 2 and 3 concurrency-limited replicas")]
struct Args {
    /// Largest pool measured (every size from 1 up to it).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Requests each replica serves at once; one more is answered 503.
    #[arg(long, default_value_t = 8)]
    capacity: usize,
    /// Milliseconds each request takes at the replica.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// Concurrent clients (default: enough to fill the largest pool, plus a quarter).
    #[arg(long)]
    clients: Option<usize>,
    /// Milliseconds a client waits after a 503.
    #[arg(long, default_value_t = 5)]
    backoff_ms: u64,
    /// Seconds of load before counting starts.
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Seconds counted per pool size.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

pub(crate) fn say(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// What one pool size measured.
struct Figure {
    replicas: usize,
    per_second: f64,
    client_503: u64,
    other_errors: u64,
    busy_refusals: u64,
}

/// A gateway in front of `replicas` mocks, each limited to `capacity` requests at once.
async fn gateway(
    replicas: &[MockServer],
) -> anyhow::Result<(axum::Router, String, wardgate_gateway::Gateway)> {
    let urls: Vec<String> = replicas
        .iter()
        .map(|m| format!("\"{}/v1\"", m.url()))
        .collect();
    let toml = format!(
        "[rate_limit]\nrequests_per_minute = 0\nconcurrent_requests = 0\n\n\
         [[backends]]\nname = \"pool\"\nkind = \"openai\"\nurls = [{}]\n\n\
         [[models]]\nname = \"m\"\nchain = [{{ backend = \"pool\", model = \"tiny\" }}]\n",
        urls.join(", ")
    );
    let config = Config::from_raw(parse_toml(&toml)?, &|_| None)?;
    let stores = wardgate_gateway::Stores::in_memory().await?;
    let key = paced::bench_key(&*stores.db).await?;
    let gateway = wardgate_gateway::Gateway::build(config, stores, None).await?;
    let answered = wardgate_gateway::app::refresh_backends(&gateway.state()).await;
    anyhow::ensure!(
        answered == replicas.len(),
        "only {answered} of {} replicas answered the health probe",
        replicas.len()
    );
    Ok((gateway.router(), key, gateway))
}

fn request(key: &str, worker: usize, seq: u64) -> http::Request<Body> {
    let body = serde_json::json!({
        "model": "m",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": format!("conversation {worker}-{seq}")}],
    });
    http::Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

async fn measure(args: &Args, clients: usize, replicas: usize) -> anyhow::Result<Figure> {
    let mut mocks = Vec::with_capacity(replicas);
    for _ in 0..replicas {
        mocks.push(
            MockServer::start(MockConfig {
                models: vec!["tiny".into()],
                tokens: 1,
                first_token_delay: Duration::from_millis(args.delay_ms),
                max_concurrent: Some(args.capacity),
                ..MockConfig::default()
            })
            .await?,
        );
    }
    let (app, key, _gateway) = gateway(&mocks).await?;
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let backoff = Duration::from_millis(args.backoff_ms);
    let mut workers = Vec::with_capacity(clients);
    for worker in 0..clients {
        let (app, key) = (app.clone(), key.clone());
        let (counting, stop) = (counting.clone(), stop.clone());
        let (ok, busy, other) = (ok.clone(), busy.clone(), other.clone());
        workers.push(tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let status = match app.clone().oneshot(request(&key, worker, seq)).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let read = resp.into_body().collect().await;
                        if read.is_err() { None } else { Some(status) }
                    }
                    Err(never) => match never {},
                };
                let counted = counting.load(Ordering::Relaxed);
                match status {
                    Some(s) if s.is_success() => {
                        if counted {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(s) if s == http::StatusCode::SERVICE_UNAVAILABLE => {
                        if counted {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(backoff).await;
                    }
                    _ => {
                        if counted {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_seconds)).await;
    let refused_before: u64 = mocks.iter().map(|m| m.stats().busy_refusals).sum();
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let refused_after: u64 = mocks.iter().map(|m| m.stats().busy_refusals).sum();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.context("a client task failed")?;
    }
    for m in mocks {
        m.shutdown().await;
    }
    Ok(Figure {
        replicas,
        per_second: ok.load(Ordering::Relaxed) as f64 / elapsed,
        client_503: busy.load(Ordering::Relaxed),
        other_errors: other.load(Ordering::Relaxed),
        busy_refusals: refused_after - refused_before,
    })
}

async fn bench(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.replicas > 0 && args.capacity > 0 && args.delay_ms > 0 && args.seconds > 0.0,
        "replicas, capacity, delay-ms and seconds must be > 0"
    );
    let clients = args
        .clients
        .unwrap_or(args.replicas * args.capacity + args.replicas * args.capacity / 4);
    let per_replica = args.capacity as f64 * 1000.0 / args.delay_ms as f64;
    say(&format!(
        "pool-bench: each replica serves {} at once, {} ms each (ideal {per_replica:.0} req/s), \
         503 beyond; {clients} closed-loop clients, {} s counted after {} s of warm-up",
        args.capacity, args.delay_ms, args.seconds, args.warmup_seconds
    ));
    let mut figures = Vec::with_capacity(args.replicas);
    for n in 1..=args.replicas {
        figures.push(measure(&args, clients, n).await?);
    }
    let baseline = figures.first().map_or(0.0, |f| f.per_second);
    say(&format!(
        "{:>8} {:>10} {:>10} {:>12} {:>10} {:>10} {:>14}",
        "replicas", "req/s", "ideal", "vs 1 replica", "client 503", "other err", "replica busy"
    ));
    for f in &figures {
        let ratio = if baseline > 0.0 {
            f.per_second / baseline
        } else {
            0.0
        };
        say(&format!(
            "{:>8} {:>10.1} {:>10.0} {:>11.2}x {:>10} {:>10} {:>14}",
            f.replicas,
            f.per_second,
            per_replica * f.replicas as f64,
            ratio,
            f.client_503,
            f.other_errors,
            f.busy_refusals
        ));
    }
    say(&format!(
        "baseline (1 replica, this run): {baseline:.1} req/s; the ratios are against it"
    ));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}
