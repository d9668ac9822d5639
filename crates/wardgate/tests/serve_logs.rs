//! `wardgate serve` started as an operator starts it, its log going to a pipe (as with
//! `wardgate serve 2> serve.log`): no colour codes, the lines about the server's own
//! configuration read as written (where it listens, which backend it cannot reach), and what a
//! request brought is still redacted. Both log formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Runs `wardgate` in `dir` with no `WARDGATE_*` setting of the environment the tests run in.
fn wardgate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardgate"));
    // The default metrics ports are one per machine, and tests run side by side.
    cmd.env("WARDGATE_METRICS_LISTEN", "off")
        .env("WARDGATE_LLM_METRICS_LISTEN", "off");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARDGATE_")) {
        cmd.env_remove(k);
    }
    cmd.current_dir(dir)
        .arg("--config")
        .arg(dir.join("wardgate.toml"));
    cmd
}

/// A backend that does not answer (the discard port), so the start logs that it cannot reach
/// it, naming its URL.
const BACKEND_URL: &str = "http://127.0.0.1:9/v1";

fn write_config(dir: &Path, format: &str) {
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"

[logging]
format = "{format}"

[storage]
sqlite_path = "wardgate.db"

[[backends]]
name = "b0"
kind = "openai"
url = "{BACKEND_URL}"

[[models]]
name = "tiny"
chain = [{{ backend = "b0", model = "tiny" }}]
"#
    );
    std::fs::write(dir.join("wardgate.toml"), toml).unwrap();
}

/// A key for tenant `acme`, made with `wardgate keys create`.
fn create_key(dir: &Path) -> String {
    let out = wardgate(dir)
        .args(["keys", "create", "--tenant", "acme", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["key"].as_str().unwrap().to_owned()
}

/// A running `wardgate serve` and its log lines as they come.
struct Server {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = wardgate(dir)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the first log line that contains `needle` (at most a minute: a debug build
    /// on a busy machine), keeping every line seen.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let _ = self.child.kill();
                    panic!(
                        "no log line with {needle:?}; the log:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; the answer as text.
fn post(port: u16, path: &str, key: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// The port in `…url=http://127.0.0.1:PORT…` (text) or `"url":"http://127.0.0.1:PORT"` (JSON).
fn port_in(line: &str) -> u16 {
    let at = line
        .find("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("the listening URL is not readable: {line:?}"))
        + "http://127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

/// Starts the server with `format`, makes a request whose model name is an IP address,
/// and returns the port and every log line up to that request's.
fn run(format: &str) -> (u16, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), format);
    let key = create_key(dir.path());
    let mut server = Server::start(dir.path());
    let listening = server.wait_for("wardgate listening");
    let port = port_in(&listening);
    let body = r#"{"model":"203.0.113.9","messages":[{"role":"user","content":"hi"}]}"#;
    let answer = post(port, "/v1/chat/completions", &key, body);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    server.wait_for("/v1/chat/completions");
    (port, std::mem::take(&mut server.seen))
}

fn assert_plain(lines: &[String]) {
    for line in lines {
        assert!(
            !line.contains('\u{1b}'),
            "a colour code in a piped log: {line:?}"
        );
    }
}

#[test]
fn a_piped_text_log_is_plain_and_names_the_servers_own_addresses() {
    let (port, lines) = run("text");
    let log = lines.join("\n");
    assert_plain(&lines);
    assert!(
        log.contains(&format!(
            "wardgate listening addr=127.0.0.1:{port} url=http://127.0.0.1:{port}"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("b0 ({BACKEND_URL})")), "{log}");
    assert!(log.contains("ollama:http://127.0.0.1:11434"), "{log}");
    let request = lines
        .iter()
        .find(|l| l.contains("wardgate::request"))
        .unwrap();
    assert!(request.contains(r#"model="[IP_ADDRESS]""#), "{request}");
    assert!(!log.contains("203.0.113.9"), "{log}");
}

#[test]
fn a_piped_json_log_is_plain_json_and_names_the_servers_own_addresses() {
    let (port, lines) = run("json");
    assert_plain(&lines);
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let listening = events
        .iter()
        .find(|e| e["message"] == "wardgate listening")
        .unwrap();
    assert_eq!(listening["addr"], format!("127.0.0.1:{port}"));
    assert_eq!(listening["url"], format!("http://127.0.0.1:{port}"));
    let unreachable = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no model server answers"))
        })
        .unwrap();
    assert_eq!(unreachable["backends"], format!("b0 ({BACKEND_URL})"));
    assert_eq!(unreachable["example"], "ollama:http://127.0.0.1:11434");
    let request = events
        .iter()
        .find(|e| e["target"] == "wardgate::request")
        .unwrap();
    assert_eq!(request["model"], "[IP_ADDRESS]", "{request}");
    assert!(!lines.join("\n").contains("203.0.113.9"));
}
