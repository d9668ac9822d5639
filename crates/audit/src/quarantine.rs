//! The rule for a queued row of a shared log ([`crate::shared`]) that this release cannot decode
//! as an event. One such row used to stop all sequencing for good; now it is one of two things:
//!
//! - **From a newer release** ([`QueuedRow::NewerRelease`]): during a rolling upgrade an
//!   instance of the next release queued an event this one cannot read. The row is written
//!   exactly as a leaf is (`{"v":N,"seq":0,"event":{...}}`, compact JSON, serde's escapes), and
//!   either its leaf version is higher than [`LEAF_VERSION`], or it is a version-1 leaf whose
//!   only unknowns are *names*: event fields this release does not have, or values of the
//!   closed sets (`event_type`, `actor_kind`, `auth_method`, `outcome`) it does not have, each
//!   written as a name (`[a-z][a-z0-9_]*`, at most 64 bytes). Leaving those out (and, for an
//!   unknown closed-set value, putting a known one in its place) must give a leaf this release
//!   decodes: so every field it knows is present, in its place and canonical. That is how the
//!   encoding has grown so far (`detail` was added without a new version), and the only way a
//!   newer release's event can differ from this one's. The sequencer sequences nothing past
//!   such a row, hands the lease back and leaves it to an instance of the newer release.
//! - **Unauthenticated** ([`Unreadable::Unauthenticated`]): a row whose tag does not verify
//!   ([`crate::queue_tag`]): queued by something that does not hold the log's signing key (an
//!   instance given another key, a release from before tags, or someone with write access to
//!   the database). Checked first: nothing in an untagged row is trusted, not even its claim to
//!   come from a newer release. It is set aside like an unreadable one.
//! - **Replayed** ([`Unreadable::Replayed`]): a row whose tag verifies but that an entry of the
//!   log, or an earlier row of the queue, already carries: a genuine row copied back in by
//!   someone with write access to the database. A tag authenticates bytes, not their first
//!   appearance, so the sequencer looks each tag up before it sequences the row.
//! - **Unreadable** ([`QueuedRow::Unreadable`]): anything else (damage, a row written by hand).
//!   No release can read it, so waiting would stop the log for good. The sequencer sets it
//!   aside in the same fenced transaction: its bytes move into the quarantine table, and an
//!   [`EventType::AuditQuarantined`] event takes its place in the order, holding its queue id,
//!   its length and its SHA-256, so the log says exactly what was set aside and still verifies.
//!
//! Nothing is dropped: a row leaves the queue only into the log or into the quarantine table,
//! in the transaction that writes it there. The reasons given never quote the row's contents
//! (only lengths, versions, and unknown names, which must look like names).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap as _, SerializeSeq as _, Serializer};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::event::{
    ActorKind, AuditEvent, AuthMethod, EventType, LEAF_VERSION, Outcome, Timestamp, decode_leaf,
};
use crate::merkle::Hash;
use crate::queue_tag::QueueKey;

/// The name of the error logged when a sequencer hands the lease back to a newer release (the
/// `alert` field of the log line, target `wardgate::alert`).
pub const NEWER_RELEASE_ALERT: &str = "audit_queue_row_from_newer_release";
/// The name of the error logged when a queued row is set aside.
pub const QUARANTINE_ALERT: &str = "audit_queue_row_quarantined";

/// The longest queued row read as JSON. A leaf of this release is a few kilobytes at most (its
/// strings are bounded by [`crate::event::MAX_FIELD_LEN`]); a longer row is set aside unread.
pub const MAX_QUEUED_ROW: usize = 64 * 1024;

/// The event fields of this release, in the order the encoding writes them. A test checks it
/// against the encoding of an event with every field set.
const EVENT_FIELDS: [&str; 20] = [
    "ts",
    "event_type",
    "actor_id",
    "actor_kind",
    "auth_method",
    "tenant",
    "key_id",
    "source_ip",
    "request_id",
    "route",
    "model",
    "backend",
    "outcome",
    "http_status",
    "deny_reason",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "prompt_sha256",
    "detail",
];

/// The longest unknown name a newer release's row may carry.
const MAX_NAME: usize = 64;

/// What this release makes of one queued row.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every row is an event; boxing it would cost an allocation per event to \
              save space only on the rare others"
)]
pub enum QueuedRow {
    /// An event of this release: it is sequenced.
    Event(AuditEvent),
    /// A row from a newer release; the text says what this release could not read (a leaf
    /// version, or the unknown names).
    NewerRelease(String),
    /// A row no release can read: it is set aside.
    Unreadable(Unreadable),
}

/// Why a queued row is unreadable; recorded, as its name, in the `deny_reason` of the
/// [`EventType::AuditQuarantined`] event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Longer than [`MAX_QUEUED_ROW`].
    TooLong,
    /// Not JSON (or not UTF-8).
    NotJson,
    /// JSON, but not in the one form the encoding writes (whitespace, escapes, number forms).
    NotCanonical,
    /// Not a leaf: not an object led by its leaf version, or a version-1 leaf without its
    /// `seq` and `event`.
    NotALeaf,
    /// A leaf version lower than any release writes.
    UnknownVersion,
    /// A version-1 event that is not this release's event with unknown names: a field
    /// missing, out of order or repeated, a value of the wrong kind, or an unknown name that
    /// does not look like a name.
    BadEvent,
    /// Its tag is missing or does not verify ([`crate::queue_tag`]).
    Unauthenticated,
    /// Its tag verifies, but an entry of the log, or a row before it in the queue, carries the
    /// same tag: the same queued bytes a second time, a copy of a genuine row put back (the
    /// tag authenticates bytes, not their first appearance).
    Replayed,
}

impl Unreadable {
    /// The reason's name, as the log records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unreadable::TooLong => "queued_row_too_long",
            Unreadable::NotJson => "queued_row_not_json",
            Unreadable::NotCanonical => "queued_row_not_canonical",
            Unreadable::NotALeaf => "queued_row_not_a_leaf",
            Unreadable::UnknownVersion => "queued_row_unknown_leaf_version",
            Unreadable::BadEvent => "queued_row_bad_event",
            Unreadable::Unauthenticated => "queued_row_unauthenticated",
            Unreadable::Replayed => "queued_row_replayed",
        }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unreadable::TooLong => "longer than any leaf",
            Unreadable::NotJson => "not JSON",
            Unreadable::NotCanonical => "JSON, but not in the form leaves are written in",
            Unreadable::NotALeaf => "not a leaf",
            Unreadable::UnknownVersion => "a leaf version no release writes",
            Unreadable::BadEvent => "an event no release writes",
            Unreadable::Unauthenticated => {
                "a row without a valid tag: not queued by an instance with this log's signing key"
            }
            Unreadable::Replayed => {
                "a copy of a row already sequenced or queued before it (the same tagged bytes \
                 twice): replayed"
            }
        })
    }
}

/// Reads one queued row: an event of this release, a row from a newer release, or unreadable
/// (the module says how they are told apart).
pub fn read_queued(bytes: &[u8]) -> QueuedRow {
    if bytes.len() > MAX_QUEUED_ROW {
        return QueuedRow::Unreadable(Unreadable::TooLong);
    }
    if let Ok((_, event)) = decode_leaf(bytes) {
        return QueuedRow::Event(event);
    }
    match newer_release(bytes) {
        Ok(what) => QueuedRow::NewerRelease(what),
        Err(why) => QueuedRow::Unreadable(why),
    }
}

/// What a newer release wrote that this one cannot read, or why the row is no leaf at all.
fn newer_release(bytes: &[u8]) -> Result<String, Unreadable> {
    let json: Json = serde_json::from_slice(bytes).map_err(|_| Unreadable::NotJson)?;
    if serde_json::to_vec(&json).ok().as_deref() != Some(bytes) {
        return Err(Unreadable::NotCanonical);
    }
    let Json::Object(top) = json else {
        return Err(Unreadable::NotALeaf);
    };
    let version = match top.first() {
        Some((k, Json::Number(n))) if k == "v" => n.as_u64().ok_or(Unreadable::NotALeaf)?,
        _ => return Err(Unreadable::NotALeaf),
    };
    if version > u64::from(LEAF_VERSION) {
        return Ok(format!(
            "leaf version {version} (this release reads version {LEAF_VERSION})"
        ));
    }
    if version < u64::from(LEAF_VERSION) {
        return Err(Unreadable::UnknownVersion);
    }
    let [(v, _), (s, seq), (e, Json::Object(event))] = top.as_slice() else {
        return Err(Unreadable::NotALeaf);
    };
    if (v.as_str(), s.as_str(), e.as_str()) != ("v", "seq", "event") {
        return Err(Unreadable::NotALeaf);
    }
    let mut unknown = Vec::new();
    let mut known = Vec::with_capacity(EVENT_FIELDS.len());
    let mut last: Option<usize> = None;
    for (key, value) in event {
        let Some(at) = EVENT_FIELDS.iter().position(|f| f == key) else {
            if !is_name(key) {
                return Err(Unreadable::BadEvent);
            }
            unknown.push(format!("event field `{key}`"));
            continue;
        };
        if last.is_some_and(|l| l >= at) {
            return Err(Unreadable::BadEvent);
        }
        last = Some(at);
        let value = match (closed_set(key), value) {
            (Some(names), Json::String(name)) if !names.contains(&name.as_str()) => {
                if !is_name(name) {
                    return Err(Unreadable::BadEvent);
                }
                unknown.push(format!("{key} `{name}`"));
                // A known value in its place, so the rest of the event can be checked.
                Json::String(names.first().copied().unwrap_or_default().to_owned())
            }
            _ => value.clone(),
        };
        known.push((key.clone(), value));
    }
    if unknown.is_empty() {
        return Err(Unreadable::BadEvent);
    }
    let projected = Json::Object(vec![
        ("v".into(), Json::Number(LEAF_VERSION.into())),
        ("seq".into(), seq.clone()),
        ("event".into(), Json::Object(known)),
    ]);
    let projected = serde_json::to_vec(&projected).map_err(|_| Unreadable::BadEvent)?;
    decode_leaf(&projected).map_err(|_| Unreadable::BadEvent)?;
    Ok(format!(
        "what this release does not know: {}",
        unknown.join(", ")
    ))
}

/// The wire names of a closed-set event field; `None` for any other field.
fn closed_set(field: &str) -> Option<Vec<&'static str>> {
    fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Option<Vec<&'static str>> {
        Some(all.iter().map(|t| name(*t)).collect())
    }
    match field {
        "event_type" => names(EventType::ALL, EventType::as_str),
        "actor_kind" => names(ActorKind::ALL, ActorKind::as_str),
        "auth_method" => names(AuthMethod::ALL, AuthMethod::as_str),
        "outcome" => names(Outcome::ALL, Outcome::as_str),
        _ => None,
    }
}

/// Whether `s` looks like a field or value name of the encoding: `[a-z][a-z0-9_]*`, at most
/// [`MAX_NAME`] bytes. Anything else in an unknown place is damage, not a newer release.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The [`EventType::AuditQuarantined`] event that takes the place of queued row `queue_id`
/// (`bytes`), set aside at `at` for `why`; and the bytes' SHA-256.
pub fn quarantine_event(
    queue_id: u64,
    bytes: &[u8],
    why: Unreadable,
    at: Timestamp,
) -> (AuditEvent, Hash) {
    let sha256 = Hash(Sha256::digest(bytes).into());
    let event = AuditEvent {
        outcome: Some(Outcome::Error),
        deny_reason: Some(why.as_str().to_owned()),
        detail: Some(format!(
            "queue_id={queue_id} bytes={} sha256={}",
            bytes.len(),
            sha256.to_hex()
        )),
        ..AuditEvent::new(at, EventType::AuditQuarantined, "system", ActorKind::System)
    };
    (event, sha256)
}

/// A queued row set aside, as the quarantine table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantinedRow {
    /// Its queue id.
    pub queue_id: u64,
    /// The log entry that took its place (an [`EventType::AuditQuarantined`] event).
    pub seq: u64,
    /// Its bytes, exactly as queued.
    pub bytes: Vec<u8>,
    /// The SHA-256 of `bytes`.
    pub sha256: Hash,
    /// When it was set aside.
    pub quarantined_at: Timestamp,
}

/// What one sequencing pass does with the oldest queued rows.
#[derive(Debug, Default)]
pub struct Plan {
    /// The rows that leave the queue, in queue order, each with the event that takes its
    /// place in the log.
    pub take: Vec<Planned>,
    /// The row from a newer release the pass stopped at, if any: it and every row after it
    /// stay queued.
    pub held: Option<Held>,
}

/// A row of the queue as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// Its queue id.
    pub queue_id: u64,
    /// Its bytes, exactly as queued.
    pub bytes: Vec<u8>,
    /// Its tag, if it has one ([`crate::queue_tag`]).
    pub tag: Option<Vec<u8>>,
}

/// A row that leaves the queue.
#[derive(Debug)]
pub struct Planned {
    /// Its queue id.
    pub queue_id: u64,
    /// The event appended for it: its own, or the quarantine event.
    pub event: AuditEvent,
    /// The tag kept beside its entry: the row's own, or, for a quarantine event, one the
    /// sequencer makes for it.
    pub tag: Hash,
    /// Set when the row is set aside: its bytes (moved into the quarantine table) and their
    /// SHA-256.
    pub set_aside: Option<(Vec<u8>, Hash)>,
}

/// The row from a newer release a pass stopped at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Its queue id.
    pub queue_id: u64,
    /// What this release could not read in it.
    pub what: String,
}

/// Plans a sequencing pass over `rows`, oldest first: each row whose tag verifies under `key`
/// and that decodes is sequenced, each unauthenticated, replayed or unreadable one is set aside
/// (its quarantine event stamped `at`), and the first from a newer release stops the pass.
/// `logged` holds those of the rows' tags that entries of the log already carry (the store
/// looks them up, [`crate::shared::SharedLog::tag_positions`]): such a row, or a second row
/// with one tag, is a replay.
pub fn plan(
    rows: Vec<Queued>,
    at: Timestamp,
    key: &QueueKey,
    logged: &std::collections::HashSet<Hash>,
) -> Plan {
    let mut plan = Plan::default();
    let mut taken = std::collections::HashSet::new();
    for Queued {
        queue_id,
        bytes,
        tag,
    } in rows
    {
        let set_aside = |why, bytes: Vec<u8>| {
            let (event, sha256) = quarantine_event(queue_id, &bytes, why, at);
            Planned {
                queue_id,
                tag: key.tag(&crate::event::encode_leaf(0, &event)),
                event,
                set_aside: Some((bytes, sha256)),
            }
        };
        let verified = tag
            .as_deref()
            .filter(|t| key.verify(&bytes, Some(t)))
            .and_then(Hash::from_slice);
        let Some(tag) = verified else {
            plan.take
                .push(set_aside(Unreadable::Unauthenticated, bytes));
            continue;
        };
        if logged.contains(&tag) || !taken.insert(tag) {
            plan.take.push(set_aside(Unreadable::Replayed, bytes));
            continue;
        }
        match read_queued(&bytes) {
            QueuedRow::Event(event) => plan.take.push(Planned {
                queue_id,
                event,
                tag,
                set_aside: None,
            }),
            QueuedRow::Unreadable(why) => plan.take.push(set_aside(why, bytes)),
            QueuedRow::NewerRelease(what) => {
                plan.held = Some(Held { queue_id, what });
                break;
            }
        }
    }
    plan
}

/// JSON with objects kept in their written order (serde_json's own `Value` sorts keys unless a
/// workspace-wide feature is turned on), so a row can be written back and compared with itself.
#[derive(Clone, Debug)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(t) => s.serialize_str(t),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(v)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::conformance::sample_event;
    use crate::event::encode_leaf;

    fn leaf() -> String {
        String::from_utf8(encode_leaf(0, &sample_event(1))).unwrap()
    }

    #[test]
    fn the_field_list_is_the_encodings() {
        let mut full = sample_event(2);
        full.detail = Some("d".into());
        let Json::Object(top) = serde_json::from_slice(&encode_leaf(0, &full)).unwrap() else {
            panic!("not an object");
        };
        let Some((_, Json::Object(event))) = top.last() else {
            panic!("no event");
        };
        let keys: Vec<&str> = event.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, EVENT_FIELDS);
    }

    /// Each row, what this release makes of it: the precise line between a newer release's
    /// event and a row no release can read.
    #[test]
    fn queued_rows_are_events_newer_releases_or_unreadable() {
        let leaf = leaf();
        let newer = |what: &str| Ok::<_, Unreadable>(what.to_owned());
        let cases: Vec<(&str, String, Result<String, Unreadable>)> = vec![
            (
                "a higher leaf version, whatever its shape",
                r#"{"v":2,"entry":{"kind":"new"}}"#.into(),
                newer("leaf version 2 (this release reads version 1)"),
            ),
            (
                "a higher leaf version of the same shape",
                leaf.replacen("\"v\":1", "\"v\":7", 1),
                newer("leaf version 7 (this release reads version 1)"),
            ),
            (
                "an unknown event type",
                leaf.replacen(
                    "\"event_type\":\"request\"",
                    "\"event_type\":\"model_swap\"",
                    1,
                ),
                newer("what this release does not know: event_type `model_swap`"),
            ),
            (
                "an unknown outcome and a new field after the last",
                leaf.replacen("\"outcome\":\"deny\"", "\"outcome\":\"retried\"", 1)
                    .replacen("}}", ",\"region\":\"eu\"}}", 1),
                newer("what this release does not know: outcome `retried`, event field `region`"),
            ),
            (
                "a new field with an object value, in the middle",
                leaf.replacen(
                    "\"tenant\"",
                    "\"origin\":{\"b\":1,\"a\":[true,null]},\"tenant\"",
                    1,
                ),
                newer("what this release does not know: event field `origin`"),
            ),
            ("not JSON", "{\"v\":1,".into(), Err(Unreadable::NotJson)),
            ("empty", String::new(), Err(Unreadable::NotJson)),
            (
                "not canonical: whitespace",
                leaf.replacen("\"v\":1", "\"v\": 1", 1),
                Err(Unreadable::NotCanonical),
            ),
            (
                "not canonical: an escape the encoding does not write",
                leaf.replacen(
                    "\"event_type\":\"request\"",
                    "\"event_type\":\"re\\u0071uest\"",
                    1,
                ),
                Err(Unreadable::NotCanonical),
            ),
            ("not an object", "[1,2]".into(), Err(Unreadable::NotALeaf)),
            (
                "the version not first",
                r#"{"seq":0,"v":2}"#.into(),
                Err(Unreadable::NotALeaf),
            ),
            (
                "a version that is not a count",
                r#"{"v":"2"}"#.into(),
                Err(Unreadable::NotALeaf),
            ),
            (
                "version 0",
                leaf.replacen("\"v\":1", "\"v\":0", 1),
                Err(Unreadable::UnknownVersion),
            ),
            (
                "a version-1 leaf with another frame",
                leaf.replacen("\"seq\":0", "\"seq\":0,\"x\":1", 1),
                Err(Unreadable::NotALeaf),
            ),
            (
                "an unknown name that is not a name",
                leaf.replacen(
                    "\"event_type\":\"request\"",
                    "\"event_type\":\"Request!\"",
                    1,
                ),
                Err(Unreadable::BadEvent),
            ),
            (
                "an unknown field whose name is not a name",
                leaf.replacen("\"tenant\"", "\"Tenant 2\":1,\"tenant\"", 1),
                Err(Unreadable::BadEvent),
            ),
            (
                "an unknown name beside a known field removed",
                leaf.replacen(
                    "\"event_type\":\"request\"",
                    "\"event_type\":\"new_type\"",
                    1,
                )
                .replacen("\"latency_ms\":6,", "", 1),
                Err(Unreadable::BadEvent),
            ),
            (
                "an unknown name beside a known field out of order",
                leaf.replacen(
                    "\"event_type\":\"request\"",
                    "\"event_type\":\"new_type\"",
                    1,
                )
                .replacen("\"actor_id\":\"key_00000000000000000000000001\",", "", 1)
                .replacen("}}", ",\"actor_id\":\"x\"}}", 1),
                Err(Unreadable::BadEvent),
            ),
            (
                "an unknown name beside a bad value of a known field",
                leaf.replacen(
                    "\"event_type\":\"request\"",
                    "\"event_type\":\"new_type\"",
                    1,
                )
                .replacen("\"http_status\":403", "\"http_status\":\"403\"", 1),
                Err(Unreadable::BadEvent),
            ),
            (
                "a known field present but absent in canonical form",
                leaf.replacen("}}", ",\"detail\":null,\"zz\":1}}", 1),
                Err(Unreadable::BadEvent),
            ),
            (
                "a bad value and nothing unknown",
                leaf.replacen("\"http_status\":403", "\"http_status\":\"403\"", 1),
                Err(Unreadable::BadEvent),
            ),
        ];
        for (name, row, want) in cases {
            let got = match read_queued(row.as_bytes()) {
                QueuedRow::Event(_) => panic!("{name}: read as an event: {row}"),
                QueuedRow::NewerRelease(what) => Ok(what),
                QueuedRow::Unreadable(why) => Err(why),
            };
            assert_eq!(got, want, "{name}: {row}");
        }
        assert_eq!(
            read_queued(leaf.as_bytes()),
            QueuedRow::Event(sample_event(1))
        );
        let long = format!("{{\"v\":2,\"x\":\"{}\"}}", "a".repeat(MAX_QUEUED_ROW));
        assert_eq!(
            read_queued(long.as_bytes()),
            QueuedRow::Unreadable(Unreadable::TooLong)
        );
    }

    #[test]
    fn a_quarantine_event_names_the_row_by_id_length_and_hash_and_is_valid() {
        let bytes = b"\x00not a leaf";
        let at = Timestamp::from_unix_millis(1_700_000_000_000).unwrap();
        let (event, sha256) = quarantine_event(42, bytes, Unreadable::NotJson, at);
        event.validate().unwrap();
        assert_eq!(event.event_type, EventType::AuditQuarantined);
        assert_eq!(sha256, Hash(Sha256::digest(bytes).into()));
        assert_eq!(
            event.detail.as_deref(),
            Some(format!("queue_id=42 bytes=11 sha256={}", sha256.to_hex()).as_str())
        );
        assert_eq!(event.deny_reason.as_deref(), Some("queued_row_not_json"));
        // It is an event like any other: it round-trips through its leaf.
        let leaf = encode_leaf(3, &event);
        assert_eq!(decode_leaf(&leaf).unwrap(), (3, event));
    }

    #[test]
    fn a_plan_sets_unreadable_rows_aside_and_stops_at_a_newer_release() {
        let at = Timestamp::from_unix_millis(1_700_000_000_000).unwrap();
        let key = crate::note::SignerKey::generate("example.com/audit")
            .unwrap()
            .queue_key();
        let other = crate::note::SignerKey::generate("example.com/audit")
            .unwrap()
            .queue_key();
        let tagged = |queue_id: u64, bytes: Vec<u8>| Queued {
            queue_id,
            tag: Some(key.tag(&bytes).as_bytes().to_vec()),
            bytes,
        };
        let row = |i: u64| encode_leaf(0, &sample_event(i));
        let plan = plan(
            vec![
                tagged(1, row(1)),
                tagged(2, b"garbage".to_vec()),
                Queued {
                    queue_id: 3,
                    bytes: row(3),
                    tag: None,
                },
                Queued {
                    queue_id: 4,
                    tag: Some(other.tag(&row(4)).as_bytes().to_vec()),
                    bytes: row(4),
                },
                tagged(5, row(5)),
                // An untagged row's claim to be from a newer release is not believed.
                Queued {
                    queue_id: 6,
                    bytes: br#"{"v":2}"#.to_vec(),
                    tag: None,
                },
                tagged(7, br#"{"v":2}"#.to_vec()),
                tagged(8, row(8)),
            ],
            at,
            &key,
            &std::collections::HashSet::new(),
        );
        let taken: Vec<(u64, EventType, bool)> = plan
            .take
            .iter()
            .map(|p| (p.queue_id, p.event.event_type, p.set_aside.is_some()))
            .collect();
        assert_eq!(
            taken,
            vec![
                (1, EventType::Request, false),
                (2, EventType::AuditQuarantined, true),
                (3, EventType::AuditQuarantined, true),
                (4, EventType::AuditQuarantined, true),
                (5, EventType::Request, false),
                (6, EventType::AuditQuarantined, true),
            ]
        );
        let reasons: Vec<Option<&str>> = plan
            .take
            .iter()
            .map(|p| {
                (p.event.event_type == EventType::AuditQuarantined)
                    .then_some(())
                    .and(p.event.deny_reason.as_deref())
            })
            .collect();
        assert_eq!(
            reasons,
            [
                None,
                Some("queued_row_not_json"),
                Some("queued_row_unauthenticated"),
                Some("queued_row_unauthenticated"),
                None,
                Some("queued_row_unauthenticated"),
            ]
        );
        assert_eq!(plan.take[1].set_aside.as_ref().unwrap().0, b"garbage");
        // Each entry keeps a tag that verifies over its event's row: the row's own, or the
        // sequencer's for a quarantine event.
        for p in &plan.take {
            let bytes = encode_leaf(0, &p.event);
            assert!(key.verify(&bytes, Some(p.tag.as_bytes())), "{}", p.queue_id);
        }
        assert_eq!(
            plan.held,
            Some(Held {
                queue_id: 7,
                what: "leaf version 2 (this release reads version 1)".into()
            })
        );
    }
}
