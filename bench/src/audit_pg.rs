//! `audit-pg`: the shared audit log on PostgreSQL written by several instances at once (issue
//! 17), against the single writer on a SQLite file measured in the same run.
//!
//! Each "instance" is an `Auditor::start_shared` over a pool of its own on one database (a
//! fresh schema on `WARDGATE_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/
//! test`), with many concurrent appenders each waiting for its event's durable queueing, as a
//! request does. Reported: appends acknowledged per second (target: at least 10,000/s), and the
//! sequencer lag, the time from an event's acknowledgement to its presence in the log, measured
//! on probe events (one every 20 ms, found by request id). Baseline: the same appenders on the
//! single-writer `Auditor` over a SQLite file (WAL, `synchronous=FULL`), the embedded default.
//! Figures are medians of the runs; the machine's other CPU use is printed beside them.

mod machine;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::io::Write as _;

use clap::Parser;
use wardgate_audit::conformance::sample_event;
use wardgate_audit::{
    AuditFilter, AuditStore as _, Auditor, AuditorConfig, SequencerConfig, SignerKey,
};
use wardgate_store::postgres::testing::TestSchema;
use wardgate_store::postgres::{PgOptions, PgStore};

#[derive(Parser, Debug)]
#[command(about = "Shared audit log on PostgreSQL: append throughput and sequencer lag")]
struct Args {
    /// Gateway instances writing the one log.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Concurrent appenders per instance.
    #[arg(long, default_value_t = 256)]
    appenders: usize,
    /// Seconds each run appends for.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Each instance's pool size (`storage.max_connections`).
    #[arg(long, default_value_t = 10)]
    pool: u32,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

struct Run {
    events_per_sec: f64,
    lag_ms: Vec<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let before = machine::snapshot(&[], &["postgres"]);
    let mut shared = Vec::new();
    let mut single = Vec::new();
    for _ in 0..args.repeats {
        shared.push(shared_run(&args).await?);
        single.push(sqlite_run(&args).await?);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let other = before
        .zip(machine::snapshot(&[], &["postgres"]))
        .and_then(|(a, b)| machine::interference(a, b, cpus));
    let median = |v: Vec<f64>| stats::median(&v).unwrap_or(0.0);
    let pg = median(shared.iter().map(|r| r.events_per_sec).collect());
    let sq = median(single.iter().map(|r| r.events_per_sec).collect());
    let mut lags: Vec<u64> = shared
        .iter()
        .flat_map(|r| r.lag_ms.iter().map(|ms| (ms * 1000.0) as u64))
        .collect();
    lags.sort_unstable();
    let ms = |p: f64| stats::percentile(&lags, p).unwrap_or(0) as f64 / 1000.0;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "audit-pg: {} instances x {} appenders, {} s, {} runs (medians)",
        args.instances, args.appenders, args.seconds, args.repeats
    )?;
    writeln!(
        out,
        "  PostgreSQL shared log: {pg:>10.0} events/s acknowledged (target >= 10000)"
    )?;
    writeln!(
        out,
        "  SQLite single writer : {sq:>10.0} events/s (baseline, same run)"
    )?;
    writeln!(out, "  ratio                : {:>10.2}", pg / sq)?;
    writeln!(
        out,
        "  sequencer lag (ack -> in the log), {} probes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lags.len(),
        ms(50.0),
        ms(99.0),
        ms(100.0)
    )?;
    if let Some(o) = other {
        writeln!(
            out,
            "  other processes' CPU during the runs (PostgreSQL's own included): {:.0}%, steal {:.0}%",
            o.other_pct, o.steal_pct
        )?;
    }
    Ok(())
}

/// Appends from `appenders` tasks per auditor for `seconds`; returns the acknowledged count.
async fn hammer(auditors: &[Auditor], appenders: usize, seconds: f64) -> anyhow::Result<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (a, auditor) in auditors.iter().enumerate() {
        for t in 0..appenders {
            let (auditor, stop, done) = (auditor.clone(), stop.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = (a * 1_000_000 + t * 10_000) as u64;
                while !stop.load(Ordering::Relaxed) {
                    auditor.append(sample_event(i)).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                anyhow::Ok(())
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed))
}

fn config() -> AuditorConfig {
    AuditorConfig {
        origin: "bench/audit-pg".into(),
        ..AuditorConfig::default()
    }
}

async fn shared_run(args: &Args) -> anyhow::Result<Run> {
    let schema = TestSchema::new().await;
    let key = SignerKey::generate("bench/audit-pg")?;
    let mut stores = Vec::new();
    let mut auditors = Vec::new();
    for i in 0..args.instances {
        let store = Arc::new(
            PgStore::connect(
                &schema.url,
                PgOptions {
                    max_connections: args.pool,
                    ..PgOptions::default()
                },
            )
            .await?,
        );
        if i == 0 {
            store.migrate().await?;
        }
        let signer = SignerKey::parse(&key.to_private_string())?;
        let auditor = Auditor::start_shared(
            store.clone(),
            signer,
            config(),
            SequencerConfig::new(&format!("bench-{i}")),
        )
        .await?;
        stores.push(store);
        auditors.push(auditor);
    }
    // Probes: an event every 20 ms through the instance that does not hold the lease (the
    // slower path: it waits for the holder's poll), timed from its acknowledgement to the
    // moment a query finds it in the log.
    let probe = auditors[auditors.len() - 1].clone();
    let reader = stores[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let probing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lags = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut event = sample_event(n);
                let id = format!("probe-{n}");
                event.request_id = Some(id.clone());
                // Only entries sequenced after this moment can be the probe's: the query reads
                // from there by the primary key, so its own cost stays constant as the log
                // grows (a lookup by request id alone may scan the log in seq order).
                let size = reader.size().await?;
                probe.append(event).await?;
                let acked = Instant::now();
                let filter = AuditFilter {
                    request_id: Some(id),
                    after_seq: size.checked_sub(1),
                    limit: Some(1),
                    ..AuditFilter::default()
                };
                while reader.query(&filter).await?.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                lags.push(acked.elapsed().as_secs_f64() * 1e3);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(lags)
        })
    };
    let started = Instant::now();
    let done = hammer(&auditors, args.appenders, args.seconds).await?;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let lag_ms = probing.await??;
    for a in &auditors {
        a.shutdown().await?;
    }
    for s in &stores {
        s.close().await;
    }
    schema.drop().await;
    Ok(Run {
        events_per_sec: done as f64 / elapsed,
        lag_ms,
    })
}

async fn sqlite_run(args: &Args) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(wardgate_store::SqliteStore::open(&dir.path().join("b.db")).await?);
    let auditor = Auditor::start(store.clone(), SignerKey::generate("bench/sq")?, config()).await?;
    let started = Instant::now();
    let done = hammer(
        std::slice::from_ref(&auditor),
        args.appenders * args.instances,
        args.seconds,
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    auditor.shutdown().await?;
    store.close().await;
    Ok(Run {
        events_per_sec: done as f64 / elapsed,
        lag_ms: Vec::new(),
    })
}
