//! What instances share through Redis besides the rate limiter's buckets: the connection, the
//! key namespace, and the once-per-outage log of a part that falls back to what this process
//! knows alone while Redis is unreachable.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a command waits for Redis's answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one attempt to (re)connect waits.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts to reconnect after the first fails, within one call (a blip is absorbed; an outage
/// is not waited out request by request).
const RECONNECT_RETRIES: usize = 1;

/// A connection to the shared Redis and the namespace every key and channel is under.
#[derive(Clone)]
pub struct SharedRedis {
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    namespace: String,
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
    pub async fn connect(url: &str, namespace: &str) -> Result<SharedRedis, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES);
        let mut conn = client.get_connection_manager_with_config(settings).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(SharedRedis {
            client,
            conn,
            namespace: namespace.to_owned(),
        })
    }

    /// A handle on the multiplexed connection (it reconnects by itself).
    pub fn conn(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
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
}

/// Logs the outage of a part that falls back while Redis is unreachable: once when it begins,
/// once when it ends, never per request.
#[derive(Debug)]
pub struct Outage {
    /// What degrades, and to what, for the log line.
    what: &'static str,
    down: AtomicBool,
}

impl Outage {
    pub const fn new(what: &'static str) -> Outage {
        Outage {
            what,
            down: AtomicBool::new(false),
        }
    }

    /// A call to Redis failed: logs the start of the outage the first time.
    pub fn failed(&self, e: &redis::RedisError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "wardgate::redis",
                error = %e,
                "Redis is unreachable: {}",
                self.what
            );
        }
    }

    /// A call to Redis succeeded: logs the end of an outage, if one was logged.
    pub fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(
                target: "wardgate::redis",
                "Redis is reachable again: shared state restored ({})",
                self.what
            );
        }
    }

    /// Whether an outage is under way (its start logged, its end not yet).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}
