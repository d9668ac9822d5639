//! The backend-neutral `AuditStore` conformance suite: every implementation (memory, SQLite,
//! PostgreSQL) runs exactly these checks, so they cannot drift apart.
//!
//! Built for this crate's tests and, with the `conformance` feature, for the store crates'. It
//! panics on the first failed check, like any test.
#![expect(
    clippy::unwrap_used,
    reason = "a test suite: a panic is its failure report"
)]

use std::collections::BTreeSet;

use crate::event::{
    ActorKind, AuditEvent, AuthMethod, EventType, Outcome, Timestamp, encode_leaf, event_leaf_hash,
    prompt_digest,
};
use crate::merkle::{self, Hash, TreeBuilder};
use crate::note::SignerKey;
use crate::quarantine::QuarantinedRow;
use crate::queue_tag::QueueKey;
use crate::shared::{Lease, Sequenced, SharedLog};
use crate::store::{AuditFilter, AuditStore, AuditStoreError, StoredCheckpoint};

/// An event with every field set, varied by `i`, for suites and benchmarks.
pub fn sample_event(i: u64) -> AuditEvent {
    let outcome = Outcome::ALL[(i % Outcome::ALL.len() as u64) as usize];
    AuditEvent {
        auth_method: Some(AuthMethod::ApiKey),
        tenant: Some(format!("tenant-{}", i % 3)),
        key_id: Some(format!("key_{:026}", i % 5)),
        source_ip: Some(std::net::IpAddr::from([10, 0, (i % 7) as u8, 1])),
        request_id: Some(format!("req-{i:08}")),
        route: Some("/v1/chat/completions".into()),
        model: Some("llama3.1:8b".into()),
        backend: Some("ollama-1".into()),
        outcome: Some(outcome),
        http_status: Some(match outcome {
            Outcome::Allow => 200,
            Outcome::Deny => 403,
            Outcome::Error => 502,
            Outcome::ClientAbort => 499,
        }),
        deny_reason: (outcome == Outcome::Deny).then(|| "model_not_allowed".into()),
        tokens_in: Some(100 + i % 50),
        tokens_out: Some(20 + i % 30),
        latency_ms: Some(5 + i % 100),
        prompt_sha256: Some(prompt_digest(b"bench-salt", &i.to_be_bytes())),
        ..AuditEvent::new(
            Timestamp::from_unix_millis(1_735_689_600_000 + i as i64 * 1_000)
                .unwrap_or(Timestamp::from_unix_millis(0).unwrap()),
            EventType::Request,
            &format!("key_{:026}", i % 5),
            ActorKind::Service,
        )
    }
}

/// A checkpoint record for the first `size` of `leaves` (the note is a placeholder: stores do
/// not check signatures).
pub fn checkpoint_for(leaves: &[Hash], size: usize) -> StoredCheckpoint {
    let mut b = TreeBuilder::new();
    for l in &leaves[..size] {
        b.push(*l);
    }
    StoredCheckpoint {
        size: size as u64,
        root: b.root(),
        note: format!("test/log\n{size}\nroot\n\n\u{2014} test sig\n"),
        subtrees: b.subtrees().to_vec(),
        created_at: Timestamp::from_unix_millis(1_735_689_600_000).unwrap(),
    }
}

/// Runs every check against `store`, which must be empty.
pub async fn suite<S: AuditStore>(store: &S) {
    empty(store).await;
    let all = appends(store).await;
    invalid_batches_store_nothing(store).await;
    checkpoints(store, &all).await;
    let all = concurrent_appends(store).await;
    queries(store, &all).await;
}

async fn empty<S: AuditStore>(store: &S) {
    assert_eq!(store.size().await.unwrap(), 0);
    assert!(store.read_range(0, 10).await.unwrap().is_empty());
    assert!(store.leaf_hashes(0, 10).await.unwrap().is_empty());
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);
    assert!(store.checkpoints(0, 10).await.unwrap().is_empty());
    assert!(store.append(vec![]).await.unwrap().is_empty());
    assert_eq!(store.size().await.unwrap(), 0);
}

async fn appends<S: AuditStore>(store: &S) -> Vec<crate::AuditEntry> {
    let first = store
        .append((0..3).map(sample_event).collect())
        .await
        .unwrap();
    let second = store
        .append((3..5).map(sample_event).collect())
        .await
        .unwrap();
    // A start event: no outcome, and every optional field empty, round-trips too.
    let start = AuditEvent {
        request_id: Some("req-start".into()),
        ..AuditEvent::new(
            Timestamp::from_unix_millis(1_735_689_600_000).unwrap(),
            EventType::RequestStart,
            "key_x",
            ActorKind::Service,
        )
    };
    let third = store.append(vec![start.clone()]).await.unwrap();
    let all: Vec<_> = first.into_iter().chain(second).chain(third).collect();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    for (i, e) in all.iter().enumerate() {
        let want = if i < 5 {
            sample_event(i as u64)
        } else {
            start.clone()
        };
        assert_eq!(e.event, want, "entry {i}");
        assert_eq!(e.leaf_hash, event_leaf_hash(e.seq, &e.event), "entry {i}");
    }
    assert_eq!(store.size().await.unwrap(), 6);
    assert_eq!(store.read_range(0, 100).await.unwrap(), all);
    assert_eq!(store.read_range(2, 2).await.unwrap(), all[2..4]);
    assert!(store.read_range(6, 10).await.unwrap().is_empty());
    assert!(store.read_range(u64::MAX, 10).await.unwrap().is_empty());
    let hashes: Vec<Hash> = all.iter().map(|e| e.leaf_hash).collect();
    assert_eq!(store.leaf_hashes(0, 100).await.unwrap(), hashes);
    assert_eq!(store.leaf_hashes(1, 3).await.unwrap(), hashes[1..4]);
    all
}

async fn invalid_batches_store_nothing<S: AuditStore>(store: &S) {
    let before = store.size().await.unwrap();
    let bad = AuditEvent {
        actor_id: String::new(),
        ..sample_event(99)
    };
    let result = store.append(vec![sample_event(98), bad]).await;
    assert!(
        matches!(result, Err(AuditStoreError::Invalid(_))),
        "{result:?}"
    );
    assert_eq!(store.size().await.unwrap(), before);
}

async fn checkpoints<S: AuditStore>(store: &S, all: &[crate::AuditEntry]) {
    let leaves: Vec<Hash> = all.iter().map(|e| e.leaf_hash).collect();
    let cp3 = checkpoint_for(&leaves, 3);
    let cp5 = checkpoint_for(&leaves, 5);
    store.add_checkpoint(&cp5).await.unwrap();
    store.add_checkpoint(&cp3).await.unwrap();
    // Idempotent.
    store.add_checkpoint(&cp3).await.unwrap();
    assert_eq!(
        store.checkpoints(0, 10).await.unwrap(),
        [cp3.clone(), cp5.clone()]
    );
    assert_eq!(
        store.checkpoints(4, 10).await.unwrap(),
        std::slice::from_ref(&cp5)
    );
    assert_eq!(
        store.checkpoints(0, 1).await.unwrap(),
        std::slice::from_ref(&cp3)
    );
    assert_eq!(store.latest_checkpoint().await.unwrap(), Some(cp5.clone()));

    // The same size with another (self-consistent) root is a conflict.
    let other: Vec<Hash> = (0..3u8).map(|i| merkle::leaf_hash(&[i])).collect();
    let forked = checkpoint_for(&other, 3);
    assert!(matches!(
        store.add_checkpoint(&forked).await,
        Err(AuditStoreError::Conflict(_))
    ));
    // Subtrees that do not give the root are refused.
    let broken = StoredCheckpoint {
        subtrees: vec![merkle::leaf_hash(b"x")],
        ..checkpoint_for(&leaves, 4)
    };
    assert!(matches!(
        store.add_checkpoint(&broken).await,
        Err(AuditStoreError::Invalid(_))
    ));
    assert_eq!(store.checkpoints(0, 10).await.unwrap().len(), 2);
}

async fn concurrent_appends<S: AuditStore>(store: &S) -> Vec<crate::AuditEntry> {
    let before = store.size().await.unwrap();
    let batch = |from: u64| (from..from + 5).map(sample_event).collect::<Vec<_>>();
    let (a, b, c, d) = tokio::join!(
        store.append(batch(100)),
        store.append(batch(200)),
        store.append(batch(300)),
        store.append(batch(400)),
    );
    let mut seqs = BTreeSet::new();
    for result in [a, b, c, d] {
        let entries = result.unwrap();
        // Each batch is contiguous.
        for pair in entries.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        seqs.extend(entries.iter().map(|e| e.seq));
    }
    assert_eq!(seqs, (before..before + 20).collect::<BTreeSet<_>>());
    let all = store.read_range(0, 1000).await.unwrap();
    assert_eq!(all.len() as u64, before + 20);
    all
}

/// Every kind of filter, alone and combined, against what [`AuditFilter::matches`] picks out of
/// `all` (the whole log, in order); public so a store can run it again in states of its own
/// (the SQLite store: before and after its filter index has caught up).
pub async fn queries<S: AuditStore>(store: &S, all: &[crate::AuditEntry]) {
    let ts = |i: i64| Timestamp::from_unix_millis(1_735_689_600_000 + i * 1_000);
    let filters = vec![
        AuditFilter::default(),
        AuditFilter {
            actor_id: Some("key_00000000000000000000000001".into()),
            ..Default::default()
        },
        AuditFilter {
            tenant: Some("tenant-1".into()),
            ..Default::default()
        },
        AuditFilter {
            tenant: Some("nobody".into()),
            ..Default::default()
        },
        AuditFilter {
            outcome: Some(Outcome::Deny),
            ..Default::default()
        },
        AuditFilter {
            event_type: Some(EventType::RequestStart),
            ..Default::default()
        },
        AuditFilter {
            request_id: Some("req-00000201".into()),
            ..Default::default()
        },
        AuditFilter {
            since: ts(3),
            until: ts(202),
            ..Default::default()
        },
        AuditFilter {
            tenant: Some("tenant-0".into()),
            outcome: Some(Outcome::Allow),
            since: ts(100),
            ..Default::default()
        },
        AuditFilter {
            after_seq: Some(10),
            limit: Some(3),
            ..Default::default()
        },
        AuditFilter {
            tenant: Some("tenant-1".into()),
            after_seq: Some(5),
            ..Default::default()
        },
        AuditFilter {
            limit: Some(2),
            event_type: Some(EventType::Request),
            ..Default::default()
        },
    ];
    for filter in filters {
        let want: Vec<_> = all
            .iter()
            .filter(|e| filter.matches(e))
            .take(filter.effective_limit() as usize)
            .cloned()
            .collect();
        let got = store.query(&filter).await.unwrap();
        assert_eq!(got, want, "{filter:?}");
    }
    // Paging through everything with after_seq visits each entry once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .query(&AuditFilter {
                after_seq: after,
                limit: Some(4),
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        seen.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(seen, all.iter().map(|e| e.seq).collect::<Vec<_>>());
}

/// Queues bytes as they are, past [`SharedLog::enqueue`]'s checks, as another release or
/// someone with access to the database could: each store's tests provide it (PostgreSQL by an
/// SQL insert), so [`shared_suite`] can show what sequencing does with a row it cannot read.
#[async_trait::async_trait]
pub trait RawQueue {
    /// Queues `bytes` with `tag`; returns the row's queue id.
    async fn queue_raw(&self, bytes: Vec<u8>, tag: Option<Vec<u8>>) -> u64;
}

#[async_trait::async_trait]
impl RawQueue for crate::MemoryAuditStore {
    async fn queue_raw(&self, bytes: Vec<u8>, tag: Option<Vec<u8>>) -> u64 {
        self.enqueue_raw(bytes, tag).unwrap()
    }
}

/// The queue key of the suite's log ([`crate::queue_tag`]): from a fixed signing key, as every
/// instance of one deployment derives the same one.
pub fn suite_key() -> QueueKey {
    SignerKey::from_seed("example.com/audit", &[7; 32])
        .unwrap()
        .queue_key()
}

/// Queues `bytes` with a tag that verifies under [`suite_key`], as an instance of another
/// release with the log's key would.
async fn queue_tagged<S: RawQueue>(store: &S, bytes: Vec<u8>) -> u64 {
    let tag = suite_key().tag(&bytes).as_bytes().to_vec();
    store.queue_raw(bytes, Some(tag)).await
}

/// Runs every [`SharedLog`] check against `store`, whose queue must be empty and lease free
/// (its log may hold entries): the queue, the lease and its fencing, sequencing in order with
/// no gaps, that sequenced entries are ordinary log entries, and the rule for queued rows this
/// release cannot read ([`crate::quarantine`]). Lease expiry is exercised with a lease of
/// 200 ms. It leaves a row from a newer release at the head of the queue.
pub async fn shared_suite<S: SharedLog + RawQueue>(store: &S) {
    use std::time::Duration;
    let key = suite_key();

    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert_eq!(store.oldest_pending_ms().await.unwrap(), None);
    assert!(store.enqueue(vec![], &key).await.unwrap().is_empty());
    // The log may already hold entries (written directly): sequencing goes on after them.
    let base = store.size().await.unwrap();

    // Queueing: all or nothing, ids grow, nothing is in the log yet.
    let before = crate::Timestamp::now().unix_millis();
    let ids = store
        .enqueue((0..3).map(sample_event).collect(), &key)
        .await
        .unwrap();
    let oldest = store.oldest_pending_ms().await.unwrap();
    assert!(
        oldest.is_some_and(|t| t >= before && t <= crate::Timestamp::now().unix_millis()),
        "{oldest:?} from {before}"
    );
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut bad = sample_event(9);
    bad.actor_id = String::new();
    assert!(matches!(
        store.enqueue(vec![sample_event(3), bad], &key).await,
        Err(AuditStoreError::Invalid(_))
    ));
    assert_eq!(store.pending_count().await.unwrap(), 3);
    assert_eq!(store.size().await.unwrap(), base);

    // Pending events are visible to a filtered query, by queue id.
    let tenant0 = AuditFilter {
        tenant: Some("tenant-0".into()),
        ..AuditFilter::default()
    };
    let pending = store.pending(&tenant0).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, ids[0]);
    assert_eq!(pending[0].event, sample_event(0));
    let all = store.pending(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.id).collect::<Vec<_>>(),
        ids,
        "pending events come by queue id"
    );
    let one = AuditFilter {
        limit: Some(1),
        ..AuditFilter::default()
    };
    assert_eq!(store.pending(&one).await.unwrap().len(), 1);

    // One holder at a time; the holder extends its lease and keeps its epoch.
    let ttl = Duration::from_millis(200);
    let a = store.acquire_lease("a", ttl).await.unwrap().unwrap();
    assert_eq!(a.holder, "a");
    assert_eq!(store.acquire_lease("b", ttl).await.unwrap(), None);
    let again = store.acquire_lease("a", ttl).await.unwrap().unwrap();
    assert_eq!(again.epoch, a.epoch, "an extension keeps the epoch");

    // Sequencing: the oldest first, at consecutive numbers, at most `max`.
    let Sequenced::Entries(first) = store
        .sequence(&a, store.size().await.unwrap(), 2, &key)
        .await
        .unwrap()
    else {
        panic!("the holder lost its lease");
    };
    assert_eq!(
        first.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![base, base + 1]
    );
    assert_eq!(first[0].event, sample_event(0));
    assert_eq!(first[1].event, sample_event(1));
    assert_eq!(store.pending_count().await.unwrap(), 1);
    assert_eq!(store.size().await.unwrap(), base + 2);
    // Sequenced entries are ordinary entries: read back with their leaf hashes.
    assert_eq!(store.read_range(base, 10).await.unwrap(), first);
    assert_eq!(
        store.leaf_hashes(base, 10).await.unwrap(),
        vec![
            event_leaf_hash(base, &sample_event(0)),
            event_leaf_hash(base + 1, &sample_event(1))
        ]
    );

    // A stale lease (wrong epoch) sequences nothing.
    let stale = crate::shared::Lease {
        holder: "a".into(),
        epoch: a.epoch + 7,
    };
    assert!(matches!(
        store
            .sequence(&stale, store.size().await.unwrap(), 10, &key)
            .await
            .unwrap(),
        Sequenced::LeaseLost
    ));
    // Neither does another holder's name with the right epoch.
    let forged = crate::shared::Lease {
        holder: "b".into(),
        epoch: a.epoch,
    };
    assert!(matches!(
        store
            .sequence(&forged, store.size().await.unwrap(), 10, &key)
            .await
            .unwrap(),
        Sequenced::LeaseLost
    ));
    assert_eq!(store.pending_count().await.unwrap(), 1);

    // The lease lapses: another holder takes it with a higher epoch, and the old holder is
    // fenced off even though it still has its lease in hand.
    let mut b = None;
    for _ in 0..100 {
        b = store.acquire_lease("b", ttl).await.unwrap();
        if b.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(b) = b else {
        panic!("the lease did not lapse within 2 s of a 200 ms lease");
    };
    assert!(b.epoch > a.epoch, "{b:?} after {a:?}");
    assert!(matches!(
        store
            .sequence(&a, store.size().await.unwrap(), 10, &key)
            .await
            .unwrap(),
        Sequenced::LeaseLost
    ));
    // From here on b is a holder that renews: a long lease (its own, so the same epoch), so
    // that a slow machine cannot let it lapse between the calls below (a 200 ms lease did,
    // through PgBouncer on a loaded machine).
    let renewed = store
        .acquire_lease("b", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.epoch, b.epoch);
    store
        .enqueue(vec![sample_event(3), sample_event(4)], &key)
        .await
        .unwrap();
    let Sequenced::Entries(rest) = store
        .sequence(&b, store.size().await.unwrap(), 100, &key)
        .await
        .unwrap()
    else {
        panic!("the new holder lost its lease");
    };
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![base + 2, base + 3, base + 4]
    );
    assert_eq!(
        rest.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        (2..5).map(sample_event).collect::<Vec<_>>()
    );
    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert_eq!(store.oldest_pending_ms().await.unwrap(), None);
    let Sequenced::Entries(none) = store
        .sequence(&b, store.size().await.unwrap(), 100, &key)
        .await
        .unwrap()
    else {
        panic!("the holder lost its lease");
    };
    assert!(none.is_empty());

    // A release by a stale lease changes nothing; the holder's own release frees it at once.
    store.release_lease(&a).await.unwrap();
    assert_eq!(store.acquire_lease("c", ttl).await.unwrap(), None);
    store.release_lease(&b).await.unwrap();
    let c = store.acquire_lease("c", ttl).await.unwrap().unwrap();
    assert!(c.epoch > b.epoch);
    assert!(matches!(
        store
            .sequence(&b, store.size().await.unwrap(), 10, &key)
            .await
            .unwrap(),
        Sequenced::LeaseLost
    ));

    // Two holders racing for a free lease: exactly one wins.
    store.release_lease(&c).await.unwrap();
    let (x, y) = tokio::join!(store.acquire_lease("x", ttl), store.acquire_lease("y", ttl));
    assert_eq!(
        usize::from(x.unwrap().is_some()) + usize::from(y.unwrap().is_some()),
        1
    );

    // The log is one tree with no gaps: five entries, in queue order.
    let log = store.read_range(base, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        (0..5).map(sample_event).collect::<Vec<_>>()
    );

    // Each sequenced entry keeps its row's tag, beside its leaf as stored; a direct append
    // has none.
    let tagged = store.tagged_leaves(base, 100).await.unwrap();
    assert_eq!(tagged.len(), log.len());
    for (entry, t) in log.iter().zip(&tagged) {
        assert_eq!(t.seq, entry.seq);
        assert_eq!(t.leaf, encode_leaf(entry.seq, &entry.event));
        assert_eq!(t.leaf_hash, entry.leaf_hash);
        let bytes = encode_leaf(0, &entry.event);
        assert!(
            key.verify(&bytes, t.tag.as_ref().map(|t| t.as_bytes().as_slice())),
            "entry {}",
            entry.seq
        );
    }
    if base > 0 {
        assert_eq!(store.tagged_leaves(0, 1).await.unwrap()[0].tag, None);
    }
    assert!(store.tagged_leaves(base + 5, 10).await.unwrap().is_empty());

    unreadable_rows_are_set_aside(store, base + 5).await;
    unauthenticated_rows_are_set_aside(store, base + 8).await;
    replayed_rows_are_set_aside(store, base + 11).await;
    rows_from_a_newer_release_wait_for_it(store, base + 15).await;
    a_planted_entry_is_never_written_over(store).await;
}

/// An entry planted at the end of the log (written around the sequencer, as someone with write
/// access to the database could): a holder whose tree ends before it sequences nothing on top
/// of it, and is told how long the log is.
async fn a_planted_entry_is_never_written_over<S: SharedLog + RawQueue>(store: &S) {
    let key = suite_key();
    let lease = take_lease(store, "planted").await;
    let at = store.size().await.unwrap();
    store.append(vec![sample_event(9)]).await.unwrap();
    store.enqueue(vec![sample_event(5)], &key).await.unwrap();
    let pending = store.pending_count().await.unwrap();
    match store.sequence(&lease, at, 100, &key).await.unwrap() {
        Sequenced::Moved { size } => assert_eq!(size, at + 1),
        other => panic!("sequenced on top of a planted entry: {other:?}"),
    }
    assert_eq!(store.size().await.unwrap(), at + 1);
    assert_eq!(store.pending_count().await.unwrap(), pending);
    store.release_lease(&lease).await.unwrap();
}

/// A genuine row copied back into the queue (its bytes and its valid tag, by someone with write
/// access to the database) is set aside as replayed, never sequenced a second time; so is the
/// second of two copies queued together, while the first is sequenced. `base` is the log's
/// size.
async fn replayed_rows_are_set_aside<S: SharedLog + RawQueue>(store: &S, base: u64) {
    let key = suite_key();
    let logged = sample_event(22);
    store.enqueue(vec![logged], &key).await.unwrap();
    let lease = take_lease(store, "replays").await;
    let Sequenced::Entries(first) = store
        .sequence(&lease, store.size().await.unwrap(), 100, &key)
        .await
        .unwrap()
    else {
        panic!("the holder lost its lease or stopped");
    };
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].seq, base);
    let copy = |i: u64| {
        let bytes = encode_leaf(0, &sample_event(i));
        let tag = key.tag(&bytes).as_bytes().to_vec();
        (bytes, tag)
    };
    let (old, old_tag) = copy(22);
    let (new, new_tag) = copy(23);
    let replayed = store.queue_raw(old.clone(), Some(old_tag)).await;
    store.queue_raw(new.clone(), Some(new_tag.clone())).await;
    let twice = store.queue_raw(new.clone(), Some(new_tag)).await;
    let Sequenced::Entries(entries) = store
        .sequence(&lease, store.size().await.unwrap(), 100, &key)
        .await
        .unwrap()
    else {
        panic!("the holder lost its lease or stopped");
    };
    let got: Vec<(u64, EventType, Option<&str>)> = entries
        .iter()
        .map(|e| (e.seq, e.event.event_type, e.event.deny_reason.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                base + 1,
                EventType::AuditQuarantined,
                Some("queued_row_replayed")
            ),
            (base + 2, EventType::Request, None),
            (
                base + 3,
                EventType::AuditQuarantined,
                Some("queued_row_replayed")
            ),
        ]
    );
    assert_eq!(entries[1].event, sample_event(23));
    let rows = store.quarantined(replayed - 1, 10).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.queue_id, r.seq, r.bytes.clone()))
            .collect::<Vec<_>>(),
        vec![(replayed, base + 1, old), (twice, base + 3, new)]
    );
    // Each tag the log carries is where it was sequenced, once.
    let tags: Vec<_> = store
        .tagged_leaves(base, 10)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| t.tag)
        .collect();
    let mut positions = store.tag_positions(&tags).await.unwrap();
    positions.sort_by_key(|(_, seq)| *seq);
    assert_eq!(
        positions.iter().map(|(_, seq)| *seq).collect::<Vec<_>>(),
        (base..base + 4).collect::<Vec<_>>()
    );
    store.release_lease(&lease).await.unwrap();
}

/// A row whose tag is missing or made with another key (queued by something without the log's
/// signing key: an instance given another key, or someone with write access to the database)
/// is set aside as unauthenticated, however good an event it holds; the entry in its place
/// gets a tag of the sequencer's. `base` is the log's size.
async fn unauthenticated_rows_are_set_aside<S: SharedLog + RawQueue>(store: &S, base: u64) {
    let key = suite_key();
    let other = SignerKey::from_seed("example.com/audit", &[8; 32])
        .unwrap()
        .queue_key();
    let forged = encode_leaf(0, &sample_event(20));
    let untagged = store.queue_raw(forged.clone(), None).await;
    let wrong = store
        .queue_raw(forged.clone(), Some(other.tag(&forged).as_bytes().to_vec()))
        .await;
    let good = store.enqueue(vec![sample_event(21)], &key).await.unwrap()[0];
    assert!(untagged < wrong && wrong < good);
    let lease = take_lease(store, "tags").await;
    let Sequenced::Entries(entries) = store
        .sequence(&lease, store.size().await.unwrap(), 100, &key)
        .await
        .unwrap()
    else {
        panic!("the holder lost its lease or stopped");
    };
    let got: Vec<(u64, EventType, Option<&str>)> = entries
        .iter()
        .map(|e| {
            let quarantined = e.event.event_type == EventType::AuditQuarantined;
            let reason = e.event.deny_reason.as_deref().filter(|_| quarantined);
            (e.seq, e.event.event_type, reason)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                base,
                EventType::AuditQuarantined,
                Some("queued_row_unauthenticated")
            ),
            (
                base + 1,
                EventType::AuditQuarantined,
                Some("queued_row_unauthenticated")
            ),
            (base + 2, EventType::Request, None),
        ]
    );
    let rows = store.quarantined(untagged - 1, 10).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.queue_id, r.seq, r.bytes.clone()))
            .collect::<Vec<_>>(),
        vec![(untagged, base, forged.clone()), (wrong, base + 1, forged)]
    );
    for t in store.tagged_leaves(base, 10).await.unwrap() {
        let bytes = crate::queue_tag::queued_form(&t.leaf).unwrap();
        assert!(key.verify(&bytes, t.tag.as_ref().map(|t| t.as_bytes().as_slice())));
    }
    store.release_lease(&lease).await.unwrap();
}

/// Takes the lease for `holder`, waiting (up to 2 s) for another holder's 200 ms lease to
/// lapse.
async fn take_lease<S: SharedLog>(store: &S, holder: &str) -> Lease {
    use std::time::Duration;
    for _ in 0..100 {
        if let Some(lease) = store
            .acquire_lease(holder, Duration::from_millis(200))
            .await
            .unwrap()
        {
            return lease;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the lease did not lapse within 2 s of a 200 ms lease");
}

/// A row no release can read (damage, or written by hand) is moved into the quarantine table
/// by the sequencing transaction, its quarantine event takes its place in the order, and the
/// events queued after it are sequenced. `base` is the log's size.
async fn unreadable_rows_are_set_aside<S: SharedLog + RawQueue>(store: &S, base: u64) {
    let key = suite_key();
    assert_eq!(store.size().await.unwrap(), base);
    assert!(store.quarantined(0, 10).await.unwrap().is_empty());
    let before = store.enqueue(vec![sample_event(10)], &key).await.unwrap()[0];
    let garbage = b"\x00\xff{\"v\":1, not a leaf".to_vec();
    let bad = queue_tagged(store, garbage.clone()).await;
    let after = store.enqueue(vec![sample_event(11)], &key).await.unwrap()[0];
    assert!(before < bad && bad < after, "{before} {bad} {after}");
    assert_eq!(store.pending_count().await.unwrap(), 3);
    // A row that is no event matches no pending filter; the count still has it.
    let pending = store.pending(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![before, after]
    );

    // A lease that is not held sets nothing aside.
    let lease = take_lease(store, "quarantine").await;
    let stale = Lease {
        epoch: lease.epoch + 1,
        ..lease.clone()
    };
    assert!(matches!(
        store
            .sequence(&stale, store.size().await.unwrap(), 10, &key)
            .await
            .unwrap(),
        Sequenced::LeaseLost
    ));
    assert_eq!(store.pending_count().await.unwrap(), 3);
    assert!(store.quarantined(0, 10).await.unwrap().is_empty());

    let Sequenced::Entries(entries) = store
        .sequence(&lease, store.size().await.unwrap(), 100, &key)
        .await
        .unwrap()
    else {
        panic!("the holder lost its lease or stopped");
    };
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![base, base + 1, base + 2]
    );
    assert_eq!(entries[0].event, sample_event(10));
    assert_eq!(entries[2].event, sample_event(11));
    let sha256 = Hash(<sha2::Sha256 as sha2::Digest>::digest(&garbage).into());
    let set_aside = &entries[1].event;
    assert_eq!(set_aside.event_type, EventType::AuditQuarantined);
    assert_eq!(
        set_aside.detail.as_deref(),
        Some(format!("queue_id={bad} bytes={} sha256={sha256}", garbage.len()).as_str())
    );
    assert_eq!(
        set_aside.deny_reason.as_deref(),
        Some("queued_row_not_json")
    );
    set_aside.validate().unwrap();
    for e in &entries {
        assert_eq!(e.leaf_hash, event_leaf_hash(e.seq, &e.event));
    }
    assert_eq!(store.read_range(base, 10).await.unwrap(), entries);
    assert_eq!(store.pending_count().await.unwrap(), 0);

    // The quarantine table holds the exact bytes, by queue id, beside the entry for them.
    let rows = store.quarantined(0, 10).await.unwrap();
    let [row] = rows.as_slice() else {
        panic!("{rows:?}");
    };
    let QuarantinedRow {
        queue_id,
        seq,
        bytes,
        sha256: stored_sha256,
        quarantined_at,
    } = row;
    assert_eq!((*queue_id, *seq), (bad, base + 1));
    assert_eq!(bytes, &garbage);
    assert_eq!(*stored_sha256, sha256);
    assert_eq!(*quarantined_at, set_aside.ts);
    assert!(store.quarantined(bad, 10).await.unwrap().is_empty());
    assert_eq!(store.quarantined(bad - 1, 0).await.unwrap(), vec![]);
    store.release_lease(&lease).await.unwrap();
}

/// A row from a newer release stops sequencing before it, however often it is asked, and is
/// neither sequenced nor set aside: it and what follows stay queued, for an instance of that
/// release. An unreadable row before it is still set aside. `base` is the log's size.
async fn rows_from_a_newer_release_wait_for_it<S: SharedLog + RawQueue>(store: &S, base: u64) {
    let key = suite_key();
    assert_eq!(store.size().await.unwrap(), base);
    let first = store.enqueue(vec![sample_event(12)], &key).await.unwrap()[0];
    let bad = queue_tagged(store, b"[]".to_vec()).await;
    let newer = queue_tagged(store, br#"{"v":2,"seq":0,"event":{"kind":"new"}}"#.to_vec()).await;
    let last = store.enqueue(vec![sample_event(13)], &key).await.unwrap()[0];
    let lease = take_lease(store, "older").await;
    let Sequenced::NewerRelease {
        entries,
        queue_id,
        what,
    } = store
        .sequence(&lease, store.size().await.unwrap(), 100, &key)
        .await
        .unwrap()
    else {
        panic!("sequencing went past a row from a newer release");
    };
    assert_eq!(queue_id, newer);
    assert!(what.contains("leaf version 2"), "{what}");
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.seq, e.event.event_type))
            .collect::<Vec<_>>(),
        vec![
            (base, EventType::Request),
            (base + 1, EventType::AuditQuarantined)
        ]
    );
    assert_eq!(entries[0].event, sample_event(12));
    let set_aside = store.quarantined(0, 10).await.unwrap();
    assert_eq!(
        set_aside.iter().map(|r| r.queue_id).collect::<Vec<_>>()[5..],
        [bad]
    );
    // Asked again, with any batch size: nothing past it, nothing set aside.
    for max in [1, 100] {
        let Sequenced::NewerRelease {
            entries, queue_id, ..
        } = store
            .sequence(&lease, store.size().await.unwrap(), max, &key)
            .await
            .unwrap()
        else {
            panic!("sequencing went past a row from a newer release");
        };
        assert!(entries.is_empty());
        assert_eq!(queue_id, newer);
    }
    assert_eq!(store.size().await.unwrap(), base + 2);
    assert_eq!(store.pending_count().await.unwrap(), 2);
    assert_eq!(store.quarantined(0, 10).await.unwrap(), set_aside);
    // Still queued, in order; the event after it is still readable as pending.
    let pending = store.pending(&AuditFilter::default()).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), vec![last]);
    assert!(first < bad && bad < newer && newer < last);
    store.release_lease(&lease).await.unwrap();
}
