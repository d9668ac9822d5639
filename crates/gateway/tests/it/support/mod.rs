//! Test harness: the real router over an in-memory store and mock model servers, driven
//! in-process with `oneshot` (no socket) unless a test needs a real connection.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod jwt;
pub mod logs;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use mock_upstream::{MockConfig, MockServer};
use serde_json::Value;
use tower::ServiceExt;
use wardgate_gateway::AppState;
use wardgate_gateway::app::{ConfigSource, Gateway, Stores};
use wardgate_gateway::config::{Config, parse_toml};
use wardgate_store::{Database, NewKeySpec};

pub struct Harness {
    /// The gateway, built as `wardgate serve` builds it.
    pub gateway: Gateway,
    /// The config file a reload re-reads, if any.
    pub file: Option<std::path::PathBuf>,
    pub app: Router,
    pub state: AppState,
    pub store: Arc<dyn Database>,
    pub key: String,
    pub mocks: Vec<MockServer>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// NDJSON lines or SSE `data:` payloads, parsed.
    pub fn frames(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| {
                let l = l.strip_prefix("data: ").unwrap_or(l);
                if l == "[DONE]" {
                    Some(Value::String("[DONE]".into()))
                } else {
                    serde_json::from_str(l).ok()
                }
            })
            .collect()
    }
}

/// A mock per backend entry; `kinds` gives each backend's protocol.
pub async fn mocks(configs: Vec<MockConfig>) -> Vec<MockServer> {
    let mut out = Vec::new();
    for c in configs {
        out.push(MockServer::start(c).await.unwrap());
    }
    out
}

pub fn mock_cfg() -> MockConfig {
    MockConfig {
        models: vec!["tiny".into(), "other".into()],
        ..MockConfig::default()
    }
}

pub fn backend_url(kind: &str, mock: &MockServer) -> String {
    match kind {
        "openai" => format!("{}/v1", mock.url()),
        _ => mock.url(),
    }
}

impl Harness {
    /// One backend of `kind` with model `tiny` (alias `fast`) and `other`.
    pub async fn single(kind: &str) -> Harness {
        Self::single_with(kind, mock_cfg(), "").await
    }

    pub async fn single_with(kind: &str, cfg: MockConfig, extra: &str) -> Harness {
        let stores = Stores::in_memory().await.unwrap();
        Self::single_over(kind, cfg, extra, stores).await
    }

    /// As [`Harness::single_with`], over `stores` (keys and tenants in PostgreSQL, say).
    pub async fn single_over(kind: &str, cfg: MockConfig, extra: &str, stores: Stores) -> Harness {
        let ms = mocks(vec![cfg]).await;
        let toml = format!(
            r#"{extra}
[[backends]]
name = "b0"
kind = "{kind}"
url = "{url}"

[[models]]
name = "tiny"
aliases = ["fast"]
chain = [{{ backend = "b0", model = "tiny" }}]

[[models]]
name = "other"
chain = [{{ backend = "b0", model = "other" }}]
"#,
            url = backend_url(kind, &ms[0])
        );
        let raw = parse_toml(&toml).unwrap_or_else(|e| panic!("{e}"));
        let config = Config::from_raw(raw, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        Self::build(config, stores, None, ms).await
    }

    pub async fn from_toml(toml: &str, mocks: Vec<MockServer>) -> Harness {
        Self::from_toml_env(toml, mocks, &|_| None).await
    }

    /// As [`Harness::from_toml`], with `WARDGATE_*` (and secrets) looked up in `env`.
    pub async fn from_toml_env(
        toml: &str,
        mocks: Vec<MockServer>,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Harness {
        let raw = parse_toml(toml).unwrap_or_else(|e| panic!("{e}"));
        let config = Config::from_raw(raw, env).unwrap_or_else(|e| panic!("{e}"));
        let stores = Stores::in_memory().await.unwrap();
        Self::build(config, stores, None, mocks).await
    }

    /// The gateway as `wardgate serve` builds it (`app::Gateway`) from `config` over
    /// `stores`, reloading from `file` (if any), with one key of tenant `acme`.
    pub async fn build(
        config: Config,
        stores: Stores,
        file: Option<std::path::PathBuf>,
        mocks: Vec<MockServer>,
    ) -> Harness {
        let config = without_metrics_listener(config);
        let store = stores.db.clone();
        let file_kept = file.clone();
        let source = file.map(|path| ConfigSource {
            path: Some(path),
            env: Box::new(metrics_off_env),
        });
        let gateway = Gateway::build(config, stores, source).await.unwrap();
        let mut h = Self::over(gateway, store, mocks).await;
        h.file = file_kept;
        h
    }

    /// As [`Harness::build`], over `catalog` instead of the configured backends.
    pub async fn build_over(config: Config, catalog: wardgate_backends::Catalog) -> Harness {
        let config = without_metrics_listener(config);
        let stores = Stores::in_memory().await.unwrap();
        let store = stores.db.clone();
        let gateway = Gateway::build_over(config, stores, None, catalog)
            .await
            .unwrap();
        Self::over(gateway, store, vec![]).await
    }

    async fn over(gateway: Gateway, store: Arc<dyn Database>, mocks: Vec<MockServer>) -> Harness {
        let key = store
            .create_key(NewKeySpec {
                tenant: "acme".into(),
                models: vec![],
                roles: vec![],
                expires_at: None,
                label: None,
            })
            .await
            .unwrap()
            .secret
            .expose()
            .clone();
        Harness {
            app: gateway.router(),
            state: gateway.state(),
            gateway,
            file: None,
            store,
            key,
            mocks,
        }
    }

    /// A second instance of this gateway: the same configuration over the same key store (as
    /// two instances over one PostgreSQL are), with stores of its own otherwise.
    pub async fn twin(&self) -> Harness {
        let mut stores = Stores::in_memory().await.unwrap();
        stores.db = self.store.clone();
        Harness::build((*self.state.config).clone(), stores, None, vec![]).await
    }

    /// The same harness (same keys) writing its audit log to `store`.
    pub async fn audited(self, store: Arc<dyn wardgate_audit::AuditStore>) -> Harness {
        let mut stores = Stores::in_memory_with(store).await.unwrap();
        stores.db = self.store.clone();
        let config = (*self.state.config).clone();
        let source = self.file.clone().map(|path| ConfigSource {
            path: Some(path),
            env: Box::new(metrics_off_env),
        });
        let gateway = Gateway::build(config, stores, source).await.unwrap();
        Harness {
            app: gateway.router(),
            state: gateway.state(),
            gateway,
            ..self
        }
    }

    /// The same gateway over the same stores, with its metrics listener on a free loopback
    /// port (returned); it listens once [`Harness::listen`] runs the gateway.
    pub async fn with_metrics(self) -> (Harness, std::net::SocketAddr) {
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let mut config = (*self.state.config).clone();
        config.metrics.listen = Some(addr);
        let mut stores = Stores::in_memory().await.unwrap();
        stores.db = self.store.clone();
        let gateway = Gateway::build(config, stores, None).await.unwrap();
        let h = Harness {
            app: gateway.router(),
            state: gateway.state(),
            gateway,
            ..self
        };
        (h, addr)
    }

    /// Serves the harness's gateway on a real socket (the full connection layer: TLS,
    /// timeouts, connection limits) until the test ends; returns the address.
    pub async fn listen(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = self.gateway.clone();
        tokio::spawn(async move {
            gateway.run(listener, std::future::pending()).await.unwrap();
        });
        addr
    }

    /// Every audit event so far, in log order. A refusal's event is committed after its
    /// response has gone, so the writer is asked for a checkpoint first: it is handled after
    /// everything queued before it.
    pub async fn audit_events(&self) -> Vec<wardgate_audit::AuditEvent> {
        let audit = &self.state.audit;
        audit.checkpoint().await.unwrap();
        stored_events(audit).await
    }

    pub async fn key_for(
        &self,
        models: &[&str],
        expires_at: Option<time::OffsetDateTime>,
    ) -> (String, String) {
        let k = self
            .store
            .create_key(NewKeySpec {
                tenant: "acme".into(),
                models: models.iter().map(|m| m.to_string()).collect(),
                roles: vec![],
                expires_at,
                label: None,
            })
            .await
            .unwrap();
        (k.record.id.clone(), k.secret.expose().clone())
    }

    /// A key of `tenant` with `roles`, and its id.
    pub async fn key_with_roles(
        &self,
        tenant: &str,
        roles: &[wardgate_store::Role],
        expires_at: Option<time::OffsetDateTime>,
    ) -> (String, String) {
        let k = self
            .store
            .create_key(NewKeySpec {
                tenant: tenant.into(),
                models: vec![],
                roles: roles.to_vec(),
                expires_at,
                label: None,
            })
            .await
            .unwrap();
        (k.record.id.clone(), k.secret.expose().clone())
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        send_to(self.app.clone(), req).await
    }

    /// One request through the router now serving (after a reload, the new one).
    pub async fn send_live(&self, req: Request<Body>) -> Resp {
        send_to(self.gateway.router(), req).await
    }

    /// The gateway reading its configuration from the file `path` (reloads re-read it).
    pub async fn from_file(path: &std::path::Path, mocks: Vec<MockServer>) -> Harness {
        let config = Config::load(Some(path), &metrics_off_env).unwrap_or_else(|e| panic!("{e}"));
        let stores = Stores::in_memory().await.unwrap();
        Self::build(config, stores, Some(path.to_path_buf()), mocks).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(post_as(path, &body.to_string(), Some(&self.key)))
            .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(get_as(path, Some(&self.key))).await
    }
}

/// One request through `app`, the whole answer read.
pub async fn send_to(app: Router, req: Request<Body>) -> Resp {
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// A POST to `wardgate llm` signed with `secret` at `at` with `nonce`, as the gateway signs.
pub fn signed_post(secret: &[u8], path: &str, body: &str, at: i64, nonce: &str) -> Request<Body> {
    let mut req = signed_request(secret, "POST", path, body, at, nonce);
    req.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    req
}

/// A `method` request to `wardgate llm` signed with `secret` at `at` with `nonce`.
pub fn signed_request(
    secret: &[u8],
    method: &str,
    path: &str,
    body: &str,
    at: i64,
    nonce: &str,
) -> Request<Body> {
    use wardgate_api::signing;
    let sig = signing::sign(
        &signing::SigningKey::new(secret).unwrap(),
        method,
        path,
        body.as_bytes(),
        at,
        nonce,
    );
    Request::builder()
        .method(method)
        .uri(path)
        .header(signing::TIMESTAMP_HEADER, sig.timestamp)
        .header(signing::NONCE_HEADER, sig.nonce)
        .header(signing::SIGNATURE_HEADER, sig.signature)
        .header(signing::BODY_DIGEST_HEADER, sig.body_digest)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// The Redis the tests use: `WARDGATE_TEST_REDIS_URL`, default this machine's.
pub fn redis_url() -> String {
    std::env::var("WARDGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The keys matching `pattern` in the Redis at `url`, sorted, each with the milliseconds it
/// has left (negative: no expiry).
pub async fn redis_keys(url: &str, pattern: &str) -> Vec<(String, i64)> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push((k, ttl));
    }
    out
}

/// A Redis of the test's own, which it can stop and start again on the same port.
pub struct PrivateRedis {
    pub port: u16,
    /// The password it requires, if any.
    password: Option<&'static str>,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        Self::start_with(None)
    }

    /// A Redis that requires `password` (`--requirepass`), when given.
    pub fn start_with(password: Option<&'static str>) -> PrivateRedis {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut me = PrivateRedis {
            port,
            password,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        me.restart();
        me
    }

    pub fn url(&self) -> String {
        match self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn restart(&mut self) {
        let mut args = vec![
            "--port".to_owned(),
            self.port.to_string(),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
        ];
        if let Some(p) = self.password {
            args.extend(["--requirepass".to_owned(), p.to_owned()]);
        }
        let child = std::process::Command::new("redis-server")
            .args(&args)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..500 {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and what is sent to it waits,
    /// unanswered, until [`PrivateRedis::resume`], as on a Redis that stalls.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (`SIGCONT`): it runs what waited.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy between a gateway and Redis that holds back what the gateway sends by `delay`
/// (an instance far from Redis), and that the test can freeze: from then on it forwards
/// nothing, either way, on the connections it holds and on any it accepts, yet closes none.
/// That is what a NAT or firewall that dropped the flow, or a paused Redis, looks like from
/// the gateway: no data, and no error either.
pub struct TcpProxy {
    pub port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: u16, delay: std::time::Duration) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = frozen.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = server.into_split();
                    tokio::join!(
                        Self::pump(from_client, to_server, f.clone(), delay),
                        Self::pump(from_server, to_client, f, std::time::Duration::ZERO),
                    );
                });
            }
        });
        TcpProxy {
            port,
            frozen,
            accepting,
        }
    }

    /// Copies `from` to `to`, each read `delay` late, until either closes; once frozen, what
    /// is read is dropped.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
        delay: std::time::Duration,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if frozen.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// How many times each command has run in the Redis at `url` since it started
/// (`INFO commandstats`), by lower-case name.
pub async fn redis_command_calls(url: &str) -> std::collections::BTreeMap<String, u64> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

pub fn post_as(path: &str, body: &str, key: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path)
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

pub fn delete_as(path: &str, key: Option<&str>) -> Request<Body> {
    let mut b = Request::delete(path);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Body::empty()).unwrap()
}

pub fn get_as(path: &str, key: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Body::empty()).unwrap()
}

pub fn chat_body(model: &str, content: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

pub const KINDS: [&str; 2] = ["ollama", "openai"];

/// A port nothing listens on: bind, read the port, close.
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// A chat request to `/v1/chat/completions` for model `tiny`, with `key`.
pub fn chat(key: &str) -> Request<Body> {
    post_as(
        "/v1/chat/completions",
        &chat_body("tiny", "hello").to_string(),
        Some(key),
    )
}

/// The secret the tests' `wardgate llm` routers verify requests with.
pub const LLM_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-llm";

/// A POST to `wardgate llm` signed with [`LLM_SECRET`] at `at` (Unix seconds) with `nonce`.
pub fn signed(path: &str, body: &str, at: i64, nonce: &str) -> Request<Body> {
    signed_post(LLM_SECRET, path, body, at, nonce)
}

/// Writes the tiny random-weight model (`tiny.gguf` in `dir`) and imports it as `tiny:test`
/// into the model store at `dir/store`, where the `[engine]` of a test's config points.
pub fn import_tiny_model(dir: &std::path::Path) {
    use wardgate_engine::gguf::{TinySpec, write_tiny_llama};
    let file = dir.join("tiny.gguf");
    if !file.exists() {
        write_tiny_llama(std::fs::File::create(&file).unwrap(), &TinySpec::default()).unwrap();
    }
    wardgate_engine::ModelStore::open(dir.join("store"))
        .unwrap()
        .import(&file, "tiny:test")
        .unwrap();
}

/// Calls `probe` until `done` holds for what it returns, for at most `within`, and returns
/// the last value either way, for the caller to assert on (so a failure shows what was seen).
/// A test that waits on the condition itself, not for a fixed time, is both faster and not
/// flaky on a loaded machine.
pub async fn poll_until<T, Fut>(
    within: std::time::Duration,
    mut probe: impl FnMut() -> Fut,
    mut done: impl FnMut(&T) -> bool,
) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + within;
    // Short at first, since most conditions hold almost at once; then no busier than 20 a
    // second.
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let value = probe().await;
        if done(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Waits until `cond` holds, for at most `within`; past it, fails the test saying `what`
/// never happened.
pub async fn eventually(within: std::time::Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let held = poll_until(within, || std::future::ready(cond()), |held| *held).await;
    assert!(held, "{what}: not within {within:?}");
}

/// Every event `audit`'s store holds, in log order (what is committed; ask the writer for a
/// checkpoint first for what is still queued, or read after it has shut down).
pub async fn stored_events(audit: &wardgate_audit::Auditor) -> Vec<wardgate_audit::AuditEvent> {
    audit
        .store()
        .read_range(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// The refusals audit events stand for: one per request event, and `N` per `suppressed: N`
/// summary (which belongs to no request).
pub fn refusals_counted(events: &[&wardgate_audit::AuditEvent]) -> u64 {
    events
        .iter()
        .map(|e| match (&e.request_id, e.detail.as_deref()) {
            (None, Some(d)) => d
                .strip_prefix("suppressed: ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a summary without a count: {e:#?}")),
            _ => 1,
        })
        .sum()
}

/// `config` without its metrics listener: the default port is one per machine, and tests run
/// side by side. A test of the listener sets an address of its own after this.
pub fn without_metrics_listener(mut config: Config) -> Config {
    config.metrics.listen = None;
    config
}

/// The environment a harness's configuration file is read in (at build and at each reload):
/// the metrics listener off, as [`without_metrics_listener`] leaves the built configuration.
pub fn metrics_off_env(name: &str) -> Option<String> {
    (name == "WARDGATE_METRICS_LISTEN").then(|| "off".to_owned())
}
