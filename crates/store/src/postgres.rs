//! `PgStore`: the PostgreSQL implementation of the key, tenant and health traits, for
//! deployments where several gateways share one database; and its migrations (`postgres/
//! migrate.rs`, from `migrations_pg/`), applied by `wardgate migrate`, never by a start.
//!
//! It works through PgBouncer in transaction-pooling mode, where each transaction of a client
//! connection may run on a different server connection. So nothing outlives a transaction:
//! - every statement is unnamed (`persistent(false)`, and the connection's statement cache
//!   is off): a named prepared statement exists on one server connection only, and another
//!   client's statement of the same name would collide with it there;
//! - every call runs in an explicit transaction: sqlx parses an unnamed statement and then
//!   binds it in a second exchange, each ending in a `Sync`; outside a transaction PgBouncer
//!   may hand the second to a server connection that never saw the first;
//! - no session state at all: no `SET`, no session advisory lock (migrations take a
//!   transaction-scoped one), no `LISTEN`, no temporary tables.

use std::fmt;
use std::str::FromStr as _;
use std::time::Duration;

use sha2::Digest as _;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Connection as _, PgConnection, Postgres};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use crate::keys;
use crate::records::{self, unavailable};
use crate::{
    ApiKeyRecord, AuditDurability, Health, KeyStore, KeyVerdict, NewKey, NewKeySpec, RejectReason,
    Revocation, Rotated, StoreError, Tenant, TenantStore, names,
};

pub(crate) mod audit;
mod bounded;
pub mod migrate;

pub use bounded::{DEFAULT_QUERY_TIMEOUT, MAX_QUERY_TIMEOUT, TimedOut};
pub use migrate::{Migrated, SchemaVersion};

/// Default of the pool's size (`storage.max_connections`): connections one instance may hold.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// The largest pool one instance may ask for. PostgreSQL's own default `max_connections` is
/// 100 for all clients together, so even this is far more than one instance should hold.
pub const MAX_MAX_CONNECTIONS: u32 = 1_000;
/// Default of how long a caller waits for a free pooled connection (or a new one) before the
/// store counts as unavailable: while the database is down, how long a request waits for its
/// 503.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a [`PgStore`]'s pool is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// The most connections this store holds at once (1 to [`MAX_MAX_CONNECTIONS`]).
    pub max_connections: u32,
    /// How long a call waits for a connection before the store counts as unavailable.
    pub acquire_timeout: Duration,
    /// How long one call may take in all (the wait for a connection included), above zero and
    /// at most [`MAX_QUERY_TIMEOUT`]; migrations excepted. See `postgres/bounded.rs`.
    pub query_timeout: Duration,
    /// How far an audit enqueue's commit has gone when it returns (`audit.durability`):
    /// [`AuditDurability::Disk`] leaves PostgreSQL's own `synchronous_commit` alone (`on` by
    /// default: flushed, and replicated as the server is set to); [`AuditDurability::Process`]
    /// turns it off for the enqueue's transaction only, so the commit returns once PostgreSQL
    /// has it in memory: it survives the gateway dying and is never half-written, but a crash
    /// of the database server can lose the last enqueues (up to three `wal_writer_delay`s,
    /// 600 ms by default). Nothing else the store writes is relaxed.
    pub audit_durability: AuditDurability,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            audit_durability: AuditDurability::Disk,
        }
    }
}

/// A pooled connection idle at least this long is pinged before a call uses it (see
/// [`PgStore::connect`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
}

/// The connection parameters a URL may carry (libpq's names and sqlx's spellings). Anything
/// else is refused rather than ignored: sqlx would log an unknown parameter with its value.
const URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A PostgreSQL URL, parsed and checked. It may hold a password, so it never prints: its
/// `Debug` and `Display` show only where it points (`host:port/database`).
#[derive(Clone)]
pub struct PgUrl {
    options: PgConnectOptions,
    shown: String,
    /// SHA-256 of the whole URL, to tell two URLs apart without keeping the text.
    digest: [u8; 32],
    /// Whether the URL (or `PGSSLMODE`) chose an `sslmode`, rather than leaving libpq's
    /// default, `prefer`.
    sslmode_given: bool,
}

impl PgUrl {
    /// Parses `url` (`postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...`). The error
    /// never quotes the URL.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if !is_postgres_url(url) {
            return Err(StoreError::Invalid(
                "a PostgreSQL URL starts with postgres:// or postgresql://".into(),
            ));
        }
        if let Some((_, query)) = url.split_once('?') {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                let known = URL_PARAMETERS.contains(&key)
                    || (key.starts_with("options[") && key.ends_with(']'));
                if !known {
                    // Text after a `?` is a parameter name only if it looks like one: a
                    // password holding an unencoded `?` puts part of itself here.
                    let named = key.len() <= 40
                        && !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-');
                    return Err(StoreError::Invalid(if named {
                        format!(
                            "the PostgreSQL URL has a parameter this build does not know \
                             (`{key}`); known: {}",
                            URL_PARAMETERS.join(", ")
                        )
                    } else {
                        "the PostgreSQL URL has text after a `?` that is not a parameter name \
                         (not shown: it may be part of a password; percent-encode `?`, `@`, \
                         `/` and `#` in a password, e.g. `?` as %3F)"
                            .to_owned()
                    }));
                }
            }
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Invalid(format!(
                "not a valid PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE): {}",
                config_reason(&e)
            ))
        })?;
        let shown = match options.get_socket() {
            Some(socket) => format!(
                "{}/{}",
                socket.display(),
                options.get_database().unwrap_or("")
            ),
            None => format!(
                "{}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("")
            ),
        };
        let digest = sha2::Sha256::digest(url.as_bytes()).into();
        let in_url = url.split_once('?').is_some_and(|(_, query)| {
            query.split('&').any(|pair| {
                let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                key == "sslmode" || key == "ssl-mode"
            })
        });
        let sslmode_given = in_url || std::env::var_os("PGSSLMODE").is_some();
        Ok(Self {
            options,
            shown,
            digest,
            sslmode_given,
        })
    }

    /// Whether `other` was parsed from the same text (compared in constant time: it may hold
    /// a password).
    pub fn same_as(&self, other: &PgUrl) -> bool {
        self.digest.ct_eq(&other.digest).into()
    }

    /// Where the URL points, without user or password: `host:port/database`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The URL with `schema` first on the search path (sent as a startup option, so it holds
    /// for every connection without a `SET`). For tests that each want a schema of their own.
    /// PgBouncer refuses startup options; give it a database of its own instead.
    pub fn with_search_path(mut self, schema: &str) -> Self {
        self.options = self.options.options([("search_path", schema)]);
        self
    }

    /// The URL pointing at database `name` on the same server (tests).
    #[cfg(test)]
    pub(crate) fn with_database(mut self, name: &str) -> Self {
        self.options = self.options.database(name);
        self
    }

    /// The URL pointing at `host:port` instead, same user and database (tests: a PgBouncer
    /// or a proxy in front of the server).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn with_address(mut self, host: &str, port: u16) -> Self {
        self.options = self.options.host(host).port(port);
        self.shown = format!(
            "{host}:{port}/{}",
            self.options.get_database().unwrap_or("")
        );
        self
    }

    /// The server's host and port (tests: where a PgBouncer or a proxy forwards to).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn address(&self) -> (String, u16) {
        (self.options.get_host().to_owned(), self.options.get_port())
    }

    /// The user name (tests: PgBouncer's user list).
    #[cfg(test)]
    pub(crate) fn username(&self) -> &str {
        self.options.get_username()
    }

    /// The sqlx options (tests: an administrative connection of their own).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// The `sslmode` asked for (libpq's word).
    pub fn sslmode(&self) -> &'static str {
        sslmode_word(self.options.get_ssl_mode())
    }

    /// What to warn of when the URL names a server on another machine without choosing an
    /// `sslmode`: libpq's default, `prefer`, uses TLS only if the server offers it and never
    /// checks whose certificate it is, so credentials and audit events may cross the network
    /// readable, or to whoever sits in the path. `None` for a Unix socket or a loopback
    /// address, and for any `sslmode` the operator chose, `disable` included.
    pub fn default_tls_warning(&self) -> Option<String> {
        if self.sslmode_given || self.options.get_socket().is_some() {
            return None;
        }
        let host = self.options.get_host();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let local = host.eq_ignore_ascii_case("localhost")
            || host.starts_with('/')
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (!local).then(|| {
            format!(
                "the database URL for {} sets no sslmode, so libpq's default `prefer` applies: \
                 TLS only if the server offers it, and the server's certificate is never \
                 checked. Add sslmode=verify-full to the URL (with sslrootcert=PATH for a \
                 private CA), or sslmode=disable to say that this network needs no encryption",
                self.shown
            )
        })
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

fn sslmode_word(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Why sqlx refused a URL, without quoting it.
fn config_reason(e: &sqlx::Error) -> String {
    match e {
        // sqlx's configuration errors name the part that is wrong (a port that is not a
        // number, an unknown sslmode), never the URL or its password.
        sqlx::Error::Configuration(reason) => reason.to_string(),
        _ => "unreadable".into(),
    }
}

/// Why connecting failed, with what to do about it. Names the server as `host:port/database`
/// only.
#[derive(Debug)]
pub struct ConnectError {
    target: String,
    sslmode: &'static str,
    source: sqlx::Error,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (target, mode) = (&self.target, self.sslmode);
        match &self.source {
            sqlx::Error::Tls(reason) if reason.to_string().contains("does not support TLS") => {
                write!(
                    f,
                    "PostgreSQL at {target} does not offer TLS, and sslmode={mode} requires it: \
                     turn on ssl in the server, or connect through something that offers it"
                )
            }
            reason if is_tls_failure(reason) => write!(
                f,
                "TLS to PostgreSQL at {target} failed (sslmode={mode}): {}. With \
                 sslmode=verify-ca or verify-full the server's certificate must chain to a \
                 public root (Mozilla's list) or to the CA file named by sslrootcert=PATH in the \
                 URL, and for verify-full name the host; sslmode=require encrypts without \
                 checking the certificate",
                crate::driver::said(reason)
            ),
            other => write!(
                f,
                "cannot connect to PostgreSQL at {target} (sslmode={mode}): {}",
                crate::driver::said(other)
            ),
        }
    }
}

/// Whether connecting failed in the TLS handshake. sqlx reports a refused certificate as an
/// IO error whose text is rustls's (this crate does not link rustls to look at its type).
fn is_tls_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => {
            let text = io.to_string();
            text.contains("certificate") || text.contains("handshake") || text.contains("TLS")
        }
        _ => false,
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

/// The PostgreSQL store. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    shown: String,
    query_timeout: Duration,
    audit_durability: AuditDurability,
}

impl PgStore {
    /// Connects a pool of at most `options.max_connections` to `url`, opening one connection
    /// now so that a wrong address, password or TLS setting fails here. Does not look at the
    /// schema: [`PgStore::check_schema`] (a gateway's start) and [`PgStore::migrate`]
    /// (`wardgate migrate`) do.
    pub async fn connect(url: &PgUrl, options: PgOptions) -> Result<Self, StoreError> {
        if options.max_connections == 0 || options.max_connections > MAX_MAX_CONNECTIONS {
            return Err(StoreError::Invalid(format!(
                "the PostgreSQL pool size must be 1 to {MAX_MAX_CONNECTIONS}"
            )));
        }
        if options.query_timeout.is_zero() || options.query_timeout > MAX_QUERY_TIMEOUT {
            return Err(StoreError::Invalid(format!(
                "the PostgreSQL query timeout must be above zero and at most {} s",
                MAX_QUERY_TIMEOUT.as_secs()
            )));
        }
        let connect = url
            .options
            .clone()
            // A named statement would outlive its transaction (see the module comment).
            .statement_cache_capacity(0)
            // Startup parameters PgBouncer does not know make it refuse the connection, and
            // this store reads no floating-point values.
            .extra_float_digits(None);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings a connection when it goes back to the pool and, by default, again
            // when it is taken: two round trips around every call's BEGIN, statement and
            // COMMIT. A connection that was idle a moment ago passed its release ping just
            // then; only one idle longer is pinged before use (the server may have closed
            // it meanwhile: a restart, an idle timeout, a proxy).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await
            .map_err(|source| {
                StoreError::Unavailable(Box::new(ConnectError {
                    target: url.shown.clone(),
                    sslmode: url.sslmode(),
                    source,
                }))
            })?;
        Ok(Self {
            pool,
            shown: url.shown.clone(),
            query_timeout: options.query_timeout,
            audit_durability: options.audit_durability,
        })
    }

    /// The connection pool, for migrations and tests; every other call goes through
    /// [`PgStore::bounded`]. Whatever runs on it must keep to the module comment's rules.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where the store points, `host:port/database`: safe to print.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs one of the key updates (`$1` a time, `$2` the key's id) in a transaction of its
    /// own; the number of rows it changed.
    async fn update_key(&self, sql: &'static str, at: i64, id: &str) -> Result<u64, StoreError> {
        self.bounded(async |tx: &mut PgConnection| {
            let result = query(sql)
                .bind(at)
                .bind(id)
                .execute(tx)
                .await
                .map_err(unavailable)?;
            Ok(result.rows_affected())
        })
        .await
    }

    /// Inserts tenant `name` unless it exists; whether this call inserted it, and the tenant.
    /// Of concurrent inserts of one name, the unique index lets exactly one insert the row.
    async fn insert_tenant(&self, name: &str) -> Result<(bool, Tenant), StoreError> {
        names::validate_tenant(name)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let (inserted, row) = self
            .bounded(async |tx: &mut PgConnection| {
                let inserted = query(records::INSERT_TENANT)
                    .bind(name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
                let row = query(records::SELECT_TENANT)
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                Ok::<_, StoreError>((inserted, row))
            })
            .await?;
        Ok((inserted > 0, records::tenant_from_row(&row)?))
    }
}

/// A statement that is never prepared under a name (see the module comment).
fn query(sql: &'static str) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    sqlx::query(sql).persistent(false)
}

impl records::InsertKey for PgStore {
    async fn insert_key(
        &self,
        key: records::KeyInsert<'_>,
    ) -> Result<records::Written, records::InsertError> {
        // A key that replaces none it was to replace wrote nothing, so the commit changes
        // nothing either.
        self.bounded(async |tx: &mut PgConnection| Ok(records::write_key!(tx, key, query)))
            .await
    }
}

#[async_trait::async_trait]
impl KeyStore for PgStore {
    async fn create_key(&self, spec: NewKeySpec) -> Result<NewKey, StoreError> {
        records::create_key(self, spec).await
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        if let Some(tenant) = tenant {
            names::validate_tenant(tenant)?;
        }
        let rows = self
            .bounded(async |tx: &mut PgConnection| {
                match tenant {
                    Some(tenant) => {
                        query(records::LIST_TENANT_KEYS)
                            .bind(tenant)
                            .fetch_all(tx)
                            .await
                    }
                    None => query(records::LIST_ALL_KEYS).fetch_all(tx).await,
                }
                .map_err(unavailable)
            })
            .await?;
        rows.iter()
            .map(|row| records::record_from_row(row))
            .collect()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = self
            .bounded(async |tx: &mut PgConnection| {
                query(records::KEY_BY_ID)
                    .bind(id)
                    .fetch_optional(tx)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        row.as_ref()
            .map(|row| records::record_from_row(row))
            .transpose()
    }

    async fn revoke_key(&self, id: &str) -> Result<Revocation, StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let revoked = self.update_key(records::REVOKE_KEY, now, id).await?;
        // No row updated: revoked already, or no such key (see `records::REVOKE_KEY`).
        let exists = revoked > 0 || self.get_key(id).await?.is_some();
        records::revocation(revoked, exists)
    }

    async fn expire_key_by(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        let at = records::whole_seconds_up(at)?.unix_timestamp();
        records::found(self.update_key(records::EXPIRE_KEY_BY, at, id).await?)
    }

    async fn rotate_key(
        &self,
        id: &str,
        overlap: Duration,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<Rotated, StoreError> {
        records::rotate_key(self, id, overlap, expires_at).await
    }

    async fn touch_key(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.update_key(records::TOUCH_KEY, at.unix_timestamp(), id)
            .await
            .map(drop)
    }

    async fn verify(&self, presented: &str, now: OffsetDateTime) -> Result<KeyVerdict, StoreError> {
        let Some(parsed) = keys::parse(presented) else {
            return Ok(KeyVerdict::Rejected(RejectReason::Malformed));
        };
        let presented_hash = parsed.hash();
        let row = self
            .bounded(async |tx: &mut PgConnection| {
                query(records::KEY_BY_PREFIX)
                    .bind(parsed.prefix())
                    .fetch_optional(tx)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let stored = row
            .as_ref()
            .map(|row| records::hash_and_record(row))
            .transpose()?;
        Ok(keys::decide(&presented_hash, stored, now))
    }
}

#[async_trait::async_trait]
impl TenantStore for PgStore {
    async fn ensure_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        Ok(self.insert_tenant(name).await?.1)
    }

    async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        match self.insert_tenant(name).await? {
            (true, t) => Ok(t),
            (false, _) => Err(records::tenant_exists()),
        }
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = self
            .bounded(async |tx: &mut PgConnection| {
                query(records::LIST_TENANTS)
                    .fetch_all(tx)
                    .await
                    .map_err(unavailable)
            })
            .await?;
        rows.iter()
            .map(|row| records::tenant_from_row(row))
            .collect()
    }
}

#[async_trait::async_trait]
impl Health for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // The simple-query protocol: one round trip, nothing prepared; in a bounded
        // transaction as every call is, so that a silent link fails the probe in time.
        self.bounded(async |tx: &mut PgConnection| {
            sqlx::raw_sql("SELECT 1")
                .execute(tx)
                .await
                .map_err(unavailable)
                .map(drop)
        })
        .await
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
