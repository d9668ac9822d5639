//! `AuditEvent`: one audited action with the NIST SP 800-53 AU-3 fields, and its canonical
//! encoding, which is the Merkle leaf.
//!
//! An event never carries prompt or completion text. The closest it comes is `prompt_sha256`,
//! an HMAC-SHA256 of the prompt under a deployment secret ([`prompt_digest`]), which lets an
//! investigator holding both the secret and a candidate text check a match without the log
//! ever holding the text; without the secret the digest cannot be brute-forced from guesses.
//!
//! The canonical leaf is compact JSON with a fixed shape:
//! `{"v":1,"seq":N,"event":{...every field, in declaration order, null when absent...}}`.
//! serde_json writes struct fields in declaration order, escapes strings one way, and the
//! event has no floats or maps, so equal events always give equal bytes. Decoding is strict:
//! unknown fields are refused, and bytes that do not re-encode to themselves are refused, so one
//! event has exactly one leaf. The sequence number is inside the leaf so an entry cannot be
//! moved to another position without its hash changing.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::merkle::{self, Hash};

/// Version of the canonical leaf encoding.
pub const LEAF_VERSION: u32 = 1;
/// The longest string field, in bytes. Ids, names and short reasons fit; anything longer is a
/// sign that free text (possibly PHI) is being put where it does not belong.
pub const MAX_FIELD_LEN: usize = 256;

macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name (as in the JSON and the database).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

closed_set! {
    /// What happened. A closed set: security events (incident response, §164.308(a)(6)) are
    /// distinct types so they can be counted and queried on their own.
    EventType {
        /// A request passed authentication and authorisation and is about to reach a backend.
        /// Committed before the backend call; the matching `Request` event (same `request_id`)
        /// carries the outcome. It has no outcome of its own.
        RequestStart => "request_start",
        /// The one terminal event of a request that reached a handler.
        Request => "request",
        /// A credential was presented and refused.
        AuthFailure => "auth_failure",
        /// An actor was locked out after repeated failures.
        Lockout => "lockout",
        /// Emergency (break-glass) access was used.
        BreakGlass => "break_glass",
        /// Configuration, including audit settings, changed (ONC 170.315(d)(2)).
        ConfigChange => "config_change",
        /// An API key was created.
        KeyCreated => "key_created",
        /// An API key was revoked.
        KeyRevoked => "key_revoked",
        /// Verification found the audit log or a checkpoint altered.
        TamperDetected => "tamper_detected",
        /// The audit log was exported or queried by a reviewer.
        AuditAccess => "audit_access",
        /// A queued row of a shared log could not be read as an event by any release (damage,
        /// or a row written by hand): the sequencer moved its bytes into the quarantine table
        /// and wrote this event at the row's place in the order. `detail` holds its queue id,
        /// length and SHA-256 ([`crate::quarantine`]).
        AuditQuarantined => "audit_quarantined",
    }
}

/// How urgently a reviewer should look at an event (for alerting and for filtering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Routine traffic.
    Info,
    /// A security-relevant change or a refused credential.
    Notice,
    /// Needs a person soon: emergency access, lockouts, tampering.
    High,
}

impl Severity {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::High => "high",
        }
    }
}

impl EventType {
    /// How urgent an event of this type is. Fixed per type, so severity cannot be lowered by
    /// whoever writes the event.
    pub fn severity(self) -> Severity {
        match self {
            EventType::RequestStart | EventType::Request => Severity::Info,
            EventType::AuthFailure
            | EventType::ConfigChange
            | EventType::KeyCreated
            | EventType::KeyRevoked
            | EventType::AuditAccess => Severity::Notice,
            EventType::Lockout
            | EventType::BreakGlass
            | EventType::TamperDetected
            | EventType::AuditQuarantined => Severity::High,
        }
    }
}

closed_set! {
    /// How an action ended.
    Outcome {
        /// Allowed and completed.
        Allow => "allow",
        /// Refused by policy (authentication, authorisation, limits, validation).
        Deny => "deny",
        /// Failed on the server side or at a backend.
        Error => "error",
        /// The client went away before the response ended.
        ClientAbort => "client_abort",
    }
}

closed_set! {
    /// What kind of principal acted.
    ActorKind {
        /// A person (for example a JWT subject).
        User => "user",
        /// An application or agent (an API key, a client certificate).
        Service => "service",
        /// wardgate itself (start-up, configuration, tamper detection).
        System => "system",
        /// No principal could be established (failed authentication).
        Anonymous => "anonymous",
    }
}

closed_set! {
    /// How the principal authenticated.
    AuthMethod {
        /// A wardgate API key.
        ApiKey => "api_key",
        /// A JWT / OIDC token.
        Jwt => "jwt",
        /// A TLS client certificate.
        Mtls => "mtls",
        /// The emergency-access principal.
        BreakGlass => "break_glass",
    }
}

/// A UTC instant with millisecond precision, written as RFC 3339 with exactly three fractional
/// digits and a `Z` (`2025-01-31T12:00:00.123Z`), so it has one textual form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const CANONICAL_TS: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
/// 9999-12-31T23:59:59.999Z: the last instant a four-digit year can write.
const MAX_MILLIS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// Now, truncated to the millisecond.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc()).unwrap_or(Self(0))
    }

    /// Milliseconds since the Unix epoch; `None` before 1970 or after year 9999.
    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        (0..=MAX_MILLIS).contains(&ms).then_some(Self(ms))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// The instant truncated to the millisecond; `None` out of range.
    pub fn from_datetime(t: OffsetDateTime) -> Option<Self> {
        let ms = i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()?;
        Self::from_unix_millis(ms)
    }

    /// As a `time` value in UTC.
    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Parses any RFC 3339 time (any offset, any precision), for command-line input; the
    /// canonical form is parsed by `Deserialize`.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .and_then(Self::from_datetime)
    }

    fn parse_canonical(text: &str) -> Option<Self> {
        let t = time::PrimitiveDateTime::parse(text, CANONICAL_TS).ok()?;
        Self::from_datetime(t.assume_utc())
    }
}

impl Timestamp {
    /// The canonical text, written by hand: every leaf contains one, and the general-purpose
    /// formatter was a tenth of the verifier's time. A test checks it against `time`'s output.
    fn canonical_bytes(self) -> [u8; 24] {
        let ms = self.0;
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000);
        // Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000);
        put(14, 2, in_day / 60_000 % 60);
        put(17, 2, in_day / 1_000 % 60);
        put(20, 3, in_day % 1_000);
        out
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always ASCII digits and separators, so the conversion cannot fail.
        let bytes = self.canonical_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = self.canonical_bytes();
        s.serialize_str(std::str::from_utf8(&bytes).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UTC time like 2025-01-31T12:00:00.123Z")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_canonical(v)
                    .ok_or_else(|| E::custom("expected a UTC time like 2025-01-31T12:00:00.123Z"))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// One audited action. Field names are NIST SP 800-53 AU-3's "what, when, where, source,
/// outcome, identity". The sequence number is assigned by the log and lives on
/// [`crate::AuditEntry`].
///
/// No field may hold prompt or completion text, nor anything the `phi` crate would flag;
/// strings are bounded by [`MAX_FIELD_LEN`] and checked by [`AuditEvent::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When the action happened (for a request: when its response ended).
    pub ts: Timestamp,
    /// What happened.
    pub event_type: EventType,
    /// The principal: key id, JWT subject or certificate subject; `"system"` for wardgate
    /// itself; for a failed authentication, what identifies the attempt (a key prefix, never
    /// the presented secret). Never empty.
    pub actor_id: String,
    /// What kind of principal.
    pub actor_kind: ActorKind,
    /// How it authenticated, if it did.
    pub auth_method: Option<AuthMethod>,
    /// The tenant acted for.
    pub tenant: Option<String>,
    /// The API key id or JWT `jti`.
    pub key_id: Option<String>,
    /// The client address as the gateway saw it.
    pub source_ip: Option<IpAddr>,
    /// The request id (`x-request-id`); ties a `request_start` to its terminal `request`.
    pub request_id: Option<String>,
    /// The matched route template (`/v1/chat/completions`), never a path with values in it.
    pub route: Option<String>,
    /// The public model name asked for.
    pub model: Option<String>,
    /// The backend that served it.
    pub backend: Option<String>,
    /// How it ended; `None` only for `request_start`.
    pub outcome: Option<Outcome>,
    /// The HTTP status sent.
    pub http_status: Option<u16>,
    /// Why it was refused or failed: a short machine-readable reason, never client content.
    pub deny_reason: Option<String>,
    /// Prompt tokens.
    pub tokens_in: Option<u64>,
    /// Completion tokens.
    pub tokens_out: Option<u64>,
    /// Time from the request's arrival to the end of its response.
    pub latency_ms: Option<u64>,
    /// HMAC-SHA256 of the prompt under the deployment's salt ([`prompt_digest`]).
    pub prompt_sha256: Option<Hash>,
    /// What an administrative action was about, in wardgate's words (`key_id=key_...`,
    /// `tenant=acme`), or a break-glass justification after PHI redaction. Absent from
    /// ordinary requests; left out of the encoding when absent, so leaves written before the
    /// field existed keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Why an event or a stored leaf was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A field breaks a rule; the message names the field, never its value.
    #[error("field {field}: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is allowed.
        reason: &'static str,
    },
    /// Leaf bytes that are not exactly the canonical encoding of an event.
    #[error("leaf is not a canonical event encoding: {0}")]
    NotCanonical(String),
}

fn invalid(field: &'static str, reason: &'static str) -> EventError {
    EventError::Invalid { field, reason }
}

fn check_text(field: &'static str, value: &str) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty when present"));
    }
    if value.len() > MAX_FIELD_LEN {
        return Err(invalid(field, "longer than 256 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

impl AuditEvent {
    /// A minimal event of `event_type` by `actor_id` at `ts`; the caller fills in the rest.
    pub fn new(
        ts: Timestamp,
        event_type: EventType,
        actor_id: &str,
        actor_kind: ActorKind,
    ) -> Self {
        Self {
            ts,
            event_type,
            actor_id: actor_id.to_owned(),
            actor_kind,
            auth_method: None,
            tenant: None,
            key_id: None,
            source_ip: None,
            request_id: None,
            route: None,
            model: None,
            backend: None,
            outcome: None,
            http_status: None,
            deny_reason: None,
            tokens_in: None,
            tokens_out: None,
            latency_ms: None,
            prompt_sha256: None,
            detail: None,
        }
    }

    /// Checks the rules the log enforces on every event: a non-empty actor (HIPAA unique user
    /// identification), bounded printable strings, and an outcome on every event but
    /// `request_start`, which has none.
    pub fn validate(&self) -> Result<(), EventError> {
        check_text("actor_id", &self.actor_id)?;
        let optional = [
            ("tenant", &self.tenant),
            ("key_id", &self.key_id),
            ("request_id", &self.request_id),
            ("route", &self.route),
            ("model", &self.model),
            ("backend", &self.backend),
            ("deny_reason", &self.deny_reason),
            ("detail", &self.detail),
        ];
        for (field, value) in optional {
            if let Some(v) = value {
                check_text(field, v)?;
            }
        }
        match (self.event_type, self.outcome) {
            (EventType::RequestStart, Some(_)) => Err(invalid(
                "outcome",
                "request_start has no outcome; the terminal request event carries it",
            )),
            (EventType::RequestStart, None) => Ok(()),
            (_, None) => Err(invalid(
                "outcome",
                "required for every event but request_start",
            )),
            (_, Some(_)) => Ok(()),
        }?;
        if let Some(status) = self.http_status
            && !(100..=599).contains(&status)
        {
            return Err(invalid("http_status", "must be 100 to 599"));
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct LeafRef<'a> {
    v: u32,
    seq: u64,
    event: &'a AuditEvent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeafOwned {
    v: u32,
    seq: u64,
    event: AuditEvent,
}

/// Appends the canonical leaf bytes of `event` at position `seq` to `out`.
pub fn encode_leaf_into(seq: u64, event: &AuditEvent, out: &mut Vec<u8>) {
    let leaf = LeafRef {
        v: LEAF_VERSION,
        seq,
        event,
    };
    // Serializing these types to a Vec cannot fail: no maps with non-string keys, no floats,
    // no IO. Should serde_json ever disagree, the leaf is left short and fails verification.
    let _ = serde_json::to_writer(out, &leaf);
}

/// The canonical leaf bytes of `event` at position `seq`.
pub fn encode_leaf(seq: u64, event: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    encode_leaf_into(seq, event, &mut out);
    out
}

/// The RFC 6962 leaf hash of `event` at position `seq`.
pub fn event_leaf_hash(seq: u64, event: &AuditEvent) -> Hash {
    merkle::leaf_hash(&encode_leaf(seq, event))
}

/// Decodes leaf bytes into (seq, event), refusing anything but the canonical encoding.
pub fn decode_leaf(bytes: &[u8]) -> Result<(u64, AuditEvent), EventError> {
    let leaf: LeafOwned =
        serde_json::from_slice(bytes).map_err(|e| EventError::NotCanonical(e.to_string()))?;
    if leaf.v != LEAF_VERSION {
        return Err(EventError::NotCanonical(format!(
            "unknown leaf version {}",
            leaf.v
        )));
    }
    if encode_leaf(leaf.seq, &leaf.event) != bytes {
        return Err(EventError::NotCanonical(
            "bytes differ from the canonical encoding".into(),
        ));
    }
    Ok((leaf.seq, leaf.event))
}

/// The salted digest recorded as `prompt_sha256`: HMAC-SHA256 keyed by the deployment's salt,
/// over the prompt's length (8 bytes, big-endian) and bytes.
///
/// A keyed MAC rather than `SHA-256(salt || text)`: both hide the text from anyone without the
/// salt, but HMAC is the construction made for keyed hashing and has no length-extension
/// caveat.
pub fn prompt_digest(salt: &[u8], prompt: &[u8]) -> Hash {
    prompt_digest_parts(salt, [prompt])
}

/// [`prompt_digest`] of a prompt made of several texts (the messages of a chat, the inputs of
/// an embedding request). Each part is preceded by its length, so `["ab", "c"]` and
/// `["a", "bc"]` differ.
pub fn prompt_digest_parts<'a>(salt: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) -> Hash {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(salt) else {
        return Hash::default();
    };
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    Hash(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    pub(crate) fn sample() -> AuditEvent {
        AuditEvent {
            auth_method: Some(AuthMethod::ApiKey),
            tenant: Some("acme".into()),
            key_id: Some("key_abc".into()),
            source_ip: Some("2001:db8::1".parse().unwrap()),
            request_id: Some("req-1".into()),
            route: Some("/v1/chat/completions".into()),
            model: Some("llama3".into()),
            backend: Some("ollama-1".into()),
            outcome: Some(Outcome::Allow),
            http_status: Some(200),
            tokens_in: Some(12),
            tokens_out: Some(34),
            latency_ms: Some(56),
            prompt_sha256: Some(prompt_digest(b"salt", b"hello")),
            ..AuditEvent::new(
                Timestamp::from_unix_millis(1_700_000_000_123).unwrap(),
                EventType::Request,
                "key_abc",
                ActorKind::Service,
            )
        }
    }

    #[test]
    fn detail_is_encoded_only_when_present_and_round_trips() {
        let mut e = sample();
        assert!(
            !String::from_utf8(encode_leaf(1, &e))
                .unwrap()
                .contains("detail")
        );
        e.event_type = EventType::KeyCreated;
        e.detail = Some("key_id=key_new tenant=acme".into());
        let bytes = encode_leaf(1, &e);
        assert!(
            String::from_utf8(bytes.clone())
                .unwrap()
                .ends_with("\"detail\":\"key_id=key_new tenant=acme\"}}")
        );
        assert_eq!(decode_leaf(&bytes).unwrap(), (1, e.clone()));
        e.detail = Some("x".repeat(MAX_FIELD_LEN + 1));
        assert!(e.validate().is_err(), "detail is bounded like every string");
    }

    #[test]
    fn severity_is_fixed_by_type() {
        assert_eq!(EventType::BreakGlass.severity(), Severity::High);
        assert_eq!(EventType::Lockout.severity(), Severity::High);
        assert_eq!(EventType::AuditQuarantined.severity(), Severity::High);
        assert_eq!(EventType::KeyCreated.severity(), Severity::Notice);
        assert_eq!(EventType::Request.severity(), Severity::Info);
    }

    #[test]
    fn canonical_leaf_is_fixed() {
        let leaf = String::from_utf8(encode_leaf(7, &sample())).unwrap();
        let want = format!(
            "{{\"v\":1,\"seq\":7,\"event\":{{\"ts\":\"2023-11-14T22:13:20.123Z\",\
             \"event_type\":\"request\",\"actor_id\":\"key_abc\",\"actor_kind\":\"service\",\
             \"auth_method\":\"api_key\",\"tenant\":\"acme\",\"key_id\":\"key_abc\",\
             \"source_ip\":\"2001:db8::1\",\"request_id\":\"req-1\",\
             \"route\":\"/v1/chat/completions\",\"model\":\"llama3\",\"backend\":\"ollama-1\",\
             \"outcome\":\"allow\",\"http_status\":200,\"deny_reason\":null,\"tokens_in\":12,\
             \"tokens_out\":34,\"latency_ms\":56,\"prompt_sha256\":\"{}\"}}}}",
            prompt_digest(b"salt", b"hello").to_hex()
        );
        assert_eq!(leaf, want);
        assert_eq!(decode_leaf(leaf.as_bytes()).unwrap(), (7, sample()));
    }

    #[test]
    fn non_canonical_leaves_are_refused() {
        let leaf = String::from_utf8(encode_leaf(7, &sample())).unwrap();
        let cases = [
            ("whitespace", leaf.replacen(":", ": ", 1)),
            (
                "unknown field",
                leaf.replacen("{\"v\":1,", "{\"v\":1,\"x\":1,", 1),
            ),
            (
                "unknown event field",
                leaf.replacen("\"ts\"", "\"extra\":1,\"ts\"", 1),
            ),
            (
                "missing null field",
                leaf.replacen("\"deny_reason\":null,", "", 1),
            ),
            ("version", leaf.replacen("\"v\":1", "\"v\":2", 1)),
            ("bad enum", leaf.replacen("\"request\"", "\"requests\"", 1)),
            ("timestamp form", leaf.replacen(".123Z", ".1230Z", 1)),
            ("timestamp offset", leaf.replacen(".123Z", ".123+00:00", 1)),
            ("truncated", leaf[..leaf.len() - 1].to_owned()),
            ("not json", "\u{0}".to_owned()),
        ];
        for (name, bytes) in cases {
            assert!(decode_leaf(bytes.as_bytes()).is_err(), "{name}: {bytes}");
        }
    }

    #[test]
    fn hand_written_timestamps_match_the_time_crate() {
        let mut ms: i64 = 0;
        let mut step: i64 = 1;
        // Dense near the epoch, then growing steps out to year 9999 (leap years, century rules).
        while ms <= MAX_MILLIS {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            let want = t.to_datetime().format(CANONICAL_TS).unwrap();
            assert_eq!(t.to_string(), want, "{ms}");
            ms += step;
            step = step * 3 / 2 + 7;
        }
        // Every day from 1970 to 2200, each at some time of day.
        for day in 0..(230 * 366_i64) {
            let ms = day * 86_400_000 + (day * 7_919_123) % 86_400_000;
            let t = Timestamp::from_unix_millis(ms).unwrap();
            assert_eq!(t.to_string(), t.to_datetime().format(CANONICAL_TS).unwrap());
        }
        for text in [
            "2000-02-29T23:59:59.999Z",
            "2100-03-01T00:00:00.000Z",
            "2024-12-31T12:00:00.001Z",
        ] {
            let t = Timestamp::parse_canonical(text).unwrap();
            assert_eq!(t.to_string(), text);
        }
    }

    #[test]
    fn timestamps_have_one_form() {
        let t = Timestamp::from_unix_millis(0).unwrap();
        assert_eq!(t.to_string(), "1970-01-01T00:00:00.000Z");
        let max = Timestamp::from_unix_millis(MAX_MILLIS).unwrap();
        assert_eq!(max.to_string(), "9999-12-31T23:59:59.999Z");
        assert!(Timestamp::from_unix_millis(-1).is_none());
        assert!(Timestamp::from_unix_millis(MAX_MILLIS + 1).is_none());
        assert_eq!(
            Timestamp::parse_rfc3339("2024-02-29T10:00:00.5+01:00")
                .unwrap()
                .to_string(),
            "2024-02-29T09:00:00.500Z"
        );
        let now = Timestamp::now();
        let json = serde_json::to_string(&now).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), now);
    }

    #[test]
    fn validation_rules() {
        sample().validate().unwrap();
        let start = AuditEvent {
            outcome: None,
            ..AuditEvent {
                event_type: EventType::RequestStart,
                ..sample()
            }
        };
        start.validate().unwrap();
        let cases: Vec<(&str, AuditEvent)> = vec![
            (
                "actor_id",
                AuditEvent {
                    actor_id: String::new(),
                    ..sample()
                },
            ),
            (
                "tenant",
                AuditEvent {
                    tenant: Some("x".repeat(257)),
                    ..sample()
                },
            ),
            (
                "deny_reason",
                AuditEvent {
                    deny_reason: Some("line\nbreak".into()),
                    ..sample()
                },
            ),
            (
                "outcome",
                AuditEvent {
                    outcome: None,
                    ..sample()
                },
            ),
            (
                "outcome",
                AuditEvent {
                    outcome: Some(Outcome::Allow),
                    ..start.clone()
                },
            ),
            (
                "http_status",
                AuditEvent {
                    http_status: Some(42),
                    ..sample()
                },
            ),
        ];
        for (field, event) in cases {
            match event.validate() {
                Err(EventError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn closed_sets_round_trip() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), *t);
            assert_eq!(serde_json::to_string(t).unwrap(), format!("\"{t}\""));
        }
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), *o);
        }
        assert!(
            "nope"
                .parse::<Outcome>()
                .unwrap_err()
                .contains("client_abort")
        );
    }

    #[test]
    fn prompt_digest_is_keyed() {
        assert_ne!(prompt_digest(b"a", b"text"), prompt_digest(b"b", b"text"));
        assert_eq!(prompt_digest(b"a", b"text"), prompt_digest(b"a", b"text"));
    }
}
