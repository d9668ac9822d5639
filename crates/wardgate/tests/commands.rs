//! The `wardgate` binary's commands, run as a user runs them: `check-config`, `phi redact`, and
//! key changes from the CLI, which the audit log records (verifiable with the public key) in
//! the database a config file names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `wardgate` in `dir` with no `WARDGATE_*` setting of the environment the tests run in,
/// feeding `stdin`.
fn wardgate_with_input(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn wardgate(dir: &Path, args: &[&str]) -> Output {
    wardgate_with_input(dir, args, "")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_config_says_ok_or_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[limits]\nmax_messages = 10\n").unwrap();
    let out = wardgate(dir.path(), &["check-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": ok ("),
        "{}",
        text(&out.stdout)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_messages = \"many\"\n").unwrap();
    let out = wardgate(dir.path(), &["check-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("limits.max_messages"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn phi_redact_reads_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = wardgate_with_input(
        dir.path(),
        &["phi", "redact"],
        "Patient SSN 457-55-5462, call 617-555-0143.\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let redacted = text(&out.stdout);
    assert!(redacted.contains("[SSN]"), "{redacted}");
    assert!(!redacted.contains("457-55-5462") && !redacted.contains("617-555-0143"));
}

/// Keys made, rotated and revoked from the CLI land in the database the config file names,
/// and each change is an audit event by `cli:<login>` in a log that verifies.
#[test]
fn key_changes_from_the_cli_use_the_configured_database_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wardgate.toml");
    std::fs::write(
        &config,
        "[storage]\nsqlite_path = \"state/keys.db\"\n[audit]\nsigning_key_file = \
         \"state/audit.key\"\nwitness_file = \"state/witness.log\"\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let created = wardgate(
        dir.path(),
        &["-c", c, "keys", "create", "--tenant", "acme", "--json"],
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let key: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = key["id"].as_str().unwrap().to_owned();
    assert!(dir.path().join("state/keys.db").exists());

    let rotated = wardgate(dir.path(), &["-c", c, "keys", "rotate", &id, "--json"]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let revoked = wardgate(dir.path(), &["-c", c, "keys", "revoke", &id]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));

    for (event_type, want) in [("key_created", 2), ("key_revoked", 1)] {
        let out = wardgate(
            dir.path(),
            &["-c", c, "audit", "query", "--event-type", event_type],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let events: Vec<serde_json::Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), want, "{event_type}: {events:?}");
        for e in &events {
            let e = e.get("event").unwrap_or(e);
            assert!(e["actor_id"].as_str().unwrap().starts_with("cli:"), "{e}");
            assert_eq!(e["tenant"], "acme", "{e}");
            assert!(e["detail"].as_str().unwrap().contains(&id) || event_type == "key_created");
        }
    }

    let public = wardgate(dir.path(), &["-c", c, "audit", "public-key"]);
    assert!(public.status.success(), "{}", text(&public.stderr));
    let public = text(&public.stdout).trim().to_owned();
    let verify = wardgate(
        dir.path(),
        &["-c", c, "audit", "verify", "--public-key", &public],
    );
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    // An export with every checkpoint taken out (and so any entry rewritable, hash and all)
    // does not pass as "ok": nothing in it is proven by a signature. (A black-box finding.)
    let export = wardgate(dir.path(), &["-c", c, "audit", "export"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    let stripped: String = text(&export.stdout)
        .lines()
        .filter(|l| !l.starts_with("{\"checkpoint\""))
        .map(|l| {
            if l.starts_with("{\"format\"") {
                let mut header: serde_json::Value = serde_json::from_str(l).unwrap();
                header["checkpoints"] = 0.into();
                header.to_string() + "\n"
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.path().join("stripped.jsonl"), stripped).unwrap();
    let verify = wardgate(
        dir.path(),
        &[
            "-c",
            c,
            "audit",
            "verify",
            "--export",
            "stripped.jsonl",
            "--public-key",
            &public,
        ],
    );
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(!verify.status.success(), "{said}");
    assert!(said.contains("no signed checkpoint"), "{said}");
}

/// A configuration in `dir` with its database, signing key and witness file beside it.
fn witnessed_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("wardgate.toml");
    std::fs::write(
        &config,
        "[storage]\nsqlite_path = \"keys.db\"\n[audit]\nsigning_key_file = \"audit.key\"\n\
         witness_file = \"witness.log\"\n",
    )
    .unwrap();
    config
}

/// Creates a key with the CLI (an audited change) under the configuration `config`.
fn create_key(dir: &Path, config: &str) {
    let out = wardgate(dir, &["-c", config, "keys", "create", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// An export verified against a witness file the log kept writing to after the export was
/// taken fails (that cannot be told from a cut export), and says what to do instead; the live
/// log verifies with the same witness.
#[test]
fn an_export_older_than_the_witness_fails_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = witnessed_config(dir.path());
    let c = config.to_str().unwrap();
    let create = || create_key(dir.path(), c);
    create();
    let export = dir.path().join("export.jsonl");
    let out = wardgate(
        dir.path(),
        &[
            "-c",
            c,
            "audit",
            "export",
            "--out",
            export.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    create();
    let public = text(&wardgate(dir.path(), &["-c", c, "audit", "public-key"]).stdout)
        .trim()
        .to_owned();
    let witness = dir.path().join("witness.log");
    let w = witness.to_str().unwrap();
    let old = wardgate(
        dir.path(),
        &[
            "-c",
            c,
            "audit",
            "verify",
            "--export",
            export.to_str().unwrap(),
            "--public-key",
            &public,
            "--witness",
            w,
        ],
    );
    assert!(!old.status.success());
    let err = text(&old.stderr);
    assert!(err.contains("leave out --export"), "{err}");
    let live = wardgate(
        dir.path(),
        &[
            "-c",
            c,
            "audit",
            "verify",
            "--public-key",
            &public,
            "--witness",
            w,
        ],
    );
    assert!(live.status.success(), "{}", text(&live.stderr));
}

/// `audit verify` of the live log checks it against the configured witness file without being
/// told (a black-box finding: without `--witness` a log cut after its last checkpoint verified,
/// though the gateway's own witness file proved it longer). A log older than its witness — here
/// an earlier backup put back — fails, naming the missing entries.
#[test]
fn verify_of_the_live_log_uses_the_configured_witness_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = witnessed_config(dir.path());
    let c = config.to_str().unwrap();
    let create = || create_key(dir.path(), c);
    create();
    let public = text(&wardgate(dir.path(), &["-c", c, "audit", "public-key"]).stdout)
        .trim()
        .to_owned();
    let verify = || {
        wardgate(
            dir.path(),
            &["-c", c, "audit", "verify", "--public-key", &public],
        )
    };
    let fresh = verify();
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    let out = wardgate(dir.path(), &["-c", c, "backup", "--out", "older.db"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    create();
    create();
    std::fs::rename(dir.path().join("older.db"), dir.path().join("keys.db")).unwrap();
    for side in ["keys.db-wal", "keys.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(side));
    }
    let older = verify();
    assert!(!older.status.success(), "{}", text(&older.stdout));
    let err = text(&older.stderr);
    assert!(err.contains("witness"), "{err}");
    // Without a witness file where the configuration says, it says what it cannot tell.
    std::fs::rename(
        dir.path().join("witness.log"),
        dir.path().join("witness.kept"),
    )
    .unwrap();
    let unwitnessed = verify();
    assert!(
        text(&unwitnessed.stderr).contains("no witness file at"),
        "{}",
        text(&unwitnessed.stderr)
    );
}

/// A start that fails before the service can serve (its port taken) is no run: the audit log
/// gets no "service started" event for it (a black-box finding: it recorded the new
/// configuration's digest while the old process kept serving the old one). The next start
/// that does serve opens its run.
#[test]
fn a_start_that_cannot_listen_writes_no_start_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wardgate.toml");
    std::fs::write(
        &config,
        "[storage]\nsqlite_path = \"state/wardgate.db\"\n\
         [[backends]]\nname = \"b\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:9/v1\"\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    // A key first, so the log exists and has its signing key.
    let created = wardgate(dir.path(), &["-c", c, "keys", "create", "--tenant", "acme"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .current_dir(dir.path())
        .args(["-c", c, "serve"])
        .env("WARDGATE_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success(), "served on a taken port");
    assert!(
        text(&out.stderr).contains("cannot listen"),
        "{}",
        text(&out.stderr)
    );
    let q = wardgate(
        dir.path(),
        &["-c", c, "audit", "query", "--event-type", "config_change"],
    );
    assert!(q.status.success(), "{}", text(&q.stderr));
    assert!(
        !text(&q.stdout).contains("service started"),
        "a failed start was audited as a run: {}",
        text(&q.stdout)
    );
}

/// `audit query --limit` holds to its documented range, as the admin API does (it took 0 and
/// any number).
#[test]
fn audit_query_limit_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "10001", "99999999"] {
        let out = wardgate(dir.path(), &["audit", "query", "--limit", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("--limit"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// `check-config --start` reads what `serve` would read at start besides the stores, so it
/// does not pass a config that `serve` refuses on this machine (a black-box finding): a
/// backend secret variable that is not set, TLS files that are not there, a JWT issuer's
/// missing key file. Without `--start` the file alone is checked, and the output says so.
#[test]
fn check_config_refuses_what_serve_would_refuse_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-key.txt"), "hello\n").unwrap();
    let cases = [
        (
            "[[backends]]\nname = \"b\"\nkind = \"ollama\"\nurl = \"http://127.0.0.1:9\"\n\
             secret_env = \"WG_TEST_UNSET_SECRET\"\n",
            "WG_TEST_UNSET_SECRET",
        ),
        (
            "[server.tls]\ncert_file = \"missing-cert.pem\"\nkey_file = \"missing-key.pem\"\n",
            "missing-cert.pem",
        ),
        (
            "[[auth.jwt]]\nissuer = \"https://idp.example.org\"\naudiences = [\"wardgate\"]\n\
             algorithms = [\"EdDSA\"]\njwks_file = \"missing-jwks.json\"\n",
            "missing-jwks.json",
        ),
        (
            "[audit]\nsigning_key_file = \"not-a-key.txt\"\n",
            "not-a-key.txt",
        ),
    ];
    for (i, (toml, named)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("case-{i}.toml"));
        std::fs::write(&file, toml).unwrap();
        // The file alone is valid: a pipeline without the production secrets passes it.
        let out = wardgate(dir.path(), &["check-config", file.to_str().unwrap()]);
        assert!(out.status.success(), "case {i}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("--start"),
            "{}",
            text(&out.stdout)
        );
        let out = wardgate(
            dir.path(),
            &["check-config", "--start", file.to_str().unwrap()],
        );
        assert!(
            !out.status.success(),
            "case {i} passed: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains(named),
            "case {i}: {}",
            text(&out.stderr)
        );
    }
}

/// `audit public-key` prints the key `serve` signs with: `$WARDGATE_AUDIT_SIGNING_KEY` wins over
/// the key file, as it does for `serve`. (A black-box finding: it read the file only, so on a
/// shared log given its key by the environment it printed another key, or none.)
#[test]
fn the_public_key_is_the_one_serve_signs_with_from_the_environment_first() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("shared.key");
    let made = wardgate(
        dir.path(),
        &["audit", "keygen", "--out", key_file.to_str().unwrap()],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let printed = text(&made.stdout);
    let public = printed
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .to_owned();
    let secret = std::fs::read_to_string(&key_file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .current_dir(dir.path())
        .env_clear()
        .env("WARDGATE_AUDIT_SIGNING_KEY", secret.trim())
        .env("WARDGATE_DB", dir.path().join("absent.db"))
        .args(["audit", "public-key"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), public);
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .current_dir(dir.path())
        .env_clear()
        .env("WARDGATE_AUDIT_SIGNING_KEY", "not a key")
        .args(["audit", "public-key"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("WARDGATE_AUDIT_SIGNING_KEY") && !err.contains("not a key"),
        "{err}"
    );
}
