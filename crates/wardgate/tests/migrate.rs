//! `wardgate migrate` and `wardgate serve` on PostgreSQL, run as an operator runs them: a
//! start refuses a schema older or newer than its own, naming both versions and the command
//! to run; `migrate` applies the schema once and then has nothing to do; the database URL's
//! password never shows in what they print. Each test works in a PostgreSQL schema of its own
//! on the test server (`WARDGATE_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use sqlx::Connection as _;

const URL_VAR: &str = "WARDGATE_TEST_DATABASE_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// What the test puts in the URL as the password; the server trusts the test user, so it is
/// never checked, but it must never be printed.
const PASSWORD: &str = "hunter2-never-printed";

fn server_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema of the test's own, and the URL that puts it first on the search path, with a
/// password added (when the test URL has none).
struct Schema {
    name: String,
    url: String,
}

async fn admin() -> sqlx::PgConnection {
    let url = server_url();
    sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable ({e}). These tests need a server: start one, or set \
             {URL_VAR} to postgres://USER@HOST:PORT/DATABASE (default {DEFAULT_URL})"
        )
    })
}

async fn exec(sql: String) {
    let mut conn = admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
}

impl Schema {
    async fn new() -> Self {
        let name = format!("wg_test_{}", std::process::id())
            + &format!(
                "_{}",
                std::time::SystemTime::UNIX_EPOCH
                    .elapsed()
                    .unwrap()
                    .as_nanos()
            );
        exec(format!("CREATE SCHEMA {name}")).await;
        let base = server_url();
        let with_password = match base.split_once("://") {
            Some((scheme, rest)) if !rest.split('/').next().unwrap_or("").contains(':') => {
                // `user@host` → `user:PASSWORD@host`.
                match rest.split_once('@') {
                    Some((user, host)) => format!("{scheme}://{user}:{PASSWORD}@{host}"),
                    None => base.clone(),
                }
            }
            _ => base.clone(),
        };
        let sep = if with_password.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{with_password}{sep}options=-c%20search_path%3D{name}");
        Self { name, url }
    }

    async fn drop(self) {
        exec(format!("DROP SCHEMA {} CASCADE", self.name)).await;
    }
}

/// Runs `wardgate ARGS` in `dir` on the schema's database, with no other `WARDGATE_*`
/// setting of the environment the tests run in.
fn wardgate(dir: &Path, schema: &Schema, args: &[&str]) -> Output {
    wardgate_with(dir, schema, args, &[])
}

/// [`wardgate`] with `vars` set too.
fn wardgate_with(dir: &Path, schema: &Schema, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    cmd.envs(vars.iter().copied());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    std::fs::write(
        dir.join("wardgate.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    cmd.current_dir(dir)
        .env("WARDGATE_DATABASE_URL", &schema.url)
        .arg("--config")
        .arg(dir.join("wardgate.toml"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    text
}

/// Makes the signing key every instance of a shared audit log needs (`signing.key` in `dir`)
/// and returns its text, as `WARDGATE_AUDIT_SIGNING_KEY` takes it.
fn keygen(dir: &Path, schema: &Schema) -> String {
    let out = wardgate(dir, schema, &["audit", "keygen", "--out", "signing.key"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::read_to_string(dir.join("signing.key")).unwrap()
}

/// The public half of [`keygen`]'s key, as `audit verify` takes it.
fn public_key(dir: &Path) -> String {
    wardgate_audit::keyfile::read_signer_key(&dir.join("signing.key"))
        .unwrap()
        .verifier()
        .to_string()
}

/// Runs `wardgate ARGS` with the signing key `key`; it must succeed and never print the key.
fn run_with_key(dir: &Path, schema: &Schema, key: &str, args: &[&str]) -> String {
    let out = wardgate_with(dir, schema, args, &[("WARDGATE_AUDIT_SIGNING_KEY", key)]);
    let said = text(&out);
    assert!(out.status.success(), "{args:?}: {said}");
    assert!(!said.contains("PRIVATE"), "the key was printed: {said}");
    said
}

/// A schema of the test's own, migrated, and the shared log's signing key made in `dir`.
async fn migrated_with_key(dir: &Path) -> (Schema, String) {
    let schema = Schema::new().await;
    let out = wardgate(dir, &schema, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    let key = keygen(dir, &schema);
    (schema, key)
}

/// The newest schema version this build knows, as `migrate` reports it.
fn latest() -> i64 {
    wardgate_store::postgres::migrate::latest_version()
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_database_and_migrate_applies_the_schema_once() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().await;
    let latest = latest();

    // An empty database: refused, naming both versions and the command to run.
    let out = wardgate(dir.path(), &schema, &["serve"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("version 0")
            && said.contains(&format!("version {latest}"))
            && said.contains("wardgate migrate"),
        "{said}"
    );

    let out = wardgate(dir.path(), &schema, &["migrate"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("schema version 0 -> {latest}")),
        "{said}"
    );
    // Again: nothing to do.
    let out = wardgate(dir.path(), &schema, &["migrate"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("nothing to do"), "{said}");

    // Migrated: the start gets past the schema check, and asks for the one signing key every
    // instance of a shared audit log needs; it never makes one of its own.
    let out = wardgate(dir.path(), &schema, &["serve"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(!said.contains("wardgate migrate"), "{said}");
    assert!(said.contains("WARDGATE_AUDIT_SIGNING_KEY"), "{said}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing was made beside it"
    );

    // With the key, the start's checks pass and the commands work on PostgreSQL, their changes
    // audited into the shared log, which verifies with the key's public half.
    let key = keygen(dir.path(), &schema);
    let run = |args: &[&str]| run_with_key(dir.path(), &schema, &key, args);
    run(&["check-config", "--start"]);
    run(&["keys", "create", "--tenant", "acme"]);
    assert!(run(&["keys", "list"]).contains("acme"));
    let query = run(&["audit", "query", "--event-type", "key_created"]);
    assert_eq!(query.lines().count(), 1, "{query}");
    assert!(
        !query.contains("\"pending\""),
        "sequenced by the CLI at its stop: {query}"
    );
    let public = public_key(dir.path());
    let verified = run(&["audit", "verify", "--public-key", &public]);
    assert!(verified.starts_with("ok: 1 entries"), "{verified}");
    assert!(verified.contains("pending: 0"), "{verified}");

    schema.drop().await;
}

/// A queue row no release can read, inserted by SQL, is set aside by the first command that
/// sequences (before, it stopped sequencing for good, and every audited command failed with
/// "audit log unavailable"); its `audit_quarantined` event is read like any other by
/// `audit query`, `audit export` and `audit verify`.
#[tokio::test]
async fn a_corrupt_queue_row_is_set_aside_and_the_audit_commands_read_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, key) = migrated_with_key(dir.path()).await;
    let run = |args: &[&str]| run_with_key(dir.path(), &schema, &key, args);
    exec(format!(
        "INSERT INTO {}.audit_queue (event, queued_ms) VALUES ('\\x00ff6e6f'::bytea, 0)",
        schema.name
    ))
    .await;
    run(&["keys", "create", "--tenant", "acme"]);
    let query = run(&["audit", "query", "--event-type", "audit_quarantined"]);
    assert_eq!(query.lines().count(), 1, "{query}");
    assert!(
        query.contains("\"event_type\":\"audit_quarantined\"")
            && query.contains("queue_id=1 bytes=4 sha256="),
        "{query}"
    );
    assert!(run(&["audit", "export"]).contains("audit_quarantined"));
    let public = public_key(dir.path());
    let verified = run(&["audit", "verify", "--public-key", &public]);
    assert!(verified.starts_with("ok: 2 entries"), "{verified}");
    schema.drop().await;
}

/// What `wardgate` prints for a real PostgreSQL error: each cause once (before, `{:#}` said
/// the database error, `storage unavailable` and a refused schema twice over, and the
/// commands' own context again), the server's message with its SQLSTATE, never a line of the
/// server's C source (`at line 1454`). A table in the way fails `migrate`; a migrations table
/// of another shape fails `serve` and `keys list` at the schema check.
#[tokio::test]
async fn database_errors_are_said_once_with_the_sqlstate_and_no_source_line() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().await;
    exec(format!("CREATE TABLE {}.tenants (x INT)", schema.name)).await;
    let said_once = |args: &[&str], message: &str, code: &str| {
        let out = wardgate(dir.path(), &schema, args);
        let said = text(&out);
        assert!(!out.status.success(), "{args:?}: {said}");
        assert_eq!(said.matches(message).count(), 1, "{args:?}: {said}");
        assert!(said.contains(&format!("(SQLSTATE {code})")), "{said}");
        for repeated in [
            "storage unavailable",
            "migration failed",
            "cannot open the database",
        ] {
            assert!(said.matches(repeated).count() <= 1, "{args:?}: {said}");
        }
        for source_line in [" at line ", "line:", "file:", "routine", ".c:"] {
            assert!(!said.contains(source_line), "{args:?}: {said}");
        }
        said
    };
    said_once(&["migrate"], "relation \"tenants\" already exists", "42P07");
    exec(format!(
        "DROP TABLE {0}.tenants; CREATE TABLE {0}.wardgate_schema_migrations (version BIGINT)",
        schema.name
    ))
    .await;
    for args in [&["serve"][..], &["keys", "list"]] {
        said_once(args, "column \"checksum\" does not exist", "42703");
    }
    schema.drop().await;
}

#[tokio::test]
async fn serve_and_migrate_refuse_a_database_a_newer_build_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().await;
    let out = wardgate(dir.path(), &schema, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    exec(format!(
        "INSERT INTO {}.wardgate_schema_migrations \
         (version, description, checksum, installed_at) VALUES (9999, 'future', 'x', 0)",
        schema.name
    ))
    .await;
    let latest = latest();
    for command in ["serve", "migrate"] {
        let out = wardgate(dir.path(), &schema, &[command]);
        let said = text(&out);
        assert!(!out.status.success(), "{command}: {said}");
        assert!(
            said.contains("9999") && said.contains(&format!("version {latest}")),
            "{command}: {said}"
        );
    }
    schema.drop().await;
}

/// The key commands work on the gateways' PostgreSQL, never on a SQLite file beside it.
#[tokio::test]
async fn key_commands_use_postgresql_never_a_sqlite_file_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().await;
    let out = wardgate(dir.path(), &schema, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = wardgate(dir.path(), &schema, &["keys", "list"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!dir.path().join("data").exists(), "a SQLite file was made");
    schema.drop().await;
}

/// On a database several instances share, with no Redis to announce a change, `wardgate keys
/// revoke` (and `rotate`) says that the other instances keep accepting the key for up to
/// their credential cache's TTL, with its value, and how to make it immediate.
#[tokio::test]
async fn a_revocation_on_postgresql_without_redis_says_how_long_others_accept_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new().await;
    let out = wardgate(dir.path(), &schema, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    // A shared audit log needs the instances' signing key.
    let key_file = dir.path().join("audit.key");
    let key_file = key_file.to_str().unwrap();
    let out = wardgate(dir.path(), &schema, &["audit", "keygen", "--out", key_file]);
    assert!(out.status.success(), "{}", text(&out));
    let run = |args: &[&str], ttl: Option<&str>| {
        let mut vars = vec![("WARDGATE_AUDIT_KEY", key_file)];
        vars.extend(ttl.map(|t| ("WARDGATE_KEY_CACHE_TTL", t)));
        let out = wardgate_with(dir.path(), &schema, args, &vars);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        out
    };
    let create = || {
        let out = run(&["keys", "create", "--tenant", "acme", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_owned()
    };
    for (ttl, said_ttl) in [(None, "2s"), (Some("45s"), "45s")] {
        for command in [&["revoke"][..], &["rotate", "--overlap", "0s"][..]] {
            let id = create();
            let mut args = vec!["keys", command[0], id.as_str()];
            args.extend(&command[1..]);
            let stderr = String::from_utf8_lossy(&run(&args, ttl).stderr).into_owned();
            for needle in [
                "other running instances",
                "keep accepting the key",
                &format!("auth.key_cache_ttl ({said_ttl} in this configuration)"),
                "rate_limit.backend = \"redis\"",
            ] {
                assert!(stderr.contains(needle), "{args:?}: {needle:?} in {stderr}");
            }
        }
    }
    // Nothing to say when nothing is cached.
    let id = create();
    let out = run(&["keys", "revoke", &id], Some("0s"));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("keep accepting"),
        "{}",
        text(&out)
    );
    schema.drop().await;
}

#[test]
fn migrate_on_sqlite_reports_the_files_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wardgate.toml"),
        "[storage]\nsqlite_path = \"state/wardgate.db\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .current_dir(dir.path())
        .args(["--config", "wardgate.toml", "migrate"])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("state/wardgate.db") && said.contains("schema version "),
        "{said}"
    );
    assert!(dir.path().join("state/wardgate.db").exists());
}

/// `audit query` on a shared log lists the events queued and not yet sequenced after the
/// sequenced ones, as `"pending": true` lines without a `seq`, on every page: a full page and
/// every `--after-seq` page too (before, only a first page with room to spare showed them, so
/// a reader paging through the log never saw them).
#[tokio::test]
async fn pending_events_follow_every_page_with_or_without_after_seq() {
    use wardgate_audit::SharedLog as _;
    let dir = tempfile::tempdir().unwrap();
    let (schema, key) = migrated_with_key(dir.path()).await;
    let run = |args: &[&str]| run_with_key(dir.path(), &schema, &key, args);
    for tenant in ["t1", "t2", "t3"] {
        run(&["keys", "create", "--tenant", tenant]);
    }
    // Two events queued, as a gateway queues them, and left there (no sequencer runs).
    let store = wardgate_store::PgStore::connect(
        &wardgate_store::postgres::PgUrl::parse(&schema.url).unwrap(),
        wardgate_store::postgres::PgOptions::default(),
    )
    .await
    .unwrap();
    let signer = wardgate_audit::keyfile::read_signer_key(&dir.path().join("signing.key")).unwrap();
    let queued = (0..2)
        .map(|_| wardgate_audit::AuditEvent {
            outcome: Some(wardgate_audit::Outcome::Allow),
            ..wardgate_audit::AuditEvent::new(
                wardgate_audit::Timestamp::now(),
                wardgate_audit::EventType::KeyCreated,
                "pending-test",
                wardgate_audit::ActorKind::User,
            )
        })
        .collect();
    store.enqueue(queued, &signer.queue_key()).await.unwrap();
    store.close().await;

    let page = |extra: &[&str]| -> (Vec<u64>, usize) {
        let mut args = vec![
            "audit",
            "query",
            "--event-type",
            "key_created",
            "--limit",
            "2",
        ];
        args.extend_from_slice(extra);
        let said = run(&args);
        let lines: Vec<serde_json::Value> = said
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let sequenced = lines.iter().take_while(|l| l.get("pending").is_none());
        let seqs: Vec<u64> = sequenced.map(|l| l["seq"].as_u64().unwrap()).collect();
        let pending = &lines[seqs.len()..];
        for p in pending {
            assert_eq!(p["pending"], true, "{said}");
            assert!(p.get("seq").is_none(), "{said}");
            assert_eq!(p["event"]["actor_id"], "pending-test", "{said}");
        }
        (seqs, pending.len())
    };
    // A full first page.
    let (first, pending) = page(&[]);
    assert_eq!((first.len(), pending), (2, 2));
    // The next page, after the first's last entry.
    let after = first[1].to_string();
    let (second, pending) = page(&["--after-seq", &after]);
    assert_eq!((second.len(), pending), (1, 2));
    assert!(second[0] > first[1]);
    // Past the end: nothing sequenced, the pending events still.
    let (none, pending) = page(&["--after-seq", "1000000"]);
    assert_eq!((none.len(), pending), (0, 2));
    let public = public_key(dir.path());
    let verified = run(&["audit", "verify", "--public-key", &public]);
    assert!(verified.contains("pending: 2"), "{verified}");
    schema.drop().await;
}
