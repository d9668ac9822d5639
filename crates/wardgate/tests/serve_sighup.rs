//! SIGHUP sent to `wardgate serve` while it is still starting (a deploy that restarts and
//! reloads, a logrotate `postrotate kill -HUP` at the same moment) must not end it: SIGHUP's
//! default action ends a process, so `serve` takes it over before anything else.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// `wardgate serve` in `dir`, with no `WARDGATE_*` setting of the environment the tests run in.
fn serve(dir: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(dir)
        .arg("--config")
        .arg(dir.join("wardgate.toml"))
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The log lines of `child` as they come.
fn lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (at most a minute: a debug build on a busy machine) for a log line with `needle`.
fn wait_for(child: &mut Child, lines: &Receiver<String>, seen: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "no log line with {needle:?}; the process ended with {status}; the log:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// The SIGHUP lands while the start waits for its backend's probe (the backend accepted the
/// connection and does not answer), so before the gateway listens: the process lives on,
/// listens, and then takes the SIGHUP as a reload.
#[test]
fn a_sighup_during_start_up_does_not_end_serve() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", backend.local_addr().unwrap());
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"

[storage]
sqlite_path = "wardgate.db"

[[backends]]
name = "b0"
kind = "openai"
url = "{url}"

[[models]]
name = "tiny"
chain = [{{ backend = "b0", model = "tiny" }}]
"#
    );
    std::fs::write(dir.path().join("wardgate.toml"), toml).unwrap();
    let mut child = serve(dir.path());
    let lines = lines(&mut child);

    // The start's probe is here, unanswered: the gateway is still starting.
    let (probe, _) = backend.accept().unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Give a default SIGHUP action time to end the process, then let the probe fail.
    std::thread::sleep(Duration::from_millis(300));
    drop(probe);
    drop(backend);

    let mut seen = Vec::new();
    wait_for(&mut child, &lines, &mut seen, "wardgate listening");
    wait_for(&mut child, &lines, &mut seen, "configuration reloaded");
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve ended; the log:\n{}",
        seen.join("\n")
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `wardgate llm` does not reload, but a SIGHUP that reaches it (a logrotate, a reload sent to
/// every service) must not end it either: it is logged and ignored (the re-check of the
/// black-box findings found it ending the service).
#[test]
fn a_sighup_to_wardgate_llm_is_logged_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("llm.toml"),
        "[storage]\nsqlite_path = \"wardgate.db\"\n\
         [engine]\nmodels_dir = \"models\"\nfetch_default_model = false\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .current_dir(dir.path())
        .args(["--config", "llm.toml", "llm"])
        .env(
            "WARDGATE_LLM_SECRET",
            "0123456789abcdef0123456789abcdef-sighup",
        )
        .env("WARDGATE_LLM_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines(&mut child);
    let mut seen = Vec::new();
    wait_for(&mut child, &lines, &mut seen, "wardgate llm listening");
    for _ in 0..2 {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for(&mut child, &lines, &mut seen, "SIGHUP ignored");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "wardgate llm ended; the log:\n{}",
        seen.join("\n")
    );
    let _ = child.kill();
    let _ = child.wait();
}
