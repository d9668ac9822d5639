//! API key format, generation, hashing and the verification decision, independent of any database.
//!
//! A key reads `wg_<prefix>_<secret>`:
//! - `wg_` names the scheme, so a leaked key is recognisable to secret scanners;
//! - `<prefix>` is 12 characters of `a-z0-9` (about 62 bits), chosen at random; it is stored in
//!   clear and used to find the key's row, so it is not secret on its own;
//! - `<secret>` is 32 bytes from the operating system's CSPRNG, base64url without padding
//!   (43 characters).
//!
//! Stores keep only the prefix and the SHA-256 of the whole key string. Every backend runs the
//! same [`parse`] → look up by prefix → [`decide`] sequence, so they all answer alike.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use zeroize::Zeroize as _;

use crate::{ApiKeyRecord, KeyVerdict, RejectReason, Secret, StoreError};

/// The scheme tag every key starts with.
pub const KEY_SCHEME: &str = "wg_";
/// Length of the lookup prefix.
pub const PREFIX_LEN: usize = 12;
/// Random bytes in a key's secret part.
pub const SECRET_BYTES: usize = 32;
/// Length of the secret part: 32 bytes in unpadded base64.
pub const SECRET_B64_LEN: usize = 43;
/// Length of a whole key: `wg_` + prefix + `_` + secret.
pub const KEY_LEN: usize = KEY_SCHEME.len() + PREFIX_LEN + 1 + SECRET_B64_LEN;
/// What every key id starts with.
pub const KEY_ID_PREFIX: &str = "key_";

const PREFIX_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Crockford's base32 in lowercase: ascending in ASCII, so ids sort like the bytes they encode.
const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Compared against when no key has the presented prefix, so that an unknown prefix costs the
/// same hash-and-compare as a known prefix with a wrong secret. No key hashes to it: that would
/// take a SHA-256 preimage. Even if one did, [`decide`] still answers `Unknown` without a record.
const DUMMY_HASH: KeyHash = KeyHash([0x5a; 32]);

/// SHA-256 of a whole key string.
///
/// A fast hash is the right tool here, unlike for passwords. A slow KDF (argon2, bcrypt) exists to
/// make guessing low-entropy human secrets expensive; a key carries 256 random bits, so there is
/// nothing to guess and a stolen table of hashes cannot be brute-forced either way. A KDF would
/// only add tens of milliseconds and a burst of memory to every authenticated request.
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes a whole key string (scheme, prefix and secret).
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the stored lowercase or uppercase hex; `None` unless it is exactly 32 bytes.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Constant-time equality: the time taken does not depend on where the hashes differ.
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret, but nothing reads it from a log either; keep logs short and uninteresting.
        f.write_str("KeyHash(..)")
    }
}

/// A presented key that has the right shape; [`parse`] makes one.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    full: &'a str,
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The prefix only: everything after it is the secret.
        f.debug_struct("ParsedKey")
            .field("prefix", &self.prefix())
            .finish_non_exhaustive()
    }
}

impl<'a> ParsedKey<'a> {
    /// The lookup prefix, without the scheme or separators.
    pub fn prefix(&self) -> &'a str {
        &self.full[KEY_SCHEME.len()..KEY_SCHEME.len() + PREFIX_LEN]
    }

    /// The hash to compare with the stored one.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.full)
    }
}

/// Checks the shape of a presented key, strictly: exact length, scheme, prefix and secret
/// alphabets, and a canonical base64 ending. Anything else is `None` (malformed), decided without
/// touching storage.
pub fn parse(presented: &str) -> Option<ParsedKey<'_>> {
    let bytes = presented.as_bytes();
    // Length first: it bounds all the work below, and every non-ASCII string of the right byte
    // length fails the alphabet checks.
    if bytes.len() != KEY_LEN {
        return None;
    }
    let (scheme, rest) = bytes.split_at(KEY_SCHEME.len());
    let (prefix, rest) = rest.split_at(PREFIX_LEN);
    let (separator, secret) = rest.split_at(1);
    let ok = scheme == KEY_SCHEME.as_bytes()
        && prefix.iter().all(|b| PREFIX_ALPHABET.contains(b))
        && separator == b"_"
        && secret.iter().all(|&b| b64url_value(b).is_some())
        // 43 characters carry 258 bits for 256 bits of data; the encoder leaves the last two
        // zero, so a key whose last character sets them was not made by `generate`.
        && secret
            .last()
            .and_then(|&b| b64url_value(b))
            .is_some_and(|v| v & 0b11 == 0);
    ok.then_some(ParsedKey { full: presented })
}

fn b64url_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// A freshly generated key: what to store (prefix, hash) and what to show once (secret).
#[derive(Debug)]
pub struct GeneratedKey {
    /// The lookup prefix.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: KeyHash,
    /// The whole key, `wg_<prefix>_<secret>`.
    pub secret: Secret<String>,
}

/// Generates a key from the operating system's CSPRNG.
///
/// `OsRng` rather than `rand::rng()`: both are cryptographically secure, but `OsRng` asks the
/// kernel (getrandom) every time and keeps no generator state in this process, so there is no
/// state to be duplicated by a fork or read from a memory dump. Keys are created rarely, so the
/// cost of a syscall per key does not matter. If the kernel's source fails we fail rather than
/// fall back to anything weaker.
pub fn generate() -> Result<GeneratedKey, StoreError> {
    let prefix = random_prefix()?;
    let mut secret_bytes = [0u8; SECRET_BYTES];
    OsRng
        .try_fill_bytes(&mut secret_bytes)
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
    let key = assemble(prefix, &secret_bytes);
    secret_bytes.zeroize();
    Ok(key)
}

/// Writes a key from its random parts; separate from [`generate`] so the property tests can
/// drive the same encoding with chosen inputs. `prefix` must be [`PREFIX_LEN`] characters of
/// the prefix alphabet.
fn assemble(prefix: String, secret_bytes: &[u8; SECRET_BYTES]) -> GeneratedKey {
    // Sized up front so the buffer never reallocates and leaves an unwiped copy behind.
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(KEY_SCHEME);
    key.push_str(&prefix);
    key.push('_');
    URL_SAFE_NO_PAD.encode_string(secret_bytes, &mut key);
    let hash = KeyHash::of(&key);
    GeneratedKey {
        prefix,
        hash,
        secret: Secret::new(key),
    }
}

fn random_prefix() -> Result<String, StoreError> {
    let mut prefix = String::with_capacity(PREFIX_LEN);
    let mut pool = [0u8; 32];
    while prefix.len() < PREFIX_LEN {
        OsRng
            .try_fill_bytes(&mut pool)
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        // Rejection sampling: 252 = 7 * 36, so bytes below it map uniformly onto the alphabet.
        for b in pool.iter().filter(|&&b| b < 252) {
            if prefix.len() == PREFIX_LEN {
                break;
            }
            prefix.push(char::from(PREFIX_ALPHABET[usize::from(b % 36)]));
        }
    }
    Ok(prefix)
}

/// A new key id: `key_` and 26 characters of lowercase Crockford base32 encoding a UUIDv7.
///
/// The id is printable, not secret, and sorts by creation time (UUIDv7 starts with a millisecond
/// timestamp and is monotonic within the process), which breaks ties in newest-first listings.
pub fn new_key_id() -> String {
    let value = uuid::Uuid::now_v7().as_u128();
    let mut id = String::with_capacity(KEY_ID_PREFIX.len() + 26);
    id.push_str(KEY_ID_PREFIX);
    // 26 * 5 = 130 bits: the first character carries the top 3 bits, the rest 5 each.
    for i in (0..26u32).rev() {
        let index = (value >> (5 * i)) & 0x1f;
        // `index` is below 32 by the mask, so the cast cannot truncate.
        id.push(char::from(ID_ALPHABET[index as usize]));
    }
    id
}

/// The verdict for a presented key, given what the store found under its prefix.
///
/// `presented` is the hash of the presented key; `stored` is the row found by prefix, if any.
/// The hash comparison always runs, against a dummy when nothing was found, so unknown prefixes
/// and wrong secrets cost the same. Only a key whose hash matches learns whether it is revoked or
/// expired; a wrong secret is `Unknown` whatever the row's state. Revocation wins over expiry,
/// and a key expires at `expires_at` (`expires_at <= now` is expired).
pub fn decide(
    presented: &KeyHash,
    stored: Option<(KeyHash, ApiKeyRecord)>,
    now: OffsetDateTime,
) -> KeyVerdict {
    let (stored_hash, record) = match stored {
        Some((hash, record)) => (hash, Some(record)),
        None => (DUMMY_HASH, None),
    };
    let hash_matches = presented.matches(&stored_hash);
    match record {
        Some(record) if hash_matches => {
            if record.revoked_at.is_some() {
                KeyVerdict::Rejected(RejectReason::Revoked)
            } else if record.expires_at.is_some_and(|at| at <= now) {
                KeyVerdict::Rejected(RejectReason::Expired)
            } else {
                KeyVerdict::Valid(record)
            }
        }
        _ => KeyVerdict::Rejected(RejectReason::Unknown),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use time::Duration;

    fn record(
        expires_at: Option<OffsetDateTime>,
        revoked_at: Option<OffsetDateTime>,
    ) -> ApiKeyRecord {
        ApiKeyRecord {
            id: new_key_id(),
            prefix: "abcdefghijkl".into(),
            tenant: "acme".into(),
            models: vec![],
            roles: vec![crate::Role::User],
            label: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            expires_at,
            revoked_at,
            last_used_at: None,
            replaced_by: None,
        }
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        for _ in 0..64 {
            let key = generate().unwrap();
            let text = key.secret.expose();
            assert_eq!(text.len(), KEY_LEN);
            assert_eq!(KEY_LEN, 59);
            assert!(text.starts_with("wg_"));
            assert_eq!(&text[3..15], key.prefix);
            let parsed = parse(text).unwrap();
            assert_eq!(parsed.prefix(), key.prefix);
            assert!(parsed.hash().matches(&key.hash));
            let decoded = URL_SAFE_NO_PAD.decode(&text[16..]).unwrap();
            assert_eq!(decoded.len(), SECRET_BYTES);
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.prefix, b.prefix);
        assert_ne!(a.secret.expose(), b.secret.expose());
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let good = generate().unwrap();
        let good = good.secret.expose().clone();
        let mut non_canonical = good.clone();
        non_canonical.pop();
        // 'B' has value 1: sets one of the two bits the encoder leaves zero.
        non_canonical.push('B');
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("too short", good[..KEY_LEN - 1].to_string()),
            ("too long", format!("{good}A")),
            ("very long", "a".repeat(100_000)),
            ("wrong scheme", format!("sk_{}", &good[3..])),
            ("upper prefix", format!("wg_ABCDEFGHIJKL{}", &good[15..])),
            ("bad separator", format!("{}-{}", &good[..15], &good[16..])),
            ("padding", format!("{}=", &good[..KEY_LEN - 1])),
            ("standard b64", format!("{}+", &good[..KEY_LEN - 1])),
            ("NUL", format!("{}\0", &good[..KEY_LEN - 1])),
            ("space", format!(" {}", &good[1..])),
            ("non-ascii", format!("{}é", &good[..KEY_LEN - 2])),
            ("non canonical", non_canonical),
            ("bearer", format!("Bearer {good}")),
        ];
        for (name, text) in &cases {
            assert!(parse(text).is_none(), "{name} parsed: {text:?}");
        }
        assert!(parse(&good).is_some());
    }

    #[test]
    fn ids_are_printable_and_ordered() {
        let ids: Vec<String> = (0..100).map(|_| new_key_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 30);
            assert!(id.starts_with("key_"));
            assert!(id[4..].bytes().all(|b| ID_ALPHABET.contains(&b)));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "ids must sort in creation order");
    }

    #[test]
    fn hash_hex_round_trip() {
        let hash = KeyHash::of("x");
        assert_eq!(hash.to_hex().len(), 64);
        assert!(KeyHash::from_hex(&hash.to_hex()).unwrap().matches(&hash));
        assert!(KeyHash::from_hex("abcd").is_none());
        assert!(KeyHash::from_hex(&"z".repeat(64)).is_none());
    }

    #[test]
    fn decisions() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let key = generate().unwrap();
        let right = key.hash;
        let wrong = KeyHash::of("wg_something_else");
        let past = Some(now - Duration::seconds(1));
        let future = Some(now + Duration::seconds(1));
        use RejectReason::*;
        let cases: Vec<(&str, KeyHash, Option<ApiKeyRecord>, Option<RejectReason>)> = vec![
            ("valid", right, Some(record(None, None)), None),
            ("valid until later", right, Some(record(future, None)), None),
            ("no row", right, None, Some(Unknown)),
            (
                "wrong secret",
                wrong,
                Some(record(None, None)),
                Some(Unknown),
            ),
            (
                "wrong secret, revoked",
                wrong,
                Some(record(None, past)),
                Some(Unknown),
            ),
            (
                "wrong secret, expired",
                wrong,
                Some(record(past, None)),
                Some(Unknown),
            ),
            ("revoked", right, Some(record(None, past)), Some(Revoked)),
            ("expired", right, Some(record(past, None)), Some(Expired)),
            (
                "expires now",
                right,
                Some(record(Some(now), None)),
                Some(Expired),
            ),
            (
                "revoked and expired",
                right,
                Some(record(past, past)),
                Some(Revoked),
            ),
            ("dummy hash, no row", DUMMY_HASH, None, Some(Unknown)),
        ];
        for (name, presented, row, want) in cases {
            let verdict = decide(&presented, row.clone().map(|r| (key.hash, r)), now);
            match (want, verdict) {
                (None, KeyVerdict::Valid(got)) => assert_eq!(Some(got), row, "{name}"),
                (Some(want), KeyVerdict::Rejected(got)) => assert_eq!(want, got, "{name}"),
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }
}

/// Properties of the key format over generated inputs: what `generate` writes always parses
/// back, nothing else panics or slips through, one changed character never still verifies,
/// and no printed form carries the secret.
#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn any_prefix() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(PREFIX_ALPHABET.to_vec()),
            PREFIX_LEN,
        )
        .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
    }

    fn any_key() -> impl Strategy<Value = GeneratedKey> {
        (any_prefix(), any::<[u8; SECRET_BYTES]>())
            .prop_map(|(prefix, secret)| assemble(prefix, &secret))
    }

    /// Strings near the key shape, where the parser's decisions are made, plus anything at all.
    fn near_keys() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "wg_[a-z0-9]{12}_[A-Za-z0-9_-]{43}",
            "wg_[a-z0-9A-Z_-]{12}[_-][A-Za-z0-9_+/=-]{43}",
            "[ -~]{59}",
            "wg_[\\PC]{10,14}_[\\PC]{41,45}",
        ]
    }

    fn record(prefix: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: new_key_id(),
            prefix: prefix.to_owned(),
            tenant: "acme".into(),
            models: vec![],
            roles: vec![crate::Role::User],
            label: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            replaced_by: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn assembled_keys_parse_back(key in any_key()) {
            let text = key.secret.expose();
            let parsed = parse(text).unwrap();
            prop_assert_eq!(parsed.prefix(), key.prefix.as_str());
            prop_assert!(parsed.hash().matches(&key.hash));
            let stored = Some((key.hash, record(&key.prefix)));
            let verdict = decide(&parsed.hash(), stored, OffsetDateTime::UNIX_EPOCH);
            prop_assert!(matches!(verdict, KeyVerdict::Valid(_)));
        }

        /// Whatever is presented, `parse` returns, and accepts only the exact canonical shape:
        /// the secret decodes to 32 bytes that encode back to the same text.
        #[test]
        fn parse_accepts_only_canonical_keys(text in near_keys()) {
            if let Some(parsed) = parse(&text) {
                prop_assert_eq!(text.len(), KEY_LEN);
                prop_assert!(text.starts_with(KEY_SCHEME));
                prop_assert!(parsed.prefix().bytes().all(|b| PREFIX_ALPHABET.contains(&b)));
                let secret = &text[KEY_LEN - SECRET_B64_LEN..];
                let bytes = URL_SAFE_NO_PAD.decode(secret).unwrap();
                prop_assert_eq!(bytes.len(), SECRET_BYTES);
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(&bytes), secret);
            }
        }

        /// One character changed anywhere: the key is malformed, or it is another key that the
        /// original's row does not accept.
        #[test]
        fn one_changed_character_never_verifies(
            key in any_key(),
            at in 0..KEY_LEN,
            with in prop_oneof![
                proptest::char::range('!', '~'),
                Just('é'),
                Just('\0'),
                Just(' '),
            ],
        ) {
            let original = key.secret.expose();
            prop_assume!(!original[at..].starts_with(with));
            let mut changed = original[..at].to_owned();
            changed.push(with);
            changed.push_str(&original[at + 1..]);
            if let Some(parsed) = parse(&changed) {
                prop_assert!(!parsed.hash().matches(&key.hash));
                let stored = Some((key.hash, record(&key.prefix)));
                let verdict = decide(&parsed.hash(), stored, OffsetDateTime::UNIX_EPOCH);
                prop_assert_eq!(verdict, KeyVerdict::Rejected(RejectReason::Unknown));
            }
        }

        /// The secret part never appears in a printed form of a key or its parts.
        #[test]
        fn printed_forms_never_carry_the_secret(key in any_key()) {
            let text = key.secret.expose().clone();
            let secret = &text[KEY_LEN - SECRET_B64_LEN..];
            let parsed = parse(&text).unwrap();
            for printed in [
                format!("{key:?}"),
                format!("{key:#?}"),
                format!("{:?}", key.secret),
                format!("{}", key.secret),
                format!("{parsed:?}"),
                format!("{parsed:#?}"),
                format!("{:?}", parsed.hash()),
            ] {
                prop_assert!(!printed.contains(secret), "leaked: {}", printed);
            }
        }
    }
}
