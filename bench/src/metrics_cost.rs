//! `--metrics-cost`: what recording metrics costs a request (issue 18: metrics on vs off
//! changes the added p50 at 1,000 req/s by less than 20 µs). Two SQLite gateways run side by
//! side in front of the same mock, one with its metrics listener off (nothing is recorded)
//! and one with it on and scraped every 5 s, as a Prometheus would (its default is 15 s); at
//! each rate the direct baseline and both gateways run back to back, the two gateways in
//! alternating order each repeat so that neither always follows the other. The cost of a
//! repeat is the difference of the two added p50s; the figure is the median over repeats.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::header::HeaderValue;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Args, BODY, PATH, Setup, figures, fmt_ms, load, procs, stats};

/// The bound the issue sets on the cost at 1,000 req/s, in microseconds of added p50.
pub const LIMIT_US: f64 = 20.0;
/// How often the gateway with metrics on is scraped during the runs.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);

/// The cost at one rate.
#[derive(Debug, Serialize)]
pub struct CostAtRate {
    rate: u32,
    /// Median added p50 (gateway minus direct), ms, with metrics off and on.
    added_p50_off_ms: Option<f64>,
    added_p50_on_ms: Option<f64>,
    added_p99_off_ms: Option<f64>,
    added_p99_on_ms: Option<f64>,
    /// Median over repeats of (on − off) added p50, µs: the cost.
    cost_p50_us: Option<f64>,
    /// Each repeat's cost, µs.
    repeat_costs_us: Vec<f64>,
}

/// The whole measurement.
#[derive(Debug, Serialize)]
pub struct MetricsCost {
    pub rates: Vec<CostAtRate>,
    pub scrapes: u64,
    pub verdict: String,
}

/// One gateway of the comparison, running until dropped.
struct Gateway {
    _child: procs::Child,
    target: load::Target,
}

impl Setup<'_> {
    async fn gateway(&self, db: &Path, metrics: Option<SocketAddr>) -> anyhow::Result<Gateway> {
        let store = procs::Store::Sqlite(db);
        let key = procs::create_key(self.wardgate, &store)?;
        let auth =
            HeaderValue::from_str(&format!("Bearer {key}")).context("the key is not ASCII")?;
        let addr = procs::free_port()?;
        let child = procs::start_gateway(
            self.wardgate,
            &store,
            self.args.audit_durability,
            self.mock_addr,
            addr,
            metrics,
            self.dir,
        )
        .await?;
        let body = Bytes::from_static(BODY.as_bytes());
        procs::preflight("wardgate", addr, PATH, Some(&auth), body.clone()).await?;
        Ok(Gateway {
            _child: child,
            target: load::Target {
                addrs: vec![addr],
                path: PATH.to_owned(),
                authorization: Some(auth),
                body,
            },
        })
    }

    /// Runs the comparison (see the module comment).
    pub async fn metrics_cost(&self) -> anyhow::Result<MetricsCost> {
        let args: &Args = self.args;
        let off = self.gateway(&self.dir.join("metrics-off.db"), None).await?;
        let metrics = procs::free_port()?;
        let on = self
            .gateway(&self.dir.join("metrics-on.db"), Some(metrics))
            .await?;
        // The listener is there and serves the catalogue before anything is measured.
        let first = scrape(metrics).await?;
        anyhow::ensure!(
            first.contains("wardgate_requests_total"),
            "the metrics listener at {metrics} does not serve the request metrics"
        );
        say!("")?;
        say!(
            "== metrics cost: wardgate with metrics off vs on (scraped every 5 s), SQLite, same mock"
        )?;
        let scraper = tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(SCRAPE_EVERY);
            loop {
                tick.tick().await;
                if scrape(metrics).await.is_ok() {
                    n += 1;
                }
                SCRAPES.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut per_rate: Vec<Vec<[Option<f64>; 4]>> = vec![Vec::new(); args.rates.len()];
        for repeat in 1..=args.repeats {
            for (i, &rate) in args.rates.iter().enumerate() {
                let spec = args.spec(rate, args.seconds);
                let d = figures(rate, spec.measure, &load::run(self.direct, spec).await?);
                let (first, second) = if repeat % 2 == 1 {
                    (&off.target, &on.target)
                } else {
                    (&on.target, &off.target)
                };
                let a = figures(rate, spec.measure, &load::run(first, spec).await?);
                let b = figures(rate, spec.measure, &load::run(second, spec).await?);
                let (f_off, f_on) = if repeat % 2 == 1 { (a, b) } else { (b, a) };
                let added = |g: Option<f64>, base: Option<f64>| Some(g? - base?);
                let row = [
                    added(f_off.p50_ms, d.p50_ms),
                    added(f_on.p50_ms, d.p50_ms),
                    added(f_off.p99_ms, d.p99_ms),
                    added(f_on.p99_ms, d.p99_ms),
                ];
                say!(
                    "repeat {repeat}/{}  {rate:>5} req/s   direct p50 {}   added p50 off {} on {}   added p99 off {} on {}   errors {:.2}% / {:.2}%",
                    args.repeats,
                    fmt_ms(d.p50_ms),
                    fmt_ms(row[0]),
                    fmt_ms(row[1]),
                    fmt_ms(row[2]),
                    fmt_ms(row[3]),
                    f_off.error_pct,
                    f_on.error_pct,
                )?;
                if let Some(slot) = per_rate.get_mut(i) {
                    slot.push(row);
                }
            }
        }
        scraper.abort();
        let scrapes = SCRAPES.load(std::sync::atomic::Ordering::Relaxed);
        let rates: Vec<CostAtRate> = args
            .rates
            .iter()
            .zip(per_rate)
            .map(|(&rate, rows)| {
                let med = |k: usize| {
                    let v: Vec<f64> = rows.iter().filter_map(|r| r[k]).collect();
                    stats::median(&v)
                };
                let repeat_costs_us: Vec<f64> = rows
                    .iter()
                    .filter_map(|r| Some((r[1]? - r[0]?) * 1000.0))
                    .collect();
                CostAtRate {
                    rate,
                    added_p50_off_ms: med(0),
                    added_p50_on_ms: med(1),
                    added_p99_off_ms: med(2),
                    added_p99_on_ms: med(3),
                    cost_p50_us: stats::median(&repeat_costs_us),
                    repeat_costs_us,
                }
            })
            .collect();
        let verdict = match rates.iter().find(|r| r.rate == args.target_rate) {
            Some(CostAtRate {
                cost_p50_us: Some(c),
                ..
            }) => format!(
                "metrics cost at {} req/s: {c:+.1} µs on the added p50 (median of {} repeats) — target < {LIMIT_US} µs: {}",
                args.target_rate,
                args.repeats,
                if *c < LIMIT_US { "MET" } else { "NOT MET" }
            ),
            _ => format!(
                "metrics cost: NOT MEASURED (add {} to --rates)",
                args.target_rate
            ),
        };
        for r in &rates {
            say!(
                "  {:>5} req/s: added p50 off {} ms, on {} ms; cost {} µs (repeats: {})",
                r.rate,
                fmt_ms(r.added_p50_off_ms),
                fmt_ms(r.added_p50_on_ms),
                r.cost_p50_us
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:+.1}")),
                r.repeat_costs_us
                    .iter()
                    .map(|c| format!("{c:+.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        say!("  {verdict}  ({scrapes} scrapes during the runs)")?;
        Ok(MetricsCost {
            rates,
            scrapes,
            verdict,
        })
    }
}

static SCRAPES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One scrape of `/metrics` at `addr`: the body, over a plain HTTP/1.0 exchange.
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach the metrics listener at {addr}"))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
        .await
        .context("the scrape took over 5 s")??;
    let text = String::from_utf8_lossy(&out).into_owned();
    anyhow::ensure!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "the scrape was refused: {}",
        text.lines().next().unwrap_or("")
    );
    Ok(text)
}
