//! Test support, for this crate's tests and (with the `testing` feature) other crates': a
//! PostgreSQL schema of a test's own on the test server (`WARDGATE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), so that tests run in parallel beside each other.
//! A server that cannot be reached fails the test, naming the variable.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test support: a failure here fails the test that called it"
)]

use sqlx::Connection as _;

use super::{PgOptions, PgStore, PgUrl};

/// The variable naming the test server.
pub const URL_VAR: &str = "WARDGATE_TEST_DATABASE_URL";
/// The server used when the variable is unset (this machine's and CI's).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL.
pub fn server_url() -> PgUrl {
    let url = std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    PgUrl::parse(&url).unwrap_or_else(|e| panic!("{URL_VAR} is not a PostgreSQL URL: {e}"))
}

/// A name no other test uses (`wg_test_` and 32 hex digits).
pub fn unique_name() -> String {
    format!("wg_test_{}", uuid::Uuid::new_v4().simple())
}

/// An administrative connection to `url`; failing to connect fails the test, naming the
/// variable to set.
pub async fn admin(url: &PgUrl) -> sqlx::PgConnection {
    sqlx::PgConnection::connect_with(url.connect_options())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url} ({e}). The PostgreSQL tests need a server: \
                 start one, or set {URL_VAR} to postgres://USER@HOST:PORT/DATABASE (default \
                 {DEFAULT_URL})"
            )
        })
}

/// Runs `sql` (the test's own text) on `conn`.
pub async fn run(conn: &mut sqlx::PgConnection, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .unwrap();
}

/// A schema of the test's own on the test server, first on its connections' search path.
pub struct TestSchema {
    name: String,
    /// The test server's URL with the schema first on the search path.
    pub url: PgUrl,
    admin: sqlx::PgConnection,
}

impl TestSchema {
    /// Creates the schema.
    pub async fn new() -> Self {
        let server = server_url();
        let mut admin = admin(&server).await;
        let name = unique_name();
        run(&mut admin, format!("CREATE SCHEMA {name}")).await;
        Self {
            url: server.with_search_path(&name),
            name,
            admin,
        }
    }

    /// A store on the schema, not migrated.
    pub async fn store(&self) -> PgStore {
        PgStore::connect(
            &self.url,
            PgOptions {
                max_connections: 4,
                ..PgOptions::default()
            },
        )
        .await
        .unwrap()
    }

    /// A store on the schema, migrated to this build's version.
    pub async fn migrated(&self) -> PgStore {
        let store = self.store().await;
        store.migrate().await.unwrap();
        store
    }

    /// Drops the schema and everything in it.
    pub async fn drop(mut self) {
        // A session left holding locks on the schema's tables (a transaction whose commit a
        // test's frozen link swallowed, which the server keeps until it notices the connection
        // gone) would block the drop; only sessions locking this test's own tables are ended.
        run(
            &mut self.admin,
            format!(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                 JOIN pg_class c ON c.oid = l.relation \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = '{}' AND l.pid <> pg_backend_pid()",
                self.name
            ),
        )
        .await;
        run(
            &mut self.admin,
            format!("DROP SCHEMA {} CASCADE", self.name),
        )
        .await;
    }
}

/// A TCP proxy in front of the test server that the test can freeze: from then on it forwards
/// nothing, either way, on the connections it holds and on any it accepts, yet closes none
/// (what a firewall or NAT that dropped the flow looks like: no data, no error). Thawed, it
/// forwards again; what it dropped meanwhile stays lost.
pub struct SilentLink {
    /// Where the proxy listens, on 127.0.0.1.
    pub port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl SilentLink {
    /// A proxy to the server `url` points at.
    pub async fn start(url: &PgUrl) -> Self {
        let (host, port) = url.address();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = frozen.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect((host.as_str(), port)).await else {
                    continue;
                };
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                tokio::spawn(Self::pump(from_client, to_server, f.clone()));
                tokio::spawn(Self::pump(from_server, to_client, f.clone()));
            }
        });
        Self {
            port: local,
            frozen,
            accepting,
        }
    }

    /// `url` (same user, database and options) through this proxy.
    pub fn url(&self, url: &PgUrl) -> PgUrl {
        url.clone().with_address("127.0.0.1", self.port)
    }

    /// Copies until either side closes; while frozen, what is read is dropped.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !frozen.load(std::sync::atomic::Ordering::SeqCst)
                && to.write_all(&buf[..n]).await.is_err()
            {
                return;
            }
        }
    }

    /// The link goes silent.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The link forwards again.
    pub fn thaw(&self) {
        self.frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SilentLink {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
