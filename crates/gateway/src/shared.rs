//! What instances share through Redis besides the rate limiter's buckets: the connection, the
//! key namespace, and Redis's health as this process sees it (up or down, logged once when an
//! outage begins and once when it ends, with the requests it met, never per request).
//!
//! Redis is configured by `rate_limit.backend = "redis"` (`rate_limit.redis_url`,
//! `WARDGATE_REDIS_URL`); with it, every instance pointed at the same Redis and namespace
//! shares its rate limits and quotas (`guards::ratelimit`), its failed-authentication counts and
//! lockouts (`identity::lockout`), the revocation broadcast (`identity::revocations`) and, for
//! `wardgate llm`, the nonces of signed requests (`identity::replay`). Nothing stored or
//! published holds a secret, a credential digest usable offline, or request content.
//!
//! Every call is bounded ([`RESPONSE_TIMEOUT`], [`CONNECT_TIMEOUT`], one retry of a lost
//! connection), so an unreachable Redis costs a request at most a couple of seconds before the
//! caller falls back (or, for the limiter, refuses), not the connection manager's default of
//! six retries with a growing pause (about 6 s per call while Redis is down).
//!
//! Every Redis error that reaches a log line or the command line names the Redis as
//! `host:port` ([`RedisFailure`], [`SharedRedis::address`]), never the URL, which may hold a
//! password.
//!
//! Every command goes through [`Conn`], which tells [`RedisHealth`] how it went; so whichever
//! part meets an outage first (the limiter, the lockout, the revocation heartbeat, a
//! readiness probe), the outage is noticed and logged once, and its end once, whoever meets
//! that. The parts themselves log nothing per request about it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a command waits for Redis's answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one attempt to (re)connect waits.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts to reconnect after the first fails, within one call (a blip is absorbed; an outage
/// is not waited out request by request).
const RECONNECT_RETRIES: usize = 1;
/// How long after its last failure an outage is taken as over, at the next command that
/// succeeds. While some commands fail and others succeed (a Redis refusing writes, say) the
/// outage stays one outage, rather than a start and an end logged per request.
pub const OUTAGE_QUIET: Duration = Duration::from_secs(1);

/// A Redis error with the Redis it came from, as `host:port` (or the socket's path): what
/// a log line or the command line shows. Never the URL, which may hold a password.
#[derive(Debug)]
pub struct RedisFailure {
    /// `None`: the URL did not parse, so there is no address to name.
    address: Option<String>,
    source: redis::RedisError,
}

impl RedisFailure {
    /// `source`, met talking to the Redis at `address`.
    pub fn at(address: &str, source: redis::RedisError) -> RedisFailure {
        RedisFailure {
            address: Some(address.to_owned()),
            source,
        }
    }
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.address {
            Some(address) => write!(f, "Redis at {address}: {}", self.source),
            None => write!(
                f,
                "the Redis URL is not valid (redis://[USER:PASSWORD@]HOST:PORT[/DB]): {}",
                self.source
            ),
        }
    }
}

impl std::error::Error for RedisFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<RedisFailure> for redis::RedisError {
    /// For callers that speak `RedisError`: the same kind, and the text that names the Redis.
    fn from(e: RedisFailure) -> Self {
        redis::RedisError::from((e.source.kind(), "Redis", e.to_string()))
    }
}

/// Where `client` connects, as messages name it: `host:port`, or a socket's path.
fn address_of(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// A connection to the shared Redis and the namespace every key and channel is under.
#[derive(Clone)]
pub struct SharedRedis {
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    namespace: String,
    health: Arc<RedisHealth>,
}

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("SharedRedis")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl SharedRedis {
    /// Connects to `url` and checks the connection (a wrong URL stops the start rather than
    /// degrading every instance later); keys are `<namespace>:<name>`.
    pub async fn connect(url: &str, namespace: &str) -> Result<SharedRedis, RedisFailure> {
        let client = redis::Client::open(url).map_err(|source| RedisFailure {
            address: None,
            source,
        })?;
        let address = address_of(&client);
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES);
        let checked = async {
            let mut conn = client.get_connection_manager_with_config(settings).await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = checked
            .await
            .map_err(|source| RedisFailure::at(&address, source))?;
        Ok(SharedRedis {
            client,
            conn,
            namespace: namespace.to_owned(),
            health: Arc::new(RedisHealth::new(address)),
        })
    }

    /// Where the Redis is, as messages name it: `host:port` (never the URL).
    pub fn address(&self) -> &str {
        &self.health.address
    }

    /// `source`, as a log line or the command line shows it: naming this Redis.
    pub fn failure(&self, source: redis::RedisError) -> RedisFailure {
        RedisFailure::at(self.address(), source)
    }

    /// A handle on the multiplexed connection (it reconnects by itself), for a request's call:
    /// a failure counts the request among those the outage met.
    pub fn conn(&self) -> Conn {
        Conn {
            inner: self.conn.clone(),
            health: self.health.clone(),
            counted: true,
        }
    }

    /// As [`SharedRedis::conn`], for a call no request waits on (a heartbeat, a probe) or a
    /// request's second call (whose failure would count it twice).
    pub fn conn_uncounted(&self) -> Conn {
        Conn {
            counted: false,
            ..self.conn()
        }
    }

    /// The client, for what needs a connection of its own (a pub/sub subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The namespace keys and channels are under.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key or channel `name` in the namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.namespace)
    }

    /// Redis's health as this process has seen it.
    pub fn health(&self) -> &RedisHealth {
        &self.health
    }

    /// Whether Redis answers a `PING` within [`RESPONSE_TIMEOUT`] and no command has failed in
    /// the last [`OUTAGE_QUIET`] (for `/ready`). What it finds feeds the health too, so an
    /// outage's end is noticed even when no request needs Redis.
    pub async fn is_up(&self) -> bool {
        let mut conn = self.conn_uncounted();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(RESPONSE_TIMEOUT, ping).await {
            Ok(Ok(_)) => !self.health.is_down(),
            Ok(Err(_)) => false,
            Err(_) => {
                let timed_out = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "Redis did not answer a PING in time",
                );
                self.health.failed(&timed_out.into(), false);
                false
            }
        }
    }
}

/// The shared connection, telling [`RedisHealth`] how each command went.
#[derive(Clone)]
pub struct Conn {
    inner: redis::aio::ConnectionManager,
    health: Arc<RedisHealth>,
    /// Whether a failure counts a request the outage met.
    counted: bool,
}

impl Conn {
    fn observe<T>(&self, result: &redis::RedisResult<T>) {
        match result {
            Ok(_) => self.health.answered(),
            // Redis answered: a script not loaded yet, which `Script` loads and runs again.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.health.answered();
            }
            Err(e) => self.health.failed(e, self.counted),
        }
    }
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Redis's health as this process sees it from the commands it sends: down from a failed
/// command until one succeeds [`OUTAGE_QUIET`] after the last failure. The start of an
/// outage is logged once (with the error), and its end once (with how long it lasted and how
/// many requests it met: refused with 503 by the limits, or served on this instance's own
/// state), never per request.
#[derive(Debug)]
pub struct RedisHealth {
    /// `host:port`, for the log lines.
    address: String,
    down: AtomicBool,
    /// When this process started watching; the times below count from it.
    origin: Instant,
    /// Milliseconds from `origin` to the last failure.
    last_failure_ms: AtomicU64,
    /// Milliseconds from `origin` to the start of the outage under way.
    down_since_ms: AtomicU64,
    /// Requests the outage under way has met.
    met: AtomicU64,
}

impl RedisHealth {
    fn new(address: String) -> RedisHealth {
        RedisHealth {
            address,
            down: AtomicBool::new(false),
            origin: Instant::now(),
            last_failure_ms: AtomicU64::new(0),
            down_since_ms: AtomicU64::new(0),
            met: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A command failed with `e`; `counted`: a request needed it.
    fn failed(&self, e: &redis::RedisError, counted: bool) {
        let now = self.now_ms();
        self.last_failure_ms.store(now, Ordering::Release);
        if counted {
            self.met.fetch_add(1, Ordering::AcqRel);
        }
        if !self.down.swap(true, Ordering::AcqRel) {
            self.down_since_ms.store(now, Ordering::Release);
            tracing::warn!(
                target: "wardgate::redis",
                redis = %self.address,
                error = %e,
                "Redis at {} is unreachable ({e}): until it is back, requests that rate limits or quotas \
                 apply to are refused with 503, and failed log-ins, revocations and llm nonces \
                 fall back to what this instance knows alone. Logged once; its end will be \
                 logged with the number of requests it met",
                self.address
            );
        }
    }

    /// Redis answered a command.
    fn answered(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let now = self.now_ms();
        let quiet = u64::try_from(OUTAGE_QUIET.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(self.last_failure_ms.load(Ordering::Acquire)) < quiet {
            return;
        }
        if self.down.swap(false, Ordering::AcqRel) {
            let lasted = Duration::from_millis(
                now.saturating_sub(self.down_since_ms.load(Ordering::Acquire)),
            );
            let met = self.met.swap(0, Ordering::AcqRel);
            tracing::info!(
                target: "wardgate::redis",
                redis = %self.address,
                requests_met = met,
                "Redis at {} is reachable again after {}: shared state restored; {met} \
                 requests needed it while it was down (refused with 503, or served on this \
                 instance's own state)",
                self.address,
                humantime::format_duration(Duration::from_secs(lasted.as_secs()))
            );
        }
    }

    /// Whether an outage is under way (its start logged, its end not yet).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What a failed connection says names the Redis as `host:port`, never the password in
    /// its URL; a URL that does not parse is not quoted either.
    #[tokio::test]
    async fn a_failure_names_the_redis_by_host_and_port_never_its_password() {
        for url in [
            "redis://:pw-secret-1@127.0.0.1:1",
            "redis://someone:pw-secret-1@127.0.0.1:1/0",
        ] {
            let said = SharedRedis::connect(url, "ns")
                .await
                .unwrap_err()
                .to_string();
            assert!(said.contains("Redis at 127.0.0.1:1: "), "{said}");
            assert!(!said.contains("pw-secret-1"), "{said}");
            // Through the limiter's `RedisError` too.
            let said = redis::RedisError::from(SharedRedis::connect(url, "ns").await.unwrap_err())
                .to_string();
            assert!(said.contains("Redis at 127.0.0.1:1: "), "{said}");
            assert!(!said.contains("pw-secret-1"), "{said}");
        }
        let said = SharedRedis::connect("redis://:pw-secret-1@", "ns")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            said.contains("not valid") && !said.contains("pw-secret-1"),
            "{said}"
        );
    }
}
