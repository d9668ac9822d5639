//! `audit-bench`: the audit log's two speed targets, each against a baseline in the same run.
//!
//! (a) Append throughput with durability: the `Auditor` (group commit) on a SQLite file with
//!     WAL and `synchronous=FULL`, many concurrent appenders, each waiting for its event's
//!     commit. Baseline: one transaction (one fsync) per event, which is what a writer without
//!     group commit does. Target: at least 20,000 events/s.
//! (b) Offline verification of 1,000,000 events from an export file: parse each line,
//!     re-encode the event, recompute its leaf hash, the tree, every checkpoint's root and
//!     signature. Baseline: plain SHA-256 of the same file's bytes (reading it included), the
//!     floor for any verifier that looks at every byte. Target: at most 10 s.
//!
//! Each figure is the median of several runs; the report also says how much CPU other
//! processes took meanwhile, since the machine has two cores and a build beside the benchmark
//! would distort it.

mod machine;
mod stats;

use std::io::{BufReader, BufWriter, Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use sha2::{Digest as _, Sha256};
use wardgate_audit::checkpoint::Checkpoint;
use wardgate_audit::event::prompt_digest;
use wardgate_audit::merkle::TreeBuilder;
use wardgate_audit::{
    ActorKind, AuditEntry, AuditEvent, AuditStore as _, Auditor, AuditorConfig, AuthMethod,
    EventType, Outcome, SignerKey, Timestamp,
};
use wardgate_store::SqliteStore;

#[derive(Parser, Debug)]
#[command(about = "Audit log append throughput (group commit vs per-event commit) and verify time")]
struct Args {
    /// Concurrent appenders for the group-commit run.
    #[arg(long, default_value_t = 512)]
    appenders: usize,
    /// Events per group-commit run.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Events per baseline (one transaction each) run; it is fsync-bound, so keep it small.
    #[arg(long, default_value_t = 2_000)]
    baseline_events: u64,
    /// Events in the verify benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    verify_events: u64,
    /// Checkpoint interval (entries): the writer's in (a), the export's in (b).
    #[arg(long, default_value_t = 1_000)]
    checkpoint_every: u64,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Directory for the databases and the export (default: a temporary directory; put it on
    /// the disk the gateway would use, since fsync cost is the point).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Run only `append` (a), `verify` (b), or `store` (a diagnostic: the store alone, fixed
    /// batch sizes).
    #[arg(long)]
    only: Option<String>,
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// A realistic terminal request event (every field set, strings of typical length).
fn event(i: u64) -> AuditEvent {
    let outcome = [
        Outcome::Allow,
        Outcome::Allow,
        Outcome::Allow,
        Outcome::Deny,
    ][(i % 4) as usize];
    AuditEvent {
        auth_method: Some(AuthMethod::ApiKey),
        tenant: Some(format!("tenant-{}", i % 17)),
        key_id: Some(format!("key_{:026}", i % 101)),
        source_ip: Some(std::net::IpAddr::from([
            10,
            1,
            (i % 251) as u8,
            (i % 13) as u8,
        ])),
        request_id: Some(format!("01J{:023}", i)),
        route: Some("/v1/chat/completions".into()),
        model: Some("llama3.1:8b-instruct".into()),
        backend: Some("ollama-gpu-1".into()),
        outcome: Some(outcome),
        http_status: Some(if outcome == Outcome::Allow { 200 } else { 403 }),
        deny_reason: (outcome == Outcome::Deny).then(|| "model_not_allowed".into()),
        tokens_in: Some(200 + i % 900),
        tokens_out: Some(50 + i % 400),
        latency_ms: Some(40 + i % 2_000),
        prompt_sha256: Some(prompt_digest(b"bench salt", &i.to_le_bytes())),
        ..AuditEvent::new(
            Timestamp::from_unix_millis(1_735_689_600_000 + i as i64).unwrap_or(Timestamp::now()),
            EventType::Request,
            &format!("key_{:026}", i % 101),
            ActorKind::Service,
        )
    }
}

/// CPU time (user + system) this process has used, from Linux's `/proc`; `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

fn cpu_us_per_event(before: Option<Duration>, events: u64) -> f64 {
    match (before, cpu_time()) {
        (Some(b), Some(a)) => (a - b).as_secs_f64() * 1e6 / events as f64,
        _ => f64::NAN,
    }
}

/// Diagnostic: the store alone, batches of a fixed size appended back to back (no writer task,
/// no concurrency), to tell the database's cost from the writer's.
async fn store_only(dir: &Path, args: &Args) -> anyhow::Result<()> {
    for batch in [1u64, 50, 500] {
        let n = if batch == 1 {
            args.baseline_events
        } else {
            args.events
        };
        let run_dir = tempfile::tempdir_in(dir)?;
        let store = SqliteStore::open(&run_dir.path().join("store.db")).await?;
        let cpu = cpu_time();
        let started = Instant::now();
        let mut i = 0;
        while i < n {
            store
                .append((i..(i + batch).min(n)).map(event).collect())
                .await?;
            i += batch;
        }
        let elapsed = started.elapsed();
        say(&format!(
            "  store alone, batches of {batch}: {:.0} events/s, {:.1} us CPU per event",
            n as f64 / elapsed.as_secs_f64(),
            cpu_us_per_event(cpu, n)
        ));
        store.close().await;
    }
    Ok(())
}

struct Interference(Option<machine::Snapshot>);

impl Interference {
    fn start() -> Self {
        Self(machine::snapshot(&[], &[]))
    }
    fn finish(self) -> String {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self
            .0
            .zip(machine::snapshot(&[], &[]))
            .and_then(|(a, b)| machine::interference(a, b, cpus))
        {
            // From 5 % of the CPUs on, say so where the figure is read (as gateway-load does):
            // other work only ever makes these figures worse, so they are then pessimistic.
            Some(i) if i.other_pct + i.steal_pct >= 5.0 => format!(
                "other load {:.1}% of CPU, steal {:.1}%: DISTORTED, the machine was busy",
                i.other_pct, i.steal_pct
            ),
            Some(i) => format!(
                "other load {:.1}% of CPU, steal {:.1}%",
                i.other_pct, i.steal_pct
            ),
            None => "other load unknown".into(),
        }
    }
}

struct GroupRun {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    checkpoints: usize,
    mean_batch: f64,
    cpu_us: f64,
}

async fn group_commit_run(dir: &Path, args: &Args) -> anyhow::Result<GroupRun> {
    // A fresh directory per run, removed afterwards: every run starts from an empty log.
    let run_dir = tempfile::tempdir_in(dir)?;
    let dir = run_dir.path();
    let db = dir.join("group.db");
    let store = SqliteStore::open(&db).await?;
    let store_arc = Arc::new(store.clone());
    let config = AuditorConfig {
        origin: "bench/audit".into(),
        witness_path: Some(dir.join("group.witness")),
        checkpoint_every: args.checkpoint_every,
        ..AuditorConfig::default()
    };
    let auditor = Auditor::start(store_arc, SignerKey::generate("bench/audit")?, config).await?;
    let per_task = args.events / args.appenders as u64;
    let cpu = cpu_time();
    let started = Instant::now();
    // Events are numbered in the order they are made, as a gateway stamps them: times and
    // (UUIDv7) request ids then rise with the sequence number, as they do in production, and the
    // time and request-id indexes grow at their right edge.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.appenders as u64)
        .map(|_| {
            let auditor = auditor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                for _ in 0..per_task {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let t0 = Instant::now();
                    auditor.append(event(i)).await?;
                    latencies.push(t0.elapsed().as_nanos() as u64);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(args.events as usize);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let cpu_us = cpu_us_per_event(cpu, args.events);
    let commits = auditor.commits();
    auditor.shutdown().await?;
    let total = per_task * args.appenders as u64;
    anyhow::ensure!(store.size().await? == total, "lost events");
    let checkpoints = store.checkpoints(0, 10_000).await?.len();
    store.close().await;
    latencies.sort_unstable();
    let ms = |ns: Option<u64>| ns.map_or(f64::NAN, |n| n as f64 / 1e6);
    Ok(GroupRun {
        events_per_s: total as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(stats::percentile(&latencies, 50.0)),
        p99_ms: ms(stats::percentile(&latencies, 99.0)),
        checkpoints,
        mean_batch: total as f64 / commits.max(1) as f64,
        cpu_us,
    })
}

async fn per_event_run(dir: &Path, args: &Args) -> anyhow::Result<f64> {
    let run_dir = tempfile::tempdir_in(dir)?;
    let db = run_dir.path().join("single.db");
    let store = SqliteStore::open(&db).await?;
    let started = Instant::now();
    for i in 0..args.baseline_events {
        store.append(vec![event(i)]).await?;
    }
    let elapsed = started.elapsed();
    store.close().await;
    Ok(args.baseline_events as f64 / elapsed.as_secs_f64())
}

async fn throughput(dir: &Path, args: &Args) -> anyhow::Result<()> {
    say(&format!(
        "(a) append throughput, SQLite WAL + synchronous=FULL, {} events by {} concurrent \
         appenders (each waits for its commit), {} repeats",
        args.events, args.appenders, args.repeats
    ));
    let mut group = Vec::new();
    let mut single = Vec::new();
    for run in 0..args.repeats {
        let load = Interference::start();
        let g = group_commit_run(dir, args).await?;
        let s = per_event_run(dir, args).await?;
        say(&format!(
            "  run {}: group commit {:>9.0} events/s ({:.0} us CPU/event; commit wait p50 {:.2} ms, \
             p99 {:.2} ms; mean batch {:.0}; {} checkpoints); one transaction per event {:>7.0} \
             events/s; {}",
            run + 1,
            g.events_per_s,
            g.cpu_us,
            g.p50_ms,
            g.p99_ms,
            g.mean_batch,
            g.checkpoints,
            s,
            load.finish()
        ));
        group.push(g.events_per_s);
        single.push(s);
    }
    let g = stats::median(&group).unwrap_or(f64::NAN);
    let s = stats::median(&single).unwrap_or(f64::NAN);
    say(&format!(
        "  median: group commit {g:.0} events/s, baseline (one transaction per event) {s:.0} \
         events/s, ratio {:.1}x",
        g / s
    ));
    say(&format!(
        "  target >= 20000 events/s: {} ({g:.0})",
        if g >= 20_000.0 { "PASS" } else { "FAIL" }
    ));
    Ok(())
}

/// Writes an export of `n` events with a signed checkpoint every `every` entries (and at the
/// end); returns the checkpoint notes (reused as the witness's).
fn write_export(path: &Path, n: u64, every: u64) -> anyhow::Result<Vec<String>> {
    let key = SignerKey::generate("bench/audit")?;
    // Two passes, so a million events never sit in memory at once: the checkpoints (which the
    // export puts first), then the entries, generated again as they are written.
    let mut tree = TreeBuilder::new();
    let mut notes = Vec::new();
    for i in 0..n {
        let (entry, _) = AuditEntry::prepare(i, event(i));
        tree.push(entry.leaf_hash);
        if tree.size().is_multiple_of(every) || tree.size() == n {
            let cp = Checkpoint {
                origin: "bench/audit".into(),
                size: tree.size(),
                root: tree.root(),
            };
            notes.push(cp.sign(&key)?.note);
        }
    }
    let file = std::fs::File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let entries = (0..n).map(|i| AuditEntry::prepare(i, event(i)).0);
    wardgate_audit::export::write_parts(&mut out, &notes, entries)?;
    out.flush()?;
    // The public key travels beside the export, as an auditor would receive it.
    std::fs::write(path.with_extension("pub"), key.verifier().to_string())?;
    Ok(notes)
}

fn sha256_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn verify_time(dir: &Path, args: &Args) -> anyhow::Result<()> {
    let path = dir.join("export.jsonl");
    let t0 = Instant::now();
    let notes = write_export(&path, args.verify_events, args.checkpoint_every)?;
    let bytes = std::fs::metadata(&path)?.len();
    say(&format!(
        "(b) verify {} events from an export ({:.0} MB, {} signed checkpoints, the same {} again \
         as the witness's; generated in {:.1} s), {} repeats",
        args.verify_events,
        bytes as f64 / 1e6,
        notes.len(),
        notes.len(),
        t0.elapsed().as_secs_f64(),
        args.repeats
    ));
    let vkey_text = std::fs::read_to_string(path.with_extension("pub"))?;
    let vkey = wardgate_audit::VerifierKey::parse(&vkey_text)?;
    let mut verify = Vec::new();
    let mut hash = Vec::new();
    for run in 0..args.repeats {
        let load = Interference::start();
        let t = Instant::now();
        let file = std::fs::File::open(&path)?;
        let report = wardgate_audit::verify::verify_export(
            BufReader::with_capacity(1 << 20, file),
            vec![vkey.clone()],
            &notes,
            Some("bench/audit".into()),
        )
        .context("verification failed")?;
        let v = t.elapsed();
        anyhow::ensure!(report.entries == args.verify_events && report.proven == report.entries);
        let t = Instant::now();
        let digest = sha256_file(&path)?;
        let h = t.elapsed();
        std::hint::black_box(digest);
        say(&format!(
            "  run {}: verify {:.2} s ({:.0} events/s); plain SHA-256 of the file {:.2} s; {}",
            run + 1,
            v.as_secs_f64(),
            args.verify_events as f64 / v.as_secs_f64(),
            h.as_secs_f64(),
            load.finish()
        ));
        verify.push(v.as_secs_f64());
        hash.push(h.as_secs_f64());
    }
    let v = stats::median(&verify).unwrap_or(f64::NAN);
    let h = stats::median(&hash).unwrap_or(f64::NAN);
    say(&format!(
        "  median: verify {v:.2} s, baseline (SHA-256 of the same bytes) {h:.2} s, ratio {:.1}x",
        v / h
    ));
    say(&format!(
        "  target <= 10 s for {} events: {} ({v:.2} s)",
        args.verify_events,
        if v <= 10.0 { "PASS" } else { "FAIL" }
    ));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.appenders > 0 && args.repeats > 0,
        "appenders and repeats must be > 0"
    );
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    say(&format!(
        "audit-bench: {} CPUs, data in {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir.display()
    ));
    if args.only.as_deref() == Some("store") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(store_only(&dir, &args));
    }
    if args.only.as_deref() != Some("verify") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(throughput(&dir, &args))?;
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    if args.only.as_deref() != Some("append") {
        verify_time(&dir, &args)?;
    }
    Ok(())
}
