//! `wardgate keys`, run as the built binary: a key's lifetime is checked like the admin API's
//! `expires_in` (one function, one message), and no input makes the command panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `wardgate` in `dir` with its database there and no `WARDGATE_*` setting of the
/// environment the tests run in.
fn wardgate(dir: &Path, args: &[&str]) -> Output {
    wardgate_with(dir, args, &[])
}

/// As [`wardgate`], with `env` set too.
fn wardgate_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(dir)
        .env("WARDGATE_DB", dir.join("wardgate.db"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

/// Creates a key for tenant `acme` in `dir`'s database, with `env` set; its id.
fn create_key(dir: &Path, env: &[(&str, &str)]) -> String {
    let out = wardgate_with(dir, &["keys", "create", "--tenant", "acme", "--json"], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

const RULE: &str =
    "must be a duration such as `90d` or `12h`, more than zero and at most 100 years";

#[test]
fn a_key_lifetime_out_of_bounds_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "0s",
        "5000y",
        // Overflowed the date it was added to, and panicked.
        "500000000000y",
        "99999999999999999999999d",
        "soon",
    ] {
        for args in [
            &["keys", "create", "--tenant", "acme", "--expires", bad][..],
            &["keys", "rotate", "key_0123456789", "--expires", bad][..],
        ] {
            let out = wardgate(dir.path(), args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(RULE), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    assert!(
        !dir.path().join("wardgate.db").exists(),
        "a refused argument opened the database"
    );
}

#[test]
fn a_key_lifetime_in_bounds_sets_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let out = wardgate(
        dir.path(),
        &[
            "keys",
            "create",
            "--tenant",
            "acme",
            "--expires",
            "1h",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expires = v["expires_at"].as_i64().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expires), "{v}");
}

/// A rotation overlap is checked by the key service the admin API uses (`overlap`), with its
/// message, before anything changes; an unknown key is named as such.
#[test]
fn a_rotation_overlap_out_of_bounds_and_an_unknown_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let id = &create_key(dir.path(), &[]);

    let out = wardgate(dir.path(), &["keys", "rotate", id, "--overlap", "31d"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot rotate {id}: --overlap must be a duration such as `24h` or `0s`, at most \
             30 days"
        )),
        "{stderr}"
    );
    let out = wardgate(dir.path(), &["keys", "list", "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["expires_at"], serde_json::Value::Null, "{keys}");

    for args in [
        &["keys", "revoke", "key_doesnotexist"][..],
        &["keys", "rotate", "key_doesnotexist"][..],
    ] {
        let out = wardgate(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("key_doesnotexist: no such key"),
            "{args:?}: {stderr}"
        );
    }
}

/// Revoking a revoked key says so and changes nothing: the first revocation's time stands
/// and no second `key_revoked` event is written.
#[test]
fn revoking_a_revoked_key_says_so_and_writes_no_second_event() {
    let dir = tempfile::tempdir().unwrap();
    let id = &create_key(dir.path(), &[]);
    let said: Vec<String> = (0..2)
        .map(|_| {
            let out = wardgate(dir.path(), &["keys", "revoke", id]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    assert_eq!(said[0].trim(), format!("revoked {id}"));
    assert!(
        said[1].starts_with(&format!("{id} was revoked already (at 20"))
            && said[1].trim_end().ends_with("nothing changed"),
        "{}",
        said[1]
    );
    let out = wardgate(
        dir.path(),
        &["audit", "query", "--event-type", "key_revoked"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// An empty model name (`--models ""`, `--models ,`, an empty variable in a script) is
/// refused before anything changes, as the admin API refuses it; it used to mint a key for
/// every model.
#[test]
fn an_empty_model_name_is_refused_not_read_as_every_model() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", ",", "tiny,", " "] {
        let out = wardgate(
            dir.path(),
            &["keys", "create", "--tenant", "acme", "--models", bad],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(
            stderr.contains("a model name cannot be empty"),
            "{bad:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
    assert!(
        !dir.path().join("wardgate.db").exists(),
        "a refused argument opened the database"
    );
}

/// With Redis configured, `wardgate keys revoke` and `rotate` announce the key's id on the
/// channel running gateways listen on, so they drop it from their caches at once; with Redis
/// unreachable the change is made all the same, and the command says it was not announced.
#[test]
fn a_key_change_from_the_cli_is_announced_to_running_gateways_through_redis() {
    let url = std::env::var("WARDGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let ns = format!("wardgate-test:cli-{}-{nanos}", std::process::id());
    let env = [
        ("WARDGATE_RATE_LIMIT_BACKEND", "redis"),
        ("WARDGATE_REDIS_URL", url.as_str()),
        ("WARDGATE_REDIS_NAMESPACE", ns.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let create = || create_key(dir.path(), &env);
    let (revoked, rotated) = (create(), create());

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(format!("{ns}:key-changed")).unwrap();
    pubsub
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    for args in [
        &["keys", "revoke", revoked.as_str()][..],
        &["keys", "rotate", rotated.as_str(), "--overlap", "0s"][..],
    ] {
        let out = wardgate_with(dir.path(), args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("not announced"), "{args:?}: {stderr}");
    }
    let heard: Vec<String> = (0..2)
        .map(|_| pubsub.get_message().unwrap().get_payload().unwrap())
        .collect();
    assert_eq!(heard, [revoked, rotated]);

    // Redis unreachable: the key is revoked all the same, and the command says so, naming
    // the Redis by host and port, never by its URL's password.
    let id = create();
    let down = [
        ("WARDGATE_RATE_LIMIT_BACKEND", "redis"),
        (
            "WARDGATE_REDIS_URL",
            "redis://:pw-4b1f-never-shown@127.0.0.1:1",
        ),
    ];
    let out = wardgate_with(dir.path(), &["keys", "revoke", &id], &down);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not announced"), "{stderr}");
    assert!(stderr.contains("Redis at 127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("pw-4b1f-never-shown"), "{stderr}");
    let out = wardgate(dir.path(), &["keys", "list", "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert_eq!(key["status"], "revoked", "{key}");
}
