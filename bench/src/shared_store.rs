//! The scale-out set-up `gateway-load --scale-out` measures: a PostgreSQL database of the run's
//! own (created on the given server, migrated with `wardgate migrate`, dropped at the end), one
//! audit signing key every instance is given, an API key in that database, and a Redis
//! namespace of the run's own for the shared rate limits.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use wardgate_store::postgres::PgUrl;
use wardgate_store::postgres::testing;

/// Makes the `Command` for a `wardgate` binary (the caller's, which clears inherited settings).
pub type CommandFor = fn(&Path) -> Command;

/// A database of this run's own, and what every instance on it is given.
pub struct SharedStore {
    command: CommandFor,
    admin: PgUrl,
    database: String,
    /// The URL of the run's database, for `WARDGATE_DATABASE_URL`.
    pub url: String,
    /// The audit signing key's text, for `WARDGATE_AUDIT_SIGNING_KEY`.
    pub signing_key: String,
    /// The Redis server, for `WARDGATE_REDIS_URL`.
    pub redis_url: String,
    /// The run's own Redis key prefix, for `WARDGATE_REDIS_NAMESPACE`.
    pub redis_namespace: String,
}

impl SharedStore {
    /// Creates and migrates a database on the server at `server_url` (any database there: the
    /// run's own is created beside it), and makes the signing key (in `dir`).
    pub async fn create(
        wardgate: &Path,
        command: CommandFor,
        server_url: &str,
        redis_url: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let admin = PgUrl::parse(server_url)
            .map_err(|e| anyhow::anyhow!("--database-url is not a PostgreSQL URL: {e}"))?;
        let database = format!("wg_bench_{}", std::process::id());
        let url = with_database(server_url, &database)?;
        let mut conn = testing::admin(&admin).await;
        testing::run(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        )
        .await;
        testing::run(&mut conn, format!("CREATE DATABASE {database}")).await;
        let mut store = Self {
            command,
            admin,
            database,
            url,
            signing_key: String::new(),
            redis_url: redis_url.to_owned(),
            redis_namespace: format!("wg-bench:{}", std::process::id()),
        };
        match store.prepare(wardgate, dir) {
            Ok(()) => Ok(store),
            Err(e) => {
                store.drop_database().await;
                Err(e)
            }
        }
    }

    /// Migrates the new database and makes the shared signing key.
    fn prepare(&mut self, wardgate: &Path, dir: &Path) -> anyhow::Result<()> {
        self.cli(wardgate, dir, &["migrate"])?;
        // Not `audit-signing.key`: that is the SQLite gateway's own key in the same directory.
        let key_file = dir.join("shared-audit-signing.key");
        let key_arg = key_file.to_string_lossy().into_owned();
        self.cli(wardgate, dir, &["audit", "keygen", "--out", &key_arg])?;
        self.signing_key = std::fs::read_to_string(&key_file)
            .with_context(|| format!("cannot read {}", key_file.display()))?
            .trim()
            .to_owned();
        Ok(())
    }

    /// Sets the variables that put a `wardgate` command on this store.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("WARDGATE_DATABASE_URL", &self.url)
            .env("WARDGATE_AUDIT_SIGNING_KEY", &self.signing_key)
            .env("WARDGATE_RATE_LIMIT_BACKEND", "redis")
            .env("WARDGATE_REDIS_URL", &self.redis_url)
            .env("WARDGATE_REDIS_NAMESPACE", &self.redis_namespace);
    }

    /// Runs `wardgate ARGS` on this store and returns its stdout; a failure is an error with
    /// its stderr.
    pub fn cli(&self, wardgate: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = (self.command)(wardgate);
        cmd.args(args)
            .env("WARDGATE_AUDIT_WITNESS", dir.join("cli-audit-witness.log"))
            .stdin(Stdio::null());
        if !self.signing_key.is_empty() {
            self.apply(&mut cmd);
        } else {
            cmd.env("WARDGATE_DATABASE_URL", &self.url);
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {} {}", wardgate.display(), args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`wardgate {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Drops the run's database (with whatever still holds connections to it).
    pub async fn drop_database(self) {
        let mut conn = testing::admin(&self.admin).await;
        testing::run(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
        )
        .await;
    }
}

/// `url` with its database (the path) replaced by `database`; the query string is kept.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = url.find("://").context("--database-url has no scheme")? + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[authority_end..];
    let query = after.find('?').map_or("", |q| &after[q..]);
    Ok(format!(
        "{}{}/{database}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x").unwrap(),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x").unwrap(),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h?sslmode=require", "x").unwrap(),
            "postgresql://h/x?sslmode=require"
        );
    }
}
