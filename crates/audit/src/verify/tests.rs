//! Tamper tests on an export: each kind of damage is caught and the first bad entry is named.
//! Logs are built directly (entries and signed checkpoints every 4 entries) so that these tests
//! exercise the verifier alone.
#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;
use crate::checkpoint::Checkpoint;
use crate::conformance::sample_event;
use crate::export::write_parts;
use crate::note::SignerKey;
use crate::store::AuditEntry;

const ORIGIN: &str = "test/audit";

struct Log {
    entries: Vec<AuditEntry>,
    notes: Vec<String>,
}

/// The given events as entries `0..n`, with a signed checkpoint every 4 entries and at the end.
fn build(key: &SignerKey, events: impl IntoIterator<Item = AuditEvent>) -> Log {
    let entries: Vec<AuditEntry> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| AuditEntry::prepare(i as u64, e).0)
        .collect();
    let leaves: Vec<Hash> = entries.iter().map(|e| e.leaf_hash).collect();
    let mut sizes: Vec<usize> = (4..=entries.len()).step_by(4).collect();
    if sizes.last() != Some(&entries.len()) {
        sizes.push(entries.len());
    }
    let notes = sizes
        .into_iter()
        .map(|size| {
            Checkpoint {
                origin: ORIGIN.into(),
                size: size as u64,
                root: merkle::root(&leaves[..size]),
            }
            .sign(key)
            .unwrap()
            .note
        })
        .collect();
    Log { entries, notes }
}

fn events(range: std::ops::Range<u64>) -> Vec<AuditEvent> {
    range.map(sample_event).collect()
}

fn export(notes: &[String], entries: &[AuditEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    write_parts(&mut out, notes, entries).unwrap();
    out
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

fn check(bytes: &[u8], key: &SignerKey, witness: &[String]) -> Result<VerifyReport, VerifyError> {
    verify_export(bytes, vec![key.verifier()], witness, Some(ORIGIN.into()))
}

/// The line index of entry `seq` in an export with `k` checkpoints (header first).
fn entry_line(k: usize, seq: usize) -> usize {
    1 + k + seq
}

#[test]
fn an_intact_export_verifies() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..20));
    let bytes = export(&log.notes, &log.entries);
    let report = check(&bytes, &key, &log.notes).unwrap();
    assert_eq!(report.entries, 20);
    assert_eq!(report.proven, 20);
    assert_eq!(report.log_checkpoints, 5);
    assert_eq!(report.witness_checkpoints, 5);
    assert_eq!(report.origin.as_deref(), Some(ORIGIN));
    assert_eq!(
        report.root,
        merkle::root(&log.entries.iter().map(|e| e.leaf_hash).collect::<Vec<_>>())
    );
    // Entries after the last checkpoint are reported, not failed.
    let bytes = export(&log.notes[..4], &log.entries);
    let report = check(&bytes, &key, &[]).unwrap();
    assert_eq!((report.proven, report.unproven_tail()), (16, 4));
}

#[test]
fn flipping_any_byte_of_an_entry_names_it() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..12));
    // No checkpoints: these failures are per entry, and ~700 signature checks in a debug build
    // would dominate the test's time.
    let bytes = export(&[], &log.entries);
    let original = lines(&bytes);
    check(&bytes, &key, &[]).unwrap();
    let target = entry_line(0, 7);
    for pos in 0..original[target].len() {
        let mut tampered = original.clone();
        tampered[target][pos] ^= 0x01;
        let err = check(&join(&tampered), &key, &[]).unwrap_err();
        assert_eq!(err.first_bad_seq(), Some(7), "byte {pos}: {err}");
    }
}

#[test]
fn deleting_reordering_or_duplicating_entries_names_the_first_position() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..20));
    let k = log.notes.len();
    let original = lines(&export(&log.notes, &log.entries));

    let mut deleted = original.clone();
    deleted.remove(entry_line(k, 5));
    let err = check(&join(&deleted), &key, &[]).unwrap_err();
    assert_eq!(err, VerifyError::OutOfSequence { seq: 5, found: 6 });

    let mut reordered = original.clone();
    reordered.swap(entry_line(k, 3), entry_line(k, 9));
    let err = check(&join(&reordered), &key, &[]).unwrap_err();
    assert_eq!(err, VerifyError::OutOfSequence { seq: 3, found: 9 });

    let mut duplicated = original.clone();
    duplicated.insert(entry_line(k, 11), original[entry_line(k, 10)].clone());
    let err = check(&join(&duplicated), &key, &[]).unwrap_err();
    assert_eq!(err, VerifyError::OutOfSequence { seq: 11, found: 10 });

    let mut garbage = original;
    garbage[entry_line(k, 2)] = b"not json".to_vec();
    let err = check(&join(&garbage), &key, &[]).unwrap_err();
    assert!(
        matches!(err, VerifyError::Malformed { seq: 2, .. }),
        "{err}"
    );
}

#[test]
fn a_rewritten_entry_with_a_recomputed_hash_fails_at_its_checkpoint() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let mut log = build(&key, events(0..20));
    // Entry 6 rewritten along with its leaf hash: only the checkpoint at 8 can catch it.
    let forged = AuditEvent {
        outcome: Some(crate::Outcome::Allow),
        deny_reason: None,
        ..sample_event(106)
    };
    log.entries[6] = AuditEntry::prepare(6, forged).0;
    let err = check(&export(&log.notes, &log.entries), &key, &[]).unwrap_err();
    assert_eq!(
        err,
        VerifyError::RootMismatch {
            first_unproven: 4,
            size: 8,
            which: CheckpointSource::Log
        }
    );
    assert_eq!(err.first_bad_seq(), Some(4));
}

#[test]
fn truncating_and_re_extending_is_caught() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..20));

    // Truncated to 14: the checkpoint at 16 names the first missing entry.
    let err = check(&export(&log.notes, &log.entries[..14]), &key, &[]).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Truncated {
            seq: 14,
            size: 16,
            which: CheckpointSource::Log
        }
    );

    // Truncated to 12 and re-extended with 8 forged entries whose hashes are all correct.
    let mut rewritten = log.entries[..12].to_vec();
    rewritten.extend((12..20).map(|i| AuditEntry::prepare(i, sample_event(1000 + i)).0));
    let err = check(&export(&log.notes, &rewritten), &key, &[]).unwrap_err();
    assert_eq!(
        err,
        VerifyError::RootMismatch {
            first_unproven: 12,
            size: 16,
            which: CheckpointSource::Log
        }
    );

    // The same, with the later checkpoints dropped from the export: alone it looks fine up to
    // the last surviving checkpoint, but the witness still holds the originals.
    let err_free = check(&export(&log.notes[..3], &rewritten), &key, &[]).unwrap();
    assert_eq!((err_free.proven, err_free.unproven_tail()), (12, 8));
    let err = check(&export(&log.notes[..3], &rewritten), &key, &log.notes).unwrap_err();
    assert_eq!(
        err,
        VerifyError::RootMismatch {
            first_unproven: 12,
            size: 16,
            which: CheckpointSource::Witness
        }
    );
    // Truncated without re-extension, with the export's checkpoints trimmed to match: only the
    // witness knows.
    let err = check(
        &export(&log.notes[..3], &log.entries[..14]),
        &key,
        &log.notes,
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::Truncated {
            seq: 14,
            size: 16,
            which: CheckpointSource::Witness
        }
    );
}

#[test]
fn a_full_rewrite_re_signed_with_the_real_key_fails_against_the_witness() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..20));
    // An attacker holding the signing key rebuilds everything from entry 6 on.
    let mut forged_events = events(0..6);
    forged_events.extend((6..20).map(|i| sample_event(500 + i)));
    let forged = build(&key, forged_events);
    let bytes = export(&forged.notes, &forged.entries);
    // Self-consistent on its own...
    check(&bytes, &key, &[]).unwrap();
    // ... but not with what the witness saw.
    let err = check(&bytes, &key, &log.notes).unwrap_err();
    assert_eq!(
        err,
        VerifyError::RootMismatch {
            first_unproven: 4,
            size: 8,
            which: CheckpointSource::Witness
        }
    );
}

#[test]
fn an_old_checkpoint_is_inconsistent_with_a_rewritten_log() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..20));
    let old = SignedCheckpoint::open(&log.notes[1], &[key.verifier()], Some(ORIGIN))
        .unwrap()
        .checkpoint;
    assert_eq!(old.size, 8);

    // The honest log, grown since: consistent, and the proof checks out without the entries.
    let mut grown = log.entries.clone();
    grown.extend((20..30).map(|i| AuditEntry::prepare(i, sample_event(i)).0));
    let leaves: Vec<Hash> = grown.iter().map(|e| e.leaf_hash).collect();
    let proof = prove_consistency(&old, &leaves).unwrap();
    assert_eq!((proof.old_size, proof.new_size), (8, 30));
    merkle::verify_consistency(8, 30, &old.root, &proof.new_root, &proof.proof).unwrap();

    // Entry 5 rewritten: the old checkpoint cannot be a prefix of it.
    let mut rewritten = leaves.clone();
    rewritten[5] = AuditEntry::prepare(5, sample_event(999)).0.leaf_hash;
    let err = prove_consistency(&old, &rewritten).unwrap_err();
    assert!(
        matches!(err, ConsistencyError::Rewritten { old_size: 8, .. }),
        "{err}"
    );
    // And no proof from the rewritten log verifies against the old root.
    let forged_proof = merkle::consistency_proof(&rewritten, 8).unwrap();
    assert!(
        merkle::verify_consistency(8, 30, &old.root, &merkle::root(&rewritten), &forged_proof)
            .is_err()
    );
    // Truncated below the checkpoint.
    assert!(matches!(
        prove_consistency(&old, &leaves[..7]),
        Err(ConsistencyError::Truncated {
            old_size: 8,
            current_size: 7
        })
    ));
}

#[test]
fn checkpoints_that_do_not_verify_are_refused() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..8));
    let bytes = export(&log.notes, &log.entries);

    // The wrong public key.
    let other = SignerKey::generate(ORIGIN).unwrap();
    let err = check(&bytes, &other, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::BadCheckpoint {
                index: 0,
                which: CheckpointSource::Log,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.first_bad_seq(), None);

    // A checkpoint signed by someone else's key with the same name.
    let foreign = build(&other, events(0..8));
    let mut mixed = log.notes.clone();
    mixed[1] = foreign.notes[1].clone();
    let err = check(&export(&mixed, &log.entries), &key, &[]).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadCheckpoint { index: 1, .. }),
        "{err}"
    );

    // An altered checkpoint line.
    let mut altered = lines(&bytes);
    let text = String::from_utf8(altered[1].clone())
        .unwrap()
        .replacen("\\n4\\n", "\\n5\\n", 1);
    altered[1] = text.into_bytes();
    let err = check(&join(&altered), &key, &[]).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadCheckpoint { index: 0, .. }),
        "{err}"
    );

    // Another log's checkpoint.
    let err = verify_export(
        &bytes[..],
        vec![key.verifier()],
        &[],
        Some("other/log".into()),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::BadCheckpoint { .. }), "{err}");
}

#[test]
fn malformed_files_are_format_errors() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let log = build(&key, events(0..4));
    let bytes = export(&log.notes, &log.entries);
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"{}\n".to_vec(),
        b"{\"format\":\"other\",\"version\":1,\"checkpoints\":0}\n".to_vec(),
        b"{\"format\":\"wardgate-audit-export\",\"version\":2,\"checkpoints\":0}\n".to_vec(),
        b"{\"format\":\"wardgate-audit-export\",\"version\":1,\"checkpoints\":3}\n".to_vec(),
        lines(&bytes)[..2].concat(),
        [
            b"{\"format\":\"wardgate-audit-export\",\"version\":1,\"checkpoints\":0}\n".as_slice(),
            &vec![b'x'; crate::export::MAX_LINE + 10],
        ]
        .concat(),
    ];
    for case in cases {
        let err = check(&case, &key, &[]).unwrap_err();
        assert!(matches!(err, VerifyError::Format(_)), "{err}");
    }
}

#[test]
fn an_empty_log_verifies_and_its_checkpoint_is_checked() {
    let key = SignerKey::generate(ORIGIN).unwrap();
    let empty = Checkpoint {
        origin: ORIGIN.into(),
        size: 0,
        root: merkle::empty_root(),
    }
    .sign(&key)
    .unwrap()
    .note;
    let report = check(&export(std::slice::from_ref(&empty), &[]), &key, &[]).unwrap();
    assert_eq!(report.entries, 0);
    let wrong = Checkpoint {
        origin: ORIGIN.into(),
        size: 0,
        root: merkle::leaf_hash(b"x"),
    }
    .sign(&key)
    .unwrap()
    .note;
    assert!(check(&export(&[wrong], &[]), &key, &[]).is_err());
}

/// An event logged twice (a genuine row replayed in the database and sequenced, signed and
/// all, as a sequencer before replays were looked for would have) fails verification at the
/// second copy, in an export and in a live store alike, though every checkpoint verifies.
#[tokio::test]
async fn an_event_logged_twice_fails_at_its_second_copy() {
    use crate::store::AuditStore as _;
    let key = SignerKey::generate(ORIGIN).unwrap();
    let mut replayed = events(0..5);
    replayed.push(sample_event(2));
    let log = build(&key, replayed.clone());
    let bytes = export(&log.notes, &log.entries);
    assert_eq!(
        check(&bytes, &key, &[]).unwrap_err(),
        VerifyError::Repeated { seq: 5 }
    );
    let err = VerifyError::Repeated { seq: 5 }.to_string();
    assert!(err.contains("logged twice"), "{err}");

    // The same through the writer, which signs what it is given.
    let store = std::sync::Arc::new(crate::MemoryAuditStore::new());
    let writer = crate::Auditor::start(
        store.clone(),
        SignerKey::from_seed(ORIGIN, &[3; 32]).unwrap(),
        crate::AuditorConfig {
            origin: ORIGIN.into(),
            ..crate::AuditorConfig::default()
        },
    )
    .await
    .unwrap();
    for event in replayed {
        writer.append(event).await.unwrap();
    }
    writer.shutdown().await.unwrap();
    assert_eq!(store.latest_checkpoint().await.unwrap().unwrap().size, 6);
    let signer = SignerKey::from_seed(ORIGIN, &[3; 32]).unwrap();
    let err = verify_store(store.as_ref(), vec![signer.verifier()], &[], None)
        .await
        .unwrap_err();
    assert_eq!(err, VerifyError::Repeated { seq: 5 });
    assert_eq!(err.first_bad_seq(), Some(5));
}

/// A checkpoint row written by hand (a genuine signed note under columns that say another
/// size and root) fails verification: the instances read the columns, so a row that
/// disagrees with its note is not the log's.
#[tokio::test]
async fn a_checkpoint_row_whose_columns_disagree_with_its_note_fails() {
    use crate::store::AuditStore as _;
    let store = std::sync::Arc::new(crate::MemoryAuditStore::new());
    let signer = || SignerKey::from_seed(ORIGIN, &[4; 32]).unwrap();
    let writer = crate::Auditor::start(
        store.clone(),
        signer(),
        crate::AuditorConfig {
            origin: ORIGIN.into(),
            ..crate::AuditorConfig::default()
        },
    )
    .await
    .unwrap();
    for event in events(0..6) {
        writer.append(event).await.unwrap();
    }
    writer.shutdown().await.unwrap();
    let genuine = store.latest_checkpoint().await.unwrap().unwrap();
    assert!(
        verify_store(store.as_ref(), vec![signer().verifier()], &[], None)
            .await
            .is_ok()
    );
    // Columns true to the first three entries, and the note of all six.
    let leaves = store.leaf_hashes(0, 3).await.unwrap();
    let forged = crate::store::StoredCheckpoint {
        note: genuine.note,
        ..crate::conformance::checkpoint_for(&leaves, 3)
    };
    store.add_checkpoint(&forged).await.unwrap();
    let err = verify_store(store.as_ref(), vec![signer().verifier()], &[], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::BadCheckpoint { ref reason, .. } if reason.contains("rewritten")),
        "{err}"
    );
}
