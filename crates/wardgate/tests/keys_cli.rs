//! `wardgate keys`, run as the built binary: a key's lifetime is checked like the admin API's
//! `expires_in` (one function, one message), and no input makes the command panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `wardgate` in `dir` with its database there and no `WARDGATE_*` setting of the
/// environment the tests run in.
fn wardgate(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(dir)
        .env("WARDGATE_DB", dir.join("wardgate.db"))
        .args(args)
        .output()
        .unwrap()
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
    let out = wardgate(
        dir.path(),
        &["keys", "create", "--tenant", "acme", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap();

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
