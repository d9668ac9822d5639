//! The open-loop load generator: requests leave on a fixed schedule whatever the server does,
//! over a fixed pool of keep-alive HTTP/1.1 connections, and each latency is measured from the
//! time the request was *scheduled*, not from when a connection happened to be free. A closed
//! loop (send, wait, send) slows down with the server and hides its stalls — the "coordinated
//! omission" that makes a saturated server look fast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Where requests go and what they carry. With several addresses (instances behind one load
/// generator), the connections are spread over them in turn and each takes the next request
/// when it is free, as a least-connections balancer would.
#[derive(Clone, Debug)]
pub struct Target {
    pub addrs: Vec<SocketAddr>,
    pub path: String,
    pub authorization: Option<HeaderValue>,
    pub body: Bytes,
}

impl Target {
    fn request(&self, addr: SocketAddr) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// One constant-rate run.
#[derive(Clone, Copy, Debug)]
pub struct RunSpec {
    /// Requests per second.
    pub rate: u32,
    /// Load at the same rate before measuring, not recorded.
    pub warmup: Duration,
    /// The recorded window.
    pub measure: Duration,
    /// Keep-alive connections in the pool.
    pub connections: usize,
    /// A request not answered this long after its scheduled time counts as an error.
    pub timeout: Duration,
}

/// What one run measured, over the recorded window only.
#[derive(Debug)]
pub struct RunResult {
    /// Requests scheduled in the window.
    pub scheduled: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers.
    pub bad_status: u64,
    /// Not answered within the timeout of their scheduled time.
    pub timeouts: u64,
    /// Connect, write or read failures.
    pub conn_errors: u64,
    /// Latencies of the 2xx answers, from scheduled time to the last body byte, sorted, in ns.
    pub latencies_ns: Vec<u64>,
    /// Requests that went onto a connection, per second of the window.
    pub sent_rate: f64,
    /// From scheduled time to a connection picking the request up (scheduler wake-up, hand-over
    /// and any wait for a free connection), sorted, in ns: the load generator's own share of the
    /// latencies, and the part of it that waits on a busy server.
    pub dispatch_ns: Vec<u64>,
    /// How late the scheduler thread was when it handed over its last request.
    pub scheduler_final_lag: Duration,
    /// The worst lateness of the scheduler thread over the window.
    pub scheduler_max_lag: Duration,
}

impl RunResult {
    pub fn errors(&self) -> u64 {
        self.bad_status + self.timeouts + self.conn_errors
    }

    /// Errors as a percentage of the requests scheduled in the window.
    pub fn error_pct(&self) -> f64 {
        if self.scheduled == 0 {
            return 0.0;
        }
        100.0 * self.errors() as f64 / self.scheduled as f64
    }
}

#[derive(Clone, Copy, Debug)]
struct Job {
    scheduled: Instant,
    measured: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    BadStatus,
    Timeout,
    ConnError,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    scheduled: Instant,
    /// When a connection picked the request up; `None` if it was already past its deadline.
    picked: Option<Instant>,
    done: Instant,
    outcome: Outcome,
}

#[derive(Clone, Copy, Debug)]
struct SchedulerReport {
    final_lag: Duration,
    max_lag: Duration,
}

type Sender = SendRequest<Full<Bytes>>;

/// Opens one keep-alive HTTP/1.1 connection.
async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    // Small requests and answers: without this, Nagle's algorithm adds delay to both sides.
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends when `sender` is dropped and the connection is idle.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request over a fresh connection and returns status and body; for probes.
pub async fn one_shot(
    addr: SocketAddr,
    method: Method,
    path: &str,
    authorization: Option<&HeaderValue>,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect(addr).await?;
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json");
    if let Some(auth) = authorization {
        builder = builder.header(AUTHORIZATION, auth.clone());
    }
    sender.ready().await?;
    let response = sender.send_request(builder.body(Full::new(body))?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Runs one constant-rate load against `target` and returns what the recorded window saw.
/// Takes at most `warmup + measure + timeout` plus connection setup.
pub async fn run(target: &Target, spec: RunSpec) -> anyhow::Result<RunResult> {
    anyhow::ensure!(spec.rate > 0, "the rate must be positive");
    anyhow::ensure!(!target.addrs.is_empty(), "the target has no address");
    // Connect the whole pool before the clock starts, so connection setup is not measured.
    let mut senders = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        let addr = target.addrs[i % target.addrs.len()];
        senders.push((addr, connect(addr).await?));
    }

    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Job>();
    // One queue, many connections: whichever connection is free takes the next request.
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let target = Arc::new(target.clone());
    let workers: Vec<_> = senders
        .into_iter()
        .map(|(addr, s)| {
            tokio::spawn(worker(
                Arc::clone(&target),
                addr,
                Arc::clone(&jobs_rx),
                s,
                spec.timeout,
            ))
        })
        .collect();

    let start = Instant::now() + Duration::from_millis(20);
    let window_start = start + spec.warmup;
    let (report_tx, report_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("scheduler".to_owned())
        .spawn(move || {
            let report = schedule(&jobs_tx, start, spec);
            let _ = report_tx.send(report);
            // `jobs_tx` is dropped here: the workers drain the queue and stop.
        })
        .context("cannot start the scheduler thread")?;

    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.context("a load worker failed")?);
    }
    let sched = report_rx
        .await
        .context("the scheduler thread stopped without a report")?;
    Ok(summarise(&samples, window_start, spec.measure, sched))
}

/// The scheduler: a plain thread, because the async timer has millisecond granularity and the
/// gaps here are 150–2000 µs; `std::thread::sleep` is accurate to tens of microseconds on Linux.
/// It sleeps (never spins) so it takes no core away from the servers being measured.
fn schedule(jobs: &mpsc::UnboundedSender<Job>, start: Instant, spec: RunSpec) -> SchedulerReport {
    let rate = u128::from(spec.rate);
    let count = |d: Duration| -> u64 { (d.as_nanos() * rate / 1_000_000_000) as u64 };
    let warm = count(spec.warmup);
    let total = warm + count(spec.measure);
    let mut max_lag = Duration::ZERO;
    let mut last = start;
    for i in 0..total {
        let at = start + Duration::from_nanos((u128::from(i) * 1_000_000_000 / rate) as u64);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let measured = i >= warm;
        if jobs
            .send(Job {
                scheduled: at,
                measured,
            })
            .is_err()
        {
            break;
        }
        if measured {
            max_lag = max_lag.max(Instant::now().saturating_duration_since(at));
        }
        last = at;
    }
    SchedulerReport {
        final_lag: Instant::now().saturating_duration_since(last),
        max_lag,
    }
}

async fn worker(
    target: Arc<Target>,
    addr: SocketAddr,
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    sender: Sender,
    timeout: Duration,
) -> Vec<Sample> {
    let mut conn = Some(sender);
    let mut samples = Vec::new();
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { break };
        let deadline = job.scheduled + timeout;
        let picked = Instant::now();
        let (picked, outcome) = if picked >= deadline {
            // Queued past its deadline: counted as a timeout and not sent, so a saturated
            // server is not buried further.
            (None, Outcome::Timeout)
        } else {
            let sent =
                tokio::time::timeout_at(deadline.into(), send(&target, addr, &mut conn)).await;
            let outcome = match sent {
                Ok(Ok(status)) if status.is_success() => Outcome::Ok,
                Ok(Ok(_)) => Outcome::BadStatus,
                Ok(Err(_)) => Outcome::ConnError,
                Err(_) => Outcome::Timeout,
            };
            (Some(picked), outcome)
        };
        if job.measured {
            samples.push(Sample {
                scheduled: job.scheduled,
                picked,
                done: Instant::now(),
                outcome,
            });
        }
    }
    samples
}

/// Sends one request on the worker's connection, reconnecting if it is gone. On any failure
/// (or a timeout, which drops this future) the connection is not put back, so the next request
/// opens a fresh one rather than reading a stale answer.
async fn send(
    target: &Target,
    addr: SocketAddr,
    conn: &mut Option<Sender>,
) -> anyhow::Result<StatusCode> {
    let mut sender = match conn.take() {
        Some(s) if !s.is_closed() => s,
        _ => connect(addr).await?,
    };
    sender.ready().await?;
    let response = sender.send_request(target.request(addr)?).await?;
    let status = response.status();
    response.into_body().collect().await?;
    *conn = Some(sender);
    Ok(status)
}

fn summarise(
    samples: &[Sample],
    window_start: Instant,
    measure: Duration,
    sched: SchedulerReport,
) -> RunResult {
    let mut result = RunResult {
        scheduled: samples.len() as u64,
        ok: 0,
        bad_status: 0,
        timeouts: 0,
        conn_errors: 0,
        latencies_ns: Vec::with_capacity(samples.len()),
        sent_rate: 0.0,
        dispatch_ns: Vec::with_capacity(samples.len()),
        scheduler_final_lag: sched.final_lag,
        scheduler_max_lag: sched.max_lag,
    };
    let mut sent = 0u64;
    let mut last_sent = window_start;
    for s in samples {
        match s.outcome {
            Outcome::Ok => {
                result.ok += 1;
                let ns = s.done.saturating_duration_since(s.scheduled).as_nanos();
                result
                    .latencies_ns
                    .push(u64::try_from(ns).unwrap_or(u64::MAX));
            }
            Outcome::BadStatus => result.bad_status += 1,
            Outcome::Timeout => result.timeouts += 1,
            Outcome::ConnError => result.conn_errors += 1,
        }
        if let Some(p) = s.picked {
            let ns = p.saturating_duration_since(s.scheduled).as_nanos();
            result
                .dispatch_ns
                .push(u64::try_from(ns).unwrap_or(u64::MAX));
            sent += 1;
            last_sent = last_sent.max(p);
        }
    }
    result.latencies_ns.sort_unstable();
    result.dispatch_ns.sort_unstable();
    // If requests went out on time, the last one left just before the window closed and this
    // is the target rate; if they queued for a connection, the span stretches and it drops.
    let span = measure.max(last_sent.saturating_duration_since(window_start));
    result.sent_rate = sent as f64 / span.as_secs_f64();
    result
}
