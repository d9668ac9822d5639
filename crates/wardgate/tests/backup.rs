//! `wardgate backup`, run as an operator runs it: a copy that verifies and opens again, and
//! the refusals (an existing file, PostgreSQL, no database), each saying what to do. The copy
//! taken under load from a serving gateway, restored and served again, is the end-to-end
//! runbook test (`tests/e2e/test_backup.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `wardgate -c wardgate.toml ARGS` in `dir`, with no `WARDGATE_*` setting of the
/// environment the tests run in.
fn wardgate(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .current_dir(dir)
        .args(["-c", "wardgate.toml"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(dir: &Path, storage: &str) {
    std::fs::write(
        dir.join("wardgate.toml"),
        format!(
            "[storage]\n{storage}\n[audit]\nsigning_key_file = \"state/audit.key\"\n\
             witness_file = \"state/witness.log\"\n"
        ),
    )
    .unwrap();
}

/// A database with a key in it (and so an audit log with a signed checkpoint).
fn database_with_a_key(dir: &Path) -> String {
    config(dir, "sqlite_path = \"state/wardgate.db\"");
    let created = wardgate(dir, &["keys", "create", "--tenant", "acme", "--json"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let key: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    key["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_backup_is_one_private_file_that_verifies_and_keeps_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let id = database_with_a_key(dir.path());
    let out = wardgate(dir.path(), &["backup", "--out", "copy.db"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let copy = dir.path().join("copy.db");
    let size = std::fs::metadata(&copy).unwrap().len();
    assert!(
        said.contains("backed up state/wardgate.db to copy.db")
            && said.contains(&format!("({size} bytes, owner-only)"))
            && said.contains("audit log: 1 entries, last signed checkpoint at size 1")
            && said.contains("state/audit.key")
            && said.contains("state/witness.log"),
        "{said}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // One file: no -wal, no temporary left.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["copy.db", "state", "wardgate.toml"]);

    // Restored in place of the database (with the same key and witness file), it verifies
    // and holds the key.
    std::fs::create_dir(dir.path().join("restored")).unwrap();
    std::fs::rename(&copy, dir.path().join("restored/wardgate.db")).unwrap();
    std::fs::copy(
        dir.path().join("state/audit.key"),
        dir.path().join("restored/audit.key"),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("state/witness.log"),
        dir.path().join("restored/witness.log"),
    )
    .unwrap();
    let restored = dir.path().join("restored");
    std::fs::write(
        restored.join("wardgate.toml"),
        "[storage]\nsqlite_path = \"wardgate.db\"\n[audit]\nsigning_key_file = \"audit.key\"\n\
         witness_file = \"witness.log\"\n",
    )
    .unwrap();
    let public = wardgate(&restored, &["audit", "public-key"]);
    assert!(public.status.success(), "{}", text(&public.stderr));
    let public = text(&public.stdout).trim().to_owned();
    let verify = wardgate(
        &restored,
        &[
            "audit",
            "verify",
            "--public-key",
            &public,
            "--witness",
            "witness.log",
        ],
    );
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).starts_with("ok: 1 entries"));
    let listed = wardgate(&restored, &["keys", "list", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains(&id));
}

#[test]
fn a_backup_never_overwrites_a_file() {
    let dir = tempfile::tempdir().unwrap();
    database_with_a_key(dir.path());
    std::fs::write(dir.path().join("copy.db"), b"last week's backup").unwrap();
    let out = wardgate(dir.path(), &["backup", "--out", "copy.db"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("copy.db exists: a backup never overwrites a file")
            && said.contains("give a new name"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("copy.db")).unwrap(),
        b"last week's backup"
    );
}

#[test]
fn a_backup_of_a_missing_database_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), "sqlite_path = \"state/wardgate.db\"");
    let out = wardgate(dir.path(), &["backup", "--out", "copy.db"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("there is no database at state/wardgate.db to back up")
            && said.contains("storage.sqlite_path (WARDGATE_DB)"),
        "{said}"
    );
    assert!(!dir.path().join("state").exists());
    assert!(!dir.path().join("copy.db").exists());
}

/// With PostgreSQL the command names pg_dump and connects to nothing (the address here has no
/// server behind it).
#[test]
fn a_backup_with_postgresql_names_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        "url = \"postgres://wardgate:hunter2@127.0.0.1:1/bk_nowhere\"",
    );
    let out = wardgate(dir.path(), &["backup", "--out", "copy.db"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("the database is PostgreSQL")
            && said.contains("pg_dump --format=custom")
            && said.contains("\"$WARDGATE_DATABASE_URL\"")
            && !said.contains("hunter2"),
        "{said}"
    );
    assert!(!dir.path().join("copy.db").exists());
}
