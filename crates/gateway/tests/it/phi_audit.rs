//! The PHI guard and the audit log on the request path: de-identification round trips
//! (streamed with tokens split across chunks, and whole), blocking by category per model and
//! per tenant, one terminal audit event per request including denials, the start committed
//! before the backend call, and failing closed when the audit store cannot commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::{Harness, KINDS, chat_body, get_as, mock_cfg, post_as};
use axum::http::StatusCode;
use serde_json::json;
use sha2::Digest;
use wardgate_audit::store::{AuditEntry, AuditFilter, AuditStoreError, StoredCheckpoint};
use wardgate_audit::{AuditEvent, AuditStore, EventType, Hash, MemoryAuditStore, Outcome};

/// Sensitive values, each of a different category, that must never reach a backend in
/// `deidentify` mode.
const PHI_VALUES: [&str; 5] = [
    "John Smith",
    "123-45-6789",
    "(555) 123-4567",
    "john.smith@example.com",
    "MRN 00123456",
];

fn phi_text() -> String {
    format!(
        "Patient {} (SSN {}, phone {}, email {}, {}) was seen for chest pain.",
        PHI_VALUES[0], PHI_VALUES[1], PHI_VALUES[2], PHI_VALUES[3], PHI_VALUES[4]
    )
}

async fn harness(kind: &str, phi: &str) -> Harness {
    Harness::single_with(kind, mock_cfg(), phi).await
}

fn last_prompt(h: &Harness) -> String {
    h.mocks[0]
        .stats()
        .last_body
        .map(|b| b.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn deidentify_replaces_phi_before_the_backend_and_restores_it_in_the_answer() {
    for kind in KINDS {
        for stream in [false, true] {
            let h = harness(kind, "[phi]\nmode = \"deidentify\"\n").await;
            let text = phi_text();
            let mut body = chat_body("tiny", &format!("echo:{text}"));
            body["stream"] = json!(stream);
            let r = h.post("/v1/chat/completions", body).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{kind} stream={stream}: {}",
                r.text()
            );

            // The backend saw tokens, never the values.
            let seen = last_prompt(&h);
            for v in PHI_VALUES {
                assert!(!seen.contains(v), "{kind}: backend saw {v:?} in {seen}");
            }
            assert!(seen.contains("[PERSON_1]"), "{kind}: {seen}");
            assert!(seen.contains("[SSN_1]"), "{kind}: {seen}");

            // The mock echoes the de-identified prompt in chunks of at most 3 characters, so
            // every token straddles chunk boundaries; the client gets the original back.
            let answer = if stream {
                r.frames()
                    .iter()
                    .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
                    .collect::<String>()
            } else {
                r.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(answer, text, "{kind} stream={stream}");
        }
    }
}

#[tokio::test]
async fn deidentify_round_trips_on_the_ollama_front_too() {
    let h = harness("ollama", "[phi]\nmode = \"deidentify\"\n").await;
    let text = phi_text();
    let body = json!({"model": "tiny", "stream": true,
        "messages": [{"role": "user", "content": format!("echo:{text}")}]});
    let r = h.post("/api/chat", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let answer: String = r
        .frames()
        .iter()
        .filter_map(|f| f["message"]["content"].as_str())
        .collect();
    assert_eq!(answer, text);
    assert!(!last_prompt(&h).contains("123-45-6789"));
}

#[tokio::test]
async fn block_refuses_phi_of_the_chosen_categories_naming_categories_not_values() {
    let phi = r#"
[[phi.models]]
name = "other"
mode = "block"
block_categories = ["SSN", "MRN"]
"#;
    for kind in KINDS {
        let h = harness(kind, phi).await;
        let before = h.mocks[0].stats().inference_requests;
        let r = h
            .post("/v1/chat/completions", chat_body("other", &phi_text()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{kind}");
        let err = &r.json()["error"];
        assert_eq!(err["code"], "phi_detected");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains("SSN") && msg.contains("MRN"), "{msg}");
        assert!(!msg.contains("PERSON"), "only the chosen categories: {msg}");
        for v in PHI_VALUES {
            assert!(!r.text().contains(v), "{kind}: the body quotes {v:?}");
        }
        assert_eq!(
            h.mocks[0].stats().inference_requests,
            before,
            "the backend was called"
        );

        // A name alone is not a chosen category; the model without a rule is unaffected.
        let ok = h
            .post(
                "/v1/chat/completions",
                chat_body("other", "Patient John Smith"),
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{kind}: {}", ok.text());
        let ok = h
            .post("/v1/chat/completions", chat_body("tiny", &phi_text()))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{kind}: {}", ok.text());
    }
}

#[tokio::test]
async fn a_tenant_rule_blocks_and_the_stricter_rule_wins() {
    // The harness key's tenant is `acme`; the model asks only for de-identification.
    let phi = r#"
[[phi.tenants]]
name = "acme"
mode = "block"

[[phi.models]]
name = "tiny"
mode = "deidentify"
"#;
    let h = harness("openai", phi).await;
    let r = h
        .post("/v1/chat/completions", chat_body("tiny", &phi_text()))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // Embeddings are guarded too.
    let r = h
        .post(
            "/v1/embeddings",
            json!({"model": "tiny", "input": ["SSN 123-45-6789"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = h
        .post(
            "/v1/chat/completions",
            chat_body("tiny", "What is a fever?"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[test]
fn bad_phi_config_names_the_key() {
    let cases = [
        ("[phi]\nmode = \"mask\"\n", "phi.mode"),
        (
            "[phi]\nblock_categories = [\"NOPE\"]\n",
            "phi.block_categories",
        ),
        (
            "[[phi.tenants]]\nname = \"a\"\nmode = \"loud\"\n",
            "phi.tenants[0].mode",
        ),
        ("[phi]\nmin_score = 2.0\n", "phi.min_score"),
    ];
    for (toml, key) in cases {
        // A bad mode is refused as the file is read, a bad category when it is validated.
        let err = wardgate_gateway::config::parse_toml(toml)
            .and_then(|raw| wardgate_gateway::config::Config::from_raw(raw, &|_| None))
            .err()
            .unwrap_or_else(|| panic!("{toml} was accepted"));
        assert!(err.to_string().contains(key), "{toml}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

fn terminal(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events
        .iter()
        .filter(|e| e.event_type != EventType::RequestStart)
        .collect()
}

#[tokio::test]
async fn every_request_that_reaches_a_handler_has_exactly_one_terminal_event() {
    let store = Arc::new(MemoryAuditStore::new());
    let h = harness("openai", "").await.audited(store.clone()).await;
    let cases: Vec<(axum::http::Request<axum::body::Body>, u16, Outcome)> = vec![
        (
            post_as(
                "/v1/chat/completions",
                &chat_body("tiny", "hello").to_string(),
                Some(&h.key),
            ),
            200,
            Outcome::Allow,
        ),
        (
            post_as(
                "/v1/chat/completions",
                &chat_body("tiny", "hello").to_string(),
                None,
            ),
            401,
            Outcome::Deny,
        ),
        (
            post_as(
                "/v1/chat/completions",
                &chat_body("nope", "hello").to_string(),
                Some(&h.key),
            ),
            404,
            Outcome::Deny,
        ),
        (get_as("/v1/unknown", Some(&h.key)), 404, Outcome::Deny),
        (get_as("/v1/models", Some(&h.key)), 200, Outcome::Allow),
    ];
    let n = cases.len();
    let mut ids = Vec::new();
    for (req, status, _) in cases {
        let r = h.send(req).await;
        assert_eq!(r.status.as_u16(), status, "{}", r.text());
        ids.push(r.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    // Probes are not audited.
    assert_eq!(h.send(get_as("/health", None)).await.status, StatusCode::OK);

    let all = h.audit_events().await;
    let terms = terminal(&all);
    assert_eq!(terms.len(), n, "{all:#?}");
    for (i, id) in ids.iter().enumerate() {
        let mine: Vec<_> = terms
            .iter()
            .filter(|e| e.request_id.as_deref() == Some(id))
            .collect();
        assert_eq!(mine.len(), 1, "request {i}: {all:#?}");
    }
    // The allowed chat: a start before the backend, then the terminal event.
    let chat = &ids[0];
    let of_chat: Vec<_> = all
        .iter()
        .filter(|e| e.request_id.as_deref() == Some(chat))
        .collect();
    assert_eq!(of_chat.len(), 2);
    assert_eq!(of_chat[0].event_type, EventType::RequestStart);
    let t = of_chat[1];
    assert_eq!(t.event_type, EventType::Request);
    assert_eq!(t.outcome, Some(Outcome::Allow));
    assert_eq!(t.http_status, Some(200));
    assert_eq!(t.tenant.as_deref(), Some("acme"));
    assert_eq!(t.model.as_deref(), Some("tiny"));
    assert_eq!(t.backend.as_deref(), Some("b0"));
    assert_eq!(t.route.as_deref(), Some("/v1/chat/completions"));
    assert!(!t.actor_id.is_empty());
    // The 401 is an authentication failure by an anonymous actor.
    let denied = terms
        .iter()
        .find(|e| e.request_id.as_deref() == Some(&ids[1]))
        .unwrap();
    assert_eq!(denied.event_type, EventType::AuthFailure);
    assert_eq!(denied.outcome, Some(Outcome::Deny));
    assert_eq!(denied.http_status, Some(401));
    assert_eq!(denied.actor_id, "anonymous");
    // An unknown model name typed by a client is not recorded.
    let unknown = terms
        .iter()
        .find(|e| e.request_id.as_deref() == Some(&ids[2]))
        .unwrap();
    assert_eq!(unknown.model, None);
    assert_eq!(unknown.deny_reason.as_deref(), Some("model_not_found"));
}

#[tokio::test]
async fn no_prompt_or_completion_text_reaches_the_audit_log() {
    let store = Arc::new(MemoryAuditStore::new());
    let h = harness("ollama", "").await.audited(store.clone()).await;
    let text = phi_text();
    for stream in [false, true] {
        let mut body = chat_body("tiny", &format!("echo:{text}"));
        body["stream"] = json!(stream);
        assert_eq!(
            h.post("/v1/chat/completions", body).await.status,
            StatusCode::OK
        );
    }
    let dump = format!("{:?}", h.audit_events().await);
    for v in PHI_VALUES.iter().chain(["chest pain"].iter()) {
        assert!(!dump.contains(v), "audit holds {v:?}");
    }
}

#[tokio::test]
async fn the_prompt_is_recorded_only_as_a_salted_digest_of_what_the_client_sent() {
    let store = Arc::new(MemoryAuditStore::new());
    // De-identification on: the digest is of the client's text, not of what the backend saw.
    let h = harness("openai", "[phi]\nmode = \"deidentify\"\n")
        .await
        .audited(store.clone())
        .await;
    let auditor = h.state.audit.clone();
    let text = format!("echo:{}", phi_text());
    for prompt in [text.as_str(), text.as_str(), "echo:something else"] {
        let r = h
            .post("/v1/chat/completions", chat_body("tiny", prompt))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let r = h
        .post(
            "/v1/embeddings",
            json!({"model": "tiny", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let all = h.audit_events().await;
    let digests: Vec<Hash> = terminal(&all)
        .iter()
        .map(|e| {
            e.prompt_sha256
                .expect("every model request carries a digest")
        })
        .collect();
    assert_eq!(digests.len(), 4);
    assert_eq!(digests[0], auditor.prompt_digest([text.as_bytes()]));
    assert_eq!(digests[0], digests[1], "the same prompt, the same digest");
    assert_ne!(digests[0], digests[2]);
    assert_eq!(digests[3], auditor.prompt_digest([&b"a"[..], b"b"]));
    // The start event carries it too, and it is keyed: not the plain SHA-256 of the text.
    let start = all
        .iter()
        .find(|e| e.event_type == EventType::RequestStart)
        .unwrap();
    assert_eq!(start.prompt_sha256, Some(digests[0]));
    let plain: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
    assert_ne!(digests[0].0, plain);
}

/// An audit store whose appends fail while `down` is set, and appends holding a request's
/// terminal event while `ends_down` is set.
#[derive(Default)]
pub(crate) struct Flaky {
    inner: MemoryAuditStore,
    pub(crate) down: AtomicBool,
    pub(crate) ends_down: AtomicBool,
}

#[async_trait::async_trait]
impl AuditStore for Flaky {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        if self.down.load(Ordering::SeqCst)
            || (self.ends_down.load(Ordering::SeqCst)
                && events.iter().any(|e| e.event_type == EventType::Request))
        {
            return Err(AuditStoreError::Unavailable("disk full".into()));
        }
        self.inner.append(events).await
    }
    async fn size(&self) -> Result<u64, AuditStoreError> {
        self.inner.size().await
    }
    async fn read_range(&self, start: u64, limit: u32) -> Result<Vec<AuditEntry>, AuditStoreError> {
        self.inner.read_range(start, limit).await
    }
    async fn leaf_hashes(&self, start: u64, limit: u32) -> Result<Vec<Hash>, AuditStoreError> {
        self.inner.leaf_hashes(start, limit).await
    }
    async fn add_checkpoint(&self, c: &StoredCheckpoint) -> Result<(), AuditStoreError> {
        self.inner.add_checkpoint(c).await
    }
    async fn checkpoints(
        &self,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, AuditStoreError> {
        self.inner.checkpoints(from, limit).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditStoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn query(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, AuditStoreError> {
        self.inner.query(f).await
    }
}

/// A streamed answer whose terminal audit event cannot commit never reaches its end marker
/// (`data: [DONE]`, Ollama's `"done":true`): the client must not hold a complete answer the log
/// does not record. (A black-box finding: the marker went out before the commit was tried.)
#[tokio::test]
async fn a_stream_whose_end_cannot_be_audited_never_sends_its_end_marker() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    for kind in KINDS {
        let store = Arc::new(Flaky::default());
        let h = harness(kind, "").await.audited(store.clone()).await;
        store.ends_down.store(true, Ordering::SeqCst);
        for (path, marker) in [
            ("/v1/chat/completions", "[DONE]"),
            ("/api/chat", "\"done\":true"),
        ] {
            let mut body = chat_body("tiny", "hello");
            body["stream"] = json!(true);
            let resp = h
                .app
                .clone()
                .oneshot(post_as(path, &body.to_string(), Some(&h.key)))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{kind} {path}");
            let mut body = resp.into_body();
            let mut got = Vec::new();
            let mut ended_in_error = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
                    Err(_) => {
                        ended_in_error = true;
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&got);
            assert!(
                ended_in_error,
                "{kind} {path}: the body ended cleanly: {text}"
            );
            assert!(!text.contains(marker), "{kind} {path}: {text}");
        }
    }
}

/// A whole (non-streamed) answer whose terminal audit event cannot commit is a 503 the client
/// can retry, never a 200 whose body breaks off: the commit is waited for before the status
/// line. (A black-box finding: the 200 and its headers went out first.)
#[tokio::test]
async fn a_whole_answer_whose_end_cannot_be_audited_is_a_503_not_a_cut_200() {
    for kind in KINDS {
        let store = Arc::new(Flaky::default());
        let h = harness(kind, "").await.audited(store.clone()).await;
        store.ends_down.store(true, Ordering::SeqCst);
        for path in ["/v1/chat/completions", "/api/chat"] {
            let mut body = chat_body("tiny", "hello");
            body["stream"] = json!(false);
            let r = h.post(path, body).await;
            assert_eq!(
                r.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{kind} {path}: {}",
                r.text()
            );
            assert!(r.headers.contains_key("retry-after"), "{kind} {path}");
            assert!(r.headers.contains_key("x-request-id"), "{kind} {path}");
            assert!(!r.text().contains("choices"), "{kind} {path}: {}", r.text());
        }
        store.ends_down.store(false, Ordering::SeqCst);
        let ok = h
            .post("/v1/chat/completions", chat_body("tiny", "hello"))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{kind}: {}", ok.text());
    }
}

#[tokio::test]
async fn when_the_audit_store_cannot_commit_requests_fail_closed_and_no_backend_is_called() {
    let store = Arc::new(Flaky::default());
    let h = harness("openai", "").await.audited(store.clone()).await;
    let ok = h
        .post("/v1/chat/completions", chat_body("tiny", "hello"))
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    store.down.store(true, Ordering::SeqCst);
    let before = h.mocks[0].stats().inference_requests;
    for stream in [false, true] {
        let mut body = chat_body("tiny", "hello");
        body["stream"] = json!(stream);
        let r = h.post("/v1/chat/completions", body).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert!(r.headers.contains_key("retry-after"));
    }
    assert_eq!(
        h.mocks[0].stats().inference_requests,
        before,
        "a backend was called without an audit start"
    );
}
