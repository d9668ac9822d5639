//! `gateway-load`: what the gateway adds to a request. Starts the release `mock-upstream`
//! (instant replies) and `wardgate serve` in front of it on loopback, then at fixed request
//! rates measures, in the same run, the latency of calling the mock directly (the baseline)
//! and through the gateway, and prints both and their difference and ratio. Then it steps the
//! rate up to find the highest one the gateway holds with under 1 % errors.
//!
//! A benchmark, not a test: it prints figures and a verdict, and never fails a build.

mod load;
mod machine;
mod procs;
mod shared_store;
mod stats;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use hyper::header::HeaderValue;
use serde::Serialize;

use load::{RunResult, RunSpec, Target};
use shared_store::SharedStore;

const BODY: &str = r#"{"model":"bench","messages":[{"role":"user","content":"Hello, how are you?"}],"max_tokens":8}"#;
const PATH: &str = "/v1/chat/completions";

/// Load harness: direct-to-mock vs through-gateway latency at fixed request rates.
#[derive(Parser, Debug)]
#[command(name = "gateway-load")]
struct Args {
    /// Request rates (req/s) at which direct and gateway latency are compared.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u32>,
    /// Recorded seconds per run of the comparison.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of load before each recorded window, not recorded.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// How many times the comparison sweep runs; the report gives medians across repeats.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Rates tried, in order, to find the highest one the gateway holds.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,1500,2000,3000,4000,6000"
    )]
    step_rates: Vec<u32>,
    /// Skip the step-up (the search for the highest rate held).
    #[arg(long)]
    no_step_up: bool,
    /// Recorded seconds per run of the step-up.
    #[arg(long, default_value_t = 3)]
    step_seconds: u64,
    /// Keep-alive HTTP/1.1 connections in the load generator's pool.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// A request not answered this many milliseconds after its scheduled time is an error.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// The rate of the target check.
    #[arg(long, default_value_t = 1000)]
    target_rate: u32,
    /// The target: the added p99 at `--target-rate` must stay under this many milliseconds.
    #[arg(long, default_value_t = 1.0)]
    target_added_p99_ms: f64,
    /// The `mock-upstream` binary (default: beside this one, i.e. target/release/).
    #[arg(long)]
    mock_bin: Option<PathBuf>,
    /// The `wardgate` binary (default: beside this one, i.e. target/release/).
    #[arg(long)]
    wardgate_bin: Option<PathBuf>,
    /// Also measure the scale-out set-up: `--instances` gateways on one PostgreSQL database (a
    /// database of the run's own, created on the `--database-url` server and dropped at the
    /// end) and one Redis, against the same mock, after the SQLite gateway.
    #[arg(long)]
    scale_out: bool,
    /// Gateway instances of the scale-out set-up, behind the one load generator.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// A PostgreSQL server for `--scale-out` (any database on it; the run creates its own).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// The Redis server for `--scale-out` (the run uses a key namespace of its own).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The scale-out target: added p99 at `--target-rate` under this many milliseconds.
    #[arg(long, default_value_t = 2.0)]
    scale_out_target_added_p99_ms: f64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Also measure what recording metrics costs: two SQLite gateways side by side, one with
    /// its metrics listener off and one with it on (scraped every 5 s), at each of `--rates`,
    /// in alternating order each repeat; the cost is the difference of their added p50.
    #[arg(long)]
    metrics_cost: bool,
    /// `audit.durability` of every gateway: `disk` (the default, each audit commit flushed
    /// before the request goes on) or `process` (survives the gateway dying; see the README).
    #[arg(long, default_value = "disk")]
    audit_durability: wardgate_store::AuditDurability,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        let bad_rate = |r: &u32| *r == 0 || *r > 100_000;
        if self.rates.is_empty() || self.rates.iter().any(bad_rate) {
            bail!("--rates: give one or more rates between 1 and 100000 req/s");
        }
        if self.step_rates.is_empty() || self.step_rates.iter().any(bad_rate) {
            bail!("--step-rates: rates must be between 1 and 100000 req/s");
        }
        if !(1..=600).contains(&self.seconds) || !(1..=600).contains(&self.step_seconds) {
            bail!("--seconds and --step-seconds must be between 1 and 600");
        }
        if self.warmup_seconds > 60 {
            bail!("--warmup-seconds must be at most 60");
        }
        if !(1..=50).contains(&self.repeats) {
            bail!("--repeats must be between 1 and 50");
        }
        if !(1..=4096).contains(&self.connections) {
            bail!("--connections must be between 1 and 4096");
        }
        if !(1..=16).contains(&self.instances) {
            bail!("--instances must be between 1 and 16");
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            bail!("--timeout-ms must be between 1 and 60000");
        }
        Ok(())
    }

    fn spec(&self, rate: u32, seconds: u64) -> RunSpec {
        RunSpec {
            rate,
            warmup: Duration::from_secs(self.warmup_seconds),
            measure: Duration::from_secs(seconds),
            connections: self.connections,
            timeout: Duration::from_millis(self.timeout_ms),
        }
    }
}

/// Writes one line of the report to stdout. Output goes through `std::io::Write` because the
/// workspace lints keep `println!` out of the code.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
    };
}

// After `say!`, which it uses.
mod metrics_cost;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    let began = Instant::now();
    let mock_bin = procs::sibling_bin(args.mock_bin.as_deref(), "mock-upstream");
    let wardgate_bin = procs::sibling_bin(args.wardgate_bin.as_deref(), "wardgate");

    // The children live in this scope: returning, `?` and panics all drop (and kill) them.
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let db = dir.path().join("bench.db");
    let (mock, mock_addr) = procs::start_mock(&mock_bin, dir.path())?;
    let body = Bytes::from_static(BODY.as_bytes());
    let direct = Target {
        addrs: vec![mock_addr],
        path: PATH.to_owned(),
        authorization: None,
        body: body.clone(),
    };
    procs::preflight("mock-upstream", mock_addr, PATH, None, body.clone()).await?;

    let sqlite = procs::Store::Sqlite(&db);
    let setup = Setup {
        args: &args,
        wardgate: &wardgate_bin,
        mock: &mock,
        mock_addr,
        direct: &direct,
        dir: dir.path(),
    };
    print_header(&args, mock_addr)?;
    let embedded = setup
        .measure(
            "wardgate, 1 instance, SQLite (embedded default, durable audit), rate limits off",
            &sqlite,
            1,
            &[],
            args.target_added_p99_ms,
        )
        .await?;
    let metrics_cost = if args.metrics_cost {
        Some(setup.metrics_cost().await?)
    } else {
        None
    };
    let scale_out = if args.scale_out {
        let shared = SharedStore::create(
            &wardgate_bin,
            procs::command,
            &args.database_url,
            &args.redis_url,
            dir.path(),
        )
        .await?;
        let measured = setup
            .measure(
                &format!(
                    "wardgate, {} instances, PostgreSQL + Redis (shared durable audit log, \
                     per-key rate limit counted in Redis)",
                    args.instances
                ),
                &procs::Store::Shared(&shared),
                args.instances,
                &["postgres", "redis-server"],
                args.scale_out_target_added_p99_ms,
            )
            .await;
        shared.drop_database().await;
        Some(measured?)
    } else {
        None
    };
    drop(mock);

    print_report(&args, &embedded)?;
    if let Some(s) = &scale_out {
        print_report(&args, s)?;
        print_comparison(&embedded, s)?;
    }
    say!("total time: {:.0} s", began.elapsed().as_secs_f64())?;

    if let Some(path) = &args.json_out {
        let report = JsonReport {
            config: JsonConfig {
                rates: args.rates.clone(),
                seconds: args.seconds,
                warmup_seconds: args.warmup_seconds,
                repeats: args.repeats,
                step_rates: args.step_rates.clone(),
                step_seconds: args.step_seconds,
                connections: args.connections,
                timeout_ms: args.timeout_ms,
                cpus: cpus(),
                gateway_log_level: "warn",
                auth: true,
                body: BODY,
            },
            embedded: &embedded,
            scale_out: scale_out.as_ref(),
            metrics_cost: metrics_cost.as_ref(),
        };
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        say!("figures written to {}", path.display())?;
    }
    Ok(())
}

/// What every measured set-up shares: the mock, its direct baseline and where files go.
struct Setup<'a> {
    args: &'a Args,
    wardgate: &'a Path,
    mock: &'a procs::Child,
    mock_addr: SocketAddr,
    direct: &'a Target,
    dir: &'a Path,
}

/// One gateway set-up, measured against the direct baseline in the same run.
#[derive(Serialize)]
struct SystemReport {
    name: String,
    instances: usize,
    sweep: Vec<RateSummary>,
    step_up: StepUp,
    verdict: Verdict,
    gateway_log_lines: usize,
    /// CPU taken by other processes and the hypervisor during the run (Linux only).
    interference: Option<machine::Interference>,
}

impl Setup<'_> {
    /// Starts `instances` gateways on `store`, runs the sweep and the step-up against them
    /// (the load spread over their connections) and stops them. Processes named in `servers`
    /// (the database and Redis) count as part of the set-up, not as other load.
    async fn measure(
        &self,
        name: &str,
        store: &procs::Store<'_>,
        instances: usize,
        servers: &[&str],
        limit_ms: f64,
    ) -> anyhow::Result<SystemReport> {
        let key = procs::create_key(self.wardgate, store)?;
        let auth =
            HeaderValue::from_str(&format!("Bearer {key}")).context("the key is not ASCII")?;
        let mut gateways = Vec::with_capacity(instances);
        let mut addrs = Vec::with_capacity(instances);
        for _ in 0..instances {
            let addr = procs::free_port()?;
            gateways.push(
                procs::start_gateway(
                    self.wardgate,
                    store,
                    self.args.audit_durability,
                    self.mock_addr,
                    addr,
                    None,
                    self.dir,
                )
                .await?,
            );
            let body = Bytes::from_static(BODY.as_bytes());
            procs::preflight("wardgate", addr, PATH, Some(&auth), body).await?;
            addrs.push(addr);
        }
        let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        say!("")?;
        say!("== {name}")?;
        say!("   at {}", shown.join(", "))?;
        let through = Target {
            addrs,
            path: PATH.to_owned(),
            authorization: Some(auth),
            body: Bytes::from_static(BODY.as_bytes()),
        };
        let mut children: Vec<u32> = gateways.iter().map(procs::Child::id).collect();
        children.push(self.mock.id());
        let before = machine::snapshot(&children, servers);
        let sweep = run_sweep(self.args, self.direct, &through).await?;
        let step_up = run_step_up(self.args, self.direct, &through).await?;
        let interference = before
            .zip(machine::snapshot(&children, servers))
            .and_then(|(b, e)| machine::interference(b, e, cpus()));
        let gateway_log_lines = gateways.iter().map(procs::Child::log_lines).sum();
        drop(gateways);
        let verdict = verdict(self.args, &sweep, limit_ms, interference);
        Ok(SystemReport {
            name: name.to_owned(),
            instances,
            sweep,
            step_up,
            verdict,
            gateway_log_lines,
            interference,
        })
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(0)
}

fn print_header(args: &Args, mock: SocketAddr) -> anyhow::Result<()> {
    say!("gateway-load: POST {PATH}, non-streaming, body {BODY}")?;
    say!("  mock-upstream at {mock} (instant replies); each wardgate set-up in front of it")?;
    say!(
        "  wardgate: auth on (Bearer key, checked per request), audit durability {}, log level \
         warn (at info, the per-request log line would dominate the figures)",
        args.audit_durability.as_str()
    )?;
    say!(
        "  open loop: requests leave on a fixed schedule over {} keep-alive HTTP/1.1 connections; \
         latency runs from the scheduled send time to the last body byte",
        args.connections
    )?;
    say!(
        "  each run: {} s warm-up + {} s recorded; direct then gateway at each rate; {} repeat(s); \
         errors = non-2xx, no answer within {} ms, connection failures",
        args.warmup_seconds,
        args.seconds,
        args.repeats,
        args.timeout_ms
    )?;
    say!(
        "  {} CPU(s), shared by the load generator, the mock, the gateway(s) and (scale-out) \
         PostgreSQL and Redis",
        cpus()
    )?;
    say!("")?;
    Ok(())
}

/// The figures of one run, as reported.
#[derive(Clone, Debug, Serialize)]
struct RunFigures {
    rate: u32,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    scheduled: u64,
    ok: u64,
    bad_status: u64,
    timeouts: u64,
    conn_errors: u64,
    error_pct: f64,
    /// Requests that went onto a connection, per second.
    sent_rate: f64,
    /// p50/p99 from scheduled time until a connection took the request (see `load::RunResult`).
    dispatch_p50_ms: Option<f64>,
    dispatch_p99_ms: Option<f64>,
    scheduler_max_lag_ms: f64,
    /// The scheduler itself fell more than 10 % of the window behind: the rate was not offered.
    generator_behind: bool,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn figures(rate: u32, measure: Duration, r: &RunResult) -> RunFigures {
    RunFigures {
        rate,
        p50_ms: stats::percentile(&r.latencies_ns, 50.0).map(ms),
        p99_ms: stats::percentile(&r.latencies_ns, 99.0).map(ms),
        max_ms: r.latencies_ns.last().copied().map(ms),
        scheduled: r.scheduled,
        ok: r.ok,
        bad_status: r.bad_status,
        timeouts: r.timeouts,
        conn_errors: r.conn_errors,
        error_pct: r.error_pct(),
        sent_rate: r.sent_rate,
        dispatch_p50_ms: stats::percentile(&r.dispatch_ns, 50.0).map(ms),
        dispatch_p99_ms: stats::percentile(&r.dispatch_ns, 99.0).map(ms),
        scheduler_max_lag_ms: r.scheduler_max_lag.as_secs_f64() * 1e3,
        generator_behind: r.scheduler_final_lag > measure / 10,
    }
}

/// One repeat at one rate: the baseline and the gateway, back to back.
#[derive(Clone, Debug, Serialize)]
struct Pair {
    direct: RunFigures,
    gateway: RunFigures,
    added_p50_ms: Option<f64>,
    added_p99_ms: Option<f64>,
    ratio_p50: Option<f64>,
    ratio_p99: Option<f64>,
}

impl Pair {
    fn new(direct: RunFigures, gateway: RunFigures) -> Self {
        let diff = |g: Option<f64>, d: Option<f64>| Some(g? - d?);
        let ratio = |g: Option<f64>, d: Option<f64>| {
            let d = d?;
            (d > 0.0).then(|| g.map(|g| g / d)).flatten()
        };
        Self {
            added_p50_ms: diff(gateway.p50_ms, direct.p50_ms),
            added_p99_ms: diff(gateway.p99_ms, direct.p99_ms),
            ratio_p50: ratio(gateway.p50_ms, direct.p50_ms),
            ratio_p99: ratio(gateway.p99_ms, direct.p99_ms),
            direct,
            gateway,
        }
    }
}

/// One rate of the comparison: medians across repeats, and every repeat.
#[derive(Clone, Debug, Serialize)]
struct RateSummary {
    rate: u32,
    direct_p50_ms: Option<f64>,
    direct_p99_ms: Option<f64>,
    gateway_p50_ms: Option<f64>,
    gateway_p99_ms: Option<f64>,
    /// Median across repeats of (gateway − direct) within the same repeat.
    added_p50_ms: Option<f64>,
    added_p99_ms: Option<f64>,
    /// The smallest and largest added p99 of a single repeat: how much to trust the median.
    added_p99_range_ms: Option<(f64, f64)>,
    ratio_p50: Option<f64>,
    ratio_p99: Option<f64>,
    /// All errors over all repeats, as a percentage of all requests scheduled.
    direct_error_pct: f64,
    gateway_error_pct: f64,
    direct_sent_rate: Option<f64>,
    gateway_sent_rate: Option<f64>,
    /// Median p99 of the load generator's dispatch delay (scheduled → on a connection).
    direct_dispatch_p99_ms: Option<f64>,
    gateway_dispatch_p99_ms: Option<f64>,
    generator_behind: bool,
    repeats: Vec<Pair>,
}

fn summarise_rate(rate: u32, repeats: Vec<Pair>) -> RateSummary {
    let med = |f: &dyn Fn(&Pair) -> Option<f64>| {
        let v: Vec<f64> = repeats.iter().filter_map(f).collect();
        stats::median(&v)
    };
    let err_pct = |f: &dyn Fn(&Pair) -> &RunFigures| {
        let (errs, sched) = repeats.iter().map(f).fold((0u64, 0u64), |(e, s), r| {
            (
                e + r.bad_status + r.timeouts + r.conn_errors,
                s + r.scheduled,
            )
        });
        if sched == 0 {
            0.0
        } else {
            100.0 * errs as f64 / sched as f64
        }
    };
    RateSummary {
        rate,
        direct_p50_ms: med(&|p| p.direct.p50_ms),
        direct_p99_ms: med(&|p| p.direct.p99_ms),
        gateway_p50_ms: med(&|p| p.gateway.p50_ms),
        gateway_p99_ms: med(&|p| p.gateway.p99_ms),
        added_p50_ms: med(&|p| p.added_p50_ms),
        added_p99_ms: med(&|p| p.added_p99_ms),
        added_p99_range_ms: repeats.iter().filter_map(|p| p.added_p99_ms).fold(
            None,
            |acc: Option<(f64, f64)>, v| {
                Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            },
        ),
        ratio_p50: med(&|p| p.ratio_p50),
        ratio_p99: med(&|p| p.ratio_p99),
        direct_error_pct: err_pct(&|p| &p.direct),
        gateway_error_pct: err_pct(&|p| &p.gateway),
        direct_sent_rate: med(&|p| Some(p.direct.sent_rate)),
        gateway_sent_rate: med(&|p| Some(p.gateway.sent_rate)),
        direct_dispatch_p99_ms: med(&|p| p.direct.dispatch_p99_ms),
        gateway_dispatch_p99_ms: med(&|p| p.gateway.dispatch_p99_ms),
        generator_behind: repeats
            .iter()
            .any(|p| p.direct.generator_behind || p.gateway.generator_behind),
        repeats,
    }
}

async fn run_sweep(
    args: &Args,
    direct: &Target,
    through: &Target,
) -> anyhow::Result<Vec<RateSummary>> {
    let mut per_rate: Vec<Vec<Pair>> = vec![Vec::new(); args.rates.len()];
    for repeat in 1..=args.repeats {
        for (i, &rate) in args.rates.iter().enumerate() {
            let spec = args.spec(rate, args.seconds);
            // Back to back at the same rate, so both see the same machine state.
            let d = figures(rate, spec.measure, &load::run(direct, spec).await?);
            let g = figures(rate, spec.measure, &load::run(through, spec).await?);
            say!(
                "repeat {repeat}/{}  {rate:>5} req/s   direct p50 {} p99 {}   gateway p50 {} p99 {}   errors {:.2}% / {:.2}%   dispatch p99 {} / {}",
                args.repeats,
                fmt_ms(d.p50_ms),
                fmt_ms(d.p99_ms),
                fmt_ms(g.p50_ms),
                fmt_ms(g.p99_ms),
                d.error_pct,
                g.error_pct,
                fmt_ms(d.dispatch_p99_ms),
                fmt_ms(g.dispatch_p99_ms)
            )?;
            if let Some(slot) = per_rate.get_mut(i) {
                slot.push(Pair::new(d, g));
            }
        }
    }
    Ok(args
        .rates
        .iter()
        .zip(per_rate)
        .map(|(&rate, pairs)| summarise_rate(rate, pairs))
        .collect())
}

/// Whether a run held its rate, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Held {
    Yes,
    /// 1 % or more errors.
    Errors,
    /// Requests waited for a free connection: fewer than 90 % of the rate went out.
    Queued,
    /// The load generator's scheduler could not issue the rate: not a verdict on the server.
    GeneratorBehind,
}

fn held(rate: u32, f: &RunFigures) -> Held {
    if f.generator_behind {
        Held::GeneratorBehind
    } else if f.error_pct >= 1.0 {
        Held::Errors
    } else if f.sent_rate < 0.9 * f64::from(rate) {
        Held::Queued
    } else {
        Held::Yes
    }
}

#[derive(Clone, Debug, Serialize)]
struct Step {
    rate: u32,
    direct: RunFigures,
    direct_held: Held,
    gateway: RunFigures,
    gateway_held: Held,
}

#[derive(Clone, Debug, Serialize)]
struct StepUp {
    steps: Vec<Step>,
    /// The highest rate the gateway held, if any.
    highest_held: Option<u32>,
    /// Why the step-up stopped, in words.
    conclusion: String,
}

async fn run_step_up(args: &Args, direct: &Target, through: &Target) -> anyhow::Result<StepUp> {
    let mut steps = Vec::new();
    let mut highest_held = None;
    if args.no_step_up {
        return Ok(StepUp {
            steps,
            highest_held: None,
            conclusion: "not measured (--no-step-up)".to_owned(),
        });
    }
    let mut conclusion = String::new();
    say!("")?;
    say!(
        "step-up: {} s warm-up + {} s recorded per rate, direct then gateway",
        args.warmup_seconds,
        args.step_seconds
    )?;
    for (i, &rate) in args.step_rates.iter().enumerate() {
        let spec = args.spec(rate, args.step_seconds);
        let d = figures(rate, spec.measure, &load::run(direct, spec).await?);
        let g = figures(rate, spec.measure, &load::run(through, spec).await?);
        let (dh, gh) = (held(rate, &d), held(rate, &g));
        say!(
            "  {rate:>5} req/s   direct: {:<16} (err {:.2}%, sent {:.0}/s, p99 {})   gateway: {:<16} (err {:.2}%, sent {:.0}/s, p99 {})",
            held_word(dh),
            d.error_pct,
            d.sent_rate,
            fmt_ms(d.p99_ms),
            held_word(gh),
            g.error_pct,
            g.sent_rate,
            fmt_ms(g.p99_ms)
        )?;
        steps.push(Step {
            rate,
            direct: d,
            direct_held: dh,
            gateway: g,
            gateway_held: gh,
        });
        if gh == Held::Yes {
            highest_held = Some(rate);
            conclusion = if i + 1 == args.step_rates.len() {
                format!("held every rate tried, up to {rate} req/s; the limit is higher")
            } else {
                String::new()
            };
            continue;
        }
        let baseline = if dh == Held::Yes {
            "the direct baseline held it, so the limit is the gateway's".to_owned()
        } else {
            format!(
                "the direct baseline did not hold it either ({}), so this is the limit of the \
                 load generator and mock on this machine, not only the gateway's",
                held_word(dh)
            )
        };
        conclusion = match gh {
            Held::GeneratorBehind => format!(
                "{rate} req/s not reached: the load generator fell more than 10 % behind \
                 schedule; {baseline}"
            ),
            Held::Errors => format!(
                "failed at {rate} req/s: {:.2} % errors; {baseline}",
                steps.last().map_or(0.0, |s| s.gateway.error_pct)
            ),
            Held::Queued => format!(
                "failed at {rate} req/s: only {:.0} req/s went out, the rest queued for a \
                 connection; {baseline}",
                steps.last().map_or(0.0, |s| s.gateway.sent_rate)
            ),
            Held::Yes => String::new(),
        };
        break;
    }
    Ok(StepUp {
        steps,
        highest_held,
        conclusion,
    })
}

fn held_word(h: Held) -> &'static str {
    match h {
        Held::Yes => "held",
        Held::Errors => "errors >= 1%",
        Held::Queued => "queued (< 90%)",
        Held::GeneratorBehind => "generator behind",
    }
}

#[derive(Clone, Debug, Serialize)]
struct Verdict {
    rate: u32,
    limit_ms: f64,
    added_p99_ms: Option<f64>,
    pass: Option<bool>,
    line: String,
}

/// Other load (in % of the CPUs) from which on the figures are called distorted.
const BUSY_PCT: f64 = 5.0;

fn busy(interference: Option<machine::Interference>) -> bool {
    interference.is_some_and(|i| i.other_pct + i.steal_pct >= BUSY_PCT)
}

fn verdict(
    args: &Args,
    sweep: &[RateSummary],
    limit_ms: f64,
    interference: Option<machine::Interference>,
) -> Verdict {
    let at = sweep.iter().find(|s| s.rate == args.target_rate);
    let added = at.and_then(|s| s.added_p99_ms);
    let clean = at.is_some_and(|s| s.gateway_error_pct < 1.0);
    let pass = added.map(|a| a < limit_ms && clean);
    let head = format!("added p99 < {limit_ms} ms at {} req/s", args.target_rate);
    let each: Vec<String> = at
        .map(|s| {
            s.repeats
                .iter()
                .map(|p| fmt_signed(p.added_p99_ms))
                .collect()
        })
        .unwrap_or_default();
    let each = each.join(", ");
    let mut line = match (pass, added) {
        (Some(true), Some(a)) => {
            format!("{head}: PASS ({a:.3} ms, median of repeats {each})")
        }
        (Some(false), Some(a)) if !clean => format!(
            "{head}: FAIL ({a:.3} ms, median of repeats {each}; but 1 % or more of requests failed)"
        ),
        (Some(false), Some(a)) => format!("{head}: FAIL ({a:.3} ms, median of repeats {each})"),
        _ => format!("{head}: NOT MEASURED (add {} to --rates)", args.target_rate),
    };
    if busy(interference) {
        line.push_str(" [machine busy with other work during the run: not a valid result]");
    }
    Verdict {
        rate: args.target_rate,
        limit_ms,
        added_p99_ms: added,
        pass,
        line,
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn fmt_signed(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:+.3}"))
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"))
}

fn print_report(args: &Args, system: &SystemReport) -> anyhow::Result<()> {
    let SystemReport {
        sweep,
        step_up: step,
        verdict,
        gateway_log_lines,
        interference,
        ..
    } = system;
    let (gateway_log_lines, interference) = (*gateway_log_lines, *interference);
    say!("")?;
    say!("== {}", system.name)?;
    say!(
        "latency in ms, medians of {} repeat(s); added and ratio are gateway vs direct within \
         each repeat, then the median; the range is the lowest and highest single repeat",
        args.repeats
    )?;
    say!(
        "dispatch = scheduled time until a connection took the request: the load generator's own \
         delay (plus any wait for a free connection), included in every latency"
    )?;
    say!(
        "{:>6} | {:>15} | {:>15} | {:>17} | {:>17} | {:>13} | {:>15} | {:>13} | {:>15}",
        "req/s",
        "direct p50/p99",
        "gateway p50/p99",
        "added p50/p99",
        "added p99 range",
        "ratio p50/p99",
        "errors d / gw",
        "sent/s d / gw",
        "dispatch p99 d/gw"
    )?;
    for s in sweep {
        say!(
            "{:>6} | {:>15} | {:>15} | {:>17} | {:>17} | {:>13} | {:>15} | {:>13} | {:>17}{}",
            s.rate,
            format!("{} / {}", fmt_ms(s.direct_p50_ms), fmt_ms(s.direct_p99_ms)),
            format!(
                "{} / {}",
                fmt_ms(s.gateway_p50_ms),
                fmt_ms(s.gateway_p99_ms)
            ),
            format!(
                "{} / {}",
                fmt_signed(s.added_p50_ms),
                fmt_signed(s.added_p99_ms)
            ),
            s.added_p99_range_ms.map_or_else(
                || "-".to_owned(),
                |(lo, hi)| format!("{lo:+.3} .. {hi:+.3}")
            ),
            format!("{} / {}", fmt_ratio(s.ratio_p50), fmt_ratio(s.ratio_p99)),
            format!("{:.2}% / {:.2}%", s.direct_error_pct, s.gateway_error_pct),
            format!(
                "{:.0} / {:.0}",
                s.direct_sent_rate.unwrap_or(0.0),
                s.gateway_sent_rate.unwrap_or(0.0)
            ),
            format!(
                "{} / {}",
                fmt_ms(s.direct_dispatch_p99_ms),
                fmt_ms(s.gateway_dispatch_p99_ms)
            ),
            if s.generator_behind {
                "  (load generator fell behind: rate not offered)"
            } else {
                ""
            }
        )?;
    }
    say!("")?;
    match step.highest_held {
        Some(rate) => say!(
            "highest rate held through the gateway (< 1% errors): {rate} req/s{}",
            if step.conclusion.is_empty() {
                String::new()
            } else {
                format!("; {}", step.conclusion)
            }
        )?,
        None if args.no_step_up => say!("highest rate held: not measured (--no-step-up)")?,
        None => say!(
            "highest rate held through the gateway (< 1% errors): none of the rates tried; {}",
            step.conclusion
        )?,
    }
    if let Some(i) = interference {
        let warn = if busy(Some(i)) {
            " -- the machine was not idle: these figures are distorted, run again on an idle machine"
        } else {
            ""
        };
        say!(
            "other load during the run: {:.1}% of the CPUs in other processes, {:.1}% stolen by \
             the hypervisor{warn}",
            i.other_pct,
            i.steal_pct
        )?;
    }
    if gateway_log_lines > 0 {
        say!("note: the gateway wrote {gateway_log_lines} line(s) at warn level or above")?;
    }
    say!("{}", verdict.line)?;
    Ok(())
}

#[derive(Serialize)]
struct JsonConfig {
    rates: Vec<u32>,
    seconds: u64,
    warmup_seconds: u64,
    repeats: usize,
    step_rates: Vec<u32>,
    step_seconds: u64,
    connections: usize,
    timeout_ms: u64,
    cpus: usize,
    gateway_log_level: &'static str,
    auth: bool,
    body: &'static str,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    config: JsonConfig,
    /// One SQLite gateway.
    embedded: &'a SystemReport,
    /// `--scale-out`: the instances on PostgreSQL and Redis.
    scale_out: Option<&'a SystemReport>,
    /// `--metrics-cost`: metrics off vs on.
    metrics_cost: Option<&'a metrics_cost::MetricsCost>,
}

/// The two set-ups side by side: what each adds over the direct baseline of its own runs.
fn print_comparison(embedded: &SystemReport, scale_out: &SystemReport) -> anyhow::Result<()> {
    say!("")?;
    say!(
        "== added latency (ms, median of repeats, each vs the direct baseline of its own runs): \
         SQLite x1 vs PostgreSQL + Redis x{}",
        scale_out.instances
    )?;
    say!(
        "{:>6} | {:>19} | {:>19} | {:>15}",
        "req/s",
        "SQLite p50/p99",
        "scale-out p50/p99",
        "errors S / so"
    )?;
    for s in &embedded.sweep {
        let Some(o) = scale_out.sweep.iter().find(|o| o.rate == s.rate) else {
            continue;
        };
        say!(
            "{:>6} | {:>19} | {:>19} | {:>15}",
            s.rate,
            format!(
                "{} / {}",
                fmt_signed(s.added_p50_ms),
                fmt_signed(s.added_p99_ms)
            ),
            format!(
                "{} / {}",
                fmt_signed(o.added_p50_ms),
                fmt_signed(o.added_p99_ms)
            ),
            format!("{:.2}% / {:.2}%", s.gateway_error_pct, o.gateway_error_pct)
        )?;
    }
    let held = |s: &SystemReport| {
        s.step_up
            .highest_held
            .map_or_else(|| "none tried".to_owned(), |r| format!("{r} req/s"))
    };
    say!(
        "highest rate held (< 1% errors): SQLite x1 {}, scale-out x{} {}",
        held(embedded),
        scale_out.instances,
        held(scale_out)
    )?;
    Ok(())
}
