//! Tests of the HTTP witness client against a witness written here from the C2SP
//! `tlog-witness` text: it checks the log's signature with the log's public key, keeps the
//! size and root it last cosigned, answers 409 with its size to a stale `old`, checks the
//! consistency proof, and cosigns with its own key. The writers under test are the real ones,
//! over the in-memory store: the single writer and the shared log's sequencer.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::{Auditor, AuditorConfig, SequencerConfig};
use crate::checkpoint::SignedCheckpoint;
use crate::conformance::sample_event;
use crate::cosignature::CosignerKey;
use crate::cosignature::CosigningKey;
use crate::memory::MemoryAuditStore;
use crate::merkle::empty_root;
use crate::merkle::{self, Hash};
use crate::note::{SignerKey, VerifierKey};
use crate::shared::SharedLog;
use crate::store::{AuditStore, MAX_READ};
use crate::witness::http::*;

const ORIGIN: &str = "test/audit";

/// How the test witness behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// As the protocol says.
    Up,
    /// Answers every request 503.
    Down,
    /// Takes the checkpoint, then the answer is lost (500).
    LosesAnswers,
}

/// One request the test witness answered.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    old: u64,
    size: u64,
    proof_len: usize,
    status: u16,
}

struct WitnessState {
    log_key: VerifierKey,
    signer: CosigningKey,
    mode: Mode,
    size: u64,
    root: Hash,
    seen: Vec<Seen>,
}

impl WitnessState {
    /// `add-checkpoint`, by the specification's rules, in their order.
    fn add_checkpoint(&mut self, body: &str) -> (StatusCode, Option<&'static str>, String) {
        let refuse = |status| (status, None, String::new());
        if self.mode == Mode::Down {
            return refuse(StatusCode::SERVICE_UNAVAILABLE);
        }
        let Some((old, proof, note)) = parse_request(body) else {
            return refuse(StatusCode::BAD_REQUEST);
        };
        let origin = note.split('\n').next().unwrap_or_default();
        if origin != ORIGIN {
            return refuse(StatusCode::NOT_FOUND);
        }
        let Ok(signed) =
            SignedCheckpoint::open(note, std::slice::from_ref(&self.log_key), Some(ORIGIN))
        else {
            return refuse(StatusCode::FORBIDDEN);
        };
        let checkpoint = signed.checkpoint;
        let mut seen = Seen {
            old,
            size: checkpoint.size,
            proof_len: proof.len(),
            status: 0,
        };
        let answer = if old > checkpoint.size {
            refuse(StatusCode::BAD_REQUEST)
        } else if old != self.size {
            (
                StatusCode::CONFLICT,
                Some("text/x.tlog.size"),
                format!("{}\n", self.size),
            )
        } else if old == checkpoint.size && old > 0 && checkpoint.root != self.root {
            refuse(StatusCode::CONFLICT)
        } else if merkle::verify_consistency(
            old,
            checkpoint.size,
            &self.root,
            &checkpoint.root,
            &proof,
        )
        .is_err()
        {
            refuse(StatusCode::UNPROCESSABLE_ENTITY)
        } else {
            self.size = checkpoint.size;
            self.root = checkpoint.root;
            if self.mode == Mode::LosesAnswers {
                refuse(StatusCode::INTERNAL_SERVER_ERROR)
            } else {
                let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
                (
                    StatusCode::OK,
                    None,
                    self.signer.cosign(&checkpoint.body(), now),
                )
            }
        };
        seen.status = answer.0.as_u16();
        self.seen.push(seen);
        answer
    }
}

/// `old <n>\n`, proof lines, an empty line, the note; `None` if it is not that.
fn parse_request(body: &str) -> Option<(u64, Vec<Hash>, &str)> {
    let (first, mut rest) = body.split_once('\n')?;
    let old = first.strip_prefix("old ")?.parse().ok()?;
    let mut proof = Vec::new();
    loop {
        let (line, after) = rest.split_once('\n')?;
        rest = after;
        if line.is_empty() {
            break;
        }
        proof.push(Hash::from_slice(&B64.decode(line).ok()?)?);
    }
    Some((old, proof, rest))
}

async fn add_checkpoint(State(state): State<Arc<Mutex<WitnessState>>>, body: String) -> Response {
    let (status, content_type, text) = state.lock().unwrap().add_checkpoint(&body);
    match content_type {
        Some(t) => (status, [(header::CONTENT_TYPE, t)], text).into_response(),
        None => (status, text).into_response(),
    }
}

/// A witness on a loopback port, serving `add-checkpoint` under the prefix `/w1`.
struct TestWitness {
    addr: SocketAddr,
    state: Arc<Mutex<WitnessState>>,
    /// The key it says it has (and signs with, unless told otherwise).
    key: CosignerKey,
}

impl TestWitness {
    async fn start(log_key: VerifierKey) -> Self {
        let signer = CosigningKey::generate("witness.test/w1").unwrap();
        Self::signing_with(log_key, signer.verifier(), signer).await
    }

    /// A witness whose cosignatures are made with `signer` while it advertises `key`.
    async fn signing_with(log_key: VerifierKey, key: CosignerKey, signer: CosigningKey) -> Self {
        let state = Arc::new(Mutex::new(WitnessState {
            log_key,
            signer,
            mode: Mode::Up,
            size: 0,
            root: empty_root(),
            seen: Vec::new(),
        }));
        let app = Router::new()
            .route("/w1/add-checkpoint", post(add_checkpoint))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state, key }
    }

    fn config(&self) -> HttpWitnessConfig {
        HttpWitnessConfig {
            url: format!("http://{}/w1/", self.addr),
            timeout: Duration::from_secs(5),
            key: Some(self.key.clone()),
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn held(&self) -> (u64, Hash) {
        let state = self.state.lock().unwrap();
        (state.size, state.root)
    }
}

fn accepted(old: u64, size: u64) -> Seen {
    // A proof from 0, or between equal sizes, is empty; any other is not.
    let proof_len = usize::from(old != 0 && old != size);
    Seen {
        old,
        size,
        proof_len,
        status: 200,
    }
}

/// The requests with each proof's length reduced to whether it had one.
fn shape(seen: &[Seen]) -> Vec<Seen> {
    seen.iter()
        .map(|s| Seen {
            proof_len: s.proof_len.min(1),
            ..s.clone()
        })
        .collect()
}

fn config(witness: HttpWitnessConfig) -> AuditorConfig {
    AuditorConfig {
        origin: ORIGIN.into(),
        // Checkpoints only when a test asks, unless it says otherwise.
        checkpoint_every: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        http_witness: Some(witness),
        ..AuditorConfig::default()
    }
}

fn same_key(key: &SignerKey) -> SignerKey {
    SignerKey::parse(&key.to_private_string()).unwrap()
}

/// Waits (at most 10 s) until the witness client's status satisfies `what`.
async fn until(auditor: &Auditor, what: impl FnMut(&WitnessStatus) -> bool) -> WitnessStatus {
    let mut rx = auditor.http_witness().unwrap().subscribe();
    let Ok(status) = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(what)).await else {
        panic!(
            "witness status not reached: {:?}",
            auditor.http_witness().unwrap().status()
        );
    };
    *status.unwrap()
}

/// A log's signing key, a witness that trusts it, and a single writer over a fresh store that
/// submits to that witness and checks its cosignatures.
async fn witnessed_log() -> (SignerKey, TestWitness, Arc<MemoryAuditStore>, Auditor) {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let witness = TestWitness::start(key.verifier()).await;
    let store = Arc::new(MemoryAuditStore::new());
    let auditor = Auditor::start(store.clone(), same_key(&key), config(witness.config()))
        .await
        .unwrap();
    (key, witness, store, auditor)
}

/// Appends `n` events and seals a checkpoint; returns its size.
async fn append_and_checkpoint(auditor: &Auditor, n: u64) -> u64 {
    let start = auditor.size();
    for i in 0..n {
        auditor.append(sample_event(start + i)).await.unwrap();
    }
    auditor.checkpoint().await.unwrap().checkpoint.size
}

async fn stored_sizes(store: &MemoryAuditStore) -> Vec<u64> {
    store
        .checkpoints(0, MAX_READ)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.size)
        .filter(|&s| s > 0)
        .collect()
}

#[tokio::test]
async fn every_checkpoint_reaches_the_witness_in_order_with_a_proof_it_accepts() {
    let (_, witness, store, auditor) = witnessed_log().await;
    let mut sizes = Vec::new();
    for n in [1, 3, 4, 8, 5] {
        let size = append_and_checkpoint(&auditor, n).await;
        until(&auditor, |s| s.witness_size == size).await;
        sizes.push(size);
    }
    auditor.shutdown().await.unwrap();
    assert_eq!(sizes, [1, 4, 8, 16, 21]);
    // The empty log's first checkpoint has nothing to witness; every later one went, in order,
    // each with a proof from the one before, and was cosigned.
    assert_eq!(stored_sizes(&store).await, sizes);
    let mut old = 0;
    let mut want = Vec::new();
    for &size in &sizes {
        want.push(accepted(old, size));
        old = size;
    }
    assert_eq!(shape(&witness.seen()), want);
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(witness.held(), (latest.size, latest.root));
    let status = auditor.http_witness().unwrap().status();
    assert_eq!(
        status,
        WitnessStatus {
            witness_size: 21,
            cosigned: 5,
            failures: 0
        }
    );
}

/// Automatic checkpoints sealed faster than the witness answers are skipped, never reordered:
/// each submission is newer than the last and proven from it, and the last is the final one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_sealed_faster_than_the_witness_answers_are_skipped_never_reordered() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let witness = TestWitness::start(key.verifier()).await;
    let store = Arc::new(MemoryAuditStore::new());
    let cfg = AuditorConfig {
        checkpoint_every: 1,
        ..config(witness.config())
    };
    let auditor = Auditor::start(store.clone(), key, cfg).await.unwrap();
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let auditor = auditor.clone();
            tokio::spawn(async move { auditor.append(sample_event(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    auditor.shutdown().await.unwrap();
    let seen = witness.seen();
    let stored = stored_sizes(&store).await;
    let mut old = 0;
    for s in &seen {
        assert_eq!((s.old, s.status), (old, 200), "{seen:?}");
        assert!(s.size > old, "{seen:?}");
        assert!(stored.contains(&s.size), "{s:?} was never sealed");
        old = s.size;
    }
    assert_eq!(
        old, 200,
        "the final checkpoint reached the witness: {seen:?}"
    );
    assert_eq!(auditor.http_witness().unwrap().failures(), 0);
}

#[tokio::test]
async fn a_witness_that_was_down_gets_the_next_checkpoint_proven_from_its_last_size() {
    let (key, witness, store, auditor) = witnessed_log().await;
    append_and_checkpoint(&auditor, 5).await;
    until(&auditor, |s| s.witness_size == 5).await;

    // Down for two checkpoints: each is a failure, and appends go on.
    witness.set_mode(Mode::Down);
    append_and_checkpoint(&auditor, 5).await;
    until(&auditor, |s| s.failures == 1).await;
    append_and_checkpoint(&auditor, 5).await;
    until(&auditor, |s| s.failures == 2).await;
    // Back: the next checkpoint is proven from the size the witness still holds.
    witness.set_mode(Mode::Up);
    append_and_checkpoint(&auditor, 5).await;
    until(&auditor, |s| s.witness_size == 20).await;

    // The witness takes a checkpoint but its answer is lost: this client still thinks it holds
    // 20. The next submission (old 20) gets 409 with the size 25, and is proven from there.
    witness.set_mode(Mode::LosesAnswers);
    append_and_checkpoint(&auditor, 5).await;
    until(&auditor, |s| s.failures == 3).await;
    witness.set_mode(Mode::Up);
    append_and_checkpoint(&auditor, 5).await;
    until(&auditor, |s| s.witness_size == 30).await;
    auditor.shutdown().await.unwrap();

    // A restarted gateway knows nothing of the witness: it asks from 0, is told 30, and proves
    // from there.
    let restarted = Auditor::start(store.clone(), same_key(&key), config(witness.config()))
        .await
        .unwrap();
    append_and_checkpoint(&restarted, 5).await;
    until(&restarted, |s| s.witness_size == 35).await;
    restarted.shutdown().await.unwrap();

    let conflict = |old, size| Seen {
        old,
        size,
        proof_len: usize::from(old != 0),
        status: 409,
    };
    assert_eq!(
        shape(&witness.seen()),
        [
            accepted(0, 5),
            accepted(5, 20),
            Seen {
                status: 500,
                ..accepted(20, 25)
            },
            conflict(20, 30),
            accepted(25, 30),
            conflict(0, 35),
            accepted(30, 35),
        ]
    );
    assert_eq!(
        restarted.http_witness().unwrap().status(),
        WitnessStatus {
            witness_size: 35,
            cosigned: 1,
            failures: 0
        }
    );
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(witness.held(), (latest.size, latest.root));
}

#[tokio::test]
async fn the_last_checkpoint_is_tried_once_more_at_shutdown() {
    let (_, witness, _, auditor) = witnessed_log().await;
    witness.set_mode(Mode::Down);
    append_and_checkpoint(&auditor, 3).await;
    until(&auditor, |s| s.failures == 1).await;
    witness.set_mode(Mode::Up);
    // Nothing new to seal at shutdown; the checkpoint that failed is tried again, and the
    // shutdown returns only after that.
    auditor.shutdown().await.unwrap();
    assert_eq!(
        auditor.http_witness().unwrap().status(),
        WitnessStatus {
            witness_size: 3,
            cosigned: 1,
            failures: 1
        }
    );
    assert_eq!(witness.held().0, 3);
}

#[tokio::test]
async fn a_cosignature_by_another_key_is_a_failure_when_the_witness_key_is_set() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let advertised = CosigningKey::generate("witness.test/w1")
        .unwrap()
        .verifier();
    let impostor = CosigningKey::generate("witness.test/w1").unwrap();
    let witness = TestWitness::signing_with(key.verifier(), advertised, impostor).await;
    let store = Arc::new(MemoryAuditStore::new());
    let auditor = Auditor::start(store.clone(), same_key(&key), config(witness.config()))
        .await
        .unwrap();
    append_and_checkpoint(&auditor, 2).await;
    let status = until(&auditor, |s| s.failures == 1).await;
    assert_eq!(status.cosigned, 0);
    assert_eq!(status.witness_size, 0, "an unverified answer is not taken");
    auditor.shutdown().await.unwrap();

    // Without a key to check, such a witness's answers are taken as they come.
    let other = CosigningKey::generate("witness.test/w1").unwrap();
    let witness = TestWitness::signing_with(key.verifier(), other.verifier(), other).await;
    let unchecked = HttpWitnessConfig {
        key: None,
        ..witness.config()
    };
    let auditor = Auditor::start(Arc::new(MemoryAuditStore::new()), key, config(unchecked))
        .await
        .unwrap();
    append_and_checkpoint(&auditor, 2).await;
    let status = until(&auditor, |s| s.witness_size == 2).await;
    assert_eq!((status.cosigned, status.failures), (1, 0));
    auditor.shutdown().await.unwrap();
}

/// A witness that accepts connections and never answers, or a port nobody listens on, holds up
/// no append and no checkpoint: the log goes on, and each submission fails on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_checkpoints_go_on_while_the_witness_does_not_answer() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let connected = Arc::new(tokio::sync::Notify::new());
    let told = connected.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
            told.notify_one();
        }
    });
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);

    for (addr, hangs) in [(silent_addr, true), (closed_addr, false)] {
        let key = SignerKey::generate(ORIGIN).unwrap();
        let store = Arc::new(MemoryAuditStore::new());
        let witness = HttpWitnessConfig {
            url: format!("http://{addr}"),
            timeout: Duration::from_secs(2),
            key: None,
        };
        let cfg = AuditorConfig {
            checkpoint_every: 1,
            ..config(witness)
        };
        let auditor = Auditor::start(store.clone(), key, cfg).await.unwrap();
        auditor.append(sample_event(0)).await.unwrap();
        if hangs {
            // The first checkpoint's submission is now waiting for an answer that never comes.
            connected.notified().await;
        }
        let started = std::time::Instant::now();
        for i in 1..50 {
            auditor.append(sample_event(i)).await.unwrap();
        }
        let sealed = auditor.checkpoint().await.unwrap();
        assert_eq!(sealed.checkpoint.size, 50);
        if hangs {
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(
                auditor.http_witness().unwrap().failures(),
                0,
                "the submission is still in flight, and the log went on without it"
            );
        }
        until(&auditor, |s| s.failures >= 1).await;
        auditor.shutdown().await.unwrap();
        assert_eq!(store.size().await.unwrap(), 50);
        assert_eq!(
            store.latest_checkpoint().await.unwrap().unwrap().size,
            50,
            "every checkpoint was sealed and stored"
        );
        let status = auditor.http_witness().unwrap().status();
        assert_eq!((status.witness_size, status.cosigned), (0, 0));
    }
}

/// The shared log's sequencer submits its checkpoints too; when the lease moves, the next
/// holder learns the witness's size from its first 409 and proves from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_logs_sequencer_submits_and_its_successor_goes_on() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let witness = TestWitness::start(key.verifier()).await;
    let store = Arc::new(MemoryAuditStore::new());
    let instance = |name: &str| SequencerConfig {
        holder: name.into(),
        poll_interval: Duration::from_millis(10),
        ..SequencerConfig::new(name)
    };
    let a = Auditor::start_shared(
        store.clone(),
        same_key(&key),
        config(witness.config()),
        instance("a"),
    )
    .await
    .unwrap();
    assert_eq!(append_and_checkpoint(&a, 10).await, 10);
    until(&a, |s| s.witness_size == 10).await;
    // A clean stop hands the lease over at once.
    a.shutdown().await.unwrap();

    let b = Auditor::start_shared(store.clone(), key, config(witness.config()), instance("b"))
        .await
        .unwrap();
    assert_eq!(append_and_checkpoint(&b, 5).await, 15);
    until(&b, |s| s.witness_size == 15).await;
    b.shutdown().await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 0);
    // The first holder's checkpoints (the sequencer signs the log's first one as soon as it
    // has an entry), each proven from the last; then the successor's, proven from 10 once the
    // witness told it so.
    let seen = shape(&witness.seen());
    let (first, second) = seen.split_at(seen.len() - 2);
    let mut old = 0;
    for s in first {
        assert_eq!(*s, accepted(old, s.size), "{seen:?}");
        old = s.size;
    }
    assert_eq!(old, 10, "{seen:?}");
    assert_eq!(
        second,
        [
            Seen {
                status: 409,
                ..accepted(0, 15)
            },
            accepted(10, 15),
        ]
    );
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(witness.held(), (latest.size, latest.root));
}

#[test]
fn witness_urls_must_be_https_unless_loopback() {
    for good in [
        "https://witness.example.com",
        "https://witness.example.com/prefix/",
        "http://127.0.0.1:7380",
        "http://[::1]:7380/w",
    ] {
        let endpoint = check_url(good).unwrap();
        assert!(
            endpoint.path().ends_with("/add-checkpoint") && !endpoint.path().contains("//"),
            "{good}: {endpoint}"
        );
    }
    assert_eq!(
        check_url("https://w.example/a/b/").unwrap().as_str(),
        "https://w.example/a/b/add-checkpoint"
    );
    for (bad, says) in [
        ("http://witness.example.com", "use https://"),
        ("http://localhost:7380", "use https://"),
        ("http://10.0.0.1", "use https://"),
        ("ftp://witness.example.com", "https://"),
        ("witness.example.com", "not a URL"),
        ("https://user:secret@witness.example.com", "credentials"),
        ("https://witness.example.com/?log=1", "query"),
    ] {
        let e = check_url(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
        assert!(!e.contains("secret"), "{e}");
    }
    for (timeout, ok) in [
        (Duration::ZERO, false),
        (Duration::from_secs(1), true),
        (MAX_TIMEOUT, true),
        (MAX_TIMEOUT + Duration::from_millis(1), false),
    ] {
        assert_eq!(check_timeout(timeout).is_ok(), ok, "{timeout:?}");
    }
}
