//! The processes under test: the release `mock-upstream` and `wardgate serve`, started as
//! children with their own log files, and killed when their handle is dropped — on success, on
//! an error returned with `?`, and on a panic alike.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use wardgate_store::AuditDurability;

use crate::load;
use crate::shared_store::SharedStore;

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct Child {
    name: &'static str,
    inner: std::process::Child,
    log: PathBuf,
}

impl Child {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let stderr =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let inner = cmd
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {name} ({:?}); build it first: cargo build --release -p wardgate -p mock-upstream",
                    cmd.get_program()
                )
            })?;
        Ok(Self { name, inner, log })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// The last lines of the child's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Lines the child has written to stderr so far.
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.inner.try_wait().ok().flatten()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SIGKILL: nothing of the children's state is needed after a benchmark.
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}

/// A command for `bin` without the caller's `WARDGATE_*` variables: a stray config file or log
/// level from the shell would change what is measured.
pub fn command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDGATE_") {
            cmd.env_remove(key);
        }
    }
    // Several instances run side by side, and the default metrics ports are one per machine;
    // a benchmark of the metrics' cost turns them on itself.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    cmd
}

/// Starts `mock-upstream` on a free loopback port with the one model `bench` and instant
/// replies, and returns it with its address.
/// `given`, or the binary `name` beside the running one (target/release/ by default).
pub fn sibling_bin(given: Option<&Path>, name: &str) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("target/release"))
            .join(name)
    })
}

pub fn start_mock(bin: &Path, dir: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let mut cmd = command(bin);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--models",
        "bench",
        "--tokens",
        "8",
    ])
    .stdout(Stdio::piped());
    let mut child = Child::spawn("mock-upstream", cmd, dir.join("mock-upstream.log"))?;
    let stdout = child
        .inner
        .stdout
        .take()
        .context("mock-upstream has no stdout")?;
    // Read the `listening on` line on a thread so a silent child cannot hang the harness; the
    // thread then drains stdout until the child exits.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader.take(u64::MAX), &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.trim_end_matches('/').parse::<SocketAddr>().ok())
        .with_context(|| {
            format!(
                "mock-upstream did not print `listening on http://ADDR` (got {line:?}); its log:\n{}",
                child.log_tail()
            )
        })?;
    Ok((child, addr))
}

/// Where a gateway keeps its state.
pub enum Store<'a> {
    /// The embedded default: one SQLite file; rate limits off.
    Sqlite(&'a Path),
    /// PostgreSQL and Redis shared by every instance; the per-key rate limit on in Redis, far
    /// above the offered rate, so every request makes its Redis round trip.
    Shared(&'a SharedStore),
}

impl Store<'_> {
    fn apply(&self, cmd: &mut Command) {
        match self {
            Store::Sqlite(db) => {
                cmd.env("WARDGATE_DB", db)
                    .env("WARDGATE_RATE_LIMIT_RPM", "0");
            }
            Store::Shared(shared) => {
                shared.apply(cmd);
                cmd.env("WARDGATE_RATE_LIMIT_RPM", SHARED_RPM);
            }
        }
    }
}

/// The per-key limit of the scale-out set-up: the highest the configuration allows.
pub const SHARED_RPM: &str = "1000000";

/// Creates an API key for tenant `bench` in `store` and returns the secret.
pub fn create_key(bin: &Path, store: &Store<'_>) -> anyhow::Result<String> {
    let mut cmd = command(bin);
    store.apply(&mut cmd);
    // A witness file of each database's own: SQLite files side by side in one directory would
    // otherwise share the default one, and a log that lacks the witness's checkpoints (another
    // database's) is refused at start.
    if let Store::Sqlite(db) = store {
        cmd.env("WARDGATE_AUDIT_WITNESS", db.with_extension("witness.log"));
    }
    let out = cmd
        .args(["keys", "create", "--tenant", "bench", "--json"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} keys create", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`wardgate keys create` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("`wardgate keys create --json` did not print JSON")?;
    v.get("key")
        .and_then(|k| k.as_str())
        .map(str::to_owned)
        .context("`wardgate keys create --json` printed no `key`")
}

/// A loopback port that was free a moment ago. `wardgate serve` does not print the address
/// it bound at the `warn` log level used here, so the port is chosen for it.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?)
}

/// Starts `wardgate serve` on `store` against the mock, with auth on, no concurrency limit,
/// the log at `warn` and its metrics listener at `metrics` (none when `None`), and waits until `/ready` answers 200. Its log and witness file are named
/// after its port, so several instances can share `dir`.
pub async fn start_gateway(
    bin: &Path,
    store: &Store<'_>,
    durability: AuditDurability,
    mock: SocketAddr,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    dir: &Path,
) -> anyhow::Result<Child> {
    let mut cmd = command(bin);
    store.apply(&mut cmd);
    if let Some(addr) = metrics {
        cmd.env("WARDGATE_METRICS_LISTEN", addr.to_string());
    }
    let port = listen.port();
    cmd.arg("serve")
        .stdout(Stdio::null())
        .env("WARDGATE_BACKEND", format!("openai:http://{mock}/v1"))
        .env("WARDGATE_LISTEN", listen.to_string())
        .env("WARDGATE_RATE_LIMIT_CONCURRENCY", "0")
        .env("WARDGATE_AUDIT_DURABILITY", durability.as_str())
        .env(
            "WARDGATE_AUDIT_WITNESS",
            dir.join(format!("audit-witness-{port}.log")),
        )
        // The per-request `info` line would otherwise dominate what is measured.
        .env("WARDGATE_LOG", "warn");
    let mut child = Child::spawn("wardgate", cmd, dir.join(format!("wardgate-{port}.log")))?;
    wait_ready(&mut child, listen).await?;
    Ok(child)
}

async fn wait_ready(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.exited() {
            bail!(
                "{} exited before it was ready ({status}); its log:\n{}",
                child.name,
                child.log_tail()
            );
        }
        let probe = load::one_shot(addr, Method::GET, "/ready", None, Bytes::new()).await;
        if let Ok((status, _)) = &probe
            && status.is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} at {addr} was not ready after 20 s (last probe: {probe:?}); its log:\n{}",
                child.name,
                child.log_tail()
            );
        }
        // Polling with a deadline: the gateway has no other way to say it is ready.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that one request succeeds before any load is sent, so a misconfiguration is an
/// error message instead of a table of 100 % errors.
pub async fn preflight(
    name: &str,
    addr: SocketAddr,
    path: &str,
    authorization: Option<&HeaderValue>,
    body: Bytes,
) -> anyhow::Result<()> {
    let (status, answer) = load::one_shot(addr, Method::POST, path, authorization, body).await?;
    if !status.is_success() {
        bail!(
            "{name}: POST {path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}
