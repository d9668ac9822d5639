//! HMAC-SHA256 request signing for the private hop between the gateway and `wardgate llm`.
//!
//! The gateway signs method, path (with query), a timestamp, a random nonce and the SHA-256 of
//! the body; the LLM service recomputes the signature with each active secret (two may be
//! active during a rotation), refuses timestamps outside the allowed skew, and remembers nonces
//! for the skew window so a captured request cannot be replayed. Pure: the caller supplies the
//! clock and the randomness.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const TIMESTAMP_HEADER: &str = "x-wardgate-timestamp";
pub const NONCE_HEADER: &str = "x-wardgate-nonce";
pub const SIGNATURE_HEADER: &str = "x-wardgate-signature";

/// The version tag of the signature scheme, part of the signed text and of the header value.
const SCHEME: &str = "v1";

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

fn signed_text(method: &str, path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(body));
    format!("{SCHEME}\n{method}\n{path}\n{timestamp}\n{nonce}\n{digest}").into_bytes()
}

/// The three headers to attach to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
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
    let tag = key
        .mac(&signed_text(method, path, now_unix, nonce, body))
        .finalize()
        .into_bytes();
    Signature {
        timestamp: now_unix.to_string(),
        nonce: nonce.to_owned(),
        signature: format!("{SCHEME}={}", hex::encode(tag)),
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
    #[error("too many nonces in the replay window")]
    Overloaded,
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
}

/// Remembers nonces seen within the skew window.
#[derive(Debug)]
struct Nonces {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

/// Verifies signed requests.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<SigningKey>,
    skew_secs: i64,
    max_nonces: usize,
    nonces: Mutex<Nonces>,
}

impl Verifier {
    /// `skew_secs`: how far a timestamp may be from now, either way. `max_nonces` bounds the
    /// replay cache; past it requests are refused rather than memory growing without end.
    pub fn new(keys: Vec<SigningKey>, skew_secs: i64, max_nonces: usize) -> Verifier {
        Verifier {
            keys,
            skew_secs,
            max_nonces,
            nonces: Mutex::new(Nonces {
                seen: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Checks one request. The nonce is recorded only when the signature is valid, so
    /// unsigned junk cannot fill the replay cache.
    pub fn verify(&self, req: &Signed<'_>, now_unix: i64) -> Result<(), VerifyError> {
        let Signed {
            method,
            path,
            body,
            timestamp,
            nonce,
            signature,
        } = *req;
        let (Some(ts), Some(nonce), Some(sig)) = (timestamp, nonce, signature) else {
            return Err(VerifyError::Missing);
        };
        let ts: i64 = ts.parse().map_err(|_| VerifyError::Malformed)?;
        let valid_nonce = (16..=128).contains(&nonce.len())
            && nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let tag = sig
            .strip_prefix(SCHEME)
            .and_then(|s| s.strip_prefix('='))
            .and_then(|h| hex::decode(h).ok());
        let (true, Some(tag)) = (valid_nonce, tag) else {
            return Err(VerifyError::Malformed);
        };
        // `abs_diff`: the caller, signed or not, chooses the timestamp, and `now - i64::MIN`
        // overflows (a panic wherever overflow checks are on, as in debug builds and tests).
        if now_unix.abs_diff(ts) > self.skew_secs.unsigned_abs() {
            return Err(VerifyError::Stale);
        }
        let text = signed_text(method, path, ts, nonce, body);
        // `verify_slice` compares in constant time.
        if !self
            .keys
            .iter()
            .any(|k| k.mac(&text).verify_slice(&tag).is_ok())
        {
            return Err(VerifyError::BadSignature);
        }
        let mut n = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = now_unix - 2 * self.skew_secs;
        while n.order.front().is_some_and(|(t, _)| *t < horizon) {
            if let Some((_, old)) = n.order.pop_front() {
                n.seen.remove(&old);
            }
        }
        if n.seen.contains_key(nonce) {
            return Err(VerifyError::Replayed);
        }
        if n.seen.len() >= self.max_nonces {
            return Err(VerifyError::Overloaded);
        }
        n.seen.insert(nonce.to_owned(), now_unix);
        n.order.push_back((now_unix, nonce.to_owned()));
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
    fn the_replay_cache_forgets_old_nonces_and_is_bounded() {
        let key = SigningKey::new(A).unwrap();
        let v = Verifier::new(vec![SigningKey::new(A).unwrap()], 10, 2);
        let s = |n: &str, t| sign(&key, "POST", "/api/chat", b"", t, n);
        assert_eq!(check(&v, &s("nonce-1111111111111111", 0), b"", 0), Ok(()));
        assert_eq!(check(&v, &s("nonce-2222222222222222", 0), b"", 0), Ok(()));
        assert_eq!(
            check(&v, &s("nonce-3333333333333333", 0), b"", 0),
            Err(VerifyError::Overloaded)
        );
        // 25 s later the first two are past the window and forgotten.
        assert_eq!(check(&v, &s("nonce-3333333333333333", 25), b"", 25), Ok(()));
    }
}
