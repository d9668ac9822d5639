//! memory-bench: the peak memory one request body costs `wardgate serve`.
//!
//! Starts the `mock-upstream` and `wardgate serve` beside this binary (debug or release; as
//! `gateway-load` does), then for each body shape (up to the 4 MiB body limit) resets the
//! gateway's peak RSS (`VmHWM`, via `/proc/PID/clear_refs`), sends the body, and reads how far
//! the peak rose over the RSS before. The baseline, measured in the same run, is a body that is
//! one long string (in a field the gateway skips); each shape prints its JSON value count, the
//! status, its rise, the rise per body byte and the ratio to the baseline. Then 16 bodies of
//! the forwarded nested shape at once (peak RSS in all), and the RSS 3 s after them (is the
//! memory returned?).
//!
//! The promise (issue 15): any body raises the peak by at most 16 times its size, 16 at once
//! stay under 1 GiB, and the RSS falls back after them. Linux only (`/proc`).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use hyper::Method;
use hyper::header::HeaderValue;

#[allow(
    dead_code,
    reason = "shared with gateway-load; this bench uses one_shot only"
)]
mod load;
#[allow(dead_code, reason = "shared with gateway-load")]
mod procs;
#[allow(
    dead_code,
    reason = "shared with gateway-load; this bench uses SQLite only"
)]
mod shared_store;

#[derive(Debug, Parser)]
#[command(about = "Peak RSS of wardgate serve per request body shape (up to 4 MiB)")]
struct Args {
    /// The `wardgate` binary (default: beside this one).
    #[arg(long)]
    wardgate_bin: Option<PathBuf>,
    /// The `mock-upstream` binary (default: beside this one).
    #[arg(long)]
    mock_bin: Option<PathBuf>,
    /// Body size in bytes (the gateway's default limit is 4 MiB).
    #[arg(long, default_value_t = 4 << 20)]
    size: usize,
    /// Requests sent at once in the concurrency step.
    #[arg(long, default_value_t = 16)]
    concurrent: usize,
}

macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
    };
}

const PATH: &str = "/v1/chat/completions";

/// A field from `/proc/PID/status`, in bytes.
fn status(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Resets the process's peak RSS to its current RSS.
fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("cannot reset the peak RSS of {pid}"))
}

/// A chat body of `size` bytes: `extra` is its bulky part; a string in a field the gateway
/// skips pads it to the size (a long message would be refused for the context window before
/// anything is forwarded).
fn body(size: usize, extra: &str) -> Bytes {
    let head = format!(
        r#"{{"model":"bench","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}],{extra}"pad":""#
    );
    let tail = r#""}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut b = String::with_capacity(size);
    b.push_str(&head);
    b.extend(std::iter::repeat_n('x', pad));
    b.push_str(tail);
    Bytes::from(b)
}

/// `{"k":{"k":...{}...}}`, `depth` objects deep, with `key` as every key.
fn nested(depth: usize, key: &str) -> String {
    format!(
        "{}{{}}{}",
        format!(r#"{{"{key}":"#).repeat(depth),
        "}".repeat(depth)
    )
}

/// Comma-joined copies of `item` filling about `bytes`.
fn repeated(item: &str, bytes: usize) -> String {
    let n = (bytes / (item.len() + 1)).max(1);
    vec![item; n].join(",")
}

/// The shapes measured: name and body. Deep nesting stays under the body's 128-level bound;
/// every shape fills the whole body. With one-letter keys, objects nested 121 deep are ~3
/// bytes per value and far over the default value bound (250,000), so those bodies show the
/// cost of refusing them; with 32-byte keys the same nesting is ~18 bytes per value, under the
/// bound, and is parsed and forwarded (200): the forwarding path at its most expensive.
fn shapes(size: usize) -> Vec<(&'static str, Bytes)> {
    let deep = nested(120, "a");
    let tool = |params: &str| {
        format!(r#"{{"type":"function","function":{{"name":"f","parameters":{params}}}}}"#)
    };
    let all = size - 512;
    vec![
        ("one long string (baseline)", body(size, "")),
        (
            // In a response schema: tools count against the context window (they are prompt
            // text), a schema does not, so this one is forwarded whole.
            "response_format nested 121 deep, 32-byte keys (under the value bound)",
            body(
                size,
                &format!(
                    r#""response_format":{{"type":"json_schema","json_schema":{{"name":"s","schema":{{"a":[{}]}}}}}},"#,
                    repeated(&nested(120, &"k".repeat(32)), all)
                ),
            ),
        ),
        (
            "tools nested 121 deep, 1-byte keys (over the value bound)",
            body(
                size,
                &format!(r#""tools":[{}],"#, repeated(&tool(&deep), all)),
            ),
        ),
        (
            "response_format nested 121 deep, 1-byte keys (over the value bound)",
            body(
                size,
                &format!(
                    r#""response_format":{{"type":"json_schema","json_schema":{{"name":"s","schema":{{"a":[{}]}}}}}},"#,
                    repeated(&deep, all)
                ),
            ),
        ),
        (
            "many small values in tools, 480 KB (under the value bound)",
            body(size, &format!(r#""tools":[{}],"#, repeated("0", 480_000))),
        ),
        (
            "many small values (over the value bound)",
            body(size, &format!(r#""x":[{}],"#, repeated("0", all))),
        ),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(1024..=64 << 20).contains(&args.size) || !(1..=256).contains(&args.concurrent) {
        bail!("--size must be 1 KiB to 64 MiB and --concurrent 1 to 256");
    }
    let mock_bin = procs::sibling_bin(args.mock_bin.as_deref(), "mock-upstream");
    let wardgate_bin = procs::sibling_bin(args.wardgate_bin.as_deref(), "wardgate");
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let db = dir.path().join("bench.db");
    let (_mock, mock_addr) = procs::start_mock(&mock_bin, dir.path())?;
    let store = procs::Store::Sqlite(&db);
    let key = procs::create_key(&wardgate_bin, &store)?;
    let addr = procs::free_port()?;
    let gateway = procs::start_gateway(
        &wardgate_bin,
        &store,
        wardgate_store::AuditDurability::Disk,
        mock_addr,
        addr,
        None,
        dir.path(),
    )
    .await?;
    let pid = gateway.id();
    let auth = HeaderValue::from_str(&format!("Bearer {key}")).context("the key is not ASCII")?;
    let send = |b: Bytes| {
        let auth = auth.clone();
        async move { load::one_shot(addr, Method::POST, PATH, Some(&auth), b).await }
    };
    // Warm up: the first request allocates what every request then reuses.
    send(body(1024, "")).await?;
    say!(
        "memory-bench: {} (pid {pid}), bodies of {} bytes",
        wardgate_bin.display(),
        args.size
    )?;
    say!(
        "| shape | JSON values | status | peak rise MiB | rise / body size | ratio to baseline |"
    )?;
    say!("| --- | --- | --- | --- | --- | --- |")?;
    let mut baseline = None;
    // The concurrency step sends the forwarded nested shape (the second): a fixed shape, so
    // that runs compare (the largest single rise moves between shapes from run to run).
    let mut burst = None;
    for (name, b) in shapes(args.size) {
        let len = b.len() as f64;
        let n = wardgate_gateway::pipeline::extract::json_values(&b);
        reset_peak(pid)?;
        let before = status(pid, "VmRSS")?;
        let (code, _) = send(b.clone()).await?;
        let rise = status(pid, "VmHWM")?.saturating_sub(before);
        let base = *baseline.get_or_insert(rise.max(1));
        say!(
            "| {name} | {n} | {} | {:.1} | {:.2} | {:.2} |",
            code.as_u16(),
            rise as f64 / f64::from(1 << 20),
            rise as f64 / len,
            rise as f64 / base as f64
        )?;
        if name.starts_with("response_format nested 121 deep, 32-byte keys") {
            burst = Some((name, b));
        }
    }
    let (burst_name, burst) = burst.context("no shape for the concurrency step")?;
    let idle = status(pid, "VmRSS")?;
    reset_peak(pid)?;
    let all: Vec<_> = (0..args.concurrent).map(|_| send(burst.clone())).collect();
    let mut codes = Vec::with_capacity(args.concurrent);
    for r in futures_join(all).await {
        codes.push(r?.0.as_u16());
    }
    codes.sort_unstable();
    codes.dedup();
    let peak = status(pid, "VmHWM")?;
    // Give the allocator a moment to hand memory back, then look again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = status(pid, "VmRSS")?;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    say!(
        "{} of one shape ({burst_name}, status {codes:?}) at once: RSS before {:.1} MiB, peak {:.1} MiB (bound 1024), 3 s after {:.1} MiB",
        args.concurrent,
        mib(idle),
        mib(peak),
        mib(after)
    )?;
    Ok(())
}

/// Runs the futures concurrently on this thread.
async fn futures_join<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let handles: Vec<_> = fs.into_iter().map(tokio::task::spawn_local).collect();
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                if let Ok(v) = h.await {
                    out.push(v);
                }
            }
            out
        })
        .await
}
