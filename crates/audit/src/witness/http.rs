//! The HTTP witness: a client of the C2SP `tlog-witness` protocol
//! (<https://c2sp.org/tlog-witness>) that sends every checkpoint the log seals to a witness
//! run by someone other than the database's owner, with a consistency proof from the last
//! checkpoint the witness holds. The witness cosigns only checkpoints consistent with what it
//! saw before, so a rewritten log cannot be passed off as the one it witnessed.
//!
//! One request per checkpoint: `POST <url>/add-checkpoint` with the body `old <size>\n`, the
//! proof's hashes in base64 one per line, an empty line, and the signed checkpoint note. The
//! witness answers 200 with its cosignature line(s), or 409 Conflict with content type
//! `text/x.tlog.size` and the size it holds, when `old` was not that size (this client started
//! at 0, or an answer was lost): the client then builds the proof from that size and tries once
//! more. Any other answer is a failure, logged by its name (403: the witness does not trust the
//! log's key; 404: it does not know the log's origin; 422: it refused the proof).
//!
//! Submissions never hold up the log. The writer hands each sealed checkpoint to one task
//! ([`WitnessFeed::offer`]), which sends them in order, one at a time; a checkpoint sealed
//! while another is in flight replaces any still waiting, since a newer checkpoint is
//! consistent with every older one and the witness loses nothing by skipping. A failure is
//! logged as a warning, counted ([`WitnessStatus::failures`]), and the next checkpoint is tried
//! as usual. At shutdown the writer waits for the last checkpoint to be tried once more if the
//! witness has not cosigned it ([`WitnessFeed::flush`]).
//!
//! The proof is made from the compact range at the witness's size (kept in memory, or read from
//! the stored checkpoint of that size) and the stored leaf hashes after it
//! ([`crate::merkle::ConsistencyBuilder`]): one pass over the new leaves, O(log n) memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::SignedCheckpoint;
use crate::cosignature::{CosignatureError, CosignerKey};
use crate::merkle::{self, ConsistencyBuilder, Hash, ProofError, TreeBuilder};
use crate::store::{AuditStore, AuditStoreError, MAX_READ};

/// Default of the time one request to the witness may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest time one request to the witness may take.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read from a witness; cosignature lines are about 150 bytes each.
const MAX_ANSWER: usize = 64 * 1024;
/// The protocol's bound on consistency proof lines.
const MAX_PROOF_LINES: usize = 63;
/// The content type of a 409 answer that carries the witness's size.
const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// How often the same failure is logged again while it lasts.
const REPEAT_WARNING: Duration = Duration::from_secs(60);

/// Where and how to reach a witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpWitnessConfig {
    /// The witness's submission prefix: `add-checkpoint` is appended to it. HTTPS, or plain HTTP
    /// to a loopback address ([`check_url`]).
    pub url: String,
    /// The most one request may take, connecting included (at most [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// The witness's public key: when set, an answer counts only if it carries a cosignature by
    /// this key that verifies for the submitted checkpoint.
    pub key: Option<CosignerKey>,
}

impl HttpWitnessConfig {
    /// A witness at `url`, with the default timeout and no key check.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            key: None,
        }
    }

    /// Checks the settings; the message says what to change.
    pub fn check(&self) -> Result<(), String> {
        check_url(&self.url)?;
        check_timeout(self.timeout)
    }
}

/// Checks a witness timeout: positive and at most [`MAX_TIMEOUT`].
pub fn check_timeout(timeout: Duration) -> Result<(), String> {
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(format!(
            "the witness timeout must be more than 0 and at most {} s",
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(())
}

/// Checks a witness URL and returns its `add-checkpoint` endpoint. It must be `https://`, or
/// `http://` to a loopback address (a witness on this host, or a tunnel to one), and carry no
/// credentials, query or fragment.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("not a URL ({e}); expected https://<witness>/<prefix>"))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let loopback = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(
                    "plain http is allowed only to a loopback address (127.0.0.1, [::1]); \
                     use https:// for a witness on another host"
                        .into(),
                );
            }
        }
        _ => return Err("must be an https:// URL".into()),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials; a witness needs none".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(
            "must not have a query or fragment: give the witness's submission prefix".into(),
        );
    }
    let prefix = parsed.path().trim_end_matches('/').to_owned();
    let mut endpoint = parsed;
    endpoint.set_path(&format!("{prefix}/add-checkpoint"));
    Ok(endpoint)
}

/// What the witness client has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WitnessStatus {
    /// The tree size the witness holds for this log, as it last said (by cosigning a
    /// checkpoint, or in a 409 answer); 0 until it has.
    pub witness_size: u64,
    /// Checkpoints the witness cosigned.
    pub cosigned: u64,
    /// Submissions that failed (each is also logged with its reason).
    pub failures: u64,
}

/// The witness client's public side: its progress, for tests and metrics.
#[derive(Clone, Debug)]
pub struct HttpWitness {
    status: watch::Receiver<WitnessStatus>,
}

impl HttpWitness {
    /// What it has done so far.
    pub fn status(&self) -> WitnessStatus {
        *self.status.borrow()
    }

    /// Submissions that failed.
    pub fn failures(&self) -> u64 {
        self.status().failures
    }

    /// A receiver that sees every change of [`Self::status`] (to wait for one).
    pub fn subscribe(&self) -> watch::Receiver<WitnessStatus> {
        self.status.clone()
    }
}

/// A sealed checkpoint on its way to the witness, with the compact range at its size (for the
/// proof of the next one).
#[derive(Debug)]
pub(crate) struct Offer {
    signed: SignedCheckpoint,
    subtrees: Vec<Hash>,
}

/// The writer's side: hands sealed checkpoints to the submitting task.
#[derive(Clone, Debug)]
pub(crate) struct WitnessFeed {
    latest: Arc<watch::Sender<Option<Arc<Offer>>>>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

impl WitnessFeed {
    /// Hands a sealed checkpoint over without waiting. One still waiting is replaced; an older
    /// one than the latest handed over is ignored.
    pub(crate) fn offer(&self, signed: &SignedCheckpoint, subtrees: &[Hash]) {
        let offer = Arc::new(Offer {
            signed: signed.clone(),
            subtrees: subtrees.to_vec(),
        });
        self.latest.send_if_modified(|latest| {
            let newer = latest
                .as_ref()
                .is_none_or(|l| l.signed.checkpoint.size < offer.signed.checkpoint.size);
            if newer {
                *latest = Some(offer);
            }
            newer
        });
    }

    /// Waits for the submission in flight, then has the latest checkpoint tried once more if
    /// the witness has not cosigned it (the log is stopping: no later checkpoint will).
    pub(crate) async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.flush.send(reply).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// Starts the client: a task on `runtime` that submits what the returned feed is offered, and
/// stops when the feed is dropped. `store` is the log's, for the leaf hashes of the proofs.
pub(crate) fn start(
    config: &HttpWitnessConfig,
    store: Arc<dyn AuditStore>,
    runtime: &tokio::runtime::Handle,
) -> Result<(HttpWitness, WitnessFeed), String> {
    config.check()?;
    let endpoint = check_url(&config.url)?;
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        // The witness is addressed explicitly; a redirect could lead to plain http elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wardgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the witness's HTTPS client: {e}"))?;
    let (latest, latest_rx) = watch::channel(None);
    let (flush, flush_rx) = mpsc::channel(1);
    let (status, status_rx) = watch::channel(WitnessStatus::default());
    let submitter = Submitter {
        shown: config.url.trim().to_owned(),
        endpoint,
        client,
        key: config.key.clone(),
        timeout: config.timeout,
        store,
        latest: latest_rx,
        flush: flush_rx,
        status,
        witness: TreeBuilder::new(),
        last_tried: 0,
        last_warning: None,
    };
    runtime.spawn(submitter.run());
    Ok((
        HttpWitness { status: status_rx },
        WitnessFeed {
            latest: Arc::new(latest),
            flush,
        },
    ))
}

/// Why one submission failed.
#[derive(Debug, thiserror::Error)]
enum SubmitError {
    #[error("cannot reach the witness: {0}")]
    Transport(String),
    #[error("no answer from the witness within {0:?}")]
    Timeout(Duration),
    #[error("the witness answered {status}{hint}")]
    Status {
        status: reqwest::StatusCode,
        hint: &'static str,
    },
    #[error(
        "the witness answered 409 Conflict without its size: it holds another checkpoint of \
         size {0} for this log (a different tree: investigate)"
    )]
    Fork(u64),
    #[error("the witness answered 409 Conflict twice (it holds size {0})")]
    Conflict(u64),
    #[error(
        "the witness holds size {witness}, beyond this checkpoint (size {size}); a later \
         checkpoint will be submitted"
    )]
    Ahead { witness: u64, size: u64 },
    #[error("malformed answer from the witness: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Cosignature(#[from] CosignatureError),
    #[error("cannot read the log for the consistency proof: {0}")]
    Store(#[from] AuditStoreError),
    #[error("cannot make the consistency proof from size {old}: {why}")]
    Proof { old: u64, why: String },
}

/// What the witness answered, when it was not a failure.
enum Answer {
    /// 200: its cosignature line(s).
    Cosigned(String),
    /// 409 with `text/x.tlog.size`: the size it holds.
    Size(u64),
}

/// The task that submits checkpoints, one at a time, in order.
struct Submitter {
    /// The URL as configured, for the log.
    shown: String,
    endpoint: reqwest::Url,
    client: reqwest::Client,
    key: Option<CosignerKey>,
    timeout: Duration,
    store: Arc<dyn AuditStore>,
    latest: watch::Receiver<Option<Arc<Offer>>>,
    flush: mpsc::Receiver<oneshot::Sender<()>>,
    status: watch::Sender<WitnessStatus>,
    /// The tree the witness holds, as far as this client knows (its compact range): empty
    /// until the witness says otherwise.
    witness: TreeBuilder,
    /// The largest checkpoint size submitted.
    last_tried: u64,
    /// The last failure logged and when, so a lasting outage is logged once a minute.
    last_warning: Option<(String, Instant)>,
}

impl Submitter {
    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                flush = self.flush.recv() => {
                    let Some(reply) = flush else { return };
                    let latest = self.latest.borrow_and_update().clone();
                    if let Some(offer) = latest
                        && offer.signed.checkpoint.size > self.witness.size()
                    {
                        self.submit_logged(&offer).await;
                    }
                    let _ = reply.send(());
                }
                changed = self.latest.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let latest = self.latest.borrow_and_update().clone();
                    if let Some(offer) = latest
                        && offer.signed.checkpoint.size > self.last_tried
                    {
                        self.submit_logged(&offer).await;
                    }
                }
            }
        }
    }

    /// Submits one checkpoint; a failure is counted and logged, never returned.
    async fn submit_logged(&mut self, offer: &Offer) {
        let size = offer.signed.checkpoint.size;
        self.last_tried = self.last_tried.max(size);
        match self.submit(offer).await {
            Ok(()) => {
                self.status.send_modify(|s| s.cosigned += 1);
                if self.last_warning.take().is_some() {
                    tracing::info!(witness = %self.shown, size, "the audit witness cosigned again");
                }
            }
            Err(e) => {
                self.status.send_modify(|s| s.failures += 1);
                let reason = e.to_string();
                let repeat = self
                    .last_warning
                    .as_ref()
                    .is_some_and(|(last, at)| *last == reason && at.elapsed() < REPEAT_WARNING);
                if !repeat {
                    tracing::warn!(
                        witness = %self.shown,
                        size,
                        reason = %reason,
                        "the audit witness did not cosign a checkpoint; the next one will be \
                         submitted as usual"
                    );
                    self.last_warning = Some((reason, Instant::now()));
                }
            }
        }
    }

    /// Submits `offer` with a proof from the size the witness holds; after a 409 that gives
    /// another size, once more with a proof from that one.
    async fn submit(&mut self, offer: &Offer) -> Result<(), SubmitError> {
        let size = offer.signed.checkpoint.size;
        let mut retried = false;
        loop {
            let old = self.witness.size();
            if old > size {
                return Err(SubmitError::Ahead { witness: old, size });
            }
            let proof = self.proof(offer).await?;
            let mut body = format!("old {old}\n");
            for hash in &proof {
                body.push_str(&B64.encode(hash.0));
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&offer.signed.note);
            match self.post(body).await? {
                Answer::Cosigned(lines) => {
                    if let Some(key) = &self.key {
                        key.verify(&offer.signed.checkpoint.body(), &lines)?;
                    } else if !lines.starts_with('\u{2014}') || !lines.ends_with('\n') {
                        return Err(SubmitError::Malformed("expected cosignature lines"));
                    }
                    self.witness = TreeBuilder::from_parts(size, offer.subtrees.clone())
                        .filter(|t| t.root() == offer.signed.checkpoint.root)
                        .ok_or_else(|| SubmitError::Proof {
                            old: size,
                            why: "the checkpoint's tree state does not give its root".into(),
                        })?;
                    self.status.send_modify(|s| s.witness_size = size);
                    return Ok(());
                }
                Answer::Size(held) if held == old => return Err(SubmitError::Fork(held)),
                Answer::Size(held) if retried => return Err(SubmitError::Conflict(held)),
                Answer::Size(held) => {
                    self.witness = self.tree_at(held).await?;
                    self.status.send_modify(|s| s.witness_size = held);
                    retried = true;
                }
            }
        }
    }

    /// The consistency proof from the witness's tree to `offer`, checked before it is sent.
    async fn proof(&self, offer: &Offer) -> Result<Vec<Hash>, SubmitError> {
        let old = &self.witness;
        let checkpoint = &offer.signed.checkpoint;
        let failed = |why: String| SubmitError::Proof {
            old: old.size(),
            why,
        };
        let mut builder =
            ConsistencyBuilder::new(old, checkpoint.size).map_err(|e| failed(e.to_string()))?;
        while let Some(next) = builder.next_leaf() {
            let want = u32::try_from(checkpoint.size - next)
                .unwrap_or(MAX_READ)
                .min(MAX_READ);
            let hashes = self.store.leaf_hashes(next, want).await?;
            if hashes.is_empty() {
                return Err(failed(format!("entry {next} is missing from the store")));
            }
            for hash in hashes.into_iter().take(want as usize) {
                builder.push(hash);
            }
        }
        let proof = builder.finish().map_err(|e| failed(e.to_string()))?;
        // The stored leaves must lead to the checkpoint's root: a witness would refuse the proof
        // otherwise, and the log should hear why from here.
        merkle::verify_consistency(
            old.size(),
            checkpoint.size,
            &old.root(),
            &checkpoint.root,
            &proof,
        )
        .map_err(|e: ProofError| {
            failed(format!(
                "the stored leaf hashes do not lead to the checkpoint's root ({e})"
            ))
        })?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(failed(
                "the proof is longer than the protocol allows".into(),
            ));
        }
        Ok(proof)
    }

    /// The compact range at `size`: from the stored checkpoint of that size, or (a size that
    /// is no checkpoint of this log, which a witness should not hold) from the leaf hashes.
    async fn tree_at(&self, size: u64) -> Result<TreeBuilder, SubmitError> {
        let failed = |why: String| SubmitError::Proof { old: size, why };
        if let Some(stored) = self.store.checkpoints(size, 1).await?.into_iter().next()
            && stored.size == size
        {
            return TreeBuilder::from_parts(size, stored.subtrees)
                .filter(|t| t.root() == stored.root)
                .ok_or_else(|| failed("the stored tree state does not give its root".into()));
        }
        let mut tree = TreeBuilder::new();
        while tree.size() < size {
            let want = u32::try_from(size - tree.size())
                .unwrap_or(MAX_READ)
                .min(MAX_READ);
            let hashes = self.store.leaf_hashes(tree.size(), want).await?;
            if hashes.is_empty() {
                return Err(failed(format!(
                    "the witness holds {size} entries of this log, more than it has"
                )));
            }
            for hash in hashes.into_iter().take(want as usize) {
                tree.push(hash);
            }
        }
        Ok(tree)
    }

    /// Sends one `add-checkpoint` request.
    async fn post(&self, body: String) -> Result<Answer, SubmitError> {
        let mut response = self
            .client
            .post(self.endpoint.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        let sized = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case(SIZE_CONTENT_TYPE))
            });
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(SubmitError::Malformed("the answer is too long"));
            }
            answer.extend_from_slice(&chunk);
        }
        let text =
            String::from_utf8(answer).map_err(|_| SubmitError::Malformed("not UTF-8 text"))?;
        match status {
            reqwest::StatusCode::OK => Ok(Answer::Cosigned(text)),
            reqwest::StatusCode::CONFLICT if sized => {
                let held = text
                    .strip_suffix('\n')
                    .filter(|n| {
                        !n.is_empty()
                            && n.len() <= 20
                            && n.bytes().all(|b| b.is_ascii_digit())
                            && (*n == "0" || !n.starts_with('0'))
                    })
                    .and_then(|n| n.parse().ok())
                    .ok_or(SubmitError::Malformed("the 409 answer is not a tree size"))?;
                Ok(Answer::Size(held))
            }
            reqwest::StatusCode::CONFLICT => Err(SubmitError::Fork(self.witness.size())),
            status => Err(SubmitError::Status {
                status,
                hint: hint(status),
            }),
        }
    }

    fn transport(&self, e: &reqwest::Error) -> SubmitError {
        if e.is_timeout() {
            return SubmitError::Timeout(self.timeout);
        }
        // reqwest's own message is terse ("error sending request"); the causes say why.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = std::error::Error::source(cause);
        }
        SubmitError::Transport(text)
    }
}

/// What an operator should know about a refusal the protocol defines.
fn hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        400 => " (it refused the request as malformed)",
        403 => {
            " (no signature by a log key it trusts: give the witness this log's verifier key, \
             `wardgate audit public-key`)"
        }
        404 => " (it does not know this log's origin: add the log to the witness)",
        422 => " (it refused the consistency proof)",
        _ => "",
    }
}
