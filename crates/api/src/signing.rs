//! HMAC-SHA256 request signing for the private hop between the gateway and `wardgate llm`.
//!
//! The gateway signs method, path (with query), a timestamp, a random nonce and the SHA-256 of
//! the body, and sends that digest in a header too; the LLM service recomputes the signature
//! with each active secret (two may be active during a rotation) from the headers alone, so it
//! refuses a forged request before reading a byte of its body, then reads the body (bounded)
//! and checks it against the signed digest. It refuses timestamps outside the allowed skew and
//! remembers nonces until their timestamp leaves the window, so a captured request cannot be
//! replayed to it. Several replicas each have a verifier of their own; the caller shares the
//! nonces among them ([`VerifiedHead::nonce_id`], [`VerifiedHead::nonce_expires`]: the gateway
//! crate keeps them in Redis), and the signed text does not name the target, which replicas
//! behind one URL share anyway. Pure: the caller supplies the clock and the randomness.
//!
//! A request that carries a W3C `traceparent` (when traces are exported) is signed with scheme
//! `v2`, whose text ends with that header's value: the LLM service takes a parent for its
//! spans only from a header the signature covers, so nobody but the gateway can graft its
//! requests onto a trace. A `v1` signature covers no `traceparent`, and one sent beside it is
//! ignored.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const TIMESTAMP_HEADER: &str = "x-wardgate-timestamp";
pub const NONCE_HEADER: &str = "x-wardgate-nonce";
pub const SIGNATURE_HEADER: &str = "x-wardgate-signature";
/// The hex SHA-256 of the body, as signed.
pub const BODY_DIGEST_HEADER: &str = "x-wardgate-content-sha256";

/// How far a timestamp may be from the verifier's clock, either way, by default.
pub const DEFAULT_SKEW_SECS: i64 = 30;

/// The version tag of the signature scheme, part of the signed text and of the header value.
const SCHEME: &str = "v1";
/// The scheme of a request whose `traceparent` is signed too.
const SCHEME_TRACED: &str = "v2";
/// The longest `traceparent` signed or accepted (version 00 is 55 characters).
pub const MAX_TRACEPARENT_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// A shared secret. Never printed.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        // Overwrite the secret before the allocation is released.
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&self.0);
    }
}

/// Why a secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a signing secret must be at least 32 bytes")]
    TooShort,
}

impl SigningKey {
    /// At least 32 bytes, so the key is not the weak part of HMAC-SHA256.
    pub fn new(secret: &[u8]) -> Result<SigningKey, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::TooShort);
        }
        Ok(SigningKey(secret.to_vec()))
    }

    /// Parses `WARDGATE_LLM_SECRET`-style lists: secrets separated by commas, the first used for
    /// signing, all accepted for verification.
    pub fn parse_list(value: &str) -> Result<Vec<SigningKey>, KeyError> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SigningKey::new(s.as_bytes()))
            .collect()
    }

    #[expect(
        clippy::expect_used,
        reason = "HMAC takes keys of every length (RFC 2104); the error exists only for MACs with fixed key sizes"
    )]
    fn mac(&self, text: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(text);
        mac
    }
}

fn signed_text(
    method: &str,
    path: &str,
    timestamp: i64,
    nonce: &str,
    digest: &str,
    traceparent: Option<&str>,
) -> Vec<u8> {
    match traceparent {
        None => format!("{SCHEME}\n{method}\n{path}\n{timestamp}\n{nonce}\n{digest}"),
        Some(tp) => {
            format!("{SCHEME_TRACED}\n{method}\n{path}\n{timestamp}\n{nonce}\n{digest}\n{tp}")
        }
    }
    .into_bytes()
}

/// A `traceparent` the signature may cover: short, printable ASCII, no spaces.
fn signable_traceparent(tp: &str) -> bool {
    !tp.is_empty() && tp.len() <= MAX_TRACEPARENT_LEN && tp.bytes().all(|b| b.is_ascii_graphic())
}

/// The hex SHA-256 of `body`, as signed and as sent in [`BODY_DIGEST_HEADER`].
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The four headers to attach to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    /// The body's hex SHA-256, for [`BODY_DIGEST_HEADER`].
    pub body_digest: String,
}

/// Signs a request. `nonce` must be fresh randomness (e.g. 16 random bytes as hex).
pub fn sign(
    key: &SigningKey,
    method: &str,
    path: &str,
    body: &[u8],
    now_unix: i64,
    nonce: &str,
) -> Signature {
    sign_traced(key, method, path, body, now_unix, nonce, None)
}

/// Signs a request and, when given, the `traceparent` header it carries (scheme `v2`); a
/// `traceparent` that could not be verified as sent (too long, not printable) is left out of
/// the signature, and the caller must then not send it.
pub fn sign_traced(
    key: &SigningKey,
    method: &str,
    path: &str,
    body: &[u8],
    now_unix: i64,
    nonce: &str,
    traceparent: Option<&str>,
) -> Signature {
    let digest = body_digest(body);
    let traceparent = traceparent.filter(|tp| signable_traceparent(tp));
    let tag = key
        .mac(&signed_text(
            method,
            path,
            now_unix,
            nonce,
            &digest,
            traceparent,
        ))
        .finalize()
        .into_bytes();
    let scheme = if traceparent.is_some() {
        SCHEME_TRACED
    } else {
        SCHEME
    };
    Signature {
        timestamp: now_unix.to_string(),
        nonce: nonce.to_owned(),
        signature: format!("{scheme}={}", hex::encode(tag)),
        body_digest: digest,
    }
}

/// Why a signed request was refused. Logged; the client only learns "unauthorized".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature headers")]
    Missing,
    #[error("malformed signature headers")]
    Malformed,
    #[error("timestamp outside the allowed skew")]
    Stale,
    #[error("nonce already used")]
    Replayed,
    #[error("signature does not match")]
    BadSignature,
    #[error("body does not match its signed digest")]
    BodyAltered,
}

/// A received request as the verifier sees it: what was signed and the three headers.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// The `traceparent` header, which a `v2` signature covers.
    pub traceparent: Option<&'a str>,
}

/// A received request before its body is read: what was signed and the four headers.
#[derive(Clone, Copy, Debug)]
pub struct SignedHead<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body_digest: Option<&'a str>,
    /// The `traceparent` header, which a `v2` signature covers.
    pub traceparent: Option<&'a str>,
}

/// A request whose headers verified: its body must still hash to the signed digest.
#[derive(Debug)]
#[must_use = "the body is not verified until `check_body` says so"]
pub struct VerifiedHead {
    digest: [u8; 32],
    nonce: [u8; 16],
    nonce_expires: i64,
}

impl VerifiedHead {
    /// The request's nonce as the replay cache keeps it (128 bits of its SHA-256), for a
    /// replay cache shared by several replicas, which must also refuse a nonce that another
    /// replica has seen. The nonce is public (it travels in a header): this is no secret.
    pub fn nonce_id(&self) -> [u8; 16] {
        self.nonce
    }

    /// The last second (Unix time) the request's timestamp is accepted: a shared replay cache
    /// must remember the nonce until then, and may forget it after.
    pub fn nonce_expires(&self) -> i64 {
        self.nonce_expires
    }

    /// Whether `body` is the one the signature covers.
    pub fn check_body(&self, body: &[u8]) -> Result<(), VerifyError> {
        let actual: [u8; 32] = Sha256::digest(body).into();
        // A digest of public data, but compared without an early exit all the same.
        if actual
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
        {
            Ok(())
        } else {
            Err(VerifyError::BodyAltered)
        }
    }
}

/// A request head whose signature verified, before its nonce is checked.
struct CheckedHead<'a> {
    timestamp: i64,
    nonce: &'a str,
    digest: [u8; 32],
    traceparent_signed: bool,
}

/// Nonces seen, each kept until its timestamp leaves the skew window (after that the timestamp
/// alone refuses a replay). Nonces are kept as 128 bits of their SHA-256, so an entry has a
/// fixed size whatever the nonce's length.
#[derive(Debug, Default)]
struct Nonces {
    expiry: HashMap<[u8; 16], i64>,
    by_expiry: BTreeSet<(i64, [u8; 16])>,
}

/// The replay cache's size for a service that takes at most `max_requests_per_sec` signed
/// requests a second with timestamps allowed `skew_secs` either way: a nonce is remembered for
/// up to twice the skew (a timestamp `skew` ahead of the clock stays acceptable until `skew`
/// after it).
pub fn replay_cache_size(skew_secs: i64, max_requests_per_sec: u32) -> usize {
    let window = usize::try_from(skew_secs.unsigned_abs().saturating_mul(2).saturating_add(1))
        .unwrap_or(usize::MAX);
    window.saturating_mul(usize::try_from(max_requests_per_sec).unwrap_or(usize::MAX))
}

/// A nonce as replay caches keep it: 128 bits of its SHA-256, a fixed size whatever the
/// nonce's length.
fn nonce_id(nonce: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(&Sha256::digest(nonce.as_bytes())[..16]);
    key
}

/// Verifies signed requests.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<SigningKey>,
    skew_secs: i64,
    max_nonces: usize,
    nonces: Mutex<Nonces>,
    /// Nonces dropped before their expiry because the cache was full.
    evicted_early: AtomicU64,
}

impl Verifier {
    /// `skew_secs`: how far a timestamp may be from now, either way. `max_nonces` bounds the
    /// replay cache (see [`replay_cache_size`]). A full cache never refuses a fresh nonce: it
    /// forgets the nonce closest to its expiry, which opens that one request to a replay for
    /// the rest of its window, and counts it ([`Verifier::evicted_early`]).
    pub fn new(keys: Vec<SigningKey>, skew_secs: i64, max_nonces: usize) -> Verifier {
        Verifier {
            keys,
            skew_secs,
            max_nonces: max_nonces.max(1),
            nonces: Mutex::new(Nonces::default()),
            evicted_early: AtomicU64::new(0),
        }
    }

    /// How many nonces the cache has had to forget before their expiry (a sign that it is
    /// smaller than the request rate needs).
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early.load(Ordering::Relaxed)
    }

    /// Checks a whole request (headers and body at once).
    pub fn verify(&self, req: &Signed<'_>, now_unix: i64) -> Result<(), VerifyError> {
        let digest = body_digest(req.body);
        let head = SignedHead {
            method: req.method,
            path: req.path,
            timestamp: req.timestamp,
            nonce: req.nonce,
            signature: req.signature,
            body_digest: Some(&digest),
            traceparent: req.traceparent,
        };
        self.verify_head(&head, now_unix)?.check_body(req.body)
    }

    /// Checks a request's signature from its headers, before any of its body is read; the
    /// body must then pass [`VerifiedHead::check_body`]. The nonce is recorded only when the
    /// signature is valid, so unsigned junk cannot fill the replay cache.
    pub fn verify_head(
        &self,
        req: &SignedHead<'_>,
        now_unix: i64,
    ) -> Result<VerifiedHead, VerifyError> {
        let checked = self.check_head(req, now_unix)?;
        let nonce = nonce_id(checked.nonce);
        let nonce_expires = checked.timestamp.saturating_add(self.skew_secs);
        self.remember(nonce, nonce_expires, now_unix)?;
        Ok(VerifiedHead {
            digest: checked.digest,
            nonce,
            nonce_expires,
        })
    }

    /// Whether the request's `traceparent` header is covered by a valid, fresh signature
    /// (scheme `v2`). Checks the signature only: the nonce is neither consulted nor recorded
    /// ([`Verifier::verify_head`] does that, and refuses a replay whatever this says), so it
    /// may be asked before the request is verified, to choose the parent of its span.
    pub fn signs_traceparent(&self, req: &SignedHead<'_>, now_unix: i64) -> bool {
        req.traceparent.is_some()
            && self
                .check_head(req, now_unix)
                .is_ok_and(|c| c.traceparent_signed)
    }

    /// The signature check of [`Verifier::verify_head`], without the replay cache.
    fn check_head<'a>(
        &self,
        req: &SignedHead<'a>,
        now_unix: i64,
    ) -> Result<CheckedHead<'a>, VerifyError> {
        let SignedHead {
            method,
            path,
            timestamp,
            nonce,
            signature,
            body_digest,
            traceparent,
        } = *req;
        let (Some(ts), Some(nonce), Some(sig), Some(digest_hex)) =
            (timestamp, nonce, signature, body_digest)
        else {
            return Err(VerifyError::Missing);
        };
        let ts: i64 = ts.parse().map_err(|_| VerifyError::Malformed)?;
        let valid_nonce = (16..=128).contains(&nonce.len())
            && nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        // `v1` covers no `traceparent` (one sent beside it is not trusted); `v2` covers the
        // header, which must then be there as signed.
        let (tag, traceparent) = if let Some(h) = sig.strip_prefix("v1=") {
            (hex::decode(h).ok(), None)
        } else if let Some(h) = sig.strip_prefix("v2=") {
            match traceparent.filter(|tp| signable_traceparent(tp)) {
                Some(tp) => (hex::decode(h).ok(), Some(tp)),
                None => return Err(VerifyError::Malformed),
            }
        } else {
            (None, None)
        };
        // Lower-case hex only: the signed text holds the digest exactly as sent.
        let digest = (digest_hex.len() == 64
            && digest_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| hex::decode(digest_hex).ok())
        .flatten()
        .and_then(|d| <[u8; 32]>::try_from(d).ok());
        let (true, Some(tag), Some(digest)) = (valid_nonce, tag, digest) else {
            return Err(VerifyError::Malformed);
        };
        // `abs_diff`: the caller, signed or not, chooses the timestamp, and `now - i64::MIN`
        // overflows (a panic wherever overflow checks are on, as in debug builds and tests).
        if now_unix.abs_diff(ts) > self.skew_secs.unsigned_abs() {
            return Err(VerifyError::Stale);
        }
        let text = signed_text(method, path, ts, nonce, digest_hex, traceparent);
        // `verify_slice` compares in constant time.
        if !self
            .keys
            .iter()
            .any(|k| k.mac(&text).verify_slice(&tag).is_ok())
        {
            return Err(VerifyError::BadSignature);
        }
        Ok(CheckedHead {
            timestamp: ts,
            nonce,
            digest,
            traceparent_signed: traceparent.is_some(),
        })
    }

    /// Records `key` until `expires` (the last second its timestamp is accepted); refuses
    /// one already recorded.
    fn remember(&self, key: [u8; 16], expires: i64, now_unix: i64) -> Result<(), VerifyError> {
        let mut n = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(t, old)) = n.by_expiry.first() {
            if t >= now_unix {
                break;
            }
            n.by_expiry.pop_first();
            n.expiry.remove(&old);
        }
        if n.expiry.contains_key(&key) {
            return Err(VerifyError::Replayed);
        }
        while n.expiry.len() >= self.max_nonces {
            let Some((_, old)) = n.by_expiry.pop_first() else {
                break;
            };
            n.expiry.remove(&old);
            self.evicted_early.fetch_add(1, Ordering::Relaxed);
        }
        n.expiry.insert(key, expires);
        n.by_expiry.insert((expires, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"fedcba9876543210fedcba9876543210";
    const NONCE: &str = "00112233445566778899aabbccddeeff";

    fn check(v: &Verifier, s: &Signature, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let req = Signed {
            method: "POST",
            path: "/api/chat",
            body,
            timestamp: Some(&s.timestamp),
            nonce: Some(&s.nonce),
            signature: Some(&s.signature),
            traceparent: None,
        };
        v.verify(&req, now)
    }

    #[test]
    fn valid_stale_replayed_altered_and_unsigned() {
        let key = SigningKey::new(A).unwrap();
        let v = Verifier::new(vec![SigningKey::new(A).unwrap()], 30, 1000);
        let s = sign(&key, "POST", "/api/chat", b"{}", 1000, NONCE);
        assert_eq!(check(&v, &s, b"{}", 1010), Ok(()));
        assert_eq!(check(&v, &s, b"{}", 1010), Err(VerifyError::Replayed));
        let s2 = sign(
            &key,
            "POST",
            "/api/chat",
            b"{}",
            1000,
            "another-nonce-0000001",
        );
        assert_eq!(
            check(&v, &s2, b"{\"x\":1}", 1010),
            Err(VerifyError::BadSignature)
        );
        let old = sign(
            &key,
            "POST",
            "/api/chat",
            b"{}",
            900,
            "another-nonce-0000002",
        );
        assert_eq!(check(&v, &old, b"{}", 1000), Err(VerifyError::Stale));
        let future = sign(
            &key,
            "POST",
            "/api/chat",
            b"{}",
            1100,
            "another-nonce-0000003",
        );
        assert_eq!(check(&v, &future, b"{}", 1000), Err(VerifyError::Stale));
        let unsigned = Signed {
            method: "POST",
            path: "/api/chat",
            body: b"{}",
            timestamp: None,
            nonce: None,
            signature: None,
            traceparent: None,
        };
        assert_eq!(v.verify(&unsigned, 1000), Err(VerifyError::Missing));
        let mut bad = sign(
            &key,
            "POST",
            "/api/chat",
            b"{}",
            1000,
            "another-nonce-0000004",
        );
        bad.signature = "v1=zz".into();
        assert_eq!(check(&v, &bad, b"{}", 1000), Err(VerifyError::Malformed));
        // Signed for another path or method.
        let other = sign(
            &key,
            "POST",
            "/api/generate",
            b"{}",
            1000,
            "another-nonce-0000005",
        );
        assert_eq!(
            check(&v, &other, b"{}", 1000),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn two_secrets_are_accepted_during_rotation() {
        let keys = SigningKey::parse_list(&format!(
            "{}, {}",
            std::str::from_utf8(B).unwrap(),
            std::str::from_utf8(A).unwrap()
        ))
        .unwrap();
        let v = Verifier::new(keys, 30, 1000);
        let old = sign(
            &SigningKey::new(A).unwrap(),
            "POST",
            "/api/chat",
            b"",
            5,
            "nonce-aaaaaaaaaaaaaaaa",
        );
        let new = sign(
            &SigningKey::new(B).unwrap(),
            "POST",
            "/api/chat",
            b"",
            5,
            "nonce-bbbbbbbbbbbbbbbb",
        );
        assert_eq!(check(&v, &old, b"", 5), Ok(()));
        assert_eq!(check(&v, &new, b"", 5), Ok(()));
        assert_eq!(SigningKey::new(b"short").unwrap_err(), KeyError::TooShort);
        assert_eq!(
            format!("{:?}", SigningKey::new(A).unwrap()),
            "SigningKey([redacted])"
        );
    }

    #[test]
    fn the_replay_cache_forgets_expired_nonces_and_never_refuses_a_fresh_one_when_full() {
        let key = SigningKey::new(A).unwrap();
        let v = Verifier::new(vec![SigningKey::new(A).unwrap()], 10, 2);
        let s = |n: &str, t| sign(&key, "POST", "/api/chat", b"", t, n);
        assert_eq!(check(&v, &s("nonce-1111111111111111", 0), b"", 0), Ok(()));
        assert_eq!(check(&v, &s("nonce-2222222222222222", 1), b"", 1), Ok(()));
        // Full of unexpired nonces: the fresh one is served and the one closest to its
        // expiry (the first) is forgotten and counted.
        assert_eq!(check(&v, &s("nonce-3333333333333333", 2), b"", 2), Ok(()));
        assert_eq!(v.evicted_early(), 1);
        // The recent ones are still refused as replays.
        assert_eq!(
            check(&v, &s("nonce-3333333333333333", 2), b"", 3),
            Err(VerifyError::Replayed)
        );
        assert_eq!(
            check(&v, &s("nonce-2222222222222222", 1), b"", 3),
            Err(VerifyError::Replayed)
        );
        // Past its timestamp's window a nonce is forgotten by expiry, not counted: the
        // timestamp alone now refuses it.
        assert_eq!(
            check(&v, &s("nonce-2222222222222222", 1), b"", 12),
            Err(VerifyError::Stale)
        );
        assert_eq!(check(&v, &s("nonce-4444444444444444", 12), b"", 12), Ok(()));
        assert_eq!(check(&v, &s("nonce-5555555555555555", 13), b"", 13), Ok(()));
        assert_eq!(v.evicted_early(), 1);
    }

    #[test]
    fn the_head_verifies_before_the_body_and_the_body_must_match_it() {
        let key = SigningKey::new(A).unwrap();
        let v = Verifier::new(vec![SigningKey::new(A).unwrap()], 30, 100);
        let s = sign(&key, "POST", "/api/chat", b"{\"a\":1}", 50, NONCE);
        let head = |digest: Option<&str>, sig: &str| {
            v.verify_head(
                &SignedHead {
                    method: "POST",
                    path: "/api/chat",
                    timestamp: Some("50"),
                    nonce: Some(NONCE),
                    signature: Some(sig),
                    body_digest: digest,
                    traceparent: None,
                },
                50,
            )
        };
        assert_eq!(head(None, &s.signature).unwrap_err(), VerifyError::Missing);
        assert_eq!(
            head(Some("xyz"), &s.signature).unwrap_err(),
            VerifyError::Malformed
        );
        let other = body_digest(b"{}");
        assert_eq!(
            head(Some(&other), &s.signature).unwrap_err(),
            VerifyError::BadSignature
        );
        let ok = head(Some(&s.body_digest), &s.signature).unwrap();
        assert_eq!(ok.check_body(b"{\"a\":2}"), Err(VerifyError::BodyAltered));
        assert_eq!(ok.check_body(b"{\"a\":1}"), Ok(()));
        assert_eq!(replay_cache_size(30, 2000), 122_000);
        assert_eq!(replay_cache_size(i64::MIN, u32::MAX), usize::MAX);
    }

    /// A `traceparent` is trusted only under a `v2` signature that covers it: changed,
    /// added, or stripped, the request is refused (`v2`) or the header is not trusted (`v1`).
    #[test]
    fn a_signed_traceparent_is_covered_and_an_unsigned_one_is_not_trusted() {
        const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        const OTHER: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
        let key = SigningKey::new(A).unwrap();
        let v = Verifier::new(vec![SigningKey::new(A).unwrap()], 30, 100);
        fn head<'a>(s: &'a Signature, tp: Option<&'a str>) -> SignedHead<'a> {
            SignedHead {
                method: "POST",
                path: "/api/chat",
                timestamp: Some(&s.timestamp),
                nonce: Some(&s.nonce),
                signature: Some(&s.signature),
                body_digest: Some(&s.body_digest),
                traceparent: tp,
            }
        }
        let nonce = |n: u8| format!("traced-nonce-{n:08}");
        let traced = sign_traced(&key, "POST", "/api/chat", b"{}", 1000, &nonce(1), Some(TP));
        assert!(traced.signature.starts_with("v2="));
        let h = head(&traced, Some(TP));
        assert!(v.signs_traceparent(&h, 1000));
        // Asking does not spend the nonce: the request still verifies, once.
        v.verify_head(&h, 1000).unwrap().check_body(b"{}").unwrap();
        assert_eq!(v.verify_head(&h, 1000).unwrap_err(), VerifyError::Replayed);
        // Another parent, or none, under the same signature.
        let traced = sign_traced(&key, "POST", "/api/chat", b"{}", 1000, &nonce(2), Some(TP));
        assert!(!v.signs_traceparent(&head(&traced, Some(OTHER)), 1000));
        assert_eq!(
            v.verify_head(&head(&traced, Some(OTHER)), 1000)
                .unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            v.verify_head(&head(&traced, None), 1000).unwrap_err(),
            VerifyError::Malformed
        );
        // A v1 signature with a traceparent added beside it: the request verifies, the
        // header is not trusted.
        let plain = sign(&key, "POST", "/api/chat", b"{}", 1000, &nonce(3));
        assert!(plain.signature.starts_with("v1="));
        let h = head(&plain, Some(TP));
        assert!(!v.signs_traceparent(&h, 1000));
        assert!(v.verify_head(&h, 1000).is_ok());
        // A stale or forged v2 signature vouches for nothing.
        let stale = sign_traced(&key, "POST", "/api/chat", b"{}", 900, &nonce(4), Some(TP));
        assert!(!v.signs_traceparent(&head(&stale, Some(TP)), 1000));
        let forged = sign_traced(
            &SigningKey::new(B).unwrap(),
            "POST",
            "/api/chat",
            b"{}",
            1000,
            &nonce(5),
            Some(TP),
        );
        assert!(!v.signs_traceparent(&head(&forged, Some(TP)), 1000));
        // A header that cannot be signed is left out, and the signature is v1.
        let long = "0".repeat(MAX_TRACEPARENT_LEN + 1);
        let s = sign_traced(
            &key,
            "POST",
            "/api/chat",
            b"{}",
            1000,
            &nonce(6),
            Some(&long),
        );
        assert!(s.signature.starts_with("v1="));
    }
}
