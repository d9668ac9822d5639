//! `[storage]`: where keys, tenants and the audit log live: a SQLite file (the embedded
//! default) or a PostgreSQL database shared by several gateways.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardgate_store::postgres::{self, PgUrl};

use super::{ConfigError, HumanDuration, duration};

/// Default of `storage.sqlite_path`, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "data/wardgate.db";
/// Default of `storage.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = postgres::DEFAULT_MAX_CONNECTIONS;
/// Largest `storage.max_connections`.
pub const MAX_MAX_CONNECTIONS: u32 = postgres::MAX_MAX_CONNECTIONS;
/// Default of `storage.acquire_timeout`.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = postgres::DEFAULT_ACQUIRE_TIMEOUT;
/// Longest `storage.acquire_timeout`.
pub const MAX_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `storage.query_timeout`.
pub const DEFAULT_QUERY_TIMEOUT: Duration = postgres::DEFAULT_QUERY_TIMEOUT;
/// Longest `storage.query_timeout`.
pub const MAX_QUERY_TIMEOUT: Duration = postgres::MAX_QUERY_TIMEOUT;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// The database, as a URL: `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full`
    /// (or `postgresql://`) for PostgreSQL, `sqlite://PATH` for a SQLite file. Default: the
    /// SQLite file at `sqlite_path`. Set it or `sqlite_path`, not both. It may hold a password:
    /// give it in `WARDGATE_DATABASE_URL` rather than in this file. It never prints.
    pub url: Option<RawUrl>,
    /// SQLite database file. Default `data/wardgate.db` (in the working directory).
    pub sqlite_path: Option<PathBuf>,
    /// PostgreSQL only: the most connections this instance holds (1 to 1000). Default 10. The
    /// database sees this times the number of instances (plus `wardgate` commands).
    pub max_connections: Option<u32>,
    /// PostgreSQL only: how long a call waits for a pooled connection (or a new one) before
    /// the database counts as unavailable. While the database is down, this is how long a
    /// model request waits for its 503 and `/ready` for its answer. Default `2s`, at most `60s`.
    pub acquire_timeout: Option<HumanDuration>,
    /// PostgreSQL only: how long one store call may take in all (the wait for a connection,
    /// the statements, the commit) before it fails as unavailable and its connection is
    /// dropped; `wardgate migrate` excepted. It bounds the harm of a database link gone silent
    /// (no answer, no error). Default `10s`, at most `10m`.
    pub query_timeout: Option<HumanDuration>,
}

/// `storage.url` as written. It may hold a password, so its `Debug` shows none of it (the raw
/// configuration is printed in tests and could be in errors).
#[derive(Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct RawUrl(String);

impl std::fmt::Debug for RawUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawUrl(..)")
    }
}

/// A PostgreSQL database, validated: where it is and how many connections to hold.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// The URL (prints as `host:port/database` only).
    pub url: PgUrl,
    /// The pool's size.
    pub max_connections: u32,
    /// How long a call waits for a connection.
    pub acquire_timeout: Duration,
    /// How long one call may take in all.
    pub query_timeout: Duration,
}

impl PartialEq for PostgresSettings {
    fn eq(&self, other: &Self) -> bool {
        self.url.same_as(&other.url)
            && self.max_connections == other.max_connections
            && self.acquire_timeout == other.acquire_timeout
            && self.query_timeout == other.query_timeout
    }
}

/// `[storage]`, validated: the SQLite file (still where `wardgate llm` and the audit log's
/// default files go) and, when the URL names one, the PostgreSQL database.
pub(super) fn storage(
    raw: &RawStorage,
) -> Result<(PathBuf, Option<PostgresSettings>), ConfigError> {
    let default_path = || PathBuf::from(DEFAULT_SQLITE_PATH);
    let Some(RawUrl(url)) = raw.url.as_ref() else {
        if raw.query_timeout.is_some() {
            return Err(ConfigError::new(
                "storage.query_timeout",
                "bounds PostgreSQL calls, but storage.url (WARDGATE_DATABASE_URL) names no \
                 PostgreSQL database: remove it, or set the URL",
            ));
        }
        if raw.acquire_timeout.is_some() {
            return Err(ConfigError::new(
                "storage.acquire_timeout",
                "bounds the PostgreSQL pool's wait, but storage.url (WARDGATE_DATABASE_URL) \
                 names no PostgreSQL database: remove it, or set the URL",
            ));
        }
        if raw.max_connections.is_some() {
            return Err(ConfigError::new(
                "storage.max_connections",
                "sizes the PostgreSQL pool, but storage.url (WARDGATE_DATABASE_URL) names no \
                 PostgreSQL database: remove it, or set the URL",
            ));
        }
        return Ok((raw.sqlite_path.clone().unwrap_or_else(default_path), None));
    };
    if raw.sqlite_path.is_some() {
        return Err(ConfigError::new(
            "storage.url",
            "storage.url (WARDGATE_DATABASE_URL) and storage.sqlite_path (WARDGATE_DB) are both \
             set; they name the database two ways: keep one",
        ));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(ConfigError::new(
                "storage.url",
                "sqlite:// needs a file path, e.g. sqlite://data/wardgate.db",
            ));
        }
        if raw.max_connections.is_some() {
            return Err(ConfigError::new(
                "storage.max_connections",
                "sizes the PostgreSQL pool; a SQLite file has none: remove it",
            ));
        }
        if raw.acquire_timeout.is_some() {
            return Err(ConfigError::new(
                "storage.acquire_timeout",
                "bounds the PostgreSQL pool's wait; a SQLite file has none: remove it",
            ));
        }
        if raw.query_timeout.is_some() {
            return Err(ConfigError::new(
                "storage.query_timeout",
                "bounds PostgreSQL calls; a SQLite file is not reached over a network: remove it",
            ));
        }
        return Ok((PathBuf::from(path), None));
    }
    if !postgres::is_postgres_url(url) {
        return Err(ConfigError::new(
            "storage.url",
            "must start with postgres:// or postgresql:// (PostgreSQL) or sqlite:// (a SQLite \
             file)",
        ));
    }
    let url = PgUrl::parse(url).map_err(|e| ConfigError::new("storage.url", e.to_string()))?;
    let max_connections = match raw.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(0) => {
            return Err(ConfigError::new(
                "storage.max_connections",
                "must be greater than zero",
            ));
        }
        Some(n) => n,
    };
    let acquire_timeout = duration(
        "storage.acquire_timeout",
        raw.acquire_timeout.as_deref(),
        DEFAULT_ACQUIRE_TIMEOUT,
    )?;
    if acquire_timeout.is_zero() || acquire_timeout > MAX_ACQUIRE_TIMEOUT {
        return Err(ConfigError::new(
            "storage.acquire_timeout",
            "must be more than zero and at most 60s",
        ));
    }
    let query_timeout = duration(
        "storage.query_timeout",
        raw.query_timeout.as_deref(),
        DEFAULT_QUERY_TIMEOUT,
    )?;
    if query_timeout.is_zero() || query_timeout > MAX_QUERY_TIMEOUT {
        return Err(ConfigError::new(
            "storage.query_timeout",
            "must be more than zero and at most 10m",
        ));
    }
    Ok((
        default_path(),
        Some(PostgresSettings {
            url,
            max_connections,
            acquire_timeout,
            query_timeout,
        }),
    ))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use std::path::Path;

    use super::*;
    use crate::config::{Config, RawConfig};

    const URL: &str = "postgres://app:hunter2@db.internal:5432/wardgate?sslmode=verify-full";

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let raw: RawConfig = crate::config::parse_toml(file).unwrap();
        let env = |k: &str| {
            env.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        };
        Config::from_raw(raw, &env)
    }

    #[test]
    fn a_postgres_url_selects_postgresql_and_never_prints() {
        for (file, env) in [
            (format!("[storage]\nurl = \"{URL}\"\n"), vec![]),
            (String::new(), vec![("WARDGATE_DATABASE_URL", URL)]),
        ] {
            let c = load(&file, &env).unwrap();
            let pg = c.postgres.as_ref().unwrap();
            assert_eq!(pg.url.shown(), "db.internal:5432/wardgate");
            assert_eq!(pg.url.sslmode(), "verify-full");
            assert_eq!(pg.max_connections, DEFAULT_MAX_CONNECTIONS);
            assert_eq!(pg.max_connections, 10);
            assert_eq!(pg.acquire_timeout, DEFAULT_ACQUIRE_TIMEOUT);
            assert_eq!(pg.acquire_timeout, std::time::Duration::from_secs(2));
            assert_eq!(pg.query_timeout, DEFAULT_QUERY_TIMEOUT);
            assert_eq!(pg.query_timeout, std::time::Duration::from_secs(10));
            let printed = format!("{c:?}");
            assert!(!printed.contains("hunter2"), "{printed}");
            let raw = crate::config::parse_toml(&file).unwrap();
            assert!(!format!("{raw:?}").contains("hunter2"));
            assert!(c.own_text().iter().all(|t| !t.contains("hunter2")));
        }
        let c = load(
            "[storage]\nurl = \"postgresql://db/wardgate\"\nmax_connections = 25\n",
            &[
                ("WARDGATE_DATABASE_ACQUIRE_TIMEOUT", "500ms"),
                ("WARDGATE_DATABASE_QUERY_TIMEOUT", "3s"),
            ],
        )
        .unwrap();
        let pg = c.postgres.unwrap();
        assert_eq!(pg.max_connections, 25);
        assert_eq!(pg.acquire_timeout, std::time::Duration::from_millis(500));
        assert_eq!(pg.query_timeout, std::time::Duration::from_secs(3));
        let c = load(
            "[storage]\nurl = \"postgresql://db/wardgate\"\nquery_timeout = \"10m\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.postgres.unwrap().query_timeout, MAX_QUERY_TIMEOUT);
    }

    #[test]
    fn no_url_or_a_sqlite_url_keeps_the_sqlite_file() {
        let c = load("", &[]).unwrap();
        assert!(c.postgres.is_none());
        assert_eq!(c.sqlite_path, Path::new(DEFAULT_SQLITE_PATH));
        let c = load("[storage]\nurl = \"sqlite://state/wg.db\"\n", &[]).unwrap();
        assert!(c.postgres.is_none());
        assert_eq!(c.sqlite_path, Path::new("state/wg.db"));
        let c = load("", &[("WARDGATE_DB", "/var/lib/wg.db")]).unwrap();
        assert_eq!(c.sqlite_path, Path::new("/var/lib/wg.db"));
    }

    #[test]
    fn storage_mistakes_are_refused_naming_the_key_and_never_the_password() {
        /// A config file, the environment, and the key the error must name.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            // Two ways of naming the database.
            (
                "[storage]\nsqlite_path = \"a.db\"\n",
                &[("WARDGATE_DATABASE_URL", URL)],
                "storage.url",
            ),
            (
                "",
                &[
                    ("WARDGATE_DATABASE_URL", "sqlite://b.db"),
                    ("WARDGATE_DB", "a.db"),
                ],
                "storage.url",
            ),
            (
                "[storage]\nurl = \"mysql://app:hunter2@db/wg\"\n",
                &[],
                "storage.url",
            ),
            (
                "[storage]\nurl = \"postgres://app:hunter2@db:notaport/wg\"\n",
                &[],
                "storage.url",
            ),
            (
                "[storage]\nurl = \"postgres://app:hunter2@db/wg?passwd=hunter2\"\n",
                &[],
                "storage.url",
            ),
            ("[storage]\nurl = \"sqlite://\"\n", &[], "storage.url"),
            // The pool's wait: PostgreSQL only, positive, bounded.
            (
                "[storage]\nacquire_timeout = \"1s\"\n",
                &[],
                "storage.acquire_timeout",
            ),
            (
                "[storage]\nurl = \"sqlite://a.db\"\nacquire_timeout = \"1s\"\n",
                &[],
                "storage.acquire_timeout",
            ),
            (
                "",
                &[
                    ("WARDGATE_DATABASE_URL", URL),
                    ("WARDGATE_DATABASE_ACQUIRE_TIMEOUT", "0s"),
                ],
                "storage.acquire_timeout",
            ),
            (
                "",
                &[
                    ("WARDGATE_DATABASE_URL", URL),
                    ("WARDGATE_DATABASE_ACQUIRE_TIMEOUT", "2m"),
                ],
                "storage.acquire_timeout",
            ),
            // The bound on each call: PostgreSQL only, positive, at most ten minutes, a
            // duration.
            (
                "[storage]\nquery_timeout = \"1s\"\n",
                &[],
                "storage.query_timeout",
            ),
            (
                "[storage]\nurl = \"sqlite://a.db\"\nquery_timeout = \"1s\"\n",
                &[],
                "storage.query_timeout",
            ),
            (
                "",
                &[
                    ("WARDGATE_DATABASE_URL", URL),
                    ("WARDGATE_DATABASE_QUERY_TIMEOUT", "0s"),
                ],
                "storage.query_timeout",
            ),
            (
                "",
                &[
                    ("WARDGATE_DATABASE_URL", URL),
                    ("WARDGATE_DATABASE_QUERY_TIMEOUT", "10m1s"),
                ],
                "storage.query_timeout",
            ),
            (
                "",
                &[
                    ("WARDGATE_DATABASE_URL", URL),
                    ("WARDGATE_DATABASE_QUERY_TIMEOUT", "-5s"),
                ],
                "storage.query_timeout",
            ),
            (
                "",
                &[
                    ("WARDGATE_DATABASE_URL", URL),
                    ("WARDGATE_DATABASE_QUERY_TIMEOUT", "soon"),
                ],
                "storage.query_timeout",
            ),
            (
                "[storage]\nmax_connections = 5\n",
                &[],
                "storage.max_connections",
            ),
            (
                "[storage]\nurl = \"postgres://db/wg\"\nmax_connections = 0\n",
                &[],
                "storage.max_connections",
            ),
            (
                "[storage]\nurl = \"postgres://db/wg\"\nmax_connections = 1001\n",
                &[],
                "storage.max_connections",
            ),
            (
                "[storage]\nurl = \"sqlite://a.db\"\nmax_connections = 5\n",
                &[],
                "storage.max_connections",
            ),
        ];
        for (file, env, key) in cases {
            let e = load(file, env).unwrap_err();
            assert_eq!(e.key, *key, "{file} {env:?}: {}", e.reason);
            assert!(!e.reason.contains("hunter2"), "{}", e.reason);
        }
    }

    #[test]
    fn the_llm_role_keeps_its_own_sqlite_file_beside_a_shared_postgresql() {
        let raw = crate::config::parse_toml(&format!("[storage]\nurl = \"{URL}\"\n")).unwrap();
        let c = Config::from_raw_llm(raw, &|_| None).unwrap();
        assert!(c.postgres.is_none());
        assert_eq!(c.sqlite_path, Path::new("data/llm/wardgate.db"));
        let raw = crate::config::parse_toml("[storage]\nurl = \"sqlite://srv/wg.db\"\n").unwrap();
        let c = Config::from_raw_llm(raw, &|_| None).unwrap();
        assert_eq!(c.sqlite_path, Path::new("srv/llm/wardgate.db"));
    }
}
